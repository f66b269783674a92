//! Prometheus metrics of a worker, and its `/metrics` and `/health`
//! endpoint on `SWITCH_WORKER_METRICS_ADDR`.

use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{guard, web, App, HttpResponse, HttpServer};
use anyhow::Context;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use switch_core::db::DbPool;
use switch_core::metrics::{register, QueueGauges};
use switch_core::queue::Queue;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub deliveries: IntCounterVec,
    pub latency: Histogram,
    pub dead_letters: IntCounter,
    queue: QueueGauges,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let deliveries = IntCounterVec::new(
            Opts::new(
                "switch_deliveries_total",
                "Delivery attempts by outcome and subscriber",
            ),
            &["outcome", "subscriber_id"],
        )
        .expect("valid metric");
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "switch_delivery_seconds",
                "Duration of one delivery attempt",
            )
            // The same bounds as the hub-wide histogram, so the two compare.
            .buckets(switch_core::queue::DURATION_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let dead_letters =
            IntCounter::new("switch_dead_letters_total", "Jobs that became dead letters")
                .expect("valid metric");
        register(
            &registry,
            vec![
                Box::new(deliveries.clone()),
                Box::new(latency.clone()),
                Box::new(dead_letters.clone()),
            ],
        );
        let queue = QueueGauges::new(&registry);
        Metrics {
            registry,
            deliveries,
            latency,
            dead_letters,
            queue,
        }
    }

    async fn render(&self, queue: &Queue) -> String {
        self.queue.update(queue).await;
        let mut text = switch_core::metrics::render(&self.registry);
        text.push_str(&switch_core::metrics::hub_totals(queue).await);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What the endpoint's handlers read.
struct Endpoint {
    metrics: Metrics,
    queue: Queue,
    pool: DbPool,
}

/// `/health`: 200 when Redis and the database both answer, else 503 naming
/// what is down (a worker that cannot reach either delivers nothing).
async fn get_health(endpoint: web::Data<Endpoint>) -> HttpResponse {
    let redis_ok = tokio::time::timeout(Duration::from_secs(2), endpoint.queue.redis().ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let p = endpoint.pool.clone();
    let db_ok = tokio::time::timeout(
        Duration::from_secs(4),
        tokio::task::spawn_blocking(move || switch_core::db::answers(&p)),
    )
    .await
    .is_ok_and(|r| r.unwrap_or(false));
    let word = |ok: bool| if ok { "ok" } else { "down" };
    let body = serde_json::json!({
        "status": word(redis_ok && db_ok),
        "redis": word(redis_ok),
        "database": word(db_ok),
    })
    .to_string();
    let mut answer = if redis_ok && db_ok {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    answer.content_type("application/json").body(body)
}

/// `/metrics`: this worker's series and the hub-wide totals kept in Redis.
async fn get_metrics(endpoint: web::Data<Endpoint>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(endpoint.metrics.render(&endpoint.queue).await)
}

async fn get_ping() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain")
        .body("not found")
}

async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, "GET, HEAD"))
        .content_type("text/plain")
        .body("method not allowed")
}

/// A read-only resource: GET (and HEAD) answer, any other method is a 405.
fn readable<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(
            web::route()
                .guard(guard::Any(guard::Get()).or(guard::Head()))
                .to(handler),
        )
        .default_service(web::to(method_not_allowed))
}

/// Binds `addr` and builds the worker's `/metrics`, `/health` and `/ping`
/// endpoint; nothing is served until the returned server is awaited or
/// spawned. A bind failure is returned; the worker logs it and delivers
/// without the endpoint (several workers on one host each need an
/// `SWITCH_WORKER_METRICS_ADDR` of their own to be watched).
pub fn serve(addr: &str, metrics: Metrics, queue: Queue, pool: DbPool) -> anyhow::Result<Server> {
    let endpoint = web::Data::new(Endpoint {
        metrics,
        queue,
        pool,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(endpoint.clone())
            .service(readable("/metrics", get_metrics))
            .service(readable("/health", get_health))
            .service(readable("/ping", get_ping))
            .default_service(web::to(not_found))
    })
    // Scrapes and health checks are few; deliveries need the cores.
    .workers(1)
    // The worker's own shutdown future stops this server.
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)
    .with_context(|| {
        format!("cannot serve /metrics and /health on {addr} (SWITCH_WORKER_METRICS_ADDR)")
    })?
    .run();
    tracing::info!(addr = %addr, "worker metrics on /metrics, health on /health");
    Ok(server)
}
