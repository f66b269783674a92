//! Span export over OTLP/HTTP: with SWITCH_OTLP_ENDPOINT set, the server
//! exports a `publish` span per message and the worker a `deliver` span per
//! attempt, one trace from publish to each delivery, each delivery's span
//! the one its `traceparent` header named.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};
use switch_core::Settings;

use crate::helpers::*;

/// A collector that keeps every span it is sent on `POST /v1/traces`.
struct Collector {
    base: String,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    async fn start() -> Collector {
        let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let kept = spans.clone();
        let server = HttpServer::new(move || {
            let kept = kept.clone();
            App::new().route(
                "/v1/traces",
                web::post().to(move |body: web::Bytes| {
                    let kept = kept.clone();
                    async move {
                        let Ok(export) = serde_json::from_slice::<Value>(&body) else {
                            return HttpResponse::BadRequest().finish();
                        };
                        let mut kept = kept.lock().unwrap();
                        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                                kept.extend(
                                    scope["spans"].as_array().into_iter().flatten().cloned(),
                                );
                            }
                        }
                        HttpResponse::Ok().json(json!({}))
                    }
                }),
            )
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Collector { base, spans }
    }

    fn named(&self, name: &str) -> Vec<Value> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s["name"] == name)
            .cloned()
            .collect()
    }

    /// Waits (bounded) for `publishes` publish spans and `deliveries` deliver spans.
    async fn wait_for(&self, publishes: usize, deliveries: usize, within: Duration) {
        let started = Instant::now();
        while (self.named("publish").len() < publishes || self.named("deliver").len() < deliveries)
            && started.elapsed() < within
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The value of a span attribute, as OTLP JSON writes it (`{"intValue": …}`…).
fn attribute(span: &Value, key: &str) -> Value {
    let attrs = span["attributes"].as_array().cloned().unwrap_or_default();
    let value = attrs
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| a["value"].clone())
        .unwrap_or_else(|| panic!("no attribute {key} in {span}"));
    let object = value.as_object().expect("an attribute value");
    object.values().next().cloned().unwrap_or(Value::Null)
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_exports_one_trace_from_publish_to_each_delivery() {
    let collector = Collector::start().await;
    let db = TestDb::new(Backend::Sqlite);
    let settings = settings_with(
        &settings(&db, REDIS_URL),
        &db,
        &[("SWITCH_OTLP_ENDPOINT", collector.base.as_str())],
    );
    assert!(settings.otlp_endpoint.is_some());
    let app = TestApp::spawn(settings).await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    app.subscribe("otlp.t", &a.url("/a"), None).await;
    app.subscribe("otlp.t", &b.url("/b"), None).await;
    let worker = InProcessWorker::start(app.settings.clone());
    let (status, body) = app.publish(json!({"topic": "otlp.t"})).await;
    assert_eq!(status, 202, "{body}");
    let message_id = body["message_id"].as_str().unwrap().to_string();
    let got_a = a.wait_for(1, Duration::from_secs(20)).await;
    let got_b = b.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!((got_a.len(), got_b.len()), (1, 1));
    // The worker sends what it holds when it stops.
    worker.stop().await;
    collector.wait_for(1, 2, Duration::from_secs(20)).await;

    let publishes = collector.named("publish");
    let deliveries = collector.named("deliver");
    assert_eq!(publishes.len(), 1, "{publishes:?}");
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    let publish = &publishes[0];
    let trace = publish["traceId"].as_str().unwrap().to_string();
    assert_eq!(trace.len(), 32, "{publish}");
    assert_eq!(
        text(&attribute(publish, "messaging.message.id")),
        message_id
    );
    assert_eq!(
        text(&attribute(publish, "messaging.destination.name")),
        "otlp.t"
    );
    assert_eq!(text(&attribute(publish, "switch.matched")), "2");
    let publish_span = publish["spanId"].as_str().unwrap();
    assert_eq!(publish_span.len(), 16);

    let mut sent_spans = Vec::new();
    for c in got_a.iter().chain(&got_b) {
        let header = c.header("traceparent").expect("traceparent");
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts[1], trace, "the delivery joins the exported trace");
        sent_spans.push(parts[2].to_string());
    }
    let mut exported_spans = Vec::new();
    for d in &deliveries {
        assert_eq!(d["traceId"], trace.as_str(), "{d}");
        assert_eq!(d["parentSpanId"], publish_span, "{d}");
        assert_eq!(text(&attribute(d, "switch.attempt")), "1");
        assert_eq!(text(&attribute(d, "switch.outcome")), "delivered");
        assert_eq!(text(&attribute(d, "http.response.status_code")), "200");
        let start: u128 = text(&d["startTimeUnixNano"]).parse().unwrap();
        let end: u128 = text(&d["endTimeUnixNano"]).parse().unwrap();
        assert!(start > 0 && start <= end, "{d}");
        exported_spans.push(d["spanId"].as_str().unwrap().to_string());
    }
    sent_spans.sort();
    exported_spans.sort();
    assert_eq!(
        exported_spans, sent_spans,
        "each deliver span is the span its traceparent named"
    );
}

#[test]
fn a_bad_otlp_endpoint_is_refused_naming_the_variable() {
    for bad in [
        "collector:4318",
        "ftp://collector:4318",
        "http://c:4318/?a=b",
    ] {
        let err =
            Settings::from_lookup(&|k| (k == "SWITCH_OTLP_ENDPOINT").then(|| bad.to_string()))
                .expect_err(bad);
        assert_eq!(err.var, "SWITCH_OTLP_ENDPOINT", "{bad}");
        assert!(err.to_string().starts_with("SWITCH_OTLP_ENDPOINT"), "{err}");
    }
}
