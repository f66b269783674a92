//! The worker's side of the queue: reads jobs from every partition's stream
//! (and takes over those dead workers left), keeps its in-flight jobs claimed,
//! promotes due retries, parks what its [`Gate`] will not start now, and
//! finishes each job with [`Consumer::ack`] or [`Consumer::retry_later`]
//! (acks are batched: per partition on a Redis Cluster, all together on one Redis).
//!
//! It reads only as many entries as it has free delivery slots: whatever a
//! worker reads is claimed by it, so reading ahead of its slots would make the
//! read-ahead wait behind slow deliveries while other workers idle. Each
//! partition has a reader of its own; with several, a reader waiting for new
//! jobs holds one slot, and takes more only while its partition has work, so
//! an idle partition never keeps slots from a busy one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::parking::ToPark;
use super::{Entry, Queue};
use crate::backoff::{with_retries, Backoff};
use crate::job::Job;
use crate::subscribers::Cache;

const READ_BLOCK: Duration = Duration::from_millis(1000);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(3);
const CLAIM_EVERY: Duration = Duration::from_secs(5);
/// Longest wait before looking for due retries scheduled by other workers.
pub const PROMOTE_EVERY: Duration = Duration::from_millis(200);
const PROMOTE_CHUNK: usize = 500;
/// Most entries in one XACK+XDEL.
const MAX_ACK_BATCH: usize = 512;
/// Tries of a queue write while Redis is away (about ten seconds).
const REDIS_TRIES: usize = 8;

/// Decides, for each entry read, whether it starts now or is parked.
pub trait Gate: Send + Sync + 'static {
    /// True to deliver `entry` now (the gate counts it as started), false to
    /// park it until its subscriber has room.
    fn admit(&self, entry: &Entry) -> bool;
    /// `entry` could not be parked (Redis failed): it is delivered now anyway.
    fn force(&self, entry: &Entry);
}

/// A job this worker is delivering, and the delivery slot it holds.
struct Held {
    entry: Arc<Entry>,
    _slot: Option<OwnedSemaphorePermit>,
}

type AckRequest = (Arc<Entry>, oneshot::Sender<bool>);

struct Inner {
    queue: Queue,
    name: String,
    /// By [`Entry::key`].
    held: Mutex<HashMap<String, Held>>,
    /// One batcher per partition.
    acks: Vec<mpsc::UnboundedSender<AckRequest>>,
    retry_scheduled: Notify,
    stop: watch::Sender<bool>,
}

impl Entry {
    /// Names the entry among those of every partition (entry ids repeat across streams).
    pub fn key(&self) -> String {
        format!("{}/{}", self.partition, self.id)
    }
}

/// A handle on this worker's consumer; cheap to clone.
#[derive(Clone)]
pub struct Consumer {
    inner: Arc<Inner>,
}

/// The consumer's background tasks, to abort once deliveries have settled.
pub struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    pub fn abort(self) {
        for t in self.0 {
            t.abort();
        }
    }
}

impl Consumer {
    /// Starts reading for consumer `name` with `concurrency` delivery slots.
    /// `reader` must have a Redis connection of its own (reads block on it).
    /// Entries to deliver arrive on the returned receiver.
    pub fn start(
        queue: Queue,
        reader: Queue,
        cache: Arc<Cache>,
        name: String,
        concurrency: usize,
        gate: Arc<dyn Gate>,
    ) -> (Consumer, mpsc::Receiver<Arc<Entry>>, Tasks) {
        let partitions = queue.partitions().len();
        // A batch is one script, so on a cluster one per partition (slot);
        // on a single Redis one for all.
        let batchers = if queue.redis().is_cluster() {
            partitions
        } else {
            1
        };
        let mut ack_senders = Vec::with_capacity(batchers);
        let mut tasks = Vec::new();
        for _ in 0..batchers {
            let (ack_tx, ack_rx) = mpsc::unbounded_channel();
            ack_senders.push(ack_tx);
            tasks.push(tokio::spawn(ack_batches(queue.clone(), ack_rx)));
        }
        let (stop, stop_rx) = watch::channel(false);
        let consumer = Consumer {
            inner: Arc::new(Inner {
                queue: queue.clone(),
                name,
                held: Mutex::new(HashMap::new()),
                acks: ack_senders,
                retry_scheduled: Notify::new(),
                stop,
            }),
        };
        let (tx, rx) = mpsc::channel(concurrency);
        let slots = Arc::new(Semaphore::new(concurrency));
        tasks.push(tokio::spawn(consumer.clone().keep_alive()));
        tasks.push(tokio::spawn(consumer.clone().promote()));
        for p in 0..partitions {
            // Each reader blocks on a connection of its own.
            let reader = if p == 0 {
                reader.clone()
            } else {
                reader.on(reader.redis().separate(READ_BLOCK * 7))
            };
            tasks.push(tokio::spawn(consumer.clone().read_loop(
                p,
                partitions,
                reader,
                cache.clone(),
                slots.clone(),
                gate.clone(),
                tx.clone(),
                stop_rx.clone(),
            )));
        }
        (consumer, rx, Tasks(tasks))
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Stops reading; jobs in flight can still be finished.
    pub fn stop(&self) {
        let _ = self.inner.stop.send(true);
    }

    /// The entry of a job in flight here, by [`Entry::key`].
    pub fn entry(&self, key: &str) -> Option<Arc<Entry>> {
        self.held().get(key).map(|h| h.entry.clone())
    }

    /// Jobs in flight here.
    pub fn in_flight(&self) -> usize {
        self.held().len()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.inner.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finishes the job (XACK + XDEL, letting go of its stored message and
    /// lane, batched with others of its partition finishing meanwhile).
    /// False when Redis stayed away through the retries: the job stays
    /// pending and is delivered again, never lost.
    pub async fn ack(&self, entry: &Entry) -> bool {
        let key = entry.key();
        let entry = self.entry(&key).unwrap_or_else(|| Arc::new(entry.clone()));
        let (done, answer) = oneshot::channel();
        let ok = self
            .inner
            .acks
            .get(entry.partition % self.inner.acks.len())
            .is_some_and(|tx| tx.send((entry, done)).is_ok())
            && answer.await.unwrap_or(false);
        self.forget(&key);
        ok
    }

    /// Schedules `next` after `delay` and finishes the job, atomically.
    pub async fn retry_later(&self, entry: &Entry, next: &Job, delay: Duration) -> bool {
        let due = chrono::Utc::now().timestamp_millis() + delay.as_millis() as i64;
        let queue = &self.inner.queue;
        let ok = with_retries("scheduling the retry", REDIS_TRIES, || {
            queue.retry_later(entry.partition, &entry.id, next, due)
        })
        .await;
        if ok && delay < PROMOTE_EVERY {
            // Due before the promoter's next regular look: wake it.
            self.inner.retry_scheduled.notify_one();
        }
        self.forget(&entry.key());
        ok
    }

    /// Lets go of a job without finishing it: it stays pending and another
    /// pass (here or in another worker) takes it over.
    pub fn abandon(&self, entry: &Entry) {
        self.forget(&entry.key());
    }

    fn forget(&self, key: &str) {
        self.held().remove(key);
    }

    /// Refreshes the idle time of the jobs in flight here, so only jobs of a
    /// dead worker go idle long enough to be taken over.
    async fn keep_alive(self) {
        let mut tick = tokio::time::interval(KEEPALIVE_EVERY);
        loop {
            tick.tick().await;
            let mut by_partition: HashMap<usize, Vec<String>> = HashMap::new();
            for h in self.held().values() {
                by_partition
                    .entry(h.entry.partition)
                    .or_default()
                    .push(h.entry.id.clone());
            }
            for (p, ids) in by_partition {
                for chunk in ids.chunks(500) {
                    if let Err(e) = self
                        .inner
                        .queue
                        .keep_alive(p, &self.inner.name, chunk)
                        .await
                    {
                        tracing::debug!(error = %e, "keep-alive failed");
                    }
                }
            }
        }
    }

    /// Moves due retries back into the stream, a bounded chunk at a time:
    /// wakes when the earliest retry is due, when this worker schedules one,
    /// and at least every [`PROMOTE_EVERY`] (for retries of other workers).
    async fn promote(self) {
        let queue = &self.inner.queue;
        loop {
            let mut wait = PROMOTE_EVERY;
            let mut full = false;
            for part in 0..queue.partitions().len() {
                let now = chrono::Utc::now().timestamp_millis();
                match queue.promote_due(part, now, PROMOTE_CHUNK).await {
                    Ok(p) if p.moved == PROMOTE_CHUNK => full = true,
                    Ok(p) => {
                        if let Some(due) = p.next_due_ms {
                            wait = wait.min(Duration::from_millis((due - now).max(1) as u64));
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "promoting retries failed"),
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.retry_scheduled.notified() => {}
            }
        }
    }

    /// Reads new jobs of one partition, and every few seconds those dead
    /// workers left behind, as many as there are free slots; makes sure the
    /// subscriber snapshot includes every change announced before them;
    /// starts or parks each.
    #[allow(clippy::too_many_arguments)]
    async fn read_loop(
        self,
        partition: usize,
        partitions: usize,
        reader: Queue,
        cache: Arc<Cache>,
        slots: Arc<Semaphore>,
        gate: Arc<dyn Gate>,
        tx: mpsc::Sender<Arc<Entry>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut group_ready = false;
        let mut claim_cursor = "0-0".to_string();
        let mut last_claim = tokio::time::Instant::now() - CLAIM_EVERY;
        // Whether the last read found work: then read on without blocking,
        // with every free slot.
        let mut busy = false;
        let name = self.inner.name.clone();
        loop {
            if *stop.borrow() {
                return;
            }
            if !group_ready {
                let stream = reader.partition(partition).stream.clone();
                match reader.create_group(&stream, super::GROUP).await {
                    Ok(()) => group_ready = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "Redis unreachable; retrying");
                        backoff.wait().await;
                        continue;
                    }
                }
            }
            // Wait for one free slot; take every free one when this is the
            // only partition or it has work waiting.
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = stop.changed() => return,
            };
            let mut permits = vec![first];
            if partitions == 1 || busy {
                while let Ok(p) = slots.clone().try_acquire_owned() {
                    permits.push(p);
                }
            }
            let room = permits.len();
            let mut entries = Vec::new();
            let mut version = None;
            if last_claim.elapsed() >= CLAIM_EVERY {
                last_claim = tokio::time::Instant::now();
                match reader
                    .claim_abandoned(partition, &name, &claim_cursor, room)
                    .await
                {
                    Ok((next, claimed)) => {
                        if !claimed.is_empty() {
                            tracing::info!(
                                jobs = claimed.len(),
                                partition,
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
                let block = (!busy).then_some(READ_BLOCK);
                match reader.read(partition, &name, room, block).await {
                    Ok((e, v)) => {
                        backoff.reset();
                        busy = !e.is_empty() && partitions > 1;
                        entries = e;
                        version = Some(v);
                    }
                    Err(e) => {
                        drop(permits);
                        busy = false;
                        if e.code() == Some("NOGROUP") {
                            tracing::warn!(
                                "consumer group missing (Redis restarted empty?); recreating it"
                            );
                        } else {
                            tracing::warn!(error = %e, "reading jobs failed; retrying");
                        }
                        group_ready = false;
                        backoff.wait().await;
                        continue;
                    }
                }
            }
            if entries.is_empty() {
                continue;
            }
            // A subscriber changed through the API just before these jobs were
            // published (new URL, new secret, new limit) must be seen by them.
            if let Some(v) = version {
                if let Err(e) = cache.catch_up(v).await {
                    tracing::warn!(error = %e, "subscriber reload failed; using the last snapshot");
                }
            }
            let mut start = Vec::with_capacity(entries.len());
            let mut park = Vec::new();
            for entry in entries {
                if self.held().contains_key(&entry.key()) {
                    continue; // already being delivered here
                }
                if gate.admit(&entry) {
                    start.push(Arc::new(entry));
                } else {
                    park.push(entry);
                }
            }
            if !park.is_empty() {
                let jobs: Vec<ToPark> = park
                    .iter()
                    .filter_map(|e| {
                        e.job.as_ref().ok().map(|j| ToPark {
                            partition,
                            entry_id: &e.id,
                            subscriber_id: j.subscriber_id,
                            raw: &e.raw,
                        })
                    })
                    .collect();
                if let Err(e) = self.inner.queue.park(partition, &jobs).await {
                    tracing::warn!(error = %e, jobs = park.len(), "could not park jobs; delivering them now");
                    for entry in park {
                        gate.force(&entry);
                        start.push(Arc::new(entry));
                    }
                }
            }
            for entry in start {
                self.held().insert(
                    entry.key(),
                    Held {
                        entry: entry.clone(),
                        _slot: permits.pop(),
                    },
                );
                if tx.send(entry).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Acknowledges finished entries in batches: every entry that finishes while
/// one XACK+XDEL is on the wire goes out in the next, so Redis sees one
/// transaction per batch instead of one per delivery. A lone ack goes at once.
async fn ack_batches(queue: Queue, mut rx: mpsc::UnboundedReceiver<AckRequest>) {
    let mut batch: Vec<AckRequest> = Vec::with_capacity(MAX_ACK_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_ACK_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let entries: Vec<&Entry> = batch.iter().map(|(e, _)| e.as_ref()).collect();
        let ok = with_retries("ack", REDIS_TRIES, || async {
            queue.finish(&entries).await.map(|_| ())
        })
        .await;
        for (_, done) in batch.drain(..) {
            let _ = done.send(ok);
        }
    }
}
