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
    """

    message_id: str
    matched: int = 0
    duplicate: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PublishResult":
        return cls(
            message_id=str(data["message_id"]),
            matched=_opt_int(data.get("matched")) or 0,
            duplicate=bool(data.get("duplicate", False)),
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
