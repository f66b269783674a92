//! Micro-benchmarks of publish-time matching: one compiled filter evaluated
//! against one message, and one topic pattern matched against one topic.
//!
//! cargo bench -p switch-bench --bench filters

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switch_core::filter::CompiledFilter;
use switch_core::topic::{Topic, TopicPattern};

fn filters(c: &mut Criterion) {
    let message = switch_bench::message();
    let mut group = c.benchmark_group("filter_matches");
    let cases: [(&str, &str); 7] = [
        ("always", ""),
        ("and_header", switch_bench::FILTERS[0]),
        ("or_nested", switch_bench::FILTERS[1]),
        ("legacy_translated", switch_bench::FILTERS[2]),
        ("function_call", switch_bench::FILTERS[5]),
        ("array_index", switch_bench::FILTERS[6]),
        (
            "missing_variable",
            r#"body.nope.deeper > 1 || headers.x_none == "a""#,
        ),
    ];
    for (name, src) in cases {
        let filter = CompiledFilter::compile(Some(src)).expect("benchmark filters compile");
        group.bench_with_input(BenchmarkId::from_parameter(name), &filter, |b, f| {
            b.iter(|| black_box(f).matches(black_box(&message)))
        });
    }
    group.finish();

    c.bench_function("filter_compile/and_header", |b| {
        b.iter(|| CompiledFilter::compile(black_box(Some(switch_bench::FILTERS[0]))))
    });
    c.bench_function("filter_compile/legacy_translated", |b| {
        b.iter(|| CompiledFilter::compile(black_box(Some(switch_bench::FILTERS[2]))))
    });
}

/// The most expensive filters known, against the largest bodies a publisher
/// can send (1 MiB): each evaluation stops when its budget is spent, so these
/// bound what one filter can cost.
fn worst_filters(c: &mut Criterion) {
    const LIMIT: usize = 1 << 20;
    let with_body = |body: serde_json::Value| {
        let mut message = switch_bench::message();
        message.body = body;
        message
    };
    let fill = |part: &str, sep: &str| {
        let mut out = part.to_string();
        while out.len() + sep.len() + part.len() <= switch_core::filter::MAX_FILTER_BYTES {
            out.push_str(sep);
            out.push_str(part);
        }
        out
    };
    let needle = format!("{}y{}", "x".repeat(200), "x".repeat(200));
    let cases = [
        (
            "concat_580_100k",
            format!("body.s{}", "+body.s".repeat(580)),
            with_body(serde_json::json!({ "s": "x".repeat(100_000) })),
        ),
        (
            "contains_chain_1m",
            fill("!contains(body.s,body.n)", "&&"),
            with_body(serde_json::json!({ "s": "x".repeat(LIMIT - 1000), "n": needle })),
        ),
        (
            "json_eq_chain_1m",
            fill("body.a==body.a", "&&"),
            with_body(serde_json::json!({ "a": vec![0; LIMIT / 2 - 100] })),
        ),
        (
            "lower_sigma_chain",
            fill("len(lower(body.s))<1", "||"),
            with_body(serde_json::json!({ "s": "\u{3a3}".repeat(15_000) })),
        ),
    ];
    let mut group = c.benchmark_group("filter_worst");
    for (name, src, message) in cases {
        let filter = CompiledFilter::compile(Some(&src)).expect("worst-case filters compile");
        group.bench_with_input(BenchmarkId::from_parameter(name), &filter, |b, f| {
            b.iter(|| black_box(f).matches(black_box(&message)))
        });
    }
    group.finish();
}

fn topics(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_pattern_matches");
    let cases = [
        ("exact", "orders.created.eu", "orders.created.eu"),
        ("star", "orders.*.eu", "orders.created.eu"),
        ("hash_tail", "orders.#", "orders.created.eu.west.1"),
        ("hash_middle", "a.#.z", "a.b.c.d.e.f.g.z"),
        ("hash_only", "#", "orders.created.eu"),
        ("miss", "billing.*", "orders.created"),
    ];
    for (name, pattern, topic) in cases {
        let p = TopicPattern::parse(pattern).expect("valid pattern");
        let t = Topic::parse(topic).expect("valid topic");
        assert!(
            name == "miss" || p.matches(&t),
            "{pattern} should match {topic}"
        );
        group.bench_with_input(BenchmarkId::from_parameter(name), &(p, t), |b, (p, t)| {
            b.iter(|| black_box(p).matches(black_box(t)))
        });
    }
    group.finish();
}

fn index(c: &mut Criterion) {
    let topic = switch_bench::topic();
    let message = switch_bench::message();
    let mut group = c.benchmark_group("index_matching");
    for n in [10usize, 100, 1000] {
        let idx = switch_bench::index(n, switch_bench::TOPIC);
        group.bench_with_input(BenchmarkId::new("exact_topic", n), &idx, |b, idx| {
            b.iter(|| idx.matching(black_box(&topic), black_box(&message)))
        });
    }
    group.finish();
}

criterion_group!(benches, filters, worst_filters, topics, index);
criterion_main!(benches);
