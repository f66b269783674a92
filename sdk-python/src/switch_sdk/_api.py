"""The hub's endpoints as plain request descriptions, shared by the sync and async clients.

Each function returns a :class:`Call`: what to send and how to read a successful answer.
The clients only differ in how they send it.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)
from urllib.parse import quote

import httpx

from .auth import Scope, _scope_claim
from .errors import SwitchError, error_from_response
from .models import (
    ApiKey,
    DeadLetter,
    DeliveryPage,
    Explanation,
    Id,
    Message,
    MessagePage,
    PublishResult,
    ReplayResult,
    Subscriber,
)

T = TypeVar("T")

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SUBSCRIBER_FIELDS = (
    "topic",
    "target_url",
    "filter_expression",
    "description",
    "enabled",
    "secret",
)


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json_body: Any = None
    has_body: bool = False
    params: Dict[str, str] = field(default_factory=dict)
    headers: Dict[str, str] = field(default_factory=dict)
    auth: bool = True
    #: Statuses handed to ``parse`` instead of being raised (besides 2xx).
    accept: Tuple[int, ...] = ()

    def encode_body(self) -> Optional[bytes]:
        if not self.has_body:
            return None
        return json.dumps(self.json_body, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8"
        )


def read_response(call: "Call[T]", response: httpx.Response) -> T:
    """The result of ``call`` from the hub's answer, or the error it stands for."""
    if not (response.is_success or response.status_code in call.accept):
        raise error_from_response(response.status_code, response.headers, response.content)
    try:
        return call.parse(response)
    except (KeyError, TypeError, AttributeError) as exc:
        raise SwitchError(
            f"unexpected answer from {call.method} {call.path}: missing or mistyped {exc}",
            status=response.status_code,
            body=_maybe_json(response),
        ) from exc


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise SwitchError(
            f"the hub answered HTTP {response.status_code} with a body that is not JSON",
            status=response.status_code,
            body=response.text[:500],
        ) from exc


def _json_object(response: httpx.Response) -> Dict[str, Any]:
    data = _json(response)
    if not isinstance(data, dict):
        raise SwitchError(
            f"the hub answered HTTP {response.status_code} with unexpected JSON",
            status=response.status_code,
            body=data,
        )
    return data


def _items(response: httpx.Response) -> List[Dict[str, Any]]:
    data = _json(response)
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise SwitchError(
            "the hub answered a list request without an 'items' list",
            status=response.status_code,
            body=data,
        )
    return items


def _maybe_json(response: httpx.Response) -> Any:
    if not response.content.strip():
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _params(**values: Any) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


def _id(value: Id) -> str:
    text = str(value)
    if not text:
        raise ValueError("an id must not be empty")
    return quote(text, safe="")


#: A point in time for the message log's ``after`` / ``before`` bounds: an RFC 3339
#: string, sent as is, or a ``datetime`` (a naive one is taken as UTC).
Time = Union[str, datetime]


def _time(name: str, value: Optional[Time]) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat()
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise TypeError(f"{name} must be an RFC 3339 string or a datetime, not {value!r}")


# --- publishing -----------------------------------------------------------------------------

#: Most bytes (UTF-8) of an ordering key.
MAX_ORDERING_KEY = 255


def check_ordering_key(value: Any, name: str = "ordering_key") -> str:
    """``value`` if the hub would take it as an ordering key: text of 1 to 255 bytes in
    UTF-8 without control characters; otherwise :class:`ValueError`."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{name} must be valid Unicode text (it holds a lone surrogate)") from None
    if not 1 <= size <= MAX_ORDERING_KEY:
        raise ValueError(f"{name} must be 1 to {MAX_ORDERING_KEY} bytes in UTF-8, not {size}")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError(f"{name} must not contain control characters")
    return value


def _publish_body(
    topic: str,
    body: Any,
    headers: Optional[Mapping[str, str]],
    query_params: Optional[Mapping[str, Any]],
    path_params: Optional[Mapping[str, Any]],
    http_method: str,
    ordering_key: Optional[str] = None,
) -> Dict[str, Any]:
    if not isinstance(topic, str) or not topic:
        raise ValueError("topic must be a non-empty string")
    method = str(http_method).upper()
    if method not in HTTP_METHODS:
        raise ValueError(f"http_method must be one of {', '.join(HTTP_METHODS)}")
    payload: Dict[str, Any] = {"topic": topic}
    if body is not None:
        payload["body"] = body
    if headers is not None:
        payload["headers"] = dict(headers)
    if query_params is not None:
        payload["query_params"] = dict(query_params)
    if path_params is not None:
        payload["path_params"] = dict(path_params)
    payload["http_method"] = method
    if ordering_key is not None:
        payload["ordering_key"] = check_ordering_key(ordering_key)
    return payload


def publish(
    topic: str,
    body: Any = None,
    *,
    headers: Optional[Mapping[str, str]] = None,
    query_params: Optional[Mapping[str, Any]] = None,
    path_params: Optional[Mapping[str, Any]] = None,
    http_method: str = "POST",
    idempotency_key: Optional[str] = None,
    ordering_key: Optional[str] = None,
) -> Call[PublishResult]:
    payload = _publish_body(
        topic, body, headers, query_params, path_params, http_method, ordering_key
    )
    extra: Dict[str, str] = {}
    if idempotency_key is not None:
        if not idempotency_key:
            raise ValueError("idempotency_key must not be empty")
        extra["Idempotency-Key"] = idempotency_key
    return Call(
        "POST",
        "/publish",
        lambda r: PublishResult.from_dict(_json_object(r)),
        json_body=payload,
        has_body=True,
        headers=extra,
    )


def explain(
    topic: str,
    body: Any = None,
    *,
    headers: Optional[Mapping[str, str]] = None,
    query_params: Optional[Mapping[str, Any]] = None,
    path_params: Optional[Mapping[str, Any]] = None,
    http_method: str = "POST",
    ordering_key: Optional[str] = None,
) -> Call[Explanation]:
    payload = _publish_body(
        topic, body, headers, query_params, path_params, http_method, ordering_key
    )
    return Call(
        "POST",
        "/publish",
        lambda r: Explanation.from_dict(_json_object(r)),
        json_body=payload,
        has_body=True,
        params={"dry_run": "true"},
    )


def _batch_item(position: int, message: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(message, Mapping):
        raise TypeError(
            f"messages[{position}] must be a mapping such as "
            f"{{'topic': 'orders.created', 'body': {{...}}}}, not {type(message).__name__}"
        )
    item = dict(message)
    if isinstance(item.get("http_method"), str):
        item["http_method"] = item["http_method"].upper()
    if item.get("ordering_key") is not None:
        check_ordering_key(item["ordering_key"], f"messages[{position}].ordering_key")
    return item


def publish_batch(messages: Sequence[Mapping[str, Any]]) -> Call[List[PublishResult]]:
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError("messages must be a list of publish bodies (mappings)")
    items = [_batch_item(i, m) for i, m in enumerate(messages)]

    def parse(response: httpx.Response) -> List[PublishResult]:
        results = [PublishResult.from_dict(item) for item in _items(response)]
        data = _json(response)
        # A batch is spooled as a whole: the flag sits beside the items.
        if isinstance(data, dict) and data.get("spooled") is True:
            results = [replace(r, spooled=True) for r in results]
        if len(results) != len(items):
            raise SwitchError(
                f"the hub answered a batch of {len(items)} with {len(results)} results",
                status=response.status_code,
                body=_maybe_json(response),
            )
        return results

    return Call("POST", "/publish/batch", parse, json_body={"messages": items}, has_body=True)


def refresh() -> Call[None]:
    return Call("POST", "/refresh", lambda r: None)


def ping() -> Call[bool]:
    return Call(
        "GET",
        "/ping",
        lambda r: r.is_success and r.text.strip().strip('"').lower() == "pong",
        auth=False,
        accept=tuple(range(300, 600)),
    )


def _parse_health(response: httpx.Response) -> Dict[str, Any]:
    if response.status_code == 503:
        try:
            data = response.json()
        except ValueError:
            data = None
        # A health report naming what is down is returned as is; anything else is an error.
        if isinstance(data, dict) and "status" in data and "error" not in data:
            return data
        raise error_from_response(response.status_code, response.headers, response.content)
    return _json_object(response)


def health() -> Call[Dict[str, Any]]:
    return Call("GET", "/health", _parse_health, auth=False, accept=(503,))


# --- subscribers ----------------------------------------------------------------------------


def list_subscribers(topic: Optional[str] = None) -> Call[List[Subscriber]]:
    return Call(
        "GET",
        "/subscribers",
        lambda r: [Subscriber.from_dict(item) for item in _items(r)],
        params=_params(topic=topic),
    )


def create_subscriber(
    topic: str,
    target_url: str,
    filter_expression: Optional[str] = None,
    description: Optional[str] = None,
    enabled: bool = True,
    secret: Optional[str] = None,
) -> Call[Subscriber]:
    payload: Dict[str, Any] = {"topic": topic, "target_url": target_url, "enabled": enabled}
    if filter_expression is not None:
        payload["filter_expression"] = filter_expression
    if description is not None:
        payload["description"] = description
    if secret is not None:
        payload["secret"] = secret
    return Call(
        "POST",
        "/subscribers",
        lambda r: Subscriber.from_dict(_json_object(r)),
        json_body=payload,
        has_body=True,
    )


def get_subscriber(subscriber_id: Id) -> Call[Subscriber]:
    return Call(
        "GET",
        f"/subscribers/{_id(subscriber_id)}",
        lambda r: Subscriber.from_dict(_json_object(r)),
    )


def update_subscriber(subscriber_id: Id, changes: Mapping[str, Any]) -> Call[Subscriber]:
    unknown = sorted(set(changes) - set(SUBSCRIBER_FIELDS))
    if unknown:
        raise TypeError(
            f"unknown subscriber field(s): {', '.join(unknown)}; "
            f"expected some of {', '.join(SUBSCRIBER_FIELDS)}"
        )
    if not changes:
        raise ValueError("update() needs at least one field to change")
    return Call(
        "PATCH",
        f"/subscribers/{_id(subscriber_id)}",
        lambda r: Subscriber.from_dict(_json_object(r)),
        json_body=dict(changes),
        has_body=True,
    )


def delete_subscriber(subscriber_id: Id) -> Call[None]:
    return Call("DELETE", f"/subscribers/{_id(subscriber_id)}", lambda r: None)


def rotate_secret(subscriber_id: Id) -> Call[Subscriber]:
    return Call(
        "POST",
        f"/subscribers/{_id(subscriber_id)}/rotate-secret",
        lambda r: Subscriber.from_dict(_json_object(r)),
    )


def test_filter(filter_expression: str, message: Mapping[str, Any]) -> Call[bool]:
    def parse(response: httpx.Response) -> bool:
        data = _json_object(response)
        if "matches" not in data:
            raise SwitchError(
                "the hub answered a filter test without 'matches'",
                status=response.status_code,
                body=data,
            )
        return bool(data["matches"])

    return Call(
        "POST",
        "/filters/test",
        parse,
        json_body={"filter_expression": filter_expression, "message": dict(message)},
        has_body=True,
    )


# --- deliveries and dead letters ------------------------------------------------------------


def list_deliveries(
    subscriber_id: Optional[Id] = None,
    message_id: Optional[str] = None,
    outcome: Optional[str] = None,
    since: Optional[Id] = None,
    limit: Optional[int] = None,
) -> Call[DeliveryPage]:
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    return Call(
        "GET",
        "/deliveries",
        lambda r: DeliveryPage.from_dict(_json_object(r)),
        params=_params(
            subscriber_id=subscriber_id,
            message_id=message_id,
            outcome=outcome,
            since=since,
            limit=limit,
        ),
    )


def next_cursor(page: DeliveryPage, current: Optional[Id]) -> Optional[Id]:
    """The ``since`` of the page after ``page``, or ``None`` to stop paging."""
    if not page.items:
        return None
    cursor = page.next_since if page.next_since is not None else page.items[-1].id
    # A cursor that does not move would page forever.
    if current is not None and str(cursor) == str(current):
        return None
    return cursor


def list_dead_letters(subscriber_id: Optional[Id] = None) -> Call[List[DeadLetter]]:
    return Call(
        "GET",
        "/dead-letters",
        lambda r: [DeadLetter.from_dict(item) for item in _items(r)],
        params=_params(subscriber_id=subscriber_id),
    )


def replay_dead_letter(dead_letter_id: Id) -> Call[Any]:
    return Call("POST", f"/dead-letters/{_id(dead_letter_id)}/replay", _maybe_json)


def replay_dead_letters(subscriber_id: Optional[Id] = None) -> Call[Any]:
    return Call(
        "POST",
        "/dead-letters/replay",
        _maybe_json,
        params=_params(subscriber_id=subscriber_id),
    )



# --- message log ----------------------------------------------------------------------------

MAX_MESSAGE_PAGE = 1000


def list_messages(
    topic: Optional[str] = None,
    author: Optional[str] = None,
    after: Optional[Time] = None,
    before: Optional[Time] = None,
    since: Optional[Id] = None,
    limit: Optional[int] = None,
) -> Call[MessagePage]:
    if limit is not None and not 1 <= limit <= MAX_MESSAGE_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_MESSAGE_PAGE}")
    return Call(
        "GET",
        "/messages",
        lambda r: MessagePage.from_dict(_json_object(r)),
        params=_params(
            topic=topic,
            author=author,
            after=_time("after", after),
            before=_time("before", before),
            since=since,
            limit=limit,
        ),
    )


class MessageCursor:
    """Follows ``next_since`` across pages of ``GET /messages``.

    ``since`` is where the next page starts. It moves to a page's ``next_since`` once
    the page has been handed out in full, so a reader that stops in the middle of a
    page and resumes from ``since`` sees the rest of that page again rather than
    missing it.
    """

    def __init__(self, since: Optional[Id]) -> None:
        self.since: Optional[str] = None if since is None else str(since)
        self.done = False
        self._pending: Optional[str] = None

    def take(self, page: MessagePage) -> List[Message]:
        """The messages of ``page`` to hand out; an empty list means caught up."""
        cursor = page.next_since if page.next_since is not None else self.since
        moved = cursor != self.since
        if not page.items:
            # A topic pattern may scan past messages it does not match: an empty
            # page whose cursor moved is not the end yet.
            self.since = cursor
            if not moved:
                self.done = True
            return []
        if not moved:
            # A cursor that does not move would read the same page forever.
            self.done = True
        self._pending = cursor
        return list(page.items)

    def handed_out_page(self) -> None:
        """Every message of the last page has been handed out."""
        self.since = self._pending


def get_message(message_id: str) -> Call[Message]:
    return Call(
        "GET",
        f"/messages/{_id(message_id)}",
        lambda r: Message.from_dict(_json_object(r)),
    )


def replay_messages(
    topic: Optional[str] = None,
    after: Optional[Time] = None,
    before: Optional[Time] = None,
    subscriber_id: Optional[Id] = None,
    dry_run: bool = False,
) -> Call[ReplayResult]:
    payload: Dict[str, Any] = {"dry_run": bool(dry_run)}
    if topic is not None:
        payload["topic"] = topic
    if after is not None:
        payload["after"] = _time("after", after)
    if before is not None:
        payload["before"] = _time("before", before)
    if subscriber_id is not None:
        # The hub takes the id as a JSON integer.
        if isinstance(subscriber_id, str) and subscriber_id.strip().isdigit():
            subscriber_id = int(subscriber_id)
        payload["subscriber_id"] = subscriber_id
    return Call(
        "POST",
        "/messages/replay",
        lambda r: ReplayResult.from_dict(_json_object(r)),
        json_body=payload,
        has_body=True,
    )


# --- API keys -------------------------------------------------------------------------------


def create_key(
    name: str,
    scope: Scope = "publish",
    topics: Optional[Sequence[str]] = None,
    expires_at: Optional[Time] = None,
) -> Call[ApiKey]:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a non-empty string (the author of the key's messages)")
    scope_words = _scope_claim(scope)
    if scope_words is None:
        raise ValueError("scope must be 'publish', 'admin' or 'publish admin'")
    payload: Dict[str, Any] = {"name": name, "scope": scope_words}
    if topics is not None:
        if isinstance(topics, (str, bytes)) or not isinstance(topics, Sequence):
            raise TypeError("topics must be a list of topic patterns, e.g. ['orders.#']")
        payload["topics"] = [str(t) for t in topics]
    if expires_at is not None:
        payload["expires_at"] = _time("expires_at", expires_at)
    return Call(
        "POST",
        "/keys",
        lambda r: ApiKey.from_dict(_json_object(r)),
        json_body=payload,
        has_body=True,
    )


def list_keys() -> Call[List[ApiKey]]:
    return Call("GET", "/keys", lambda r: [ApiKey.from_dict(item) for item in _items(r)])


def revoke_key(key_id: Union[Id, ApiKey]) -> Call[None]:
    if isinstance(key_id, ApiKey):
        key_id = key_id.id
    return Call("DELETE", f"/keys/{_id(key_id)}", lambda r: None)


# --- live stream ----------------------------------------------------------------------------


def stream(topic: str, filter: Optional[str], last_id: Optional[str]) -> Call[None]:
    """``GET /stream``: opened, not read; the clients read the events themselves."""
    params = {"topic": topic}
    if filter is not None:
        params["filter"] = filter
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    return Call("GET", "/stream", lambda r: None, params=params, headers=headers)
