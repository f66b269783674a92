//! SPEC §10: the message log — cursor polling that never skips (two servers
//! publishing at once), one message with its deliveries, explain, range
//! replay and backfill, batch publish, retention, and a database outage.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switch_core::Settings;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    polling_pages_sees_each_message_once_in_order,
    cursor_never_skips_while_two_servers_publish,
    a_message_shows_its_deliveries,
    filters_by_topic_pattern_author_and_time,
    explain_says_why_each_subscriber_matches_or_not,
    backfill_applies_the_new_subscribers_filter,
    batch_is_all_or_nothing,
    retention_deletes_old_rows,
    a_recreated_empty_log_still_lists_what_is_stored,
);

/// Follows the cursor until a page comes back empty; returns every item.
async fn poll_all(app: &TestApp, query: &str, since: &mut Option<String>) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let cursor = since
            .as_ref()
            .map(|s| format!("&since={s}"))
            .unwrap_or_default();
        let (status, body) = app
            .admin("GET", &format!("/messages?limit=100{query}{cursor}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        if let Some(next) = body["next_since"].as_str() {
            *since = Some(next.to_string());
        }
        if items.is_empty() {
            return got;
        }
        got.extend(items);
    }
}

async fn publish_ids(app: &TestApp, topic: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (status, body) = app.publish(json!({"topic": topic, "body": {"i": i}})).await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["message_id"].as_str().unwrap().to_string());
    }
    ids
}

/// Waits until `GET /messages{query}` lists `n` messages.
async fn wait_logged(app: &TestApp, query: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let mut since = None;
        let got = poll_all(app, query, &mut since).await;
        if got.len() >= n || started.elapsed() > Duration::from_secs(15) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn polling_pages_sees_each_message_once_in_order(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let worker = InProcessWorker::start(app.settings.clone());
    let ids = publish_ids(&app, "log.t", 250).await;
    let started = Instant::now();
    let mut since = None;
    let mut got: Vec<String> = Vec::new();
    let mut pages = Vec::new();
    while got.len() < 250 && started.elapsed() < Duration::from_secs(15) {
        let cursor = since
            .as_ref()
            .map(|s: &String| format!("&since={s}"))
            .unwrap_or_default();
        let (_, body) = app
            .admin("GET", &format!("/messages?limit=100{cursor}"), None)
            .await;
        let items = body["items"].as_array().unwrap();
        if !items.is_empty() {
            pages.push(items.len());
        }
        got.extend(items.iter().map(|m| m["id"].as_str().unwrap().to_string()));
        since = body["next_since"].as_str().map(str::to_string).or(since);
        if items.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(got, ids, "each exactly once, in publish order");
    assert!(pages.iter().all(|p| *p <= 100));
    let cursor = since.clone().unwrap();
    let (_, empty) = app
        .admin("GET", &format!("/messages?limit=100&since={cursor}"), None)
        .await;
    assert_eq!(
        empty["items"].as_array().unwrap().len(),
        0,
        "then an empty page"
    );
    assert_eq!(empty["next_since"].as_str(), Some(cursor.as_str()));
    let new = publish_ids(&app, "log.t", 1).await;
    let started = Instant::now();
    let more = loop {
        let mut from = Some(cursor.clone());
        let more = poll_all(&app, "", &mut from).await;
        if !more.is_empty() || started.elapsed() > Duration::from_secs(10) {
            break more;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(more.len(), 1, "then the new one");
    assert_eq!(more[0]["id"], new[0].as_str());
    let m = &more[0];
    assert_eq!(m["topic"], "log.t");
    assert_eq!(m["body"], json!({"i": 0}));
    assert_eq!(m["author"], "ops");
    assert_eq!(m["http_method"], "POST");
    assert_eq!(m["matched"], 0);
    assert!(m["created_at"].as_str().unwrap().ends_with('Z'));
    let (status, _) = app.admin("GET", "/messages?limit=1001", None).await;
    assert_eq!(status, 400);
    worker.stop().await;
}

/// Two servers publish at once, two workers archive, while a poller follows
/// the cursor: it ends with every message exactly once.
async fn cursor_never_skips_while_two_servers_publish(backend: Backend) {
    let db = TestDb::new(backend);
    let a = TestApp::spawn(settings(&db, REDIS_URL)).await;
    let b = TestApp::spawn(Settings {
        ..a.settings.clone()
    })
    .await;
    let workers = [
        InProcessWorker::start(a.settings.clone()),
        InProcessWorker::start(Settings {
            worker_metrics_addr: format!("127.0.0.1:{}", free_port()),
            ..a.settings.clone()
        }),
    ];
    let publishing = tokio::join!(
        async { publish_ids(&a, "two.a", 300).await },
        async { publish_ids(&b, "two.b", 300).await },
        async {
            let mut since = None;
            let mut seen: Vec<String> = Vec::new();
            let started = Instant::now();
            while seen.len() < 600 && started.elapsed() < Duration::from_secs(40) {
                let cursor = since
                    .as_ref()
                    .map(|s: &String| format!("&since={s}"))
                    .unwrap_or_default();
                let (_, body) = a
                    .admin("GET", &format!("/messages?limit=37{cursor}"), None)
                    .await;
                for m in body["items"].as_array().unwrap() {
                    seen.push(m["id"].as_str().unwrap().to_string());
                }
                since = body["next_since"].as_str().map(str::to_string).or(since);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        }
    );
    let (from_a, from_b, seen) = publishing;
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "none twice");
    let all: HashSet<&String> = from_a.iter().chain(from_b.iter()).collect();
    let missing: Vec<&&String> = all.iter().filter(|id| !unique.contains(**id)).collect();
    assert!(missing.is_empty(), "{} skipped of 600", missing.len());
    // Each server's own messages come in the order it published them.
    for ids in [&from_a, &from_b] {
        let order: Vec<&String> = seen.iter().filter(|s| ids.contains(s)).collect();
        assert_eq!(order, ids.iter().collect::<Vec<_>>());
    }
    for w in workers {
        w.stop().await;
    }
}

async fn a_message_shows_its_deliveries(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let ok = Receiver::start().await;
    let bad = Receiver::start().await;
    bad.script(vec![Reply::Status(500); 3]);
    let s_ok = app.subscribe("md.t", &ok.url("/ok"), None).await;
    let s_bad = app.subscribe("md.t", &bad.url("/bad"), None).await;
    let worker = InProcessWorker::start(app.settings.clone());
    let (_, body) = app
        .publish(json!({"topic": "md.t", "body": {"k": [1, 2]}, "headers": {"X-A": "1"}, "query_params": {"q": "v"}}))
        .await;
    let mid = body["message_id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let message = loop {
        let (status, m) = app.admin("GET", &format!("/messages/{mid}"), None).await;
        let done = status == 200
            && m["deliveries"].as_array().is_some_and(|d| {
                d.iter()
                    .all(|x| x["state"] == "delivered" || x["state"] == "dead")
            });
        if done || started.elapsed() > Duration::from_secs(15) {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(message["id"], mid.as_str());
    assert_eq!(message["body"], json!({"k": [1, 2]}));
    assert_eq!(message["headers"], json!({"X-A": "1"}));
    assert_eq!(message["query_params"], json!({"q": "v"}));
    assert_eq!(message["matched"], 2);
    assert_eq!(message["ordering_key"], Value::Null);
    let by_sub: HashMap<i64, &Value> = message["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["subscriber_id"].as_i64().unwrap(), d))
        .collect();
    let good = by_sub[&s_ok["id"].as_i64().unwrap()];
    assert_eq!(
        (
            good["state"].as_str(),
            good["attempts"].as_i64(),
            good["last_http_status"].as_i64()
        ),
        (Some("delivered"), Some(1), Some(200))
    );
    let dead = by_sub[&s_bad["id"].as_i64().unwrap()];
    assert_eq!(
        (
            dead["state"].as_str(),
            dead["attempts"].as_i64(),
            dead["last_http_status"].as_i64()
        ),
        (Some("dead"), Some(3), Some(500))
    );
    let (status, body) = app.admin("GET", "/messages/msg_nope", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    worker.stop().await;
}

async fn filters_by_topic_pattern_author_and_time(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let worker = InProcessWorker::start(app.settings.clone());
    publish_ids(&app, "orders.created", 3).await;
    publish_ids(&app, "orders.eu.paid", 2).await;
    // Clear of the millisecond either side, as created_at is kept to the millisecond.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before_billing = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish_ids(&app, "billing.x", 4).await;
    let shop = token(json!({"author": "shop", "scope": "publish"}));
    app.request(
        "POST",
        "/publish",
        Some(&shop),
        Some(json!({"topic": "orders.created"})),
    )
    .await;
    wait_logged(&app, "", 10).await;
    let count = |q: &'static str| {
        let app = &app;
        async move {
            let mut since = None;
            poll_all(app, q, &mut since).await.len()
        }
    };
    assert_eq!(count("&topic=orders.created").await, 4);
    assert_eq!(count("&topic=orders.*").await, 4);
    assert_eq!(count("&topic=orders.%23").await, 6);
    assert_eq!(count("&topic=*.eu.*").await, 2);
    assert_eq!(count("&topic=%23").await, 10);
    assert_eq!(count("&author=shop").await, 1);
    let after = before_billing.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let q = format!("&after={}", after.replace('+', "%2B"));
    let mut since = None;
    let late = poll_all(&app, &q, &mut since).await;
    assert_eq!(late.len(), 5, "billing and the shop's");
    let q = format!("&before={}", after.replace('+', "%2B"));
    let mut since = None;
    assert_eq!(poll_all(&app, &q, &mut since).await.len(), 5);
    for bad in ["&topic=a..b", "&after=yesterday", "&since=x"] {
        let (status, _) = app.admin("GET", &format!("/messages?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, _) = app.request("GET", "/messages", Some(&shop), None).await;
    assert_eq!(status, 403, "admin only");
    worker.stop().await;
}

async fn explain_says_why_each_subscriber_matches_or_not(backend: Backend) {
    let (app, db) = TestApp::with(backend).await;
    let m = app
        .subscribe("ex.*", "http://127.0.0.1:9/m", Some("body.total > 100"))
        .await;
    let f = app
        .subscribe("ex.*", "http://127.0.0.1:9/f", Some("body.total > 1000"))
        .await;
    let x = app
        .subscribe(
            "ex.*",
            "http://127.0.0.1:9/x",
            Some("body.missing == 1 || body.other == 2"),
        )
        .await;
    let d = app.subscribe("ex.t", "http://127.0.0.1:9/d", None).await;
    app.admin(
        "PATCH",
        &format!("/subscribers/{}", d["id"]),
        Some(json!({"enabled": false})),
    )
    .await;
    app.subscribe("other.t", "http://127.0.0.1:9/o", None).await;
    db.sql("INSERT INTO subscribers (topic, target_url, filter_expression) VALUES ('ex.t', 'http://127.0.0.1:9/e', 'body.total >>> 1')");
    app.request("POST", "/refresh", Some(&app.admin.clone()), None)
        .await;
    let (status, body) = app
        .request(
            "POST",
            "/publish?dry_run=true",
            Some(&app.admin.clone()),
            Some(json!({"topic": "ex.t", "body": {"total": 500}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["matched"], json!([m["id"]]));
    let reasons: HashMap<i64, &Value> = body["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_i64().unwrap(), s))
        .collect();
    assert_eq!(
        reasons.len(),
        5,
        "every subscriber whose pattern matches, no other"
    );
    assert_eq!(reasons[&m["id"].as_i64().unwrap()]["reason"], "matched");
    assert_eq!(
        reasons[&f["id"].as_i64().unwrap()]["reason"],
        "filter_false"
    );
    let missing = reasons[&x["id"].as_i64().unwrap()];
    assert_eq!(missing["reason"], "filter_false");
    let mut vars: Vec<&str> = missing["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    vars.sort();
    assert_eq!(vars, ["body.missing", "body.other"]);
    assert_eq!(reasons[&d["id"].as_i64().unwrap()]["reason"], "disabled");
    assert!(reasons.values().any(|s| s["reason"] == "filter_error"));
    // Nothing enqueued, nothing logged.
    assert_eq!(app.stream_len().await, 0);
    let worker = InProcessWorker::start(app.settings.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut since = None;
    assert!(poll_all(&app, "", &mut since).await.is_empty());
    // Publish scope is enough; a topic outside the token's is not.
    let limited = token(json!({"author": "a", "scope": "publish", "topics": ["other.#"]}));
    let (status, _) = app
        .request(
            "POST",
            "/publish?dry_run=true",
            Some(&limited),
            Some(json!({"topic": "ex.t"})),
        )
        .await;
    assert_eq!(status, 403);
    worker.stop().await;
}

async fn backfill_applies_the_new_subscribers_filter(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let worker = InProcessWorker::start(app.settings.clone());
    let ids = publish_ids(&app, "bf.t", 5).await;
    publish_ids(&app, "bf.other", 2).await;
    wait_logged(&app, "", 7).await;
    let receiver = Receiver::start().await;
    let sub = app
        .subscribe("bf.*", &receiver.url("/bf"), Some("body.i >= 3"))
        .await;
    let (status, dry) = app
        .admin(
            "POST",
            "/messages/replay",
            Some(json!({"topic": "bf.t", "subscriber_id": sub["id"], "dry_run": true})),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (dry["messages"].as_i64(), dry["jobs"].as_i64()),
        (Some(5), Some(2))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.captured().is_empty(), "a dry run enqueues nothing");
    let (_, done) = app
        .admin(
            "POST",
            "/messages/replay",
            Some(json!({"topic": "bf.t", "subscriber_id": sub["id"]})),
        )
        .await;
    assert_eq!(
        (done["messages"].as_i64(), done["jobs"].as_i64()),
        (Some(5), Some(2))
    );
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    let delivered: HashSet<String> = got
        .iter()
        .map(|c| c.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(
        delivered,
        ids[3..].iter().cloned().collect::<HashSet<_>>(),
        "original ids"
    );
    // Without a subscriber: today's enabled subscribers, the whole range.
    let (_, all) = app
        .admin("POST", "/messages/replay", Some(json!({"dry_run": true})))
        .await;
    assert_eq!(
        (all["messages"].as_i64(), all["jobs"].as_i64()),
        (Some(7), Some(2))
    );
    let (status, _) = app
        .admin(
            "POST",
            "/messages/replay",
            Some(json!({"subscriber_id": 999999})),
        )
        .await;
    assert_eq!(status, 404);
    worker.stop().await;
}

async fn batch_is_all_or_nothing(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    app.subscribe("bt.*", "http://127.0.0.1:9/b", None).await;
    let admin = app.admin.clone();
    let (status, body) = app
        .request(
            "POST",
            "/publish/batch",
            Some(&admin),
            Some(json!({"messages": [
            {"topic": "bt.a", "body": {"n": 1}}, {"topic": "bt.b"}, {"topic": "none.c"}]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(
        items
            .iter()
            .map(|i| i["matched"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 1, 0]
    );
    assert_eq!(app.stream_len().await, 2);
    let bad = [
        (
            json!({"messages": [{"topic": "bt.a"}, {"topic": "bad..topic"}, {"topic": "bt.c"}]}),
            Some(1),
        ),
        (
            json!({"messages": [{"topic": "bt.a", "http_method": "BREW"}]}),
            Some(0),
        ),
        (json!({"messages": []}), None),
        (
            json!({"messages": vec![json!({"topic": "bt.a"}); 1001]}),
            None,
        ),
        (json!({"nope": 1}), None),
    ];
    for (payload, index) in bad {
        let (status, body) = app
            .request("POST", "/publish/batch", Some(&admin), Some(payload))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{body}"
        );
        assert_eq!(
            body["error"]["index"].as_u64(),
            index.map(|i: u64| i),
            "{body}"
        );
    }
    assert_eq!(
        app.stream_len().await,
        2,
        "nothing of a refused batch was enqueued"
    );
    let limited = token(json!({"author": "a", "scope": "publish", "topics": ["bt.#"]}));
    let (status, body) = app
        .request(
            "POST",
            "/publish/batch",
            Some(&limited),
            Some(json!({"messages": [{"topic": "bt.a"}, {"topic": "other.x"}]})),
        )
        .await;
    assert_eq!((status, body["error"]["index"].as_u64()), (403, Some(1)));
    let worker = InProcessWorker::start(app.settings.clone());
    let logged = wait_logged(&app, "", 3).await;
    assert_eq!(logged.len(), 3, "a batch is logged like single publishes");
    worker.stop().await;
}

async fn retention_deletes_old_rows(backend: Backend) {
    let db = TestDb::new(backend);
    let base = settings(&db, REDIS_URL);
    let app = TestApp::spawn(settings_with(
        &base,
        &db,
        &[("SWITCH_MESSAGE_RETENTION", "2s")],
    ))
    .await;
    let receiver = Receiver::start().await;
    app.subscribe("rt.t", &receiver.url("/r"), None).await;
    let worker = InProcessWorker::start(app.settings.clone());
    publish_ids(&app, "rt.t", 3).await;
    assert_eq!(wait_logged(&app, "", 3).await.len(), 3);
    let rows = app
        .wait_deliveries("", Duration::from_secs(5), |r| r.len() >= 3)
        .await;
    assert_eq!(rows.len(), 3);
    let started = Instant::now();
    loop {
        let mut since = None;
        let left = poll_all(&app, "", &mut since).await.len();
        let (_, attempts) = app.admin("GET", "/deliveries", None).await;
        let attempts = attempts["items"].as_array().unwrap().len();
        if left == 0 && attempts == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{left} messages, {attempts} attempts left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // New messages are kept until they are old.
    publish_ids(&app, "rt.t", 1).await;
    assert_eq!(wait_logged(&app, "", 1).await.len(), 1);
    worker.stop().await;
}

/// PostgreSQL cut while messages are being published and archived: every
/// message that got a 202 is in the log once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_loses_no_log_row() {
    let db = TestDb::new(Backend::Postgres);
    let app = TestApp::spawn(settings(&db, REDIS_URL)).await;
    let worker = InProcessWorker::start(app.settings.clone());
    let mut accepted = Vec::new();
    for i in 0..300 {
        if i == 100 {
            db.set_reachable(false);
        }
        if i == 200 {
            db.set_reachable(true);
        }
        let (status, body) = app
            .publish(json!({"topic": "out.t", "body": {"i": i}}))
            .await;
        match status {
            202 => accepted.push(body["message_id"].as_str().unwrap().to_string()),
            503 => {}
            other => panic!("{other}: {body}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(accepted.len() >= 150, "{} accepted", accepted.len());
    let logged = wait_logged(&app, "", accepted.len()).await;
    let logged: Vec<String> = logged
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(logged, accepted, "every accepted message, once, in order");
    worker.stop().await;
}

/// Redis lost its data and the log stream was recreated empty (last id 0-0):
/// what the database holds is still listed.
async fn a_recreated_empty_log_still_lists_what_is_stored(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let worker = InProcessWorker::start(app.settings.clone());
    publish_ids(&app, "re.t", 3).await;
    assert_eq!(wait_logged(&app, "", 3).await.len(), 3);
    worker.stop().await;
    let mut conn = app.queue.redis().get().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&app.queue.keys.log)
        .query_async(&mut conn)
        .await
        .unwrap();
    app.queue.ensure_log_group().await.unwrap();
    let mut since = None;
    assert_eq!(poll_all(&app, "", &mut since).await.len(), 3);
}
