//! The delivery queue on Redis Streams.
//!
//! Layout (every key shares the hash tag `{<namespace>}`, so each script and
//! transaction touches one Redis Cluster slot):
//! - `{ns}:jobs`: a stream of ready jobs, read by the consumer group `workers`.
//!   A job is XACKed and XDELed when it is finished, so the stream holds only
//!   pending work and per-job cost does not grow with the backlog.
//! - `{ns}:delayed`: a sorted set of retries by due time (ms); moved back into
//!   the stream in bounded chunks by a script.
//! - `{ns}:idem:<author>:<key>`: idempotency records, 24 h.
//! - `{ns}:log`: every published message, added in the script that enqueues
//!   its jobs and removed once the archiver has it in the database (see [`log`]).
//! - `{ns}:parked:<subscriber>`: jobs of a subscriber that is at its in-flight
//!   limit or whose circuit is open, moved out of the stream (see [`parking`])
//!   so that they hold no worker; `{ns}:parked` is the set of such subscribers.
//! - `{ns}:circuit:<subscriber>`: the subscriber's circuit breaker, shared by
//!   every worker (see [`circuit`]); `{ns}:circuits` lists those that have one.
//!
//! A job read by a worker stays in the group's pending list until it is acked;
//! a worker refreshes the idle time of its in-flight jobs, and any worker claims
//! (XAUTOCLAIM) jobs idle longer than [`CLAIM_IDLE`], so a killed worker loses nothing.

pub mod circuit;
mod connection;
pub mod consumer;
pub mod live;
pub mod log;
pub mod parking;
mod stats;

pub use connection::RedisHandle;
pub use stats::{DeliveryStats, HubStats, DURATION_BUCKETS};

use std::time::Duration;

use redis::{RedisResult, Value};

use crate::job::Job;

pub const GROUP: &str = "workers";
/// A pending job whose worker has not refreshed it for this long is taken over.
pub const CLAIM_IDLE: Duration = Duration::from_secs(15);
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

// KEYS: stream, stats, message log, live flag, live stream[, idempotency
// key]. While the live flag exists (some server has stream clients), each
// logged message is also added to the live stream under the same entry id,
// so live readers and the log share one order. ARGV: record, ttl,
// '1' when these are publishes (counted in the hub's totals), the number of
// messages, then per message: its log text ('' for none), its subscriber ids,
// its job count, and its jobs. All of it lands, or none.
const ENQUEUE: &str = r#"
if #KEYS == 6 then
  local prev = redis.call('GET', KEYS[6])
  if prev then return prev end
  redis.call('SET', KEYS[6], ARGV[1], 'EX', ARGV[2])
end
local live = redis.call('EXISTS', KEYS[4]) == 1
local i = 5
local jobs = 0
for m = 1, tonumber(ARGV[4]) do
  local n = tonumber(ARGV[i + 2])
  if ARGV[i] ~= '' then
    local id = redis.call('XADD', KEYS[3], '*', 'm', ARGV[i], 's', ARGV[i + 1])
    if live then
      redis.call('XADD', KEYS[5], 'MAXLEN', '~', LIVE_KEEP, id, 'm', ARGV[i], 's', ARGV[i + 1])
    end
  end
  for j = i + 3, i + 2 + n do
    redis.call('XADD', KEYS[1], '*', 'j', ARGV[j])
  end
  i = i + 3 + n
  jobs = jobs + n
end
if ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[2], 'published', tonumber(ARGV[4]))
  redis.call('HINCRBY', KEYS[2], 'matched', jobs)
end
return false
"#;

const PROMOTE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'j', m)
  redis.call('ZREM', KEYS[1], m)
end
local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, next[2] or false}
"#;

/// Key names of one namespace.
#[derive(Debug, Clone)]
pub struct Keys {
    pub stream: String,
    pub delayed: String,
    /// Bumped on every subscriber change made through the API, so every
    /// process reloads at once instead of waiting for its refresh interval.
    pub subscribers_version: String,
    /// A hash of hub-wide totals (publishes, matches, delivery outcomes and
    /// durations), so every server and worker can show the whole hub's figures.
    pub stats: String,
    /// The message log on its way to the database (see [`log`]).
    pub log: String,
    /// Recent messages for live stream clients, while `live_on` exists (see [`live`]).
    pub live: String,
    pub live_on: String,
    /// Subscribers with parked jobs.
    pub parked: String,
    /// Subscribers with a circuit record (at least one failure since their last success).
    pub circuits: String,
    idem_prefix: String,
    prefix: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Self {
        Keys {
            stream: format!("{{{namespace}}}:jobs"),
            delayed: format!("{{{namespace}}}:delayed"),
            subscribers_version: format!("{{{namespace}}}:subscribers:version"),
            stats: format!("{{{namespace}}}:stats"),
            log: format!("{{{namespace}}}:log"),
            live: format!("{{{namespace}}}:live"),
            live_on: format!("{{{namespace}}}:live:on"),
            parked: format!("{{{namespace}}}:parked"),
            circuits: format!("{{{namespace}}}:circuits"),
            idem_prefix: format!("{{{namespace}}}:idem:"),
            prefix: format!("{{{namespace}}}:"),
        }
    }

    /// Parked jobs of one subscriber, oldest first.
    pub fn parked_jobs(&self, subscriber_id: i64) -> String {
        format!("{}parked:{subscriber_id}", self.prefix)
    }

    /// Bumped on every API key change, so every server reloads its keys at once.
    pub fn keys_version(&self) -> String {
        format!("{}keys:version", self.prefix)
    }

    /// Held by the process deleting old rows, so one does it at a time.
    pub fn retention_lock(&self) -> String {
        format!("{}retention", self.prefix)
    }

    /// The circuit breaker of one subscriber.
    pub fn circuit(&self, subscriber_id: i64) -> String {
        format!("{}circuit:{subscriber_id}", self.prefix)
    }

    pub fn idempotency(&self, author: &str, key: &str) -> String {
        format!(
            "{}{}:{}",
            self.idem_prefix,
            author.len(),
            format_args!("{author}:{key}")
        )
    }
}

/// A job read from the stream, with the entry id needed to ack it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    /// The stored text; `Err` when it cannot be decoded (it is then dead-lettered).
    pub job: Result<Job, String>,
    pub raw: String,
    /// Released from an open circuit to probe it: delivered even though the
    /// circuit is not closed.
    pub probe: bool,
    /// Times the entry was handed to a worker (1 when read; each takeover adds one).
    pub deliveries: u32,
}

/// What one pass of [`Queue::promote_due`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    pub moved: usize,
    /// Due time of the earliest retry still waiting, if any.
    pub next_due_ms: Option<i64>,
}

/// One message to publish: its JSON (logged) and its jobs.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    pub message_json: &'a str,
    pub jobs: &'a [Job],
}

static ENQUEUE_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&ENQUEUE.replace("LIVE_KEEP", &live::LIVE_KEEP.to_string()))
});

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    New,
    /// An earlier publish with the same idempotency key; holds what it stored.
    Duplicate(String),
}

#[derive(Clone)]
pub struct Queue {
    pub keys: Keys,
    redis: RedisHandle,
    promote: redis::Script,
}

impl Queue {
    pub fn new(namespace: &str, redis: RedisHandle) -> Self {
        Queue {
            keys: Keys::new(namespace),
            redis,
            promote: redis::Script::new(PROMOTE),
        }
    }

    pub fn redis(&self) -> &RedisHandle {
        &self.redis
    }

    /// Puts every job of one message into the stream, and the message into
    /// the log, in one atomic script: all or none. With an idempotency key, a
    /// second call stores nothing and returns the first call's `record`.
    pub async fn enqueue(
        &self,
        message_json: &str,
        jobs: &[Job],
        idempotency: Option<(&str, &str)>,
    ) -> RedisResult<Enqueued> {
        self.run_enqueue(&[Publish { message_json, jobs }], idempotency, true)
            .await
    }

    /// Publishes several messages at once: every job and log entry of all of
    /// them, or nothing.
    pub async fn enqueue_batch(&self, publishes: &[Publish<'_>]) -> RedisResult<()> {
        self.run_enqueue(publishes, None, true).await.map(|_| ())
    }

    async fn run_enqueue(
        &self,
        publishes: &[Publish<'_>],
        idempotency: Option<(&str, &str)>,
        is_publish: bool,
    ) -> RedisResult<Enqueued> {
        let mut conn = self.redis.get().await?;
        let mut inv = ENQUEUE_SCRIPT.prepare_invoke();
        inv.key(&self.keys.stream)
            .key(&self.keys.stats)
            .key(&self.keys.log)
            .key(&self.keys.live_on)
            .key(&self.keys.live);
        match idempotency {
            Some((key, record)) => {
                inv.key(key).arg(record).arg(IDEMPOTENCY_TTL_SECS);
            }
            None => {
                inv.arg("").arg(0);
            }
        }
        inv.arg(if is_publish { "1" } else { "0" })
            .arg(publishes.len());
        for p in publishes {
            let subscribers: Vec<String> =
                p.jobs.iter().map(|j| j.subscriber_id.to_string()).collect();
            inv.arg(p.message_json)
                .arg(subscribers.join(","))
                .arg(p.jobs.len());
            for job in p.jobs {
                inv.arg(job.encode());
            }
        }
        let prev: Option<String> = inv.invoke_async(&mut conn).await?;
        Ok(match prev {
            Some(p) => Enqueued::Duplicate(p),
            None => Enqueued::New,
        })
    }

    /// Creates the consumer group (from the start of the stream, so nothing
    /// published before the first worker is skipped).
    pub async fn ensure_group(&self) -> RedisResult<()> {
        self.create_group(&self.keys.stream, GROUP).await
    }

    /// Creates consumer group `group` of `stream` (and the stream) unless it exists.
    pub(crate) async fn create_group(&self, stream: &str, group: &str) -> RedisResult<()> {
        let mut conn = self.redis.get().await?;
        let r: RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Reads up to `count` new jobs for `consumer`, waiting up to `block`, and
    /// the subscribers version (see [`Queue::bump_subscribers_version`]) as it
    /// stands once they are read. Both go in one round trip: Redis answers the
    /// GET only after the blocking read returns, so a subscriber change made
    /// before these jobs were published is always within the version.
    pub async fn read(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> RedisResult<(Vec<Entry>, i64)> {
        let mut conn = self.redis.get().await?;
        let (reply, version): (Value, Option<i64>) = redis::pipe()
            .cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.stream)
            .arg(">")
            .cmd("GET")
            .arg(&self.keys.subscribers_version)
            .query_async(&mut conn)
            .await?;
        Ok((read_reply(reply, parse_entries), version.unwrap_or(0)))
    }

    /// Marks jobs finished and removes them from the stream, atomically.
    pub async fn ack(&self, ids: &[&str]) -> RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.get().await?;
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.stream)
            .arg(ids)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// Schedules `next` to run at `due_ms` and finishes entry `id`, atomically.
    pub async fn retry_later(&self, id: &str, next: &Job, due_ms: i64) -> RedisResult<()> {
        let mut conn = self.redis.get().await?;
        redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(&self.keys.delayed)
            .arg(due_ms)
            .arg(next.encode())
            .ignore()
            .cmd("XACK")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.stream)
            .arg(id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// Moves up to `limit` due retries into the stream; returns how many moved
    /// and when (ms) the earliest retry left waiting is due.
    pub async fn promote_due(&self, now_ms: i64, limit: usize) -> RedisResult<Promoted> {
        let mut conn = self.redis.get().await?;
        let (moved, next_due): (usize, Option<String>) = self
            .promote
            .key(&self.keys.delayed)
            .key(&self.keys.stream)
            .arg(now_ms)
            .arg(limit)
            .invoke_async(&mut conn)
            .await?;
        Ok(Promoted {
            moved,
            next_due_ms: next_due
                .and_then(|s| s.parse::<f64>().ok())
                .map(|f| f as i64),
        })
    }

    /// Adds jobs straight to the stream (replays: neither counted as
    /// publishes nor logged again).
    pub async fn push(&self, jobs: &[Job]) -> RedisResult<()> {
        let p = Publish {
            message_json: "",
            jobs,
        };
        self.run_enqueue(&[p], None, false).await.map(|_| ())
    }

    /// Adds a worker's finished attempts to the hub-wide totals.
    pub async fn add_delivery_stats(&self, stats: &DeliveryStats) -> RedisResult<()> {
        if stats.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.get().await?;
        let mut pipe = redis::pipe();
        for (field, n) in stats.fields() {
            pipe.cmd("HINCRBY")
                .arg(&self.keys.stats)
                .arg(field)
                .arg(n)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    }

    /// The hub-wide totals as stored (field → value).
    pub async fn hub_stats(&self) -> RedisResult<std::collections::HashMap<String, i64>> {
        let mut conn = self.redis.get().await?;
        redis::cmd("HGETALL")
            .arg(&self.keys.stats)
            .query_async(&mut conn)
            .await
    }

    /// Resets the idle time of in-flight jobs so no other worker claims them.
    pub async fn keep_alive(&self, consumer: &str, ids: &[String]) -> RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.get().await?;
        redis::cmd("XCLAIM")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(ids)
            .arg("JUSTID")
            .query_async::<Value>(&mut conn)
            .await
            .map(|_| ())
    }

    /// Takes over jobs that other (dead) workers left idle. Returns the next cursor.
    pub async fn claim_abandoned(
        &self,
        consumer: &str,
        cursor: &str,
        count: usize,
    ) -> RedisResult<(String, Vec<Entry>)> {
        let mut conn = self.redis.get().await?;
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(CLAIM_IDLE.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let Value::Array(parts) = reply else {
            return Ok(("0-0".into(), Vec::new()));
        };
        let next = parts
            .first()
            .and_then(value_string)
            .unwrap_or_else(|| "0-0".into());
        let mut entries = parts
            .get(1)
            .map(|v| parse_entries(v.clone()))
            .unwrap_or_default();
        if !entries.is_empty() {
            // How often each was handed out: a job whose deliveries keep
            // killing their worker is a poison job, not one to try forever.
            let mut pipe = redis::pipe();
            for e in &entries {
                pipe.cmd("XPENDING")
                    .arg(&self.keys.stream)
                    .arg(GROUP)
                    .arg(&e.id)
                    .arg(&e.id)
                    .arg(1);
            }
            let counts: Vec<Value> = pipe.query_async(&mut conn).await?;
            for (e, v) in entries.iter_mut().zip(counts) {
                if let Some(n) = pending_deliveries(&v) {
                    e.deliveries = n;
                }
            }
        }
        Ok((next, entries))
    }

    /// Tells every process that subscribers changed; returns the new version.
    pub async fn bump_subscribers_version(&self) -> RedisResult<i64> {
        let mut conn = self.redis.get().await?;
        redis::cmd("INCR")
            .arg(&self.keys.subscribers_version)
            .query_async(&mut conn)
            .await
    }

    pub async fn subscribers_version(&self) -> RedisResult<i64> {
        let mut conn = self.redis.get().await?;
        let v: Option<i64> = redis::cmd("GET")
            .arg(&self.keys.subscribers_version)
            .query_async(&mut conn)
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// Jobs waiting: ready in the stream plus delayed retries.
    pub async fn depth(&self) -> RedisResult<(u64, u64)> {
        let mut conn = self.redis.get().await?;
        let (ready, delayed): (u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(&self.keys.stream)
            .cmd("ZCARD")
            .arg(&self.keys.delayed)
            .query_async(&mut conn)
            .await?;
        Ok((ready, delayed))
    }

    /// Age in ms of the oldest job still in the stream (pending or not), if any.
    pub async fn oldest_age_ms(&self, now_ms: i64) -> RedisResult<Option<i64>> {
        let mut conn = self.redis.get().await?;
        let reply: Value = redis::cmd("XRANGE")
            .arg(&self.keys.stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        Ok(parse_entries(reply)
            .first()
            .and_then(|e| e.id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()))
            .map(|ms| (now_ms - ms).max(0)))
    }
}

/// The delivery count of an `XPENDING key group id id 1` reply:
/// `[[id, consumer, idle, deliveries]]`.
fn pending_deliveries(v: &Value) -> Option<u32> {
    let Value::Array(rows) = v else { return None };
    let Some(Value::Array(row)) = rows.first() else {
        return None;
    };
    match row.get(3)? {
        Value::Int(n) => u32::try_from(*n).ok(),
        other => value_string(other)?.parse().ok(),
    }
}

pub(crate) fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The entries of an XREAD / XREADGROUP reply, each stream's list read by
/// `entries`: `[[stream, [[id, [field, value, ...]], ...]], ...]` (RESP2) or
/// a map (RESP3).
pub(crate) fn read_reply<T>(reply: Value, entries: impl Fn(Value) -> Vec<T>) -> Vec<T> {
    match reply {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => entries(pair.remove(1)),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().flat_map(|(_, v)| entries(v)).collect(),
        _ => Vec::new(),
    }
}

fn parse_entries(v: Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let id = value_string(&pair[0])?;
            // A deleted entry still pending shows up with nil fields.
            let (raw, probe) = match fields {
                Value::Array(f) => (
                    f.get(1).and_then(value_string),
                    f.get(2).and_then(value_string).as_deref() == Some("p"),
                ),
                Value::Map(m) => (
                    m.first().and_then(|(_, v)| value_string(v)),
                    m.get(1).and_then(|(k, _)| value_string(k)).as_deref() == Some("p"),
                ),
                _ => (None, false),
            };
            let raw = raw.unwrap_or_default();
            let job = Job::decode(&raw).map_err(|e| e.to_string());
            Some(Entry {
                id,
                job,
                raw,
                probe,
                deliveries: 1,
            })
        })
        .collect()
}
