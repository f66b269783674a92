pub mod dead_letters;
pub mod deliveries;
pub mod docs;
pub mod filters;
pub mod health;
pub mod keys;
pub mod messages;
pub mod publish;
pub mod stream;
pub mod subscribers;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

pub type State = web::Data<AppState>;

/// Every route of the API, each of which the OpenAPI document describes
/// (a test in [`crate::openapi`] holds them to it).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(health::config)
        .configure(docs::config)
        .configure(publish::config)
        .configure(subscribers::config)
        .configure(filters::config)
        .configure(deliveries::config)
        .configure(dead_letters::config)
        .configure(messages::config)
        .configure(stream::config)
        .configure(keys::config);
}

/// A request no route took: `405` with `Allow` when its path is one of the
/// API's (and only the method is wrong), `404` otherwise. Each route is its
/// own resource guarded by its method, so actix itself cannot tell the two
/// apart; the document knows every path and its methods.
pub async fn unrouted(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let allowed = crate::openapi::RouteTable::get().allowed(req.path());
    if allowed.is_empty() {
        return Err(ApiError::NotFound("no such endpoint".into()));
    }
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        allowed,
    })
}

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

/// Runs `f` in a transaction that holds the database's write lock from its
/// start. On SQLite a transaction that reads and then writes fails at once
/// ("database is locked") when another connection wrote in between, which
/// `busy_timeout` cannot help; one begun `IMMEDIATE` waits its turn instead.
/// PostgreSQL needs nothing of the sort.
pub fn write_transaction<T, F>(c: &mut switch_core::db::AnyConnection, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&mut switch_core::db::AnyConnection) -> Result<T, ApiError>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    use diesel::Connection;
    use switch_core::db::AnyConnection;
    let AnyConnection::Sqlite(sqlite) = c else {
        return c.transaction(f);
    };
    AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE")?;
    let result = f(c);
    let AnyConnection::Sqlite(sqlite) = c else {
        return result;
    };
    match result {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(sqlite)?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = AnsiTransactionManager::rollback_transaction(sqlite) {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(e)
        }
    }
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

/// An integer as JSON Schema reads one: `7` and `7.0` alike.
pub fn json_integer(v: &serde_json::Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && (i64::MIN as f64..i64::MAX as f64).contains(f))
            .map(|f| f as i64)
    })
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
