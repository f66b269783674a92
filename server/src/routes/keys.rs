//! Admin: API keys — issue (the key is shown once), list, revoke.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};
use switch_core::db::models::{now, ApiKey, NewApiKey};
use switch_core::db::repo;
use switch_core::topic::TopicPattern;

use super::{admin, db, json_object, reject_unknown, ts, State};
use crate::error::ApiError;
use crate::shapes::keys::{KeyCreated, KeyIn, KeyList, KeyOut};
use crate::shapes::{
    BadRequest, Forbidden, Internal, NotFound, PayloadTooLarge, RequestTimeout, Unauthorized,
    Unavailable,
};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/keys", web::get().to(list))
        .route("/keys", web::post().to(create))
        .route("/keys/{id}", web::delete().to(revoke));
}

const KEY_FIELDS: [&str; 4] = ["name", "scope", "topics", "expires_at"];
const SCOPES: [&str; 3] = ["publish", "admin", "publish admin"];

/// The API shape of a key: never the key itself.
fn to_out(k: &ApiKey) -> KeyOut {
    KeyOut {
        id: k.id,
        name: k.name.clone(),
        scope: k.scope.clone(),
        topics: k
            .topics
            .as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok()),
        expires_at: k.expires_at.map(ts),
        created_at: ts(k.created_at),
    }
}

/// List API keys (never the keys themselves)
#[utoipa::path(
    get,
    path = "/keys",
    operation_id = "listKeys",
    tag = "keys",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Every key.", body = KeyList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn list(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let keys = db(&state, |c| Ok(repo::list_api_keys(c)?)).await?;
    Ok(HttpResponse::Ok().json(KeyList {
        items: keys.iter().map(to_out).collect(),
    }))
}

/// Validates a key's fields (API body or seed file entry); returns the row
/// to store and the key, to show once.
pub fn new_key(m: &Map<String, Value>) -> Result<(NewApiKey, String), ApiError> {
    reject_unknown(m, &KEY_FIELDS)?;
    let name = match m.get("name") {
        Some(Value::String(s))
            if !s.trim().is_empty() && s.chars().count() <= 200 && !s.contains('\0') =>
        {
            s.trim().to_string()
        }
        _ => {
            return Err(ApiError::invalid(
                "`name` must be a string of 1 to 200 characters",
            ))
        }
    };
    switch_core::message::check_author(&name)
        .map_err(|e| ApiError::invalid(format!("`name` is sent as x-switch-author: {}", e.0)))?;
    let scope = match m.get("scope").and_then(Value::as_str) {
        Some(s) => {
            let words: Vec<&str> = s.split_whitespace().collect();
            let normal =
                if words.contains(&"publish") && words.contains(&"admin") && words.len() == 2 {
                    "publish admin".to_string()
                } else {
                    words.join(" ")
                };
            if !SCOPES.contains(&normal.as_str()) {
                return Err(ApiError::invalid(
                    "`scope` must be `publish`, `admin` or `publish admin`",
                ));
            }
            normal
        }
        None => {
            return Err(ApiError::invalid(
                "`scope` is required: `publish`, `admin` or `publish admin`",
            ))
        }
    };
    let topics = match m.get("topics") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut patterns = Vec::with_capacity(items.len());
            for item in items {
                let p = item
                    .as_str()
                    .and_then(|s| TopicPattern::parse(s).ok())
                    .ok_or_else(|| {
                        ApiError::invalid(format!("`topics` holds a bad pattern: {item}"))
                    })?;
                patterns.push(p.as_str().to_string());
            }
            Some(serde_json::to_string(&patterns).map_err(anyhow::Error::from)?)
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "`topics` must be a list of topic patterns",
            ))
        }
    };
    let expires_at = match m.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| ApiError::invalid("`expires_at` must be an RFC 3339 time"))?
                .naive_utc(),
        ),
        Some(_) => return Err(ApiError::invalid("`expires_at` must be an RFC 3339 time")),
    };
    let (key, key_hash) = crate::keys::generate();
    let new = NewApiKey {
        name,
        scope,
        topics,
        key_hash,
        expires_at,
        created_at: now(),
    };
    Ok((new, key))
}

/// Issue an API key
///
/// The key is in this answer only; the hub keeps a hash of it.
#[utoipa::path(
    post,
    path = "/keys",
    operation_id = "createKey",
    tag = "keys",
    request_body = KeyIn,
    security(("bearer" = ["admin"])),
    responses(
        (status = 201, description = "Issued.", body = KeyCreated),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
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
    let m = json_object(&body, &KEY_FIELDS)?;
    let (new, key) = new_key(&m)?;
    let row = db(&state, move |c| Ok(repo::insert_api_key(c, &new)?)).await?;
    state.keys.changed(&state.queue).await.map_err(|e| {
        ApiError::Unavailable(format!("the key is stored but could not be loaded: {e}"))
    })?;
    tracing::info!(key_id = row.id, name = %row.name, scope = %row.scope, "API key issued");
    Ok(HttpResponse::Created().json(KeyCreated {
        key_info: to_out(&row),
        key,
    }))
}

/// Revoke an API key
///
/// Every server refuses it within a second.
#[utoipa::path(
    delete,
    path = "/keys/{id}",
    operation_id = "revokeKey",
    tag = "keys",
    params(("id" = i64, Path, description = "The key's id.")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn revoke(
    req: HttpRequest,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no key {id}")))?;
    if !db(&state, move |c| Ok(repo::delete_api_key(c, id)?)).await? {
        return Err(ApiError::NotFound(format!("no key {id}")));
    }
    state.keys.changed(&state.queue).await.map_err(|e| {
        ApiError::Unavailable(format!(
            "the key is revoked but could not be reloaded here: {e}"
        ))
    })?;
    tracing::info!(key_id = id, "API key revoked");
    Ok(HttpResponse::NoContent().finish())
}
