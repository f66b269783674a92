//! What the dashboard answers when something is wrong: an HTML page with the
//! status and a sentence a person can act on, or back to the sign-in form.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use maud::html;

use super::layout;
use super::session;
use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No session, or its token no longer verifies (expired, revoked, no
    /// longer admin): back to the sign-in form, which then returns to `next`.
    #[error("sign in again")]
    SignIn { next: String, ended: bool },
    /// A form without the session's CSRF token, or with another one.
    #[error("{0}")]
    Csrf(&'static str),
    /// What the API would have answered, shown as a page.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl UiError {
    /// Back to the sign-in form, returning to this page (a GET) or to the
    /// overview (a form post, which cannot be repeated by a redirect).
    pub fn sign_in(req: &HttpRequest, ended: bool) -> Self {
        let next = if req.method() == actix_web::http::Method::GET {
            req.uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        UiError::SignIn { next, ended }
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            UiError::SignIn { .. } => StatusCode::SEE_OTHER,
            UiError::Csrf(_) => StatusCode::FORBIDDEN,
            UiError::Api(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            UiError::SignIn { next, ended } => {
                let mut to = url::form_urlencoded::Serializer::new(String::new());
                if let Some(next) = session::safe_next(next) {
                    to.append_pair("next", next);
                }
                if *ended {
                    to.append_pair("ended", "1");
                }
                let query = to.finish();
                let location = if query.is_empty() {
                    "/ui".to_string()
                } else {
                    format!("/ui?{query}")
                };
                let mut resp = HttpResponse::SeeOther();
                resp.insert_header((header::LOCATION, location));
                if *ended {
                    resp.cookie(session::removal_cookie());
                }
                resp.finish()
            }
            UiError::Csrf(why) => layout::bare(
                StatusCode::FORBIDDEN,
                "Form refused",
                html! {
                    p.error { (why) }
                    p { "Nothing was changed. Go back, reload the page and submit the form again." }
                },
            ),
            UiError::Api(e) => {
                let message = match e {
                    ApiError::Internal(cause) => {
                        tracing::error!(error = ?cause, "internal error in the dashboard");
                        "internal error".to_string()
                    }
                    other => other.to_string(),
                };
                let status = e.status_code();
                layout::bare(
                    status,
                    status.canonical_reason().unwrap_or("Error"),
                    html! {
                        p.error { (message) }
                        p { a.back href="/ui" { "Back" } " · " a href="/ui" { "Overview" } }
                    },
                )
            }
        }
    }
}

/// Any other path under `/ui`.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    UiError::Api(ApiError::NotFound(format!(
        "the dashboard has no page {}",
        req.path()
    )))
    .error_response()
}
