"""Tokens: what the client signs and sends."""

from __future__ import annotations

import time
from typing import List

import httpx
import jwt
import pytest

from switch_sdk import AsyncClient, Client, sign_token

SECRET = "unit-test-secret"


def _capture() -> "tuple[List[httpx.Request], httpx.MockTransport]":
    seen: List[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"message_id": "m-1", "matched": 0})

    return seen, httpx.MockTransport(handler)


def _decode(token: str) -> dict:
    return jwt.decode(token, SECRET, algorithms=["HS256"])


def test_sign_token_claims() -> None:
    before = int(time.time())
    token = sign_token(SECRET, author="billing", scope="publish admin")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    claims = _decode(token)
    assert claims["author"] == "billing"
    assert claims["scope"] == "publish admin"
    assert before + 59 <= claims["exp"] <= int(time.time()) + 60


def test_sign_token_scope_list_topics_and_no_exp() -> None:
    token = sign_token(SECRET, scope=["publish", "admin"], topics=["orders.#"], ttl=None)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": []})
    assert claims == {"scope": "publish admin", "topics": ["orders.#"]}


def test_sign_token_omits_absent_claims() -> None:
    claims = _decode(sign_token(SECRET))
    assert set(claims) == {"exp"}


def test_client_sends_signed_bearer_token() -> None:
    seen, transport = _capture()
    with Client(
        "http://hub.test", jwt_secret=SECRET, author="billing", scope="publish admin",
        transport=transport,
    ) as client:
        client.publish("orders.created", {"id": 1})
    auth = seen[0].headers["authorization"]
    scheme, _, token = auth.partition(" ")
    assert scheme == "Bearer"
    claims = _decode(token)
    assert claims["author"] == "billing"
    assert claims["scope"] == "publish admin"
    assert claims["exp"] - time.time() <= 60


def test_client_without_scope_sends_no_scope_claim() -> None:
    seen, transport = _capture()
    with Client("http://hub.test", jwt_secret=SECRET, author="a", transport=transport) as client:
        client.publish("t")
    claims = _decode(seen[0].headers["authorization"].split(" ", 1)[1])
    assert "scope" not in claims
    assert claims["author"] == "a"


def test_token_is_cached_and_renewed_near_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    client = Client("http://hub.test", jwt_secret=SECRET, author="a")
    first = client.token()
    assert client.token() == first
    now[0] += 30
    assert client.token() == first
    now[0] += 20  # 10 s left: renewed
    second = client.token()
    assert second is not None and second != first
    assert jwt.decode(
        second, SECRET, algorithms=["HS256"], options={"verify_exp": False}
    )["exp"] == int(now[0]) + 60
    client.close()


def test_given_token_is_sent_unchanged() -> None:
    seen, transport = _capture()
    with Client("http://hub.test", token="abc.def.ghi", transport=transport) as client:
        client.publish("t")
    assert seen[0].headers["authorization"] == "Bearer abc.def.ghi"


def test_anonymous_client_sends_no_authorization() -> None:
    seen, transport = _capture()
    with Client("http://hub.test", transport=transport) as client:
        client.publish("t")
    assert "authorization" not in seen[0].headers


def test_ping_and_health_send_no_token() -> None:
    seen: List[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/ping":
            return httpx.Response(200, text="pong")
        return httpx.Response(200, json={"status": "ok", "database": "ok", "redis": "ok"})

    with Client("http://hub.test", jwt_secret=SECRET, transport=httpx.MockTransport(handler)) as c:
        assert c.ping() is True
        assert c.health()["status"] == "ok"
    assert all("authorization" not in r.headers for r in seen)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"jwt_secret": "s", "token": "t"},
        {"token": "t", "author": "a"},
        {"token": "t", "scope": "admin"},
        {"jwt_secret": ""},
    ],
)
def test_conflicting_auth_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Client("http://hub.test", **kwargs)


@pytest.mark.parametrize("url", ["", "hub.test:8080", "ftp://hub.test"])
def test_bad_base_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        Client(url)


@pytest.mark.asyncio
async def test_async_client_sends_signed_bearer_token() -> None:
    seen: List[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"message_id": "m-1", "matched": 3})

    async with AsyncClient(
        "http://hub.test", jwt_secret=SECRET, author="x", scope="publish",
        transport=httpx.MockTransport(handler),
    ) as client:
        result = await client.publish("t", {"a": 1})
    assert result.matched == 3
    claims = _decode(seen[0].headers["authorization"].split(" ", 1)[1])
    assert claims["author"] == "x" and claims["scope"] == "publish"
