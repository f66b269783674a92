//! A Redis connection that is made on first use and remade after Redis comes
//! back, so a process can start (and keep running) while Redis is down.
//!
//! Each thread gets a connection of its own: a connection's I/O runs on the
//! runtime thread that made it, so a request handler on an actix worker thread
//! talks to Redis without handing every command to another thread and back.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use thread_local::ThreadLocal;
use tokio::sync::OnceCell;

#[derive(Clone)]
pub struct RedisHandle {
    client: redis::Client,
    response_timeout: Duration,
    /// Made once per thread; the manager reconnects by itself after that.
    managers: Arc<ThreadLocal<OnceCell<ConnectionManager>>>,
}

impl RedisHandle {
    /// `response_timeout` must exceed any BLOCK time used on this handle.
    pub fn new(url: &str, response_timeout: Duration) -> RedisResult<Self> {
        Ok(RedisHandle {
            client: redis::Client::open(url)?,
            response_timeout,
            managers: Arc::new(ThreadLocal::new()),
        })
    }

    /// A second handle to the same server with its own connection (for blocking reads).
    pub fn separate(&self, response_timeout: Duration) -> Self {
        RedisHandle {
            client: self.client.clone(),
            response_timeout,
            managers: Arc::new(ThreadLocal::new()),
        }
    }

    pub async fn get(&self) -> RedisResult<ConnectionManager> {
        self.managers
            .get_or_default()
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(self.response_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .cloned()
    }

    pub async fn ping(&self) -> RedisResult<()> {
        let mut c = self.get().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(|_| ())
    }
}
