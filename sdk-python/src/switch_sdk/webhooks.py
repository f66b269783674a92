"""Verifying the webhooks the hub delivers (Standard Webhooks signatures)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

from .errors import WebhookVerificationError

__all__ = ["verify_webhook", "sign_webhook", "WebhookVerificationError"]

SECRET_PREFIX = "whsec_"

Headers = Union[Mapping[str, str], Iterable[Tuple[str, str]]]


def _key(secret: Union[str, bytes]) -> bytes:
    if isinstance(secret, bytes):
        secret = secret.decode("ascii", errors="replace")
    if not isinstance(secret, str) or not secret:
        raise WebhookVerificationError("the webhook secret is empty")
    encoded = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookVerificationError(
            "the webhook secret is not 'whsec_' followed by base64"
        ) from exc
    if not key:
        raise WebhookVerificationError("the webhook secret is empty")
    return key


def _body_bytes(body: Union[bytes, bytearray, memoryview, str]) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError("body must be the raw request body, as bytes or str")


def _lower_headers(headers: Headers) -> Dict[str, str]:
    items: Iterable[Tuple[Any, Any]] = (
        headers.items() if isinstance(headers, Mapping) or hasattr(headers, "items") else headers
    )
    out: Dict[str, str] = {}
    for name, value in items:
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        out.setdefault(str(name).lower(), str(value))
    return out


def _signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    signed = msg_id.encode("utf-8") + b"." + timestamp.encode("utf-8") + b"." + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign_webhook(
    secret: str,
    msg_id: str,
    timestamp: Union[int, str],
    body: Union[bytes, str],
) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) the hub sends for this
    message, attempt timestamp and body. Handy for testing a receiver."""
    digest = _signature(_key(secret), msg_id, str(int(timestamp)), _body_bytes(body))
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_webhook(
    secret: str,
    headers: Headers,
    body: Union[bytes, str],
    tolerance: int = 300,
    *,
    now: Optional[float] = None,
) -> Any:
    """Verify a webhook delivered by the hub and return its body.

    Args:
        secret: the subscriber's secret, ``whsec_<base64>``.
        headers: the request headers (any mapping or list of pairs; names are
            matched case-insensitively). ``webhook-id``, ``webhook-timestamp`` and
            ``webhook-signature`` are required.
        body: the raw request body exactly as received, bytes or str. Do not
            re-serialize parsed JSON: the signature covers the exact bytes.
        tolerance: how many seconds ``webhook-timestamp`` may differ from now.
        now: the current Unix time (defaults to ``time.time()``).

    Returns:
        The body decoded as JSON, or the body unchanged when it is not JSON.

    Raises:
        WebhookVerificationError: a header is missing, the timestamp is not a number
            or is too old or too new, or no ``v1`` signature matches.
    """
    lowered = _lower_headers(headers)
    msg_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    missing = [
        name
        for name, value in (
            ("webhook-id", msg_id),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signatures),
        )
        if not value
    ]
    if missing:
        raise WebhookVerificationError(f"missing header(s): {', '.join(missing)}")
    assert msg_id is not None and timestamp is not None and signatures is not None

    timestamp = timestamp.strip()
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a Unix time in seconds") from None
    current = time.time() if now is None else now
    if sent_at < current - tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if sent_at > current + tolerance:
        raise WebhookVerificationError("webhook-timestamp is too far in the future")

    raw = _body_bytes(body)
    expected = _signature(_key(secret), msg_id, timestamp, raw)
    matched = False
    for entry in signatures.split():
        version, sep, value = entry.partition(",")
        if not sep or version != "v1":
            continue
        try:
            candidate = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Check every entry, so the time taken does not depend on which one matches.
        if hmac.compare_digest(candidate, expected):
            matched = True
    if not matched:
        raise WebhookVerificationError("no matching signature")

    try:
        return json.loads(raw)
    except ValueError:
        return body
