"""A delivery from a running hub verifies with the Standard Webhooks reference
library (the `standardwebhooks` package), not only with our own code."""

import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

URL = os.environ.get("SWITCH_TEST_URL")
SECRET = os.environ.get("SWITCH_TEST_JWT_SECRET")
pytestmark = pytest.mark.skipif(not URL, reason="needs a hub (make test starts one)")


def admin_headers():
    token = jwt.encode({"author": "interop", "scope": "admin publish"}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def receiver():
    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            got.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", got
    server.shutdown()


def test_delivery_verifies_with_the_reference_library(receiver):
    base, got = receiver
    topic = f"interop.{uuid.uuid4().hex[:8]}"
    sub = httpx.post(f"{URL}/subscribers", headers=admin_headers(), json={"topic": topic, "target_url": f"{base}/hook"}).json()
    published = httpx.post(f"{URL}/publish", headers=admin_headers(), json={"topic": topic, "body": {"n": 1, "s": "ü"}})
    assert published.status_code == 202
    deadline = time.time() + 20
    while not got and time.time() < deadline:
        time.sleep(0.05)
    assert got, "the webhook arrived"
    headers, body = got[0]
    lowered = {k.lower(): v for k, v in headers.items()}
    payload = Webhook(sub["secret"]).verify(body, lowered)
    assert payload == {"n": 1, "s": "ü"}
    assert lowered["webhook-id"] == published.json()["message_id"]
    with pytest.raises(WebhookVerificationError):
        Webhook(sub["secret"]).verify(body + b" ", lowered)
    # After rotation both signatures are sent for 24 h: the old secret still verifies.
    rotated = httpx.post(f"{URL}/subscribers/{sub['id']}/rotate-secret", headers=admin_headers()).json()
    httpx.post(f"{URL}/refresh", headers=admin_headers())
    time.sleep(1.0)  # let the worker's snapshot catch up (SWITCH_REFRESH_INTERVAL)
    httpx.post(f"{URL}/publish", headers=admin_headers(), json={"topic": topic, "body": {"n": 2}})
    deadline = time.time() + 20
    while len(got) < 2 and time.time() < deadline:
        time.sleep(0.05)
    headers, body = got[1]
    lowered = {k.lower(): v for k, v in headers.items()}
    assert len(lowered["webhook-signature"].split(" ")) == 2
    assert Webhook(rotated["secret"]).verify(body, lowered) == {"n": 2}
    assert Webhook(sub["secret"]).verify(body, lowered) == {"n": 2}
