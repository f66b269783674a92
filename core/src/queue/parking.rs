//! Parked jobs: a subscriber that is at its in-flight limit, or whose circuit
//! is open, must not hold worker slots or the stream reader. Its further jobs
//! move out of the stream into a list of their own in the partition
//! (`{p}:parked:<id>`) in the
//! same script that acks them, so a job is never in two places and never in
//! none; they go back into the stream as slots free up. Parked jobs belong to
//! no worker, so a worker's death strands none of them.

use std::sync::LazyLock;

use redis::RedisResult;

use super::{Queue, GROUP};

// KEYS: stream, parked set, then one parked list per job.
// ARGV: group, then (entry id, subscriber id, job) per job.
// An entry no longer pending here (acked meanwhile) is not parked twice.
static PARK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PARK));
const PARK: &str = r#"
local parked = 0
for i = 3, #KEYS do
  local b = 1 + (i - 3) * 3
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[b + 1]) == 1 then
    redis.call('RPUSH', KEYS[i], ARGV[b + 3])
    redis.call('SADD', KEYS[2], ARGV[b + 2])
    parked = parked + 1
  end
  redis.call('XDEL', KEYS[1], ARGV[b + 1])
end
return parked
"#;

// KEYS: parked list, parked set, stream. ARGV: subscriber id, count, probe flag.
static RELEASE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE));
const RELEASE: &str = r#"
local moved = 0
for i = 1, tonumber(ARGV[2]) do
  local job = redis.call('LPOP', KEYS[1])
  if not job then break end
  if ARGV[3] == '1' then
    redis.call('XADD', KEYS[3], '*', 'j', job, 'p', '1')
  else
    redis.call('XADD', KEYS[3], '*', 'j', job)
  end
  moved = moved + 1
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
end
return moved
"#;

/// A job to park: its stream entry, subscriber and stored text.
#[derive(Debug, Clone, Copy)]
pub struct ToPark<'a> {
    pub partition: usize,
    pub entry_id: &'a str,
    pub subscriber_id: i64,
    pub raw: &'a str,
}

impl Queue {
    /// Moves the jobs (all of one partition) out of the stream into their
    /// subscribers' parked lists (acking them), atomically. Returns how many
    /// were parked.
    pub async fn park(&self, partition: usize, jobs: &[ToPark<'_>]) -> RedisResult<usize> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let p = self.partition(partition);
        let mut conn = self.redis().get().await?;
        let mut inv = PARK_SCRIPT.prepare_invoke();
        inv.key(&p.stream).key(&p.parked).arg(GROUP);
        for j in jobs {
            inv.key(p.parked_jobs(j.subscriber_id))
                .arg(j.entry_id)
                .arg(j.subscriber_id)
                .arg(j.raw);
        }
        inv.invoke_async(&mut conn).await
    }

    /// Moves up to `count` parked jobs of `subscriber_id` in `partition` back
    /// into its stream, oldest first; with `probe` they are marked as circuit probes.
    pub async fn release_parked(
        &self,
        partition: usize,
        subscriber_id: i64,
        count: usize,
        probe: bool,
    ) -> RedisResult<usize> {
        if count == 0 {
            return Ok(0);
        }
        let p = self.partition(partition);
        let mut conn = self.redis().get().await?;
        RELEASE_SCRIPT
            .key(p.parked_jobs(subscriber_id))
            .key(&p.parked)
            .key(&p.stream)
            .arg(subscriber_id)
            .arg(count)
            .arg(if probe { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
    }

    /// `(partition, subscriber)` pairs that have parked jobs.
    pub async fn parked_subscribers(&self) -> RedisResult<Vec<(usize, i64)>> {
        let mut conn = self.redis().get().await?;
        let mut out = Vec::new();
        for p in self.partitions() {
            let ids: Vec<i64> = redis::cmd("SMEMBERS")
                .arg(&p.parked)
                .query_async(&mut conn)
                .await?;
            out.extend(ids.into_iter().map(|id| (p.index, id)));
        }
        Ok(out)
    }

    /// Jobs parked for every subscriber.
    pub async fn parked_total(&self) -> RedisResult<u64> {
        let pairs = self.parked_subscribers().await?;
        let mut conn = self.redis().get().await?;
        let mut total = 0;
        for (part, id) in pairs {
            let n: u64 = redis::cmd("LLEN")
                .arg(self.partition(part).parked_jobs(id))
                .query_async(&mut conn)
                .await?;
            total += n;
        }
        Ok(total)
    }
}
