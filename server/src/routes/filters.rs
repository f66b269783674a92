//! Admin: try a filter against a message without publishing it.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use switch_core::filter::CompiledFilter;
use switch_core::message::PublishRequest;

use super::{admin, State};
use crate::error::ApiError;
use crate::shapes::filters::{FilterTest, FilterTestResult};
use crate::shapes::{
    BadRequest, Forbidden, Internal, PayloadTooLarge, RequestTimeout, Unauthorized, Unavailable,
};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/filters/test", web::post().to(test_filter));
}

/// Evaluate a filter against a message
///
/// Nothing is published. A filter that does not compile gives `400` with the
/// byte offset of the problem in `error.position`.
#[utoipa::path(
    post,
    path = "/filters/test",
    operation_id = "testFilter",
    tag = "filters",
    request_body = FilterTest,
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The result.", body = FilterTestResult),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn test_filter(
    req: HttpRequest,
    state: State,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let principal = admin(&req, &state)?;
    let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&body) else {
        return Err(ApiError::invalid(
            "the body must be a JSON object {\"filter_expression\", \"message\"}",
        ));
    };
    let expr = match m.remove("filter_expression") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(ApiError::invalid("`filter_expression` must be a string")),
    };
    let message = m.remove("message");
    let (matches, compiled) = try_filter(expr.as_deref(), message, principal.author)?;
    Ok(HttpResponse::Ok().json(FilterTestResult { matches, compiled }))
}

/// Whether `expr` matches `message` (a native publish body; its topic
/// defaults to `test`, its author to `author`), and the filter as compiled.
/// Shared by the API and the dashboard.
pub(crate) fn try_filter(
    expr: Option<&str>,
    message: Option<Value>,
    author: Option<String>,
) -> Result<(bool, String), ApiError> {
    let mut message = match message {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            return Err(ApiError::invalid(
                "`message` must be an object (a native publish body)",
            ))
        }
    };
    if message.get("topic").is_none() {
        message["topic"] = json!("test");
    }
    // `author` comes from the token when publishing; here the message may name one.
    let author = match message.as_object_mut().and_then(|o| o.remove("author")) {
        None | Some(Value::Null) => author,
        Some(Value::String(a)) => Some(a),
        Some(_) => return Err(ApiError::invalid("`message.author` must be a string")),
    };
    let filter = CompiledFilter::compile(expr).map_err(|e| ApiError::InvalidRequest {
        message: format!("filter_expression: {}", e.message),
        position: e.position,
    })?;
    let parsed = PublishRequest::from_json_bytes(message.to_string().as_bytes())
        .map_err(|e| ApiError::invalid(format!("message: {}", e.0)))?;
    let msg = parsed.into_message("msg_test".into(), author, None, 0);
    Ok((filter.matches(&msg), filter.source().to_string()))
}
