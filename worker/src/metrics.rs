//! Prometheus metrics of a worker, served on `SWITCH_WORKER_METRICS_ADDR`.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use switch_core::queue::Queue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub deliveries: IntCounterVec,
    pub latency: Histogram,
    pub dead_letters: IntCounter,
    queue_ready: IntGauge,
    queue_delayed: IntGauge,
    oldest_pending: prometheus::Gauge,
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
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        let dead_letters =
            IntCounter::new("switch_dead_letters_total", "Jobs that became dead letters")
                .expect("valid metric");
        let queue_ready = IntGauge::new(
            "switch_queue_depth",
            "Jobs in the stream (ready or in flight)",
        )
        .expect("valid metric");
        let queue_delayed =
            IntGauge::new("switch_queue_delayed", "Retries waiting for their due time")
                .expect("valid metric");
        let oldest_pending = prometheus::Gauge::new(
            "switch_queue_oldest_pending_age_seconds",
            "Age of the oldest job in the stream",
        )
        .expect("valid metric");
        for c in [
            Box::new(deliveries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(dead_letters.clone()),
            Box::new(queue_ready.clone()),
            Box::new(queue_delayed.clone()),
            Box::new(oldest_pending.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            deliveries,
            latency,
            dead_letters,
            queue_ready,
            queue_delayed,
            oldest_pending,
        }
    }

    async fn render(&self, queue: &Queue) -> String {
        if let Ok(Ok((ready, delayed))) =
            tokio::time::timeout(Duration::from_secs(1), queue.depth()).await
        {
            self.queue_ready.set(ready as i64);
            self.queue_delayed.set(delayed as i64);
        }
        let now = chrono::Utc::now().timestamp_millis();
        if let Ok(Ok(age)) =
            tokio::time::timeout(Duration::from_secs(1), queue.oldest_age_ms(now)).await
        {
            self.oldest_pending.set(age.unwrap_or(0) as f64 / 1000.0);
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
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
