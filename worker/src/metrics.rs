//! Prometheus metrics of a worker, served on `SWITCH_WORKER_METRICS_ADDR`.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
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

/// A minimal HTTP endpoint: `GET /metrics` and `GET /health`. A busy port is
/// logged, not fatal, so several workers can share a host.
pub fn serve(addr: String, metrics: Metrics, queue: Queue) {
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
            let (m, q) = (metrics.clone(), queue.clone());
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
                    "/health" | "/ping" => ("200 OK", "text/plain", "ok".to_string()),
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
