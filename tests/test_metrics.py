"""`/metrics` of the server and of a worker parse as Prometheus text and carry
the series operators need."""

import os
import time
import uuid

import httpx
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

URL = os.environ.get("SWITCH_TEST_URL")
SECRET = os.environ.get("SWITCH_TEST_JWT_SECRET")
WORKER_METRICS = os.environ.get("SWITCH_WORKER_METRICS_ADDR")
pytestmark = pytest.mark.skipif(not URL, reason="needs a hub (make test starts one)")


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def headers():
    return {"Authorization": "Bearer " + jwt.encode({"scope": "admin publish"}, SECRET, algorithm="HS256")}


def test_server_metrics_parse_and_count_publishes():
    topic = f"metrics.{uuid.uuid4().hex[:8]}"
    httpx.post(f"{URL}/subscribers", headers=headers(), json={"topic": topic, "target_url": "http://127.0.0.1:9/none"})
    before = families(httpx.get(f"{URL}/metrics").text)
    accepted = lambda fams: sum(s.value for s in fams["switch_publishes"].samples if s.labels.get("result") == "accepted" and s.name.endswith("_total"))
    start = accepted(before) if "switch_publishes" in before else 0
    for _ in range(3):
        assert httpx.post(f"{URL}/publish", headers=headers(), json={"topic": topic}).status_code == 202
    after = families(httpx.get(f"{URL}/metrics").text)
    assert accepted(after) == start + 3
    for name in ["switch_matches", "switch_enqueue_seconds", "switch_queue_depth", "switch_queue_delayed",
                 "switch_queue_oldest_pending_age_seconds", "switch_subscribers"]:
        assert name in after, f"{name} missing"
    assert after["switch_enqueue_seconds"].type == "histogram"


def test_worker_metrics_parse_and_count_deliveries():
    assert WORKER_METRICS, "the hub runner sets SWITCH_WORKER_METRICS_ADDR"
    topic = f"metricsw.{uuid.uuid4().hex[:8]}"
    sub = httpx.post(f"{URL}/subscribers", headers=headers(), json={"topic": topic, "target_url": "http://127.0.0.1:9/refused"}).json()
    httpx.post(f"{URL}/publish", headers=headers(), json={"topic": topic})
    deadline = time.time() + 20
    series = []
    while time.time() < deadline:
        fams = families(httpx.get(f"http://{WORKER_METRICS}/metrics").text)
        series = [s for s in fams.get("switch_deliveries", []).samples if s.labels.get("subscriber_id") == str(sub["id"])] if "switch_deliveries" in fams else []
        if series:
            break
        time.sleep(0.1)
    assert series and series[0].labels["outcome"] in ("failed", "dead")
    assert fams["switch_delivery_seconds"].type == "histogram"
    assert "switch_queue_depth" in fams
