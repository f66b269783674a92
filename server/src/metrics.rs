//! Prometheus metrics of the server.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub publishes: IntCounterVec,
    pub matches: IntCounter,
    pub enqueue_seconds: Histogram,
    pub queue_ready: IntGauge,
    pub queue_delayed: IntGauge,
    pub oldest_pending_seconds: prometheus::Gauge,
    pub dead_letters: IntGauge,
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
        let queue_ready = IntGauge::new(
            "switch_queue_depth",
            "Jobs in the stream (ready or in flight)",
        )
        .expect("valid metric");
        let queue_delayed =
            IntGauge::new("switch_queue_delayed", "Retries waiting for their due time")
                .expect("valid metric");
        let oldest_pending_seconds = prometheus::Gauge::new(
            "switch_queue_oldest_pending_age_seconds",
            "Age of the oldest job in the stream",
        )
        .expect("valid metric");
        let dead_letters = IntGauge::new("switch_dead_letters", "Dead letters not yet replayed")
            .expect("valid metric");
        let subscribers =
            IntGauge::new("switch_subscribers", "Subscribers loaded").expect("valid metric");
        for c in [
            Box::new(publishes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(matches.clone()),
            Box::new(enqueue_seconds.clone()),
            Box::new(queue_ready.clone()),
            Box::new(queue_delayed.clone()),
            Box::new(oldest_pending_seconds.clone()),
            Box::new(dead_letters.clone()),
            Box::new(subscribers.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            publishes,
            matches,
            enqueue_seconds,
            queue_ready,
            queue_delayed,
            oldest_pending_seconds,
            dead_letters,
            subscribers,
        }
    }

    pub fn render(&self) -> String {
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
