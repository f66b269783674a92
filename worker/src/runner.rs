//! The worker process: a reader moves jobs from the Redis stream into the apalis
//! worker runtime ([`crate::runtime`]), which delivers each with bounded
//! concurrency, then acks, schedules a retry, or dead-letters — never drops.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switch_core::queue::{Entry, Queue, RedisHandle};
use switch_core::subscribers::Cache;
use switch_core::{db, Settings};
use tokio::sync::{mpsc, watch, Notify};

use crate::acker::Acker;
use crate::metrics::Metrics;
use crate::process::Processor;
use crate::recorder::Recorder;

/// Time to finish in-flight deliveries after SIGTERM.
pub const GRACE: Duration = Duration::from_secs(30);
const READ_BLOCK: Duration = Duration::from_millis(1000);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(3);
const CLAIM_EVERY: Duration = Duration::from_secs(5);
pub const PROMOTE_EVERY: Duration = Duration::from_millis(200);
const PROMOTE_CHUNK: usize = 500;

/// Ids of jobs this process is working on.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<String>>>);

impl InFlight {
    fn insert(&self, id: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string())
    }
    pub fn remove(&self, id: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
    fn ids(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

pub fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    )
}

pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let pool = db::pool(&settings.database_url, 8);
    let redis = RedisHandle::new(&settings.redis_url, Duration::from_secs(5))?;
    let queue = Queue::new(&settings.namespace, redis.clone());
    // Blocking reads get a connection of their own, so they never delay acks.
    let reader = Queue::new(
        &settings.namespace,
        redis.separate(READ_BLOCK + Duration::from_secs(5)),
    );
    let cache = Arc::new(Cache::new(pool.clone()));
    if let Err(e) = cache.reload_async().await {
        tracing::warn!(error = %e, "subscribers could not be loaded yet");
    }
    let refresh = cache.spawn_refresh(settings.refresh_interval, queue.clone(), |_| {});
    let metrics = Metrics::new();
    crate::metrics::serve(
        settings.worker_metrics_addr.clone(),
        metrics.clone(),
        queue.clone(),
    );
    let (recorder, writer) = Recorder::start(pool.clone(), queue.clone());
    let consumer = consumer_name();
    let in_flight = InFlight::default();
    let processor = Arc::new(Processor {
        settings: settings.clone(),
        queue: queue.clone(),
        cache,
        pool,
        client: crate::send::client(settings.worker_concurrency),
        recorder,
        metrics,
        in_flight: in_flight.clone(),
        acker: Acker::start(queue.clone()),
        retry_scheduled: Arc::new(Notify::new()),
    });
    tracing::info!(consumer = %consumer, concurrency = settings.worker_concurrency, namespace = %settings.namespace, "switch-worker started");

    let background = [
        tokio::spawn(keep_alive(
            queue.clone(),
            consumer.clone(),
            in_flight.clone(),
        )),
        tokio::spawn(promote(queue.clone(), processor.retry_scheduled.clone())),
    ];
    let (stop_tx, stop_rx) = watch::channel(false);
    let (tx, rx) = mpsc::channel(handoff_capacity(settings.worker_concurrency));
    let fetcher = tokio::spawn(fetch(
        reader,
        processor.cache.clone(),
        consumer.clone(),
        tx,
        in_flight.clone(),
        stop_rx,
    ));
    let monitor = crate::runtime::monitor(
        &consumer,
        rx,
        processor.clone(),
        settings.worker_concurrency,
        GRACE,
    );
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new jobs; finishing those in flight");
        let _ = stop_tx.send(true);
        Ok(())
    };
    if let Err(e) = monitor.run_with_signal(signal).await {
        tracing::warn!(error = %e, "worker runtime stopped with an error");
    }
    let left = in_flight.ids().len();
    if left > 0 {
        tracing::warn!(
            left,
            "jobs not finished here stay pending and are taken over by another worker"
        );
    } else {
        tracing::info!("in-flight deliveries finished");
    }
    fetcher.abort();
    for task in background.iter().chain(std::iter::once(&refresh)) {
        task.abort();
    }
    drop(processor);
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    Ok(())
}

/// Entries read ahead of the free delivery slots: enough to keep every slot
/// busy between reads, few enough that a stopping worker strands little.
fn handoff_capacity(concurrency: usize) -> usize {
    (concurrency / 2).max(1)
}

/// Reads jobs from the stream into the worker runtime: new ones, and every few
/// seconds those that dead workers left behind. Before handing jobs over it
/// makes sure the subscriber snapshot includes every change announced so far. Reads only as many as the
/// hand-off has room for, so no job waits here while another worker idles.
async fn fetch(
    reader: Queue,
    cache: Arc<Cache>,
    consumer: String,
    tx: mpsc::Sender<Entry>,
    in_flight: InFlight,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut group_ready = false;
    let mut claim_cursor = "0-0".to_string();
    let mut last_claim = tokio::time::Instant::now() - CLAIM_EVERY;
    loop {
        if *stop.borrow() {
            return;
        }
        if !group_ready {
            match reader.ensure_group().await {
                Ok(()) => group_ready = true,
                Err(e) => {
                    tracing::warn!(error = %e, "Redis unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        // Wait for room for at least one job, then read as many as there is room for.
        let first = tokio::select! {
            p = tx.reserve() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let room = tx.capacity() + 1;
        let mut entries = Vec::new();
        // The subscribers version read after the entries at hand.
        let mut version = None;
        if last_claim.elapsed() >= CLAIM_EVERY {
            last_claim = tokio::time::Instant::now();
            match reader.claim_abandoned(&consumer, &claim_cursor, room).await {
                Ok((next, claimed)) => {
                    if !claimed.is_empty() {
                        tracing::info!(
                            jobs = claimed.len(),
                            "took over jobs left by a stopped worker"
                        );
                    }
                    claim_cursor = next;
                    entries = claimed;
                }
                Err(e) => tracing::debug!(error = %e, "claim failed"),
            }
            if !entries.is_empty() {
                match reader.subscribers_version().await {
                    Ok(v) => version = Some(v),
                    Err(e) => tracing::debug!(error = %e, "subscribers version unavailable"),
                }
            }
        }
        if entries.is_empty() {
            match reader.read(&consumer, room, READ_BLOCK).await {
                Ok((e, v)) => {
                    backoff = Duration::from_millis(100);
                    entries = e;
                    version = Some(v);
                }
                Err(e) => {
                    drop(first);
                    if e.code() == Some("NOGROUP") {
                        tracing::warn!(
                            "consumer group missing (Redis restarted empty?); recreating it"
                        );
                    } else {
                        tracing::warn!(error = %e, "reading jobs failed; retrying");
                    }
                    group_ready = false;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        // A subscriber changed through the API just before these jobs were
        // published (new URL, new secret) must be seen by them.
        if let (false, Some(v)) = (entries.is_empty(), version) {
            if let Err(e) = cache.catch_up(v).await {
                tracing::warn!(error = %e, "subscriber reload failed; using the last snapshot");
            }
        }
        let mut first = Some(first);
        for entry in entries {
            if !in_flight.insert(&entry.id) {
                continue; // already being delivered here
            }
            match first.take() {
                Some(permit) => permit.send(entry),
                // Fits: no more were read than there was room for.
                None => {
                    if tx.send(entry).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Refreshes the idle time of this worker's in-flight jobs, so only jobs of a
/// dead worker go idle long enough to be claimed.
async fn keep_alive(queue: Queue, consumer: String, in_flight: InFlight) {
    let mut tick = tokio::time::interval(KEEPALIVE_EVERY);
    loop {
        tick.tick().await;
        let ids = in_flight.ids();
        for chunk in ids.chunks(500) {
            if let Err(e) = queue.keep_alive(&consumer, chunk).await {
                tracing::debug!(error = %e, "keep-alive failed");
            }
        }
    }
}

/// Moves due retries back into the stream, a bounded chunk at a time: wakes
/// when the earliest retry is due, when this worker schedules one, and at
/// least every [`PROMOTE_EVERY`] (for retries other workers schedule).
async fn promote(queue: Queue, scheduled: Arc<Notify>) {
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        let wait = match queue.promote_due(now, PROMOTE_CHUNK).await {
            Ok(p) if p.moved == PROMOTE_CHUNK => continue,
            Ok(p) => p
                .next_due_ms
                .map(|due| Duration::from_millis((due - now).max(1) as u64))
                .unwrap_or(PROMOTE_EVERY)
                .min(PROMOTE_EVERY),
            Err(e) => {
                tracing::debug!(error = %e, "promoting retries failed");
                PROMOTE_EVERY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = scheduled.notified() => {}
        }
    }
}
