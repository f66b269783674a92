//! Timings of the most expensive filters we know how to write, against the
//! largest messages a publisher can send, to check that the evaluation budget
//! bounds what any accepted filter costs. Ignored by default; run with
//! `cargo test --release -p switch-core --lib filter::worst_case -- --ignored --nocapture --test-threads 1`
//! (`WORST_CASE=<part of a name>` runs only the matching cases).

use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use super::*;
use crate::message::{HttpMethod, Message};

/// The largest publish request (`SWITCH_MAX_BODY_BYTES`), which bounds every body.
const PUBLISH_LIMIT: usize = 1 << 20;

/// A message with `body` and nothing else that a filter could read at length.
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
        ordering_key: None,
        trace_id: None,
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

/// CPU time of this thread: on a busy machine, wall time also counts the
/// time other processes had the core.
fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `t` is.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t);
    }
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Prints (and returns) the CPU time one evaluation of `src` against
/// `message` takes (and the wall time), with what its budget says it spent.
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
    let cpu = thread_cpu_time();
    for _ in 0..runs {
        assert_eq!(filter.matches(message), first);
    }
    let each = (thread_cpu_time() - cpu) / runs;
    let wall = started.elapsed() / runs;
    println!(
        "{name:<26} {:>5} B filter {each:>11.3?} CPU per evaluation ({wall:.3?} wall)  matches={first:<5} exhausted={:<5} work={} built={}",
        src.len(),
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

    let needles: Vec<Message> = [4, 8, 16, 31, 32, 33, 64]
        .iter()
        .map(|n| {
            let mut needle = "x".repeat(*n);
            needle.replace_range(n / 2..n / 2 + 1, "y");
            body(json!({ "s": big[..PUBLISH_LIMIT - 1000].to_string(), "n": needle }))
        })
        .collect();
    // The most non-ASCII text one case mapping may take within the budget.
    let mappable = (eval::WORK_LIMIT / (eval::CASE_MAPPING_COST + 1)) as usize - 1000;
    let mwide_fits = body(json!({ "s": "\u{e9}".repeat(mappable / 2) }));
    let mgrow = body(json!({ "s": "\u{390}".repeat(mappable / 2) }));
    let mut tail = "x".repeat(mappable);
    tail.replace_range(0..1, "\u{e9}");
    let mtail = body(json!({ "s": tail }));
    let per_sigma = eval::CASE_MAPPING_COST * 2 + 2 + eval::SIGMA_COST;
    let sigmas = (eval::WORK_LIMIT / per_sigma) as usize - 100;
    let msigma = body(json!({ "s": "\u{3a3}".repeat(sigmas) }));
    let per_pair = eval::CASE_MAPPING_COST * 3 + 3 + eval::SIGMA_COST;
    let sigma_pairs = (eval::WORK_LIMIT / per_pair) as usize - 100;
    let msigma_apos = body(json!({ "s": "\u{3a3}'".repeat(sigma_pairs) }));
    let m100k = body(json!({ "s": s100k }));
    let m1m = body(json!({ "s": big }));
    let mhalves = body(json!({ "s": half, "t": half_last }));
    let mwide = body(json!({ "s": wide }));
    let marray = body(json!({ "a": zeros, "x": 1 }));
    let mdeep = body(json!({ "a": pairs }));
    let mneedle = body(json!({ "s": big[..PUBLISH_LIMIT - 1000].to_string(), "n": needle_hard }));

    let concat580 = format!("body.s{}", "+body.s".repeat(580));
    assert_eq!(concat580.len(), 4_066);
    let cases: Vec<(&str, String, &Message)> = vec![
        ("concat_580_100k", concat580.clone(), &m100k),
        ("concat_580_1m", concat580.clone(), &m1m),
        (
            "concat_len_chain_1m",
            fill("", "len(body.s+body.s)>0", "&&", ""),
            &m1m,
        ),
        (
            "lower_upper_nested_1m",
            nest("lower(upper(", "body.s", 32),
            &m1m,
        ),
        (
            "lower_chain_1m",
            fill("", "len(lower(body.s))<1", "||", ""),
            &m1m,
        ),
        (
            "lower_chain_wide_1m",
            fill("", "len(lower(body.s))<1", "||", ""),
            &mwide,
        ),
        (
            "lower_chain_wide_fits",
            fill("", "len(lower(body.s))<1", "||", ""),
            &mwide_fits,
        ),
        (
            "lower_chain_ascii_tail",
            fill("", "len(lower(body.s))<1", "||", ""),
            &mtail,
        ),
        (
            "lower_chain_sigma",
            fill("", "len(lower(body.s))<1", "||", ""),
            &msigma,
        ),
        (
            "lower_chain_sigma_apos",
            fill("", "len(lower(body.s))<1", "||", ""),
            &msigma_apos,
        ),
        (
            "upper_chain_growing",
            fill("", "len(upper(body.s))<1", "||", ""),
            &mgrow,
        ),
        (
            "len_chain_wide_1m",
            fill("", "len(body.s)>0", "&&", ""),
            &mwide,
        ),
        (
            "eq_chain_halves",
            fill("", "body.s!=body.t", "&&", ""),
            &mhalves,
        ),
        (
            "lt_chain_halves",
            fill("", "body.s<body.t", "&&", ""),
            &mhalves,
        ),
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
            "contains_needle_4",
            fill("", "!contains(body.s,body.n)", "&&", ""),
            &needles[0],
        ),
        (
            "contains_needle_8",
            fill("", "!contains(body.s,body.n)", "&&", ""),
            &needles[1],
        ),
        (
            "contains_needle_16",
            fill("", "!contains(body.s,body.n)", "&&", ""),
            &needles[2],
        ),
        (
            "contains_needle_31",
            fill("", "!contains(body.s,body.n)", "&&", ""),
            &needles[3],
        ),
        (
            "contains_needle_32",
            fill("", "!contains(body.s,body.n)", "&&", ""),
            &needles[4],
        ),
        (
            "contains_needle_33",
            fill("", "!contains(body.s,body.n)", "&&", ""),
            &needles[5],
        ),
        (
            "contains_needle_64",
            fill("", "!contains(body.s,body.n)", "&&", ""),
            &needles[6],
        ),
        (
            "starts_with_chain_halves",
            fill("", "!starts_with(body.s,body.t)", "&&", ""),
            &mhalves,
        ),
        (
            "json_eq_array_chain",
            fill("", "body.a==body.a", "&&", ""),
            &marray,
        ),
        (
            "json_eq_deep_chain",
            fill("", "body.a==body.a", "&&", ""),
            &mdeep,
        ),
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
        (
            "not_chain",
            format!("{}true", "!".repeat(MAX_FILTER_BYTES - 4)),
        ),
        (
            "neg_chain",
            format!("{}1", "-".repeat(MAX_FILTER_BYTES - 1)),
        ),
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
            nest(
                "body.z||body.s&&body.s==body.s+body.s*body.s^len(",
                "body.s",
                MAX_NESTING,
            ),
        ),
        ("exp_chain", fill("", "2", "^", "")),
        ("eq_chain", fill("", "1", "==", "")),
        ("function_chain", fill("", "len", " ", " \"x\"")),
        (
            "function_prefix_limit",
            format!("{}\"x\"", "len ".repeat(MAX_PREFIXES)),
        ),
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

/// Prints (and returns) the time compiling `src` takes, and its verdict.
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

#[test]
#[ignore = "a timing run, not a check"]
fn case_mapping_rates() {
    // Nanoseconds per input byte of `lower`/`upper` for text made of one
    // character, to weigh `eval::CASE_MAPPING_COST`.
    for c in ['x', 'é', 'ΐ', 'Σ', 'İ', 'ß', 'ﬃ', 'ǅ', '中'] {
        let text: String = std::iter::repeat_n(c, 200_000 / c.len_utf8()).collect();
        for (name, f) in [
            ("lower", str::to_lowercase as fn(&str) -> String),
            ("upper", str::to_uppercase),
        ] {
            let started = Instant::now();
            let out = std::hint::black_box(f(std::hint::black_box(&text)));
            let per_byte = started.elapsed().as_nanos() as f64 / text.len() as f64;
            println!(
                "{name}({c}) {per_byte:>6.2} ns per byte, {:.2}x the bytes",
                out.len() as f64 / text.len() as f64
            );
        }
    }
}
