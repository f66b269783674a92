"""Exceptions raised by the Switch SDK.

Every failure of a call to the hub raises a :class:`SwitchError` (or one of its
subclasses). Webhook verification failures raise :class:`WebhookVerificationError`.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "SwitchError",
    "NetworkError",
    "InvalidRequestError",
    "UnauthorizedError",
    "ForbiddenError",
    "NotFoundError",
    "ConflictError",
    "PayloadTooLargeError",
    "UnavailableError",
    "WebhookVerificationError",
    "error_from_response",
]


class SwitchError(Exception):
    """Base class of every error raised by a call to the hub.

    Attributes:
        status: the HTTP status of the hub's answer (``None`` when there was no answer).
        code: the hub's stable error code (``"unauthorized"``, ``"not_found"``, …) or
            ``None`` when the answer carried none.
        message: a human-readable description, the hub's own when it sent one.
        body: the decoded error body when it was JSON, else the raw text (or ``None``).
        index: for a batch publish, the position (from 0) of the first message the
            hub refused (the hub's ``error.index``); ``None`` otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        body: Any = None,
        index: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body
        self.index = index

    def __str__(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(str(self.status))
        if self.code:
            parts.append(self.code)
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status={self.status!r}, "
            f"code={self.code!r})"
        )


class NetworkError(SwitchError):
    """The hub could not be reached or did not answer in time (connection refused,
    DNS failure, timeout, connection dropped). ``status`` is ``None``."""


class InvalidRequestError(SwitchError):
    """400: the hub refused the request (bad topic, bad filter expression, …)."""


class UnauthorizedError(SwitchError):
    """401: missing, malformed, expired or wrongly signed token; an unknown, revoked or
    expired API key."""


class ForbiddenError(SwitchError):
    """403: the token is valid but lacks the scope or topic the call needs."""


class NotFoundError(SwitchError):
    """404: no such subscriber, dead letter or route."""


class ConflictError(SwitchError):
    """409: the request conflicts with the hub's current state."""


class PayloadTooLargeError(SwitchError):
    """413: the publish request is larger than the hub's ``SWITCH_MAX_BODY_BYTES``."""


class UnavailableError(SwitchError):
    """503: the hub cannot reach Redis or its database right now.

    Attributes:
        retry_after: seconds the hub asks to wait before retrying (from the
            ``Retry-After`` header), or ``None`` when it gave none.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        body: Any = None,
        index: Optional[int] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message, status=status, code=code, body=body, index=index)
        self.retry_after = retry_after


class WebhookVerificationError(Exception):
    """A received webhook failed verification (missing headers, bad or stale
    timestamp, or no matching signature). Answer such a request with 4xx."""


_BY_STATUS: Dict[int, Type[SwitchError]] = {
    400: InvalidRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    503: UnavailableError,
}


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds)


def error_from_response(
    status: int, headers: Mapping[str, str], content: bytes
) -> SwitchError:
    """Build the exception for an unsuccessful answer of the hub.

    ``headers`` must look names up case-insensitively (``httpx.Headers`` does).
    """
    body: Any = None
    code: Optional[str] = None
    message: Optional[str] = None
    index: Optional[int] = None
    text = content.decode("utf-8", errors="replace") if content else ""
    if text:
        try:
            body = json.loads(text)
        except ValueError:
            body = text
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            if isinstance(err.get("code"), str):
                code = err["code"]
            if err.get("message") is not None:
                message = str(err["message"])
            if isinstance(err.get("index"), int) and not isinstance(err["index"], bool):
                index = err["index"]
        elif isinstance(err, str):
            message = err
        if message is None and isinstance(body.get("message"), str):
            message = body["message"]
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    if not message:
        message = f"the hub answered HTTP {status}"

    cls = _BY_STATUS.get(status, SwitchError)
    if cls is UnavailableError:
        return UnavailableError(
            message,
            status=status,
            code=code,
            body=body,
            index=index,
            retry_after=parse_retry_after(headers.get("retry-after")),
        )
    return cls(message, status=status, code=code, body=body, index=index)
