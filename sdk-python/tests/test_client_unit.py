"""The clients against a scripted hub (httpx.MockTransport): requests sent, answers read,
errors mapped."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional

import httpx
import pytest

from switch_sdk import (
    AsyncClient,
    AsyncMessageIterator,
    Client,
    ConflictError,
    DeadLetter,
    Delivery,
    DeliveryPage,
    ExplainedSubscriber,
    Explanation,
    ForbiddenError,
    InvalidRequestError,
    Message,
    MessageDelivery,
    MessagePage,
    NetworkError,
    NotFoundError,
    PayloadTooLargeError,
    PublishResult,
    ReplayResult,
    Subscriber,
    SwitchError,
    UnauthorizedError,
    UnavailableError,
)

SUB = {
    "id": 7,
    "topic": "orders.*",
    "target_url": "http://localhost:9000/hook/:id",
    "filter_expression": "body.total > 100",
    "secret": "whsec_AAAA",
    "enabled": True,
    "description": "orders",
    "created_at": "2024-01-01T00:00:00Z",
    "updated_at": "2024-01-01T00:00:00Z",
}


class Hub:
    """Records requests and answers them with a handler."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.requests: List[httpx.Request] = []
        self._handler = handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._handler(request)

    def client(self) -> Client:
        return Client(
            "http://hub.test/", jwt_secret="s", author="a", scope="publish admin",
            transport=httpx.MockTransport(self),
        )

    def async_client(self) -> AsyncClient:
        return AsyncClient(
            "http://hub.test", jwt_secret="s", author="a", scope="publish admin",
            transport=httpx.MockTransport(self),
        )

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


def answer(status: int, payload: Any = None, **kwargs: Any) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if payload is None:
            return httpx.Response(status, **kwargs)
        return httpx.Response(status, json=payload, **kwargs)

    return handler


# --- publishing ---------------------------------------------------------------------------


def test_publish_sends_native_body() -> None:
    hub = Hub(answer(202, {"message_id": "0190-abc", "matched": 2}))
    with hub.client() as client:
        result = client.publish(
            "orders.created",
            {"id": 42, "total": 9.5},
            headers={"X-Trace": "abc"},
            query_params={"source": "web"},
            path_params={"id": "42"},
            http_method="put",
        )
    assert result == PublishResult(message_id="0190-abc", matched=2, duplicate=False)
    req = hub.last
    assert req.method == "POST"
    assert req.url == "http://hub.test/publish"
    assert req.headers["content-type"] == "application/json"
    assert "idempotency-key" not in req.headers
    assert body_of(req) == {
        "topic": "orders.created",
        "body": {"id": 42, "total": 9.5},
        "headers": {"X-Trace": "abc"},
        "query_params": {"source": "web"},
        "path_params": {"id": "42"},
        "http_method": "PUT",
    }


def test_publish_minimal_body_and_idempotency_key() -> None:
    hub = Hub(answer(200, {"message_id": "m1", "duplicate": True}))
    with hub.client() as client:
        result = client.publish("t", idempotency_key="key-1")
    assert result.duplicate is True
    assert result.message_id == "m1"
    assert result.matched == 0
    assert hub.last.headers["idempotency-key"] == "key-1"
    assert body_of(hub.last) == {"topic": "t", "http_method": "POST"}


@pytest.mark.parametrize("body", [[1, 2], "text", 0, False, {"nested": {"a": [None]}}])
def test_publish_any_json_body(body: Any) -> None:
    hub = Hub(answer(202, {"message_id": "m", "matched": 0}))
    with hub.client() as client:
        client.publish("t", body)
    assert body_of(hub.last)["body"] == body


def test_publish_refuses_bad_arguments_before_sending() -> None:
    hub = Hub(answer(202, {"message_id": "m", "matched": 0}))
    with hub.client() as client:
        with pytest.raises(ValueError):
            client.publish("t", http_method="TRACE")
        with pytest.raises(ValueError):
            client.publish("")
    assert hub.requests == []


# --- ordering keys and spooled publishes ---------------------------------------------------

#: Keys the hub takes: 1 to 255 bytes in UTF-8, no control characters.
GOOD_ORDERING_KEYS = ["k", "customer-42", "x" * 255, "é" * 127 + "x", "заказ 42 ✓", "a b\u00a0c"]
#: Keys the hub refuses: empty, over 255 bytes, control characters (C0, DEL, C1), not text.
BAD_ORDERING_KEYS: List[Any] = [
    "",
    "x" * 256,
    "é" * 128,
    "a\nb",
    "tab\there",
    "nul\x00",
    "del\x7f",
    "c1\x85",
    "\ud800",
    42,
    b"bytes",
]


@pytest.mark.parametrize("key", GOOD_ORDERING_KEYS)
def test_publish_sends_the_ordering_key(key: str) -> None:
    hub = Hub(answer(202, {"message_id": "m", "matched": 1}))
    with hub.client() as client:
        client.publish("orders.created", {"id": 1}, ordering_key=key)
    assert body_of(hub.last) == {
        "topic": "orders.created", "body": {"id": 1}, "http_method": "POST", "ordering_key": key,
    }
    assert "ordering-key" not in hub.last.headers


def test_explain_and_dry_run_send_the_ordering_key() -> None:
    hub = Hub(answer(200, {"matched": [], "subscribers": []}))
    with hub.client() as client:
        client.explain("orders.created", ordering_key="customer-7")
        assert body_of(hub.last)["ordering_key"] == "customer-7"
        client.publish("orders.created", ordering_key="customer-8", dry_run=True)
        assert body_of(hub.last)["ordering_key"] == "customer-8"
        assert dict(hub.last.url.params) == {"dry_run": "true"}


@pytest.mark.parametrize("key", BAD_ORDERING_KEYS, ids=repr)
def test_bad_ordering_key_is_refused_before_sending(key: Any) -> None:
    hub = Hub(answer(202, {"message_id": "m", "matched": 0}))
    with hub.client() as client:
        with pytest.raises(ValueError, match="ordering_key"):
            client.publish("t", ordering_key=key)
        with pytest.raises(ValueError, match="ordering_key"):
            client.explain("t", ordering_key=key)
        with pytest.raises(ValueError, match=r"messages\[1\]\.ordering_key"):
            client.publish_batch([{"topic": "t"}, {"topic": "t", "ordering_key": key}])
    assert hub.requests == []


@pytest.mark.asyncio
async def test_async_bad_ordering_key_is_refused_before_sending() -> None:
    hub = Hub(answer(202, {"message_id": "m", "matched": 0}))
    async with hub.async_client() as client:
        with pytest.raises(ValueError, match="ordering_key"):
            await client.publish("t", ordering_key="a\rb")
        with pytest.raises(ValueError, match=r"messages\[0\]\.ordering_key"):
            await client.publish_batch([{"topic": "t", "ordering_key": ""}])
    assert hub.requests == []


def test_publish_batch_sends_each_items_ordering_key() -> None:
    hub = Hub(answer(202, {"items": [
        {"message_id": "m1", "matched": 1}, {"message_id": "m2", "matched": 1},
        {"message_id": "m3", "matched": 1},
    ]}))
    with hub.client() as client:
        results = client.publish_batch([
            {"topic": "a", "ordering_key": "k1"},
            {"topic": "a"},
            {"topic": "a", "ordering_key": None},
        ])
    assert [r.spooled for r in results] == [False, False, False]
    assert body_of(hub.last) == {"messages": [
        {"topic": "a", "ordering_key": "k1"}, {"topic": "a"}, {"topic": "a", "ordering_key": None},
    ]}


def test_spooled_publish_is_a_result_not_an_error() -> None:
    hub = Hub(answer(202, {"message_id": "m1", "matched": 2, "spooled": True}))
    with hub.client() as client:
        result = client.publish("orders.created", ordering_key="k")
    assert result == PublishResult(message_id="m1", matched=2, duplicate=False, spooled=True)
    plain = Hub(answer(202, {"message_id": "m2", "matched": 0}))
    with plain.client() as client:
        assert client.publish("orders.created").spooled is False
    explicit = Hub(answer(202, {"message_id": "m3", "matched": 0, "spooled": False}))
    with explicit.client() as client:
        assert client.publish("orders.created").spooled is False


def test_spooled_batch_marks_every_result() -> None:
    hub = Hub(answer(202, {
        "items": [{"message_id": "m1", "matched": 1}, {"message_id": "m2", "matched": 0}],
        "spooled": True,
    }))
    with hub.client() as client:
        results = client.publish_batch([{"topic": "a", "ordering_key": "k"}, {"topic": "b"}])
    assert results == [
        PublishResult("m1", 1, spooled=True), PublishResult("m2", 0, spooled=True),
    ]


@pytest.mark.asyncio
async def test_async_spooled_publish_and_batch() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/publish/batch":
            return httpx.Response(
                202, json={"items": [{"message_id": "b1", "matched": 1}], "spooled": True}
            )
        return httpx.Response(202, json={"message_id": "m1", "matched": 1, "spooled": True})

    hub = Hub(handler)
    async with hub.async_client() as client:
        result = await client.publish("t", ordering_key="k")
        assert result.spooled is True and result.message_id == "m1"
        assert body_of(hub.last)["ordering_key"] == "k"
        assert await client.publish_batch([{"topic": "t"}]) == [
            PublishResult("b1", 1, spooled=True)
        ]


# --- error mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,code,cls",
    [
        (400, "invalid_request", InvalidRequestError),
        (401, "unauthorized", UnauthorizedError),
        (403, "forbidden", ForbiddenError),
        (404, "not_found", NotFoundError),
        (409, "conflict", ConflictError),
        (413, "payload_too_large", PayloadTooLargeError),
        (503, "unavailable", UnavailableError),
        (500, "internal", SwitchError),
        (422, "invalid_request", SwitchError),
    ],
)
def test_error_mapping(status: int, code: str, cls: type) -> None:
    hub = Hub(answer(status, {"error": {"code": code, "message": f"it went {code}"}}))
    with hub.client() as client:
        with pytest.raises(cls) as info:
            client.publish("t")
    err = info.value
    assert type(err) is cls
    assert isinstance(err, SwitchError)
    assert err.status == status
    assert err.code == code
    assert err.message == f"it went {code}"
    assert code in str(err) and str(status) in str(err)


def test_unavailable_carries_retry_after() -> None:
    hub = Hub(answer(503, {"error": {"code": "unavailable", "message": "redis down"}},
                     headers={"Retry-After": "7"}))
    with hub.client() as client:
        with pytest.raises(UnavailableError) as info:
            client.publish("t")
    assert info.value.retry_after == 7.0


def test_unavailable_without_retry_after() -> None:
    hub = Hub(answer(503, {"error": {"code": "unavailable", "message": "db down"}}))
    with hub.client() as client:
        with pytest.raises(UnavailableError) as info:
            client.publish("t")
    assert info.value.retry_after is None


def test_unavailable_retry_after_as_http_date() -> None:
    hub = Hub(answer(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    with hub.client() as client:
        with pytest.raises(UnavailableError) as info:
            client.publish("t")
    assert info.value.retry_after == 0.0  # a date in the past: retry now


def test_error_with_non_json_body() -> None:
    hub = Hub(lambda r: httpx.Response(413, text="Payload Too Large"))
    with hub.client() as client:
        with pytest.raises(PayloadTooLargeError) as info:
            client.publish("t")
    assert info.value.code is None
    assert info.value.message == "Payload Too Large"


def test_error_with_empty_body() -> None:
    hub = Hub(lambda r: httpx.Response(401))
    with hub.client() as client:
        with pytest.raises(UnauthorizedError) as info:
            client.publish("t")
    assert info.value.status == 401
    assert "401" in info.value.message


def test_success_with_non_json_body_is_a_switch_error() -> None:
    hub = Hub(lambda r: httpx.Response(202, text="<html>proxy</html>"))
    with hub.client() as client:
        with pytest.raises(SwitchError) as info:
            client.publish("t")
    assert info.value.status == 202


def test_success_missing_fields_is_a_switch_error() -> None:
    hub = Hub(answer(202, {"matched": 1}))
    with hub.client() as client:
        with pytest.raises(SwitchError, match="message_id"):
            client.publish("t")
        hub._handler = answer(200, {"items": [{"topic": "no id"}]})
        with pytest.raises(SwitchError):
            client.subscribers.list()


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectTimeout(""),
        httpx.RemoteProtocolError("server disconnected"),
    ],
)
def test_transport_failures_are_network_errors(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    hub = Hub(handler)
    with hub.client() as client:
        with pytest.raises(NetworkError) as info:
            client.publish("t")
    assert info.value.status is None
    assert info.value.__cause__ is exc


@pytest.mark.asyncio
async def test_async_error_mapping_and_network_error() -> None:
    hub = Hub(answer(403, {"error": {"code": "forbidden", "message": "needs admin"}}))
    async with hub.async_client() as client:
        with pytest.raises(ForbiddenError) as info:
            await client.subscribers.list()
    assert info.value.code == "forbidden"

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with Hub(handler).async_client() as client:
        with pytest.raises(NetworkError):
            await client.publish("t")


# --- admin --------------------------------------------------------------------------------


def test_subscribers_crud_requests() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if path == "/subscribers" and method == "GET":
            return httpx.Response(200, json={"items": [SUB]})
        if path == "/subscribers" and method == "POST":
            return httpx.Response(201, json={**SUB, **body_of(request)})
        if path == "/subscribers/7" and method == "GET":
            return httpx.Response(200, json=SUB)
        if path == "/subscribers/7" and method == "PATCH":
            return httpx.Response(200, json={**SUB, **body_of(request)})
        if path == "/subscribers/7" and method == "DELETE":
            return httpx.Response(204)
        if path == "/subscribers/7/rotate-secret" and method == "POST":
            return httpx.Response(200, json={**SUB, "secret": "whsec_BBBB"})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})

    hub = Hub(handler)
    with hub.client() as client:
        subs = client.subscribers.list(topic="orders.*")
        assert hub.last.url.params["topic"] == "orders.*"
        assert subs == [Subscriber.from_dict(SUB)]
        assert subs[0].raw["target_url"] == SUB["target_url"]

        created = client.subscribers.create("a.#", "http://x/h", description="d")
        assert body_of(hub.last) == {
            "topic": "a.#", "target_url": "http://x/h", "enabled": True, "description": "d",
        }
        assert created.topic == "a.#"

        client.subscribers.create(
            "b", "http://y", filter_expression="true", enabled=False, secret="whsec_CCCC"
        )
        assert body_of(hub.last) == {
            "topic": "b", "target_url": "http://y", "enabled": False,
            "filter_expression": "true", "secret": "whsec_CCCC",
        }

        assert client.subscribers.get(7).id == 7

        updated = client.subscribers.update(7, enabled=False, filter_expression=None)
        assert hub.last.method == "PATCH"
        assert body_of(hub.last) == {"enabled": False, "filter_expression": None}
        assert updated.enabled is False and updated.filter_expression is None

        with pytest.raises(TypeError):
            client.subscribers.update(7, colour="blue")

        assert client.subscribers.rotate_secret(7).secret == "whsec_BBBB"
        client.subscribers.delete(7)
        assert hub.last.method == "DELETE"
        assert hub.last.url.path == "/subscribers/7"

        with pytest.raises(NotFoundError):
            client.subscribers.get(8)


def test_string_ids_are_url_encoded() -> None:
    hub = Hub(answer(200, {**SUB, "id": "a b/c"}))
    with hub.client() as client:
        client.subscribers.get("a b/c")
    assert hub.last.url.raw_path == b"/subscribers/a%20b%2Fc"


def test_base_url_with_path_prefix() -> None:
    hub = Hub(answer(200, {"items": []}))
    with Client("http://hub.test/switch/", transport=httpx.MockTransport(hub)) as client:
        client.subscribers.list()
    assert hub.last.url == "http://hub.test/switch/subscribers"


def test_test_filter() -> None:
    hub = Hub(answer(200, {"matches": True}))
    msg = {"topic": "orders.created", "body": {"total": 150}}
    with hub.client() as client:
        assert client.test_filter("body.total > 100", msg) is True
    assert hub.last.url.path == "/filters/test"
    assert body_of(hub.last) == {"filter_expression": "body.total > 100", "message": msg}

    bad = Hub(answer(400, {"error": {"code": "invalid_request", "message": "at 6: bad"}}))
    with bad.client() as client:
        with pytest.raises(InvalidRequestError):
            client.test_filter("body. >", msg)


def _delivery(i: int) -> Dict[str, Any]:
    return {
        "id": i, "message_id": f"m{i}", "subscriber_id": 7, "attempt": 1,
        "outcome": "delivered", "http_status": 200, "error_kind": None,
        "duration_ms": 12, "created_at": "2024-01-01T00:00:00Z",
    }


def _paged_handler(total: int, use_next_since: bool = True) -> Callable[[httpx.Request], httpx.Response]:
    rows = [_delivery(i) for i in range(1, total + 1)]

    def handler(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        since = int(params.get("since", "0"))
        limit = int(params.get("limit", "100"))
        page = [r for r in rows if r["id"] > since][:limit]
        payload: Dict[str, Any] = {"items": page}
        if use_next_since:
            payload["next_since"] = page[-1]["id"] if page else None
        return httpx.Response(200, json=payload)

    return handler


@pytest.mark.parametrize("use_next_since", [True, False])
def test_iter_deliveries_pages_with_since(use_next_since: bool) -> None:
    hub = Hub(_paged_handler(7, use_next_since))
    with hub.client() as client:
        got = list(client.iter_deliveries(subscriber_id=7, outcome="delivered", page_size=3))
    assert [d.id for d in got] == list(range(1, 8))
    assert all(isinstance(d, Delivery) for d in got)
    sinces = [r.url.params.get("since") for r in hub.requests]
    assert sinces == [None, "3", "6", "7"]  # stops at the empty page
    first = hub.requests[0].url.params
    assert first["subscriber_id"] == "7"
    assert first["outcome"] == "delivered"
    assert first["limit"] == "3"
    assert "message_id" not in first


def test_iter_deliveries_starts_after_since() -> None:
    hub = Hub(_paged_handler(5))
    with hub.client() as client:
        got = [d.id for d in client.iter_deliveries(since=2, page_size=100)]
    assert got == [3, 4, 5]


def test_iter_deliveries_stops_if_cursor_does_not_move() -> None:
    hub = Hub(answer(200, {"items": [_delivery(1)], "next_since": 1}))
    with hub.client() as client:
        got = list(client.iter_deliveries(since=1))
    assert [d.id for d in got] == [1]
    assert len(hub.requests) == 1


def test_list_deliveries_one_page() -> None:
    hub = Hub(answer(200, {"items": [_delivery(4)], "next_since": 4}))
    with hub.client() as client:
        page = client.list_deliveries(message_id="m4", since=3, limit=10)
    assert isinstance(page, DeliveryPage)
    assert page.next_since == 4
    assert page.items[0] == Delivery.from_dict(_delivery(4))
    assert dict(hub.last.url.params) == {"message_id": "m4", "since": "3", "limit": "10"}


@pytest.mark.asyncio
async def test_async_iter_deliveries() -> None:
    hub = Hub(_paged_handler(5))
    async with hub.async_client() as client:
        got = [d.id async for d in client.iter_deliveries(page_size=2)]
        page = await client.list_deliveries(limit=1)
    assert got == [1, 2, 3, 4, 5]
    assert [d.id for d in page.items] == [1]


def test_dead_letters() -> None:
    row = {
        "id": 3, "message_id": "m", "subscriber_id": 7, "last_error": "HTTP 500",
        "created_at": "2024-01-01T00:00:00Z", "replayed_at": None,
        "request": {"method": "POST", "url": "http://x"},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"items": [row]})
        if request.url.path == "/dead-letters/3/replay":
            return httpx.Response(200, json={**row, "replayed_at": "now"})
        return httpx.Response(200, json={"replayed": 4})

    hub = Hub(handler)
    with hub.client() as client:
        letters = client.list_dead_letters(subscriber_id=7)
        assert hub.last.url.params["subscriber_id"] == "7"
        assert letters == [DeadLetter.from_dict(row)]
        assert letters[0].request == {"method": "POST", "url": "http://x"}
        assert client.replay_dead_letter(3)["replayed_at"] == "now"
        assert hub.last.method == "POST"
        assert client.replay_dead_letters(7) == {"replayed": 4}
        assert hub.last.url.path == "/dead-letters/replay"
        assert hub.last.url.params["subscriber_id"] == "7"
        client.replay_dead_letters()
        assert hub.last.url.path == "/dead-letters/replay"
        assert "subscriber_id" not in hub.last.url.params, "no subscriber: all of them"


def test_replay_with_empty_answer() -> None:
    hub = Hub(lambda r: httpx.Response(204))
    with hub.client() as client:
        assert client.replay_dead_letter(1) is None


def test_refresh_ping_health() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/refresh":
            return httpx.Response(200, json={"subscribers": 3})
        if request.url.path == "/ping":
            return httpx.Response(200, text="pong")
        return httpx.Response(503, json={"status": "degraded", "database": "ok", "redis": "down"})

    hub = Hub(handler)
    with hub.client() as client:
        client.refresh()
        assert hub.last.method == "POST"
        assert hub.last.url.path == "/refresh"
        assert client.ping() is True
        assert client.health() == {"status": "degraded", "database": "ok", "redis": "down"}


def test_health_503_error_body_raises() -> None:
    hub = Hub(answer(503, {"error": {"code": "unavailable", "message": "down"}},
                     headers={"Retry-After": "2"}))
    with hub.client() as client:
        with pytest.raises(UnavailableError) as info:
            client.health()
    assert info.value.retry_after == 2.0


def test_ping_false_when_not_pong() -> None:
    hub = Hub(lambda r: httpx.Response(500, text="oops"))
    with hub.client() as client:
        assert client.ping() is False


def test_timeout_is_configured() -> None:
    seen: List[Optional[dict]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions.get("timeout"))
        return httpx.Response(200, text="pong")

    with Client("http://hub.test", timeout=2.5, transport=httpx.MockTransport(handler)) as c:
        c.ping()
    assert seen[0] == {"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}


# --- message log, explain, batch publish ----------------------------------------------------


def _message(i: int, topic: str = "orders.created") -> Dict[str, Any]:
    return {
        "id": f"msg_{i}", "topic": topic, "author": "a", "body": {"n": i},
        "headers": {"X-Trace": "t"}, "query_params": {}, "path_params": {"id": str(i)},
        "http_method": "POST", "ordering_key": None, "matched": 1,
        "created_at": f"2024-01-01T00:00:0{i}.000Z",
    }


def _log_handler(
    total: int, moved_empty_pages: int = 0
) -> Callable[[httpx.Request], httpx.Response]:
    """A message log of ``total`` messages whose cursor is ``str(position * 10)``; the
    first ``moved_empty_pages`` requests answer an empty page whose cursor moved (what a
    topic pattern scanning past unmatched messages answers)."""
    rows = [_message(i) for i in range(1, total + 1)]
    state = {"empty": moved_empty_pages}

    def handler(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        since = int(params.get("since", "0"))
        limit = int(params.get("limit", "100"))
        if state["empty"]:
            state["empty"] -= 1
            return httpx.Response(200, json={"items": [], "next_since": str(since + 1)})
        page = [r for i, r in enumerate(rows, 1) if i * 10 > since][:limit]
        last = rows.index(page[-1]) + 1 if page else None
        next_since = str(last * 10) if last else (params.get("since"))
        return httpx.Response(200, json={"items": page, "next_since": next_since})

    return handler


def test_messages_list_follows_the_cursor_to_an_empty_page() -> None:
    hub = Hub(_log_handler(5))
    with hub.client() as client:
        it = client.messages.list(topic="orders.*", author="a", limit=2)
        assert hub.requests == [], "nothing is fetched before iterating"
        got = list(it)
    assert [m.id for m in got] == ["msg_1", "msg_2", "msg_3", "msg_4", "msg_5"]
    assert all(isinstance(m, Message) for m in got)
    assert got[0].body == {"n": 1} and got[0].path_params == {"id": "1"}
    assert got[0].headers == {"X-Trace": "t"} and got[0].deliveries is None
    assert [r.url.params.get("since") for r in hub.requests] == [None, "20", "40", "50"]
    first = hub.requests[0].url.params
    assert first["topic"] == "orders.*" and first["author"] == "a" and first["limit"] == "2"
    assert it.next_since == "50"


def test_messages_list_next_since_resumes_without_skipping() -> None:
    hub = Hub(_log_handler(5))
    with hub.client() as client:
        it = client.messages.list(limit=2)
        assert next(it).id == "msg_1"
        assert it.next_since is None, "the page is not handed out in full yet"
        assert next(it).id == "msg_2"
        assert it.next_since == "20"
        assert next(it).id == "msg_3"
        rest = [m.id for m in client.messages.list(since=it.next_since, limit=2)]
    assert rest == ["msg_3", "msg_4", "msg_5"]


def test_messages_list_reads_on_past_empty_pages_whose_cursor_moved() -> None:
    hub = Hub(_log_handler(2, moved_empty_pages=2))
    with hub.client() as client:
        got = [m.id for m in client.messages.list(topic="orders.#")]
    assert got == ["msg_1", "msg_2"]
    assert [r.url.params.get("since") for r in hub.requests] == [None, "1", "2", "20"]


def test_messages_list_stops_if_the_cursor_does_not_move() -> None:
    hub = Hub(answer(200, {"items": [_message(1)], "next_since": "7"}))
    with hub.client() as client:
        got = list(client.messages.list(since="7"))
    assert [m.id for m in got] == ["msg_1"]
    assert len(hub.requests) == 1


def test_messages_page_and_time_bounds() -> None:
    from datetime import datetime, timedelta, timezone

    hub = Hub(answer(200, {"items": [_message(1)], "next_since": "123"}))
    with hub.client() as client:
        page = client.messages.page(
            after=datetime(2024, 1, 1, 12, 0, 0),
            before=datetime(2024, 1, 1, 13, 0, 0, tzinfo=timezone(timedelta(hours=1))),
            since=99,
            limit=1000,
        )
        assert isinstance(page, MessagePage)
        assert page.next_since == "123" and page.items[0].id == "msg_1"
        assert dict(hub.last.url.params) == {
            "after": "2024-01-01T12:00:00+00:00",
            "before": "2024-01-01T13:00:00+01:00",
            "since": "99",
            "limit": "1000",
        }
        client.messages.page(after="2024-01-01T00:00:00.000Z")
        assert hub.last.url.params["after"] == "2024-01-01T00:00:00.000Z"
        n = len(hub.requests)
        for bad in (0, 1001):
            with pytest.raises(ValueError):
                client.messages.page(limit=bad)
            with pytest.raises(ValueError):
                client.messages.list(limit=bad)
        with pytest.raises(TypeError):
            client.messages.page(after=12)  # type: ignore[arg-type]
        assert len(hub.requests) == n


def test_messages_get_with_deliveries() -> None:
    row = {
        **_message(3),
        "deliveries": [
            {"subscriber_id": 7, "state": "delivered", "attempts": 1, "last_http_status": 200},
            {"subscriber_id": 8, "state": "pending", "attempts": 0, "last_http_status": None},
        ],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/messages/msg_3":
            return httpx.Response(200, json=row)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no message"}})

    hub = Hub(handler)
    with hub.client() as client:
        message = client.messages.get("msg_3")
        assert message.id == "msg_3" and message.matched == 1
        assert message.created_at == "2024-01-01T00:00:03.000Z"
        assert message.deliveries == [
            MessageDelivery(subscriber_id=7, state="delivered", attempts=1, last_http_status=200),
            MessageDelivery(subscriber_id=8, state="pending", attempts=0, last_http_status=None),
        ]
        with pytest.raises(NotFoundError) as info:
            client.messages.get("msg/none")
    assert info.value.code == "not_found"
    assert hub.last.url.raw_path == b"/messages/msg%2Fnone"


def test_messages_replay() -> None:
    hub = Hub(answer(200, {"messages": 3, "jobs": 5, "dry_run": True}))
    with hub.client() as client:
        result = client.messages.replay(
            topic="orders.#", after="2024-01-01T00:00:00Z", subscriber_id="7", dry_run=True
        )
        assert result == ReplayResult(messages=3, jobs=5, dry_run=True)
        assert hub.last.method == "POST" and hub.last.url.path == "/messages/replay"
        assert body_of(hub.last) == {
            "topic": "orders.#", "after": "2024-01-01T00:00:00Z", "subscriber_id": 7,
            "dry_run": True,
        }
        client.messages.replay()
        assert body_of(hub.last) == {"dry_run": False}
        hub._handler = answer(200, {"jobs": 1})
        with pytest.raises(SwitchError, match="messages"):
            client.messages.replay()


EXPLAINED = {
    "matched": [7],
    "subscribers": [
        {"id": 7, "matched": True, "reason": "matched"},
        {"id": 8, "matched": False, "reason": "filter_false", "missing": ["body.total"]},
    ],
}


def test_explain_and_publish_dry_run() -> None:
    hub = Hub(answer(200, EXPLAINED))
    with hub.client() as client:
        explained = client.explain("orders.created", {"x": 1}, headers={"A": "b"})
        assert isinstance(explained, Explanation)
        assert explained.matched == [7]
        assert explained.subscribers[1] == ExplainedSubscriber(
            id=8, matched=False, reason="filter_false", missing=["body.total"]
        )
        assert explained.subscriber("8") == explained.subscribers[1]
        assert explained.subscriber(9) is None
        assert explained.subscribers[0].missing == []
        assert hub.last.url.path == "/publish"
        assert dict(hub.last.url.params) == {"dry_run": "true"}
        assert body_of(hub.last) == {
            "topic": "orders.created", "body": {"x": 1}, "headers": {"A": "b"},
            "http_method": "POST",
        }
        again = client.publish("orders.created", {"x": 1}, dry_run=True)
        assert again == explained
        assert dict(hub.last.url.params) == {"dry_run": "true"}


def test_publish_batch() -> None:
    hub = Hub(answer(202, {"items": [
        {"message_id": "m1", "matched": 2}, {"message_id": "m2", "matched": 0},
    ]}))
    with hub.client() as client:
        results = client.publish_batch([
            {"topic": "orders.created", "body": {"id": 1}, "http_method": "put"},
            {"topic": "orders.paid", "query_params": {"a": "b"}},
        ])
        assert results == [PublishResult("m1", 2), PublishResult("m2", 0)]
        assert hub.last.url.path == "/publish/batch"
        assert body_of(hub.last) == {"messages": [
            {"topic": "orders.created", "body": {"id": 1}, "http_method": "PUT"},
            {"topic": "orders.paid", "query_params": {"a": "b"}},
        ]}
        n = len(hub.requests)
        with pytest.raises(TypeError):
            client.publish_batch([{"topic": "a"}, "b"])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            client.publish_batch({"topic": "a"})  # type: ignore[arg-type]
        assert len(hub.requests) == n
        with pytest.raises(SwitchError, match="batch of 1"):
            client.publish_batch([{"topic": "a"}])


def test_publish_batch_error_names_the_item() -> None:
    hub = Hub(answer(400, {"error": {
        "code": "invalid_request", "message": "messages[1]: bad topic", "index": 1,
    }}))
    with hub.client() as client:
        with pytest.raises(InvalidRequestError) as info:
            client.publish_batch([{"topic": "a"}, {"topic": "bad topic"}])
    assert info.value.index == 1
    assert info.value.code == "invalid_request"
    assert info.value.status == 400
    plain = Hub(answer(400, {"error": {"code": "invalid_request", "message": "bad"}}))
    with plain.client() as client:
        with pytest.raises(InvalidRequestError) as info:
            client.publish("t")
    assert info.value.index is None
    forbidden = Hub(answer(403, {"error": {"code": "forbidden", "message": "m", "index": 0}}))
    with forbidden.client() as client:
        with pytest.raises(ForbiddenError) as info:
            client.publish_batch([{"topic": "x"}])
    assert info.value.index == 0
    unavailable = Hub(answer(503, {"error": {"code": "unavailable", "message": "m", "index": 2}}))
    with unavailable.client() as client:
        with pytest.raises(UnavailableError) as info:
            client.publish_batch([{"topic": "x"}])
    assert info.value.index == 2


@pytest.mark.asyncio
async def test_async_message_log_explain_and_batch() -> None:
    log = _log_handler(3)

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/messages":
            return log(request)
        if path == "/messages/msg_1":
            return httpx.Response(200, json={**_message(1), "deliveries": []})
        if path == "/messages/replay":
            return httpx.Response(200, json={"messages": 3, "jobs": 0, "dry_run": True})
        if path == "/publish/batch":
            return httpx.Response(202, json={"items": [{"message_id": "m1", "matched": 1}]})
        if path == "/publish" and request.url.params.get("dry_run") == "true":
            return httpx.Response(200, json=EXPLAINED)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})

    hub = Hub(handler)
    async with hub.async_client() as client:
        it = client.messages.list(limit=2)
        assert isinstance(it, AsyncMessageIterator)
        assert [m.id async for m in it] == ["msg_1", "msg_2", "msg_3"]
        assert it.next_since == "30"
        assert [m.id async for m in client.messages.list(since=it.next_since)] == []
        page = await client.messages.page(since="10", limit=1)
        assert [m.id for m in page.items] == ["msg_2"] and page.next_since == "20"
        assert (await client.messages.get("msg_1")).deliveries == []
        assert await client.messages.replay(topic="#", dry_run=True) == ReplayResult(3, 0, True)
        assert await client.publish_batch([{"topic": "a"}]) == [PublishResult("m1", 1)]
        explained = await client.explain("orders.created")
        assert explained.matched == [7]
        assert await client.publish("orders.created", dry_run=True) == explained
        with pytest.raises(ValueError):
            client.messages.list(limit=0)
