//! API keys: issued by an operator, scoped like a token, revocable. Only a
//! SHA-256 of each key is stored; every server keeps the hashes in memory, so
//! checking a key touches no database, and reloads them within a quarter
//! second of a change announced through Redis (and on its refresh interval).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use switch_core::db::models::ApiKey;
use switch_core::db::{repo, DbPool};
use switch_core::queue::Queue;

/// What every key starts with, so a key is told from a JWT at a glance.
pub const PREFIX: &str = "sk_";
/// How often the announced keys version is looked at.
const POLL: Duration = Duration::from_millis(250);

/// A new key and its hash: the key is shown once, the hash is stored.
pub fn generate() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash(&key);
    (key, hash)
}

/// SHA-256 of a key, hex.
pub fn hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The keys every server checks against, by the start of their hash.
pub struct KeyStore {
    pool: DbPool,
    by_prefix: ArcSwap<HashMap<String, Vec<ApiKey>>>,
    version: AtomicI64,
}

impl KeyStore {
    pub fn new(pool: DbPool) -> Arc<Self> {
        Arc::new(KeyStore {
            pool,
            by_prefix: ArcSwap::from_pointee(HashMap::new()),
            version: AtomicI64::new(i64::MIN),
        })
    }

    /// The stored key `presented` is, if any (expired ones included: the
    /// caller says why it refuses them).
    pub fn find(&self, presented: &str) -> Option<ApiKey> {
        let h = hash(presented);
        let index = self.by_prefix.load();
        index
            .get(&h[..16])?
            .iter()
            .find(|k| same(k.key_hash.as_bytes(), h.as_bytes()))
            .cloned()
    }

    /// Reads every key (on a blocking thread).
    pub async fn reload(&self) -> anyhow::Result<usize> {
        let pool = self.pool.clone();
        let keys = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<ApiKey>> {
            let mut conn = pool.get()?;
            Ok(repo::list_api_keys(&mut conn)?)
        })
        .await??;
        let n = keys.len();
        let mut index: HashMap<String, Vec<ApiKey>> = HashMap::new();
        for k in keys.into_iter().filter(|k| k.key_hash.len() >= 16) {
            index
                .entry(k.key_hash[..16].to_string())
                .or_default()
                .push(k);
        }
        self.by_prefix.store(Arc::new(index));
        Ok(n)
    }

    /// After a change made here: tell every server, and reload here.
    pub async fn changed(&self, queue: &Queue) -> anyhow::Result<()> {
        if let Err(e) = bump(queue).await {
            tracing::warn!(error = %e, "could not announce the key change; other servers see it within their refresh interval");
        }
        self.reload().await.map(|_| ())
    }

    /// Reloads when a change is announced (within [`POLL`]) and every `interval`.
    pub fn spawn_refresh(self: &Arc<Self>, queue: Queue, interval: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut last_reload = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(POLL).await;
                let announced = version(&queue).await.ok();
                let changed = announced.is_some_and(|v| v != me.version.load(Ordering::Acquire));
                if !changed && last_reload.elapsed() < interval {
                    continue;
                }
                match me.reload().await {
                    Ok(_) => {
                        if let Some(v) = announced {
                            me.version.store(v, Ordering::Release);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "API keys not reloaded; keeping the last ones")
                    }
                }
                last_reload = tokio::time::Instant::now();
            }
        });
    }
}

async fn bump(queue: &Queue) -> redis::RedisResult<i64> {
    let mut conn = queue.redis().get().await?;
    redis::cmd("INCR")
        .arg(queue.keys.keys_version())
        .query_async(&mut conn)
        .await
}

async fn version(queue: &Queue) -> redis::RedisResult<i64> {
    let mut conn = queue.redis().get().await?;
    let v: Option<i64> = redis::cmd("GET")
        .arg(queue.keys.keys_version())
        .query_async(&mut conn)
        .await?;
    Ok(v.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let (a, ha) = generate();
        let (b, hb) = generate();
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(hash(&a), ha);
        assert_eq!(ha.len(), 64);
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
