//! What happens to one job: [`Processor::process`] delivers it and decides its
//! [`Finish`]; [`Processor::finish`] (the worker's acknowledgement hook) applies
//! that decision to the queue and the database: ack, retry later, or dead-letter.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use switch_core::db::models::{now, NewDeadLetter, NewDeliveryAttempt};
use switch_core::db::{repo, DbPool};
use switch_core::job::Job;
use switch_core::message::Message;
use switch_core::queue::{Entry, Queue};
use switch_core::subscribers::Cache;
use switch_core::Settings;
use tracing::Instrument;

use crate::acker::Acker;
use crate::metrics::Metrics;
use crate::recorder::Recorder;
use crate::request::{prepare, Prepared, Signing};
use crate::runner::InFlight;
use crate::send::{send, Failure, Sent};

pub struct Processor {
    pub settings: Settings,
    pub queue: Queue,
    pub cache: Arc<Cache>,
    pub pool: DbPool,
    pub client: reqwest::Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub in_flight: InFlight,
    pub acker: Acker,
    /// Wakes this worker's promoter, so a short retry delay is kept.
    pub retry_scheduled: Arc<tokio::sync::Notify>,
}

/// Runs a queue operation, retrying with backoff for about ten seconds while
/// Redis is away. Returns whether it finally succeeded.
pub(crate) async fn with_redis_retries<F, Fut>(what: &str, mut op: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<()>>,
{
    let mut wait = Duration::from_millis(100);
    for _ in 0..8 {
        match op().await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
    false
}

/// What becomes of a stream entry once its attempt is over.
#[derive(Debug, Clone)]
pub enum Finish {
    /// Done (delivered, or nothing left to do): XACK and XDEL.
    Ack,
    /// Put `next` in the retry set, due after `delay`, and finish the entry.
    Retry { next: Job, delay: Duration },
    /// Store the dead letter, then finish the entry. `job` is what to try again
    /// later should the database be away (none for an unreadable entry: it then
    /// stays pending and is taken over later).
    DeadLetter {
        job: Option<Job>,
        row: NewDeadLetter,
    },
}

/// How a job ends on this attempt.
enum Verdict {
    Delivered,
    Retry { next_in: Duration },
    Dead { reason: String },
}

/// The delay before retry `n` (1-based): the schedule's entry with ±10% jitter,
/// or the receiver's `Retry-After` when that is longer.
pub fn retry_delay(
    schedule: &[Duration],
    retry_number: usize,
    retry_after: Option<Duration>,
) -> Duration {
    let base = schedule
        .get(retry_number - 1)
        .copied()
        .unwrap_or(Duration::ZERO);
    let jitter = rand::rng().random_range(0.9..=1.1);
    let delay = base.mul_f64(jitter);
    match retry_after {
        Some(ra) if ra > delay => ra.min(Duration::from_secs(24 * 3600)),
        _ => delay,
    }
}

impl Processor {
    /// Delivers one entry and says what to do with it; touches the queue only
    /// through the returned [`Finish`].
    pub async fn process(&self, entry: Entry) -> Finish {
        let job = match &entry.job {
            Ok(j) => j.clone(),
            Err(e) => {
                tracing::error!(entry = %entry.id, error = %e, "unreadable job; dead-lettering it as stored");
                return raw_dead_letter(&entry, e);
            }
        };
        let message = match job.message() {
            Ok(m) => m,
            Err(e) => return raw_dead_letter(&entry, &e.to_string()),
        };
        // A debug span: a span per delivery at info costs more than the rest
        // of the bookkeeping. Events of a failing delivery name the job themselves.
        let span = tracing::debug_span!(
            "deliver",
            message_id = %message.id,
            subscriber_id = job.subscriber_id,
            attempt = job.attempt,
            request_id = message.request_id.as_deref().unwrap_or(""),
        );
        self.deliver(&job, &message).instrument(span).await
    }

    /// Applies `finish` to entry `entry_id`, then forgets the entry.
    pub async fn finish(&self, entry_id: &str, finish: Finish) {
        match finish {
            Finish::Ack => self.ack(entry_id).await,
            Finish::Retry { next, delay } => self.reschedule(entry_id, next, delay).await,
            Finish::DeadLetter { job, row } => {
                if self.store_dead_letter(row).await {
                    self.metrics.dead_letters.inc();
                    self.ack(entry_id).await;
                } else if let Some(job) = job {
                    tracing::error!("dead letter could not be stored; keeping the job queued");
                    self.reschedule(entry_id, job, Duration::from_secs(30))
                        .await;
                } else {
                    tracing::error!(
                        entry = entry_id,
                        "unreadable job could not be stored; it stays pending"
                    );
                }
            }
        }
        self.in_flight.remove(entry_id);
    }

    async fn deliver(&self, job: &Job, message: &Message) -> Finish {
        // Replays, and subscribers this snapshot has disabled (they may have been
        // enabled since), are read afresh: their URL or state may just have been fixed.
        let sub = match self.cache.lookup(job.subscriber_id).await {
            Ok(Some(s)) if job.replay || !s.row.enabled => {
                self.cache.fetch_fresh(job.subscriber_id).await
            }
            other => other,
        };
        let sub = match sub {
            Ok(s) => s,
            Err(e) => {
                // Database away: try the same attempt again shortly.
                tracing::warn!(message_id = %message.id, subscriber_id = job.subscriber_id, error = %e, "subscriber lookup failed; job postponed");
                return Finish::Retry {
                    next: job.clone(),
                    delay: Duration::from_secs(5),
                };
            }
        };
        let Some(sub) = sub else {
            tracing::warn!(message_id = %message.id, subscriber_id = job.subscriber_id, "subscriber no longer exists; job dropped");
            self.record(
                job,
                message,
                "dead",
                None,
                Some("subscriber_deleted"),
                Some("subscriber no longer exists".into()),
                0,
            );
            return Finish::Ack;
        };
        let row = &sub.row;
        let secret = row.secret.clone().unwrap_or_default();
        let previous = row
            .previous_secret
            .as_deref()
            .filter(|_| row.previous_secret_expires_at.is_some_and(|t| t > now()));
        let signing = Signing {
            secret: &secret,
            previous,
        };
        let ts = chrono::Utc::now().timestamp();
        let prepared = match prepare(message, &row.target_url, &signing, job.attempt, ts) {
            Ok(p) => p,
            Err(e) => {
                self.record(
                    job,
                    message,
                    "dead",
                    None,
                    Some("invalid_url"),
                    Some(e.clone()),
                    0,
                );
                return dead_letter(job, message, None, &e);
            }
        };
        if !row.enabled {
            let reason = "subscriber is disabled".to_string();
            self.record(
                job,
                message,
                "dead",
                None,
                Some("disabled"),
                Some(reason.clone()),
                0,
            );
            return dead_letter(job, message, Some(&prepared), &reason);
        }
        let (sent, took) = send(&self.client, &prepared, self.settings.delivery_timeout).await;
        let ms = took.as_millis() as i64;
        self.metrics.latency.observe(took.as_secs_f64());
        let verdict = self.judge(job, &sent);
        let (status, kind, error) = match &sent {
            Sent::Delivered(s) => (Some(*s), None, None),
            Sent::Failed(Failure {
                kind,
                status,
                message,
                ..
            }) => (*status, Some(kind.as_str()), Some(message.clone())),
        };
        let outcome = match verdict {
            Verdict::Delivered => "delivered",
            Verdict::Retry { .. } => "failed",
            Verdict::Dead { .. } => "dead",
        };
        self.metrics
            .deliveries
            .with_label_values(&[outcome, &job.subscriber_id.to_string()])
            .inc();
        self.record(job, message, outcome, status, kind, error, ms);
        match verdict {
            Verdict::Delivered => {
                tracing::debug!(status = status.unwrap_or(0), ms, "delivered");
                Finish::Ack
            }
            Verdict::Retry { next_in } => {
                tracing::info!(
                    message_id = %message.id,
                    subscriber_id = job.subscriber_id,
                    attempt = job.attempt,
                    request_id = message.request_id.as_deref().unwrap_or(""),
                    status = status.unwrap_or(0),
                    kind = kind.unwrap_or(""),
                    retry_in_ms = next_in.as_millis() as u64,
                    "attempt failed; will retry"
                );
                Finish::Retry {
                    next: job.next_attempt(),
                    delay: next_in,
                }
            }
            Verdict::Dead { reason } => {
                tracing::warn!(
                    message_id = %message.id,
                    subscriber_id = job.subscriber_id,
                    attempt = job.attempt,
                    request_id = message.request_id.as_deref().unwrap_or(""),
                    reason = %reason,
                    "dead letter"
                );
                if status == Some(410) {
                    let pool = self.pool.clone();
                    let sid = job.subscriber_id;
                    let disabled = tokio::task::spawn_blocking(move || {
                        pool.get()
                            .map_err(anyhow::Error::from)
                            .and_then(|mut c| Ok(repo::set_enabled(&mut c, sid, false)?))
                    })
                    .await;
                    if !matches!(disabled, Ok(Ok(_))) {
                        tracing::error!(
                            subscriber_id = sid,
                            "could not disable the subscriber after 410 Gone"
                        );
                    }
                    if let Err(e) = self.cache.changed(&self.queue).await {
                        tracing::warn!(error = %e, "could not reload subscribers after disabling one");
                    }
                }
                dead_letter(job, message, Some(&prepared), &reason)
            }
        }
    }

    fn judge(&self, job: &Job, sent: &Sent) -> Verdict {
        match sent {
            Sent::Delivered(_) => Verdict::Delivered,
            Sent::Failed(f) if f.status == Some(410) => Verdict::Dead {
                reason: "HTTP 410 Gone: subscriber disabled".into(),
            },
            Sent::Failed(f) if job.attempt < self.settings.max_attempts() => Verdict::Retry {
                next_in: retry_delay(
                    &self.settings.retry_schedule,
                    job.attempt as usize,
                    f.retry_after,
                ),
            },
            Sent::Failed(f) => Verdict::Dead {
                reason: format!(
                    "{} after {} attempts: {}",
                    f.kind.as_str(),
                    job.attempt,
                    f.message
                ),
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        job: &Job,
        message: &Message,
        outcome: &str,
        status: Option<u16>,
        kind: Option<&str>,
        error: Option<String>,
        ms: i64,
    ) {
        self.recorder.record(NewDeliveryAttempt {
            message_id: message.id.clone(),
            subscriber_id: job.subscriber_id,
            attempt: job.attempt as i32,
            outcome: outcome.to_string(),
            http_status: status.map(i32::from),
            error_kind: kind.map(str::to_string),
            error: error.map(|e| e.chars().take(1000).collect()),
            duration_ms: ms,
            created_at: now(),
        });
    }

    /// Finishes the entry; retried for a while when Redis is away (the job stays
    /// pending meanwhile, so the worst case is a second delivery, never a loss).
    async fn ack(&self, entry_id: &str) {
        if !self.acker.ack(entry_id).await {
            tracing::error!(
                entry = entry_id,
                "could not ack; the job will be delivered again"
            );
        }
    }

    async fn reschedule(&self, entry_id: &str, next: Job, delay: Duration) {
        let due = chrono::Utc::now().timestamp_millis() + delay.as_millis() as i64;
        if !with_redis_retries("scheduling the retry", || {
            self.queue.retry_later(entry_id, &next, due)
        })
        .await
        {
            tracing::error!(
                entry = entry_id,
                "could not schedule the retry; the job stays pending and will be taken over"
            );
        } else if delay < crate::runner::PROMOTE_EVERY {
            // Due before the promoter's next regular look: wake it.
            self.retry_scheduled.notify_one();
        }
    }

    async fn store_dead_letter(&self, row: NewDeadLetter) -> bool {
        let pool = self.pool.clone();
        matches!(
            tokio::task::spawn_blocking(move || pool
                .get()
                .map_err(anyhow::Error::from)
                .and_then(|mut c| Ok(repo::insert_dead_letter(&mut c, &row)?)))
            .await,
            Ok(Ok(_))
        )
    }
}

/// The dead letter of `job`: its whole request (as prepared, minus the
/// per-attempt signature headers) and the message it came from.
fn dead_letter(job: &Job, message: &Message, prepared: Option<&Prepared>, reason: &str) -> Finish {
    let request = json!({
        "method": prepared.map(|p| p.method).unwrap_or(message.http_method.as_str()),
        "url": prepared.map(|p| p.url.as_str()),
        "headers": prepared.map(|p| p.headers.iter().filter(|(k, _)| !k.starts_with("webhook-") && k != "x-switch-attempt").cloned().collect::<Vec<_>>()),
        "body": message.body,
        "message": message,
    });
    Finish::DeadLetter {
        job: Some(job.clone()),
        row: NewDeadLetter {
            message_id: message.id.clone(),
            subscriber_id: job.subscriber_id,
            topic: message.topic.clone(),
            request: request.to_string(),
            last_error: reason.to_string(),
            attempts: job.attempt as i32,
            created_at: now(),
        },
    }
}

/// A job that cannot be decoded is stored as it was, for inspection.
fn raw_dead_letter(entry: &Entry, error: &str) -> Finish {
    Finish::DeadLetter {
        job: None,
        row: NewDeadLetter {
            message_id: String::new(),
            subscriber_id: 0,
            topic: String::new(),
            request: json!({"raw": entry.raw}).to_string(),
            last_error: format!("unreadable job: {error}"),
            attempts: 0,
            created_at: now(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send::FailureKind;

    #[test]
    fn retry_delay_has_jitter_within_ten_percent_and_honours_retry_after() {
        let schedule = [Duration::from_secs(10), Duration::from_secs(100)];
        for _ in 0..200 {
            let d = retry_delay(&schedule, 2, None);
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
        assert_eq!(
            retry_delay(&schedule, 1, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        assert!(retry_delay(&schedule, 2, Some(Duration::from_secs(1))) >= Duration::from_secs(90));
    }

    #[test]
    fn failure_kinds_have_stable_names() {
        let names: Vec<&str> = [
            FailureKind::Timeout,
            FailureKind::Connect,
            FailureKind::Dns,
            FailureKind::HttpStatus,
            FailureKind::Request,
        ]
        .iter()
        .map(|k| k.as_str())
        .collect();
        assert_eq!(
            names,
            ["timeout", "connect", "dns", "http_status", "request"]
        );
    }
}
