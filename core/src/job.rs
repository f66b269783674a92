//! The delivery job: one per (message, matching subscriber), as it sits in Redis.

use std::sync::Arc;

use crate::message::Message;

/// A job names the subscriber, the attempt and the message. In Redis it holds
/// only the message's id (and ordering key): the message itself is stored
/// once per queue partition and shared by every job of the publish (see
/// [`crate::queue`]). Read back, `message_json` is filled from that copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub subscriber_id: i64,
    /// The attempt this job will make, from 1.
    pub attempt: u32,
    /// A replay: the worker reads the subscriber afresh (its URL or state may
    /// have just been fixed) instead of trusting its snapshot.
    pub replay: bool,
    pub message_id: Arc<str>,
    /// Jobs of one subscriber with the same key are delivered one at a time,
    /// in publish order.
    pub ordering_key: Option<Arc<str>>,
    pub message_json: Arc<str>,
    /// False for a job written with its message inline (`v1`, before bodies
    /// were stored apart): it keeps that layout on every retry.
    pub stored_body: bool,
}

/// A stored job that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("malformed job: {0}")]
pub struct JobDecodeError(pub String);

/// The id and ordering key of a message, read from its JSON.
#[derive(serde::Deserialize)]
struct Head {
    #[serde(default)]
    id: String,
    #[serde(default)]
    ordering_key: Option<String>,
}

impl Job {
    /// A job of the message `message_json` (its id and ordering key are read from it).
    pub fn new(subscriber_id: i64, attempt: u32, message_json: Arc<str>) -> Self {
        let head: Head = serde_json::from_str(&message_json).unwrap_or(Head {
            id: String::new(),
            ordering_key: None,
        });
        Job {
            subscriber_id,
            attempt,
            replay: false,
            // A message without an id cannot be stored apart: it stays inline.
            stored_body: !head.id.is_empty(),
            message_id: Arc::from(head.id),
            ordering_key: head.ordering_key.map(Arc::from),
            message_json,
        }
    }

    /// Attempt 1 of `message` for `subscriber_id`, when its id and key are known.
    pub fn first(
        subscriber_id: i64,
        message_id: Arc<str>,
        ordering_key: Option<Arc<str>>,
        message_json: Arc<str>,
    ) -> Self {
        Job {
            subscriber_id,
            attempt: 1,
            replay: false,
            message_id,
            ordering_key,
            message_json,
            stored_body: true,
        }
    }

    /// Attempt 1 of a replayed dead letter.
    pub fn replay(subscriber_id: i64, message_json: Arc<str>) -> Self {
        Job {
            replay: true,
            ..Job::new(subscriber_id, 1, message_json)
        }
    }

    /// `v2|<subscriber>|<attempt>|<flags>|<message id>|<ordering key>`: a few
    /// dozen bytes whatever the message's size; Lua can move it untouched.
    /// Flags: `r` for a replay, `k` when there is an ordering key. A job read
    /// in the inline layout is written back in it:
    /// `v1|<subscriber>|<attempt>|<flags>|<message json>`.
    pub fn encode(&self) -> String {
        let r = if self.replay { "r" } else { "" };
        if !self.stored_body {
            return format!(
                "v1|{}|{}|{r}|{}",
                self.subscriber_id, self.attempt, self.message_json
            );
        }
        match &self.ordering_key {
            Some(key) => format!(
                "v2|{}|{}|{r}k|{}|{key}",
                self.subscriber_id, self.attempt, self.message_id
            ),
            None => format!(
                "v2|{}|{}|{r}|{}|",
                self.subscriber_id, self.attempt, self.message_id
            ),
        }
    }

    /// Reads a stored job. A `v2` job comes back with an empty `message_json`,
    /// to be filled from the stored message.
    pub fn decode(src: &str) -> Result<Self, JobDecodeError> {
        let bad = || JobDecodeError(format!("unknown layout: {:.60}", src));
        let (version, rest) = src.split_once('|').ok_or_else(bad)?;
        let mut parts = rest.splitn(if version == "v2" { 5 } else { 4 }, '|');
        let (Some(sub), Some(attempt), Some(flags)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let attempt = match attempt.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(JobDecodeError(format!("bad attempt {attempt}"))),
        };
        let subscriber_id = sub
            .parse()
            .map_err(|_| JobDecodeError(format!("bad subscriber id {sub}")))?;
        let replay = flags.contains('r');
        match version {
            "v1" => {
                let msg = parts.next().ok_or_else(bad)?;
                let job = Job::new(subscriber_id, attempt, Arc::from(msg));
                Ok(Job {
                    replay,
                    stored_body: false,
                    ..job
                })
            }
            "v2" => {
                let (Some(id), Some(key)) = (parts.next(), parts.next()) else {
                    return Err(bad());
                };
                if id.is_empty() {
                    return Err(bad());
                }
                Ok(Job {
                    subscriber_id,
                    attempt,
                    replay,
                    message_id: Arc::from(id),
                    ordering_key: flags.contains('k').then(|| Arc::from(key)),
                    message_json: Arc::from(""),
                    stored_body: true,
                })
            }
            _ => Err(bad()),
        }
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
    fn a_stored_job_names_its_message_and_key_but_does_not_hold_it() {
        let json: Arc<str> = Arc::from(r#"{"id":"msg_1","ordering_key":"a|b","body":"x|y"}"#);
        let j = Job::new(42, 3, json.clone());
        assert_eq!(&*j.message_id, "msg_1");
        assert_eq!(j.ordering_key.as_deref(), Some("a|b"));
        let text = j.encode();
        assert_eq!(text, "v2|42|3|k|msg_1|a|b");
        let back = Job::decode(&text).unwrap();
        assert_eq!(back.message_json.len(), 0, "filled from the stored copy");
        assert_eq!(
            Job {
                message_json: json,
                ..back
            },
            j
        );

        let unkeyed = Job::new(7, 1, Arc::from(r#"{"id":"msg_2"}"#));
        let back = Job::decode(&unkeyed.encode()).unwrap();
        assert_eq!(back.ordering_key, None);
        assert!(
            Job::decode(&Job::replay(7, Arc::from(r#"{"id":"m"}"#)).encode())
                .unwrap()
                .replay
        );
    }

    #[test]
    fn an_inline_job_stays_inline_on_retry() {
        let old = r#"v1|9|2|r|{"id":"msg_3","body":"a|b|c"}"#;
        let j = Job::decode(old).unwrap();
        assert!(!j.stored_body && j.replay);
        assert_eq!(&*j.message_id, "msg_3");
        assert_eq!(j.next_attempt().encode(), old.replace("v1|9|2", "v1|9|3"));
    }

    #[test]
    fn a_message_without_an_id_stays_inline() {
        let j = Job::new(3, 1, Arc::from(r#"{"topic":"t"}"#));
        assert!(!j.stored_body);
        assert_eq!(
            Job::decode(&j.encode()).unwrap().message_json,
            j.message_json
        );
    }

    #[test]
    fn malformed_jobs_are_refused() {
        for bad in [
            "v3|1|1||m|",
            "v2|x|1||m|",
            "v2|1|0||m|",
            "v2|1|1||",
            "v2|1|1|",
            "v1|1",
            "",
        ] {
            assert!(Job::decode(bad).is_err(), "{bad}");
        }
    }
}
