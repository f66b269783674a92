//! W3C `traceparent` on deliveries: one trace per published message (the
//! publisher's, when it sends a valid one), a span of its own per attempt.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

/// The trace id and span id of a delivery's `traceparent`, after checking it
/// is `00-<32 hex>-<16 hex>-01`.
fn trace_and_span(c: &Captured) -> (String, String) {
    let header = c.header("traceparent").expect("a traceparent header");
    let parts: Vec<&str> = header.split('-').collect();
    assert!(
        parts.len() == 4
            && parts[0] == "00"
            && is_hex(parts[1], 32)
            && is_hex(parts[2], 16)
            && parts[3] == "01",
        "malformed traceparent {header}"
    );
    (parts[1].to_string(), parts[2].to_string())
}

/// Publishes `path` (`/publish` or `/publish/batch`) with `traceparent`, if any.
async fn publish_traced(
    app: &TestApp,
    path: &str,
    traceparent: Option<&str>,
    body: Value,
) -> Value {
    let mut req = app
        .http
        .post(format!("{}{path}", app.base))
        .header("Authorization", format!("Bearer {}", app.admin))
        .body(body.to_string());
    if let Some(t) = traceparent {
        req = req.header("traceparent", t);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 202);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_of_a_message_share_its_trace_each_with_a_span_of_its_own() {
    let (app, _db) = TestApp::with(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    // One of the two first attempts fails: three deliveries of one message.
    receiver.script(vec![Reply::Status(500)]);
    app.subscribe("tp.t", &receiver.url("/a"), None).await;
    app.subscribe("tp.t", &receiver.url("/b"), None).await;
    let worker = InProcessWorker::start(app.settings.clone());
    let (status, _) = app.publish(json!({"topic": "tp.t"})).await;
    assert_eq!(status, 202);
    let got = receiver.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 3);
    assert!(
        got.iter()
            .any(|c| c.header("x-switch-attempt") == Some("2")),
        "a retry among them"
    );
    let ids: Vec<(String, String)> = got.iter().map(trace_and_span).collect();
    let traces: HashSet<&str> = ids.iter().map(|(t, _)| t.as_str()).collect();
    let spans: HashSet<&str> = ids.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(traces.len(), 1, "one trace per message: {ids:?}");
    assert_eq!(spans.len(), 3, "a span per attempt: {ids:?}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_valid_incoming_traceparent_is_kept_and_an_invalid_one_ignored() {
    let (app, _db) = TestApp::with(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    app.subscribe("tpin.t", &receiver.url("/in"), None).await;
    let worker = InProcessWorker::start(app.settings.clone());
    let invalid = [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ];
    let one = |topic: &str| json!({"topic": topic});
    let batch = json!({"messages": [one("tpin.t"), one("tpin.t")]});
    let mut expected: Vec<(String, Option<&str>, &str)> = Vec::new();
    let kept = publish_traced(&app, "/publish", Some(INCOMING), one("tpin.t")).await;
    expected.push((
        kept["message_id"].as_str().unwrap().into(),
        Some(INCOMING_TRACE),
        "valid",
    ));
    for bad in invalid {
        let answer = publish_traced(&app, "/publish", Some(bad), one("tpin.t")).await;
        expected.push((answer["message_id"].as_str().unwrap().into(), None, bad));
    }
    let plain = publish_traced(&app, "/publish", None, one("tpin.t")).await;
    expected.push((plain["message_id"].as_str().unwrap().into(), None, "none"));
    let kept_batch = publish_traced(&app, "/publish/batch", Some(INCOMING), batch.clone()).await;
    for item in kept_batch["items"].as_array().unwrap() {
        let id = item["message_id"].as_str().unwrap().to_string();
        expected.push((id, Some(INCOMING_TRACE), "valid, batch"));
    }
    let plain_batch = publish_traced(&app, "/publish/batch", None, batch).await;
    for item in plain_batch["items"].as_array().unwrap() {
        let id = item["message_id"].as_str().unwrap().to_string();
        expected.push((id, None, "none, batch"));
    }
    let got = receiver
        .wait_for(expected.len(), Duration::from_secs(20))
        .await;
    assert_eq!(got.len(), expected.len());
    let trace_of: HashMap<String, String> = got
        .iter()
        .map(|c| {
            (
                c.header("webhook-id").unwrap().to_string(),
                trace_and_span(c).0,
            )
        })
        .collect();
    let mut new_traces = HashSet::new();
    for (id, trace, case) in &expected {
        let delivered = &trace_of[id];
        match trace {
            Some(t) => assert_eq!(delivered, t, "{case}: the publisher's trace is kept"),
            None => {
                assert_ne!(delivered, INCOMING_TRACE, "{case}");
                assert!(
                    new_traces.insert(delivered.clone()),
                    "{case}: a new trace of its own"
                );
            }
        }
    }
    worker.stop().await;
}
