//! `/ping`, `/health`, `/metrics`, `/openapi.json`: no authentication.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::State;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/ping", web::get().to(ping))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics))
        .route("/openapi.json", web::get().to(openapi));
}

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

async fn health(state: State) -> HttpResponse {
    let (db, redis) = tokio::join!(database_ok(&state), redis_ok(&state));
    let word = |ok: bool| if ok { "ok" } else { "down" };
    let body = json!({
        "status": if db && redis { "ok" } else { "degraded" },
        "database": word(db),
        "redis": word(redis),
    });
    if db && redis {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

async fn metrics(state: State) -> HttpResponse {
    let m = &state.metrics;
    m.queue.update(&state.queue).await;
    m.subscribers.set(state.cache.current().len() as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(m.render() + &switch_core::metrics::hub_totals(&state.queue).await)
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(include_str!("../../openapi.json"))
}
