//! Publishes accepted while Redis is unreachable: written to the database's
//! `outbox` table and answered `202` with `"spooled": true`; every server
//! moves them into the queue, in publish order, once Redis answers again.
//!
//! One server moves them at a time (a Redis lock). Each is enqueued under an
//! idempotency record (the publisher's `Idempotency-Key` when it gave one,
//! else one named after the message), and deleted from the table after: a
//! server that dies between the two leaves a row whose second move stores
//! nothing. So none is lost and none is queued twice.
//!
//! While this server has spooled publishes not yet moved, its new publishes
//! are spooled too, so that none overtakes an earlier one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use switch_core::db::models::{NewOutboxRow, OutboxRow};
use switch_core::db::{repo, DbPool};
use switch_core::job::Job;
use switch_core::queue::{Publish, Queue};
use tokio::sync::Notify;

use crate::error::ApiError;

/// Rows moved per pass.
const BATCH: i64 = 200;
/// How often every server looks for spooled publishes (its own or those of a
/// server that stopped).
const LOOK_EVERY: Duration = Duration::from_secs(1);
const LOCK_TTL: Duration = Duration::from_secs(30);

/// What this server knows about its spooled publishes.
#[derive(Default)]
pub struct Outbox {
    /// Some of this server's publishes wait in the table.
    waiting: AtomicBool,
    wake: Notify,
}

/// A publish to spool: the message and who it matched.
pub struct Spooled {
    pub message_id: String,
    pub message_json: Arc<str>,
    pub subscriber_ids: Vec<i64>,
    pub idempotency: Option<(String, String)>,
}

/// An error of Redis that means it cannot be reached now (so the publish is
/// spooled), as opposed to one it answered (a refused command) or a write
/// that reached it but not enough replicas (spooling would queue it twice).
pub fn unreachable(e: &redis::RedisError) -> bool {
    if e.to_string()
        .contains(switch_core::queue::REPLICA_SHORTFALL)
    {
        return false;
    }
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_cluster_error()
        || matches!(
            e.code(),
            Some("CLUSTERDOWN" | "TRYAGAIN" | "MASTERDOWN" | "LOADING")
        )
}

impl Spooled {
    /// Logs why it is spooled.
    pub fn with_cause(self, cause: Option<redis::RedisError>) -> Self {
        match &cause {
            Some(e) => {
                tracing::warn!(message_id = %self.message_id, error = %e, "Redis unreachable")
            }
            None => {
                tracing::debug!(message_id = %self.message_id, "queued behind spooled publishes")
            }
        }
        self
    }
}

impl Outbox {
    /// Whether new publishes must be spooled to keep publish order.
    pub fn must_spool(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    /// Writes publishes to the table, all or none.
    pub async fn spool(&self, pool: &DbPool, items: Vec<Spooled>) -> Result<(), ApiError> {
        let now = switch_core::db::models::now();
        let rows: Vec<NewOutboxRow> = items
            .into_iter()
            .map(|s| NewOutboxRow {
                message_id: s.message_id,
                message: s.message_json.to_string(),
                subscriber_ids: serde_json::to_string(&s.subscriber_ids).unwrap_or_default(),
                idempotency_key: s.idempotency.as_ref().map(|(k, _)| k.clone()),
                idempotency_record: s.idempotency.map(|(_, r)| r),
                created_at: now,
            })
            .collect();
        let pool = pool.clone();
        let n = rows.len();
        web::block(move || -> Result<(), ApiError> {
            let mut conn = pool.get()?;
            repo::insert_outbox(&mut conn, &rows)?;
            Ok(())
        })
        .await
        .map_err(ApiError::from)?
        .map_err(|e| match e {
            ApiError::Internal(e) => {
                ApiError::Unavailable(format!("neither Redis nor the database can take it: {e}"))
            }
            other => other,
        })?;
        self.waiting.store(true, Ordering::Release);
        self.wake.notify_one();
        tracing::warn!(
            messages = n,
            "Redis unreachable: publishes spooled to the database"
        );
        Ok(())
    }

    /// Moves spooled publishes into the queue whenever there are some and
    /// Redis answers.
    pub fn spawn_drain(self: Arc<Self>, pool: DbPool, queue: Queue) {
        tokio::spawn(async move {
            let token = uuid::Uuid::now_v7().simple().to_string();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(LOOK_EVERY) => {}
                    _ = self.wake.notified() => {
                        // Give Redis a moment: it was unreachable just now.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                match drain(&self, &pool, &queue, &token).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(messages = n, "spooled publishes moved into the queue"),
                    Err(e) => tracing::debug!(error = %e, "spooled publishes wait for Redis"),
                }
            }
        });
    }
}

/// Moves every spooled publish it can; returns how many.
async fn drain(
    outbox: &Outbox,
    pool: &DbPool,
    queue: &Queue,
    token: &str,
) -> anyhow::Result<usize> {
    // Cleared before the look, so a publish spooled meanwhile sets it again.
    let was_waiting = outbox.waiting.swap(false, Ordering::AcqRel);
    let rows = load(pool, BATCH).await;
    let rows = match rows {
        Ok(r) if r.is_empty() => return Ok(0),
        Ok(r) => r,
        Err(e) => {
            outbox.waiting.fetch_or(was_waiting, Ordering::AcqRel);
            return Err(e);
        }
    };
    outbox.waiting.store(true, Ordering::Release);
    if !lock(queue, token).await? {
        return Ok(0); // another server is moving them
    }
    let mut moved = 0;
    let mut rows = rows;
    let result = loop {
        let mut done = Vec::with_capacity(rows.len());
        let mut failed = None;
        for row in &rows {
            match enqueue(queue, row).await {
                Ok(()) => done.push(row.seq),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        moved += done.len();
        if !done.is_empty() {
            let pool = pool.clone();
            web::block(move || -> anyhow::Result<usize> {
                let mut conn = pool.get()?;
                Ok(repo::delete_outbox(&mut conn, &done)?)
            })
            .await??;
        }
        if let Some(e) = failed {
            break Err(e);
        }
        rows = load(pool, BATCH).await?;
        if rows.is_empty() {
            break Ok(moved);
        }
        // Keep the lock while there is more.
        if !lock(queue, token).await? {
            break Ok(moved);
        }
    };
    unlock(queue, token).await;
    let left = load(pool, 1).await.map(|r| !r.is_empty()).unwrap_or(true);
    if !left {
        outbox.waiting.store(false, Ordering::Release);
        // A publish spooled between the look and now sets it again.
    }
    result
}

async fn load(pool: &DbPool, limit: i64) -> anyhow::Result<Vec<OutboxRow>> {
    let pool = pool.clone();
    web::block(move || -> anyhow::Result<Vec<OutboxRow>> {
        let mut conn = pool.get()?;
        Ok(repo::next_outbox(&mut conn, limit)?)
    })
    .await?
}

async fn enqueue(queue: &Queue, row: &OutboxRow) -> anyhow::Result<()> {
    let ids: Vec<i64> = serde_json::from_str(&row.subscriber_ids)?;
    let json: Arc<str> = Arc::from(row.message.as_str());
    let jobs: Vec<Job> = ids
        .iter()
        .map(|sid| Job::new(*sid, 1, json.clone()))
        .collect();
    let record = row
        .idempotency_record
        .clone()
        .unwrap_or_else(|| format!("{}|{}", row.message_id, jobs.len()));
    let key = row
        .idempotency_key
        .clone()
        .unwrap_or_else(|| queue.keys.spooled(&row.message_id));
    queue
        .enqueue(
            Publish {
                message_id: &row.message_id,
                message_json: &row.message,
                jobs: &jobs,
            },
            Some((&key, &record)),
        )
        .await?;
    Ok(())
}

/// Takes (or renews) the lock; false when another server holds it.
async fn lock(queue: &Queue, token: &str) -> anyhow::Result<bool> {
    Ok(queue
        .hold_lock(&queue.keys.outbox_lock(), token, LOCK_TTL)
        .await?)
}

async fn unlock(queue: &Queue, token: &str) {
    if let Err(e) = queue.release_lock(&queue.keys.outbox_lock(), token).await {
        tracing::debug!(error = %e, "outbox lock not released; it expires by itself");
    }
}

/// Publishes waiting in the outbox (for `/metrics` and tests).
pub async fn waiting(pool: &DbPool) -> anyhow::Result<i64> {
    let pool = pool.clone();
    web::block(move || -> anyhow::Result<i64> {
        let mut conn = pool.get()?;
        Ok(repo::outbox_len(&mut conn)?)
    })
    .await?
}
