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
