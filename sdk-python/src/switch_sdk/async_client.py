"""The asynchronous client."""

from __future__ import annotations

from types import TracebackType
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Type, TypeVar

import httpx

from . import _api
from ._base import BaseClient, TimeoutArg
from .auth import Scope
from .models import DeadLetter, Delivery, DeliveryPage, Id, PublishResult, Subscriber

__all__ = ["AsyncClient", "AsyncSubscribers"]

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


class AsyncClient(BaseClient):
    """The asynchronous client of the Switch hub: the same methods as
    :class:`~switch_sdk.Client`, awaited.

    Args:
        base_url: the hub, e.g. ``"http://127.0.0.1:8080"``.
        jwt_secret: the hub's ``SWITCH_JWT_SECRET``; the client then signs its own
            HS256 tokens (valid 60 s, renewed as they near expiry).
        token: a ready-made token, used as is (instead of ``jwt_secret``).
        author: the ``author`` claim of signed tokens.
        timeout: seconds for each request (``None`` for no limit).
        scope: the ``scope`` claim of signed tokens, e.g. ``"publish admin"``.
        transport: an ``httpx`` transport, e.g. for tests.
        headers: extra headers sent with every request.

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
    ) -> None:
        super().__init__(
            base_url,
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
    ) -> PublishResult:
        """Publish a message to ``topic``.

        ``body`` is any JSON value (the hub uses ``{}`` when omitted); ``headers``,
        ``query_params`` and ``path_params`` shape the request each subscriber gets;
        ``http_method`` is GET, POST, PUT, PATCH or DELETE. With ``idempotency_key``,
        publishing again with the same key (and author) within 24 h returns the first
        message's id with ``duplicate=True`` and creates nothing.
        """
        return await self._send(
            _api.publish(
                topic,
                body,
                headers=headers,
                query_params=query_params,
                path_params=path_params,
                http_method=http_method,
                idempotency_key=idempotency_key,
            )
        )

    async def refresh(self) -> None:
        """Make the hub reload its subscriber cache now."""
        await self._send(_api.refresh())

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
