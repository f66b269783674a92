//! The live stream's source in Redis. While any server has stream clients it
//! keeps `{ns}:live:on` alive, and the enqueue script then adds every logged
//! message to `{ns}:live` (capped at about [`LIVE_KEEP`] entries) under the
//! very entry id it has in the log, so a client resuming from the log and
//! going live sees one order with no gap and no duplicate at the seam. Each
//! server reads the live stream once and fans it out to its own clients.

use std::time::Duration;

use redis::{RedisResult, Value};

use super::log::{parse_log_entries as entries, LogEntry};
use super::Queue;

/// Entries the live stream keeps (about: trimmed with `~`).
pub const LIVE_KEEP: usize = 10_000;
/// Lifetime of the live flag; a server with clients refreshes it well before.
pub const LIVE_FLAG_TTL: Duration = Duration::from_secs(30);

impl Queue {
    /// Turns the live stream on for [`LIVE_FLAG_TTL`]; returns Redis's clock
    /// (as a cursor): every message logged after it is in the live stream.
    pub async fn live_on(&self) -> RedisResult<i64> {
        let mut conn = self.redis().get().await?;
        let ((), (secs, micros)): ((), (i64, i64)) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&self.keys.live_on)
            .arg(1)
            .arg("PX")
            .arg(LIVE_FLAG_TTL.as_millis() as u64)
            .cmd("TIME")
            .query_async(&mut conn)
            .await?;
        Ok((secs * 1000 + micros / 1000) * 1_000_000)
    }

    /// The id of the newest live entry (where a reader starts), if any.
    pub async fn live_last_id(&self) -> RedisResult<String> {
        let mut conn = self.redis().get().await?;
        let v: Value = redis::cmd("XREVRANGE")
            .arg(&self.keys.live)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        Ok(entries(v)
            .first()
            .map(|e| e.id.clone())
            .unwrap_or_else(|| "0-0".into()))
    }

    /// Live entries after `after` (an entry id), waiting up to `block`.
    pub async fn read_live(
        &self,
        after: &str,
        count: usize,
        block: Duration,
    ) -> RedisResult<Vec<LogEntry>> {
        let mut conn = self.redis().get().await?;
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.live)
            .arg(after)
            .query_async(&mut conn)
            .await?;
        Ok(super::read_reply(reply, entries))
    }
}
