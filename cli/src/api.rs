//! The hub's HTTP API as the CLI calls it: one client, one credential, and
//! errors that carry the API's `error.code` and `message`.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde_json::Value;

use crate::token;

/// How long an ordinary call may take (replays and the live stream have no limit).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong; shown on stderr before a non-zero exit.
#[derive(Debug)]
pub enum Error {
    /// The hub answered with an error document.
    Api {
        status: u16,
        code: String,
        message: String,
        position: Option<u64>,
    },
    /// Anything else: the hub cannot be reached, bad input, local I/O.
    Other(String),
}

impl Error {
    pub fn other(message: impl Into<String>) -> Self {
        Error::Other(message.into())
    }

    #[cfg(test)]
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            Error::Other(_) => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::Other(_) => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Api {
                status,
                code,
                message,
                position,
            } => {
                write!(f, "{code}: {message}")?;
                if let Some(p) = position {
                    write!(f, " (at position {p})")?;
                }
                write!(f, " [HTTP {status}]")
            }
            Error::Other(m) => f.write_str(m),
        }
    }
}

/// A reqwest error with its causes, which its own text leaves out.
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The credential sent with every call.
#[derive(Clone)]
pub enum Auth {
    /// `--token` / `SWITCH_TOKEN`: a JWT or an API key.
    Static(String),
    /// `SWITCH_JWT_SECRET`: a fresh admin token is minted for each call.
    Mint(String),
    None,
}

#[derive(Clone)]
pub struct Hub {
    base: Url,
    auth: Auth,
    http: reqwest::Client,
}

impl Hub {
    pub fn new(url: &str, auth: Auth) -> Result<Self, Error> {
        let base = Url::parse(url.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| Error::other(format!("invalid hub URL `{url}` (--url / SWITCH_URL)")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("switch-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::other(format!("HTTP client: {}", describe(&e))))?;
        Ok(Hub { base, auth, http })
    }

    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    pub fn has_credential(&self) -> bool {
        !matches!(self.auth, Auth::None)
    }

    /// The `Authorization` value for the next call, if any.
    pub fn bearer(&self) -> Result<Option<String>, Error> {
        Ok(match &self.auth {
            Auth::Static(t) => Some(format!("Bearer {t}")),
            Auth::Mint(secret) => Some(format!("Bearer {}", token::mint(secret)?)),
            Auth::None => None,
        })
    }

    /// A request to `path` (absolute within the hub) with the credential.
    pub fn request(&self, method: Method, path: &str) -> Result<RequestBuilder, Error> {
        let url = format!("{}{path}", self.base());
        let mut rb = self.http.request(method, url);
        if let Some(b) = self.bearer()? {
            rb = rb.header(reqwest::header::AUTHORIZATION, b);
        }
        Ok(rb)
    }

    /// Sends an ordinary call (with the usual timeout) and reads its JSON answer.
    pub async fn call(&self, rb: RequestBuilder) -> Result<Value, Error> {
        self.send(rb.timeout(CALL_TIMEOUT)).await
    }

    /// Sends a call that may run long (no overall timeout).
    pub async fn send(&self, rb: RequestBuilder) -> Result<Value, Error> {
        let resp = rb.send().await.map_err(|e| self.unreachable(&e))?;
        read_answer(resp).await
    }

    pub fn unreachable(&self, e: &reqwest::Error) -> Error {
        Error::other(format!(
            "cannot reach the hub at {}: {}",
            self.base(),
            describe(e)
        ))
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Error> {
        self.call(self.request(Method::GET, path)?.query(query))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.call(self.request(Method::POST, path)?.json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, Error> {
        self.call(self.request(Method::DELETE, path)?).await
    }
}

/// The JSON of a successful answer (`null` when it has no body), or the
/// API's error.
pub async fn read_answer(resp: reqwest::Response) -> Result<Value, Error> {
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| Error::other(format!("reading the answer: {}", describe(&e))))?;
    if !status.is_success() {
        return Err(api_error(status, &text));
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text)
        .map_err(|e| Error::other(format!("the hub answered {status} with invalid JSON: {e}")))
}

/// An error answer as an [`Error::Api`]; a body that is not the API's error
/// document still gives the status and its text.
pub fn api_error(status: StatusCode, text: &str) -> Error {
    let doc: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let err = &doc["error"];
    let code = err["code"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| default_code(status).to_string());
    let message = err["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            let t = text.trim();
            if t.is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                t.chars().take(500).collect()
            }
        });
    Error::Api {
        status: status.as_u16(),
        code,
        message,
        position: err["position"].as_u64(),
    }
}

fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        413 => "payload_too_large",
        503 => "unavailable",
        _ => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_document_is_read() {
        let e = api_error(
            StatusCode::BAD_REQUEST,
            r#"{"error": {"code": "invalid_request", "message": "filter_expression: bad", "position": 4}}"#,
        );
        assert_eq!(
            e.to_string(),
            "invalid_request: filter_expression: bad (at position 4) [HTTP 400]"
        );
    }

    #[test]
    fn other_bodies_keep_status_and_text() {
        let e = api_error(StatusCode::BAD_GATEWAY, "upstream down");
        assert_eq!(e.code(), Some("internal"));
        assert_eq!(e.to_string(), "internal: upstream down [HTTP 502]");
        let e = api_error(StatusCode::UNAUTHORIZED, "");
        assert_eq!(e.to_string(), "unauthorized: Unauthorized [HTTP 401]");
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(Hub::new("ftp://x", Auth::None).is_err());
        assert!(Hub::new("not a url", Auth::None).is_err());
        let hub = Hub::new("http://127.0.0.1:9/", Auth::None).unwrap();
        assert_eq!(hub.base(), "http://127.0.0.1:9");
    }
}
