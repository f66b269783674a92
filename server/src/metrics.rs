//! Prometheus metrics of the server.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use switch_core::metrics::{register, QueueGauges};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub publishes: IntCounterVec,
    pub matches: IntCounter,
    pub enqueue_seconds: Histogram,
    pub queue: QueueGauges,
    pub subscribers: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let publishes = IntCounterVec::new(
            Opts::new("switch_publishes_total", "Publish requests by result"),
            &["result"],
        )
        .expect("valid metric");
        let matches = IntCounter::new(
            "switch_matches_total",
            "Jobs enqueued: subscribers matched by publishes",
        )
        .expect("valid metric");
        let enqueue_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "switch_enqueue_seconds",
                "Time to put one message's jobs into Redis",
            )
            .buckets(vec![
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )
        .expect("valid metric");
        let subscribers =
            IntGauge::new("switch_subscribers", "Subscribers loaded").expect("valid metric");
        register(
            &registry,
            vec![
                Box::new(publishes.clone()),
                Box::new(matches.clone()),
                Box::new(enqueue_seconds.clone()),
                Box::new(subscribers.clone()),
            ],
        );
        let queue = QueueGauges::new(&registry);
        Metrics {
            registry,
            publishes,
            matches,
            enqueue_seconds,
            queue,
            subscribers,
        }
    }

    pub fn render(&self) -> String {
        switch_core::metrics::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
