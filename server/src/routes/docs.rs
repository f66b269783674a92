//! The API describing itself: `GET /openapi.json` (generated from the
//! handlers, see [`crate::openapi`]) and `GET /docs`, a page that reads it.
//! No authentication.

use actix_web::{web, HttpResponse};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi))
        .route("/docs", web::get().to(docs));
}

/// The page: plain HTML and JavaScript in one file, no third-party code, so
/// it works where the hub has no way out to the internet.
const PAGE: &str = include_str!("docs.html");

/// This OpenAPI document
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApi",
    tag = "operations",
    responses((status = 200, description = "The API's OpenAPI 3.1 document, generated from the server's code.", body = Object))
)]
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::openapi::json())
}

/// The API, as an interactive page
///
/// Lists the operations of `/openapi.json` by tag, with their parameters and
/// schemas, and sends requests from the browser with the token entered there.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "getDocs",
    tag = "operations",
    responses((status = 200, description = "An HTML page.", body = String, content_type = "text/html"))
)]
async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ))
        .body(PAGE)
}
