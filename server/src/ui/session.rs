//! Signing in and out, and what every page and form checks.
//!
//! The session is stateless, so that any number of servers behind a load
//! balancer accept it: the cookie holds the admin token itself (`HttpOnly`,
//! so no script reads it; `SameSite=Strict`, so no other site's page sends
//! it; `Path=/ui`, so the API never sees it). Every request verifies it as
//! the API verifies an `Authorization` header, so an expired token or a
//! revoked API key ends the session at once on every server.
//!
//! Each form carries a CSRF token: the HMAC-SHA256 of a fixed label keyed by
//! the session's token. Every server computes the same one, it changes with
//! the session, and it cannot be made without the token the cookie hides.

use std::future::{ready, Future, Ready};
use std::pin::Pin;

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use base64::Engine;
use hmac::{Hmac, Mac};
use maud::html;
use sha2::Sha256;

use super::error::UiError;
use super::form::Form;
use super::layout;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::routes::State;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "switch_session";
/// The form field every post carries.
pub const CSRF_FIELD: &str = "csrf";
/// Longest a session lasts, whatever the token's own expiry.
const MAX_SESSION: time::Duration = time::Duration::hours(12);
const CSRF_LABEL: &[u8] = b"switch dashboard csrf v1";

/// A signed-in person: the admin token of the cookie, verified.
pub struct Session {
    pub principal: Principal,
    /// This session's CSRF token, for the forms of the page.
    pub csrf: String,
}

/// The CSRF token of the session holding `token`.
pub fn csrf_token(token: &str) -> String {
    match <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(CSRF_LABEL);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
        // HMAC takes a key of any length; never reached.
        Err(_) => String::new(),
    }
}

/// Whether `presented` is the CSRF token of the session holding `token`,
/// compared in constant time.
fn csrf_matches(token: &str, presented: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(presented) else {
        return false;
    };
    match <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(CSRF_LABEL);
            mac.verify_slice(&given).is_ok()
        }
        Err(_) => false,
    }
}

fn app_state(req: &HttpRequest) -> Result<&web::Data<AppState>, UiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| UiError::Api(ApiError::Internal(anyhow::anyhow!("no application state"))))
}

/// The admin behind `token`, or why not.
fn admin(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let principal = state.auth.verify(token)?;
    principal.require_admin()?;
    Ok(principal)
}

impl Session {
    /// The session of the request's cookie; without one, or with one whose
    /// token no longer verifies, back to the sign-in form.
    pub fn of(req: &HttpRequest) -> Result<(Session, String), UiError> {
        let state = app_state(req)?;
        let cookie = req
            .cookie(COOKIE)
            .ok_or_else(|| UiError::sign_in(req, false))?;
        let token = cookie.value().to_string();
        let principal = admin(state, &token).map_err(|e| {
            tracing::info!(error = %e, "dashboard session refused");
            UiError::sign_in(req, true)
        })?;
        let csrf = csrf_token(&token);
        Ok((Session { principal, csrf }, token))
    }

    /// Who is signed in, as the header shows it.
    pub fn who(&self) -> &str {
        self.principal.author.as_deref().unwrap_or("admin")
    }
}

impl FromRequest for Session {
    type Error = UiError;
    type Future = Ready<Result<Session, UiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Session::of(req).map(|(s, _)| s))
    }
}

/// A form posted by a signed-in person, its CSRF token checked.
pub struct Posted {
    pub session: Session,
    pub form: Form,
}

impl FromRequest for Posted {
    type Error = UiError;
    type Future = Pin<Box<dyn Future<Output = Result<Posted, UiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = Session::of(req);
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let (session, token) = session?;
            let body = body.await.map_err(|e| {
                UiError::Api(ApiError::invalid(format!(
                    "the form could not be read: {e}"
                )))
            })?;
            let form = Form::parse(&body)?;
            match form.get(CSRF_FIELD) {
                None | Some("") => Err(UiError::Csrf(
                    "This form has no CSRF token, so it was refused: dashboard forms must come from a dashboard page.",
                )),
                Some(presented) if !csrf_matches(&token, presented) => Err(UiError::Csrf(
                    "This form's CSRF token does not belong to your session (it was signed in again, or the form came from elsewhere), so it was refused.",
                )),
                Some(_) => Ok(Posted { session, form }),
            }
        })
    }
}

/// Where a sign-in may return to: a dashboard path, never another site.
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = (next == "/ui" || next.starts_with("/ui/") || next.starts_with("/ui?"))
        && !next.contains("//")
        && !next.contains('\\')
        && !next.starts_with("/ui/login")
        && !next.starts_with("/ui/logout");
    ok.then_some(next)
}

fn https(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

fn session_cookie(req: &HttpRequest, token: &str) -> Cookie<'static> {
    let lifetime = token_expiry(token)
        .map(|exp| exp - time::OffsetDateTime::now_utc())
        .map_or(MAX_SESSION, |left| left.min(MAX_SESSION))
        .max(time::Duration::ZERO);
    Cookie::build(COOKIE, token.to_string())
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(https(req))
        .max_age(lifetime)
        .finish()
}

/// A cookie that removes the session cookie.
pub fn removal_cookie() -> Cookie<'static> {
    let mut c = Cookie::build(COOKIE, "")
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    c.make_removal();
    c
}

/// The `exp` claim of a JWT (already verified), if it has one.
fn token_expiry(token: &str) -> Option<time::OffsetDateTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    time::OffsetDateTime::from_unix_timestamp(claims.get("exp")?.as_i64()?).ok()
}

/// The sign-in form, with why the last attempt or session failed.
pub fn sign_in_page(
    status: actix_web::http::StatusCode,
    next: &str,
    error: Option<&str>,
) -> HttpResponse {
    layout::bare(
        status,
        "Sign in",
        html! {
            form.card.sign-in method="post" action="/ui/login" {
                @if let Some(e) = error {
                    p.error { (e) }
                }
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="off" autofocus required
                    placeholder="a JWT with the admin scope, or an admin API key (sk_…)";
                @if let Some(next) = safe_next(next) {
                    input type="hidden" name="next" value=(next);
                }
                button type="submit" { "Sign in" }
                p.hint {
                    "The token is kept in an HttpOnly cookie of this site for at most 12 hours, "
                    "and checked on every page: once it expires or its key is revoked, you are signed out."
                }
            }
        },
    )
}

/// `GET /ui/login`: the sign-in form lives at `/ui`.
pub async fn to_sign_in() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui"))
        .finish()
}

/// `POST /ui/login`: an admin token in, a session cookie out.
pub async fn sign_in(
    req: HttpRequest,
    state: State,
    body: web::Bytes,
) -> Result<HttpResponse, UiError> {
    let form = Form::parse(&body)?;
    let next = form.get("next").unwrap_or("").to_string();
    let token = form.get("token").unwrap_or("").trim().to_string();
    let refused = |status, why: &str| Ok(sign_in_page(status, &next, Some(why)));
    // There is no session yet to derive a CSRF token from: a browser's
    // Origin tells a sign-in posted from another site, which is refused.
    if !same_origin(&req) {
        return refused(
            actix_web::http::StatusCode::FORBIDDEN,
            "A sign-in from another site is refused.",
        );
    }
    if token.is_empty() {
        return refused(
            actix_web::http::StatusCode::BAD_REQUEST,
            "Paste an admin token to sign in.",
        );
    }
    // A cookie holds at most about 4 KB.
    if token.len() > 3500 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return refused(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "That is not a token this hub issues.",
        );
    }
    match admin(&state, &token) {
        Ok(principal) => {
            tracing::info!(
                author = principal.author.as_deref().unwrap_or(""),
                "dashboard sign-in"
            );
            Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, safe_next(&next).unwrap_or("/ui")))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .cookie(session_cookie(&req, &token))
                .finish())
        }
        Err(ApiError::Forbidden(_)) => refused(
            actix_web::http::StatusCode::FORBIDDEN,
            "This token is valid but has no admin scope: the dashboard needs one that has.",
        ),
        Err(e) => {
            tracing::info!(error = %e, "dashboard sign-in refused");
            refused(
                actix_web::http::StatusCode::UNAUTHORIZED,
                &format!("This token was refused: {e}."),
            )
        }
    }
}

/// Whether the request's `Origin` (when a browser sent one) is this hub.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Some(origin) = origin.to_str().ok().and_then(|o| url::Url::parse(o).ok()) else {
        return false;
    };
    let Some(host) = origin.host_str() else {
        return false;
    };
    let origin_host = match origin.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    origin_host.eq_ignore_ascii_case(req.connection_info().host())
}

/// `POST /ui/logout`: forgets the cookie.
pub async fn sign_out(_: Posted) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui"))
        .cookie(removal_cookie())
        .finish()
}
