//! Timings of the most expensive filters we know how to write, against the
//! largest messages a publisher can send. Ignored by default; run with
//! `cargo test --release -p switch-core --lib filter::worst_case -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use super::*;
use crate::message::{HttpMethod, Message};

/// The largest publish request (`SWITCH_MAX_BODY_BYTES`), which bounds every body.
const PUBLISH_LIMIT: usize = 1 << 20;

fn message(body: Json) -> Message {
    Message {
        id: "msg_1".into(),
        topic: "orders.created".into(),
        author: Some("shop".into()),
        body,
        headers: Default::default(),
        query_params: Default::default(),
        path_params: Default::default(),
        http_method: HttpMethod::Post,
        request_id: None,
        published_at_ms: 0,
        extra: Default::default(),
    }
}

/// `part` joined by `sep` as many times as fits in `MAX_FILTER_BYTES` after `head`.
fn fill(head: &str, part: &str, sep: &str, tail: &str) -> String {
    let mut out = String::from(head);
    out.push_str(part);
    while out.len() + sep.len() + part.len() + tail.len() <= MAX_FILTER_BYTES {
        out.push_str(sep);
        out.push_str(part);
    }
    out.push_str(tail);
    out
}

/// `f(f(f(...inner...)))` nested as deep as the parenthesis limit allows.
fn nest(open: &str, inner: &str, depth: usize) -> String {
    let closers = depth * open.matches('(').count();
    format!("{}{inner}{}", open.repeat(depth), ")".repeat(closers))
}

/// A message whose body holds `fields`, checked to fit the publish limit.
fn body(fields: Json) -> Message {
    let size = fields.to_string().len();
    assert!(size <= PUBLISH_LIMIT, "{size} bytes");
    message(fields)
}

fn time(name: &str, src: &str, message: &Message) -> Duration {
    let filter = CompiledFilter::compile(Some(src)).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let started = Instant::now();
    let outcome = filter.evaluate(message, Budget::PER_EVALUATION);
    let first = outcome.matched;
    let once = started.elapsed();
    let runs = if once > Duration::from_millis(200) {
        1
    } else {
        (Duration::from_millis(500).as_nanos() / once.as_nanos().max(1)).clamp(1, 10_000) as u32
    };
    let started = Instant::now();
    for _ in 0..runs {
        assert_eq!(filter.matches(message), first);
    }
    let each = started.elapsed() / runs;
    println!(
        "{name:<26} {:>5} B filter {:>11.3?} per evaluation  matches={first:<5} exhausted={:<5} work={} built={}",
        src.len(),
        each,
        outcome.exhausted,
        outcome.spent.work,
        outcome.spent.built,
    );
    each
}

#[test]
#[ignore = "a timing run, not a check"]
fn worst_filters() {
    let s100k = "x".repeat(100_000);
    let big = "x".repeat(PUBLISH_LIMIT - 100);
    let half = "x".repeat(PUBLISH_LIMIT / 2 - 100);
    let mut half_last = half.clone();
    half_last.pop();
    half_last.push('y');
    let wide = "é".repeat(PUBLISH_LIMIT / 4);
    let zeros = vec![0; PUBLISH_LIMIT / 2 - 100];
    let nested = {
        let mut v = json!(0);
        for _ in 0..120 {
            v = json!([v]);
        }
        v
    };
    let pairs: Vec<Json> = (0..PUBLISH_LIMIT / 250).map(|_| nested.clone()).collect();
    let needle_hard = format!("{}y{}", "x".repeat(200), "x".repeat(200));

    let m100k = body(json!({ "s": s100k }));
    let m1m = body(json!({ "s": big }));
    let mhalves = body(json!({ "s": half, "t": half_last }));
    let mwide = body(json!({ "s": wide }));
    let marray = body(json!({ "a": zeros, "x": 1 }));
    let mdeep = body(json!({ "a": pairs }));
    let mneedle = body(json!({ "s": big.clone()[..PUBLISH_LIMIT - 1000].to_string(), "n": needle_hard }));

    let concat580 = format!("body.s{}", "+body.s".repeat(579));
    assert_eq!(concat580.len(), 4_059);
    let cases: Vec<(&str, String, &Message)> = vec![
        ("concat_580_100k", concat580.clone(), &m100k),
        ("concat_580_1m", concat580.clone(), &m1m),
        (
            "concat_len_chain_1m",
            fill("", "len(body.s+body.s)>0", "&&", ""),
            &m1m,
        ),
        ("lower_upper_nested_1m", nest("lower(upper(", "body.s", 32), &m1m),
        (
            "lower_chain_1m",
            fill("", "len(lower(body.s))<1", "||", ""),
            &m1m,
        ),
        ("len_chain_wide_1m", fill("", "len(body.s)>0", "&&", ""), &mwide),
        ("eq_chain_halves", fill("", "body.s!=body.t", "&&", ""), &mhalves),
        ("lt_chain_halves", fill("", "body.s<body.t", "&&", ""), &mhalves),
        (
            "contains_chain_halves",
            fill("", "!contains(body.s,body.t)", "&&", ""),
            &mhalves,
        ),
        (
            "contains_hard_needle_1m",
            fill("", "!contains(body.s,body.n)", "&&", ""),
            &mneedle,
        ),
        (
            "starts_with_chain_halves",
            fill("", "!starts_with(body.s,body.t)", "&&", ""),
            &mhalves,
        ),
        ("json_eq_array_chain", fill("", "body.a==body.a", "&&", ""), &marray),
        ("json_eq_deep_chain", fill("", "body.a==body.a", "&&", ""), &mdeep),
        (
            "json_contains_chain",
            fill("", "!contains(body.a,body.x)", "&&", ""),
            &marray,
        ),
    ];
    // `WORST_CASE=name` runs only the cases whose names contain it.
    let only = std::env::var("WORST_CASE").unwrap_or_default();
    for (name, src, message) in cases.iter().filter(|c| c.0.contains(only.as_str())) {
        assert!(src.len() <= MAX_FILTER_BYTES, "{name}: {}", src.len());
        time(name, src, message);
    }
}

#[test]
#[ignore = "a timing run, not a check"]
fn deep_filters() {
    let m = body(json!({ "s": "x" }));
    let cases = [
        ("sub_chain", fill("", "1", "-", "")),
        ("and_chain", fill("", "body.s", "&&", "")),
        ("not_chain", format!("{}true", "!".repeat(MAX_FILTER_BYTES - 4))),
        ("neg_chain", format!("{}1", "-".repeat(MAX_FILTER_BYTES - 1))),
        ("prefix_limit", format!("{}true", "!".repeat(MAX_PREFIXES))),
        (
            "nested_sub_chains",
            format!(
                "{}1{}{}",
                "(".repeat(MAX_NESTING),
                "-1".repeat((MAX_FILTER_BYTES - 1 - 4 * MAX_NESTING) / 2),
                ")-1".repeat(MAX_NESTING)
            ),
        ),
        (
            "right_nested",
            nest("body.z||body.s&&body.s==body.s+body.s*body.s^len(", "body.s", MAX_NESTING),
        ),
        ("exp_chain", fill("", "2", "^", "")),
        ("eq_chain", fill("", "1", "==", "")),
        ("function_chain", fill("", "len", " ", " \"x\"")),
        ("function_prefix_limit", format!("{}\"x\"", "len ".repeat(MAX_PREFIXES))),
    ];
    let only = std::env::var("WORST_CASE").unwrap_or_default();
    for (name, src) in cases.iter().filter(|c| c.0.contains(only.as_str())) {
        assert!(src.len() <= MAX_FILTER_BYTES, "{name}: {}", src.len());
        time_compile(name, src);
        if CompiledFilter::compile(Some(src)).is_ok() {
            time(name, src, &m);
        }
    }
}

fn time_compile(name: &str, src: &str) -> Duration {
    let started = Instant::now();
    let result = CompiledFilter::compile(Some(src));
    let each = started.elapsed();
    let verdict = match &result {
        Ok(_) => "compiles".to_string(),
        Err(e) => format!("refused: {}", e.message),
    };
    println!(
        "{name:<26} {:>5} B source {:>11.3?} to compile  {verdict}",
        src.len(),
        each
    );
    each
}

#[test]
#[ignore = "a timing run, not a check"]
fn worst_compiles() {
    let chained = |depth: usize| {
        format!(
            "{}data[\"x\"]{}",
            "1 < (".repeat(depth),
            ") < 1".repeat(depth)
        )
    };
    let cases = [
        ("late_parse_error", fill("", "1", " +", " 1")),
        ("legacy_chain_nest_16", chained(16)),
        ("legacy_chain_nest_20", chained(20)),
        ("legacy_chain_nest_22", chained(22)),
    ];
    let only = std::env::var("WORST_CASE").unwrap_or_default();
    for (name, src) in cases.iter().filter(|c| c.0.contains(only.as_str())) {
        assert!(src.len() <= MAX_FILTER_BYTES, "{name}: {}", src.len());
        time_compile(name, src);
    }
}
