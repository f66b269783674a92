use std::sync::Arc;
use std::time::{Duration, Instant};

use switch_core::job::Job;
use switch_core::queue::{Queue, RedisHandle};

use crate::helpers::*;

fn test_queue(redis_url: &str) -> Queue {
    let ns = format!("q{}", &uuid::Uuid::now_v7().simple().to_string()[16..]);
    Queue::new(
        &ns,
        RedisHandle::new(redis_url, Duration::from_secs(30)).unwrap(),
    )
}

async fn drop_keys(q: &Queue) {
    let mut c = q.redis().get().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&q.partition(0).stream)
        .arg(&q.partition(0).delayed)
        .query_async(&mut c)
        .await
        .unwrap();
}

/// Fills a backlog, then drains it, timing each tenth of the way. Returns
/// (enqueue ms per tenth, drain ms per tenth).
async fn backlog(q: &Queue, total: usize) -> (Vec<u128>, Vec<u128>) {
    q.ensure_group().await.unwrap();
    let msg: Arc<str> = Arc::from(r#"{"id":"msg_backlog","topic":"b","body":{"n":1}}"#);
    let tenth = total / 10;
    let mut enqueue = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        for chunk in 0..tenth / 1000 {
            let jobs: Vec<Job> = (0..1000)
                .map(|i| Job::new((chunk * 1000 + i) as i64, 1, msg.clone()))
                .collect();
            q.push(&jobs).await.unwrap();
        }
        enqueue.push(started.elapsed().as_millis());
    }
    assert_eq!(q.depth().await.unwrap().0 as usize, total);
    let mut drain = Vec::new();
    let mut seen = 0usize;
    for _ in 0..10 {
        let started = Instant::now();
        let mut n = 0;
        while n < tenth {
            let entries = q
                .read(0, "drainer", 1000, Some(Duration::from_millis(100)))
                .await
                .unwrap()
                .0;
            assert!(!entries.is_empty(), "backlog ran dry early at {seen}");
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            assert!(entries.iter().all(|e| e.job.is_ok()));
            q.ack(0, &ids).await.unwrap();
            n += entries.len();
            seen += entries.len();
        }
        drain.push(started.elapsed().as_millis());
    }
    assert_eq!(seen, total);
    assert_eq!(q.depth().await.unwrap().0, 0, "every job acked and removed");
    (enqueue, drain)
}

/// 100k jobs in CI: no error, every job comes back exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_of_100k_fills_and_drains() {
    let q = test_queue(REDIS_URL);
    let (enqueue, drain) = backlog(&q, 100_000).await;
    eprintln!("100k backlog: enqueue ms per 10k {enqueue:?}; drain ms per 10k {drain:?}");
    drop_keys(&q).await;
}

/// The million, run by hand or by `make bench`: `cargo test --release -- --ignored backlog_of_a_million`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn backlog_of_a_million() {
    let q = test_queue(REDIS_URL);
    let (enqueue, drain) = backlog(&q, 1_000_000).await;
    eprintln!("1M backlog: enqueue ms per 100k {enqueue:?}; drain ms per 100k {drain:?}");
    drop_keys(&q).await;
}

/// Retries wait in the sorted set and come back when due, in bounded chunks.
#[tokio::test]
async fn delayed_retries_come_back_when_due() {
    let q = test_queue(REDIS_URL);
    q.ensure_group().await.unwrap();
    let msg: Arc<str> = Arc::from(r#"{"id":"msg_m","topic":"t"}"#);
    q.push(&[Job::new(1, 1, msg.clone())]).await.unwrap();
    let announced = q.bump_subscribers_version().await.unwrap();
    let (e, version) = q
        .read(0, "c1", 10, Some(Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(version, announced, "the read brings the announced version");
    let now = chrono::Utc::now().timestamp_millis();
    q.retry_later(0, &e[0].id, &Job::new(1, 2, msg.clone()), now + 300)
        .await
        .unwrap();
    assert_eq!(q.depth().await.unwrap(), (0, 1));
    let not_yet = q.promote_due(0, now, 10).await.unwrap();
    assert_eq!(not_yet.moved, 0, "not due yet");
    assert_eq!(not_yet.next_due_ms, Some(now + 300), "tells when it is due");
    for i in 0..1200 {
        let mut c = q.redis().get().await.unwrap();
        let _: () = redis::cmd("ZADD")
            .arg(&q.partition(0).delayed)
            .arg(now - 1)
            .arg(format!("v1|{i}|1||{{}}"))
            .query_async(&mut c)
            .await
            .unwrap();
    }
    assert_eq!(
        q.promote_due(0, now + 1000, 500).await.unwrap().moved,
        500,
        "moves at most one chunk"
    );
    assert_eq!(q.promote_due(0, now + 1000, 500).await.unwrap().moved, 500);
    let last = q.promote_due(0, now + 1000, 500).await.unwrap();
    assert_eq!((last.moved, last.next_due_ms), (201, None));
    let e = q
        .read(0, "c1", 2000, Some(Duration::from_millis(100)))
        .await
        .unwrap()
        .0;
    assert_eq!(e.len(), 1201);
    assert!(e.iter().any(|x| x
        .job
        .as_ref()
        .is_ok_and(|j| j.attempt == 2 && j.subscriber_id == 1)));
    drop_keys(&q).await;
}

/// A job read by a worker that dies is claimed by another once idle long enough.
#[tokio::test]
async fn abandoned_jobs_are_claimed() {
    let q = test_queue(REDIS_URL);
    q.ensure_group().await.unwrap();
    q.push(&[Job::new(7, 1, Arc::from(r#"{"id":"msg_7"}"#))])
        .await
        .unwrap();
    let e = q
        .read(0, "dead-worker", 10, Some(Duration::from_millis(100)))
        .await
        .unwrap()
        .0;
    assert_eq!(e.len(), 1);
    let (_, none) = q.claim_abandoned(0, "rescuer", "0-0", 10).await.unwrap();
    assert!(none.is_empty(), "not idle long enough yet");
    // Age the pending entry past the claim threshold.
    let mut c = q.redis().get().await.unwrap();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&q.partition(0).stream)
        .arg(switch_core::queue::GROUP)
        .arg("dead-worker")
        .arg(0)
        .arg(&e[0].id)
        .arg("IDLE")
        .arg(60_000)
        .arg("JUSTID")
        .query_async(&mut c)
        .await
        .unwrap();
    let (_, claimed) = q.claim_abandoned(0, "rescuer", "0-0", 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job.as_ref().unwrap().subscriber_id, 7);
    drop_keys(&q).await;
}
