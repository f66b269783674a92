//! The message log's way into the database. The enqueue script adds every
//! published message to the stream `{ns}:log` in the same atomic step as its
//! jobs; archivers (a consumer group, one member per worker process) write
//! entries to the `messages` table in batches and delete them from the
//! stream only after the commit, so a database outage delays the log but
//! loses nothing.
//!
//! Publish order is the entry id Redis gives each message (one Redis, so one
//! order across every server, whatever their clocks). The `since` cursor is
//! that order; and because an entry leaves the stream only once its row is
//! committed, the oldest entry still in the stream is a *horizon*: every
//! message before it is in the database. Listing only rows before the horizon
//! means a poller never passes a row that commits later with a smaller cursor.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{RedisResult, Value};

use super::{value_string, Queue};
use crate::db::models::LoggedMessage;

pub const ARCHIVERS: &str = "archivers";
/// A log entry an archiver has held this long without finishing (it died) is taken over.
pub const LOG_CLAIM_IDLE: Duration = Duration::from_secs(30);

/// Cursor positions per millisecond: an entry id `ms-n` is `ms * SEQ_PER_MS + n`.
const SEQ_PER_MS: i64 = 1_000_000;

/// The place of entry id `ms-n` in publish order.
pub fn seq_of(entry_id: &str) -> Option<i64> {
    let (ms, n) = entry_id.split_once('-')?;
    let ms: i64 = ms.parse().ok()?;
    let n: i64 = n.parse().ok()?;
    Some(ms * SEQ_PER_MS + n.min(SEQ_PER_MS - 1))
}

// KEYS: log. Returns {'first', id} for the oldest entry not yet archived;
// else {'last', id, ms}: every entry is archived, and a later one gets an id
// above both the last id and Redis's clock (a stream recreated empty after
// Redis lost its data has last id 0-0, yet its next ids follow the clock).
static HORIZON: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first > 0 then return {'first', first[1][1], '0'} end
local last = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
local t = redis.call('TIME')
return {'last', last, tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))}
"#,
    )
});

/// One logged message read from the stream.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub id: String,
    pub seq: i64,
    pub message_json: String,
    pub subscriber_ids: Vec<i64>,
}

/// The fields of a logged message that become a row, borrowed from its JSON
/// text: the body, headers and params are stored as the text they arrive as,
/// never parsed into values and written out again.
#[derive(serde::Deserialize)]
struct Logged<'a> {
    id: String,
    topic: String,
    #[serde(default)]
    author: Option<String>,
    #[serde(borrow, default)]
    body: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    headers: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    query_params: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    path_params: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    http_method: crate::message::HttpMethod,
    #[serde(default)]
    published_at_ms: i64,
    #[serde(default)]
    ordering_key: Option<String>,
}

fn raw_or(v: Option<&serde_json::value::RawValue>, empty: &str) -> String {
    v.map(|r| r.get().to_string())
        .unwrap_or_else(|| empty.to_string())
}

impl LogEntry {
    /// The row this entry becomes; `Err` when its message cannot be read.
    pub fn to_row(&self) -> Result<LoggedMessage, String> {
        let m: Logged = serde_json::from_str(&self.message_json).map_err(|e| e.to_string())?;
        let created_at = chrono::DateTime::from_timestamp_millis(m.published_at_ms)
            .unwrap_or_default()
            .naive_utc();
        Ok(LoggedMessage {
            id: m.id,
            log_seq: self.seq,
            topic: m.topic,
            author: m.author,
            body: raw_or(m.body, "{}"),
            headers: raw_or(m.headers, "{}"),
            query_params: raw_or(m.query_params, "{}"),
            path_params: raw_or(m.path_params, "{}"),
            http_method: m.http_method.as_str().to_string(),
            ordering_key: m.ordering_key,
            matched: self.subscriber_ids.len() as i32,
            subscriber_ids: serde_json::to_string(&self.subscriber_ids).unwrap_or_default(),
            created_at,
        })
    }
}

pub(crate) fn parse_log_entries(v: Value) -> Vec<LogEntry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else {
                return None;
            };
            let fields = pair.pop()?;
            let id = value_string(pair.first()?)?;
            let fields: Vec<String> = match fields {
                Value::Array(f) => f.iter().filter_map(value_string).collect(),
                Value::Map(m) => m
                    .iter()
                    .flat_map(|(k, v)| [value_string(k), value_string(v)])
                    .flatten()
                    .collect(),
                _ => Vec::new(),
            };
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv.first().map(String::as_str) == Some(name))
                    .and_then(|kv| kv.get(1).cloned())
            };
            Some(LogEntry {
                seq: seq_of(&id)?,
                message_json: field("m").unwrap_or_default(),
                subscriber_ids: field("s")
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|s| s.parse().ok())
                    .collect(),
                id,
            })
        })
        .collect()
}

impl Queue {
    /// Creates the archivers' group (from the start of the log).
    pub async fn ensure_log_group(&self) -> RedisResult<()> {
        self.create_group(&self.keys.log, ARCHIVERS).await
    }

    /// Reads up to `count` new log entries for archiver `consumer`.
    pub async fn read_log(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> RedisResult<Vec<LogEntry>> {
        let mut conn = self.redis().get().await?;
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(ARCHIVERS)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.log)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        Ok(super::read_reply(reply, parse_log_entries))
    }

    /// Takes over log entries another archiver held too long (it died).
    pub async fn claim_log(&self, consumer: &str, count: usize) -> RedisResult<Vec<LogEntry>> {
        let mut conn = self.redis().get().await?;
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.log)
            .arg(ARCHIVERS)
            .arg(consumer)
            .arg(LOG_CLAIM_IDLE.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let Value::Array(mut parts) = reply else {
            return Ok(Vec::new());
        };
        if parts.len() < 2 {
            return Ok(Vec::new());
        }
        Ok(parse_log_entries(parts.swap_remove(1)))
    }

    /// The entries are in the database: out of the stream.
    pub async fn ack_log(&self, ids: &[&str]) -> RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis().get().await?;
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.keys.log)
            .arg(ARCHIVERS)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.log)
            .arg(ids)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// Messages published but not yet in the database.
    pub async fn log_backlog(&self) -> RedisResult<u64> {
        let mut conn = self.redis().get().await?;
        redis::cmd("XLEN")
            .arg(&self.keys.log)
            .query_async(&mut conn)
            .await
    }

    /// The cursor below which every logged message is in the database.
    pub async fn log_horizon(&self) -> RedisResult<i64> {
        let mut conn = self.redis().get().await?;
        let (kind, id, clock_ms): (String, String, String) =
            HORIZON.key(&self.keys.log).invoke_async(&mut conn).await?;
        let bad = || {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected log horizon",
                format!("{kind} {id} {clock_ms}"),
            ))
        };
        let seq = seq_of(&id).ok_or_else(bad)?;
        if kind == "first" {
            return Ok(seq);
        }
        let clock = clock_ms.parse::<i64>().map_err(|_| bad())? * SEQ_PER_MS;
        Ok((seq + 1).max(clock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_follow_entry_ids() {
        assert_eq!(seq_of("1700000000000-0"), Some(1_700_000_000_000_000_000));
        assert!(seq_of("1700000000000-5") < seq_of("1700000000001-0"));
        assert!(seq_of("1700000000000-4") < seq_of("1700000000000-5"));
        assert_eq!(seq_of("nonsense"), None);
    }
}
