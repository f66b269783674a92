//! Admin: subscribers CRUD and secret rotation.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use utoipa::IntoParams;

use switch_core::db::models::{now, NewSubscriber, Subscriber, SubscriberChanges};
use switch_core::db::repo;
use switch_core::filter::CompiledFilter;
use switch_core::queue::circuit::{Circuit, CircuitState};
use switch_core::signature::{generate_secret, is_valid_secret};
use switch_core::target::{TargetError, TargetPolicy};
use switch_core::topic::TopicPattern;

use super::{admin, db, json_object, reject_unknown, State};
use crate::error::{ApiError, ErrorBody};
use crate::shapes::subscribers::{SubscriberIn, SubscriberList, SubscriberOut, SubscriberPatch};
use crate::shapes::{
    BadRequest, Forbidden, Internal, NotFound, PayloadTooLarge, RequestTimeout, Unauthorized,
    Unavailable,
};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/subscribers", web::get().to(list))
        .route("/subscribers", web::post().to(create))
        .route("/subscribers/{id}", web::get().to(get))
        .route("/subscribers/{id}", web::patch().to(update))
        .route("/subscribers/{id}", web::delete().to(delete))
        .route(
            "/subscribers/{id}/rotate-secret",
            web::post().to(rotate_secret),
        );
}

/// Largest `max_in_flight` accepted.
const MAX_IN_FLIGHT: i64 = 10_000;

/// The API shape of a subscriber, with its circuit as the workers share it.
pub fn to_json(s: &Subscriber, circuit: CircuitState) -> Value {
    json!(SubscriberOut::new(s, circuit))
}

/// Circuit states of every subscriber that has one (the rest are closed).
/// Redis being away shows every circuit closed rather than failing the call.
async fn circuits(state: &State) -> HashMap<i64, Circuit> {
    state.queue.circuits().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "circuit states unavailable; shown as closed");
        HashMap::new()
    })
}

fn circuit_of(circuits: &HashMap<i64, Circuit>, id: i64) -> CircuitState {
    circuits.get(&id).map(|c| c.state).unwrap_or_default()
}

async fn one(state: &State, row: &Subscriber) -> SubscriberOut {
    SubscriberOut::new(row, circuit_of(&circuits(state).await, row.id))
}

fn check_pattern(topic: &str) -> Result<String, ApiError> {
    TopicPattern::parse(topic)
        .map(|p| p.as_str().to_string())
        .map_err(|e| ApiError::invalid(format!("topic: {}", e.0)))
}

/// An absolute http(s) URL the target policy allows; `:name` placeholders
/// in the path are allowed.
pub fn check_url(src: &str, policy: &TargetPolicy) -> Result<String, ApiError> {
    match policy.check_url(src) {
        Ok(_) => Ok(src.to_string()),
        Err(e @ TargetError::Invalid { .. }) => Err(ApiError::invalid(format!("target_url: {e}"))),
        Err(e @ TargetError::NotAllowed { .. }) => {
            Err(ApiError::TargetNotAllowed(format!("target_url: {e}")))
        }
    }
}

/// A positive number of deliveries, or null for the hub's default.
fn check_max_in_flight(m: &Map<String, Value>) -> Result<Option<Option<i32>>, ApiError> {
    match m.get("max_in_flight") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => match super::json_integer(v) {
            Some(n) if (1..=MAX_IN_FLIGHT).contains(&n) => Ok(Some(Some(n as i32))),
            _ => Err(ApiError::invalid(format!(
                "`max_in_flight` must be an integer from 1 to {MAX_IN_FLIGHT}, or null"
            ))),
        },
    }
}

/// Compiles the filter; returns what to store (legacy sources are stored translated).
fn check_filter(src: Option<&str>) -> Result<Option<String>, ApiError> {
    match src.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => {
            let f = CompiledFilter::compile(Some(s)).map_err(|e| ApiError::InvalidRequest {
                message: format!("filter_expression: {}", e.message),
                position: e.position,
            })?;
            Ok(Some(if f.is_always() {
                s.to_string()
            } else {
                f.source().to_string()
            }))
        }
    }
}

fn check_secret(src: &str) -> Result<String, ApiError> {
    if is_valid_secret(src) {
        Ok(src.to_string())
    } else {
        Err(ApiError::invalid(
            "secret must be `whsec_` followed by the base64 of 24 to 64 bytes",
        ))
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only subscribers with exactly this topic pattern.
    #[param(value_type = Option<crate::shapes::TopicPattern>)]
    topic: Option<String>,
}

/// List subscribers
#[utoipa::path(
    get,
    path = "/subscribers",
    operation_id = "listSubscribers",
    tag = "subscribers",
    params(ListQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Every subscriber (with `topic`, those with exactly that pattern).", body = SubscriberList),
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
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let topic = q
        .into_inner()
        .topic
        .filter(|t| !t.is_empty())
        .map(|t| check_pattern(&t))
        .transpose()?;
    let rows = db(&state, move |c| {
        let mut rows = repo::list_subscribers(c, topic.as_deref())?;
        repo::fill_missing_secrets(c, &mut rows)?;
        Ok(rows)
    })
    .await?;
    let circuits = circuits(&state).await;
    let items = rows
        .iter()
        .map(|r| SubscriberOut::new(r, circuit_of(&circuits, r.id)))
        .collect();
    Ok(HttpResponse::Ok().json(SubscriberList { items }))
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("no subscriber {raw}")))
}

fn opt_string(m: &Map<String, Value>, key: &str) -> Result<Option<Option<String>>, ApiError> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(ApiError::invalid(format!("`{key}` must be a string"))),
    }
}

fn opt_bool(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(format!("`{key}` must be true or false"))),
    }
}

const FIELDS: [&str; 7] = [
    "topic",
    "target_url",
    "filter_expression",
    "secret",
    "enabled",
    "description",
    "max_in_flight",
];

/// Validates a create body into a row to insert.
pub fn new_subscriber(
    m: &Map<String, Value>,
    policy: &TargetPolicy,
) -> Result<NewSubscriber, ApiError> {
    reject_unknown(m, &FIELDS)?;
    let required = |k: &str| -> Result<String, ApiError> {
        opt_string(m, k)?
            .flatten()
            .ok_or_else(|| ApiError::invalid(format!("`{k}` is required")))
    };
    Ok(NewSubscriber {
        topic: check_pattern(&required("topic")?)?,
        target_url: check_url(&required("target_url")?, policy)?,
        filter_expression: check_filter(opt_string(m, "filter_expression")?.flatten().as_deref())?,
        secret: Some(match opt_string(m, "secret")?.flatten() {
            Some(s) => check_secret(&s)?,
            None => generate_secret(),
        }),
        enabled: opt_bool(m, "enabled")?.unwrap_or(true),
        description: opt_string(m, "description")?.flatten(),
        max_in_flight: check_max_in_flight(m)?.flatten(),
    })
}

/// Two subscribers with the same topic and target would get every message twice.
fn refuse_duplicate(
    c: &mut switch_core::db::AnyConnection,
    topic: &str,
    target_url: &str,
    except: Option<i64>,
) -> Result<(), ApiError> {
    match repo::find_by_topic_and_url(c, topic, target_url)? {
        Some(existing) if Some(existing.id) != except => Err(ApiError::Conflict(format!(
            "subscriber {} already has topic `{topic}` and this target_url",
            existing.id
        ))),
        _ => Ok(()),
    }
}

/// Create a subscriber
#[utoipa::path(
    post,
    path = "/subscribers",
    operation_id = "createSubscriber",
    tag = "subscribers",
    request_body = SubscriberIn,
    security(("bearer" = ["admin"])),
    responses(
        (status = 201, description = "Created; the answer holds its secret.", body = SubscriberOut),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "A subscriber with this `topic` and `target_url` exists (`conflict`).", body = ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn create(
    req: HttpRequest,
    state: State,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let new = new_subscriber(&json_object(&body, &FIELDS)?, &state.targets)?;
    let row = insert(&state, new).await?;
    Ok(HttpResponse::Created().json(SubscriberOut::new(&row, CircuitState::Closed)))
}

/// Get a subscriber
#[utoipa::path(
    get,
    path = "/subscribers/{id}",
    operation_id = "getSubscriber",
    tag = "subscribers",
    params(("id" = i64, Path, description = "The subscriber's id.")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The subscriber.", body = SubscriberOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn get(
    req: HttpRequest,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let id = parse_id(&id)?;
    let row = db(&state, move |c| {
        let mut row = repo::get_subscriber(c, id)?;
        repo::fill_missing_secrets(c, row.as_mut_slice())?;
        Ok(row)
    })
    .await?;
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no subscriber {id}")))?;
    Ok(HttpResponse::Ok().json(one(&state, &row).await))
}

/// Validates an update body into the changes to make.
pub fn subscriber_changes(
    m: &Map<String, Value>,
    policy: &TargetPolicy,
) -> Result<SubscriberChanges, ApiError> {
    reject_unknown(m, &FIELDS)?;
    let not_null = |k: &str, v: Option<Option<String>>| -> Result<Option<String>, ApiError> {
        match v {
            Some(None) => Err(ApiError::invalid(format!("`{k}` cannot be null"))),
            Some(Some(s)) => Ok(Some(s)),
            None => Ok(None),
        }
    };
    Ok(SubscriberChanges {
        topic: not_null("topic", opt_string(m, "topic")?)?
            .map(|t| check_pattern(&t))
            .transpose()?,
        target_url: not_null("target_url", opt_string(m, "target_url")?)?
            .map(|u| check_url(&u, policy))
            .transpose()?,
        filter_expression: opt_string(m, "filter_expression")?
            .map(|f| check_filter(f.as_deref()))
            .transpose()?,
        secret: not_null("secret", opt_string(m, "secret")?)?
            .map(|s| check_secret(&s).map(Some))
            .transpose()?,
        enabled: opt_bool(m, "enabled")?,
        description: opt_string(m, "description")?,
        updated_at: Some(now()),
        previous_secret: None,
        previous_secret_expires_at: None,
        max_in_flight: check_max_in_flight(m)?,
        // An operator's enable or disable replaces the hub's own reason.
        disabled_reason: opt_bool(m, "enabled")?.map(|_| None),
    })
}

/// Inserts a validated subscriber (refusing a duplicate) and tells every
/// process; shared by the API and the dashboard.
pub(crate) async fn insert(state: &State, new: NewSubscriber) -> Result<Subscriber, ApiError> {
    let row = db(state, move |c| {
        super::write_transaction(c, |c| {
            refuse_duplicate(c, &new.topic, &new.target_url, None)?;
            Ok(repo::insert_subscriber(c, &new)?)
        })
    })
    .await?;
    state.subscribers_changed().await?;
    tracing::info!(subscriber_id = row.id, topic = %row.topic, "subscriber created");
    Ok(row)
}

/// Applies validated changes (refusing a duplicate); an operator enabling a
/// subscriber also resets its circuit. Shared by the API and the dashboard.
pub(crate) async fn apply_changes(
    state: &State,
    id: i64,
    changes: SubscriberChanges,
) -> Result<Subscriber, ApiError> {
    let enabling = changes.enabled == Some(true);
    let row = db(state, move |c| {
        super::write_transaction(c, |c| {
            let Some(current) = repo::get_subscriber(c, id)? else {
                return Ok(None);
            };
            if changes.topic.is_some() || changes.target_url.is_some() {
                let topic = changes.topic.as_deref().unwrap_or(&current.topic);
                let url = changes.target_url.as_deref().unwrap_or(&current.target_url);
                refuse_duplicate(c, topic, url, Some(id))?;
            }
            Ok(repo::update_subscriber(c, id, &changes)?)
        })
    })
    .await?;
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no subscriber {id}")))?;
    if enabling {
        // Enabled again by an operator: its deliveries start afresh.
        if let Err(e) = state.queue.circuit_reset(id).await {
            tracing::warn!(subscriber_id = id, error = %e, "circuit not reset");
        }
    }
    state.subscribers_changed().await?;
    Ok(row)
}

/// Update a subscriber
#[utoipa::path(
    patch,
    path = "/subscribers/{id}",
    operation_id = "updateSubscriber",
    tag = "subscribers",
    params(("id" = i64, Path, description = "The subscriber's id.")),
    request_body = SubscriberPatch,
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The subscriber as it is now.", body = SubscriberOut),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "Another subscriber has this `topic` and `target_url` (`conflict`).", body = ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn update(
    req: HttpRequest,
    state: State,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let id = parse_id(&id)?;
    let changes = subscriber_changes(&json_object(&body, &FIELDS)?, &state.targets)?;
    let row = apply_changes(&state, id, changes).await?;
    Ok(HttpResponse::Ok().json(one(&state, &row).await))
}

/// Delete a subscriber
#[utoipa::path(
    delete,
    path = "/subscribers/{id}",
    operation_id = "deleteSubscriber",
    tag = "subscribers",
    params(("id" = i64, Path, description = "The subscriber's id.")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn delete(
    req: HttpRequest,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let id = parse_id(&id)?;
    if !db(&state, move |c| Ok(repo::delete_subscriber(c, id)?)).await? {
        return Err(ApiError::NotFound(format!("no subscriber {id}")));
    }
    state.subscribers_changed().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Rotate a subscriber's secret
///
/// A new secret now; deliveries are signed with the previous one too, beside
/// the new, for 24 hours.
#[utoipa::path(
    post,
    path = "/subscribers/{id}/rotate-secret",
    operation_id = "rotateSubscriberSecret",
    tag = "subscribers",
    params(("id" = i64, Path, description = "The subscriber's id.")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The subscriber with its new secret.", body = SubscriberOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn rotate_secret(
    req: HttpRequest,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let id = parse_id(&id)?;
    let row = rotate(&state, id).await?;
    Ok(HttpResponse::Ok().json(one(&state, &row).await))
}

/// Gives subscriber `id` a new secret, keeping the old one for 24 h; shared
/// by the API and the dashboard.
pub(crate) async fn rotate(state: &State, id: i64) -> Result<Subscriber, ApiError> {
    let row = db(state, move |c| {
        let current = repo::get_subscriber(c, id)?
            .ok_or_else(|| ApiError::NotFound(format!("no subscriber {id}")))?;
        let changes = SubscriberChanges {
            secret: Some(Some(generate_secret())),
            previous_secret: Some(current.secret.clone()),
            previous_secret_expires_at: Some(Some(now() + chrono::Duration::hours(24))),
            updated_at: Some(now()),
            ..Default::default()
        };
        Ok(repo::update_subscriber(c, id, &changes)?)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no subscriber {id}")))?;
    state.subscribers_changed().await?;
    Ok(row)
}
