//! Hub-wide totals kept in one Redis hash (`{ns}:stats`): the server's enqueue
//! script counts publishes and matches, each worker adds its finished attempts
//! in batches, and every `/metrics` shows the whole hub's figures beside its
//! own process's.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// Upper bounds (seconds) of the delivery duration histogram.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Outcomes always shown, even at zero.
const OUTCOMES: [&str; 3] = ["delivered", "failed", "dead"];

/// Attempts finished by one worker since its last flush.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DeliveryStats {
    outcomes: BTreeMap<String, i64>,
    /// Attempts per bucket (not cumulative); the last is above every bound.
    buckets: [i64; DURATION_BUCKETS.len() + 1],
    duration_ms: i64,
    count: i64,
}

impl DeliveryStats {
    pub fn add(&mut self, outcome: &str, duration_ms: i64) {
        // Called per attempt: allocate the key only for an outcome not seen yet.
        match self.outcomes.get_mut(outcome) {
            Some(n) => *n += 1,
            None => {
                self.outcomes.insert(outcome.to_string(), 1);
            }
        }
        let secs = duration_ms.max(0) as f64 / 1000.0;
        let i = DURATION_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i] += 1;
        self.duration_ms += duration_ms.max(0);
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `(hash field, increment)` pairs.
    pub fn fields(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .outcomes
            .iter()
            .map(|(o, n)| (format!("outcome:{o}"), *n))
            .collect();
        out.extend(
            self.buckets
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (format!("duration_bucket:{i}"), *n)),
        );
        out.push(("duration_ms".into(), self.duration_ms));
        out.push(("duration_count".into(), self.count));
        out
    }
}

/// The stored totals, rendered as Prometheus text.
pub struct HubStats(pub HashMap<String, i64>);

impl HubStats {
    fn get(&self, field: &str) -> i64 {
        self.0.get(field).copied().unwrap_or(0)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "switch_hub_publishes_total",
            "Messages accepted by every server of this hub",
            self.get("published"),
        );
        counter(
            "switch_hub_matches_total",
            "Delivery jobs those messages made (matching subscribers)",
            self.get("matched"),
        );
        let mut outcomes: Vec<String> = OUTCOMES.iter().map(|o| o.to_string()).collect();
        for field in self.0.keys() {
            if let Some(o) = field.strip_prefix("outcome:") {
                if !outcomes.iter().any(|x| x == o) {
                    outcomes.push(o.to_string());
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP switch_hub_deliveries_total Delivery attempts of every worker of this hub, by outcome\n# TYPE switch_hub_deliveries_total counter"
        );
        for o in &outcomes {
            let _ = writeln!(
                out,
                "switch_hub_deliveries_total{{outcome=\"{o}\"}} {}",
                self.get(&format!("outcome:{o}"))
            );
        }
        let _ = writeln!(
            out,
            "# HELP switch_hub_delivery_seconds Duration of the delivery attempts of every worker of this hub\n# TYPE switch_hub_delivery_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            cumulative += self.get(&format!("duration_bucket:{i}"));
            let _ = writeln!(
                out,
                "switch_hub_delivery_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.get("duration_count");
        let _ = writeln!(
            out,
            "switch_hub_delivery_seconds_bucket{{le=\"+Inf\"}} {count}\nswitch_hub_delivery_seconds_sum {}\nswitch_hub_delivery_seconds_count {count}",
            self.get("duration_ms") as f64 / 1000.0
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_fold_into_fields_and_render_as_a_histogram() {
        let mut s = DeliveryStats::default();
        assert!(s.is_empty());
        s.add("delivered", 0);
        s.add("delivered", 7);
        s.add("failed", 40_000);
        let fields: HashMap<String, i64> = s.fields().into_iter().collect();
        assert_eq!(fields["outcome:delivered"], 2);
        assert_eq!(fields["outcome:failed"], 1);
        assert_eq!(fields["duration_bucket:0"], 1);
        assert_eq!(fields["duration_bucket:3"], 1);
        assert_eq!(fields["duration_bucket:14"], 1);
        assert_eq!(fields["duration_count"], 3);
        let mut stored = fields;
        stored.insert("published".into(), 5);
        stored.insert("matched".into(), 9);
        let text = HubStats(stored).render();
        for line in [
            "switch_hub_publishes_total 5",
            "switch_hub_matches_total 9",
            "switch_hub_deliveries_total{outcome=\"delivered\"} 2",
            "switch_hub_deliveries_total{outcome=\"dead\"} 0",
            "switch_hub_delivery_seconds_bucket{le=\"0.001\"} 1",
            "switch_hub_delivery_seconds_bucket{le=\"0.01\"} 2",
            "switch_hub_delivery_seconds_bucket{le=\"30\"} 2",
            "switch_hub_delivery_seconds_bucket{le=\"+Inf\"} 3",
            "switch_hub_delivery_seconds_sum 40.007",
            "switch_hub_delivery_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
