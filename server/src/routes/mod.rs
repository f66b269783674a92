pub mod dead_letters;
pub mod deliveries;
pub mod filters;
pub mod health;
pub mod keys;
pub mod messages;
#[cfg(test)]
mod openapi_check;
pub mod publish;
pub mod stream;
pub mod subscribers;

use actix_web::{web, HttpRequest};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

pub type State = web::Data<AppState>;

/// Authenticates and requires the `admin` scope.
pub fn admin(req: &HttpRequest, state: &AppState) -> Result<Principal, ApiError> {
    let p = state.auth.authenticate(req)?;
    p.require_admin()?;
    Ok(p)
}

/// Runs a database closure on the blocking pool with a pooled connection.
pub async fn db<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut switch_core::db::AnyConnection) -> Result<T, ApiError> + Send + 'static,
{
    let pool = state.pool.clone();
    web::block(move || {
        let mut conn = pool.get()?;
        f(&mut conn)
    })
    .await?
}

/// RFC 3339 in UTC, as every timestamp in the API is written.
pub fn ts(t: chrono::NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A string holding NUL, anywhere in `v`: PostgreSQL cannot store it.
fn has_nul(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// An admin request body: a JSON object whose keys are all in `fields`, with
/// no NUL in any text.
pub fn json_object(
    body: &[u8],
    fields: &[&str],
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    use serde_json::Value;
    let m = match serde_json::from_slice::<Value>(body) {
        Ok(v) if has_nul(&v) => {
            return Err(ApiError::invalid(
                "text fields cannot contain the NUL character (\\u0000)",
            ))
        }
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(ApiError::invalid("the body must be a JSON object")),
        Err(e) => {
            return Err(ApiError::invalid(format!(
                "the body is not valid JSON: {e}"
            )))
        }
    };
    reject_unknown(&m, fields)?;
    Ok(m)
}

/// Refuses keys not in `fields`, naming the first and what is expected.
pub fn reject_unknown(
    m: &serde_json::Map<String, serde_json::Value>,
    fields: &[&str],
) -> Result<(), ApiError> {
    match m.keys().find(|k| !fields.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid(format!(
            "unknown field `{k}`; expected {}",
            fields.join(", ")
        ))),
        None => Ok(()),
    }
}
