//! Publisher and operator tokens: HS256 JWTs in `Authorization: Bearer`.

use actix_web::HttpRequest;
use std::sync::Arc;

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;
use switch_core::topic::{Topic, TopicPattern};

use crate::error::ApiError;
use crate::keys::{KeyStore, PREFIX};

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

/// A public key for asymmetric tokens, picked by the token's `kid`.
#[derive(Clone)]
pub struct PublicKey {
    /// Its `kid` comment, else its place in the file from 0.
    pub kid: String,
    pub algorithm: Algorithm,
    key: DecodingKey,
}

/// Reads a file of PEM public keys (EdDSA, ES256, RS256). A line `kid: NAME`
/// (or `# kid: NAME`) before a key names it; otherwise its `kid` is its
/// place in the file, from 0.
pub fn read_public_keys(text: &str) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    let mut kid: Option<String> = None;
    let mut block: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(b) = block.as_mut() {
            b.push_str(t);
            b.push('\n');
            if t.starts_with("-----END ") {
                let pem = block.take().unwrap_or_default();
                let name = kid.take().unwrap_or_else(|| keys.len().to_string());
                let (algorithm, key) = if let Ok(k) = DecodingKey::from_ed_pem(pem.as_bytes()) {
                    (Algorithm::EdDSA, k)
                } else if let Ok(k) = DecodingKey::from_ec_pem(pem.as_bytes()) {
                    (Algorithm::ES256, k)
                } else if let Ok(k) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                    (Algorithm::RS256, k)
                } else {
                    anyhow::bail!("key {name} is not an Ed25519, P-256 or RSA public key in PEM");
                };
                keys.push(PublicKey {
                    kid: name,
                    algorithm,
                    key,
                });
            }
        } else if t.starts_with("-----BEGIN ") {
            block = Some(format!("{t}\n"));
        } else if let Some(rest) = t.trim_start_matches('#').trim().strip_prefix("kid:") {
            kid = Some(rest.trim().to_string());
        }
    }
    if block.is_some() {
        anyhow::bail!("a PEM block is not closed");
    }
    if keys.is_empty() {
        anyhow::bail!("no PEM public key found");
    }
    Ok(keys)
}

/// Verifies tokens: HS256 with the shared secret (when one is set), EdDSA,
/// ES256 and RS256 with the configured public keys, and API keys.
#[derive(Clone)]
pub struct Authenticator {
    secret: Option<DecodingKey>,
    public: Vec<PublicKey>,
    keys: Arc<KeyStore>,
}

/// `exp` and `nbf` checked when present, to the second; no claim required
/// (the original SDKs send tokens without `exp`).
fn validation(algorithm: Algorithm) -> Validation {
    let mut v = Validation::new(algorithm);
    v.algorithms = vec![algorithm];
    v.required_spec_claims.clear();
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = false;
    v.leeway = 0;
    v
}

impl Authenticator {
    pub fn new(secret: Option<&str>, public: Vec<PublicKey>, keys: Arc<KeyStore>) -> Self {
        Authenticator {
            secret: secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
            public,
            keys,
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
        if token.starts_with(PREFIX) {
            return self.verify_key(token);
        }
        let invalid =
            |e: jsonwebtoken::errors::Error| ApiError::Unauthorized(format!("invalid token: {e}"));
        let header = decode_header(token).map_err(invalid)?;
        let claims = match header.alg {
            Algorithm::HS256 => {
                let key = self.secret.as_ref().ok_or_else(|| {
                    ApiError::Unauthorized(
                        "HS256 tokens are not accepted here: sign with a configured public key"
                            .into(),
                    )
                })?;
                decode::<Value>(token, key, &validation(Algorithm::HS256)).map_err(invalid)?
            }
            alg @ (Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256) => {
                let candidates: Vec<&PublicKey> = self
                    .public
                    .iter()
                    .filter(|k| k.algorithm == alg)
                    .filter(|k| header.kid.as_ref().is_none_or(|kid| *kid == k.kid))
                    .collect();
                if candidates.is_empty() {
                    return Err(ApiError::Unauthorized(format!(
                        "no {alg:?} public key{} is configured",
                        header
                            .kid
                            .as_ref()
                            .map(|k| format!(" with kid `{k}`"))
                            .unwrap_or_default()
                    )));
                }
                let mut last = None;
                let mut found = None;
                for k in candidates {
                    match decode::<Value>(token, &k.key, &validation(alg)) {
                        Ok(d) => {
                            found = Some(d);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match (found, last) {
                    (Some(d), _) => d,
                    (None, Some(e)) => return Err(invalid(e)),
                    (None, None) => return Err(ApiError::Unauthorized("invalid token".into())),
                }
            }
            other => {
                return Err(ApiError::Unauthorized(format!(
                    "tokens signed with {other:?} are not accepted"
                )))
            }
        }
        .claims;
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

impl Authenticator {
    /// An API key acts as a token with its scope and topics; its name is the author.
    fn verify_key(&self, presented: &str) -> Result<Principal, ApiError> {
        let key = self
            .keys
            .find(presented)
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked API key".into()))?;
        if key
            .expires_at
            .is_some_and(|t| t <= chrono::Utc::now().naive_utc())
        {
            return Err(ApiError::Unauthorized("this API key has expired".into()));
        }
        let topics = key.topics.as_deref().map(|text| {
            serde_json::from_str::<Vec<String>>(text)
                .unwrap_or_default()
                .iter()
                .filter_map(|p| TopicPattern::parse(p).ok())
                .collect()
        });
        Ok(Principal {
            author: Some(key.name),
            scopes: Some(key.scope.split_whitespace().map(str::to_string).collect()),
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
