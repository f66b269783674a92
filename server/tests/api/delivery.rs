use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    receiver_gets_the_specified_request,
    retries_then_delivered,
    always_failing_becomes_dead_letter_then_replays,
    retry_after_is_honoured,
    gone_disables_subscriber,
    hanging_receiver_times_out,
    api_changes_reach_workers_at_once
);

/// Verifies a Standard Webhooks signature written out from the scheme's
/// definition (HMAC-SHA256 over "id.timestamp.body", base64), independent of the hub's code.
fn verify(secret: &str, c: &Captured) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let signed = format!(
        "{}.{}.{}",
        c.header("webhook-id").unwrap(),
        c.header("webhook-timestamp").unwrap(),
        String::from_utf8_lossy(&c.body)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    c.header("webhook-signature")
        .unwrap()
        .split(' ')
        .any(|s| s == expected)
}

async fn receiver_gets_the_specified_request(backend: Backend) {
    let (app, db) = TestApp::with(backend).await;
    let receiver = Receiver::start().await;
    let sub = app
        .subscribe("orders.*", &receiver.url("/hook/:id/items"), None)
        .await;
    let secret = sub["secret"].as_str().unwrap().to_string();
    let worker = InProcessWorker::start(app.settings.clone());
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    let mut ids = Vec::new();
    for m in methods {
        let (status, body) = app
            .publish(json!({
                "topic": "orders.created",
                "body": {"method": m, "nested": {"x": [1, 2]}},
                "headers": {"X-Trace": "abc", "Connection": "close", "Host": "evil.example"},
                "query_params": {"source": "web app", "n": 1},
                "path_params": {"id": "a b/c"},
                "http_method": m,
            }))
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["message_id"].as_str().unwrap().to_string());
    }
    let got = receiver.wait_for(5, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 5);
    for m in methods {
        let c = got
            .iter()
            .find(|c| c.method == m)
            .unwrap_or_else(|| panic!("no {m}"));
        assert_eq!(c.path, "/hook/a%20b%2Fc/items");
        assert_eq!(c.query, "n=1&source=web+app");
        let body: Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(body, json!({"method": m, "nested": {"x": [1, 2]}}));
        assert_eq!(c.header("content-type"), Some("application/json"));
        assert_eq!(c.header("x-trace"), Some("abc"));
        assert_ne!(c.header("host"), Some("evil.example"));
        assert_eq!(c.header("x-switch-topic"), Some("orders.created"));
        assert_eq!(c.header("x-switch-attempt"), Some("1"));
        assert_eq!(c.header("x-switch-author"), Some("ops"));
        assert!(ids.contains(&c.header("webhook-id").unwrap().to_string()));
        let ts: i64 = c.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 30);
        assert!(verify(&secret, c), "signature verifies");
        assert!(
            !verify("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", c),
            "and not with another key"
        );
    }
    let rows = app
        .wait_deliveries("", Duration::from_secs(5), |i| i.len() >= 5)
        .await;
    assert!(rows
        .iter()
        .all(|r| r["outcome"] == "delivered" && r["http_status"] == 200 && r["attempt"] == 1));
    worker.stop().await;
    drop(db);
}

async fn retries_then_delivered(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::Status(500), Reply::Status(500)]);
    let sub = app.subscribe("r.t", &receiver.url("/r"), None).await;
    let worker = InProcessWorker::start(app.settings.clone());
    let (_, body) = app.publish(json!({"topic": "r.t"})).await;
    let mid = body["message_id"].as_str().unwrap().to_string();
    let got = receiver.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 3);
    assert_eq!(
        got.iter()
            .map(|c| c.header("x-switch-attempt").unwrap().to_string())
            .collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    assert!(
        got.iter()
            .all(|c| c.header("webhook-id") == Some(mid.as_str())),
        "same id on every retry"
    );
    let rows = app
        .wait_deliveries(&format!("message_id={mid}"), Duration::from_secs(5), |i| {
            i.len() >= 3
        })
        .await;
    let story: Vec<(i64, String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["attempt"].as_i64().unwrap(),
                r["outcome"].as_str().unwrap().to_string(),
                r["http_status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        story,
        vec![
            (1, "failed".into(), 500),
            (2, "failed".into(), 500),
            (3, "delivered".into(), 200)
        ]
    );
    assert!(rows.iter().all(|r| r["subscriber_id"] == sub["id"]));
    assert_eq!(rows[0]["error_kind"], "http_status");
    // The cursor: only newer rows after `since`.
    let since = rows[1]["id"].as_i64().unwrap();
    let (_, page) = app
        .admin(
            "GET",
            &format!("/deliveries?since={since}&message_id={mid}"),
            None,
        )
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_since"], rows[2]["id"]);
    worker.stop().await;
}

async fn always_failing_becomes_dead_letter_then_replays(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::Status(500); 3]);
    let sub = app.subscribe("d.t", &receiver.url("/d"), None).await;
    let sid = sub["id"].as_i64().unwrap();
    let worker = InProcessWorker::start(app.settings.clone());
    let (_, body) = app
        .publish(json!({"topic": "d.t", "body": {"k": "v"}, "headers": {"X-A": "1"}}))
        .await;
    let mid = body["message_id"].as_str().unwrap().to_string();
    let mut letters = Value::Null;
    for _ in 0..100 {
        let (_, l) = app
            .admin("GET", &format!("/dead-letters?subscriber_id={sid}"), None)
            .await;
        if !l["items"].as_array().unwrap().is_empty() {
            letters = l;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let letter = &letters["items"][0];
    assert_eq!(letter["message_id"], mid.as_str());
    assert_eq!(letter["attempts"], 3, "entries + 1 attempts");
    assert!(letter["last_error"].as_str().unwrap().contains("500"));
    assert_eq!(letter["request"]["method"], "POST");
    assert_eq!(letter["request"]["body"], json!({"k": "v"}));
    assert_eq!(letter["replayed_at"], Value::Null);
    assert_eq!(receiver.captured().len(), 3);
    // Fix the URL, then replay: delivered to the current URL with the same message id.
    let fixed = Receiver::start().await;
    let (status, _) = app
        .admin(
            "PATCH",
            &format!("/subscribers/{sid}"),
            Some(json!({"target_url": fixed.url("/fixed")})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .admin(
            "POST",
            &format!("/dead-letters/{}/replay", letter["id"]),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let got = fixed.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("webhook-id"), Some(mid.as_str()));
    assert_eq!(
        got[0].header("x-switch-attempt"),
        Some("1"),
        "fresh attempts"
    );
    let (_, after) = app
        .admin("GET", &format!("/dead-letters?subscriber_id={sid}"), None)
        .await;
    assert!(after["items"][0]["replayed_at"].is_string());
    let rows = app
        .wait_deliveries(&format!("message_id={mid}"), Duration::from_secs(5), |i| {
            i.len() >= 4
        })
        .await;
    let outcomes: Vec<&str> = rows
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["failed", "failed", "dead", "delivered"],
        "the attempts log tells the story"
    );
    worker.stop().await;
}

async fn retry_after_is_honoured(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::RetryAfter(429, 2)]);
    app.subscribe("ra.t", &receiver.url("/ra"), None).await;
    let worker = InProcessWorker::start(app.settings.clone());
    app.publish(json!({"topic": "ra.t"})).await;
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "Retry-After 2 s beats the 100 ms schedule: waited {gap:?}"
    );
    worker.stop().await;
}

async fn gone_disables_subscriber(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::Status(410)]);
    let sub = app.subscribe("g.t", &receiver.url("/g"), None).await;
    let sid = sub["id"].as_i64().unwrap();
    let worker = InProcessWorker::start(app.settings.clone());
    app.publish(json!({"topic": "g.t"})).await;
    let mut disabled = false;
    for _ in 0..100 {
        let (_, s) = app.admin("GET", &format!("/subscribers/{sid}"), None).await;
        if s["enabled"] == false {
            disabled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(disabled, "410 disables the subscriber");
    let (_, letters) = app
        .admin("GET", &format!("/dead-letters?subscriber_id={sid}"), None)
        .await;
    assert_eq!(
        letters["items"].as_array().unwrap().len(),
        1,
        "dead letter at once, no retries"
    );
    assert_eq!(receiver.captured().len(), 1);
    let lid = letters["items"][0]["id"].clone();
    // Replaying while disabled is refused; once enabled it is delivered.
    let (status, body) = app
        .admin("POST", &format!("/dead-letters/{lid}/replay"), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    // Replaying everything leaves the letters of disabled subscribers as they are.
    let (status, body) = app.admin("POST", "/dead-letters/replay", None).await;
    assert_eq!(
        (status, body["replayed"].as_u64(), body["skipped"].as_u64()),
        (202, Some(0), Some(1)),
        "{body}"
    );
    app.admin(
        "PATCH",
        &format!("/subscribers/{sid}"),
        Some(json!({"enabled": true})),
    )
    .await;
    let (status, body) = app
        .admin(
            "POST",
            &format!("/dead-letters/replay?subscriber_id={sid}"),
            None,
        )
        .await;
    assert_eq!((status, body["replayed"].as_u64()), (202, Some(1)));
    let (status, body) = app.admin("POST", "/dead-letters/replay", None).await;
    assert_eq!(
        (status, body["replayed"].as_u64()),
        (202, Some(0)),
        "a replayed letter is not replayed twice: {body}"
    );
    let got = receiver.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2, "replayed right after re-enabling");
    worker.stop().await;
}

async fn hanging_receiver_times_out(backend: Backend) {
    let db = TestDb::new(backend);
    let mut s = settings(&db, REDIS_URL);
    s.delivery_timeout = Duration::from_millis(300);
    s.retry_schedule = vec![];
    let app = TestApp::spawn(s).await;
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::Hang(Duration::from_secs(3))]);
    app.subscribe("h.t", &receiver.url("/h"), None).await;
    let worker = InProcessWorker::start(app.settings.clone());
    app.publish(json!({"topic": "h.t"})).await;
    let rows = app
        .wait_deliveries("", Duration::from_secs(10), |i| !i.is_empty())
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["error_kind"], "timeout");
    assert_eq!(
        rows[0]["outcome"], "dead",
        "a schedule with no delays allows one attempt"
    );
    assert!(rows[0]["duration_ms"].as_i64().unwrap() < 2000);
    // Nothing listening: a connect error.
    app.subscribe("c.t", &format!("http://127.0.0.1:{}/x", free_port()), None)
        .await;
    app.publish(json!({"topic": "c.t"})).await;
    let rows = app
        .wait_deliveries("outcome=dead", Duration::from_secs(10), |i| i.len() >= 2)
        .await;
    assert_eq!(rows[1]["error_kind"], "connect");
    worker.stop().await;
}

/// A change through the API applies to the very next publish, whatever the
/// workers' refresh interval: a new URL, then a new secret.
async fn api_changes_reach_workers_at_once(backend: Backend) {
    let db = TestDb::new(backend);
    let mut s = settings(&db, REDIS_URL);
    s.refresh_interval = Duration::from_secs(60);
    let app = TestApp::spawn(s).await;
    let (old, new) = (Receiver::start().await, Receiver::start().await);
    let sub = app.subscribe("chg.t", &old.url("/old"), None).await;
    let worker = InProcessWorker::start(app.settings.clone());
    app.publish(json!({"topic": "chg.t"})).await;
    assert_eq!(old.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    let (status, _) = app
        .admin(
            "PATCH",
            &format!("/subscribers/{}", sub["id"]),
            Some(json!({"target_url": new.url("/new")})),
        )
        .await;
    assert_eq!(status, 200);
    app.publish(json!({"topic": "chg.t"})).await;
    assert_eq!(
        new.wait_for(1, Duration::from_secs(10)).await.len(),
        1,
        "the worker saw the new URL"
    );
    assert_eq!(old.captured().len(), 1);
    for round in 2..=3 {
        let (status, rotated) = app
            .admin(
                "POST",
                &format!("/subscribers/{}/rotate-secret", sub["id"]),
                None,
            )
            .await;
        assert_eq!(status, 200);
        app.publish(json!({"topic": "chg.t"})).await;
        let got = new.wait_for(round, Duration::from_secs(10)).await;
        assert_eq!(got.len(), round);
        assert!(
            verify(rotated["secret"].as_str().unwrap(), &got[round - 1]),
            "round {round}: signed with the secret rotate-secret returned"
        );
    }
    worker.stop().await;
}
