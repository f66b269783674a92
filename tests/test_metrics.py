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


def test_both_endpoints_show_the_hub_totals():
    """The server shows delivery outcomes and the worker shows publishes: every
    `/metrics` carries the hub-wide `switch_hub_*` totals kept in Redis."""
    topic = f"metricsh.{uuid.uuid4().hex[:8]}"
    httpx.post(f"{URL}/subscribers", headers=headers(), json={"topic": topic, "target_url": "http://127.0.0.1:9/refused"})

    def totals(text):
        fams = families(text)
        deliveries = {s.labels["outcome"]: s.value for s in fams["switch_hub_deliveries"].samples if s.name.endswith("_total")}
        count = [s.value for s in fams["switch_hub_delivery_seconds"].samples if s.name.endswith("_count")][0]
        publishes = [s.value for s in fams["switch_hub_publishes"].samples][0]
        matches = [s.value for s in fams["switch_hub_matches"].samples][0]
        assert fams["switch_hub_delivery_seconds"].type == "histogram"
        return publishes, matches, sum(deliveries.values()), count

    server_before = totals(httpx.get(f"{URL}/metrics").text)
    assert httpx.post(f"{URL}/publish", headers=headers(), json={"topic": topic}).status_code == 202
    deadline = time.time() + 20
    while time.time() < deadline:
        server_after = totals(httpx.get(f"{URL}/metrics").text)
        if server_after[2] > server_before[2]:
            break
        time.sleep(0.1)
    assert server_after[0] >= server_before[0] + 1, "the publish is counted"
    assert server_after[1] >= server_before[1] + 1, "its match is counted"
    assert server_after[2] > server_before[2], "the failed attempt shows on the server"
    assert server_after[3] == server_after[2], "every attempt has a duration"
    worker = totals(httpx.get(f"http://{WORKER_METRICS}/metrics").text)
    assert worker[0] >= server_after[0], "the worker shows the hub's publishes"
