//! Fixtures shared by the `switch-bench` binary and the criterion benchmarks:
//! a realistic published message, a realistic mix of subscriber filters, and
//! percentile helpers.

use std::collections::BTreeMap;

use serde_json::json;
use switch_core::db::models::{now, Subscriber};
use switch_core::message::{HttpMethod, Message};
use switch_core::subscribers::Index;
use switch_core::topic::Topic;

/// The topic every filter-cost subscriber listens on.
pub const TOPIC: &str = "orders.created";

/// Filters in the proportions used by `filter-cost`: out of every ten
/// subscribers, one has no filter and the nine others cycle through these.
pub const FILTERS: [&str; 9] = [
    r#"body.total > 100 && headers.x_tenant == "acme""#,
    r#"body.user.tier == "gold" || body.total >= 500"#,
    r#"data["body"]["country"] == "NL" and data["http_method"] == "POST""#,
    r#"body.total > 1000"#,
    r#"headers.x_tenant == "globex" && body.total > 10"#,
    r#"starts_with(body.sku, "SKU-") && body.quantity >= 2"#,
    r#"body.items.0.sku == "SKU-1" || body.coupon == "SPRING""#,
    r#"data["body"]["user"]["tier"] == "silver" or data["headers"]["x_tenant"] == "acme""#,
    r#"http_method == "POST" && contains(body.tags, "priority")"#,
];

/// The message published during the filter benchmarks.
pub fn message() -> Message {
    let mut headers = BTreeMap::new();
    headers.insert("Content-Type".to_string(), "application/json".to_string());
    headers.insert("X-Tenant".to_string(), "acme".to_string());
    headers.insert("X-Request-Source".to_string(), "checkout".to_string());
    Message {
        id: "msg_0192a0f5c3b87a1e9d4c2b6a8f0e1d3c".into(),
        topic: TOPIC.into(),
        author: Some("checkout-service".into()),
        body: json!({
            "id": 42,
            "total": 250,
            "currency": "EUR",
            "country": "NL",
            "sku": "SKU-1",
            "quantity": 3,
            "user": {"id": 7, "tier": "gold", "email": "a@example.com"},
            "items": [{"sku": "SKU-1", "qty": 2}, {"sku": "SKU-9", "qty": 1}],
            "tags": ["web", "priority"]
        }),
        headers,
        query_params: BTreeMap::new(),
        path_params: BTreeMap::from([("id".to_string(), "42".to_string())]),
        http_method: HttpMethod::Post,
        request_id: Some("req-1".into()),
        ordering_key: None,
        trace_id: None,
        published_at_ms: 0,
        extra: Default::default(),
    }
}

/// The filter of subscriber `i` (0-based): `None` for every tenth.
pub fn filter_for(i: usize) -> Option<&'static str> {
    if i % 10 == 9 {
        None
    } else {
        Some(FILTERS[(i - i / 10) % FILTERS.len()])
    }
}

/// `n` subscriber rows on `pattern`, with the filter mix of [`filter_for`].
pub fn subscriber_rows(n: usize, pattern: &str) -> Vec<Subscriber> {
    let t = now();
    (0..n)
        .map(|i| Subscriber {
            id: i as i64 + 1,
            topic: pattern.to_string(),
            target_url: format!("http://127.0.0.1:9/hook/{i}"),
            filter_expression: filter_for(i).map(str::to_string),
            secret: Some(format!("whsec_{i:032}")),
            enabled: true,
            description: None,
            created_at: t,
            updated_at: t,
            previous_secret: None,
            previous_secret_expires_at: None,
            max_in_flight: None,
            disabled_reason: None,
        })
        .collect()
}

/// An index of `n` subscribers on `pattern`; panics if any filter fails to compile.
pub fn index(n: usize, pattern: &str) -> Index {
    let index = Index::build(subscriber_rows(n, pattern), None);
    for id in 1..=n as i64 {
        let loaded = index.get(id).expect("every row is indexed");
        if let Some(e) = loaded.load_error() {
            panic!("subscriber {id} does not compile: {e}");
        }
    }
    index
}

pub fn topic() -> Topic {
    Topic::parse(TOPIC).expect("valid topic")
}

/// Percentile `p` (0..=100) of sorted samples, nearest-rank.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The small epsilon keeps 99.9 % of 1000 at rank 999 despite rounding.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_compiles_and_the_mix_matches_some() {
        let index = index(1000, TOPIC);
        let matched = index.matching(&topic(), &message());
        assert!(
            !matched.is_empty() && matched.len() < 1000,
            "{}",
            matched.len()
        );
        assert_eq!((0..1000).filter(|i| filter_for(*i).is_none()).count(), 100);
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 500);
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
