//! What becomes of a job after an attempt: a pure function of the attempt
//! number, the retry policy and what the receiver did, so that every rule
//! (410 dead at once, blocked targets dead at once, the retry schedule,
//! `Retry-After`, the last attempt) is tested without Redis or a database.

use std::time::Duration;

use switch_core::backoff::retry_delay;

use crate::send::{Failure, FailureKind, Sent};

/// The retry rules in force.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Delays before retry 1, 2, …; attempts = entries + 1.
    pub schedule: &'a [Duration],
}

impl Policy<'_> {
    pub fn max_attempts(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }
}

/// How a job ends on this attempt. A delivery's outcome is data.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered(u16),
    /// The attempt failed; the next one is due after `delay`.
    Retry { failure: Failure, delay: Duration },
    /// No further attempt: the job becomes a dead letter saying why.
    Dead(Failure),
    /// No attempt was made (the database is away): the same attempt later.
    Postpone(Duration),
    /// Nothing left to deliver to (the subscriber was deleted): finished.
    Dropped(Failure),
}

impl Outcome {
    /// The `outcome` of the attempt row, when an attempt is recorded.
    pub fn recorded_as(&self) -> Option<&'static str> {
        match self {
            Outcome::Delivered(_) => Some("delivered"),
            Outcome::Retry { .. } => Some("failed"),
            Outcome::Dead(_) | Outcome::Dropped(_) => Some("dead"),
            Outcome::Postpone(_) => None,
        }
    }

    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Retry { failure, .. } | Outcome::Dead(failure) | Outcome::Dropped(failure) => {
                Some(failure)
            }
            Outcome::Delivered(_) | Outcome::Postpone(_) => None,
        }
    }
}

/// Decides the outcome of attempt `attempt` (from 1) that ended in `sent`.
pub fn decide(attempt: u32, policy: &Policy, sent: &Sent) -> Outcome {
    let failure = match sent {
        Sent::Delivered(status) => return Outcome::Delivered(*status),
        Sent::Failed(f) => f,
    };
    if failure.status == Some(410) {
        return Outcome::Dead(Failure {
            message: "HTTP 410 Gone: subscriber disabled".into(),
            ..failure.clone()
        });
    }
    if failure.kind == FailureKind::Blocked {
        return Outcome::Dead(failure.clone());
    }
    if attempt < policy.max_attempts() {
        return Outcome::Retry {
            failure: failure.clone(),
            delay: retry_delay(policy.schedule, attempt as usize, failure.retry_after),
        };
    }
    Outcome::Dead(Failure {
        message: format!(
            "{} after {attempt} attempts: {}",
            failure.kind.as_str(),
            failure.message
        ),
        ..failure.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: FailureKind, status: Option<u16>, retry_after: Option<u64>) -> Sent {
        Sent::Failed(Failure {
            kind,
            status,
            message: "boom".into(),
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    const SCHEDULE: [Duration; 2] = [Duration::from_secs(10), Duration::from_secs(100)];

    #[test]
    fn each_rule() {
        let policy = Policy {
            schedule: &SCHEDULE,
        };
        assert_eq!(
            decide(1, &policy, &Sent::Delivered(204)),
            Outcome::Delivered(204)
        );
        // Retries follow the schedule with jitter.
        match decide(
            2,
            &policy,
            &failed(FailureKind::HttpStatus, Some(500), None),
        ) {
            Outcome::Retry { delay, failure } => {
                assert!(delay >= Duration::from_secs(90) && delay <= Duration::from_secs(110));
                assert_eq!(failure.status, Some(500));
            }
            other => panic!("{other:?}"),
        }
        // A longer Retry-After wins.
        match decide(
            1,
            &policy,
            &failed(FailureKind::HttpStatus, Some(429), Some(600)),
        ) {
            Outcome::Retry { delay, .. } => assert_eq!(delay, Duration::from_secs(600)),
            other => panic!("{other:?}"),
        }
        // The last attempt is dead and says how many were made.
        match decide(3, &policy, &failed(FailureKind::Timeout, None, None)) {
            Outcome::Dead(f) => assert_eq!(f.message, "timeout after 3 attempts: boom"),
            other => panic!("{other:?}"),
        }
        // 410 and a blocked target are dead at once.
        assert!(matches!(
            decide(1, &policy, &failed(FailureKind::HttpStatus, Some(410), None)),
            Outcome::Dead(f) if f.message.contains("410")
        ));
        assert!(matches!(
            decide(1, &policy, &failed(FailureKind::Blocked, None, None)),
            Outcome::Dead(f) if f.kind == FailureKind::Blocked
        ));
        // No schedule: one attempt.
        let once = Policy { schedule: &[] };
        assert!(matches!(
            decide(1, &once, &failed(FailureKind::Connect, None, None)),
            Outcome::Dead(_)
        ));
    }

    #[test]
    fn only_attempts_made_are_recorded() {
        assert_eq!(Outcome::Postpone(Duration::ZERO).recorded_as(), None);
        assert_eq!(Outcome::Delivered(200).recorded_as(), Some("delivered"));
    }
}
