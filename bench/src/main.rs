//! `switch-bench`: the load tools behind `bench/run.sh`.
//!
//! ```text
//! switch-bench receiver --addr 127.0.0.1:18481 [--workers 2] [--hang-ms 10000]
//!     any request -> 200; requests under /__hang -> 200 after --hang-ms
//!     (counted apart); GET /__stats, GET /__progress, POST /__reset
//! switch-bench latency --url BASE --token T (--topic X | --topics X,Y,…) [--rate 1000] [--seconds 10]
//! switch-bench fill --url BASE --token T --topic X --messages N [--concurrency 32] [--max-seconds 600]
//! switch-bench filter-cost [--subscribers 1000] [--runs 5] [--min-ms 300]
//! switch-bench rss --pid N       (VmHWM, VmRSS and CPU seconds of a process)
//! switch-bench stream-clients --url BASE --token T --patterns P,Q,… [--clients 1000] [--seconds 10]
//!     [--ready-file PATH] [--connect-timeout 60] [--reconnect-ms 1000] [--connect-concurrency 64]
//! ```
//! Every command prints one JSON object on stdout.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::json;
use switch_bench::{median, percentile, unix_micros};

const USAGE: &str = "usage: switch-bench <receiver|latency|fill|filter-cost|rss|stream-clients> [--option value]...
  receiver    --addr 127.0.0.1:PORT [--workers 2] [--hang-ms 10000]
  latency     --url BASE --token JWT (--topic TOPIC | --topics T1,T2,...) [--rate 1000] [--seconds 10]
  fill        --url BASE --token JWT --topic TOPIC --messages N [--concurrency 32] [--max-seconds 600]
  filter-cost [--subscribers 1000] [--runs 5] [--min-ms 300]
  rss         --pid PID
  stream-clients --url BASE --token JWT --patterns P1,P2,... [--clients 1000] [--seconds 10]
              [--ready-file PATH] [--connect-timeout 60] [--reconnect-ms 1000] [--connect-concurrency 64]";

struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let Some(name) = k.strip_prefix("--") else {
                return Err(format!("unexpected argument `{k}`"));
            };
            let v = it
                .next()
                .ok_or_else(|| format!("`--{name}` needs a value"))?;
            map.insert(name.to_string(), v.clone());
        }
        Ok(Args(map))
    }

    fn str(&self, name: &str) -> Result<String, String> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| format!("`--{name}` is required"))
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: Option<T>) -> Result<T, String> {
        match self.0.get(name) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("`--{name}` must be a number, not `{v}`")),
            None => default.ok_or_else(|| format!("`--{name}` is required")),
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let args = match Args::parse(&argv[1..]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("switch-bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let result = match cmd.as_str() {
        "receiver" => receiver(&args),
        "latency" => latency(&args),
        "fill" => fill(&args),
        "filter-cost" => filter_cost(&args),
        "rss" => rss(&args),
        "stream-clients" => stream_clients(&args),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("switch-bench {cmd}: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- receiver

/// Most latency samples kept between resets (8 bytes each).
const MAX_SAMPLES: usize = 20_000_000;

/// Every this many requests the receiver notes the arrival time, so the
/// progress of a long drain can be read back exactly (`GET /__progress`).
const MARK_EVERY: u64 = 100;

struct Recv {
    count: AtomicU64,
    /// `(publish time, latency)` in µs, one per request that carried a time.
    samples: Mutex<Vec<(u64, u64)>>,
    /// Arrival (unix µs) of the first and of the latest request since the last reset.
    first_us: AtomicU64,
    last_us: AtomicU64,
    /// `(n, unix µs)`: when request number `n` (a multiple of [`MARK_EVERY`]) arrived.
    marks: Mutex<Vec<(u64, u64)>>,
    /// How long requests under `/__hang` wait before they are answered.
    hang: Duration,
    /// Requests under `/__hang` arrived and answered since the last reset;
    /// they are not in `count`.
    hang_arrived: AtomicU64,
    hang_answered: AtomicU64,
    /// Requests under `/__hang` waiting now (not reset).
    hang_waiting: AtomicU64,
}

impl Default for Recv {
    fn default() -> Self {
        Recv {
            count: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
            first_us: AtomicU64::new(u64::MAX),
            last_us: AtomicU64::new(0),
            marks: Mutex::new(Vec::new()),
            hang: Duration::from_secs(10),
            hang_arrived: AtomicU64::new(0),
            hang_answered: AtomicU64::new(0),
            hang_waiting: AtomicU64::new(0),
        }
    }
}

#[derive(Deserialize)]
struct Stamp {
    t: Option<f64>,
}

async fn hook(body: web::Bytes, state: web::Data<Recv>) -> HttpResponse {
    let n = state.count.fetch_add(1, Ordering::Relaxed) + 1;
    let now = unix_micros();
    state.last_us.fetch_max(now, Ordering::Relaxed);
    state.first_us.fetch_min(now, Ordering::Relaxed);
    if n.is_multiple_of(MARK_EVERY) {
        let mut m = state.marks.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() < MAX_SAMPLES {
            m.push((n, now));
        }
    }
    if body.first() == Some(&b'{') {
        if let Ok(Stamp { t: Some(t) }) = serde_json::from_slice::<Stamp>(&body) {
            if t.is_finite() && t > 0.0 {
                let lat = now.saturating_sub(t as u64);
                let mut s = state.samples.lock().unwrap_or_else(|e| e.into_inner());
                if s.len() < MAX_SAMPLES {
                    s.push((t as u64, lat));
                }
            }
        }
    }
    HttpResponse::Ok().finish()
}

/// An endpoint that hangs: answers 200 only after `--hang-ms`. The wait is a
/// timer, so the receiver's other requests go on meanwhile.
async fn hang(_body: web::Bytes, state: web::Data<Recv>) -> HttpResponse {
    state.hang_arrived.fetch_add(1, Ordering::Relaxed);
    state.hang_waiting.fetch_add(1, Ordering::Relaxed);
    /// Counts the request as no longer waiting even when the client gives up
    /// first and the handler is dropped mid-sleep.
    struct Waiting<'a>(&'a AtomicU64);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _waiting = Waiting(&state.hang_waiting);
    tokio::time::sleep(state.hang).await;
    state.hang_answered.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok().finish()
}

async fn stats(state: web::Data<Recv>) -> HttpResponse {
    let mut sorted: Vec<u64> = state
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(_, lat)| *lat)
        .collect();
    sorted.sort_unstable();
    HttpResponse::Ok().json(json!({
        "count": state.count.load(Ordering::Relaxed),
        "latency_samples": sorted.len(),
        "p50_us": percentile(&sorted, 50.0),
        "p99_us": percentile(&sorted, 99.0),
        "p999_us": percentile(&sorted, 99.9),
        "max_us": sorted.last().copied().unwrap_or(0),
        "hang_arrived": state.hang_arrived.load(Ordering::Relaxed),
        "hang_answered": state.hang_answered.load(Ordering::Relaxed),
        "hang_waiting": state.hang_waiting.load(Ordering::Relaxed),
    }))
}

/// Every latency sample as `[publish time µs, latency µs]`, in arrival order.
async fn samples(state: web::Data<Recv>) -> HttpResponse {
    let s = state
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    HttpResponse::Ok().json(s)
}

/// Count, first and last arrival, and the arrival of every [`MARK_EVERY`]th request.
async fn progress(state: web::Data<Recv>) -> HttpResponse {
    let marks = state
        .marks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let first = state.first_us.load(Ordering::Relaxed);
    HttpResponse::Ok().json(json!({
        "count": state.count.load(Ordering::Relaxed),
        "first_us": if first == u64::MAX { 0 } else { first },
        "last_us": state.last_us.load(Ordering::Relaxed),
        "mark_every": MARK_EVERY,
        "marks": marks,
    }))
}

async fn reset(state: web::Data<Recv>) -> HttpResponse {
    state.count.store(0, Ordering::Relaxed);
    state.first_us.store(u64::MAX, Ordering::Relaxed);
    state.last_us.store(0, Ordering::Relaxed);
    state.hang_arrived.store(0, Ordering::Relaxed);
    state.hang_answered.store(0, Ordering::Relaxed);
    state
        .marks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let mut s = state.samples.lock().unwrap_or_else(|e| e.into_inner());
    s.clear();
    s.shrink_to(1 << 20);
    HttpResponse::Ok().json(json!({"reset": true}))
}

async fn not_a_hook(_req: HttpRequest) -> HttpResponse {
    HttpResponse::MethodNotAllowed().finish()
}

fn receiver(args: &Args) -> Result<(), String> {
    let addr = args.str("addr")?;
    let workers: usize = args.num("workers", Some(2))?;
    let hang_ms: u64 = args.num("hang-ms", Some(10_000))?;
    if hang_ms > 3_600_000 {
        return Err("--hang-ms must be at most 3600000 (one hour)".into());
    }
    let state = web::Data::new(Recv {
        hang: Duration::from_millis(hang_ms),
        ..Recv::default()
    });
    actix_web::rt::System::new()
        .block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(state.clone())
                    .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                    .route("/__stats", web::get().to(stats))
                    .route("/__stats", web::route().to(not_a_hook))
                    .route("/__samples", web::get().to(samples))
                    .route("/__samples", web::route().to(not_a_hook))
                    .route("/__progress", web::get().to(progress))
                    .route("/__progress", web::route().to(not_a_hook))
                    .route("/__reset", web::post().to(reset))
                    .route("/__reset", web::route().to(not_a_hook))
                    .route("/__hang", web::route().to(hang))
                    .route("/__hang/{tail:.*}", web::route().to(hang))
                    .default_service(web::to(hook))
            })
            .workers(workers)
            .backlog(4096)
            .max_connection_rate(4096)
            .disable_signals()
            .bind(&addr)?
            .run();
            eprintln!(
                "switch-bench receiver on http://{addr} ({workers} workers; /__hang answers after {hang_ms} ms)"
            );
            let handle = server.handle();
            tokio::spawn(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                handle.stop(false).await;
            });
            server.await
        })
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------- publishers

/// The latency publisher runs on one thread: it sends one request a
/// millisecond, and a lighter load generator disturbs what it measures less.
fn single_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    statuses: Mutex<HashMap<u16, u64>>,
    durations_us: Mutex<Vec<u64>>,
}

impl Tally {
    async fn publish(
        &self,
        client: &reqwest::Client,
        url: &str,
        token: &str,
        body: String,
    ) -> bool {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let r = client
            .post(url)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let took = started.elapsed().as_micros() as u64;
        match r {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let _ = resp.bytes().await;
                self.durations_us
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(took);
                if status == 202 {
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                    true
                } else {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    *self
                        .statuses
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(status)
                        .or_default() += 1;
                    false
                }
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn report(&self, extra: serde_json::Value, elapsed: Duration) -> serde_json::Value {
        let mut d = self
            .durations_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        d.sort_unstable();
        let statuses: HashMap<String, u64> = self
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let accepted = self.accepted.load(Ordering::Relaxed);
        let mut out = json!({
            "sent": self.sent.load(Ordering::Relaxed),
            "accepted": accepted,
            "refused": self.refused.load(Ordering::Relaxed),
            "refused_by_status": statuses,
            "errors": self.errors.load(Ordering::Relaxed),
            "elapsed_s": elapsed.as_secs_f64(),
            "accepted_per_s": accepted as f64 / elapsed.as_secs_f64().max(1e-9),
            "publish_p50_us": percentile(&d, 50.0),
            "publish_p99_us": percentile(&d, 99.0),
            "publish_max_us": d.last().copied().unwrap_or(0),
        });
        if let (Some(o), serde_json::Value::Object(e)) = (out.as_object_mut(), extra) {
            o.extend(e);
        }
        out
    }
}

fn publish_url(args: &Args) -> Result<String, String> {
    Ok(format!(
        "{}/publish",
        args.str("url")?.trim_end_matches('/')
    ))
}

/// Publishes `{"t": <unix µs>}` at a fixed rate, each request on its own task
/// so a slow answer never slows the rate. With `--topics a,b,…` instead of
/// `--topic`, the messages go to those topics in turn.
fn latency(args: &Args) -> Result<(), String> {
    let url = publish_url(args)?;
    let token = args.str("token")?;
    let topics: Vec<String> = match (args.0.get("topics"), args.0.get("topic")) {
        (Some(_), Some(_)) => return Err("give `--topic` or `--topics`, not both".into()),
        (Some(list), None) => list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        (None, _) => vec![args.str("topic")?],
    };
    if topics.is_empty() {
        return Err("`--topics` names no topic".into());
    }
    let rate: f64 = args.num("rate", Some(1000.0))?;
    let seconds: f64 = args.num("seconds", Some(10.0))?;
    if !(rate > 0.0 && rate <= 1e6 && seconds > 0.0 && seconds <= 3600.0) {
        return Err("--rate must be in (0, 1e6] and --seconds in (0, 3600]".into());
    }
    let total = (rate * seconds).round() as u64;
    single_thread_runtime()?.block_on(async move {
        let client = client()?;
        let tally = Arc::new(Tally::default());
        let by_topic: Arc<Vec<AtomicU64>> =
            Arc::new(topics.iter().map(|_| AtomicU64::new(0)).collect());
        let url: Arc<str> = url.into();
        let token: Arc<str> = token.into();
        let names: Vec<serde_json::Value> = topics
            .iter()
            .map(|t| serde_json::Value::String(t.clone()))
            .collect();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        let started = Instant::now();
        for i in 0..total {
            tick.tick().await;
            let k = (i % names.len() as u64) as usize;
            let body = json!({"topic": names[k], "body": {"t": unix_micros()}}).to_string();
            let (c, t, u, tok, bt) = (
                client.clone(),
                tally.clone(),
                url.clone(),
                token.clone(),
                by_topic.clone(),
            );
            tasks.spawn(async move {
                if t.publish(&c, &u, &tok, body).await {
                    bt[k].fetch_add(1, Ordering::Relaxed);
                }
            });
            while tasks.try_join_next().is_some() {}
        }
        let sending = started.elapsed();
        let drain = async { while tasks.join_next().await.is_some() {} };
        let unfinished = tokio::time::timeout(Duration::from_secs(30), drain)
            .await
            .is_err();
        let mut extra = json!({
            "rate_target": rate,
            "rate_achieved": total as f64 / sending.as_secs_f64().max(1e-9),
            "unfinished": unfinished,
        });
        if topics.len() > 1 {
            let accepted: serde_json::Map<String, serde_json::Value> = topics
                .iter()
                .zip(by_topic.iter())
                .map(|(t, n)| (t.clone(), json!(n.load(Ordering::Relaxed))))
                .collect();
            extra["accepted_by_topic"] = serde_json::Value::Object(accepted);
        }
        let report = tally.report(extra, sending);
        println!("{report}");
        Ok(())
    })
}

/// Publishes exactly `--messages` messages with `--concurrency` in flight,
/// stopping early after `--max-seconds`.
fn fill(args: &Args) -> Result<(), String> {
    let url = publish_url(args)?;
    let token = args.str("token")?;
    let topic = args.str("topic")?;
    let messages: u64 = args.num("messages", None)?;
    let concurrency: usize = args.num("concurrency", Some(32))?;
    let max_seconds: f64 = args.num("max-seconds", Some(600.0))?;
    if concurrency == 0 || concurrency > 4096 {
        return Err("--concurrency must be 1 to 4096".into());
    }
    let body = json!({"topic": topic, "body": {"n": 1}}).to_string();
    runtime()?.block_on(async move {
        let client = client()?;
        let tally = Arc::new(Tally::default());
        let next = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs_f64(max_seconds);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (c, t, n) = (client.clone(), tally.clone(), next.clone());
            let (url, token, body) = (url.clone(), token.clone(), body.clone());
            tasks.spawn(async move {
                while Instant::now() < deadline {
                    if n.fetch_add(1, Ordering::Relaxed) >= messages {
                        break;
                    }
                    // A refused publish is tried again (a few times) so the
                    // backlog has the size asked for.
                    for attempt in 0..5 {
                        if t.publish(&c, &url, &token, body.clone()).await {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let report = tally.report(
            json!({"target": messages, "timed_out": Instant::now() >= deadline}),
            started.elapsed(),
        );
        println!("{report}");
        Ok(())
    })
}

// ---------------------------------------------------------------- stream clients

/// What a client reads of a live event's data: the topic, and the publish
/// time the latency publisher puts in the body (`t`, unix µs; or `t_ns`).
#[derive(Deserialize)]
struct LiveData {
    topic: Option<String>,
    body: Option<LiveBody>,
}

#[derive(Deserialize)]
struct LiveBody {
    t: Option<f64>,
    t_ns: Option<f64>,
}

/// Most latency samples one client keeps.
const MAX_CLIENT_SAMPLES: usize = 1_000_000;

/// What one stream client saw over its whole life (every connection of it).
#[derive(Default)]
struct ClientStats {
    /// `event: message` events.
    events: u64,
    /// Events whose body carried a publish time.
    timed: u64,
    latencies_us: Vec<u64>,
    /// Events of a topic the client's exact pattern does not name.
    wrong_topic: u64,
    /// Events whose data is not the JSON expected.
    unparsed: u64,
    heartbeats: u64,
    slow_consumer: u64,
    other_errors: u64,
    /// Streams that ended or failed before the client was told to stop.
    disconnects: u64,
    reconnects: u64,
    /// Connection attempts that got no stream (refused, failed, not 200).
    connect_failures: u64,
    statuses: HashMap<u16, u64>,
}

impl ClientStats {
    /// Handles one SSE event block (without its closing blank line).
    fn event(&mut self, block: &[u8], now_us: u64, pattern: Option<&str>) {
        let mut event: &[u8] = b"message";
        let mut data: Option<&[u8]> = None;
        let mut comment: Option<&[u8]> = None;
        for line in block.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(c) = line.strip_prefix(b":") {
                comment = Some(c.trim_ascii());
            } else if let Some(v) = line.strip_prefix(b"event:") {
                event = v.trim_ascii();
            } else if let Some(v) = line.strip_prefix(b"data:") {
                data = Some(v.strip_prefix(b" ").unwrap_or(v));
            }
        }
        let Some(data) = data else {
            if comment == Some(b"keep-alive") {
                self.heartbeats += 1;
            }
            return;
        };
        match event {
            b"message" => {
                self.events += 1;
                let Ok(d) = serde_json::from_slice::<LiveData>(data) else {
                    self.unparsed += 1;
                    return;
                };
                if let (Some(p), Some(t)) = (pattern, d.topic.as_deref()) {
                    if p != t {
                        self.wrong_topic += 1;
                    }
                }
                let sent_us = d.body.and_then(|b| match (b.t, b.t_ns) {
                    (Some(t), _) => Some(t),
                    (None, Some(ns)) => Some(ns / 1000.0),
                    (None, None) => None,
                });
                if let Some(t) = sent_us.filter(|t| t.is_finite() && *t > 0.0) {
                    self.timed += 1;
                    if self.latencies_us.len() < MAX_CLIENT_SAMPLES {
                        self.latencies_us.push(now_us.saturating_sub(t as u64));
                    }
                }
            }
            b"error" => {
                if data.windows(13).any(|w| w == b"slow_consumer") {
                    self.slow_consumer += 1;
                } else {
                    self.other_errors += 1;
                }
            }
            _ => {}
        }
    }
}

/// Counts shared by the clients of one `stream-clients` run.
#[derive(Default)]
struct StreamShared {
    /// Streams open now.
    connected: AtomicU64,
    /// Clients whose first stream opened.
    ready: AtomicU64,
    ready_changed: tokio::sync::Notify,
}

/// Percent-encodes a topic pattern for the query string.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct StreamClient {
    http: reqwest::Client,
    url: String,
    auth: Arc<str>,
    /// The topic every event must have, when the pattern is an exact topic.
    exact: Option<String>,
    shared: Arc<StreamShared>,
    stop: tokio::sync::watch::Receiver<bool>,
    reconnect: Duration,
    /// Bounds the connection attempts under way, so 1,000 clients do not
    /// hit the listen backlog at once.
    gate: Arc<tokio::sync::Semaphore>,
}

impl StreamClient {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits `d`, or less if told to stop; true when told to stop.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.stopping(),
            _ = self.stop.changed() => true,
        }
    }

    /// Watches until told to stop, opening the stream again (after
    /// `reconnect`) whenever it ends, as an `EventSource` does.
    async fn run(mut self) -> ClientStats {
        let mut st = ClientStats::default();
        let mut opened_once = false;
        let mut buf: Vec<u8> = Vec::with_capacity(8192);
        while !self.stopping() {
            let attempt = async {
                let _permit = self.gate.acquire().await;
                self.http
                    .get(&self.url)
                    .header("authorization", &*self.auth)
                    .header("accept", "text/event-stream")
                    .send()
                    .await
            };
            let resp = tokio::select! {
                r = attempt => r,
                _ = self.stop.changed() => break,
            };
            let mut resp = match resp {
                Ok(r) if r.status() == reqwest::StatusCode::OK => r,
                Ok(r) => {
                    st.connect_failures += 1;
                    *st.statuses.entry(r.status().as_u16()).or_default() += 1;
                    if self.pause(self.reconnect).await {
                        break;
                    }
                    continue;
                }
                Err(_) => {
                    st.connect_failures += 1;
                    if self.pause(self.reconnect).await {
                        break;
                    }
                    continue;
                }
            };
            self.shared.connected.fetch_add(1, Ordering::AcqRel);
            if !opened_once {
                opened_once = true;
                self.shared.ready.fetch_add(1, Ordering::AcqRel);
                self.shared.ready_changed.notify_one();
            } else {
                st.reconnects += 1;
            }
            buf.clear();
            let stopped = loop {
                let chunk = tokio::select! {
                    c = resp.chunk() => c,
                    _ = self.stop.changed() => break true,
                };
                match chunk {
                    Ok(Some(bytes)) => {
                        let now = unix_micros();
                        buf.extend_from_slice(&bytes);
                        let mut start = 0;
                        while let Some(p) = buf[start..].windows(2).position(|w| w == b"\n\n") {
                            st.event(&buf[start..start + p], now, self.exact.as_deref());
                            start += p + 2;
                        }
                        buf.drain(..start);
                    }
                    Ok(None) | Err(_) => break false,
                }
            };
            self.shared.connected.fetch_sub(1, Ordering::AcqRel);
            if stopped || self.stopping() {
                break;
            }
            st.disconnects += 1;
            if self.pause(self.reconnect).await {
                break;
            }
        }
        st
    }
}

/// `--clients` SSE clients of `GET /stream`, client i watching pattern
/// i mod (number of `--patterns`). Once every client's stream is open it
/// writes `--ready-file` (if given), then watches for `--seconds` or until
/// SIGTERM/SIGINT, and reports publish → client latency (from the publish
/// time in the body) and events per client.
fn stream_clients(args: &Args) -> Result<(), String> {
    let base = args.str("url")?.trim_end_matches('/').to_string();
    let token = args.str("token")?;
    let clients: usize = args.num("clients", Some(1000))?;
    let patterns: Vec<String> = args
        .str("patterns")?
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let seconds: f64 = args.num("seconds", Some(10.0))?;
    let connect_timeout: f64 = args.num("connect-timeout", Some(60.0))?;
    let reconnect = Duration::from_millis(args.num("reconnect-ms", Some(1000))?);
    let concurrency: usize = args.num("connect-concurrency", Some(64))?;
    let ready_file = args.0.get("ready-file").cloned();
    if clients == 0 || clients > 100_000 {
        return Err("--clients must be 1 to 100000".into());
    }
    if patterns.is_empty() {
        return Err("--patterns names no pattern".into());
    }
    if !(seconds > 0.0 && seconds <= 86_400.0 && connect_timeout > 0.0) || concurrency == 0 {
        return Err(
            "--seconds must be in (0, 86400], --connect-timeout and --connect-concurrency positive"
                .into(),
        );
    }
    runtime()?.block_on(async move {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        // Before anything else: a SIGTERM from now on ends the run with a report.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        let shared = Arc::new(StreamShared::default());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let auth: Arc<str> = format!("Bearer {token}").into();
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..clients {
            let pattern = &patterns[i % patterns.len()];
            let exact = (!pattern.contains(['*', '#'])).then(|| pattern.clone());
            let client = StreamClient {
                http: http.clone(),
                url: format!("{base}/stream?topic={}", query_escape(pattern)),
                auth: auth.clone(),
                exact,
                shared: shared.clone(),
                stop: stop_rx.clone(),
                reconnect,
                gate: gate.clone(),
            };
            let k = i % patterns.len();
            tasks.spawn(async move { (k, client.run().await) });
        }
        // Every client's stream open, or the connect timeout.
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(connect_timeout);
        while shared.ready.load(Ordering::Acquire) < clients as u64 {
            let wait = shared.ready_changed.notified();
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                break;
            }
        }
        let connect_s = started.elapsed().as_secs_f64();
        let ready = shared.ready.load(Ordering::Acquire);
        let ready_note = json!({"clients": clients, "connected": ready, "connect_s": connect_s});
        eprintln!("switch-bench stream-clients: {ready} of {clients} streams open after {connect_s:.2} s");
        if let Some(path) = &ready_file {
            // Written whole, then renamed: a reader never sees half of it.
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, format!("{ready_note}\n"))
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(|e| format!("cannot write {path}: {e}"))?;
        }
        // Watch, sampling how many streams are open every 100 ms.
        let window_start = Instant::now();
        let end = tokio::time::sleep(Duration::from_secs_f64(seconds));
        tokio::pin!(end);
        let mut sample = tokio::time::interval(Duration::from_millis(100));
        let (mut min_open, mut sum_open, mut samples) = (u64::MAX, 0u64, 0u64);
        let stopped_by = loop {
            tokio::select! {
                _ = &mut end => break "seconds",
                _ = term.recv() => break "sigterm",
                _ = tokio::signal::ctrl_c() => break "sigint",
                _ = sample.tick() => {
                    let open = shared.connected.load(Ordering::Acquire);
                    min_open = min_open.min(open);
                    sum_open += open;
                    samples += 1;
                }
            }
        };
        let window_s = window_start.elapsed().as_secs_f64();
        let open_at_end = shared.connected.load(Ordering::Acquire);
        let _ = stop_tx.send(true);
        let mut per_client: Vec<(usize, ClientStats)> = Vec::with_capacity(clients);
        let joined = async {
            while let Some(r) = tasks.join_next().await {
                if let Ok(x) = r {
                    per_client.push(x);
                }
            }
        };
        let unfinished = tokio::time::timeout(Duration::from_secs(15), joined)
            .await
            .is_err();
        drop(stop_tx);

        let mut lat: Vec<u64> = Vec::new();
        let mut events: Vec<u64> = Vec::with_capacity(per_client.len());
        let mut by_pattern: Vec<Vec<u64>> = vec![Vec::new(); patterns.len()];
        let mut statuses: HashMap<String, u64> = HashMap::new();
        let sum = |f: fn(&ClientStats) -> u64| per_client.iter().map(|(_, c)| f(c)).sum::<u64>();
        for (k, c) in &per_client {
            lat.extend_from_slice(&c.latencies_us);
            events.push(c.events);
            by_pattern[*k].push(c.events);
            for (s, n) in &c.statuses {
                *statuses.entry(s.to_string()).or_default() += n;
            }
        }
        lat.sort_unstable();
        events.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        let pattern_events: serde_json::Map<String, serde_json::Value> = patterns
            .iter()
            .zip(by_pattern.iter_mut())
            .map(|(p, v)| {
                v.sort_unstable();
                (
                    p.clone(),
                    json!({
                        "clients": v.len(),
                        "events_min": v.first().copied().unwrap_or(0),
                        "events_max": v.last().copied().unwrap_or(0),
                        "events_total": v.iter().sum::<u64>(),
                    }),
                )
            })
            .collect();
        let report = json!({
            "clients": clients,
            "patterns": patterns,
            "connected": ready,
            "connect_s": connect_s,
            "window_s": window_s,
            "stopped_by": stopped_by,
            "open_at_end": open_at_end,
            "open_min": if samples > 0 { min_open } else { open_at_end },
            "open_mean": if samples > 0 { sum_open as f64 / samples as f64 } else { open_at_end as f64 },
            "events_total": sum(|c| c.events),
            "events_per_client_min": events.first().copied().unwrap_or(0),
            "events_per_client_p50": percentile(&events, 50.0),
            "events_per_client_max": events.last().copied().unwrap_or(0),
            "events_by_pattern": pattern_events,
            "timed_events": sum(|c| c.timed),
            "latency_samples": lat.len(),
            "latency_p50_ms": ms(percentile(&lat, 50.0)),
            "latency_p90_ms": ms(percentile(&lat, 90.0)),
            "latency_p99_ms": ms(percentile(&lat, 99.0)),
            "latency_p999_ms": ms(percentile(&lat, 99.9)),
            "latency_max_ms": ms(lat.last().copied().unwrap_or(0)),
            "wrong_topic": sum(|c| c.wrong_topic),
            "unparsed": sum(|c| c.unparsed),
            "heartbeats": sum(|c| c.heartbeats),
            "slow_consumer": sum(|c| c.slow_consumer),
            "other_errors": sum(|c| c.other_errors),
            "disconnects": sum(|c| c.disconnects),
            "reconnects": sum(|c| c.reconnects),
            "connect_failures": sum(|c| c.connect_failures),
            "connect_failure_statuses": statuses,
            "clients_reported": per_client.len(),
            "unfinished": unfinished,
        });
        println!("{report}");
        Ok(())
    })
}

// ---------------------------------------------------------------- filter cost

/// Median time of `index.matching` over `runs` runs of at least `min` each.
fn time_matching(
    index: &switch_core::subscribers::Index,
    runs: usize,
    min: Duration,
) -> (f64, usize, Vec<f64>) {
    let topic = switch_bench::topic();
    let message = switch_bench::message();
    let matched = index.matching(&topic, &message).len();
    // Calibrate: iterations that take about a tenth of `min`.
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(index.matching(black_box(&topic), black_box(&message)));
        }
        if t.elapsed() >= min / 10 || iters >= 1 << 30 {
            break;
        }
        iters *= 2;
    }
    let per_run = iters * 10;
    let mut ns_per_call = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..per_run {
            black_box(index.matching(black_box(&topic), black_box(&message)));
        }
        ns_per_call.push(t.elapsed().as_nanos() as f64 / per_run as f64);
    }
    (median(ns_per_call.clone()), matched, ns_per_call)
}

fn filter_cost(args: &Args) -> Result<(), String> {
    let n: usize = args.num("subscribers", Some(1000))?;
    let runs: usize = args.num("runs", Some(5))?;
    let min = Duration::from_millis(args.num("min-ms", Some(300))?);
    if n == 0 || runs == 0 {
        return Err("--subscribers and --runs must be positive".into());
    }
    let exact = switch_bench::index(n, switch_bench::TOPIC);
    let (ns, matched, all) = time_matching(&exact, runs, min);
    let wild = switch_bench::index(n, "orders.*");
    let (ns_wild, matched_wild, _) = time_matching(&wild, runs, min);
    // The same subscribers without filters: the cost of the lookup itself.
    let mut rows = switch_bench::subscriber_rows(n, switch_bench::TOPIC);
    rows.iter_mut().for_each(|r| r.filter_expression = None);
    let bare = switch_core::subscribers::Index::build(rows, None);
    let (ns_bare, _, _) = time_matching(&bare, runs, min);
    let per_sub = |ns: f64| ns / n as f64;
    println!(
        "{}",
        json!({
            "subscribers": n,
            "runs": runs,
            "matched": matched,
            "ns_per_subscriber": per_sub(ns),
            "us_per_publish": ns / 1000.0,
            "run_ns_per_subscriber": all.iter().map(|x| per_sub(*x)).collect::<Vec<_>>(),
            "wildcard_pattern": "orders.*",
            "wildcard_matched": matched_wild,
            "wildcard_ns_per_subscriber": per_sub(ns_wild),
            "unfiltered_ns_per_subscriber": per_sub(ns_bare),
            "filters": switch_bench::FILTERS,
            "unfiltered_share": 0.1,
        })
    );
    Ok(())
}

// ---------------------------------------------------------------- rss

fn rss(args: &Args) -> Result<(), String> {
    let pid: u32 = args.num("pid", None)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    // CPU time so far (user + system), from /proc/<pid>/stat: fields 14 and
    // 15 after the command name, in clock ticks (100 a second on Linux).
    let cpu_s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        });
    println!(
        "{}",
        json!({"pid": pid, "vm_hwm_mb": field("VmHWM:"), "vm_rss_mb": field("VmRSS:"), "cpu_s": cpu_s})
    );
    Ok(())
}
