//! Applies each attempt's [`Outcome`]: records the attempt, updates the
//! subscriber's circuit and limits, disables a subscriber that answered 410
//! or has failed for too long, stores dead letters, and finishes the job in
//! the queue (ack, retry later). A job is finished only once what it leaves
//! behind is stored: a dead letter the database cannot take yet keeps its job.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use switch_core::db::models::{now, NewDeadLetter, NewDeliveryAttempt};
use switch_core::db::{repo, storable, DbPool};
use switch_core::job::Job;
use switch_core::message::Message;
use switch_core::otlp::{KeyValue, Span, SpanKind, Spans};
use switch_core::queue::circuit::{CircuitPolicy, CircuitState};
use switch_core::queue::consumer::Consumer;
use switch_core::queue::{Entry, Queue};
use switch_core::subscribers::Cache;
use switch_core::trace::SpanId;

use crate::decide::Outcome;
use crate::deliver::{Attempted, Unreadable};
use crate::metrics::Metrics;
use crate::recorder::Recorder;
use crate::request::Prepared;
use crate::scheduling::Scheduler;
use crate::send::{Failure, FailureKind};

/// Wait before trying again to store a dead letter the database refused.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(30);
/// Longest stored error text.
const MAX_ERROR_CHARS: usize = 1000;

pub struct Settler {
    pub consumer: Consumer,
    pub queue: Queue,
    pub pool: DbPool,
    pub cache: Arc<Cache>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub scheduler: Arc<Scheduler>,
    pub circuit: CircuitPolicy,
    pub auto_disable_after: Option<Duration>,
    /// Where each attempt's `deliver` span is exported (nowhere unless configured).
    pub spans: Spans,
}

impl Settler {
    pub async fn settle(&self, entry: &Entry, attempted: Result<Attempted, Unreadable>) {
        match attempted {
            Ok(a) => self.settle_attempt(entry, a).await,
            Err(Unreadable { error }) => {
                tracing::error!(entry = %entry.id, error = %error, "unreadable job; dead-lettering it as stored");
                if self.store_dead_letter(raw_dead_letter(entry, &error)).await {
                    self.consumer.ack(entry).await;
                } else {
                    tracing::error!(entry = %entry.id, "unreadable job could not be stored; it stays pending");
                    self.consumer.abandon(entry);
                }
            }
        }
    }

    /// A delivery that crashed (panicked): its job becomes a dead letter
    /// saying so, instead of being taken over and crashing again forever.
    pub async fn crashed(&self, entry_id: &str, error: &str) {
        let Some(entry) = self.consumer.entry(entry_id) else {
            return;
        };
        tracing::error!(entry = entry_id, error = %error, "delivery crashed; dead-lettering its job");
        let reason = format!("poison job: its delivery crashed: {error}");
        let attempted = match (&entry.job, entry.job.as_ref().map(Job::message)) {
            (Ok(job), Ok(Ok(message))) => Ok(Attempted {
                job: job.clone(),
                message,
                outcome: Outcome::Dead(Failure::before_sending(FailureKind::Poison, reason)),
                request: None,
                took: Duration::ZERO,
                sent_at: None,
                probe: entry.probe,
            }),
            _ => Err(Unreadable { error: reason }),
        };
        self.settle(&entry, attempted).await;
    }

    async fn settle_attempt(&self, entry: &Entry, a: Attempted) {
        let sid = a.job.subscriber_id;
        if let Some(outcome) = a.outcome.recorded_as() {
            self.record(&a, outcome);
            self.export_span(&a, outcome);
            self.metrics
                .deliveries
                .with_label_values(&[outcome, &sid.to_string()])
                .inc();
        }
        if !a.took.is_zero() {
            self.metrics.latency.observe(a.took.as_secs_f64());
        }
        self.update_circuit(&a).await;
        let throttled = a.outcome.failure().and_then(|f| f.status) == Some(429);
        self.scheduler
            .finished(sid, matches!(a.outcome, Outcome::Delivered(_)), throttled);
        match &a.outcome {
            Outcome::Delivered(status) => {
                tracing::debug!(status, ms = a.took.as_millis() as u64, "delivered");
                self.consumer.ack(entry).await;
            }
            Outcome::Dropped(f) => {
                tracing::warn!(message_id = %a.message.id, subscriber_id = sid, reason = %f.message, "job dropped");
                self.consumer.ack(entry).await;
            }
            Outcome::Postpone(delay) => {
                self.retry_later(entry, &a.job, *delay).await;
            }
            Outcome::Retry { failure, delay } => {
                tracing::info!(
                    message_id = %a.message.id,
                    subscriber_id = sid,
                    attempt = a.job.attempt,
                    request_id = a.message.request_id.as_deref().unwrap_or(""),
                    status = failure.status.unwrap_or(0),
                    kind = failure.kind.as_str(),
                    retry_in_ms = delay.as_millis() as u64,
                    "attempt failed; will retry"
                );
                self.retry_later(entry, &a.job.next_attempt(), *delay).await;
            }
            Outcome::Dead(failure) => {
                tracing::warn!(
                    message_id = %a.message.id,
                    subscriber_id = sid,
                    attempt = a.job.attempt,
                    request_id = a.message.request_id.as_deref().unwrap_or(""),
                    kind = failure.kind.as_str(),
                    reason = %failure.message,
                    "dead letter"
                );
                if failure.status == Some(410) {
                    self.disable(sid, "gone").await;
                }
                let row = dead_letter(&a.job, &a.message, a.request.as_ref(), &failure.message);
                if self.store_dead_letter(row).await {
                    self.metrics.dead_letters.inc();
                    self.consumer.ack(entry).await;
                } else {
                    tracing::error!(message_id = %a.message.id, subscriber_id = sid, "dead letter could not be stored; keeping the job queued");
                    self.retry_later(entry, &a.job, DEAD_LETTER_RETRY).await;
                }
            }
        }
    }

    /// Successes close the subscriber's circuit; failures that say the
    /// endpoint is unhealthy count toward opening it (a 429 does not: the
    /// endpoint is alive and asks for less, which the limits handle). A
    /// subscriber failing without a success for `auto_disable_after` is disabled.
    async fn update_circuit(&self, a: &Attempted) {
        let sid = a.job.subscriber_id;
        match &a.outcome {
            Outcome::Delivered(_) => {
                if a.probe || self.scheduler.has_circuit_record(sid) {
                    match self.queue.circuit_succeeded(sid).await {
                        Ok(before) => {
                            if before != CircuitState::Closed {
                                tracing::info!(subscriber_id = sid, "circuit closed");
                            }
                            self.scheduler.note_circuit(sid, None);
                        }
                        Err(e) => tracing::debug!(error = %e, "circuit not updated"),
                    }
                }
            }
            outcome => {
                let Some(f) = outcome.failure() else { return };
                if !f.kind.counts_against_endpoint() || f.status == Some(429) {
                    return;
                }
                let now_ms = chrono::Utc::now().timestamp_millis();
                let before = self.scheduler.circuit(sid);
                match self
                    .queue
                    .circuit_failed(sid, now_ms, &self.circuit, a.probe)
                    .await
                {
                    Ok(c) => {
                        if c.state == CircuitState::Open && before != CircuitState::Open {
                            tracing::warn!(
                                subscriber_id = sid,
                                failures = c.failures,
                                "circuit open: deliveries held until a probe succeeds"
                            );
                        }
                        self.scheduler.note_circuit(sid, Some(c));
                        let failing_for = c
                            .failing_since_ms
                            .map(|since| Duration::from_millis((now_ms - since).max(0) as u64));
                        if let (Some(limit), Some(failing)) = (self.auto_disable_after, failing_for)
                        {
                            if failing >= limit {
                                tracing::warn!(
                                    subscriber_id = sid,
                                    failing_s = failing.as_secs(),
                                    "every attempt failed for too long: subscriber disabled"
                                );
                                self.disable(sid, "failing").await;
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "circuit not updated"),
                }
            }
        }
    }

    /// Disables the subscriber (saying why), tells every process, and lets
    /// its parked jobs through to their dead letters.
    async fn disable(&self, sid: i64, reason: &'static str) {
        let pool = self.pool.clone();
        let disabled = tokio::task::spawn_blocking(move || {
            pool.get()
                .map_err(anyhow::Error::from)
                .and_then(|mut c| Ok(repo::disable(&mut c, sid, reason)?))
        })
        .await;
        if !matches!(disabled, Ok(Ok(_))) {
            tracing::error!(
                subscriber_id = sid,
                reason,
                "could not disable the subscriber"
            );
            return;
        }
        if let Err(e) = self.cache.changed(&self.queue).await {
            tracing::warn!(error = %e, "could not reload subscribers after disabling one");
        }
        self.scheduler.note_circuit(sid, None);
    }

    fn record(&self, a: &Attempted, outcome: &str) {
        let failure = a.outcome.failure();
        let status = match &a.outcome {
            Outcome::Delivered(s) => Some(*s),
            _ => failure.and_then(|f| f.status),
        };
        self.recorder.record(NewDeliveryAttempt {
            message_id: a.message.id.clone(),
            subscriber_id: a.job.subscriber_id,
            attempt: a.job.attempt as i32,
            outcome: outcome.to_string(),
            http_status: status.map(i32::from),
            error_kind: failure.map(|f| f.kind.as_str().to_string()),
            error: failure.map(|f| storable(&f.message).chars().take(MAX_ERROR_CHARS).collect()),
            duration_ms: a.took.as_millis() as i64,
            created_at: now(),
        });
    }

    /// The `deliver` span of an attempt that built its request: the span its
    /// `traceparent` named, a child of the message's publish span.
    fn export_span(&self, a: &Attempted, outcome: &'static str) {
        let (Some(request), true) = (&a.request, self.spans.enabled()) else {
            return;
        };
        let start = a.sent_at.unwrap_or_else(SystemTime::now);
        let mut attributes = vec![
            KeyValue::new("switch.subscriber_id", a.job.subscriber_id),
            KeyValue::new("switch.attempt", i64::from(a.job.attempt)),
            KeyValue::new("messaging.message.id", a.message.id.clone()),
            KeyValue::new("switch.outcome", outcome),
        ];
        let failure = a.outcome.failure();
        let status = match &a.outcome {
            Outcome::Delivered(s) => Some(*s),
            _ => failure.and_then(|f| f.status),
        };
        if let Some(status) = status {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(f) = failure {
            attributes.push(KeyValue::new("error.type", f.kind.as_str()));
        }
        self.spans.export(Span {
            name: "deliver",
            kind: SpanKind::Client,
            trace: a.message.trace(),
            id: request.span,
            parent: Some(SpanId::of_message_id(&a.message.id)),
            start,
            end: start + a.took,
            attributes,
        });
    }

    async fn retry_later(&self, entry: &Entry, next: &Job, delay: Duration) {
        if !self.consumer.retry_later(entry, next, delay).await {
            tracing::error!(
                entry = %entry.id,
                "could not schedule the retry; the job stays pending and will be taken over"
            );
        }
    }

    async fn store_dead_letter(&self, row: NewDeadLetter) -> bool {
        let pool = self.pool.clone();
        let stored = tokio::task::spawn_blocking(move || {
            pool.get()
                .map_err(anyhow::Error::from)
                .and_then(|mut c| Ok(repo::insert_dead_letter(&mut c, &row)?))
        })
        .await;
        match stored {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "dead letter not stored");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "dead letter task failed");
                false
            }
        }
    }
}

/// The dead letter of `job`: its whole request (as prepared, minus the
/// per-attempt signature headers) and the message it came from.
fn dead_letter(
    job: &Job,
    message: &Message,
    prepared: Option<&Prepared>,
    reason: &str,
) -> NewDeadLetter {
    let request = json!({
        "method": prepared.map(|p| p.method).unwrap_or(message.http_method.as_str()),
        "url": prepared.map(|p| p.url.as_str()),
        "headers": prepared.map(|p| p.headers.iter().filter(|(k, _)| !k.starts_with("webhook-") && k != "x-switch-attempt").cloned().collect::<Vec<_>>()),
        "body": message.body,
        "message": message,
    });
    NewDeadLetter {
        message_id: message.id.clone(),
        subscriber_id: job.subscriber_id,
        topic: message.topic.clone(),
        // JSON escapes NUL; the rest is text of our own or sanitized.
        request: request.to_string(),
        last_error: storable(reason).chars().take(MAX_ERROR_CHARS * 4).collect(),
        attempts: job.attempt as i32,
        created_at: now(),
    }
}

/// A job that cannot be decoded is stored as it was, for inspection.
fn raw_dead_letter(entry: &Entry, error: &str) -> NewDeadLetter {
    NewDeadLetter {
        message_id: String::new(),
        subscriber_id: 0,
        topic: String::new(),
        request: json!({"raw": entry.raw}).to_string(),
        last_error: storable(&format!("unreadable job: {error}")).into_owned(),
        attempts: 0,
        created_at: now(),
    }
}
