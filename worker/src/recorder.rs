//! Records delivery attempts in batches, off the delivery path, and flushes on shutdown.

use std::time::Duration;

use switch_core::db::models::NewDeliveryAttempt;
use switch_core::db::{repo, DbPool};
use switch_core::queue::{DeliveryStats, Queue};
use tokio::sync::mpsc;

const BATCH: usize = 1000;
const EVERY: Duration = Duration::from_millis(100);
/// Rows kept while the database is down before the oldest are dropped.
const MAX_BACKLOG: usize = 200_000;

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<NewDeliveryAttempt>,
}

impl Recorder {
    /// Starts the writer task; it ends (after a last flush) when every `Recorder` is dropped.
    pub fn start(pool: DbPool, queue: Queue) -> (Recorder, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Recorder { tx }, tokio::spawn(write_loop(pool, queue, rx)))
    }

    pub fn record(&self, row: NewDeliveryAttempt) {
        if self.tx.send(row).is_err() {
            tracing::error!("attempt recorder has stopped; an attempt row is lost");
        }
    }
}

async fn write_loop(
    pool: DbPool,
    queue: Queue,
    mut rx: mpsc::UnboundedReceiver<NewDeliveryAttempt>,
) {
    let mut pending: Vec<NewDeliveryAttempt> = Vec::new();
    // Hub-wide totals not yet added in Redis (best effort: they are metrics).
    let mut stats = DeliveryStats::default();
    let mut closed = false;
    // Whether the last look stopped at a full batch (more may be waiting).
    let mut more = false;
    while !closed || !pending.is_empty() {
        if !closed {
            // Rows are collected on a timer rather than as they come: a task
            // woken for every row costs a thread wake-up per delivery when the
            // hub is quiet. A full batch is written without waiting.
            if !more {
                tokio::time::sleep(EVERY).await;
            }
            more = false;
            loop {
                match rx.try_recv() {
                    Ok(r) => {
                        stats.add(&r.outcome, r.duration_ms);
                        pending.push(r);
                        if pending.len() >= BATCH {
                            more = true;
                            break;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        if !stats.is_empty() {
            match queue.add_delivery_stats(&stats).await {
                Ok(()) => stats = DeliveryStats::default(),
                Err(e) => {
                    tracing::debug!(error = %e, "hub totals not updated; kept for the next flush")
                }
            }
        }
        if pending.is_empty() {
            continue;
        }
        let batch = std::mem::take(&mut pending);
        let p = pool.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = p
                .get()
                .map_err(anyhow::Error::from)
                .and_then(|mut c| Ok(repo::insert_attempts(&mut c, &batch)?));
            (r, batch)
        })
        .await;
        match result {
            Ok((Ok(()), _)) => {}
            Ok((Err(e), batch)) => {
                tracing::warn!(error = %e, rows = batch.len(), "could not record attempts; will retry");
                pending = batch;
                if pending.len() > MAX_BACKLOG {
                    let drop = pending.len() - MAX_BACKLOG;
                    pending.drain(..drop);
                    tracing::error!(
                        dropped = drop,
                        "attempt log backlog full; oldest rows dropped"
                    );
                }
                if closed {
                    // Shutting down with the database away: one more try, then give up.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let p = pool.clone();
                    let batch = std::mem::take(&mut pending);
                    let n = batch.len();
                    let ok = tokio::task::spawn_blocking(move || {
                        p.get()
                            .ok()
                            .map(|mut c| repo::insert_attempts(&mut c, &batch).is_ok())
                    })
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(false);
                    if !ok {
                        tracing::error!(
                            rows = n,
                            "attempt rows lost at shutdown: database unreachable"
                        );
                    }
                } else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "attempt writer task failed"),
        }
    }
}
