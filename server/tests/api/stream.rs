//! SPEC §11: the live stream over SSE and WebSocket — topic pattern and
//! filter, auth, any server serves any client, resume with no gap and no
//! duplicate, and a client that never reads is closed as a slow consumer.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    sse_sends_matching_messages_as_they_are_published,
    stream_auth_and_bad_requests,
    a_message_through_one_server_reaches_clients_of_another,
    resume_sends_the_log_then_goes_live_without_gap_or_duplicate,
    websocket_sends_one_text_frame_per_message,
);

/// An open SSE response, read as events.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

#[derive(Debug, Clone)]
struct Event {
    id: Option<String>,
    event: String,
    data: String,
}

impl Sse {
    async fn open(app: &TestApp, query: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = app
            .http
            .get(format!("{}/stream?{query}", app.base))
            .header("Authorization", format!("Bearer {}", app.admin));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.expect("stream opens");
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let mut sse = Sse {
            resp,
            buf: String::new(),
        };
        // The opening comment: the stream is live from here.
        while !sse.buf.contains("\n\n") {
            let chunk = sse.resp.chunk().await.unwrap().expect("opening comment");
            sse.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
        sse.buf.clear();
        sse
    }

    /// The next event (comments skipped), or None when `within` passes.
    async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut e = Event {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        e.id = Some(v.to_string());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        e.event = v.to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        e.data.push_str(v);
                        any = true;
                    }
                }
                if any {
                    return Some(e);
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    async fn messages(&mut self, n: usize, within: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        let deadline = Instant::now() + within;
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(e) = self.next(left).await else {
                break;
            };
            assert_eq!(e.event, "message", "{e:?}");
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(e.id.as_deref(), v["id"].as_str());
            out.push(v);
        }
        out
    }
}

async fn publish(app: &TestApp, topic: &str, body: Value) -> String {
    let (status, answer) = app.publish(json!({"topic": topic, "body": body})).await;
    assert_eq!(status, 202, "{answer}");
    answer["message_id"].as_str().unwrap().to_string()
}

async fn sse_sends_matching_messages_as_they_are_published(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let mut sse = Sse::open(&app, "topic=orders.*&filter=body.total%20%3E%20100", None).await;
    publish(&app, "billing.x", json!({"total": 500})).await;
    publish(&app, "orders.created", json!({"total": 5})).await;
    let wanted = publish(&app, "orders.created", json!({"total": 500, "n": [1]})).await;
    let got = sse.messages(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m["id"], wanted.as_str());
    assert_eq!(m["topic"], "orders.created");
    assert_eq!(m["body"], json!({"total": 500, "n": [1]}));
    assert_eq!(m["author"], "ops");
    assert!(m["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(m.get("deliveries").is_none());
    assert!(
        sse.next(Duration::from_millis(500)).await.is_none(),
        "nothing else"
    );
}

async fn stream_auth_and_bad_requests(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let get = |path: String, token: Option<String>| {
        let app = &app;
        async move {
            let mut req = app.http.get(format!("{}{path}", app.base));
            if let Some(t) = token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    let limited = token(json!({"author": "w", "scope": "publish", "topics": ["orders.#"]}));
    let nobody = token(json!({"author": "w", "scope": "publish"}));
    assert_eq!(get("/stream".into(), None).await, 401);
    assert_eq!(
        get("/stream?topic=orders.*".into(), Some(limited.clone())).await,
        200
    );
    assert_eq!(
        get("/stream?topic=%23".into(), Some(limited.clone())).await,
        403
    );
    assert_eq!(
        get("/stream?topic=orders.*".into(), Some(nobody)).await,
        403
    );
    assert_eq!(
        get(format!("/stream?topic=orders.eu.%23&token={limited}"), None).await,
        200,
        "?token= for browsers"
    );
    assert_eq!(
        get("/stream?topic=a..b".into(), Some(app.admin.clone())).await,
        400
    );
    assert_eq!(
        get(
            "/stream?filter=body.x%20%3D%3D".into(),
            Some(app.admin.clone())
        )
        .await,
        400
    );
    assert_eq!(
        get("/ws?topic=%23".into(), Some(limited)).await,
        403,
        "before upgrading"
    );
}

async fn a_message_through_one_server_reaches_clients_of_another(backend: Backend) {
    let db = TestDb::new(backend);
    let a = TestApp::spawn(settings(&db, REDIS_URL)).await;
    let b = TestApp::spawn(a.settings.clone()).await;
    let mut on_b = Sse::open(&b, "topic=two.%23", None).await;
    let mut on_a = Sse::open(&a, "topic=two.%23", None).await;
    let id = publish(&a, "two.x", json!({})).await;
    for sse in [&mut on_b, &mut on_a] {
        let got = sse.messages(1, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["id"], id.as_str());
    }
}

/// A client reads some messages from server A, drops; more are published;
/// it resumes on server B with Last-Event-ID: the logged ones first, then
/// live ones, each once, in order.
async fn resume_sends_the_log_then_goes_live_without_gap_or_duplicate(backend: Backend) {
    let db = TestDb::new(backend);
    let a = TestApp::spawn(settings(&db, REDIS_URL)).await;
    let b = TestApp::spawn(a.settings.clone()).await;
    let worker = InProcessWorker::start(a.settings.clone());
    let mut first = Sse::open(&a, "topic=rs.t", None).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(publish(&a, "rs.t", json!({"i": i})).await);
    }
    let seen = first.messages(3, Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 3);
    let last_seen = seen[2]["id"].as_str().unwrap().to_string();
    drop(first);
    for i in 3..8 {
        ids.push(publish(&a, "rs.t", json!({"i": i})).await);
        publish(&a, "rs.other", json!({})).await;
    }
    let mut resumed = Sse::open(&b, "topic=rs.t", Some(&last_seen)).await;
    // Published while the client catches up and after.
    let publisher = tokio::spawn({
        let b_base = b.base.clone();
        let admin = b.admin.clone();
        async move {
            let http = reqwest::Client::new();
            let mut more = Vec::new();
            for i in 8..12 {
                let r: Value = http
                    .post(format!("{b_base}/publish"))
                    .header("Authorization", format!("Bearer {admin}"))
                    .body(json!({"topic": "rs.t", "body": {"i": i}}).to_string())
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                more.push(r["message_id"].as_str().unwrap().to_string());
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            more
        }
    });
    let got = resumed.messages(9, Duration::from_secs(15)).await;
    ids.extend(publisher.await.unwrap());
    let got: Vec<&str> = got.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let want: Vec<&str> = ids[3..].iter().map(String::as_str).collect();
    assert_eq!(got, want, "after the resume point, each once, in order");
    assert!(
        resumed.next(Duration::from_millis(500)).await.is_none(),
        "no duplicate after"
    );
    worker.stop().await;
}

async fn websocket_sends_one_text_frame_per_message(backend: Backend) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as Frame;
    let (app, _db) = TestApp::with(backend).await;
    let url = format!(
        "{}/ws?topic=ws.%2A&token={}",
        app.base.replace("http://", "ws://"),
        app.admin
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let id = publish(&app, "ws.a", json!({"k": 1})).await;
    publish(&app, "other.a", json!({})).await;
    let frame = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Text(t))) => return t.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("a frame");
    let m: Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(
        (m["id"].as_str(), m["topic"].as_str()),
        (Some(id.as_str()), Some("ws.a"))
    );
    assert_eq!(m["body"], json!({"k": 1}));
}

/// A client that never reads while far more is published than it may fall
/// behind is sent `slow_consumer` and closed; publishing goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_reads_is_closed_as_a_slow_consumer() {
    let (app, _db) = TestApp::with(Backend::Sqlite).await;
    let resp = app
        .http
        .get(format!("{}/stream?topic=slow.t", app.base))
        .header("Authorization", format!("Bearer {}", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = json!({"pad": "x".repeat(400)});
    let batch = json!({"messages": vec![json!({"topic": "slow.t", "body": body}); 1000]});
    let started = Instant::now();
    for _ in 0..20 {
        let (status, _) = app
            .request(
                "POST",
                "/publish/batch",
                Some(&app.admin.clone()),
                Some(batch.clone()),
            )
            .await;
        assert_eq!(status, 202);
    }
    let publishing = started.elapsed();
    let text = tokio::time::timeout(Duration::from_secs(30), resp.text())
        .await
        .expect("the server ends the stream")
        .unwrap();
    assert!(
        text.trim_end()
            .ends_with("event: error\ndata: {\"code\":\"slow_consumer\"}"),
        "ends with slow_consumer: …{}",
        &text[text.len().saturating_sub(200)..]
    );
    let sent = text.matches("event: message").count();
    assert!(sent < 20_000, "closed before the end ({sent} sent)");
    eprintln!("slow consumer: 20,000 published in {publishing:?}; {sent} sent before closing");
}
