"""The asynchronous client."""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import (
    Any,
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Deque,
    Dict,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Type,
    TypeVar,
    Union,
    overload,
)

import httpx

from . import _api, _stream
from ._api import Time
from ._base import BaseClient, TimeoutArg
from .auth import Scope
from .errors import SwitchError, error_from_response
from .models import (
    ApiKey,
    DeadLetter,
    Delivery,
    DeliveryPage,
    Explanation,
    Id,
    Message,
    MessagePage,
    PublishResult,
    ReplayResult,
    Subscriber,
)

__all__ = [
    "AsyncClient",
    "AsyncSubscribers",
    "AsyncKeys",
    "AsyncMessages",
    "AsyncMessageIterator",
    "AsyncMessageStream",
]

T = TypeVar("T")


class AsyncSubscribers:
    """The admin API for subscribers (``client.subscribers``); needs scope ``admin``."""

    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def list(self, topic: Optional[str] = None) -> List[Subscriber]:
        """All subscribers, or those whose pattern is exactly ``topic``."""
        return await self._client._send(_api.list_subscribers(topic))

    async def create(
        self,
        topic: str,
        target_url: str,
        filter_expression: Optional[str] = None,
        description: Optional[str] = None,
        enabled: bool = True,
        secret: Optional[str] = None,
    ) -> Subscriber:
        """Create a subscriber; the answer includes its ``secret`` (generated when not given)."""
        return await self._client._send(
            _api.create_subscriber(
                topic, target_url, filter_expression, description, enabled, secret
            )
        )

    async def get(self, subscriber_id: Id) -> Subscriber:
        """One subscriber; :class:`~switch_sdk.NotFoundError` when there is none."""
        return await self._client._send(_api.get_subscriber(subscriber_id))

    async def update(self, subscriber_id: Id, **changes: Any) -> Subscriber:
        """Change some fields (``topic``, ``target_url``, ``filter_expression``,
        ``description``, ``enabled``, ``secret``) with ``PATCH``. Passing
        ``filter_expression=None`` clears the filter."""
        return await self._client._send(_api.update_subscriber(subscriber_id, changes))

    async def delete(self, subscriber_id: Id) -> None:
        """Delete a subscriber."""
        await self._client._send(_api.delete_subscriber(subscriber_id))

    async def rotate_secret(self, subscriber_id: Id) -> Subscriber:
        """Give the subscriber a new signing secret; returns it with the new secret."""
        return await self._client._send(_api.rotate_secret(subscriber_id))


class AsyncKeys:
    """The admin API for API keys (``client.keys``); needs scope ``admin``.

    An API key is the credential to hand to a publisher: scoped like a token,
    limited to topic patterns, revocable one by one, optionally expiring. The
    publisher uses it as ``AsyncClient(url, api_key=...)``.
    """

    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def create(
        self,
        name: str,
        scope: Scope = "publish",
        topics: Optional[Sequence[str]] = None,
        expires_at: Optional[Time] = None,
    ) -> ApiKey:
        """Create a key (``POST /keys``). ``name`` becomes the ``author`` of its
        messages; ``scope`` is ``"publish"``, ``"admin"`` or ``"publish admin"``;
        ``topics`` the patterns it may publish to (any topic when ``None``);
        ``expires_at`` an RFC 3339 string or a datetime (naive ones are UTC).

        The answer's ``key`` (``sk_…``) is shown this once: the hub keeps only a hash.
        """
        return await self._client._send(_api.create_key(name, scope, topics, expires_at))

    async def list(self) -> List[ApiKey]:
        """Every key (``GET /keys``), without the keys themselves (``key`` is ``None``)."""
        return await self._client._send(_api.list_keys())

    async def revoke(self, key_id: Union[Id, ApiKey]) -> None:
        """Revoke a key (``DELETE /keys/{id}``; an :class:`~switch_sdk.ApiKey` is taken
        too). Every server of the hub refuses it within a second;
        :class:`~switch_sdk.NotFoundError` when there is no such key."""
        await self._client._send(_api.revoke_key(key_id))


class AsyncMessageIterator(AsyncIterator[Message]):
    """Every logged message after ``since``, oldest first, fetched page by page
    (returned by :meth:`AsyncMessages.list`; ``async for message in ...``).

    Iteration ends at the first empty page: the log is caught up for now.
    ``next_since`` is the cursor to resume from later, e.g.
    ``client.messages.list(since=iterator.next_since)`` yields only messages logged
    since. It moves past a page once every message of the page has been yielded, so
    stopping in the middle of a page and resuming repeats the rest of that page
    rather than skipping it.
    """

    def __init__(
        self, fetch: Callable[[Optional[str]], Awaitable[MessagePage]], since: Optional[Id]
    ) -> None:
        self._fetch = fetch
        self._cursor = _api.MessageCursor(since)
        self._buffer: Deque[Message] = deque()

    @property
    def next_since(self) -> Optional[str]:
        """Where a later poll should start (``None`` while the log has nothing to show
        and no ``since`` was given)."""
        return self._cursor.since

    def __aiter__(self) -> "AsyncMessageIterator":
        return self

    async def __anext__(self) -> Message:
        while not self._buffer:
            if self._cursor.done:
                raise StopAsyncIteration
            self._buffer.extend(self._cursor.take(await self._fetch(self._cursor.since)))
        item = self._buffer.popleft()
        if not self._buffer:
            self._cursor.handed_out_page()
        return item


class AsyncMessageStream(AsyncIterator[Message]):
    """Messages as they are published (``GET /stream``), returned by
    :meth:`AsyncClient.stream`: ``async for message in stream`` waits for the next one.

    The same as :class:`~switch_sdk.MessageStream`, awaited: the connection opens
    on ``await stream.connect()``, on entering an ``async with`` block, or at the
    first ``__anext__``; it reconnects by itself with ``Last-Event-ID`` when the
    connection drops, so no message is lost or repeated; ``await stream.aclose()``
    (or leaving the ``async with`` block) closes it.
    """

    def __init__(self, client: "AsyncClient", state: _stream.StreamState) -> None:
        self._connection = _AsyncStreamConnection(client, state)
        self._messages: Optional[AsyncGenerator[Message, None]] = None

    @property
    def last_id(self) -> Optional[str]:
        """The id of the last message handed out (``since`` before the first): pass
        it as ``since`` to a later stream to carry on where this one stopped."""
        return self._connection.state.last_id

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called or the stream ended with an error."""
        return self._connection.closed

    async def connect(self) -> "AsyncMessageStream":
        """Open the connection now (if not open yet), raising its errors here.
        Returns the stream."""
        if self._messages is None:
            await self._connection.connect()
        elif self.closed:
            raise ValueError("the stream is closed")
        return self

    def __aiter__(self) -> "AsyncMessageStream":
        return self

    async def __anext__(self) -> Message:
        if self._messages is None:
            if self.closed:
                raise StopAsyncIteration
            self._messages = self._connection.messages()
        return await self._messages.__anext__()

    async def aclose(self) -> None:
        """Close the connection; iterating then stops. Safe to call more than once,
        and from another task."""
        await self._connection.aclose(self._messages)

    async def __aenter__(self) -> "AsyncMessageStream":
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()


class _AsyncStreamConnection:
    """What an :class:`AsyncMessageStream` reads with. It holds no reference to the
    stream, so dropping the stream drops its generator, which closes the response."""

    def __init__(self, client: "AsyncClient", state: _stream.StreamState) -> None:
        self.client = client
        self.state = state
        self.response: Optional[httpx.Response] = None
        self.closed = False
        self._stop: Optional[asyncio.Event] = None

    async def connect(self) -> None:
        if self.closed:
            raise ValueError("the stream is closed")
        if self.response is None:
            try:
                self.response = await self._open()
            except BaseException:
                self.closed = True
                raise

    async def aclose(self, messages: Optional[AsyncGenerator[Message, None]]) -> None:
        self.closed = True
        if self._stop is not None:
            self._stop.set()
        _stream.shutdown_socket(self.response)
        if messages is not None:
            try:
                await messages.aclose()
            except RuntimeError:
                return  # being read by another task: that read fails and cleans up
        await self.drop_response()

    async def messages(self) -> AsyncGenerator[Message, None]:
        reconnect = False
        try:
            while not self.closed:
                if self.response is None:
                    self.response = await (self._reopen() if reconnect else self._open())
                    if self.response is None or self.closed:
                        return
                reconnect = True
                decoder = _stream.SSEDecoder()
                try:
                    async for chunk in self.response.aiter_bytes():
                        events = decoder.feed(chunk)
                        self.state.reconnection_time(decoder.retry)
                        for event in events:
                            message = self.state.take(event)
                            if message is not None:
                                yield message
                except _stream.Resume:
                    pass
                except (httpx.TransportError, httpx.StreamError):
                    if self.closed:
                        return
                finally:
                    await self.drop_response()
        finally:
            self.closed = True
            await self.drop_response()

    async def _open(self) -> httpx.Response:
        call = self.state.call()
        http = self.client._http
        try:
            request = http.build_request(
                **self.client._request_kwargs(call), timeout=self.client._stream_timeout
            )
            response = await http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self.client._network_error(call, exc) from exc
        try:
            if not response.is_success:
                await response.aread()
                raise error_from_response(response.status_code, response.headers, response.content)
            _stream.check_stream(response)
        except httpx.TransportError as exc:
            await response.aclose()
            raise self.client._network_error(call, exc) from exc
        except BaseException:
            await response.aclose()
            raise
        return response

    async def _reopen(self) -> Optional[httpx.Response]:
        """The connection again, after a wait; ``None`` if closed meanwhile."""
        at_least = 0.0
        while not self.closed:
            if await self._wait(max(at_least, self.state.next_delay())):
                return None
            try:
                return await self._open()
            except SwitchError as exc:
                retry = self.state.retryable(exc)
                if retry is None:
                    raise
                at_least = retry
        return None

    async def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; True when the stream was closed meanwhile."""
        if self._stop is None:
            self._stop = asyncio.Event()
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        return self.closed

    async def drop_response(self) -> None:
        response, self.response = self.response, None
        if response is not None:
            await response.aclose()


class AsyncMessages:
    """The message log (``client.messages``); needs scope ``admin``.

    Messages appear in the log within about 2 seconds of being published.
    """

    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def page(
        self,
        topic: Optional[str] = None,
        author: Optional[str] = None,
        after: Optional[Time] = None,
        before: Optional[Time] = None,
        since: Optional[Id] = None,
        limit: Optional[int] = 100,
    ) -> MessagePage:
        """One page of logged messages, oldest first: those after the cursor ``since``
        (all when ``None``), at most ``limit`` (1 to 1000). ``topic`` is a pattern
        (``orders.*``, ``#``); ``after`` and ``before`` are exclusive bounds on
        ``created_at`` (RFC 3339 strings or datetimes). Pass the page's ``next_since``
        as ``since`` to get only newer messages; an empty page means caught up."""
        return await self._client._send(
            _api.list_messages(topic, author, after, before, since, limit)
        )

    def list(
        self,
        topic: Optional[str] = None,
        author: Optional[str] = None,
        after: Optional[Time] = None,
        before: Optional[Time] = None,
        since: Optional[Id] = None,
        limit: int = 100,
    ) -> AsyncMessageIterator:
        """Every logged message after ``since``, oldest first, following the cursor
        page by page (``limit`` per request) until a page comes back empty; an async
        iterator (not awaited) whose ``next_since`` is the cursor to poll from later.
        Filters as in :meth:`page`."""
        _api.list_messages(topic, author, after, before, since, limit)  # check arguments now
        return AsyncMessageIterator(
            lambda cursor: self.page(topic, author, after, before, cursor, limit), since
        )

    async def get(self, message_id: str) -> Message:
        """One message with the delivery state of each subscriber it matched
        (``deliveries``); :class:`~switch_sdk.NotFoundError` when there is none."""
        return await self._client._send(_api.get_message(message_id))

    async def replay(
        self,
        topic: Optional[str] = None,
        after: Optional[Time] = None,
        before: Optional[Time] = None,
        subscriber_id: Optional[Id] = None,
        dry_run: bool = False,
    ) -> ReplayResult:
        """Match every logged message in the range (``topic`` pattern, exclusive
        ``after`` / ``before`` bounds) again against today's enabled subscribers, or
        only ``subscriber_id`` (a backfill), and enqueue new jobs with the original
        message ids. With ``dry_run=True`` nothing is enqueued; the counts are the
        same."""
        return await self._client._send(
            _api.replay_messages(topic, after, before, subscriber_id, dry_run)
        )


class AsyncClient(BaseClient):
    """The asynchronous client of the Switch hub: the same methods as
    :class:`~switch_sdk.Client`, awaited.

    Args:
        base_url: the hub, e.g. ``"http://127.0.0.1:8080"``.
        api_key: an API key the hub issued (``sk_…``, see :attr:`keys`), sent as is
            as the bearer credential; its scope, topics and author (its name) were
            fixed when it was created.
        jwt_secret: the hub's ``SWITCH_JWT_SECRET``; the client then signs its own
            HS256 tokens (valid 60 s, renewed as they near expiry).
        token: a ready-made token, used as is (instead of ``jwt_secret``).
        author: the ``author`` claim of signed tokens.
        timeout: seconds for each request (``None`` for no limit).
        scope: the ``scope`` claim of signed tokens, e.g. ``"publish admin"``.
        transport: an ``httpx`` transport, e.g. for tests.
        headers: extra headers sent with every request.

    Give at most one credential, ``api_key``, ``jwt_secret`` or ``token`` (none: the
    client is anonymous); two raise :class:`ValueError`, as do ``author`` or ``scope``
    without ``jwt_secret``.

    Use it as an async context manager, or await :meth:`aclose` when done.
    """

    def __init__(
        self,
        base_url: str,
        *,
        jwt_secret: Optional[str] = None,
        token: Optional[str] = None,
        author: Optional[str] = None,
        timeout: TimeoutArg = 10.0,
        scope: Optional[Scope] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
        headers: Optional[Mapping[str, str]] = None,
        api_key: Optional[str] = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            jwt_secret=jwt_secret,
            token=token,
            author=author,
            timeout=timeout,
            scope=scope,
            headers=headers,
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self._timeout,
            transport=transport,
            headers=self._default_headers,
        )
        self.subscribers = AsyncSubscribers(self)
        self.keys = AsyncKeys(self)
        self.messages = AsyncMessages(self)

    # -- plumbing --

    async def _send(self, call: "_api.Call[T]") -> T:
        try:
            response = await self._http.request(**self._request_kwargs(call))
        except httpx.TransportError as exc:
            raise self._network_error(call, exc) from exc
        return _api.read_response(call, response)

    async def aclose(self) -> None:
        """Close the underlying connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()

    # -- publishing --

    @overload
    async def publish(
        self,
        topic: str,
        body: Any = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        query_params: Optional[Mapping[str, Any]] = None,
        path_params: Optional[Mapping[str, Any]] = None,
        http_method: str = "POST",
        idempotency_key: Optional[str] = None,
        ordering_key: Optional[str] = None,
        dry_run: Literal[False] = False,
    ) -> PublishResult: ...

    @overload
    async def publish(
        self,
        topic: str,
        body: Any = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        query_params: Optional[Mapping[str, Any]] = None,
        path_params: Optional[Mapping[str, Any]] = None,
        http_method: str = "POST",
        idempotency_key: Optional[str] = None,
        ordering_key: Optional[str] = None,
        dry_run: Literal[True],
    ) -> Explanation: ...

    async def publish(
        self,
        topic: str,
        body: Any = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        query_params: Optional[Mapping[str, Any]] = None,
        path_params: Optional[Mapping[str, Any]] = None,
        http_method: str = "POST",
        idempotency_key: Optional[str] = None,
        ordering_key: Optional[str] = None,
        dry_run: bool = False,
    ) -> Union[PublishResult, Explanation]:
        """Publish a message to ``topic``.

        ``body`` is any JSON value (the hub uses ``{}`` when omitted); ``headers``,
        ``query_params`` and ``path_params`` shape the request each subscriber gets;
        ``http_method`` is GET, POST, PUT, PATCH or DELETE. With ``idempotency_key``,
        publishing again with the same key (and author) within 24 h returns the first
        message's id with ``duplicate=True`` and creates nothing.

        With ``ordering_key`` (1 to 255 bytes in UTF-8, no control characters), each
        subscriber gets the messages of that key one at a time, in publish order; a key
        the hub would refuse raises :class:`ValueError` before anything is sent.

        The result's ``spooled`` is True when Redis was unreachable and the hub kept the
        message in its database, to be queued once Redis is back: it is accepted all the
        same.

        With ``dry_run=True`` nothing is published: the answer is the
        :class:`~switch_sdk.Explanation` of :meth:`explain`.
        """
        if dry_run:
            return await self.explain(
                topic,
                body,
                headers=headers,
                query_params=query_params,
                path_params=path_params,
                http_method=http_method,
                ordering_key=ordering_key,
            )
        return await self._send(
            _api.publish(
                topic,
                body,
                headers=headers,
                query_params=query_params,
                path_params=path_params,
                http_method=http_method,
                idempotency_key=idempotency_key,
                ordering_key=ordering_key,
            )
        )

    async def explain(
        self,
        topic: str,
        body: Any = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        query_params: Optional[Mapping[str, Any]] = None,
        path_params: Optional[Mapping[str, Any]] = None,
        http_method: str = "POST",
        ordering_key: Optional[str] = None,
    ) -> Explanation:
        """Which subscribers this message would reach, and why each whose pattern
        matches the topic would or would not (``POST /publish?dry_run=true``).
        Nothing is enqueued or logged; needs scope ``publish``."""
        return await self._send(
            _api.explain(
                topic,
                body,
                headers=headers,
                query_params=query_params,
                path_params=path_params,
                http_method=http_method,
                ordering_key=ordering_key,
            )
        )

    async def publish_batch(self, messages: Sequence[Mapping[str, Any]]) -> List[PublishResult]:
        """Publish 1 to 1000 messages at once: all are enqueued or none.

        Each message is a native publish body: a mapping with ``topic`` and
        optionally ``body``, ``headers``, ``query_params``, ``path_params``,
        ``http_method``, ``ordering_key`` (checked like :meth:`publish`'s, before
        anything is sent). Returns one :class:`~switch_sdk.PublishResult` per message, in
        order; when Redis was unreachable the hub spools the whole batch and every
        result has ``spooled=True``. When the hub refuses a message, the error's
        ``index`` names the first bad one (from 0) and nothing is published.
        """
        return await self._send(_api.publish_batch(messages))

    async def refresh(self) -> None:
        """Make the hub reload its subscriber cache now."""
        await self._send(_api.refresh())

    # -- live stream --

    def stream(
        self,
        topic: str = "#",
        filter: Optional[str] = None,
        since: Optional[str] = None,
    ) -> AsyncMessageStream:
        """Messages as they are published (``GET /stream``): an
        :class:`AsyncMessageStream` (not awaited) to read with ``async for``.
        Arguments as in :meth:`Client.stream <switch_sdk.Client.stream>`::

            async with client.stream("orders.#", filter="body.total > 100") as stream:
                async for message in stream:
                    print(message.topic, message.body)
        """
        return AsyncMessageStream(self, _stream.StreamState(topic, filter, since))

    # -- operations --

    async def ping(self) -> bool:
        """True when the hub answers ``pong``; raises :class:`~switch_sdk.NetworkError`
        when it cannot be reached."""
        return await self._send(_api.ping())

    async def health(self) -> Dict[str, Any]:
        """The hub's health report, e.g. ``{"status": "ok", "database": "ok", "redis": "ok"}``.
        A report of a degraded hub (HTTP 503) is returned too; check ``["status"]``."""
        return await self._send(_api.health())

    # -- admin: filters, deliveries, dead letters --

    async def test_filter(self, filter_expression: str, message: Mapping[str, Any]) -> bool:
        """Whether ``filter_expression`` matches ``message`` (a native publish body,
        e.g. ``{"topic": "orders.created", "body": {"total": 150}}``). A filter that
        does not compile raises :class:`~switch_sdk.InvalidRequestError`."""
        return await self._send(_api.test_filter(filter_expression, message))

    async def list_deliveries(
        self,
        subscriber_id: Optional[Id] = None,
        message_id: Optional[str] = None,
        outcome: Optional[str] = None,
        since: Optional[Id] = None,
        limit: Optional[int] = None,
    ) -> DeliveryPage:
        """One page of delivery attempts, ascending by id, newer than ``since``."""
        return await self._send(
            _api.list_deliveries(subscriber_id, message_id, outcome, since, limit)
        )

    async def iter_deliveries(
        self,
        subscriber_id: Optional[Id] = None,
        message_id: Optional[str] = None,
        outcome: Optional[str] = None,
        since: Optional[Id] = None,
        page_size: int = 100,
    ) -> AsyncIterator[Delivery]:
        """Every delivery attempt newer than ``since``, fetching ``page_size`` at a time
        (``async for delivery in client.iter_deliveries(): ...``)."""
        cursor = since
        while True:
            page = await self.list_deliveries(
                subscriber_id, message_id, outcome, cursor, page_size
            )
            for item in page.items:
                yield item
            cursor = _api.next_cursor(page, cursor)
            if cursor is None:
                return

    async def list_dead_letters(self, subscriber_id: Optional[Id] = None) -> List[DeadLetter]:
        """Dead letters, all or of one subscriber."""
        return await self._send(_api.list_dead_letters(subscriber_id))

    async def replay_dead_letter(self, dead_letter_id: Id) -> Any:
        """Re-enqueue one dead letter; returns the hub's answer (decoded JSON, or None)."""
        return await self._send(_api.replay_dead_letter(dead_letter_id))

    async def replay_dead_letters(self, subscriber_id: Optional[Id] = None) -> Any:
        """Re-enqueue every dead letter of a subscriber, or of every enabled
        subscriber when none is given; returns the hub's answer."""
        return await self._send(_api.replay_dead_letters(subscriber_id))
