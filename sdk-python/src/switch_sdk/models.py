"""Data returned by the hub."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

__all__ = [
    "Id",
    "PublishResult",
    "Subscriber",
    "Delivery",
    "DeliveryPage",
    "DeadLetter",
    "Message",
    "MessageDelivery",
    "MessagePage",
    "ReplayResult",
    "Explanation",
    "ExplainedSubscriber",
    "ApiKey",
]

#: Identifiers are whatever the hub uses (integers or strings); they are passed back unchanged.
Id = Union[int, str]


def _opt_str(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def _opt_int(value: Any) -> Optional[int]:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class PublishResult:
    """The hub's answer to a publish.

    Attributes:
        message_id: the id of the message (also the ``webhook-id`` of its deliveries).
        matched: how many subscribers got a delivery job. A duplicate publish creates
            nothing; if the hub omits the count then, it is 0.
        duplicate: True when an earlier publish with the same ``Idempotency-Key``
            was found and nothing new was created.
        spooled: True when Redis was unreachable and the hub kept the message in its
            database instead; it is still accepted and moves into the queue, in
            order, once Redis is back. Not an error.
    """

    message_id: str
    matched: int = 0
    duplicate: bool = False
    spooled: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PublishResult":
        return cls(
            message_id=str(data["message_id"]),
            matched=_opt_int(data.get("matched")) or 0,
            duplicate=bool(data.get("duplicate", False)),
            spooled=data.get("spooled") is True,
        )


@dataclass(frozen=True)
class Subscriber:
    """A subscriber: where messages of matching topics are delivered."""

    id: Id
    topic: str
    target_url: str
    filter_expression: Optional[str] = None
    secret: Optional[str] = None
    enabled: bool = True
    description: Optional[str] = None
    created_at: Optional[str] = None
    updated_at: Optional[str] = None
    #: Set when a row inserted by SQL holds a filter that does not compile.
    filter_error: Optional[str] = None
    #: The whole object as the hub sent it (including fields this SDK does not know).
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Subscriber":
        return cls(
            id=data["id"],
            topic=str(data.get("topic", "")),
            target_url=str(data.get("target_url", "")),
            filter_expression=_opt_str(data.get("filter_expression")),
            secret=_opt_str(data.get("secret")),
            enabled=bool(data.get("enabled", True)),
            description=_opt_str(data.get("description")),
            created_at=_opt_str(data.get("created_at")),
            updated_at=_opt_str(data.get("updated_at")),
            filter_error=_opt_str(data.get("filter_error")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt (a row of ``delivery_attempts``)."""

    id: Id
    message_id: str
    subscriber_id: Id
    attempt: int
    #: ``"delivered"``, ``"failed"`` or ``"dead"``.
    outcome: str
    http_status: Optional[int] = None
    #: ``"timeout"``, ``"connect"``, ``"dns"``, ``"http_status"``, … (None when delivered).
    error_kind: Optional[str] = None
    duration_ms: Optional[int] = None
    created_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Delivery":
        return cls(
            id=data["id"],
            message_id=str(data.get("message_id", "")),
            subscriber_id=data.get("subscriber_id", ""),
            attempt=_opt_int(data.get("attempt")) or 0,
            outcome=str(data.get("outcome", "")),
            http_status=_opt_int(data.get("http_status")),
            error_kind=_opt_str(data.get("error_kind")),
            duration_ms=_opt_int(data.get("duration_ms")),
            created_at=_opt_str(data.get("created_at")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class DeliveryPage:
    """One page of ``GET /deliveries``; pass ``next_since`` as ``since`` for the next."""

    items: List[Delivery]
    next_since: Optional[Id] = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DeliveryPage":
        return cls(
            items=[Delivery.from_dict(item) for item in data.get("items") or []],
            next_since=data.get("next_since"),
        )


@dataclass(frozen=True)
class DeadLetter:
    """A job that exhausted its attempts (or met ``410 Gone``), kept for replay."""

    id: Id
    message_id: str
    subscriber_id: Id
    last_error: Optional[str] = None
    created_at: Optional[str] = None
    replayed_at: Optional[str] = None
    #: The stored request (method, URL, headers, body) as the hub shows it.
    request: Any = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DeadLetter":
        return cls(
            id=data["id"],
            message_id=str(data.get("message_id", "")),
            subscriber_id=data.get("subscriber_id", ""),
            last_error=_opt_str(data.get("last_error")),
            created_at=_opt_str(data.get("created_at")),
            replayed_at=_opt_str(data.get("replayed_at")),
            request=data.get("request"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class MessageDelivery:
    """Where one message stands with one subscriber it matched (``GET /messages/{id}``)."""

    subscriber_id: Id
    #: ``"pending"``, ``"delivered"``, ``"failed"`` (retrying) or ``"dead"``.
    state: str
    #: Attempts made so far.
    attempts: int = 0
    last_http_status: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MessageDelivery":
        return cls(
            subscriber_id=data["subscriber_id"],
            state=str(data.get("state", "")),
            attempts=_opt_int(data.get("attempts")) or 0,
            last_http_status=_opt_int(data.get("last_http_status")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Message:
    """A message of the hub's log, as it was published.

    ``body`` is the JSON value published; ``headers``, ``query_params`` and
    ``path_params`` are the maps sent with it. ``created_at`` is the hub's RFC 3339
    string (milliseconds). ``deliveries`` is set only by ``messages.get()``: the state
    of the message with each subscriber it matched.
    """

    id: str
    topic: str
    author: Optional[str] = None
    body: Any = None
    headers: Dict[str, Any] = field(default_factory=dict)
    query_params: Dict[str, Any] = field(default_factory=dict)
    path_params: Dict[str, Any] = field(default_factory=dict)
    http_method: str = "POST"
    ordering_key: Optional[str] = None
    #: How many delivery jobs the publish created.
    matched: int = 0
    created_at: Optional[str] = None
    deliveries: Optional[List[MessageDelivery]] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Message":
        deliveries = data.get("deliveries")
        return cls(
            id=str(data["id"]),
            topic=str(data.get("topic", "")),
            author=_opt_str(data.get("author")),
            body=data.get("body"),
            headers=dict(data.get("headers") or {}),
            query_params=dict(data.get("query_params") or {}),
            path_params=dict(data.get("path_params") or {}),
            http_method=str(data.get("http_method") or "POST"),
            ordering_key=_opt_str(data.get("ordering_key")),
            matched=_opt_int(data.get("matched")) or 0,
            created_at=_opt_str(data.get("created_at")),
            deliveries=(
                None
                if deliveries is None
                else [MessageDelivery.from_dict(item) for item in deliveries]
            ),
            raw=dict(data),
        )


@dataclass(frozen=True)
class MessagePage:
    """One page of ``GET /messages``. Pass ``next_since`` as ``since`` to get only
    messages logged after this page (``None`` when the log was empty and no cursor
    was given)."""

    items: List[Message]
    next_since: Optional[str] = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MessagePage":
        return cls(
            items=[Message.from_dict(item) for item in data.get("items") or []],
            next_since=_opt_str(data.get("next_since")),
        )


@dataclass(frozen=True)
class ReplayResult:
    """The answer of ``POST /messages/replay``.

    Attributes:
        messages: logged messages in the range.
        jobs: delivery jobs enqueued (with ``dry_run``, the jobs that would be).
        dry_run: True when nothing was enqueued.
    """

    messages: int
    jobs: int
    dry_run: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ReplayResult":
        messages = _opt_int(data["messages"])
        jobs = _opt_int(data["jobs"])
        if messages is None or jobs is None:
            raise TypeError("'messages' and 'jobs' must be integers")
        return cls(messages=messages, jobs=jobs, dry_run=bool(data.get("dry_run", False)))


@dataclass(frozen=True)
class ExplainedSubscriber:
    """Why one subscriber whose pattern matches the topic would or would not get the message.

    Attributes:
        id: the subscriber.
        matched: whether it would get a delivery job.
        reason: ``"matched"``, ``"filter_false"``, ``"filter_error"`` or ``"disabled"``.
        missing: variables its filter reads that the message lacks (``["body.total"]``).
    """

    id: Id
    matched: bool
    reason: str
    missing: List[str] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExplainedSubscriber":
        return cls(
            id=data["id"],
            matched=bool(data.get("matched", False)),
            reason=str(data.get("reason", "")),
            missing=[str(v) for v in data.get("missing") or []],
            raw=dict(data),
        )


@dataclass(frozen=True)
class Explanation:
    """The answer of a dry-run publish: nothing was enqueued or logged.

    Attributes:
        matched: the ids of the subscribers that would get a delivery job.
        subscribers: every subscriber whose pattern matches the topic, with its reason.
    """

    matched: List[Id]
    subscribers: List[ExplainedSubscriber]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Explanation":
        matched = data["matched"]
        if not isinstance(matched, list):
            raise TypeError("'matched' must be a list of subscriber ids")
        return cls(
            matched=list(matched),
            subscribers=[ExplainedSubscriber.from_dict(s) for s in data.get("subscribers") or []],
        )

    def subscriber(self, subscriber_id: Id) -> Optional[ExplainedSubscriber]:
        """The entry of one subscriber (ids compared as text), or ``None``."""
        return next((s for s in self.subscribers if str(s.id) == str(subscriber_id)), None)


@dataclass(frozen=True)
class ApiKey:
    """An API key of the hub (``client.keys``).

    Attributes:
        id: the key's id, for :meth:`~switch_sdk.client.Keys.revoke`.
        name: who publishes with it: the ``author`` of its messages.
        scope: ``"publish"``, ``"admin"`` or ``"publish admin"``.
        topics: the topic patterns it may publish to; ``None`` for any topic.
        expires_at: when it stops working (RFC 3339), or ``None``.
        created_at: when it was created (RFC 3339).
        key: the ``sk_…`` secret itself, set only on the answer of
            ``keys.create``: the hub shows it once and stores only a hash. It is
            left out of ``repr()`` so that logging the object does not leak it.
    """

    id: Id
    name: str
    scope: str
    topics: Optional[List[str]] = None
    expires_at: Optional[str] = None
    created_at: Optional[str] = None
    key: Optional[str] = field(default=None, repr=False)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ApiKey":
        topics = data.get("topics")
        return cls(
            id=data["id"],
            name=str(data.get("name", "")),
            scope=str(data.get("scope", "")),
            topics=None if topics is None else [str(t) for t in topics],
            expires_at=_opt_str(data.get("expires_at")),
            created_at=_opt_str(data.get("created_at")),
            key=_opt_str(data.get("key")),
            raw=dict(data),
        )
