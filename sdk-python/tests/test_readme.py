"""Every ```python example of README.md runs, against the hub when it needs one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

import pytest

from .conftest import HUB_SECRET, HUB_URL

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def examples() -> List[Tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    out = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        out.append((line, match.group(1)))
    return out


EXAMPLES = examples()


def test_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize(
    "line,code", EXAMPLES, ids=[f"README.md:{line}" for line, _ in EXAMPLES]
)
def test_readme_example(line: int, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if "SWITCH_URL" in code or "SWITCH_JWT_SECRET" in code:
        if not HUB_URL:
            pytest.skip("SWITCH_TEST_URL is not set (no running hub)")
        monkeypatch.setenv("SWITCH_URL", HUB_URL)
        monkeypatch.setenv("SWITCH_JWT_SECRET", HUB_SECRET)
    compiled = compile(code, f"{README}:{line}", "exec")
    exec(compiled, {"__name__": f"readme_example_{line}"})
