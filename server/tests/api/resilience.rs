use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

fn count_ids(got: &[Captured]) -> HashMap<String, usize> {
    let mut ids: HashMap<String, usize> = HashMap::new();
    for c in got {
        *ids.entry(c.header("webhook-id").unwrap_or("").to_string())
            .or_default() += 1;
    }
    ids
}

/// Publishes `n` messages, each to one subscriber; returns their ids.
async fn publish_many(app: &TestApp, topic: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (status, body) = app.publish(json!({"topic": topic, "body": {"i": i}})).await;
        assert_eq!(status, 202);
        ids.push(body["message_id"].as_str().unwrap().to_string());
    }
    ids
}

/// Publishing while Redis restarts: during the outage publishes are spooled
/// to the database (202, `"spooled": true`), and every 202-acknowledged job
/// is in the queue afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_during_publishing() {
    let mut redis = PrivateRedis::start();
    let db = TestDb::new(Backend::Sqlite);
    let app = TestApp::spawn(settings(&db, &redis.url())).await;
    app.subscribe("rr.t", "http://127.0.0.1:9/x", None).await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut spooled = 0;
    for round in 0..3 {
        for _ in 0..50 {
            let (status, body) = app.publish(json!({"topic": "rr.t"})).await;
            match status {
                202 => accepted.push(body["message_id"].as_str().unwrap().to_string()),
                503 => {
                    refused += 1;
                    assert_eq!(body["error"]["code"], "unavailable");
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        if round == 0 {
            redis.down();
            for _ in 0..10 {
                let (status, body) = app.publish(json!({"topic": "rr.t"})).await;
                assert_eq!(status, 202, "Redis is down: spooled, {body}");
                assert_eq!(body["spooled"], true);
                accepted.push(body["message_id"].as_str().unwrap().to_string());
                spooled += 1;
            }
            let (status, health) = app.request("GET", "/health", None, None).await;
            assert_eq!((status, health["redis"].as_str()), (503, Some("down")));
            redis.up();
        }
    }
    assert_eq!(spooled, 10);
    assert!(
        accepted.len() >= 110,
        "publishes succeed again after the restart: {} ({refused} refused)",
        accepted.len()
    );
    // The spooled publishes move into the queue once Redis is back.
    let pool = switch_core::db::pool(&db.url, 2);
    let started = Instant::now();
    while switch_server::outbox::waiting(&pool).await.unwrap() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "outbox not drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored: std::collections::HashSet<String> = app
        .stream_jobs()
        .await
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    let missing: Vec<&String> = accepted.iter().filter(|m| !stored.contains(*m)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}

/// kill -9 of a worker halfway through 1,000 deliveries to a slow receiver:
/// a new worker delivers the rest; duplicates are counted and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_job() {
    let db = TestDb::new(Backend::Postgres);
    let app = TestApp::spawn(settings(&db, REDIS_URL)).await;
    let receiver = Receiver::start().await;
    receiver.delay_every_reply(Duration::from_millis(20));
    app.subscribe("k.t", &receiver.url("/k"), None).await;
    let ids = publish_many(&app, "k.t", 1000).await;
    let mut first = worker_process(&app.settings, &db);
    let started = Instant::now();
    while receiver.captured().len() < 400 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "first worker too slow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&first, libc::SIGKILL);
    first.wait().unwrap();
    let at_kill = receiver.captured().len();
    let mut second = worker_process(&app.settings, &db);
    let got = loop {
        let got = receiver.captured();
        let seen = count_ids(&got);
        if ids.iter().all(|m| seen.contains_key(m)) || started.elapsed() > Duration::from_secs(90) {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Jobs the killed worker held are taken over once idle; wait until the
    // stream is empty so redeliveries of those are counted too.
    while app.stream_len().await > 0 && started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = if got.len() < receiver.captured().len() {
        receiver.captured()
    } else {
        got
    };
    signal(&second, libc::SIGTERM);
    let status = second.wait().unwrap();
    assert_eq!(app.stream_len().await, 0, "every job finished");
    let seen = count_ids(&got);
    let missing = ids.iter().filter(|m| !seen.contains_key(*m)).count();
    let twice = seen.values().filter(|n| **n > 1).count();
    eprintln!("kill -9 after {at_kill} deliveries: {missing} missing, {twice} delivered twice, {:.1}s in all", started.elapsed().as_secs_f64());
    assert_eq!(missing, 0);
    assert!(status.success(), "SIGTERM exits 0");
}

/// Redis restarted under running workers: they go on by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_resume_after_redis_restart() {
    let mut redis = PrivateRedis::start();
    let db = TestDb::new(Backend::Sqlite);
    let app = TestApp::spawn(settings(&db, &redis.url())).await;
    let receiver = Receiver::start().await;
    app.subscribe("w.t", &receiver.url("/w"), None).await;
    let worker = InProcessWorker::start(app.settings.clone());
    publish_many(&app, "w.t", 20).await;
    assert_eq!(
        receiver.wait_for(20, Duration::from_secs(20)).await.len(),
        20
    );
    redis.down();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.up();
    // Publishing may need a moment while connections come back.
    let mut ids = Vec::new();
    let started = Instant::now();
    while ids.len() < 20 {
        let (status, body) = app.publish(json!({"topic": "w.t"})).await;
        if status == 202 {
            ids.push(body["message_id"].as_str().unwrap().to_string());
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let got = receiver.wait_for(40, Duration::from_secs(30)).await;
    let seen = count_ids(&got);
    assert!(
        ids.iter().all(|m| seen.contains_key(m)),
        "the same worker delivered after the restart"
    );
    assert!(!worker.handle.is_finished());
    worker.stop().await;
}

/// Two workers drain 10,000 jobs together: every job delivered; duplicates reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_share_ten_thousand_jobs() {
    let db = TestDb::new(Backend::Postgres);
    let app = TestApp::spawn(settings(&db, REDIS_URL)).await;
    let receiver = Receiver::start().await;
    // 100 subscribers x 100 messages = 10,000 jobs.
    let values: Vec<String> = (0..100)
        .map(|i| format!("('two.w', '{}')", receiver.url(&format!("/s{i}"))))
        .collect();
    db.sql(&format!(
        "INSERT INTO subscribers (topic, target_url) VALUES {};",
        values.join(",")
    ));
    app.request("POST", "/refresh", Some(&token(json!({}))), None)
        .await;
    let ids = publish_many(&app, "two.w", 100).await;
    assert_eq!(app.stream_len().await, 10_000);
    let mut a = worker_process(&app.settings, &db);
    let mut b = worker_process(&app.settings, &db);
    let started = Instant::now();
    let got = receiver.wait_for(10_000, Duration::from_secs(120)).await;
    let secs = started.elapsed().as_secs_f64();
    signal(&a, libc::SIGTERM);
    signal(&b, libc::SIGTERM);
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let mut per_job: HashMap<(String, String), usize> = HashMap::new();
    for c in &got {
        *per_job
            .entry((c.header("webhook-id").unwrap().to_string(), c.path.clone()))
            .or_default() += 1;
    }
    let twice = per_job.values().filter(|n| **n > 1).count();
    eprintln!(
        "two workers: {} deliveries in {secs:.1}s, {} distinct jobs, {twice} duplicates",
        got.len(),
        per_job.len()
    );
    assert_eq!(per_job.len(), 10_000, "every job delivered");
    assert!(ids.iter().all(|m| per_job.keys().any(|(id, _)| id == m)));
    assert_eq!(app.stream_len().await, 0);
}

/// SIGTERM: in-flight deliveries finish, attempts are flushed, exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_in_flight_work() {
    let db = TestDb::new(Backend::Sqlite);
    let app = TestApp::spawn(settings(&db, REDIS_URL)).await;
    let receiver = Receiver::start().await;
    receiver.delay_every_reply(Duration::from_millis(1500));
    app.subscribe("st.t", &receiver.url("/st"), None).await;
    publish_many(&app, "st.t", 5).await;
    let mut w = worker_process(&app.settings, &db);
    let started = Instant::now();
    // Wait until the worker holds the jobs (they leave the unread part of the stream).
    loop {
        let mut c = app.queue.redis().get().await.unwrap();
        let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg(&app.queue.partition(0).stream)
            .arg("workers")
            .query_async(&mut c)
            .await
            .unwrap_or((0, redis::Value::Nil, redis::Value::Nil, redis::Value::Nil));
        if pending.0 == 5 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&w, libc::SIGTERM);
    let status = w.wait().unwrap();
    assert!(status.success());
    assert_eq!(
        receiver.captured().len(),
        5,
        "in-flight deliveries finished before exit"
    );
    let rows = app
        .wait_deliveries("", Duration::from_secs(2), |i| i.len() >= 5)
        .await;
    assert_eq!(rows.len(), 5, "attempts flushed at shutdown");
    assert_eq!(app.stream_len().await, 0, "and acked");
}

/// The database going away turns publishes into 503s within seconds (no
/// subscriber gets a message matched against a list that cannot be checked),
/// and they are accepted again once it is back. PostgreSQL only: an SQLite
/// file cannot be made unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_are_refused_while_the_database_is_away() {
    let (app, db) = TestApp::with(Backend::Postgres).await;
    app.subscribe("dbdown.t", "http://127.0.0.1:9/x", None)
        .await;
    let (status, _) = app.publish(json!({"topic": "dbdown.t"})).await;
    assert_eq!(status, 202);
    db.set_reachable(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let (status, body) = app.publish(json!({"topic": "dbdown.t"})).await;
        if status == 503 {
            break body;
        }
        assert_eq!(status, 202, "{body}");
        assert!(
            Instant::now() < deadline,
            "still accepted 10 s into the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused["error"]["code"], "unavailable");
    let queued = app.stream_len().await;
    let (status, _) = app.publish(json!({"topic": "dbdown.t"})).await;
    assert_eq!(status, 503);
    assert_eq!(
        app.stream_len().await,
        queued,
        "a refused publish queues nothing"
    );
    db.set_reachable(true);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = app.publish(json!({"topic": "dbdown.t"})).await;
        if status == 202 {
            assert_eq!(body["matched"], 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after the database came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
