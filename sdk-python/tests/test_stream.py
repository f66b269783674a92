"""The live stream: the event-stream decoder, reconnecting against a scripted hub
(httpx.MockTransport), and the real hub (skipped when SWITCH_TEST_URL is unset)."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import uuid
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Union

import httpx
import pytest

import switch_sdk._stream as stream_module
from switch_sdk import (
    AsyncClient,
    AsyncMessageStream,
    Client,
    ForbiddenError,
    InvalidRequestError,
    Message,
    MessageStream,
    NetworkError,
    NotFoundError,
    SwitchError,
    UnauthorizedError,
    sign_token,
)
from switch_sdk._stream import ServerSentEvent, SSEDecoder

from .conftest import HUB_SECRET, Proxy, needs_hub

AUTHOR = "sdk-python-tests"


# --- the decoder ------------------------------------------------------------------------------


def decode(*chunks: Union[bytes, str]) -> List[ServerSentEvent]:
    decoder = SSEDecoder()
    events: List[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk.encode("utf-8") if isinstance(chunk, str) else chunk))
    return events


def test_decoder_reads_fields_comments_and_multiline_data() -> None:
    events = decode(
        ": live\n\n"
        "id: msg_1\nevent: message\ndata: {\"a\":\ndata: 1}\n\n"
        ": keep-alive\n\n"
        "event: error\ndata: {\"code\":\"slow_consumer\"}\n\n"
    )
    assert events == [
        ServerSentEvent(event="message", data='{"a":\n1}', id="msg_1"),
        ServerSentEvent(event="error", data='{"code":"slow_consumer"}', id="msg_1"),
    ]


def test_decoder_handles_every_line_ending_split_anywhere() -> None:
    text = "id: 1\r\ndata: a\r\n\r\nid: 2\rdata: b\r\rid: 3\ndata: c\n\n"
    whole = decode(text)
    assert [(e.id, e.data) for e in whole] == [("1", "a"), ("2", "b"), ("3", "c")]
    raw = text.encode()
    for size in (1, 2, 3, 5, 7):
        assert decode(*[raw[i : i + size] for i in range(0, len(raw), size)]) == whole
    # A CR that ends a chunk is not a line of its own when an LF follows.
    assert decode("data: x\r", "\n\r", "\n") == [ServerSentEvent(event="message", data="x")]


def test_decoder_spec_corners() -> None:
    # A byte order mark, a field without a colon, no space after the colon, an extra space kept.
    assert decode("\ufeffdata\n\n") == [ServerSentEvent(event="message", data="")]
    assert decode("data:x\ndata:  y\n\n")[0].data == "x\n y"
    # An event without data is dropped, but its id is remembered; unknown fields are ignored.
    events = decode("id: 7\nevent: ping\n\nfoo: bar\ndata: z\n\n")
    assert events == [ServerSentEvent(event="message", data="z", id="7")]
    # retry takes digits only, with or without an event; an id with NUL is ignored.
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 1500\n\n") == [] and decoder.retry == 1500
    assert decoder.feed(b"retry: 1.5\n\n") == [] and decoder.retry == 1500
    assert decode("id: a\0b\ndata: a\n\n")[0].id is None
    # A multi-byte character split across chunks; an event cut off at the end is not dispatched.
    raw = "data: café\n\n".encode()
    assert decode(raw[:9], raw[9:])[0].data == "café"
    assert decode("data: complete\n\ndata: cut off") == [
        ServerSentEvent(event="message", data="complete")
    ]


# --- a scripted hub -----------------------------------------------------------------------------


def message(n: int, topic: str = "orders.created") -> Dict[str, Any]:
    return {
        "id": f"msg_{n}",
        "topic": topic,
        "author": "a",
        "body": {"n": n},
        "headers": {},
        "query_params": {},
        "path_params": {},
        "http_method": "POST",
        "ordering_key": None,
        "matched": 0,
        "created_at": "2026-01-01T00:00:00.000Z",
    }


def event(n: int) -> bytes:
    return f"id: msg_{n}\nevent: message\ndata: {json.dumps(message(n))}\n\n".encode()


SLOW = b'event: error\ndata: {"code":"slow_consumer"}\n\n'
SSE_HEADERS = {"content-type": "text/event-stream"}


def sse(*parts: bytes) -> httpx.Response:
    return httpx.Response(200, headers=SSE_HEADERS, content=b": live\n\n" + b"".join(parts))


def refused(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": f"refused: {code}"}})


Answer = Union[httpx.Response, Exception, Callable[[], httpx.Response]]


class ScriptedHub:
    """Answers the n-th request with the n-th answer (a response, or an exception to raise)."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: List[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            return refused(401, "unauthorized")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer() if callable(answer) else answer

    def client(self) -> Client:
        return Client(
            "http://hub.test", jwt_secret="s", author="a", scope="admin",
            transport=httpx.MockTransport(self),
        )

    def async_client(self) -> AsyncClient:
        return AsyncClient(
            "http://hub.test", jwt_secret="s", author="a", scope="admin",
            transport=httpx.MockTransport(self),
        )

    def resumed_from(self) -> List[Any]:
        return [r.headers.get("last-event-id") for r in self.requests]


@pytest.fixture(autouse=True)
def quick_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "RECONNECT_DELAY", 0.001)


def test_stream_request_messages_and_reconnect_after_the_end() -> None:
    hub = ScriptedHub(sse(event(1), b": keep-alive\n\n", event(2)), refused(401, "unauthorized"))
    with hub.client() as client:
        stream = client.stream("orders.*", filter="body.n > 0")
        assert isinstance(stream, MessageStream)
        assert hub.requests == [], "nothing is sent before connecting or iterating"
        got: List[Message] = []
        with pytest.raises(UnauthorizedError):
            for m in stream:
                got.append(m)
    assert [m.id for m in got] == ["msg_1", "msg_2"]
    assert got[0] == Message.from_dict(message(1)) and got[0].deliveries is None
    first = hub.requests[0]
    assert (first.method, first.url.path) == ("GET", "/stream")
    assert dict(first.url.params) == {"topic": "orders.*", "filter": "body.n > 0"}
    assert first.headers["accept"] == "text/event-stream"
    assert first.headers["authorization"].startswith("Bearer ")
    # The hub ended the response: the stream came back for what follows msg_2.
    assert hub.resumed_from() == [None, "msg_2"]
    assert stream.closed and stream.last_id == "msg_2"


def test_slow_consumer_and_dropped_connections_resume_from_the_last_message() -> None:
    def dropped() -> httpx.Response:
        def body() -> Iterator[bytes]:
            yield b": live\n\n" + event(2) + event(3)[:20]
            raise httpx.ReadError("connection reset")

        return httpx.Response(200, headers=SSE_HEADERS, content=body())

    hub = ScriptedHub(
        sse(event(1), SLOW, event(99)),  # nothing after the error event is read
        dropped,
        httpx.ConnectError("refused"),  # the hub is away for a moment: retried
        refused(503, "unavailable"),
        refused(404, "not_found"),  # msg_2 not logged yet: retried
        sse(event(3), event(4)),
    )
    with hub.client() as client, client.stream("#", since="msg_0") as stream:
        ids = [m.id for _, m in zip(range(4), stream)]
    assert ids == ["msg_1", "msg_2", "msg_3", "msg_4"]
    assert hub.resumed_from() == ["msg_0", "msg_1", "msg_2", "msg_2", "msg_2", "msg_2"]
    assert stream.closed


def test_errors_on_connect_are_typed_and_not_retried() -> None:
    cases = [
        (refused(403, "forbidden"), ForbiddenError),
        (refused(400, "invalid_request"), InvalidRequestError),
        (refused(404, "not_found"), NotFoundError),
        (httpx.ConnectError("refused"), NetworkError),
        (httpx.Response(200, json={"not": "a stream"}), SwitchError),
    ]
    for answer, error in cases:
        hub = ScriptedHub(answer, sse(event(1)))
        with hub.client() as client:
            stream = client.stream("#", since="msg_0")
            with pytest.raises(error) as info:
                stream.connect()
            assert type(info.value) is error
            assert len(hub.requests) == 1 and stream.closed
            assert list(stream) == []


def test_an_unknown_error_event_ends_the_stream() -> None:
    hub = ScriptedHub(sse(event(1), b'event: error\ndata: {"code":"shutting_down"}\n\n'))
    with hub.client() as client, client.stream() as stream:
        assert next(stream).id == "msg_1"
        with pytest.raises(SwitchError) as info:
            next(stream)
        assert info.value.code == "shutting_down"
        assert stream.closed
        with pytest.raises(StopIteration):
            next(stream)
    assert dict(hub.requests[0].url.params) == {"topic": "#"}


def test_close_and_arguments() -> None:
    hub = ScriptedHub(sse(event(1), event(2)))
    with hub.client() as client:
        stream = client.stream("orders.#").connect()
        assert next(stream).id == "msg_1"
        stream.close()
        stream.close()
        assert stream.closed and list(stream) == []
        with pytest.raises(ValueError):
            stream.connect()
        with pytest.raises(ValueError):
            client.stream("")
        with pytest.raises(ValueError):
            client.stream("#", since="")
        with pytest.raises(TypeError):
            client.stream("#", filter=1)  # type: ignore[arg-type]
    assert len(hub.requests) == 1


class RecordedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body of two messages that records being closed."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield b": live\n\n" + event(1) + event(2)

    def close(self) -> None:
        self.closed = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b": live\n\n" + event(1) + event(2)

    async def aclose(self) -> None:
        self.closed = True


def test_breaking_out_of_a_loop_over_a_stream_closes_it() -> None:
    body = RecordedStream()
    answer = httpx.Response(200, headers=SSE_HEADERS, stream=body)
    with ScriptedHub(answer).client() as client:
        gc.disable()  # the stream and its generator must go without waiting for a collection
        try:
            for m in client.stream():
                assert m.id == "msg_1"
                break
            assert body.closed
        finally:
            gc.enable()


@pytest.mark.asyncio
async def test_breaking_out_of_an_async_loop_over_a_stream_closes_it() -> None:
    body = RecordedStream()
    answer = httpx.Response(200, headers=SSE_HEADERS, stream=body)
    async with ScriptedHub(answer).async_client() as client:
        gc.disable()
        try:
            async for m in client.stream():
                assert m.id == "msg_1"
                break
            for _ in range(10):  # the event loop closes a dropped async generator soon after
                await asyncio.sleep(0)
            assert body.closed
        finally:
            gc.enable()


@pytest.mark.asyncio
async def test_async_stream_resumes_after_slow_consumer_and_drops() -> None:
    def dropped() -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield b": live\n\n" + event(2) + b"id: msg_3\nevent: mess"
            raise httpx.ReadError("connection reset")

        return httpx.Response(200, headers=SSE_HEADERS, content=body())

    hub = ScriptedHub(
        sse(event(1), SLOW),
        dropped,
        httpx.ConnectError("refused"),
        sse(event(3)),
        refused(403, "forbidden"),
    )
    got: List[str] = []
    async with hub.async_client() as client:
        stream = client.stream("orders.*", filter="true")
        assert isinstance(stream, AsyncMessageStream)
        with pytest.raises(ForbiddenError):
            async for m in stream:
                got.append(m.id)
    assert got == ["msg_1", "msg_2", "msg_3"]
    assert hub.resumed_from() == [None, "msg_1", "msg_2", "msg_2", "msg_3"]
    assert stream.closed and stream.last_id == "msg_3"

    hub = ScriptedHub(refused(401, "unauthorized"))
    async with hub.async_client() as client:
        with pytest.raises(UnauthorizedError):
            async with client.stream():
                pass
    assert len(hub.requests) == 1


# --- against the hub ----------------------------------------------------------------------------

#: How long a test waits for the messages it expects.
STREAM_WAIT = 20.0


def take(stream: MessageStream, count: int, timeout: float = STREAM_WAIT) -> List[Message]:
    """The next ``count`` messages of ``stream``; fails if they do not come within ``timeout``."""
    got: List[Message] = []
    watchdog = threading.Timer(timeout, stream.close)
    watchdog.start()
    try:
        for m in stream:
            got.append(m)
            if len(got) == count:
                break
    finally:
        watchdog.cancel()
    assert len(got) == count, f"{len(got)} of {count} messages within {timeout:.0f} s"
    return got


async def atake(stream: AsyncMessageStream, count: int, timeout: float = STREAM_WAIT) -> List[Message]:
    got: List[Message] = []

    async def read() -> None:
        async for m in stream:
            got.append(m)
            if len(got) == count:
                return

    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        pass
    assert len(got) == count, f"{len(got)} of {count} messages within {timeout:.0f} s"
    return got


@pytest.fixture
def base() -> str:
    """A topic prefix no other test (or test run) uses."""
    return f"sdkpy.{uuid.uuid4().hex[:16]}"


@needs_hub
def test_stream_gets_exactly_the_matching_messages_in_order(admin: Client, base: str) -> None:
    with admin.stream(f"{base}.*", filter="body.total > 100") as stream:
        sent = [
            admin.publish(f"{base}.created", {"total": 50}),
            admin.publish(f"{base}.created", {"total": 150}, headers={"X-N": "1"}),
            admin.publish(f"{base}.other.deep", {"total": 500}),  # outside the pattern
            admin.publish(f"{base}x.created", {"total": 500}),  # outside the pattern
            admin.publish(f"{base}.updated", {"total": 250}, http_method="PUT"),
            admin.publish(f"{base}.created", {"note": "no total"}),
            admin.publish(f"{base}.created", {"total": 300}),
        ]
        got = take(stream, 3)
        assert [m.id for m in got] == [sent[i].message_id for i in (1, 4, 6)]
        assert [m.body for m in got] == [{"total": 150}, {"total": 250}, {"total": 300}]
        assert [m.topic for m in got] == [f"{base}.created", f"{base}.updated", f"{base}.created"]
        assert got[0].headers == {"X-N": "1"} and got[1].http_method == "PUT"
        assert all(isinstance(m, Message) and m.author == AUTHOR for m in got)
        assert all(m.created_at and m.deliveries is None for m in got)
        # Nothing else was in between: the next one is the next match.
        last = admin.publish(f"{base}.created", {"total": 101})
        assert [m.id for m in take(stream, 1)] == [last.message_id]
        assert stream.last_id == last.message_id
    assert stream.closed


@needs_hub
def test_stream_resumes_after_the_last_id(admin: Client, base: str) -> None:
    topic = f"{base}.created"
    with admin.stream(topic) as stream:
        first = [admin.publish(topic, {"n": n}).message_id for n in range(2)]
        assert [m.id for m in take(stream, 2)] == first
        last_id = stream.last_id
    assert last_id == first[-1]

    missed = [admin.publish(topic, {"n": n}).message_id for n in range(2, 5)]
    # The log has the messages within about a second; the hub waits for the resume point.
    with admin.stream(topic, since=last_id) as resumed:
        assert [m.id for m in take(resumed, 3)] == missed
        live = admin.publish(topic, {"n": 5}).message_id
        assert [m.id for m in take(resumed, 1)] == [live]

    with pytest.raises(NotFoundError):
        admin.stream(topic, since="msg_does_not_exist").connect()


@needs_hub
def test_stream_needs_a_token_covering_the_pattern(hub_url: str, base: str) -> None:
    token = sign_token(HUB_SECRET, author=AUTHOR, scope="publish", topics=[f"{base}.*"])
    with Client(hub_url, token=token) as client:
        for pattern in ("#", f"{base}.#", "other.*"):
            with pytest.raises(ForbiddenError) as info:
                client.stream(pattern).connect()
            assert info.value.status == 403 and info.value.code == "forbidden"
        with client.stream(f"{base}.*") as stream:
            sent = client.publish(f"{base}.created", {"n": 1})
            assert [m.id for m in take(stream, 1)] == [sent.message_id]
        with pytest.raises(InvalidRequestError):
            client.stream(f"{base}.*", filter="body.n >").connect()
    with Client(hub_url, jwt_secret="not-the-hub-secret") as client:
        with pytest.raises(UnauthorizedError):
            client.stream(f"{base}.*").connect()


@needs_hub
def test_stream_reconnects_when_the_connection_drops(
    admin: Client, proxy: Proxy, base: str, hub_secret: str
) -> None:
    topic = f"{base}.created"
    with Client(proxy.url, jwt_secret=hub_secret, scope="admin") as watcher:
        with watcher.stream(topic) as stream:
            before = [admin.publish(topic, {"n": n}).message_id for n in range(2)]
            assert [m.id for m in take(stream, 2)] == before

            proxy.refuse = True
            proxy.cut()
            during = [admin.publish(topic, {"n": n}).message_id for n in range(2, 5)]
            proxy.refuse = False

            assert [m.id for m in take(stream, 3)] == during
            after = admin.publish(topic, {"n": 5}).message_id
            assert [m.id for m in take(stream, 1)] == [after]
    resumes = [r for r in proxy.requests if f"last-event-id: {before[-1]}".encode() in r.lower()]
    assert resumes, "the stream came back with Last-Event-ID"


@needs_hub
@pytest.mark.asyncio
async def test_async_stream_filters_resumes_and_reconnects(
    hub_url: str, hub_secret: str, proxy: Proxy, base: str
) -> None:
    topic = f"{base}.created"
    async with AsyncClient(hub_url, jwt_secret=hub_secret, author=AUTHOR, scope="publish admin") as admin:
        async with admin.stream(f"{base}.*", filter="body.n >= 2") as stream:
            sent = [(await admin.publish(topic, {"n": n})).message_id for n in range(5)]
            got = await atake(stream, 3)
            assert [m.id for m in got] == sent[2:]
            assert [m.body for m in got] == [{"n": 2}, {"n": 3}, {"n": 4}]
            last_id = stream.last_id
        assert stream.closed

        missed = [(await admin.publish(topic, {"n": n})).message_id for n in range(5, 8)]
        async with admin.stream(f"{base}.*", since=last_id) as resumed:
            assert [m.id for m in await atake(resumed, 3)] == missed

        with pytest.raises(ForbiddenError):
            token = sign_token(hub_secret, topics=[f"{base}.created"])
            async with AsyncClient(hub_url, token=token) as limited:
                await limited.stream(f"{base}.*").connect()

        async with AsyncClient(proxy.url, jwt_secret=hub_secret, scope="admin") as watcher:
            stream = watcher.stream(topic)
            await stream.connect()
            first = (await admin.publish(topic, {"n": 8})).message_id
            assert [m.id for m in await atake(stream, 1)] == [first]
            proxy.refuse = True
            proxy.cut()
            during = [(await admin.publish(topic, {"n": n})).message_id for n in (9, 10)]
            proxy.refuse = False
            assert [m.id for m in await atake(stream, 2)] == during
            await stream.aclose()
            assert stream.closed


@needs_hub
def test_close_from_another_thread_ends_a_waiting_read(admin: Client, base: str) -> None:
    stream = admin.stream(f"{base}.quiet").connect()
    threading.Timer(0.3, stream.close).start()
    assert list(stream) == []
    assert stream.closed


@needs_hub
@pytest.mark.asyncio
async def test_aclose_from_another_task_ends_a_waiting_read(
    hub_url: str, hub_secret: str, base: str
) -> None:
    async with AsyncClient(hub_url, jwt_secret=hub_secret, scope="admin") as client:
        stream = await client.stream(f"{base}.quiet").connect()
        asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(stream.aclose()))

        async def drain() -> List[Message]:
            return [m async for m in stream]

        assert await asyncio.wait_for(drain(), 10) == []
        assert stream.closed
