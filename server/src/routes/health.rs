//! `/ping`, `/health`, `/metrics`: no authentication.

use std::time::Duration;

use actix_web::{web, HttpResponse};

use super::State;
use crate::shapes::health::{CheckState, Health, HealthStatus};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/ping", web::get().to(ping))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics));
}

/// Liveness check
#[utoipa::path(
    get,
    path = "/ping",
    operation_id = "ping",
    tag = "operations",
    responses((status = 200, description = "The server is up.", body = String, content_type = "text/plain", example = "pong"))
)]
async fn ping() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("pong")
}

async fn database_ok(state: &State) -> bool {
    let pool = state.pool.clone();
    let check = web::block(move || switch_core::db::answers(&pool));
    matches!(
        tokio::time::timeout(Duration::from_secs(3), check).await,
        Ok(Ok(true))
    )
}

async fn redis_ok(state: &State) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), state.queue.redis().ping()).await,
        Ok(Ok(()))
    )
}

/// Database and Redis health
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "getHealth",
    tag = "operations",
    responses(
        (status = 200, description = "The database and Redis both answer.", body = Health),
        (status = 503, description = "The database or Redis does not answer; the body names which.", body = Health,
            headers(("Retry-After" = u32, description = "Seconds to wait before asking again.")))
    )
)]
async fn health(state: State) -> HttpResponse {
    let (db, redis) = tokio::join!(database_ok(&state), redis_ok(&state));
    let word = |ok: bool| if ok { CheckState::Ok } else { CheckState::Down };
    let body = Health {
        status: if db && redis {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        },
        database: word(db),
        redis: word(redis),
    };
    if db && redis {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

/// Prometheus metrics
///
/// This process's series and the whole hub's totals (kept in Redis), in the
/// Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "getMetrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4.", body = String, content_type = "text/plain"))
)]
async fn metrics(state: State) -> HttpResponse {
    let m = &state.metrics;
    m.queue.update(&state.queue).await;
    m.subscribers.set(state.cache.current().len() as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(m.render() + &switch_core::metrics::hub_totals(&state.queue).await)
}
