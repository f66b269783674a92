//! The delivery job: one per (message, matching subscriber), as it sits in Redis.

use std::sync::Arc;

use crate::message::Message;

/// A job names the subscriber and the attempt, and carries the message as JSON
/// (serialized once per publish, shared by every job of the message).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub subscriber_id: i64,
    /// The attempt this job will make, from 1.
    pub attempt: u32,
    /// A replay: the worker reads the subscriber afresh (its URL or state may
    /// have just been fixed) instead of trusting its snapshot.
    pub replay: bool,
    pub message_json: Arc<str>,
}

/// A stored job that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("malformed job: {0}")]
pub struct JobDecodeError(pub String);

impl Job {
    pub fn new(subscriber_id: i64, attempt: u32, message_json: Arc<str>) -> Self {
        Job {
            subscriber_id,
            attempt,
            replay: false,
            message_json,
        }
    }

    /// Attempt 1 of a replayed dead letter.
    pub fn replay(subscriber_id: i64, message_json: Arc<str>) -> Self {
        Job {
            subscriber_id,
            attempt: 1,
            replay: true,
            message_json,
        }
    }

    /// `v1|<subscriber>|<attempt>|<flags>|<message json>`: cheap to write, and
    /// Lua can move it untouched. Flags: `r` for a replay.
    pub fn encode(&self) -> String {
        let flags = if self.replay { "r" } else { "" };
        format!(
            "v1|{}|{}|{flags}|{}",
            self.subscriber_id, self.attempt, self.message_json
        )
    }

    pub fn decode(src: &str) -> Result<Self, JobDecodeError> {
        let mut parts = src.splitn(5, '|');
        let (Some("v1"), Some(sub), Some(attempt), Some(flags), Some(msg)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(JobDecodeError(format!("unknown layout: {:.60}", src)));
        };
        let attempt = match attempt.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(JobDecodeError(format!("bad attempt {attempt}"))),
        };
        Ok(Job {
            subscriber_id: sub
                .parse()
                .map_err(|_| JobDecodeError(format!("bad subscriber id {sub}")))?,
            attempt,
            replay: flags.contains('r'),
            message_json: Arc::from(msg),
        })
    }

    pub fn message(&self) -> Result<Message, JobDecodeError> {
        serde_json::from_str(&self.message_json).map_err(|e| JobDecodeError(e.to_string()))
    }

    /// The same job, for its next attempt.
    pub fn next_attempt(&self) -> Job {
        Job {
            attempt: self.attempt + 1,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_pipes_in_the_message() {
        let j = Job::new(42, 3, Arc::from(r#"{"id":"m","body":"a|b|c"}"#));
        assert_eq!(Job::decode(&j.encode()).unwrap(), j);
        let r = Job::replay(42, Arc::from("{}"));
        assert_eq!(Job::decode(&r.encode()).unwrap(), r);
        assert!(Job::decode(&r.next_attempt().encode()).unwrap().replay);
        assert!(Job::decode("v2|1|1||{}").is_err());
        assert!(Job::decode("v1|x|1||{}").is_err());
        assert!(Job::decode("v1|1").is_err());
        assert!(Job::decode("v1|1|0||{}").is_err(), "attempts count from 1");
    }
}
