"""API keys: the ``api_key=`` credential and ``client.keys``, against a scripted hub and
against a real one (skipped when SWITCH_TEST_URL is unset)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from switch_sdk import (
    ApiKey,
    AsyncClient,
    Client,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)

from .conftest import needs_hub, wait_for

KEY = "sk_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
ROW = {
    "id": 3,
    "name": "shop",
    "scope": "publish",
    "topics": ["orders.#"],
    "expires_at": None,
    "created_at": "2026-01-01T00:00:00.000Z",
}
#: How soon a revoked key must be refused (the hub promises 1 s on every server).
REVOKED_WITHIN = 1.0


# --- the api_key credential -----------------------------------------------------------------


class Recorder:
    """A scripted hub for keys and publishes; remembers every request."""

    def __init__(self) -> None:
        self.requests: List[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = (request.method, request.url.path)
        if route == ("POST", "/publish"):
            return httpx.Response(202, json={"message_id": "msg_1", "matched": 0})
        if route == ("POST", "/keys"):
            return httpx.Response(201, json={**ROW, **json.loads(request.content), "key": KEY})
        if route == ("GET", "/keys"):
            return httpx.Response(200, json={"items": [ROW, {**ROW, "id": 4, "topics": None}]})
        if route == ("DELETE", "/keys/3"):
            return httpx.Response(204)
        return httpx.Response(
            404, json={"error": {"code": "not_found", "message": f"no route {route}"}}
        )

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def test_api_key_is_sent_as_is() -> None:
    hub = Recorder()
    with Client("http://hub.test", api_key=KEY, transport=httpx.MockTransport(hub)) as client:
        assert client.token() == KEY
        client.publish("orders.created", {"id": 1})
        client.publish("orders.created", {"id": 2})
    assert [r.headers["authorization"] for r in hub.requests] == [f"Bearer {KEY}"] * 2


def test_api_key_read_from_a_file_loses_its_newline() -> None:
    hub = Recorder()
    with Client(
        "http://hub.test", api_key=KEY + "\n", transport=httpx.MockTransport(hub)
    ) as client:
        client.publish("t")
    assert hub.last.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.asyncio
async def test_async_api_key_is_sent_as_is() -> None:
    hub = Recorder()
    async with AsyncClient(
        "http://hub.test", api_key=KEY, transport=httpx.MockTransport(hub)
    ) as client:
        assert client.token() == KEY
        await client.publish("orders.created")
    assert hub.last.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("cls", [Client, AsyncClient])
@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"api_key": KEY, "jwt_secret": "s"}, "api_key or jwt_secret"),
        ({"api_key": KEY, "token": "a.b.c"}, "api_key or token"),
        ({"api_key": KEY, "jwt_secret": "s", "token": "a.b.c"}, "api_key or jwt_secret or token"),
        ({"api_key": KEY, "author": "me"}, "its name"),
        ({"api_key": KEY, "scope": "admin"}, "scope"),
        ({"api_key": ""}, "empty"),
        ({"api_key": "   "}, "empty"),
        ({"api_key": "eyJhbGciOiJIUzI1NiJ9.e30.sig"}, "sk_"),
        ({"api_key": "sk_abc def"}, "sk_"),
    ],
)
def test_ambiguous_or_bad_api_key_is_refused(cls: Any, kwargs: Dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError) as info:
        cls("http://hub.test", **kwargs)
    assert words in str(info.value)


def test_api_key_must_be_a_string() -> None:
    with pytest.raises(TypeError):
        Client("http://hub.test", api_key=b"sk_abc")  # type: ignore[arg-type]


# --- client.keys ----------------------------------------------------------------------------


def test_keys_create_sends_the_fields_and_returns_the_key() -> None:
    hub = Recorder()
    with Client("http://hub.test", jwt_secret="s", scope="admin", transport=httpx.MockTransport(hub)) as admin:
        created = admin.keys.create(
            "shop",
            scope=["publish"],
            topics=("orders.#",),
            expires_at=datetime(2027, 6, 1, 12, 30),
        )
    request = hub.last
    assert (request.method, request.url.path) == ("POST", "/keys")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "name": "shop",
        "scope": "publish",
        "topics": ["orders.#"],
        "expires_at": "2027-06-01T12:30:00+00:00",
    }
    assert isinstance(created, ApiKey)
    assert created.key == KEY
    assert (created.id, created.name, created.scope, created.topics) == (3, "shop", "publish", ["orders.#"])
    assert KEY not in repr(created)


def test_keys_create_defaults_to_a_publish_key_for_any_topic() -> None:
    hub = Recorder()
    with Client("http://hub.test", token="a.b.c", transport=httpx.MockTransport(hub)) as admin:
        admin.keys.create("shop")
        admin.keys.create("ops", scope="publish admin", expires_at="2027-06-01T00:00:00Z")
    assert json.loads(hub.requests[0].content) == {"name": "shop", "scope": "publish"}
    assert json.loads(hub.requests[1].content) == {
        "name": "ops",
        "scope": "publish admin",
        "expires_at": "2027-06-01T00:00:00Z",
    }


@pytest.mark.parametrize(
    "args,kwargs,error",
    [
        (("",), {}, ValueError),
        (("shop",), {"scope": ""}, ValueError),
        (("shop",), {"topics": "orders.#"}, TypeError),
        (("shop",), {"expires_at": 1700000000}, TypeError),
    ],
)
def test_keys_create_refuses_bad_arguments_before_sending(
    args: Any, kwargs: Dict[str, Any], error: type
) -> None:
    hub = Recorder()
    with Client("http://hub.test", token="a.b.c", transport=httpx.MockTransport(hub)) as admin:
        with pytest.raises(error):
            admin.keys.create(*args, **kwargs)
    assert hub.requests == []


def test_keys_list_and_revoke() -> None:
    hub = Recorder()
    with Client("http://hub.test", token="a.b.c", transport=httpx.MockTransport(hub)) as admin:
        keys = admin.keys.list()
        assert [(k.id, k.topics, k.key) for k in keys] == [(3, ["orders.#"], None), (4, None, None)]
        assert admin.keys.revoke(3) is None
        assert (hub.last.method, hub.last.url.path) == ("DELETE", "/keys/3")
        admin.keys.revoke(keys[0])
        assert (hub.last.method, hub.last.url.path) == ("DELETE", "/keys/3")
        with pytest.raises(NotFoundError):
            admin.keys.revoke(99)


@pytest.mark.asyncio
async def test_async_keys() -> None:
    hub = Recorder()
    async with AsyncClient("http://hub.test", token="a.b.c", transport=httpx.MockTransport(hub)) as admin:
        created = await admin.keys.create("shop", topics=["orders.#"])
        assert created.key == KEY
        assert [k.id for k in await admin.keys.list()] == [3, 4]
        await admin.keys.revoke(created.id)
    assert [(r.method, r.url.path) for r in hub.requests] == [
        ("POST", "/keys"),
        ("GET", "/keys"),
        ("DELETE", "/keys/3"),
    ]


# --- against the hub ------------------------------------------------------------------------


class StatusRecorder(httpx.HTTPTransport):
    """The real transport, remembering the status of every answer."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: List[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


class AsyncStatusRecorder(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.statuses: List[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


@pytest.fixture
def key_name() -> str:
    return f"sdkpy-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def revoke_after(admin: Client) -> Iterator[List[ApiKey]]:
    """Keys a test created; revoked after it if it did not revoke them itself."""
    keys: List[ApiKey] = []
    yield keys
    for key in keys:
        try:
            admin.keys.revoke(key.id)
        except NotFoundError:
            pass


@needs_hub
def test_publish_key_lifecycle(
    admin: Client, hub_url: str, key_name: str, revoke_after: List[ApiKey]
) -> None:
    created = admin.keys.create(key_name, scope="publish", topics=["orders.#"])
    revoke_after.append(created)
    assert created.key is not None and created.key.startswith("sk_")
    assert (created.name, created.scope, created.topics) == (key_name, "publish", ["orders.#"])
    assert created.expires_at is None and created.created_at

    transport = StatusRecorder()
    with Client(hub_url, api_key=created.key, transport=transport) as publisher:
        result = publisher.publish("orders.created", {"id": 42})
        assert transport.statuses[-1] == 202
        assert result.message_id and not result.duplicate

        with pytest.raises(ForbiddenError) as outside:
            publisher.publish("billing.x", {"id": 42})
        assert (outside.value.status, outside.value.code) == (403, "forbidden")
        with pytest.raises(ForbiddenError):
            publisher.keys.list()  # a publish key is no admin

        # The key's name is the author of its messages.
        logged = wait_for(
            lambda: _logged_author(admin, result.message_id), timeout=10, what="the message logged"
        )
        assert logged == key_name

        listed = admin.keys.list()
        mine = [k for k in listed if k.id == created.id]
        assert len(mine) == 1
        assert (mine[0].name, mine[0].scope, mine[0].topics) == (key_name, "publish", ["orders.#"])
        assert all(k.key is None for k in listed)
        assert created.key not in json.dumps([k.raw for k in listed])

        admin.keys.revoke(created.id)
        revoked_at = time.monotonic()
        while True:
            try:
                publisher.publish("orders.created", {"id": 43})
            except UnauthorizedError as exc:
                assert (exc.status, exc.code) == (401, "unauthorized")
                break
            assert time.monotonic() - revoked_at < REVOKED_WITHIN, "still accepted 1 s after revoke"
            time.sleep(0.05)

    assert created.id not in [k.id for k in admin.keys.list()]
    with pytest.raises(NotFoundError):
        admin.keys.revoke(created.id)


def _logged_author(admin: Client, message_id: str) -> Any:
    try:
        return admin.messages.get(message_id).author
    except NotFoundError:
        return None


@needs_hub
def test_expiry_and_admin_keys(
    admin: Client, hub_url: str, key_name: str, revoke_after: List[ApiKey]
) -> None:
    later = datetime.now(timezone.utc) + timedelta(days=30)
    ops = admin.keys.create(key_name + "-ops", scope="publish admin", expires_at=later)
    revoke_after.append(ops)
    assert ops.expires_at is not None and ops.expires_at.startswith(later.strftime("%Y-%m-%dT"))
    with Client(hub_url, api_key=ops.key) as operator:
        # An admin key administers: here it issues and revokes a key itself.
        other = operator.keys.create(key_name + "-other")
        revoke_after.append(other)
        assert other.scope == "publish" and other.topics is None
        operator.keys.revoke(other.id)
        assert operator.publish("anything.at.all").message_id

    expired = admin.keys.create(
        key_name + "-old", expires_at=datetime.now(timezone.utc) - timedelta(hours=1)
    )
    revoke_after.append(expired)
    with Client(hub_url, api_key=expired.key) as publisher:
        with pytest.raises(UnauthorizedError):
            publisher.publish("orders.created")


@needs_hub
@pytest.mark.asyncio
async def test_async_publish_key_lifecycle(hub_url: str, hub_secret: str, key_name: str) -> None:
    async with AsyncClient(
        hub_url, jwt_secret=hub_secret, author="sdk-python-tests", scope="publish admin"
    ) as admin:
        created = await admin.keys.create(key_name, scope="publish", topics=["orders.#"])
        try:
            assert created.key is not None and created.key.startswith("sk_")
            transport = AsyncStatusRecorder()
            async with AsyncClient(hub_url, api_key=created.key, transport=transport) as publisher:
                result = await publisher.publish("orders.created", {"id": 42})
                assert transport.statuses[-1] == 202 and result.message_id

                with pytest.raises(ForbiddenError) as outside:
                    await publisher.publish("billing.x", {"id": 42})
                assert outside.value.status == 403

                listed = await admin.keys.list()
                assert created.id in [k.id for k in listed]
                assert all(k.key is None for k in listed)
                assert created.key not in json.dumps([k.raw for k in listed])

                await admin.keys.revoke(created.id)
                loop = asyncio.get_running_loop()
                revoked_at = loop.time()
                while True:
                    try:
                        await publisher.publish("orders.created", {"id": 43})
                    except UnauthorizedError as exc:
                        assert exc.status == 401
                        break
                    assert loop.time() - revoked_at < REVOKED_WITHIN, "still accepted 1 s after revoke"
                    await asyncio.sleep(0.05)
        finally:
            try:
                await admin.keys.revoke(created.id)
            except NotFoundError:
                pass
