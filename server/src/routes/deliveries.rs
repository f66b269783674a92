//! Admin: the delivery log, paged by an ascending id cursor.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use switch_core::db::models::DeliveryAttempt;
use switch_core::db::repo::{self, AttemptQuery};
use utoipa::IntoParams;

use super::{admin, db, ts, State};
use crate::error::ApiError;
use crate::shapes::deliveries::{AttemptList, AttemptOut, Outcome};
use crate::shapes::{BadRequest, Forbidden, Internal, Unauthorized, Unavailable};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/deliveries", web::get().to(list));
}

pub const OUTCOMES: [&str; 3] = ["delivered", "failed", "dead"];

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Query {
    /// Only attempts at this subscriber.
    #[param(value_type = Option<i64>)]
    subscriber_id: Option<String>,
    /// Only attempts at this message.
    #[param(pattern = "^[^\\u0000]*$")]
    message_id: Option<String>,
    /// Only attempts with this outcome.
    #[param(value_type = Option<Outcome>)]
    outcome: Option<String>,
    /// Only attempts with a greater id: the previous page's `next_since`.
    #[param(value_type = Option<i64>)]
    since: Option<String>,
    /// Page size.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000, default = json!(100))]
    limit: Option<String>,
}

/// An optional text query parameter. A NUL is refused here: PostgreSQL
/// cannot hold one in text and would fail the whole query.
pub fn text_param(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.contains('\0') => Err(ApiError::invalid(format!(
            "`{name}` must not contain a NUL character"
        ))),
        other => Ok(other),
    }
}

/// Parses an optional integer query parameter, naming it when it is wrong.
pub fn int_param(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid(format!("`{name}` must be an integer"))),
    }
}

fn to_out(a: &DeliveryAttempt) -> AttemptOut {
    AttemptOut {
        id: a.id,
        message_id: a.message_id.clone(),
        subscriber_id: a.subscriber_id,
        attempt: a.attempt,
        outcome: a.outcome.clone(),
        http_status: a.http_status,
        error_kind: a.error_kind.clone(),
        error: a.error.clone(),
        duration_ms: a.duration_ms,
        created_at: ts(a.created_at),
    }
}

/// List delivery attempts
///
/// Ascending by id; pass the last page's `next_since` as `since` to get only
/// newer attempts.
#[utoipa::path(
    get,
    path = "/deliveries",
    operation_id = "listDeliveries",
    tag = "deliveries",
    params(Query),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "A page of attempts.", body = AttemptList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn list(
    req: HttpRequest,
    state: State,
    q: web::Query<Query>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let q = q.into_inner();
    let message_id = text_param("message_id", q.message_id)?.filter(|m| !m.is_empty());
    let outcome = text_param("outcome", q.outcome)?.filter(|o| !o.is_empty());
    if let Some(o) = &outcome {
        if !OUTCOMES.contains(&o.as_str()) {
            return Err(ApiError::invalid(format!(
                "`outcome` must be one of {}",
                OUTCOMES.join(", ")
            )));
        }
    }
    let limit = int_param("limit", q.limit.as_deref())?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be between 1 and 1000"));
    }
    let since = int_param("since", q.since.as_deref())?;
    let query = AttemptQuery {
        subscriber_id: int_param("subscriber_id", q.subscriber_id.as_deref())?,
        message_id,
        outcome,
        since,
        limit,
    };
    let rows = db(&state, move |c| Ok(repo::list_attempts(c, &query)?)).await?;
    let next_since = rows.last().map(|r| r.id).or(since);
    Ok(HttpResponse::Ok().json(AttemptList {
        items: rows.iter().map(to_out).collect(),
        next_since,
    }))
}
