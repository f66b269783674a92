"""Every ```python example of README.md runs, against the hub when it needs one."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from switch_sdk import Client, NotFoundError

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
HUB_VARIABLES = ("SWITCH_URL", "SWITCH_JWT_SECRET", "SWITCH_API_KEY")


@pytest.fixture(scope="module")
def publisher_key() -> Iterator[str]:
    """A publish key for the examples (SWITCH_API_KEY), revoked after them."""
    with Client(HUB_URL, jwt_secret=HUB_SECRET, scope="admin") as admin:
        key = admin.keys.create(f"readme-{uuid.uuid4().hex[:8]}", scope="publish")
        assert key.key is not None
        yield key.key
        try:
            admin.keys.revoke(key.id)
        except NotFoundError:
            pass


def test_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize(
    "line,code", EXAMPLES, ids=[f"README.md:{line}" for line, _ in EXAMPLES]
)
def test_readme_example(
    line: int, code: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if any(name in code for name in HUB_VARIABLES):
        if not HUB_URL:
            pytest.skip("SWITCH_TEST_URL is not set (no running hub)")
        monkeypatch.setenv("SWITCH_URL", HUB_URL)
        monkeypatch.setenv("SWITCH_JWT_SECRET", HUB_SECRET)
        if "SWITCH_API_KEY" in code:
            monkeypatch.setenv("SWITCH_API_KEY", request.getfixturevalue("publisher_key"))
    compiled = compile(code, f"{README}:{line}", "exec")
    exec(compiled, {"__name__": f"readme_example_{line}"})
