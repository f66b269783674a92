//! Builds the HTTP request of one delivery: URL with path params and query,
//! forwarded headers, JSON body and the Standard Webhooks signature.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use switch_core::message::Message;
use switch_core::signature::sign;

/// Characters escaped in a substituted path parameter (RFC 3986 segment).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// Headers a publisher cannot forward: hop-by-hop ones, and those we set.
fn is_reserved(name: &str) -> bool {
    const HOP: [&str; 11] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
    ];
    let lower = name.to_ascii_lowercase();
    HOP.contains(&lower.as_str())
        || lower == "content-length"
        || lower.starts_with("webhook-")
        || lower.starts_with("x-switch-")
}

/// A request ready to send, also what a dead letter stores.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub method: &'static str,
    /// Parsed once here; the HTTP client takes it as it is.
    pub url: url::Url,
    pub headers: Vec<(String, String)>,
    /// Shared, so each send hands the client the body without copying it.
    pub body: bytes::Bytes,
}

/// Replaces each `:name` in the path and query of `target` by the URL-encoded
/// `path_params[name]`; unknown names are left as they are.
pub fn substitute_path(
    target: &str,
    params: &std::collections::BTreeMap<String, String>,
) -> String {
    // Only after the authority, so `host:8080` is never touched.
    let path_start = target
        .find("://")
        .map(|i| i + 3)
        .and_then(|i| target[i..].find('/').map(|j| i + j))
        .unwrap_or(target.len());
    let (head, path) = target.split_at(path_start);
    let mut out = String::with_capacity(target.len() + 16);
    out.push_str(head);
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b':'
            && bytes
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            let name = &path[start..end];
            if let Some(v) = params.get(name) {
                out.extend(utf8_percent_encode(v, SEGMENT));
                i = end;
                continue;
            }
        }
        let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Secrets to sign with: the current one, and the previous one during its grace period.
pub struct Signing<'a> {
    pub secret: &'a str,
    pub previous: Option<&'a str>,
}

pub fn prepare(
    message: &Message,
    target_url: &str,
    signing: &Signing,
    attempt: u32,
    now_secs: i64,
) -> Result<Prepared, String> {
    let substituted = substitute_path(target_url, &message.path_params);
    let mut url = url::Url::parse(&substituted)
        .map_err(|e| format!("target URL `{substituted}` is invalid: {e}"))?;
    if !message.query_params.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &message.query_params {
            pairs.append_pair(k, v);
        }
    }
    let body = serde_json::to_vec(&message.body).map_err(|e| e.to_string())?;
    let mut headers: Vec<(String, String)> = message
        .headers
        .iter()
        .filter(|(k, _)| !is_reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let mut signature = sign(signing.secret, &message.id, now_secs, &body);
    if let Some(prev) = signing.previous {
        signature.push(' ');
        signature.push_str(&sign(prev, &message.id, now_secs, &body));
    }
    headers.push(("webhook-id".into(), message.id.clone()));
    headers.push(("webhook-timestamp".into(), now_secs.to_string()));
    headers.push(("webhook-signature".into(), signature));
    headers.push(("x-switch-topic".into(), message.topic.clone()));
    headers.push(("x-switch-attempt".into(), attempt.to_string()));
    if let Some(author) = &message.author {
        headers.push(("x-switch-author".into(), author.clone()));
    }
    Ok(Prepared {
        method: message.http_method.as_str(),
        url,
        headers,
        body: body.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use switch_core::message::HttpMethod;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn path_params_are_substituted_and_encoded() {
        let p = params(&[("id", "42"), ("name", "a b/c")]);
        assert_eq!(
            substitute_path("http://localhost:9000/hook/:id", &p),
            "http://localhost:9000/hook/42"
        );
        assert_eq!(
            substitute_path("http://h/:name/x/:id", &p),
            "http://h/a%20b%2Fc/x/42"
        );
        assert_eq!(
            substitute_path("http://h/:unknown", &p),
            "http://h/:unknown"
        );
        assert_eq!(substitute_path("http://h:80", &p), "http://h:80");
    }

    #[test]
    fn prepared_request_carries_every_header() {
        let m = Message {
            id: "msg_1".into(),
            topic: "orders.created".into(),
            author: Some("shop".into()),
            body: serde_json::json!({"a": 1}),
            headers: params(&[
                ("X-Trace", "abc"),
                ("Host", "evil"),
                ("Connection", "close"),
                ("webhook-id", "forged"),
            ]),
            query_params: params(&[("source", "web app")]),
            path_params: params(&[("id", "7")]),
            http_method: HttpMethod::Put,
            request_id: None,
            published_at_ms: 0,
            extra: Default::default(),
        };
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let p = prepare(
            &m,
            "http://127.0.0.1:1/hook/:id?x=1",
            &Signing {
                secret,
                previous: Some(secret),
            },
            2,
            1000,
        )
        .unwrap();
        assert_eq!(p.method, "PUT");
        assert_eq!(
            p.url.as_str(),
            "http://127.0.0.1:1/hook/7?x=1&source=web+app"
        );
        let h = |name: &str| {
            p.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(h("x-trace"), ["abc"]);
        assert!(h("host").is_empty() && h("connection").is_empty());
        assert_eq!(h("webhook-id"), ["msg_1"]);
        assert_eq!(h("x-switch-attempt"), ["2"]);
        assert_eq!(h("x-switch-author"), ["shop"]);
        assert_eq!(h("content-type"), ["application/json"]);
        let sig = h("webhook-signature")[0];
        let expected = sign(secret, "msg_1", 1000, br#"{"a":1}"#);
        assert_eq!(sig, format!("{expected} {expected}"));
    }
}
