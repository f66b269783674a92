//! The circuit breaker of each subscriber, kept in Redis so that every worker
//! sees the same state and only one probe goes out per cooldown.
//!
//! `{ns}:circuit:<id>` is a hash: `f` consecutive failed attempts, `s` when
//! the first of them happened (ms), `st` `open` or `half_open` (absent:
//! closed), `u` when an open circuit may be probed (ms), `c` the current
//! cooldown (ms), `pu` when a half-open probe counts as lost (ms). A success
//! deletes the hash. `{ns}:circuits` lists the subscribers that have one.

use std::collections::HashMap;

use std::sync::LazyLock;

use redis::{RedisResult, Value};

use super::Queue;

/// Longest wait between probes of an open circuit.
pub const MAX_COOLDOWN_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CircuitState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    fn parse(s: Option<&str>) -> Self {
        match s {
            Some("open") => CircuitState::Open,
            Some("half_open") => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }
}

/// One subscriber's circuit as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Circuit {
    pub state: CircuitState,
    pub failures: i64,
    /// When the current run of failures began (ms), if there is one.
    pub failing_since_ms: Option<i64>,
    /// When an open circuit may be probed (ms).
    pub probe_at_ms: Option<i64>,
}

/// What the breaker thresholds are.
#[derive(Debug, Clone, Copy)]
pub struct CircuitPolicy {
    pub failures: u32,
    pub cooldown_ms: i64,
    /// How long a probe may take before another is sent.
    pub probe_timeout_ms: i64,
}

// KEYS: circuit hash, circuits set. ARGV: subscriber id, now, threshold,
// cooldown, max cooldown, '1' when the failed attempt was a probe.
static FAIL_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(FAIL));
const FAIL: &str = r#"
local f = redis.call('HINCRBY', KEYS[1], 'f', 1)
redis.call('SADD', KEYS[2], ARGV[1])
local now = tonumber(ARGV[2])
local since = redis.call('HGET', KEYS[1], 's')
if not since then
  since = ARGV[2]
  redis.call('HSET', KEYS[1], 's', since)
end
local st = redis.call('HGET', KEYS[1], 'st')
if st == 'half_open' and ARGV[6] == '1' then
  local c = math.min(tonumber(redis.call('HGET', KEYS[1], 'c') or ARGV[4]) * 2, tonumber(ARGV[5]))
  redis.call('HSET', KEYS[1], 'st', 'open', 'c', c, 'u', now + c)
  st = 'open'
elseif not st and f >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'st', 'open', 'c', ARGV[4], 'u', now + tonumber(ARGV[4]))
  st = 'open'
end
return {st or 'closed', f, tonumber(since), tonumber(redis.call('HGET', KEYS[1], 'u') or '0')}
"#;

// KEYS: circuit hash, circuits set. ARGV: subscriber id. Returns the state it had.
static SUCCEED_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SUCCEED));
const SUCCEED: &str = r#"
local st = redis.call('HGET', KEYS[1], 'st')
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return st or 'closed'
"#;

// KEYS: circuit hash. ARGV: now, probe timeout. Marks the circuit half open
// (a probe on its way) when a probe is due; 1 when it did.
static PROBE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PROBE));
const PROBE: &str = r#"
local st = redis.call('HGET', KEYS[1], 'st')
local now = tonumber(ARGV[1])
if st == 'open' then
  if tonumber(redis.call('HGET', KEYS[1], 'u') or '0') > now then return 0 end
elseif st == 'half_open' then
  if tonumber(redis.call('HGET', KEYS[1], 'pu') or '0') > now then return 0 end
else
  return 0
end
redis.call('HSET', KEYS[1], 'st', 'half_open', 'pu', now + tonumber(ARGV[2]))
return 1
"#;

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

impl Queue {
    /// Counts a failed attempt; opens the circuit at the threshold, or again
    /// (with a doubled cooldown) when the failed attempt was its probe.
    pub async fn circuit_failed(
        &self,
        subscriber_id: i64,
        now_ms: i64,
        policy: &CircuitPolicy,
        was_probe: bool,
    ) -> RedisResult<Circuit> {
        let mut conn = self.redis().get().await?;
        let reply: Vec<Value> = FAIL_SCRIPT
            .key(self.keys.circuit(subscriber_id))
            .key(&self.keys.circuits)
            .arg(subscriber_id)
            .arg(now_ms)
            .arg(policy.failures)
            .arg(policy.cooldown_ms)
            .arg(MAX_COOLDOWN_MS.max(policy.cooldown_ms))
            .arg(if was_probe { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(Circuit {
            state: CircuitState::parse(text(reply.first()).as_deref()),
            failures: int(reply.get(1)).unwrap_or(0),
            failing_since_ms: int(reply.get(2)),
            probe_at_ms: int(reply.get(3)).filter(|u| *u > 0),
        })
    }

    /// A delivered attempt closes the circuit; returns the state it had.
    pub async fn circuit_succeeded(&self, subscriber_id: i64) -> RedisResult<CircuitState> {
        let mut conn = self.redis().get().await?;
        let st: String = SUCCEED_SCRIPT
            .key(self.keys.circuit(subscriber_id))
            .key(&self.keys.circuits)
            .arg(subscriber_id)
            .invoke_async(&mut conn)
            .await?;
        Ok(CircuitState::parse(Some(&st)))
    }

    /// Sends one parked job of an open (or stuck half-open) circuit, taken
    /// from the first of `partitions` holding one, as its probe when the
    /// cooldown is over; true when one went. The circuit and the parked jobs
    /// live in different slots: the circuit is marked half open first, so at
    /// most one probe goes per cooldown; if no parked job is left by then, the
    /// next probe is sent once this one counts as lost.
    pub async fn circuit_probe(
        &self,
        subscriber_id: i64,
        partitions: &[usize],
        now_ms: i64,
        policy: &CircuitPolicy,
    ) -> RedisResult<bool> {
        if partitions.is_empty() {
            return Ok(false);
        }
        let mut conn = self.redis().get().await?;
        let due: i64 = PROBE_SCRIPT
            .key(self.keys.circuit(subscriber_id))
            .arg(now_ms)
            .arg(policy.probe_timeout_ms)
            .invoke_async(&mut conn)
            .await?;
        if due != 1 {
            return Ok(false);
        }
        for part in partitions {
            if self.release_parked(*part, subscriber_id, 1, true).await? == 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Forgets a subscriber's circuit (it was enabled again by an operator).
    pub async fn circuit_reset(&self, subscriber_id: i64) -> RedisResult<()> {
        self.circuit_succeeded(subscriber_id).await.map(|_| ())
    }

    /// Every subscriber with a circuit record; the others are closed.
    pub async fn circuits(&self) -> RedisResult<HashMap<i64, Circuit>> {
        let mut conn = self.redis().get().await?;
        let ids: Vec<i64> = redis::cmd("SMEMBERS")
            .arg(&self.keys.circuits)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.keys.circuit(*id))
                .arg("st")
                .arg("f")
                .arg("s")
                .arg("u");
        }
        let rows: Vec<Vec<Value>> = pipe.query_async(&mut conn).await?;
        Ok(ids
            .into_iter()
            .zip(rows)
            .map(|(id, row)| {
                (
                    id,
                    Circuit {
                        state: CircuitState::parse(text(row.first()).as_deref()),
                        failures: int(row.get(1)).unwrap_or(0),
                        failing_since_ms: int(row.get(2)),
                        probe_at_ms: int(row.get(3)),
                    },
                )
            })
            .collect())
    }
}
