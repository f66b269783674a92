//! Publisher and operator tokens: HS256 JWTs in `Authorization: Bearer`.

use actix_web::HttpRequest;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::Value;
use switch_core::topic::{Topic, TopicPattern};

use crate::error::ApiError;

/// Who is calling, and what the token allows.
#[derive(Debug, Clone)]
pub struct Principal {
    pub author: Option<String>,
    /// `None` when the token has no `scope` claim (legacy: publish and refresh).
    scopes: Option<Vec<String>>,
    /// `None` when the token may publish to any topic.
    topics: Option<Vec<TopicPattern>>,
}

impl Principal {
    fn has_scope(&self, scope: &str) -> bool {
        self.scopes
            .as_ref()
            .is_some_and(|s| s.iter().any(|x| x == scope))
    }

    pub fn require_publish(&self) -> Result<(), ApiError> {
        if self.scopes.is_none() || self.has_scope("publish") || self.has_scope("admin") {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this token has no `publish` scope".into(),
            ))
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.has_scope("admin") {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this endpoint needs a token with the `admin` scope".into(),
            ))
        }
    }

    /// May watch every topic `pattern` can match: an admin, or a token
    /// whose `topics` claim covers the pattern.
    pub fn require_watch(&self, pattern: &TopicPattern) -> Result<(), ApiError> {
        if self.has_scope("admin") {
            return Ok(());
        }
        match &self.topics {
            Some(claims) if claims.iter().any(|c| c.covers(pattern)) => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "this token may not watch `{}`: it needs the `admin` scope or a `topics` claim covering it",
                pattern.as_str()
            ))),
        }
    }

    pub fn require_topic(&self, topic: &Topic) -> Result<(), ApiError> {
        match &self.topics {
            Some(patterns) if !patterns.iter().any(|p| p.matches(topic)) => Err(
                ApiError::Forbidden(format!("this token may not publish to `{topic}`")),
            ),
            _ => Ok(()),
        }
    }
}

/// Verifies tokens with the server's secret.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        // Legacy SDKs send tokens without `exp`; `exp` and `nbf` are checked when present.
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        // `exp` and `nbf` mean what they say: a token is refused the second it expires.
        validation.leeway = 0;
        Authenticator {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn authenticate(&self, req: &HttpRequest) -> Result<Principal, ApiError> {
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization header".into()))?
            .to_str()
            .map_err(|_| ApiError::Unauthorized("Authorization header is not text".into()))?;
        let (scheme, token) = header.trim().split_once(' ').ok_or_else(|| {
            ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into())
        })?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unauthorized("expected the Bearer scheme".into()));
        }
        self.verify(token.trim())
    }

    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let data = decode::<Value>(token, &self.key, &self.validation)
            .map_err(|e| ApiError::Unauthorized(format!("invalid token: {e}")))?;
        let claims = data.claims;
        let author = ["author", "Author"]
            .iter()
            .find_map(|k| match claims.get(*k) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            });
        let scopes = match claims.get("scope") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.split_whitespace().map(str::to_string).collect()),
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            Some(_) => {
                return Err(ApiError::Unauthorized(
                    "`scope` must be a space-separated string".into(),
                ))
            }
        };
        let topics = match claims.get("topics") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| {
                        v.as_str()
                            .and_then(|s| TopicPattern::parse(s).ok())
                            .ok_or_else(|| {
                                ApiError::Unauthorized(format!("`topics` holds a bad pattern: {v}"))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => {
                return Err(ApiError::Unauthorized(
                    "`topics` must be a list of topic patterns".into(),
                ))
            }
        };
        Ok(Principal {
            author,
            scopes,
            topics,
        })
    }
}

/// Signs a token with the `admin publish` scopes, for local use (`make run`).
pub fn dev_token(secret: &str, ttl_secs: i64) -> String {
    let claims = serde_json::json!({
        "author": "dev",
        "scope": "admin publish",
        "exp": chrono::Utc::now().timestamp() + ttl_secs,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}
