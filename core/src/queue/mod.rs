//! The delivery queue on Redis Streams.
//!
//! The queue is split into `SWITCH_QUEUE_PARTITIONS` partitions, each under a
//! hash tag of its own, so that a Redis Cluster spreads them over its shards
//! (see [`Partition`]). A keyed job's partition is chosen by its subscriber
//! and ordering key, an unkeyed job's by its message (see
//! [`Keys::partition_of`]). Per partition `{p}`:
//! - `{p}:jobs`: a stream of ready jobs, read by the consumer group `workers`.
//!   A job is XACKed and XDELed when it is finished, so the stream holds only
//!   pending work and per-job cost does not grow with the backlog.
//! - `{p}:delayed`: a sorted set of retries by due time (ms); moved back into
//!   the stream in bounded chunks by a script.
//! - `{p}:m:<message id>`: the message, stored once for all of its jobs in the
//!   partition (field `b`), with the number of jobs still holding it (`n`);
//!   a job is a few dozen bytes naming it, and the last job to finish deletes it.
//!   On a single Redis (no slots to respect) it is stored once under `{ns}`
//!   for every partition (see [`Queue::message_key`]).
//! - `{p}:lane:<subscriber>:<ordering key>`: the keyed jobs of one subscriber,
//!   in publish order; its head is the one in the queue, and finishing the head
//!   (delivered or dead, not retried) moves the next into the stream.
//! - `{p}:parked:<subscriber>`: jobs of a subscriber that is at its in-flight
//!   limit or whose circuit is open, moved out of the stream (see [`parking`])
//!   so that they hold no worker; `{p}:parked` is the set of such subscribers.
//!
//! Hub-wide keys share the hash tag `{<namespace>}`:
//! - `{ns}:idem:<author>:<key>`: idempotency records, 24 h.
//! - `{ns}:log`: every published message, added by the script that enqueues
//!   its jobs and removed once the archiver has it in the database (see [`log`]).
//! - `{ns}:circuit:<subscriber>`: the subscriber's circuit breaker, shared by
//!   every worker (see [`circuit`]); `{ns}:circuits` lists those that have one.
//! - `{ns}:stats`, `{ns}:subscribers:version`, the live stream (see [`live`]).
//!
//! Every script touches one slot: on a single Redis a publish is one script
//! (all of it lands, or none); on a Redis Cluster it is one script per
//! partition it touches, then one for the log, so a failure part way leaves
//! some jobs enqueued and answers 503: delivery stays at least once.
//!
//! A job read by a worker stays in the group's pending list until it is acked;
//! a worker refreshes the idle time of its in-flight jobs, and any worker claims
//! (XAUTOCLAIM) jobs idle longer than [`CLAIM_IDLE`], so a killed worker loses nothing.

pub mod circuit;
mod connection;
pub mod consumer;
pub mod live;
mod lock;
pub mod log;
pub mod parking;
mod stats;

pub use connection::{cluster_nodes, RedisHandle, CLUSTER_SCHEME};
pub use stats::{DeliveryStats, HubStats, DURATION_BUCKETS};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::{RedisResult, Value};

use crate::job::Job;

pub const GROUP: &str = "workers";
/// A pending job whose worker has not refreshed it for this long is taken over.
pub const CLAIM_IDLE: Duration = Duration::from_secs(15);
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;
/// Most partitions.
pub const MAX_PARTITIONS: usize = 1024;
/// Partition counts whose leftovers a worker looks for at start.
pub const LEFTOVER_SCAN: usize = 16;
/// How long a publish waits for replicas (`SWITCH_REDIS_WAIT_REPLICAS`).
pub const WAIT_REPLICAS_TIMEOUT: Duration = Duration::from_secs(2);

// ARGV[1]: index in KEYS of the idempotency key (0: none); ARGV[2] its
// record; ARGV[3] its ttl. Then operations, each a letter and its arguments
// (key arguments are indexes into KEYS):
//   B body json refs       the message, stored once, held by `refs` more jobs
//   J stream n job...      `n` jobs into the stream
//   L lane stream job      a keyed job onto its lane, into the stream when the
//                          lane was empty
//   M log live_on live json subscribers
//                          the message logged (and, while some server has
//                          live clients, added to the live stream under the
//                          same id, so live readers and the log share one order)
//   S stats messages jobs  hub totals
const ENQUEUE: &str = r#"
local idem = tonumber(ARGV[1])
if idem > 0 then
  local prev = redis.call('GET', KEYS[idem])
  if prev then return prev end
  redis.call('SET', KEYS[idem], ARGV[2], 'EX', ARGV[3])
end
local live = nil
local i = 4
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  if op == 'J' then
    local s = KEYS[tonumber(ARGV[i + 1])]
    local c = tonumber(ARGV[i + 2])
    for j = i + 3, i + 2 + c do
      redis.call('XADD', s, '*', 'j', ARGV[j])
    end
    i = i + 3 + c
  elseif op == 'B' then
    local k = KEYS[tonumber(ARGV[i + 1])]
    redis.call('HSETNX', k, 'b', ARGV[i + 2])
    redis.call('HINCRBY', k, 'n', ARGV[i + 3])
    i = i + 4
  elseif op == 'L' then
    if redis.call('RPUSH', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 3]) == 1 then
      redis.call('XADD', KEYS[tonumber(ARGV[i + 2])], '*', 'j', ARGV[i + 3])
    end
    i = i + 4
  elseif op == 'M' then
    if live == nil then live = redis.call('EXISTS', KEYS[tonumber(ARGV[i + 2])]) == 1 end
    local id = redis.call('XADD', KEYS[tonumber(ARGV[i + 1])], '*', 'm', ARGV[i + 4], 's', ARGV[i + 5])
    if live then
      redis.call('XADD', KEYS[tonumber(ARGV[i + 3])], 'MAXLEN', '~', LIVE_KEEP, id, 'm', ARGV[i + 4], 's', ARGV[i + 5])
    end
    i = i + 6
  elseif op == 'S' then
    local k = KEYS[tonumber(ARGV[i + 1])]
    redis.call('HINCRBY', k, 'published', tonumber(ARGV[i + 2]))
    redis.call('HINCRBY', k, 'matched', tonumber(ARGV[i + 3]))
    i = i + 4
  else
    return redis.error_reply('unknown enqueue operation ' .. tostring(op))
  end
end
return false
"#;

// KEYS: per job its stream, message key and lane key (the stream again where
// it has none). ARGV: group, then per job: entry id, '1' when it holds a
// stored message, '1' when it heads a lane. A job no longer pending (already
// finished by another worker) releases nothing a second time.
const FINISH: &str = r#"
local done = 0
for j = 1, (#ARGV - 1) / 3 do
  local a = 2 + (j - 1) * 3
  local k = 1 + (j - 1) * 3
  local stream = KEYS[k]
  if redis.call('XACK', stream, ARGV[1], ARGV[a]) == 1 then
    done = done + 1
    if ARGV[a + 1] == '1' and redis.call('HINCRBY', KEYS[k + 1], 'n', -1) <= 0 then
      redis.call('DEL', KEYS[k + 1])
    end
    if ARGV[a + 2] == '1' then
      redis.call('LPOP', KEYS[k + 2])
      local next = redis.call('LINDEX', KEYS[k + 2], 0)
      if next then redis.call('XADD', stream, '*', 'j', next) end
    end
  end
  redis.call('XDEL', stream, ARGV[a])
end
return done
"#;

// KEYS: stream, delayed. ARGV: group, entry id, due, next job. The job keeps
// its message and its lane.
const RETRY: &str = r#"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
end
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
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

static ENQUEUE_TEXT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| ENQUEUE.replace("LIVE_KEEP", &live::LIVE_KEEP.to_string()));
static ENQUEUE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(&ENQUEUE_TEXT));
static FINISH_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(FINISH));
static RETRY_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(RETRY));
static PROMOTE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(PROMOTE));

/// The Redis Cluster slot of a key (CRC16/XMODEM of its hash tag, mod 16384).
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            rest.iter()
                .position(|b| *b == b'}')
                .filter(|close| *close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(bytes);
    let mut crc: u16 = 0;
    for b in tagged {
        crc ^= (*b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// One partition of the queue: its keys share one hash tag.
#[derive(Debug, Clone)]
pub struct Partition {
    pub index: usize,
    /// `{…}`, the hash tag every key of the partition starts with.
    pub tag: String,
    pub stream: String,
    pub delayed: String,
    /// Subscribers with parked jobs in this partition.
    pub parked: String,
}

impl Partition {
    fn new(index: usize, tag: String) -> Self {
        Partition {
            index,
            stream: format!("{tag}:jobs"),
            delayed: format!("{tag}:delayed"),
            parked: format!("{tag}:parked"),
            tag,
        }
    }

    /// Parked jobs of one subscriber, oldest first.
    pub fn parked_jobs(&self, subscriber_id: i64) -> String {
        format!("{}:parked:{subscriber_id}", self.tag)
    }

    /// The stored message `message_id`.
    pub fn message(&self, message_id: &str) -> String {
        format!("{}:m:{message_id}", self.tag)
    }

    /// The keyed jobs of one subscriber, in publish order.
    pub fn lane(&self, subscriber_id: i64, key: &str) -> String {
        format!("{}:lane:{subscriber_id}:{key}", self.tag)
    }
}

/// The hash tags of `count` partitions. One partition uses the namespace's
/// own tag (`{ns}`), as a queue of one partition always has. With more, tag
/// `i` is the first `{ns.p<i>.<n>}` whose slot falls in the `i`-th of `count`
/// equal slot ranges, so that partitions spread evenly over the shards of a
/// cluster whose slots are split evenly (as `redis-cli --cluster create` does).
pub fn partition_tags(namespace: &str, count: usize) -> Vec<String> {
    if count <= 1 {
        return vec![format!("{{{namespace}}}")];
    }
    (0..count)
        .map(|i| {
            let lo = (i * 16384 / count) as u16;
            let hi = ((i + 1) * 16384 / count) as u16;
            (0..)
                .map(|n| format!("{{{namespace}.p{i}.{n}}}"))
                .find(|tag| (lo..hi).contains(&key_slot(tag)))
                .expect("every slot range holds some tag")
        })
        .collect()
}

/// Key names of one namespace.
#[derive(Debug, Clone)]
pub struct Keys {
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
    /// Subscribers with a circuit record (at least one failure since their last success).
    pub circuits: String,
    /// The partitions jobs are written to, then any left over from another
    /// `SWITCH_QUEUE_PARTITIONS` that still hold jobs (read until empty).
    pub partitions: Vec<Partition>,
    /// How many of `partitions` new jobs go to.
    writing: usize,
    idem_prefix: String,
    prefix: String,
}

impl Keys {
    pub fn new(namespace: &str, partitions: usize) -> Self {
        let partitions = partitions.clamp(1, MAX_PARTITIONS);
        Keys {
            subscribers_version: format!("{{{namespace}}}:subscribers:version"),
            stats: format!("{{{namespace}}}:stats"),
            log: format!("{{{namespace}}}:log"),
            live: format!("{{{namespace}}}:live"),
            live_on: format!("{{{namespace}}}:live:on"),
            circuits: format!("{{{namespace}}}:circuits"),
            partitions: partition_tags(namespace, partitions)
                .into_iter()
                .enumerate()
                .map(|(i, tag)| Partition::new(i, tag))
                .collect(),
            writing: partitions,
            idem_prefix: format!("{{{namespace}}}:idem:"),
            prefix: format!("{{{namespace}}}:"),
        }
    }

    /// The partition of a job (FNV-1a, so every server picks the same one).
    /// A keyed job's is chosen by its subscriber and key, so that a lane
    /// lives in one partition. An unkeyed job's is chosen by its message:
    /// every unkeyed job of a publish goes to one partition (the message is
    /// stored once, in one script), and each partition holds a mix of
    /// subscribers, as a single stream would, so a read is not filled with
    /// the jobs of a few subscribers that are at their in-flight limit.
    pub fn partition_of(&self, job: &Job) -> usize {
        let n = self.writing;
        if n == 1 {
            return 0;
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= *b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        match &job.ordering_key {
            Some(key) => {
                eat(&job.subscriber_id.to_le_bytes());
                eat(&[0xff]);
                eat(key.as_bytes());
            }
            None => eat(job.message_id.as_bytes()),
        }
        (h % n as u64) as usize
    }

    /// Bumped on every API key change, so every server reloads its keys at once.
    pub fn keys_version(&self) -> String {
        format!("{}keys:version", self.prefix)
    }

    /// Held by the process deleting old rows, so one does it at a time.
    pub fn retention_lock(&self) -> String {
        format!("{}retention", self.prefix)
    }

    /// Held by the server moving spooled publishes into the queue.
    pub fn outbox_lock(&self) -> String {
        format!("{}outbox:lock", self.prefix)
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

    /// Marks a spooled message moved into the queue, so a second move stores nothing.
    pub fn spooled(&self, message_id: &str) -> String {
        format!("{}idem:spooled:{message_id}", self.prefix)
    }

    /// The hub-wide tag, `{ns}`.
    fn home_tag(&self) -> &str {
        self.prefix.trim_end_matches(':')
    }
}

/// A job read from the stream, with the entry id needed to ack it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The partition it was read from.
    pub partition: usize,
    pub id: String,
    /// The job, its message filled in; `Err` when it cannot be read (it is
    /// then dead-lettered).
    pub job: Result<Job, String>,
    pub raw: String,
    /// The stored message and lane this entry holds, released when it finishes.
    pub holds: Holds,
    /// Released from an open circuit to probe it: delivered even though the
    /// circuit is not closed.
    pub probe: bool,
    /// Times the entry was handed to a worker (1 when read; each takeover adds one).
    pub deliveries: u32,
}

/// What a job holds in Redis besides its entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holds {
    /// The id of its stored message.
    pub message: Option<String>,
    /// Its subscriber and ordering key.
    pub lane: Option<(i64, String)>,
}

impl Holds {
    fn of(job: &Job) -> Self {
        Holds {
            message: job.stored_body.then(|| job.message_id.to_string()),
            lane: job
                .ordering_key
                .as_ref()
                .map(|k| (job.subscriber_id, k.to_string())),
        }
    }
}

/// What one pass of [`Queue::promote_due`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    pub moved: usize,
    /// Due time of the earliest retry still waiting, if any.
    pub next_due_ms: Option<i64>,
}

/// One message to publish: its id and JSON (logged) and its jobs.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    pub message_id: &'a str,
    pub message_json: &'a str,
    pub jobs: &'a [Job],
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    New,
    /// An earlier publish with the same idempotency key; holds what it stored.
    Duplicate(String),
}

/// One script invocation being built: its keys (each once) and arguments.
#[derive(Default)]
struct Ops {
    keys: Vec<String>,
    index: HashMap<String, usize>,
    args: Vec<String>,
}

impl Ops {
    /// The 1-based index of `key` in KEYS, as a script argument.
    fn key(&mut self, key: &str) -> String {
        let next = self.keys.len() + 1;
        let i = *self.index.entry(key.to_string()).or_insert_with(|| {
            self.keys.push(key.to_string());
            next
        });
        i.to_string()
    }

    fn is_empty(&self) -> bool {
        self.args.is_empty()
    }
}

#[derive(Clone)]
pub struct Queue {
    pub keys: Keys,
    redis: RedisHandle,
    /// Replicas each publish waits for (`WAIT`) before it is answered.
    wait_replicas: usize,
}

/// Names the error of a write not confirmed by enough replicas.
pub const REPLICA_SHORTFALL: &str = "not confirmed by enough replicas";

/// A publish whose writes reached fewer replicas than asked for.
fn replica_shortfall(got: i64, wanted: usize) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        REPLICA_SHORTFALL,
        format!("{got} of {wanted} replicas acknowledged the write in time"),
    ))
}

impl Queue {
    /// A queue of one partition.
    pub fn new(namespace: &str, redis: RedisHandle) -> Self {
        Self::with_partitions(namespace, 1, redis)
    }

    pub fn with_partitions(namespace: &str, partitions: usize, redis: RedisHandle) -> Self {
        Queue {
            keys: Keys::new(namespace, partitions),
            redis,
            wait_replicas: 0,
        }
    }

    /// Adds the partitions of other partition counts (up to
    /// [`LEFTOVER_SCAN`]) that still hold jobs, so that a queue whose
    /// `SWITCH_QUEUE_PARTITIONS` changed is still drained to the end.
    pub async fn with_leftovers(mut self, namespace: &str) -> RedisResult<Self> {
        let mut conn = self.redis.get().await?;
        let current: Vec<String> = self.keys.partitions.iter().map(|p| p.tag.clone()).collect();
        let mut seen = current.clone();
        for count in 1..=LEFTOVER_SCAN {
            for tag in partition_tags(namespace, count) {
                if seen.contains(&tag) {
                    continue;
                }
                seen.push(tag.clone());
                let p = Partition::new(self.keys.partitions.len(), tag);
                let (ready, delayed, parked): (u64, u64, u64) = redis::pipe()
                    .cmd("XLEN")
                    .arg(&p.stream)
                    .cmd("ZCARD")
                    .arg(&p.delayed)
                    .cmd("SCARD")
                    .arg(&p.parked)
                    .query_async(&mut conn)
                    .await?;
                if ready + delayed + parked > 0 {
                    tracing::warn!(
                        partition = %p.tag,
                        ready,
                        delayed,
                        parked,
                        "jobs left in a partition of another SWITCH_QUEUE_PARTITIONS; reading it until it is empty"
                    );
                    self.keys.partitions.push(p);
                }
            }
        }
        Ok(self)
    }

    /// Every publish waits for `n` replicas to acknowledge its writes.
    pub fn waiting_for_replicas(mut self, n: usize) -> Self {
        self.wait_replicas = n;
        self
    }

    /// A queue of the same partitions on another connection (for blocking reads).
    pub fn on(&self, redis: RedisHandle) -> Self {
        Queue {
            keys: self.keys.clone(),
            redis,
            wait_replicas: self.wait_replicas,
        }
    }

    pub fn redis(&self) -> &RedisHandle {
        &self.redis
    }

    pub fn partitions(&self) -> &[Partition] {
        &self.keys.partitions
    }

    /// Where the message `message_id` is stored for jobs of `partition`: in
    /// the partition itself on a Redis Cluster (a script touches one slot),
    /// and once under the namespace's tag on a single Redis, whatever the
    /// partition (so a publish to many partitions stores it once, and
    /// changing the partition count moves nothing).
    pub fn message_key(&self, partition: usize, message_id: &str) -> String {
        if self.redis.is_cluster() {
            self.partition(partition).message(message_id)
        } else {
            format!("{}:m:{message_id}", self.keys.home_tag())
        }
    }

    pub fn partition(&self, index: usize) -> &Partition {
        &self.keys.partitions[index.min(self.keys.partitions.len() - 1)]
    }

    /// Puts every job of one message into the queue, and the message into
    /// the log. With an idempotency key, a second call stores nothing and
    /// returns the first call's `record`.
    pub async fn enqueue(
        &self,
        publish: Publish<'_>,
        idempotency: Option<(&str, &str)>,
    ) -> RedisResult<Enqueued> {
        self.run_enqueue(&[publish], idempotency, true).await
    }

    /// Publishes several messages at once (on a single Redis, all of them or nothing).
    pub async fn enqueue_batch(&self, publishes: &[Publish<'_>]) -> RedisResult<()> {
        self.run_enqueue(publishes, None, true).await.map(|_| ())
    }

    async fn run_enqueue(
        &self,
        publishes: &[Publish<'_>],
        idempotency: Option<(&str, &str)>,
        is_publish: bool,
    ) -> RedisResult<Enqueued> {
        let cluster = self.redis.is_cluster();
        if cluster {
            // Jobs go in before the log and the idempotency record, so that a
            // failure part way can only lead to a second copy, never a loss;
            // a retry already recorded is found here first.
            if let Some((key, _)) = idempotency {
                let mut conn = self.redis.get().await?;
                let prev: Option<String> =
                    redis::cmd("GET").arg(key).query_async(&mut conn).await?;
                if let Some(prev) = prev {
                    return Ok(Enqueued::Duplicate(prev));
                }
            }
        }
        let home_tag = self.keys.home_tag().to_string();
        // Per hash tag, the operations touching it (in publish order).
        let mut by_tag: Vec<(String, Ops)> = Vec::new();
        // On a single Redis every operation goes into one script.
        let ops_for = |by_tag: &mut Vec<(String, Ops)>, tag: &str| -> usize {
            let tag = if cluster { tag } else { home_tag.as_str() };
            match by_tag.iter().position(|(t, _)| t == tag) {
                Some(i) => i,
                None => {
                    by_tag.push((tag.to_string(), Ops::default()));
                    by_tag.len() - 1
                }
            }
        };
        let home = ops_for(&mut by_tag, &home_tag);
        let mut messages = 0usize;
        let mut jobs_total = 0usize;
        for p in publishes {
            if !p.message_json.is_empty() {
                messages += 1;
                let subscribers: Vec<String> =
                    p.jobs.iter().map(|j| j.subscriber_id.to_string()).collect();
                let ops = &mut by_tag[home].1;
                let (log, on, live) = (
                    ops.key(&self.keys.log),
                    ops.key(&self.keys.live_on),
                    ops.key(&self.keys.live),
                );
                ops.args.extend([
                    "M".into(),
                    log,
                    on,
                    live,
                    p.message_json.to_string(),
                    subscribers.join(","),
                ]);
            }
            jobs_total += p.jobs.len();
            // Group this message's jobs by partition.
            let mut per_partition: Vec<(usize, Vec<&Job>)> = Vec::new();
            for job in p.jobs {
                let part = self.keys.partition_of(job);
                match per_partition.iter_mut().find(|(i, _)| *i == part) {
                    Some((_, v)) => v.push(job),
                    None => per_partition.push((part, vec![job])),
                }
            }
            for (part, jobs) in per_partition {
                let partition = &self.keys.partitions[part];
                let at = ops_for(&mut by_tag, &partition.tag);
                let ops = &mut by_tag[at].1;
                // One stored copy per message id in this partition (a replay
                // may carry several messages).
                let mut bodies: Vec<(&str, &str, usize)> = Vec::new();
                for job in &jobs {
                    if !job.stored_body {
                        continue;
                    }
                    match bodies.iter_mut().find(|(id, _, _)| *id == &*job.message_id) {
                        Some((_, _, n)) => *n += 1,
                        None => bodies.push((&job.message_id, &job.message_json, 1)),
                    }
                }
                for (id, json, n) in bodies {
                    let k = ops.key(&self.message_key(part, id));
                    ops.args
                        .extend(["B".into(), k, json.to_string(), n.to_string()]);
                }
                let stream = ops.key(&partition.stream);
                let plain: Vec<&&Job> = jobs.iter().filter(|j| j.ordering_key.is_none()).collect();
                if !plain.is_empty() {
                    ops.args
                        .extend(["J".into(), stream.clone(), plain.len().to_string()]);
                    ops.args.extend(plain.iter().map(|j| j.encode()));
                }
                for job in jobs.iter().filter(|j| j.ordering_key.is_some()) {
                    let lane = ops.key(&partition.lane(
                        job.subscriber_id,
                        job.ordering_key.as_deref().unwrap_or_default(),
                    ));
                    ops.args
                        .extend(["L".into(), lane, stream.clone(), job.encode()]);
                }
            }
        }
        if is_publish {
            let ops = &mut by_tag[home].1;
            let stats = ops.key(&self.keys.stats);
            ops.args.extend([
                "S".into(),
                stats,
                messages.to_string(),
                jobs_total.to_string(),
            ]);
        }
        // The log's script (with the idempotency record) runs last.
        let (home_tag, home_ops) = by_tag.remove(home);
        try_join_all(
            by_tag
                .into_iter()
                .filter(|(_, o)| !o.is_empty())
                .map(|(tag, ops)| self.run_ops(tag, ops, None)),
        )
        .await?;
        if home_ops.is_empty() && idempotency.is_none() {
            return Ok(Enqueued::New);
        }
        let prev = self.run_ops(home_tag, home_ops, idempotency).await?;
        Ok(match prev {
            Some(p) => Enqueued::Duplicate(p),
            None => Enqueued::New,
        })
    }

    /// Runs one enqueue script (and waits for replicas when asked to).
    async fn run_ops(
        &self,
        tag: String,
        mut ops: Ops,
        idempotency: Option<(&str, &str)>,
    ) -> RedisResult<Option<String>> {
        let idem = match idempotency {
            Some((key, _)) => ops.key(key),
            None => "0".into(),
        };
        let (record, ttl) = match idempotency {
            Some((_, record)) => (record, IDEMPOTENCY_TTL_SECS),
            None => ("", 0),
        };
        let mut conn = self.redis.get().await?;
        if self.wait_replicas == 0 {
            let mut inv = ENQUEUE_SCRIPT.prepare_invoke();
            for k in &ops.keys {
                inv.key(k);
            }
            inv.arg(idem).arg(record).arg(ttl);
            for a in &ops.args {
                inv.arg(a);
            }
            return inv.invoke_async(&mut conn).await;
        }
        // The script and the WAIT go in one pipeline, so that they reach the
        // same node: a WAIT sent apart could, after a failover, be answered
        // by the new master for writes it never had.
        let mut eval = redis::cmd("EVAL");
        eval.arg(ENQUEUE_TEXT.as_str()).arg(ops.keys.len());
        for k in &ops.keys {
            eval.arg(k);
        }
        eval.arg(idem).arg(record).arg(ttl);
        for a in &ops.args {
            eval.arg(a);
        }
        let (prev, got): (Option<String>, i64) = redis::pipe()
            .add_command(eval)
            .cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(WAIT_REPLICAS_TIMEOUT.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        if (got.max(0) as usize) < self.wait_replicas {
            tracing::warn!(
                tag,
                replicas = got,
                "a publish was not confirmed by enough replicas"
            );
            return Err(replica_shortfall(got, self.wait_replicas));
        }
        Ok(prev)
    }

    /// Creates the consumer group of every partition (from the start of the
    /// stream, so nothing published before the first worker is skipped).
    pub async fn ensure_group(&self) -> RedisResult<()> {
        for p in &self.keys.partitions {
            self.create_group(&p.stream, GROUP).await?;
        }
        Ok(())
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

    /// Reads up to `count` new jobs of one partition for `consumer`, waiting
    /// up to `block` (none when zero), and the subscribers version (see
    /// [`Queue::bump_subscribers_version`]) as it stands once they are read:
    /// Redis answers the GET only after the read returns, so a subscriber
    /// change made before these jobs were published is always within it.
    pub async fn read(
        &self,
        partition: usize,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
    ) -> RedisResult<(Vec<Entry>, i64)> {
        let p = self.partition(partition);
        let mut conn = self.redis.get().await?;
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            read.arg("BLOCK").arg(block.as_millis() as u64);
        }
        read.arg("STREAMS").arg(&p.stream).arg(">");
        let version_key = &self.keys.subscribers_version;
        let (reply, version): (Value, Option<i64>) = if self.redis.is_cluster() {
            // Another slot: a second round trip, still after the read.
            let reply: Value = read.query_async(&mut conn).await?;
            let v: Option<i64> = redis::cmd("GET")
                .arg(version_key)
                .query_async(&mut conn)
                .await?;
            (reply, v)
        } else {
            redis::pipe()
                .add_command(read)
                .cmd("GET")
                .arg(version_key)
                .query_async(&mut conn)
                .await?
        };
        let mut entries = read_reply(reply, parse_entries);
        self.fill(partition, &mut entries).await?;
        Ok((entries, version.unwrap_or(0)))
    }

    /// Gives each entry its partition, what it holds, and its stored message.
    async fn fill(&self, partition: usize, entries: &mut [Entry]) -> RedisResult<()> {
        let mut wanted: Vec<String> = Vec::new();
        for e in entries.iter_mut() {
            e.partition = partition;
            if let Ok(job) = &e.job {
                e.holds = Holds::of(job);
                if job.stored_body && !wanted.iter().any(|w| **w == *job.message_id) {
                    wanted.push(job.message_id.to_string());
                }
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.get().await?;
        let mut pipe = redis::pipe();
        for id in &wanted {
            pipe.cmd("HGET")
                .arg(self.message_key(partition, id))
                .arg("b");
        }
        let bodies: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        let bodies: HashMap<&str, Arc<str>> = wanted
            .iter()
            .zip(bodies)
            .filter_map(|(id, b)| Some((id.as_str(), Arc::from(b?))))
            .collect();
        for e in entries.iter_mut() {
            let missing = match &mut e.job {
                Ok(job) if job.stored_body => match bodies.get(&*job.message_id) {
                    Some(b) => {
                        job.message_json = b.clone();
                        None
                    }
                    None => Some(format!(
                        "message {} is no longer stored in Redis",
                        job.message_id
                    )),
                },
                _ => None,
            };
            if let Some(m) = missing {
                e.job = Err(m);
            }
        }
        Ok(())
    }

    /// Finishes jobs: acks and removes them, lets go of their stored
    /// message, and moves the next job of each lane they head into the
    /// stream, atomically. Returns how many were still pending. On a Redis
    /// Cluster every entry must be of one partition (one slot); on a single
    /// Redis any mix goes in one call.
    pub async fn finish(&self, entries: &[&Entry]) -> RedisResult<usize> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut inv = FINISH_SCRIPT.prepare_invoke();
        inv.arg(GROUP);
        for e in entries {
            let p = self.partition(e.partition);
            inv.key(&p.stream);
            match &e.holds.message {
                Some(id) => inv.key(self.message_key(e.partition, id)),
                None => inv.key(&p.stream),
            };
            match &e.holds.lane {
                Some((sub, key)) => inv.key(p.lane(*sub, key)),
                None => inv.key(&p.stream),
            };
            inv.arg(&e.id)
                .arg(if e.holds.message.is_some() { "1" } else { "0" })
                .arg(if e.holds.lane.is_some() { "1" } else { "0" });
        }
        let mut conn = self.redis.get().await?;
        inv.invoke_async(&mut conn).await
    }

    /// Marks jobs finished by their entry ids only (they hold nothing else).
    pub async fn ack(&self, partition: usize, ids: &[&str]) -> RedisResult<()> {
        let entries: Vec<Entry> = ids.iter().map(|id| Entry::bare(partition, id)).collect();
        let refs: Vec<&Entry> = entries.iter().collect();
        self.finish(&refs).await.map(|_| ())
    }

    /// Schedules `next` to run at `due_ms` and finishes entry `id` of
    /// `partition`, atomically; the job keeps its message and lane.
    pub async fn retry_later(
        &self,
        partition: usize,
        id: &str,
        next: &Job,
        due_ms: i64,
    ) -> RedisResult<()> {
        let p = self.partition(partition);
        let mut conn = self.redis.get().await?;
        RETRY_SCRIPT
            .key(&p.stream)
            .key(&p.delayed)
            .arg(GROUP)
            .arg(id)
            .arg(due_ms)
            .arg(next.encode())
            .invoke_async::<()>(&mut conn)
            .await
    }

    /// Moves up to `limit` due retries of one partition into its stream;
    /// returns how many moved and when (ms) the earliest one left is due.
    pub async fn promote_due(
        &self,
        partition: usize,
        now_ms: i64,
        limit: usize,
    ) -> RedisResult<Promoted> {
        let p = self.partition(partition);
        let mut conn = self.redis.get().await?;
        let (moved, next_due): (usize, Option<String>) = PROMOTE_SCRIPT
            .key(&p.delayed)
            .key(&p.stream)
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

    /// Adds jobs to the queue (replays: neither counted as publishes nor
    /// logged again). Each job carries its message, stored again if needed.
    pub async fn push(&self, jobs: &[Job]) -> RedisResult<()> {
        let p = Publish {
            message_id: "",
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

    /// Resets the idle time of in-flight jobs of one partition so no other
    /// worker claims them.
    pub async fn keep_alive(
        &self,
        partition: usize,
        consumer: &str,
        ids: &[String],
    ) -> RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let p = self.partition(partition);
        let mut conn = self.redis.get().await?;
        redis::cmd("XCLAIM")
            .arg(&p.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(ids)
            .arg("JUSTID")
            .query_async::<Value>(&mut conn)
            .await
            .map(|_| ())
    }

    /// Takes over jobs of one partition that other (dead) workers left idle.
    /// Returns the next cursor.
    pub async fn claim_abandoned(
        &self,
        partition: usize,
        consumer: &str,
        cursor: &str,
        count: usize,
    ) -> RedisResult<(String, Vec<Entry>)> {
        let p = self.partition(partition);
        let mut conn = self.redis.get().await?;
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&p.stream)
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
                    .arg(&p.stream)
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
        self.fill(partition, &mut entries).await?;
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

    /// Jobs waiting in every partition: ready in the streams, and delayed retries.
    pub async fn depth(&self) -> RedisResult<(u64, u64)> {
        let mut conn = self.redis.get().await?;
        let mut ready = 0;
        let mut delayed = 0;
        for p in &self.keys.partitions {
            let (r, d): (u64, u64) = redis::pipe()
                .cmd("XLEN")
                .arg(&p.stream)
                .cmd("ZCARD")
                .arg(&p.delayed)
                .query_async(&mut conn)
                .await?;
            ready += r;
            delayed += d;
        }
        Ok((ready, delayed))
    }

    /// Age in ms of the oldest job still in any stream (pending or not), if any.
    pub async fn oldest_age_ms(&self, now_ms: i64) -> RedisResult<Option<i64>> {
        let mut conn = self.redis.get().await?;
        let mut oldest: Option<i64> = None;
        for p in &self.keys.partitions {
            let reply: Value = redis::cmd("XRANGE")
                .arg(&p.stream)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            let ms = parse_entries(reply)
                .first()
                .and_then(|e| e.id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()));
            oldest = match (oldest, ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(oldest.map(|ms| (now_ms - ms).max(0)))
    }
}

impl Entry {
    /// An entry known only by its id (it holds no message or lane).
    pub fn bare(partition: usize, id: &str) -> Self {
        Entry {
            partition,
            id: id.to_string(),
            job: Err(String::new()),
            raw: String::new(),
            holds: Holds::default(),
            probe: false,
            deliveries: 1,
        }
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
                partition: 0,
                id,
                job,
                raw,
                holds: Holds::default(),
                probe,
                deliveries: 1,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("bar"), 5061);
        assert_eq!(key_slot("somekey"), 11058);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(
            key_slot("foo{}{bar}"),
            key_slot("foo{}{bar}"),
            "empty tag: whole key"
        );
    }

    #[test]
    fn partitions_spread_evenly_over_the_slot_space() {
        assert_eq!(partition_tags("switch", 1), vec!["{switch}"]);
        for count in [2, 3, 6, 16] {
            let tags = partition_tags("switch", count);
            assert_eq!(tags.len(), count);
            for (i, tag) in tags.iter().enumerate() {
                let slot = key_slot(tag) as usize;
                let (lo, hi) = (i * 16384 / count, (i + 1) * 16384 / count);
                assert!(
                    (lo..hi).contains(&slot),
                    "{tag} in slot {slot}, not in {lo}..{hi}"
                );
                assert_eq!(key_slot(&format!("{tag}:jobs")), key_slot(tag));
            }
        }
    }

    fn job(sub: i64, message: &str, key: Option<&str>) -> Job {
        Job::first(sub, Arc::from(message), key.map(Arc::from), Arc::from("{}"))
    }

    #[test]
    fn a_subscriber_and_key_always_land_in_one_partition_and_keys_spread() {
        let keys = Keys::new("t", 6);
        let a = keys.partition_of(&job(7, "m1", Some("order-1")));
        assert_eq!(
            a,
            keys.partition_of(&job(7, "m2", Some("order-1"))),
            "whatever the message"
        );
        let used: std::collections::HashSet<usize> = (0..200)
            .map(|k| keys.partition_of(&job(7, "m", Some(&format!("order-{k}")))))
            .collect();
        assert_eq!(used.len(), 6, "one subscriber's keys use every partition");
        assert_eq!(Keys::new("t", 1).partition_of(&job(7, "m", Some("x"))), 0);
    }

    #[test]
    fn unkeyed_jobs_of_a_message_share_a_partition_and_messages_spread() {
        let keys = Keys::new("t", 6);
        let p = keys.partition_of(&job(1, "msg_a", None));
        assert!((2..50).all(|s| keys.partition_of(&job(s, "msg_a", None)) == p));
        let used: std::collections::HashSet<usize> = (0..200)
            .map(|m| keys.partition_of(&job(1, &format!("msg_{m}"), None)))
            .collect();
        assert_eq!(used.len(), 6, "messages spread over every partition");
    }
}
