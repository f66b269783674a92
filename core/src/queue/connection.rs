//! A Redis connection that is made on first use and remade after Redis comes
//! back, so a process can start (and keep running) while Redis is down.
//!
//! Two engines: one Redis server (`redis://`), or a Redis Cluster
//! (`redis+cluster://host:port[,host:port…]`), reached through the redis
//! crate's cluster client, which follows slot moves and failovers by itself.
//!
//! Each thread gets a connection of its own: a connection's I/O runs on the
//! runtime thread that made it, so a request handler on an actix worker thread
//! talks to Redis without handing every command to another thread and back.
//!
//! A connection left idle while Redis restarts is only found dead by the next
//! command sent on it. [`RedisConnection`] sends such a command once more on a
//! fresh connection, so the first commands after a restart succeed instead of
//! failing with `broken pipe`.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use thread_local::ThreadLocal;
use tokio::sync::OnceCell;

/// The URL scheme that selects a Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

#[derive(Clone)]
enum Engine {
    Single(redis::Client),
    Cluster(Vec<String>),
}

#[derive(Clone)]
pub struct RedisHandle {
    engine: Engine,
    response_timeout: Duration,
    /// Made once per thread; the manager reconnects by itself after that.
    managers: Arc<ThreadLocal<OnceCell<Conn>>>,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The node URLs of `redis+cluster://a:1,b:2` (user info and TLS are not
/// supported in this form).
pub fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let rest = url.strip_prefix(CLUSTER_SCHEME)?;
    let rest = rest.split(['/', '?']).next().unwrap_or("");
    let nodes: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!("redis://{s}"))
        .collect();
    (!nodes.is_empty()).then_some(nodes)
}

impl RedisHandle {
    /// `response_timeout` must exceed any BLOCK time used on this handle.
    pub fn new(url: &str, response_timeout: Duration) -> RedisResult<Self> {
        let engine = if url.starts_with(CLUSTER_SCHEME) {
            let nodes = cluster_nodes(url).ok_or_else(|| {
                RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "redis+cluster:// needs at least one host:port",
                ))
            })?;
            Engine::Cluster(nodes)
        } else {
            Engine::Single(redis::Client::open(url)?)
        };
        Ok(RedisHandle {
            engine,
            response_timeout,
            managers: Arc::new(ThreadLocal::new()),
        })
    }

    /// Whether this handle talks to a Redis Cluster (each script must then
    /// touch keys of one slot only).
    pub fn is_cluster(&self) -> bool {
        matches!(self.engine, Engine::Cluster(_))
    }

    /// A second handle to the same server with its own connection (for blocking reads).
    pub fn separate(&self, response_timeout: Duration) -> Self {
        RedisHandle {
            engine: self.engine.clone(),
            response_timeout,
            managers: Arc::new(ThreadLocal::new()),
        }
    }

    /// This thread's connection, made on first use.
    pub async fn get(&self) -> RedisResult<RedisConnection> {
        self.managers
            .get_or_default()
            .get_or_try_init(|| async {
                match &self.engine {
                    Engine::Single(client) => {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(Duration::from_secs(1)))
                            .set_response_timeout(Some(self.response_timeout))
                            .set_number_of_retries(1)
                            .set_max_delay(Duration::from_millis(500));
                        ConnectionManager::new_with_config(client.clone(), config)
                            .await
                            .map(Conn::Single)
                    }
                    Engine::Cluster(nodes) => {
                        // Retries span a failover: a replica is promoted a
                        // few seconds after its master stops answering.
                        ClusterClient::builder(nodes.clone())
                            .connection_timeout(Duration::from_secs(1))
                            .response_timeout(self.response_timeout)
                            .retries(6)
                            .min_retry_wait(50)
                            .max_retry_wait(1000)
                            .build()?
                            .get_async_connection()
                            .await
                            .map(Conn::Cluster)
                    }
                }
            })
            .await
            .cloned()
            .map(|inner| RedisConnection { inner })
    }

    pub async fn ping(&self) -> RedisResult<()> {
        let mut c = self.get().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(|_| ())
    }
}

/// A command or pipeline whose connection turns out to be dead (closed by a
/// Redis restart, reset, or a reconnect that failed earlier) is sent once more,
/// on the fresh connection the manager starts when it sees the failure.
///
/// What is retried: errors saying the connection was closed, reset, refused or
/// not connected ([`RedisError::is_connection_dropped`]). In the common case —
/// Redis restarted while the connection sat idle — the command never reached a
/// live server, so sending it again is exact. The rare case where it did run
/// and only its reply was lost cannot be told apart from the client side; the
/// retry then runs it twice. Every command of the queue tolerates that: a job
/// enqueued twice carries the same message id (delivery is at least once and
/// `webhook-id` lets subscribers drop the copy; with an `Idempotency-Key` the
/// second run finds the record of the first and stores nothing), acks,
/// deletes, ZADDs of the same member and version bumps are idempotent, and a
/// read whose reply was lost leaves its entries pending for takeover.
///
/// Not retried: timeouts (the command may still be running, and a second wait
/// would only double the time before the caller can answer), server errors,
/// and a second failure, which is returned (so a publish answers 503) and
/// logged as possibly having run.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Conn,
}

/// A failure that says the connection was found dead, not that the command
/// was refused or is still running.
fn connection_was_dead(e: &RedisError) -> bool {
    e.is_io_error() && e.is_connection_dropped() && !e.is_timeout()
}

fn after_retry<T>(first: &RedisError, second: RedisResult<T>) -> RedisResult<T> {
    match second {
        Ok(v) => {
            tracing::debug!(error = %first, "Redis connection was dead; the command succeeded on a fresh one");
            Ok(v)
        }
        Err(e) => {
            tracing::warn!(
                first_error = %first,
                error = %e,
                "Redis command failed twice; if the connection broke while it was in flight it may have run"
            );
            Err(e)
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let inner = match &mut self.inner {
                Conn::Single(m) => m,
                // The cluster client retries (and follows moves) by itself.
                Conn::Cluster(c) => return c.req_packed_command(cmd).await,
            };
            match inner.send_packed_command(cmd).await {
                Err(e) if connection_was_dead(&e) => {
                    let second = inner.send_packed_command(cmd).await;
                    after_retry(&e, second)
                }
                other => other,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let inner = match &mut self.inner {
                Conn::Single(m) => m,
                Conn::Cluster(c) => return c.req_packed_commands(pipeline, offset, count).await,
            };
            match inner.send_packed_commands(pipeline, offset, count).await {
                Err(e) if connection_was_dead(&e) => {
                    let second = inner.send_packed_commands(pipeline, offset, count).await;
                    after_retry(&e, second)
                }
                other => other,
            }
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Conn::Single(m) => m.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_every_node() {
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:7000, 127.0.0.1:7001/").unwrap(),
            vec!["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert!(cluster_nodes("redis+cluster://").is_none());
        assert!(cluster_nodes("redis://127.0.0.1:6379").is_none());
    }

    #[test]
    fn only_a_dead_connection_is_retried() {
        use std::io::{Error, ErrorKind};
        let io = |k: ErrorKind| RedisError::from(Error::from(k));
        for k in [
            ErrorKind::BrokenPipe,
            ErrorKind::ConnectionReset,
            ErrorKind::ConnectionAborted,
            ErrorKind::ConnectionRefused,
            ErrorKind::UnexpectedEof,
            ErrorKind::NotConnected,
        ] {
            assert!(connection_was_dead(&io(k)), "{k:?}");
        }
        assert!(!connection_was_dead(&io(ErrorKind::TimedOut)));
        let server = RedisError::from((redis::ErrorKind::Client, "refused"));
        assert!(!connection_was_dead(&server));
    }
}
