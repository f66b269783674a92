//! A lock in Redis that one process holds at a time: taken when free,
//! renewed by its holder, and lost by a holder that stops renewing it
//! (its TTL runs out). Used by the retention sweep and the outbox drain.

use std::sync::LazyLock;
use std::time::Duration;

use redis::RedisResult;

use super::Queue;

// KEYS: the lock. ARGV: owner, ttl (ms). 1 when the owner holds it now.
static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#,
    )
});

// KEYS: the lock. ARGV: owner. Deletes it only if the owner holds it.
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

impl Queue {
    /// Takes the lock `key` for `owner`, or renews it if `owner` holds it,
    /// for `ttl`; false when another owner holds it.
    pub async fn hold_lock(&self, key: &str, owner: &str, ttl: Duration) -> RedisResult<bool> {
        let mut conn = self.redis().get().await?;
        let got: i64 = TAKE
            .key(key)
            .arg(owner)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(got == 1)
    }

    /// Lets go of the lock `key` if `owner` holds it.
    pub async fn release_lock(&self, key: &str, owner: &str) -> RedisResult<()> {
        let mut conn = self.redis().get().await?;
        RELEASE
            .key(key)
            .arg(owner)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
    }
}
