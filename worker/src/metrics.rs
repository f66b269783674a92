//! Prometheus metrics of a worker, served on `SWITCH_WORKER_METRICS_ADDR`.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use switch_core::db::DbPool;
use switch_core::metrics::{register, QueueGauges};
use switch_core::queue::Queue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub deliveries: IntCounterVec,
    pub latency: Histogram,
    pub dead_letters: IntCounter,
    queue: QueueGauges,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let deliveries = IntCounterVec::new(
            Opts::new(
                "switch_deliveries_total",
                "Delivery attempts by outcome and subscriber",
            ),
            &["outcome", "subscriber_id"],
        )
        .expect("valid metric");
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "switch_delivery_seconds",
                "Duration of one delivery attempt",
            )
            // The same bounds as the hub-wide histogram, so the two compare.
            .buckets(switch_core::queue::DURATION_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let dead_letters =
            IntCounter::new("switch_dead_letters_total", "Jobs that became dead letters")
                .expect("valid metric");
        register(
            &registry,
            vec![
                Box::new(deliveries.clone()),
                Box::new(latency.clone()),
                Box::new(dead_letters.clone()),
            ],
        );
        let queue = QueueGauges::new(&registry);
        Metrics {
            registry,
            deliveries,
            latency,
            dead_letters,
            queue,
        }
    }

    async fn render(&self, queue: &Queue) -> String {
        self.queue.update(queue).await;
        let mut text = switch_core::metrics::render(&self.registry);
        text.push_str(&switch_core::metrics::hub_totals(queue).await);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `/health`: 200 when Redis and the database both answer, else 503 naming
/// what is down (a worker that cannot reach either delivers nothing).
async fn health(queue: &Queue, pool: &DbPool) -> (&'static str, String) {
    let redis_ok = tokio::time::timeout(Duration::from_secs(2), queue.redis().ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let p = pool.clone();
    let db_ok = tokio::time::timeout(
        Duration::from_secs(4),
        tokio::task::spawn_blocking(move || switch_core::db::answers(&p)),
    )
    .await
    .is_ok_and(|r| r.unwrap_or(false));
    let word = |ok: bool| if ok { "ok" } else { "down" };
    let body = serde_json::json!({
        "status": word(redis_ok && db_ok),
        "redis": word(redis_ok),
        "database": word(db_ok),
    })
    .to_string();
    let status = if redis_ok && db_ok {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    (status, body)
}

/// A minimal HTTP endpoint: `GET /metrics` and `GET /health`. A busy port is
/// logged, not fatal, so several workers can share a host.
pub fn serve(addr: String, metrics: Metrics, queue: Queue, pool: DbPool) {
    tokio::spawn(async move {
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(addr = %addr, error = %e, "worker metrics endpoint not started");
                return;
            }
        };
        tracing::info!(addr = %addr, "worker metrics on /metrics");
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let (m, q, p) = (metrics.clone(), queue.clone(), pool.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n =
                    match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
                        Ok(Ok(n)) => n,
                        _ => return,
                    };
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (status, ctype, body) = match path {
                    "/metrics" => (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        m.render(&q).await,
                    ),
                    "/health" => {
                        let (status, body) = health(&q, &p).await;
                        (status, "application/json", body)
                    }
                    "/ping" => ("200 OK", "text/plain", "ok".to_string()),
                    _ => ("404 Not Found", "text/plain", "not found".to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
}
