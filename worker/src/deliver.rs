//! One attempt of one job: finds the subscriber, builds the request, checks
//! the target, sends it, and decides the [`Outcome`]. It touches neither the
//! queue nor the database's tables; [`crate::settle`] applies the outcome.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use switch_core::db::models::now;
use switch_core::job::Job;
use switch_core::message::Message;
use switch_core::queue::Entry;
use switch_core::subscribers::Cache;
use switch_core::target::TargetPolicy;
use switch_core::Settings;

use crate::decide::{decide, Outcome, Policy};
use crate::request::{prepare, Prepared, Signing};
use crate::scheduling::POISON_DELIVERIES;
use crate::send::{send, Failure, FailureKind};

/// Wait before trying a job again whose subscriber could not be read.
const LOOKUP_RETRY: Duration = Duration::from_secs(5);

/// What one attempt did, for [`crate::settle`].
#[derive(Debug)]
pub struct Attempted {
    pub job: Job,
    pub message: Message,
    pub outcome: Outcome,
    /// The request as sent (or as it would have been): what a dead letter keeps.
    pub request: Option<Prepared>,
    /// Time spent sending, zero when nothing was sent.
    pub took: Duration,
    /// When the request was sent, if it was.
    pub sent_at: Option<SystemTime>,
    pub probe: bool,
}

/// An entry that cannot become an [`Attempted`]: stored as it is.
#[derive(Debug)]
pub struct Unreadable {
    pub error: String,
}

pub struct Deliverer {
    pub settings: Settings,
    pub cache: Arc<Cache>,
    pub client: reqwest::Client,
    pub targets: TargetPolicy,
}

impl Deliverer {
    pub async fn attempt(&self, entry: &Entry) -> Result<Attempted, Unreadable> {
        let job = entry.job.clone().map_err(|error| Unreadable { error })?;
        let message = job.message().map_err(|e| Unreadable {
            error: e.to_string(),
        })?;
        let mut attempted = Attempted {
            job,
            message,
            outcome: Outcome::Postpone(LOOKUP_RETRY),
            request: None,
            took: Duration::ZERO,
            sent_at: None,
            probe: entry.probe,
        };
        if entry.deliveries > POISON_DELIVERIES {
            attempted.outcome = Outcome::Dead(Failure::before_sending(
                FailureKind::Poison,
                format!(
                    "poison job: handed out {} times, and each worker delivering it stopped before finishing",
                    entry.deliveries
                ),
            ));
            return Ok(attempted);
        }
        self.run(&mut attempted).await;
        Ok(attempted)
    }

    async fn run(&self, a: &mut Attempted) {
        #[cfg(feature = "fault-injection")]
        if a.message.topic == "fault.panic" {
            panic!("fault injected: a delivery that panics");
        }
        let id = a.job.subscriber_id;
        // Replays, and subscribers this snapshot has disabled (they may have been
        // enabled since), are read afresh: their URL or state may just have been fixed.
        let sub = match self.cache.lookup(id).await {
            Ok(Some(s)) if a.job.replay || !s.row.enabled => self.cache.fetch_fresh(id).await,
            other => other,
        };
        let sub = match sub {
            Ok(Some(s)) => s,
            Ok(None) => {
                a.outcome = Outcome::Dropped(Failure::before_sending(
                    FailureKind::SubscriberDeleted,
                    "subscriber no longer exists",
                ));
                return;
            }
            Err(e) => {
                // Database away: the same attempt again shortly.
                tracing::warn!(message_id = %a.message.id, subscriber_id = id, error = %e, "subscriber lookup failed; job postponed");
                a.outcome = Outcome::Postpone(LOOKUP_RETRY);
                return;
            }
        };
        let row = &sub.row;
        let Some(secret) = row.secret.as_deref() else {
            // Never sign with an empty key: the row gets its secret on the next read.
            tracing::warn!(
                subscriber_id = id,
                "subscriber has no secret yet; job postponed"
            );
            a.outcome = Outcome::Postpone(LOOKUP_RETRY);
            return;
        };
        let previous = row
            .previous_secret
            .as_deref()
            .filter(|_| row.previous_secret_expires_at.is_some_and(|t| t > now()));
        let signing = Signing { secret, previous };
        let ts = chrono::Utc::now().timestamp();
        let prepared = match prepare(&a.message, &row.target_url, &signing, a.job.attempt, ts) {
            Ok(p) => p,
            Err(e) => {
                a.outcome = Outcome::Dead(Failure::before_sending(FailureKind::InvalidUrl, e));
                return;
            }
        };
        if !row.enabled {
            let reason = match row.disabled_reason.as_deref() {
                Some(why) => format!("subscriber is disabled ({why})"),
                None => "subscriber is disabled".to_string(),
            };
            a.request = Some(prepared);
            a.outcome = Outcome::Dead(Failure::before_sending(FailureKind::Disabled, reason));
            return;
        }
        if let Some(why) = crate::target::blocked_literal(&self.targets, &prepared.url) {
            a.request = Some(prepared);
            a.outcome = Outcome::Dead(Failure::before_sending(FailureKind::Blocked, why));
            return;
        }
        a.sent_at = Some(SystemTime::now());
        let (sent, took) = send(&self.client, &prepared, self.settings.delivery_timeout).await;
        a.took = took;
        a.outcome = decide(
            a.job.attempt,
            &Policy {
                schedule: &self.settings.retry_schedule,
            },
            &sent,
        );
        a.request = Some(prepared);
    }
}
