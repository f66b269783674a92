//! Writes the message log into the database: reads the log stream as a
//! member of the archivers' group, inserts each batch in one transaction,
//! and removes the entries from the stream only after the commit. While the
//! database is away it keeps its batch and tries again, so the log is late,
//! never short. Also deletes rows past `SWITCH_MESSAGE_RETENTION`, in
//! bounded batches, one process at a time.

use std::time::Duration;

use switch_core::backoff::Backoff;
use switch_core::db::models::LoggedMessage;
use switch_core::db::{repo, DbPool};
use switch_core::queue::Queue;

/// Most log entries written per transaction.
const BATCH: usize = 1000;
const READ_BLOCK: Duration = Duration::from_millis(1000);
const CLAIM_EVERY: Duration = Duration::from_secs(10);
/// Rows deleted per statement by retention.
const RETENTION_BATCH: i64 = 2000;
/// Retention rests this many times as long as each batch took, so deleting a
/// large backlog takes at most about a quarter of one core from publishing.
const RETENTION_REST: u32 = 3;
/// At least this often (more often for a retention shorter than a minute).
const RETENTION_EVERY: Duration = Duration::from_secs(30);

/// Archives until aborted. `reader` must have a Redis connection of its own.
pub async fn run(reader: Queue, pool: DbPool, consumer: String) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut group_ready = false;
    let mut last_claim = tokio::time::Instant::now() - CLAIM_EVERY;
    loop {
        if !group_ready {
            match reader.ensure_log_group().await {
                Ok(()) => group_ready = true,
                Err(e) => {
                    tracing::debug!(error = %e, "message log unavailable; retrying");
                    backoff.wait().await;
                    continue;
                }
            }
        }
        let mut entries = Vec::new();
        if last_claim.elapsed() >= CLAIM_EVERY {
            last_claim = tokio::time::Instant::now();
            match reader.claim_log(&consumer, BATCH).await {
                Ok(claimed) => entries = claimed,
                Err(e) => tracing::debug!(error = %e, "claiming log entries failed"),
            }
        }
        if entries.is_empty() {
            match reader.read_log(&consumer, BATCH, READ_BLOCK).await {
                Ok(e) => {
                    backoff.reset();
                    entries = e;
                }
                Err(e) => {
                    if e.code() == Some("NOGROUP") {
                        group_ready = false;
                    } else {
                        tracing::warn!(error = %e, "reading the message log failed; retrying");
                    }
                    backoff.wait().await;
                    continue;
                }
            }
        }
        if entries.is_empty() {
            continue;
        }
        let mut rows: Vec<LoggedMessage> = Vec::with_capacity(entries.len());
        for entry in &entries {
            match entry.to_row() {
                Ok(row) => rows.push(row),
                // Kept out of the table but not left in the stream, where it
                // would hold back every poller's horizon for ever.
                Err(e) => {
                    tracing::error!(entry = %entry.id, error = %e, "unreadable log entry dropped")
                }
            }
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let mut waited = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let p = pool.clone();
            let batch = rows.clone();
            let written = tokio::task::spawn_blocking(move || {
                p.get()
                    .map_err(anyhow::Error::from)
                    .and_then(|mut c| Ok(repo::insert_messages(&mut c, &batch)?))
            })
            .await;
            match written {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, rows = rows.len(), "could not write the message log; will retry")
                }
                Err(e) => tracing::error!(error = %e, "message log writer failed"),
            }
            waited.wait().await;
        }
        let mut acked = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        while let Err(e) = reader.ack_log(&ids).await {
            // Written already: an entry acked later is written again as a no-op.
            tracing::warn!(error = %e, "could not ack log entries; retrying");
            acked.wait().await;
        }
    }
}

/// Deletes rows older than `retention`, a batch at a time, whenever this
/// process holds the retention lock (at most one deleter in the hub).
pub async fn retain(queue: Queue, pool: DbPool, retention: Duration, consumer: String) {
    let every = (retention / 2).clamp(Duration::from_millis(500), RETENTION_EVERY);
    loop {
        if holds_lock(&queue, &consumer, every * 2).await {
            let cutoff = chrono::Utc::now().naive_utc()
                - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
            let mut total = 0usize;
            loop {
                let p = pool.clone();
                let started = tokio::time::Instant::now();
                let deleted = tokio::task::spawn_blocking(move || {
                    p.get().map_err(anyhow::Error::from).and_then(|mut c| {
                        Ok(repo::delete_older_than(&mut c, cutoff, RETENTION_BATCH)?)
                    })
                })
                .await;
                match deleted {
                    Ok(Ok(n)) => {
                        total += n;
                        if n == 0 {
                            break;
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "retention: delete failed");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "retention task failed");
                        break;
                    }
                }
                // Let publishes and deliveries in between batches.
                let rest = (started.elapsed() * RETENTION_REST).max(Duration::from_millis(20));
                tokio::time::sleep(rest).await;
            }
            if total > 0 {
                tracing::info!(rows = total, "retention: old rows deleted");
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn holds_lock(queue: &Queue, consumer: &str, hold: Duration) -> bool {
    queue
        .hold_lock(&queue.keys.retention_lock(), consumer, hold)
        .await
        .unwrap_or(false)
}
