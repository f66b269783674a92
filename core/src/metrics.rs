//! Metrics both binaries expose: the queue's depth and age, read at scrape time.

use std::time::Duration;

use prometheus::{Encoder, Gauge, IntGauge, Registry, TextEncoder};

use crate::queue::{HubStats, Queue};

/// Registers every collector, panicking on a duplicate name (a startup bug).
pub fn register(registry: &Registry, collectors: Vec<Box<dyn prometheus::core::Collector>>) {
    for c in collectors {
        registry.register(c).expect("metric registered once");
    }
}

/// The registry in Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

#[derive(Clone)]
pub struct QueueGauges {
    ready: IntGauge,
    delayed: IntGauge,
    parked: IntGauge,
    oldest_pending: Gauge,
}

impl QueueGauges {
    pub fn new(registry: &Registry) -> Self {
        let g = QueueGauges {
            ready: IntGauge::new(
                "switch_queue_depth",
                "Jobs in the stream (ready or in flight)",
            )
            .expect("valid metric"),
            delayed: IntGauge::new("switch_queue_delayed", "Retries waiting for their due time")
                .expect("valid metric"),
            parked: IntGauge::new(
                "switch_queue_parked",
                "Jobs held for subscribers at their in-flight limit or with an open circuit",
            )
            .expect("valid metric"),
            oldest_pending: Gauge::new(
                "switch_queue_oldest_pending_age_seconds",
                "Age of the oldest job in the stream",
            )
            .expect("valid metric"),
        };
        register(
            registry,
            vec![
                Box::new(g.ready.clone()),
                Box::new(g.delayed.clone()),
                Box::new(g.parked.clone()),
                Box::new(g.oldest_pending.clone()),
            ],
        );
        g
    }

    /// Reads the queue (bounded to a second each, so a scrape never hangs on Redis).
    pub async fn update(&self, queue: &Queue) {
        if let Ok(Ok((ready, delayed))) =
            tokio::time::timeout(Duration::from_secs(1), queue.depth()).await
        {
            self.ready.set(ready as i64);
            self.delayed.set(delayed as i64);
        }
        if let Ok(Ok(parked)) =
            tokio::time::timeout(Duration::from_secs(1), queue.parked_total()).await
        {
            self.parked.set(parked as i64);
        }
        let now = chrono::Utc::now().timestamp_millis();
        if let Ok(Ok(age)) =
            tokio::time::timeout(Duration::from_secs(1), queue.oldest_age_ms(now)).await
        {
            self.oldest_pending.set(age.unwrap_or(0) as f64 / 1000.0);
        }
    }
}

/// The hub-wide totals in Prometheus text (empty when Redis does not answer
/// within a second).
pub async fn hub_totals(queue: &Queue) -> String {
    match tokio::time::timeout(Duration::from_secs(1), queue.hub_stats()).await {
        Ok(Ok(fields)) => HubStats(fields).render(),
        _ => String::new(),
    }
}
