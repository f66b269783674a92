//! Partitions, ordering keys, the outbox during a Redis outage, and a real
//! Redis Cluster (six `redis-server` processes started by the test).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    ordering_keys_keep_publish_order,
    partitions_deliver_every_job_once_and_free_each_message,
    a_redis_outage_spools_publishes_and_loses_none,
    jobs_left_by_another_partition_count_are_delivered
);

/// Jobs queued with one partition are delivered by a worker started with
/// four (the count changed while jobs waited).
async fn jobs_left_by_another_partition_count_are_delivered(backend: Backend) {
    let db = TestDb::new(backend);
    let s1 = settings(&db, REDIS_URL);
    let app = TestApp::spawn(s1.clone()).await;
    let receiver = Receiver::start().await;
    app.subscribe("left.t", &receiver.url("/left"), None).await;
    for n in 0..50 {
        let (status, _) = app
            .publish(json!({"topic": "left.t", "body": {"n": n}}))
            .await;
        assert_eq!(status, 202);
    }
    let s4 = settings_with(&s1, &db, &[("SWITCH_QUEUE_PARTITIONS", "4")]);
    let worker = InProcessWorker::start(s4);
    let got = receiver.wait_for(50, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 50, "every job of the old partition delivered");
    worker.stop().await;
}

/// One delivery as a receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    key: Option<String>,
    seq: i64,
    attempt: u32,
    ok: bool,
    at: Instant,
}

/// A receiver that fails the first attempt of every message whose `seq` is a
/// multiple of 7, takes `delay` per request, and notes how many requests of
/// one ordering key it held at once.
#[derive(Clone)]
struct OrderReceiver {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    most_at_once: Arc<AtomicUsize>,
}

impl OrderReceiver {
    fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let r = OrderReceiver {
            base,
            seen: Arc::default(),
            in_flight: Arc::default(),
            most_at_once: Arc::default(),
        };
        let rr = r.clone();
        let server = HttpServer::new(move || {
            let r = rr.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let r = r.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let key = v["key"].as_str().map(str::to_string);
                    let seq = v["seq"].as_i64().unwrap_or(-1);
                    let attempt: u32 = req
                        .headers()
                        .get("x-switch-attempt")
                        .and_then(|h| h.to_str().ok())
                        .and_then(|h| h.parse().ok())
                        .unwrap_or(0);
                    if let Some(k) = &key {
                        let mut f = r.in_flight.lock().unwrap();
                        let n = f.entry(k.clone()).or_default();
                        *n += 1;
                        r.most_at_once.fetch_max(*n, Ordering::SeqCst);
                    }
                    tokio::time::sleep(delay).await;
                    let ok = !(seq % 7 == 0 && attempt == 1);
                    if let Some(k) = &key {
                        *r.in_flight.lock().unwrap().get_mut(k).unwrap() -= 1;
                    }
                    r.seen.lock().unwrap().push(Seen {
                        id: req
                            .headers()
                            .get("webhook-id")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string(),
                        key,
                        seq,
                        attempt,
                        ok,
                        at: Instant::now(),
                    });
                    if ok {
                        HttpResponse::Ok().finish()
                    } else {
                        HttpResponse::InternalServerError().finish()
                    }
                }
            }))
        })
        .workers(4)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        r
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits for `n` successful deliveries with (`keyed`) or without a key.
    async fn wait_ok(&self, keyed: bool, n: usize, within: Duration) -> Vec<Seen> {
        let started = Instant::now();
        loop {
            let s = self.seen();
            if s.iter()
                .filter(|x| x.ok && x.key.is_some() == keyed)
                .count()
                >= n
                || started.elapsed() > within
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// 20 keys × 50 messages to one subscriber that fails the first attempt of
/// some: per key, successful deliveries arrive in publish order, one at a
/// time; unkeyed messages to the same subscriber finish long before.
async fn ordering_keys_keep_publish_order(backend: Backend) {
    let db = TestDb::new(backend);
    let base = settings(&db, REDIS_URL);
    let s = settings_with(
        &base,
        &db,
        &[
            ("SWITCH_QUEUE_PARTITIONS", "4"),
            ("SWITCH_RETRY_SCHEDULE", "300ms,300ms,300ms"),
            ("SWITCH_WORKER_CONCURRENCY", "32"),
            ("SWITCH_SUBSCRIBER_CONCURRENCY", "32"),
            // The failed first attempts must not open the circuit.
            ("SWITCH_CIRCUIT_FAILURES", "1000"),
        ],
    );
    let app = TestApp::spawn(s.clone()).await;
    let receiver = OrderReceiver::start(Duration::from_millis(2));
    // One subscriber for keyed and unkeyed messages.
    app.subscribe("ord.*", &format!("{}/o", receiver.base), None)
        .await;
    let worker = InProcessWorker::start(s.clone());
    // Between rounds of keyed messages, unkeyed ones, whose latency shows
    // whether the keyed lanes (waiting on retries) hold them up.
    let mut plain_sent: HashMap<i64, Instant> = HashMap::new();
    for seq in 0..50 {
        for k in 0..20 {
            let key = format!("k{k}");
            let (status, _) = app
                .publish(json!({"topic": "ord.keyed", "ordering_key": key,
                                "body": {"key": key, "seq": seq}}))
                .await;
            assert_eq!(status, 202);
        }
        for p in 0..4 {
            let n = (seq * 4 + p) * 7 + 1;
            let (status, _) = app
                .publish(json!({"topic": "ord.plain", "body": {"seq": n}}))
                .await;
            assert_eq!(status, 202);
            plain_sent.insert(n, Instant::now());
        }
    }
    let plain = receiver.wait_ok(false, 200, Duration::from_secs(30)).await;
    let mut latencies: Vec<Duration> = plain
        .iter()
        .filter(|x| x.key.is_none() && x.ok)
        .map(|x| x.at - plain_sent[&x.seq])
        .collect();
    assert_eq!(latencies.len(), 200, "every unkeyed message delivered");
    latencies.sort();
    let p50 = latencies[100];
    eprintln!("unkeyed latency p50 {p50:?}, max {:?}", latencies[199]);
    assert!(
        p50 < Duration::from_millis(300),
        "unkeyed messages wait less than one retry delay (p50 {p50:?})"
    );
    let seen = receiver.wait_ok(true, 1000, Duration::from_secs(60)).await;
    let keyed_ok: Vec<&Seen> = seen.iter().filter(|x| x.key.is_some() && x.ok).collect();
    assert_eq!(keyed_ok.len(), 1000, "every keyed message delivered");
    let mut per_key: HashMap<&str, Vec<i64>> = HashMap::new();
    for x in &keyed_ok {
        per_key
            .entry(x.key.as_deref().unwrap())
            .or_default()
            .push(x.seq);
    }
    assert_eq!(per_key.len(), 20);
    for (k, seqs) in &per_key {
        assert_eq!(
            seqs,
            &(0..50).collect::<Vec<i64>>(),
            "key {k}: deliveries out of publish order"
        );
    }
    assert!(
        seen.iter()
            .any(|x| x.key.is_some() && !x.ok && x.attempt == 1),
        "some first attempts failed"
    );
    assert_eq!(
        receiver.most_at_once.load(Ordering::SeqCst),
        1,
        "one delivery at a time per key"
    );
    let ids: std::collections::HashSet<&str> = keyed_ok.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(ids.len(), 1000, "no message delivered twice");
    worker.stop().await;
}

/// Stored messages (`{…}:m:*`) left in Redis by a namespace.
async fn stored_messages(app: &TestApp) -> usize {
    let mut conn = app.queue.redis().get().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}*}}:m:*", app.settings.namespace))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.len()
}

/// 4 partitions on one Redis, two workers: 2,000 jobs spread over every
/// partition, each delivered once, and each message freed when its last job ends.
async fn partitions_deliver_every_job_once_and_free_each_message(backend: Backend) {
    let db = TestDb::new(backend);
    let base = settings(&db, REDIS_URL);
    let s = settings_with(&base, &db, &[("SWITCH_QUEUE_PARTITIONS", "4")]);
    let app = TestApp::spawn(s.clone()).await;
    let receiver = Receiver::start().await;
    for i in 0..5 {
        app.subscribe("part.t", &receiver.url(&format!("/s{i}")), None)
            .await;
    }
    for n in 0..400 {
        let (status, _) = app
            .publish(json!({"topic": "part.t", "body": {"n": n}}))
            .await;
        assert_eq!(status, 202);
    }
    let mut conn = app.queue.redis().get().await.unwrap();
    let mut lens = Vec::new();
    for p in app.queue.partitions() {
        let n: u64 = redis::cmd("XLEN")
            .arg(&p.stream)
            .query_async(&mut conn)
            .await
            .unwrap();
        lens.push(n);
    }
    assert_eq!(lens.iter().sum::<u64>(), 2000);
    assert!(
        lens.iter().filter(|n| **n > 0).count() >= 2,
        "jobs spread: {lens:?}"
    );
    assert!(
        stored_messages(&app).await >= 400,
        "each message stored once per partition"
    );
    let w1 = InProcessWorker::start(s.clone());
    let w2 = InProcessWorker::start(own_metrics_addr(&s));
    let got = receiver.wait_for(2000, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = receiver.captured();
    assert_eq!(
        got.len().max(got_all.len()),
        2000,
        "each job delivered once"
    );
    let mut pairs: Vec<(String, String)> = got_all
        .iter()
        .map(|c| (c.path.clone(), c.header("webhook-id").unwrap().to_string()))
        .collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), 2000, "no duplicates");
    let started = Instant::now();
    while stored_messages(&app).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stored messages not freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w1.stop().await;
    w2.stop().await;
}

/// Redis down for 5 s while publishing at 200/s: every publish is 202
/// (spooled or not), and every message is delivered exactly once.
async fn a_redis_outage_spools_publishes_and_loses_none(backend: Backend) {
    let db = TestDb::new(backend);
    let mut redis = PrivateRedis::start();
    let s = settings(&db, &redis.url());
    let app = TestApp::spawn(s.clone()).await;
    let receiver = Receiver::start().await;
    app.subscribe("spill.t", &receiver.url("/spill"), None)
        .await;
    let worker = InProcessWorker::start(s.clone());
    let mut ids = Vec::new();
    let mut spooled = 0;
    let started = Instant::now();
    let mut redis_down_at = None;
    let mut n = 0u64;
    // 200/s for 8 s: Redis goes down at 1.5 s and is back 5 s later.
    while started.elapsed() < Duration::from_secs(8) {
        let due = started + Duration::from_millis(n * 5);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        if redis_down_at.is_none() && started.elapsed() > Duration::from_millis(1500) {
            redis.down();
            redis_down_at = Some(Instant::now());
        }
        if let Some(at) = redis_down_at {
            if at.elapsed() > Duration::from_secs(5) && n < u64::MAX / 2 {
                redis.up();
                redis_down_at = Some(Instant::now() + Duration::from_secs(3600));
            }
        }
        let (status, body) = app
            .publish(json!({"topic": "spill.t", "body": {"n": n}}))
            .await;
        assert_eq!(status, 202, "publish {n}: {body}");
        if body["spooled"] == true {
            spooled += 1;
        }
        ids.push(body["message_id"].as_str().unwrap().to_string());
        n += 1;
    }
    eprintln!("published {} messages, {spooled} spooled", ids.len());
    assert!(
        spooled > 100,
        "publishes during the outage were spooled ({spooled})"
    );
    let got = receiver.wait_for(ids.len(), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = receiver.captured().len().max(got.len());
    let mut delivered: HashMap<String, usize> = HashMap::new();
    for c in receiver.captured() {
        *delivered
            .entry(c.header("webhook-id").unwrap().to_string())
            .or_default() += 1;
    }
    let missing = ids.iter().filter(|id| !delivered.contains_key(*id)).count();
    let twice = delivered.values().filter(|n| **n > 1).count();
    assert_eq!(
        (missing, twice),
        (0, 0),
        "{got} deliveries for {} messages",
        ids.len()
    );
    assert_eq!(
        switch_server::outbox::waiting(&db_pool(&db)).await.unwrap(),
        0,
        "the outbox is empty"
    );
    worker.stop().await;
}

fn db_pool(db: &TestDb) -> switch_core::db::DbPool {
    switch_core::db::pool(&db.url, 2)
}

/// Redis and the database both unreachable: 503. (An embedded SQLite file
/// cannot become unreachable, so this one runs on PostgreSQL.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_stores_down_is_503() {
    let db = TestDb::new(Backend::Postgres);
    let mut redis = PrivateRedis::start();
    let app = TestApp::spawn(settings(&db, &redis.url())).await;
    redis.down();
    db.set_reachable(false);
    let started = Instant::now();
    loop {
        let (status, body) = app.publish(json!({"topic": "down.t", "body": {}})).await;
        if status == 503 {
            assert_eq!(body["error"]["code"], "unavailable");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.set_reachable(true);
}

/// Publishes `n` messages to `topic` from several tasks, each retried under
/// one idempotency key until answered; returns the ids answered 202 (or 200).
async fn publish_concurrently(app: &TestApp, topic: &str, n: usize) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, base, token, next, topic) = (
            app.http.clone(),
            app.base.clone(),
            app.admin.clone(),
            next.clone(),
            topic.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return ids;
                }
                let key = format!("k{i}");
                // Retried with one idempotency key until answered 202.
                for _ in 0..100 {
                    let r = http
                        .post(format!("{base}/publish"))
                        .bearer_auth(&token)
                        .header("Idempotency-Key", &key)
                        .json(&json!({"topic": topic, "body": {"i": i}}))
                        .send()
                        .await;
                    if let Ok(r) = r {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        if status == 202 || status == 200 {
                            ids.push(body["message_id"].as_str().unwrap().to_string());
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    ids
}

/// Deliveries per message id.
fn per_message(receiver: &Receiver) -> HashMap<(String, String), usize> {
    let mut m = HashMap::new();
    for c in receiver.captured() {
        *m.entry((c.path.clone(), c.header("webhook-id").unwrap().to_string()))
            .or_default() += 1;
    }
    m
}

/// 10,000 jobs (100 messages to 100 subscribers) over 6 partitions with 2
/// workers on a 3-master cluster: none lost, none twice, and every shard
/// takes a share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_delivers_10k_jobs_over_6_partitions() {
    let cluster = RedisCluster::start();
    let db = TestDb::new(Backend::Sqlite);
    let base = settings(&db, &cluster.url());
    let s = settings_with(
        &base,
        &db,
        &[
            ("SWITCH_QUEUE_PARTITIONS", "6"),
            ("SWITCH_WORKER_CONCURRENCY", "64"),
        ],
    );
    let app = TestApp::spawn(s.clone()).await;
    let receiver = Receiver::start().await;
    for i in 0..100 {
        app.subscribe("cl.t", &receiver.url(&format!("/s{i}")), None)
            .await;
    }
    let masters = cluster.masters();
    let before: Vec<u64> = masters.iter().map(|m| cluster.calls(*m, "xadd")).collect();
    let w1 = InProcessWorker::start(s.clone());
    let w2 = InProcessWorker::start(own_metrics_addr(&s));
    let ids = publish_concurrently(&app, "cl.t", 100).await;
    assert_eq!(ids.len(), 100);
    receiver.wait_for(10_000, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = per_message(&receiver);
    let total: usize = got.values().sum();
    assert_eq!(got.len(), 10_000, "every job delivered");
    assert_eq!(total, 10_000, "none twice");
    let xadds: Vec<u64> = masters
        .iter()
        .zip(&before)
        .map(|(m, b)| cluster.calls(*m, "xadd") - b)
        .collect();
    let sum: u64 = xadds.iter().sum();
    let shares: Vec<String> = xadds
        .iter()
        .map(|x| format!("{:.0}%", *x as f64 * 100.0 / sum as f64))
        .collect();
    eprintln!("XADDs per shard (jobs, and the log on one): {xadds:?} = {shares:?}");
    for x in &xadds {
        assert!(
            *x as f64 > sum as f64 * 0.15,
            "every shard takes a share: {xadds:?}"
        );
    }
    w1.stop().await;
    w2.stop().await;
}

/// A master killed mid-run, its replica promoted: with
/// SWITCH_REDIS_WAIT_REPLICAS=1 no publish answered 202 is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_failover_loses_no_accepted_publish() {
    let mut cluster = RedisCluster::start();
    let db = TestDb::new(Backend::Sqlite);
    let base = settings(&db, &cluster.url());
    let s = settings_with(
        &base,
        &db,
        &[
            ("SWITCH_QUEUE_PARTITIONS", "6"),
            ("SWITCH_REDIS_WAIT_REPLICAS", "1"),
        ],
    );
    let app = TestApp::spawn(s.clone()).await;
    let receiver = Receiver::start().await;
    for i in 0..2 {
        app.subscribe("fo.t", &receiver.url(&format!("/s{i}")), None)
            .await;
    }
    let w1 = InProcessWorker::start(s.clone());
    let w2 = InProcessWorker::start(own_metrics_addr(&s));
    let victim = cluster.masters()[1];
    let publishing = {
        let app = app.clone();
        tokio::spawn(async move { publish_concurrently(&app, "fo.t", 1500).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.kill(victim);
    // The replica takes over after the node timeout; then the old master
    // comes back as its replica, so writes can be confirmed again.
    let started = Instant::now();
    while cluster.masters().len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "no failover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("failover after {:?}", started.elapsed());
    cluster.restart(victim);
    let ids = publishing.await.unwrap();
    assert_eq!(ids.len(), 1500, "every publish answered 202 in the end");
    // Jobs a worker held when their shard failed over come back once idle
    // long enough to be taken over.
    let started = Instant::now();
    let (got, lost) = loop {
        let got = per_message(&receiver);
        let lost = ids
            .iter()
            .flat_map(|id| (0..2).map(move |i| (format!("/s{i}"), id.clone())))
            .filter(|k| !got.contains_key(k))
            .count();
        if lost == 0 || started.elapsed() > Duration::from_secs(90) {
            break (got, lost);
        }
        if std::env::var("SCALE_DEBUG").is_ok() {
            eprintln!("{:?}: {lost} missing", started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "all delivered {:?} after the publishes ended",
        started.elapsed()
    );
    let dup = got.values().filter(|n| **n > 1).count();
    eprintln!(
        "failover run: {} deliveries, {dup} delivered more than once",
        got.len()
    );
    assert_eq!(lost, 0, "no accepted publish lost");
    w1.stop().await;
    w2.stop().await;
}
