//! The API's one error type: a stable `code`, a status, and a JSON body
//! `{"error": {"code", "message"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    InvalidRequest {
        message: String,
        position: Option<usize>,
    },
    /// A target URL the hub will not deliver to (scheme, credentials, or a denied address).
    #[error("{0}")]
    TargetNotAllowed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request body did not arrive within the server's bound: `408`,
    /// code `invalid_request`, and the connection is closed.
    #[error("{0}")]
    BodyTimeout(String),
    #[error("{0}")]
    NotFound(String),
    /// The path exists, not with this method: `405` with `Allow`, code
    /// `invalid_request`.
    #[error("{method} is not allowed here; allowed: {}", allowed.join(", "))]
    MethodNotAllowed {
        method: String,
        allowed: Vec<&'static str>,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
    /// An error about one item of a batch: answered as the item's error,
    /// with `error.index` naming the item (from 0).
    #[error("messages[{index}]: {inner}")]
    AtItem { index: usize, inner: Box<ApiError> },
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            position: None,
        }
    }

    /// The same error, about item `index` of a batch.
    pub fn at_item(self, index: usize) -> Self {
        ApiError::AtItem {
            index,
            inner: Box::new(self),
        }
    }

    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    pub fn error_code(&self) -> ErrorCode {
        match self {
            ApiError::AtItem { inner, .. } => inner.error_code(),
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            ApiError::TargetNotAllowed(_) => ErrorCode::TargetNotAllowed,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::BodyTimeout(_) => ErrorCode::InvalidRequest,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed { .. } => ErrorCode::InvalidRequest,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// The stable codes of error answers: clients branch on these, never on
/// the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    InvalidRequest,
    TargetNotAllowed,
    PayloadTooLarge,
    NotFound,
    Conflict,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::TargetNotAllowed => "target_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = Error,
    example = json!({"error": {"code": "unauthorized", "message": "missing Authorization header"}})
)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// What went wrong, for a human.
    pub message: String,
    /// Only on `invalid_request` errors about a filter expression: the byte
    /// offset in the expression where compilation failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64, required = false)]
    pub position: Option<usize>,
    /// Only on errors about one message of `POST /publish/batch`: its place
    /// in `messages`, from 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64, required = false)]
    pub index: Option<usize>,
}

/// What a client is told when a write collides with a unique field.
pub const CONFLICT_MESSAGE: &str = "the request conflicts with an existing record";

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => ApiError::NotFound("no such record".into()),
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                // The database's own text names tables, constraints and (on
                // PostgreSQL) the conflicting values, and differs by backend:
                // it goes to the log, the client gets a stable message.
                tracing::info!(
                    detail = info.message(),
                    constraint = info.constraint_name(),
                    table = info.table_name(),
                    "unique violation"
                );
                ApiError::Conflict(CONFLICT_MESSAGE.into())
            }
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ) => ApiError::Unavailable("the database cannot be reached".into()),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<r2d2::Error> for ApiError {
    fn from(e: r2d2::Error) -> Self {
        tracing::warn!(error = %e, "database pool");
        ApiError::Unavailable("the database cannot be reached".into())
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        tracing::warn!(error = %e, "redis");
        ApiError::Unavailable("the queue (Redis) cannot be reached".into())
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::Internal(anyhow::anyhow!("blocking task failed: {e}"))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::AtItem { inner, .. } => inner.status_code(),
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::TargetNotAllowed(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let position = match self {
            ApiError::InvalidRequest { position, .. } => *position,
            _ => None,
        };
        let index = match self {
            ApiError::AtItem { index, .. } => Some(*index),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.error_code(),
                message,
                position,
                index,
            },
        };
        let mut resp = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unavailable(_) => {
                resp.insert_header(("Retry-After", "1"));
            }
            ApiError::Unauthorized(_) => {
                resp.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::MethodNotAllowed { allowed, .. } => {
                resp.insert_header((actix_web::http::header::ALLOW, allowed.join(", ")));
            }
            ApiError::BodyTimeout(_) => {
                // The rest of the body may still be on its way: the
                // connection cannot be reused.
                resp.force_close();
            }
            _ => {}
        }
        resp.json(body)
    }
}

/// Error answers that did not come from [`ApiError`] (actix's own: a body over
/// the size limit on an admin endpoint, a method not allowed) get the same
/// JSON shape and a stable code. Pages of the dashboard (HTML) are its own
/// answers to people and stay as they are.
pub fn json_errors<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    use actix_web::middleware::ErrorHandlerResponse;
    let answered = res
        .response()
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if answered {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let message = res
        .response()
        .error()
        .map(|e| e.to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let error = match status.as_u16() {
        401 => ApiError::Unauthorized(message),
        403 => ApiError::Forbidden(message),
        404 => ApiError::NotFound(message),
        408 => ApiError::BodyTimeout(message),
        409 => ApiError::Conflict(message),
        413 => ApiError::PayloadTooLarge(message),
        503 => ApiError::Unavailable(message),
        500..=599 => ApiError::Internal(anyhow::anyhow!(message)),
        _ => ApiError::invalid(message),
    };
    let mut answer = error.error_response();
    // Keep what the original answer said beyond its body (`Allow` on a 405).
    for (name, value) in res.response().headers() {
        if name != actix_web::http::header::CONTENT_TYPE
            && name != actix_web::http::header::CONTENT_LENGTH
        {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *answer.status_mut() = status;
    let (req, _) = res.into_parts();
    Ok(ErrorHandlerResponse::Response(
        actix_web::dev::ServiceResponse::new(req, answer).map_into_right_body(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    #[actix_web::test]
    async fn every_variant_has_its_status_code_and_body() {
        let cases = [
            (ApiError::Unauthorized("u".into()), 401, "unauthorized"),
            (ApiError::Forbidden("f".into()), 403, "forbidden"),
            (ApiError::invalid("i"), 400, "invalid_request"),
            (
                ApiError::PayloadTooLarge("p".into()),
                413,
                "payload_too_large",
            ),
            (ApiError::BodyTimeout("s".into()), 408, "invalid_request"),
            (ApiError::NotFound("n".into()), 404, "not_found"),
            (
                ApiError::MethodNotAllowed {
                    method: "TRACE".into(),
                    allowed: vec!["GET", "PATCH"],
                },
                405,
                "invalid_request",
            ),
            (ApiError::Conflict("c".into()), 409, "conflict"),
            (
                ApiError::TargetNotAllowed("t".into()),
                400,
                "target_not_allowed",
            ),
            (ApiError::Unavailable("x".into()), 503, "unavailable"),
            (
                ApiError::Internal(anyhow::anyhow!("secret detail")),
                500,
                "internal",
            ),
        ];
        for (err, status, code) in cases {
            let resp = err.error_response();
            assert_eq!(resp.status().as_u16(), status);
            if status == 503 {
                assert_eq!(resp.headers().get("Retry-After").unwrap(), "1");
            }
            if status == 405 {
                assert_eq!(resp.headers().get("Allow").unwrap(), "GET, PATCH");
            }
            let body: serde_json::Value =
                serde_json::from_slice(&to_bytes(resp.into_body()).await.unwrap()).unwrap();
            assert_eq!(body["error"]["code"], code);
            let message = body["error"]["message"].as_str().unwrap();
            assert!(!message.is_empty());
            assert!(
                !message.contains("secret detail"),
                "internal causes stay in the log"
            );
        }
    }

    /// The database's own text (different per backend, naming constraints and
    /// values) never reaches the client.
    #[test]
    fn a_unique_violation_answers_a_stable_message() {
        struct Info;
        impl diesel::result::DatabaseErrorInformation for Info {
            fn message(&self) -> &str {
                "duplicate key value violates unique constraint \"subscribers_topic_target_url_key\""
            }
            fn details(&self) -> Option<&str> {
                Some("Key (topic, target_url)=(a, http://secret.internal/) already exists.")
            }
            fn hint(&self) -> Option<&str> {
                None
            }
            fn table_name(&self) -> Option<&str> {
                Some("subscribers")
            }
            fn column_name(&self) -> Option<&str> {
                None
            }
            fn constraint_name(&self) -> Option<&str> {
                Some("subscribers_topic_target_url_key")
            }
            fn statement_position(&self) -> Option<i32> {
                None
            }
        }
        let e = ApiError::from(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            Box::new(Info),
        ));
        assert!(
            matches!(&e, ApiError::Conflict(m) if m == CONFLICT_MESSAGE),
            "{e:?}"
        );
        assert_eq!(e.status_code(), StatusCode::CONFLICT);
    }
}
