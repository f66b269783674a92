"""verify_webhook: Standard Webhooks signatures as the hub sends them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Dict

import pytest

from switch_sdk import WebhookVerificationError, sign_webhook, verify_webhook

# The test vector published with the Standard Webhooks reference implementations.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

KEY = os.urandom(24)
SECRET = "whsec_" + base64.b64encode(KEY).decode()
BODY = b'{"id": 42, "total": 9.5, "name": "caf\xc3\xa9"}'


def independent_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The signature computed step by step from the scheme's definition."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def signed_headers(msg_id: str = "0190a1b2-msg", timestamp: int = 0, body: bytes = BODY) -> Dict[str, str]:
    ts = timestamp or int(time.time())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": independent_signature(KEY, msg_id, ts, body),
    }


def test_standard_webhooks_vector() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    assert verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP) == {
        "test": 2432232314
    }
    assert sign_webhook(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_standard_webhooks_vector_is_too_old_now() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY)


def test_independent_signature_matches_vector() -> None:
    key = base64.b64decode(VECTOR_SECRET[len("whsec_"):])
    assert (
        independent_signature(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY.encode())
        == VECTOR_SIGNATURE
    )


def test_valid_bytes_body_returns_parsed_json() -> None:
    assert verify_webhook(SECRET, signed_headers(), BODY) == json.loads(BODY)


def test_valid_str_body() -> None:
    assert verify_webhook(SECRET, signed_headers(), BODY.decode("utf-8"))["name"] == "café"


def test_non_json_body_is_returned_as_given() -> None:
    body = b"plain text"
    assert verify_webhook(SECRET, signed_headers(body=body), body) == body


def test_secret_without_prefix() -> None:
    secret = base64.b64encode(KEY).decode()
    assert verify_webhook(secret, signed_headers(), BODY)["id"] == 42


def test_sign_webhook_matches_independent_signature() -> None:
    assert sign_webhook(SECRET, "m", 1700000000, BODY) == independent_signature(
        KEY, "m", 1700000000, BODY
    )


def test_header_names_are_case_insensitive() -> None:
    headers = {k.title(): v for k, v in signed_headers().items()}
    assert "Webhook-Signature" in headers
    assert verify_webhook(SECRET, headers, BODY)["id"] == 42
    upper = [(k.upper(), v) for k, v in signed_headers().items()]
    assert verify_webhook(SECRET, upper, BODY)["id"] == 42


def test_tampered_body() -> None:
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(SECRET, signed_headers(), BODY.replace(b"42", b"43"))


def test_tampered_id_or_timestamp() -> None:
    headers = signed_headers()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, {**headers, "webhook-id": "other"}, BODY)
    ts = int(headers["webhook-timestamp"]) + 1
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, {**headers, "webhook-timestamp": str(ts)}, BODY)


def test_wrong_secret() -> None:
    other = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(other, signed_headers(), BODY)


def test_malformed_secret() -> None:
    with pytest.raises(WebhookVerificationError, match="secret"):
        verify_webhook("whsec_not base64!", signed_headers(), BODY)
    with pytest.raises(WebhookVerificationError, match="secret"):
        verify_webhook("", signed_headers(), BODY)


def test_old_timestamp() -> None:
    old = int(time.time()) - 301
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(SECRET, signed_headers(timestamp=old), BODY)


def test_future_timestamp() -> None:
    future = int(time.time()) + 400
    with pytest.raises(WebhookVerificationError, match="future"):
        verify_webhook(SECRET, signed_headers(timestamp=future), BODY)


def test_timestamp_within_tolerance() -> None:
    ts = int(time.time()) - 250
    assert verify_webhook(SECRET, signed_headers(timestamp=ts), BODY)["id"] == 42
    ts = int(time.time()) - 1000
    assert verify_webhook(SECRET, signed_headers(timestamp=ts), BODY, tolerance=2000)["id"] == 42
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, signed_headers(timestamp=ts), BODY, tolerance=900)


def test_non_numeric_timestamp() -> None:
    headers = {**signed_headers(), "webhook-timestamp": "yesterday"}
    with pytest.raises(WebhookVerificationError, match="timestamp"):
        verify_webhook(SECRET, headers, BODY)


def test_multiple_signatures_any_match() -> None:
    headers = signed_headers()
    good = headers["webhook-signature"]
    wrong = independent_signature(os.urandom(24), headers["webhook-id"],
                                  int(headers["webhook-timestamp"]), BODY)
    for combined in (f"{wrong} {good}", f"{good} {wrong}", f"v1a,abcd {good}", f"v1,!!! {good}",
                     f"  {wrong}   {good}  "):
        assert verify_webhook(SECRET, {**headers, "webhook-signature": combined}, BODY)["id"] == 42


def test_multiple_signatures_none_match() -> None:
    headers = signed_headers()
    wrong = independent_signature(os.urandom(24), headers["webhook-id"],
                                  int(headers["webhook-timestamp"]), BODY)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, {**headers, "webhook-signature": f"{wrong} {wrong}"}, BODY)


def test_signature_of_other_version_is_ignored() -> None:
    headers = signed_headers()
    sig = headers["webhook-signature"].replace("v1,", "v2,")
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, {**headers, "webhook-signature": sig}, BODY)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers(missing: str) -> None:
    headers = {k: v for k, v in signed_headers().items() if k != missing}
    with pytest.raises(WebhookVerificationError, match=missing):
        verify_webhook(SECRET, headers, BODY)


def test_no_headers_at_all() -> None:
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook(SECRET, {}, BODY)
