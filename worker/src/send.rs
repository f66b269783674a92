//! Sends a prepared request and classifies what happened. The outcome is data.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue};

use crate::request::Prepared;

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Timeout,
    Connect,
    Dns,
    HttpStatus,
    Request,
    /// The target's address is refused by the target policy.
    Blocked,
    /// The subscriber is disabled.
    Disabled,
    /// The target URL cannot be built.
    InvalidUrl,
    /// The subscriber no longer exists.
    SubscriberDeleted,
    /// The job keeps crashing the workers delivering it.
    Poison,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::Dns => "dns",
            FailureKind::HttpStatus => "http_status",
            FailureKind::Request => "request",
            FailureKind::Blocked => "blocked",
            FailureKind::Disabled => "disabled",
            FailureKind::InvalidUrl => "invalid_url",
            FailureKind::SubscriberDeleted => "subscriber_deleted",
            FailureKind::Poison => "poison",
        }
    }

    /// Whether a failure of this kind says the endpoint is unhealthy (and so
    /// counts toward opening its circuit).
    pub fn counts_against_endpoint(self) -> bool {
        matches!(
            self,
            FailureKind::Timeout
                | FailureKind::Connect
                | FailureKind::Dns
                | FailureKind::HttpStatus
                | FailureKind::Request
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    pub status: Option<u16>,
    pub message: String,
    /// From `Retry-After` on 429 and 503.
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    Delivered(u16),
    Failed(Failure),
}

impl Failure {
    /// A failure found before any request was sent.
    pub fn before_sending(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            status: None,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Keep at most this much of a failing response for the log.
const ERROR_BODY_BYTES: usize = 512;
/// Read (and drop) at most this much of a response so the connection can be reused.
const DRAIN_BYTES: usize = 64 * 1024;

fn classify(e: &reqwest::Error) -> FailureKind {
    if crate::target::is_blocked(e) {
        return FailureKind::Blocked;
    }
    if e.is_timeout() {
        return FailureKind::Timeout;
    }
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        chain.push_str(&s.to_string().to_ascii_lowercase());
        chain.push(' ');
        source = s.source();
    }
    if chain.contains("dns error")
        || chain.contains("failed to lookup address")
        || chain.contains("name or service not known")
    {
        FailureKind::Dns
    } else if e.is_connect()
        || chain.contains("connection refused")
        || chain.contains("connection reset")
    {
        FailureKind::Connect
    } else if chain.contains("timed out") {
        FailureKind::Timeout
    } else {
        FailureKind::Request
    }
}

fn error_text(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    switch_core::db::storable(&out).into_owned()
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.timestamp() - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(delta.max(0) as u64))
}

/// Sends one attempt; the whole exchange (up to the response body) is bounded by `timeout`.
pub async fn send(client: &reqwest::Client, req: &Prepared, timeout: Duration) -> (Sent, Duration) {
    let started = Instant::now();
    let sent = tokio::time::timeout(timeout, exchange(client, req, timeout)).await;
    let outcome = match sent {
        Ok(outcome) => outcome,
        Err(_) => Sent::Failed(Failure {
            kind: FailureKind::Timeout,
            status: None,
            message: format!("no complete answer within {} ms", timeout.as_millis()),
            retry_after: None,
        }),
    };
    (outcome, started.elapsed())
}

async fn exchange(client: &reqwest::Client, req: &Prepared, timeout: Duration) -> Sent {
    let method =
        reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut builder = client
        .request(method, req.url.clone())
        .timeout(timeout)
        .body(req.body.clone());
    for (k, v) in &req.headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(name), Ok(value)) => builder = builder.header(name, value),
            // Refused at publish; a job queued before that check still says why.
            _ => {
                return Sent::Failed(Failure {
                    kind: FailureKind::Request,
                    status: None,
                    message: format!(
                        "header `{}` cannot be sent: not a valid HTTP header",
                        k.escape_debug()
                    ),
                    retry_after: None,
                })
            }
        }
    }
    let resp = match builder.send().await {
        Ok(r) => r,
        Err(e) => {
            return Sent::Failed(Failure {
                kind: classify(&e),
                status: None,
                message: error_text(&e),
                retry_after: None,
            })
        }
    };
    let status = resp.status().as_u16();
    let retry_after = if status == 429 || status == 503 {
        resp.headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    } else {
        None
    };
    let mut kept = Vec::new();
    let mut read = 0usize;
    let mut resp = resp;
    loop {
        match resp.chunk().await {
            Ok(None) => break,
            Ok(Some(c)) => {
                if kept.len() < ERROR_BODY_BYTES {
                    let take = (ERROR_BODY_BYTES - kept.len()).min(c.len());
                    kept.extend_from_slice(&c[..take]);
                }
                read += c.len();
                if read >= DRAIN_BYTES {
                    break;
                }
            }
            Err(e) if (200..300).contains(&status) => {
                tracing::debug!(error = %e, "response body cut short after a 2xx");
                break;
            }
            Err(e) => {
                return Sent::Failed(Failure {
                    kind: classify(&e),
                    status: Some(status),
                    message: error_text(&e),
                    retry_after,
                })
            }
        }
    }
    if (200..300).contains(&status) {
        Sent::Delivered(status)
    } else {
        // Whatever bytes the receiver sent (NUL included) end up as storable text.
        let lossy = String::from_utf8_lossy(&kept);
        let text = switch_core::db::storable(&lossy);
        Sent::Failed(Failure {
            kind: FailureKind::HttpStatus,
            status: Some(status),
            message: format!("HTTP {status}: {}", text.trim()),
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
