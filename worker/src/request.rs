//! Builds the HTTP request of one delivery: URL with path params and query,
//! forwarded headers, JSON body, the Standard Webhooks signature and the W3C
//! `traceparent`.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use switch_core::message::Message;
use switch_core::signature::sign;
use switch_core::trace::{traceparent, SpanId};

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

/// Headers a publisher cannot forward: hop-by-hop ones, and those we set
/// (a forwarded `traceparent` names the message's trace instead, see
/// [`Message::traced`]).
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
        || lower == "traceparent"
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
    /// The span of this attempt, as its `traceparent` header names it.
    pub span: SpanId,
}

/// Replaces each `:name` in the path and query of `target` by the URL-encoded
/// `path_params[name]`; unknown names are left as they are. A value made only
/// of dots has every dot encoded (`%2E%2E`), so it is never written as a bare
/// `.` or `..` segment.
pub fn substitute_path(
    target: &str,
    params: &std::collections::BTreeMap<String, String>,
) -> String {
    substitute(target, params).0
}

/// A path segment URL parsers remove or resolve (WHATWG URL, which the `url`
/// crate follows, treats `%2e` as a dot here too).
fn is_dot_segment(segment: &str) -> bool {
    matches!(
        segment.to_ascii_lowercase().as_str(),
        "." | "%2e" | ".." | ".%2e" | "%2e." | "%2e%2e"
    )
}

/// Appends one substituted value.
fn push_value(out: &mut String, v: &str) {
    if !v.is_empty() && v.bytes().all(|b| b == b'.') {
        for _ in 0..v.len() {
            out.push_str("%2E");
        }
    } else {
        out.extend(utf8_percent_encode(v, SEGMENT));
    }
}

/// [`substitute_path`], and the first path param whose value made a path
/// segment that is a dot segment (where the target's own segment was not).
fn substitute<'a>(
    target: &str,
    params: &'a std::collections::BTreeMap<String, String>,
) -> (String, Option<(&'a str, &'a str)>) {
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
    let mut in_path = true;
    // Where the current segment starts, in `path` and in `out`, and the
    // first param substituted into it.
    let (mut seg_in, mut seg_out) = (0, out.len());
    let mut seg_param: Option<(&str, &str)> = None;
    let mut dot_param = None;
    let mut i = 0;
    loop {
        let at_end = i >= bytes.len();
        if in_path && (at_end || matches!(bytes[i], b'/' | b'?' | b'#')) {
            if let Some(p) = seg_param.take() {
                if dot_param.is_none()
                    && is_dot_segment(&out[seg_out..])
                    && !is_dot_segment(&path[seg_in..i])
                {
                    dot_param = Some(p);
                }
            }
            if !at_end && bytes[i] != b'/' {
                in_path = false;
            }
            seg_in = i + 1;
            seg_out = out.len() + 1;
        }
        if at_end {
            break;
        }
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
            if let Some((k, v)) = params.get_key_value(name) {
                push_value(&mut out, v);
                if in_path && seg_param.is_none() {
                    seg_param = Some((k.as_str(), v.as_str()));
                }
                i = end;
                continue;
            }
        }
        let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    (out, dot_param)
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
    let (substituted, dot_param) = substitute(target_url, &message.path_params);
    if let Some((name, value)) = dot_param {
        // URL parsers resolve `.` and `..` segments, encoded or not, so the
        // request would go to another path (`/a/:id/b` with `..` is `/b`):
        // better no delivery than one to an address nobody subscribed.
        return Err(format!(
            "path param `{name}` is `{value}`, which would make a `.` or `..` segment of `{target_url}` and change the path it addresses"
        ));
    }
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
    // The message's trace, a span of this attempt's own.
    let span = SpanId::generate();
    headers.push(("traceparent".into(), traceparent(message.trace(), span)));
    Ok(Prepared {
        method: message.http_method.as_str(),
        url,
        headers,
        body: body.into(),
        span,
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
    fn dot_values_are_encoded_and_never_change_the_path() {
        let p = params(&[
            ("up", ".."),
            ("here", "."),
            ("three", "..."),
            ("mixed", "a..b"),
        ]);
        assert_eq!(
            substitute_path("http://h/private/:up/tail", &p),
            "http://h/private/%2E%2E/tail"
        );
        assert_eq!(
            substitute_path("http://h/private/:here/tail", &p),
            "http://h/private/%2E/tail"
        );
        assert_eq!(
            substitute_path("http://h/private/:three/tail?q=:up", &p),
            "http://h/private/%2E%2E%2E/tail?q=%2E%2E"
        );
        assert_eq!(substitute_path("http://h/f/:mixed", &p), "http://h/f/a..b");

        let message = |path_params| Message {
            id: "msg_1".into(),
            topic: "t".into(),
            author: None,
            body: serde_json::json!({}),
            headers: BTreeMap::new(),
            query_params: BTreeMap::new(),
            path_params,
            http_method: HttpMethod::Post,
            request_id: None,
            ordering_key: None,
            trace_id: None,
            published_at_ms: 0,
            extra: Default::default(),
        };
        let signing = Signing {
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            previous: None,
        };
        let send = |target: &str, pairs: &[(&str, &str)]| {
            prepare(&message(params(pairs)), target, &signing, 1, 0)
        };
        // `..` and `.` cannot be carried (the URL parser resolves them even
        // encoded): refused, never sent to `/tail`.
        for (target, pairs) in [
            ("http://h/private/:id/tail", &[("id", "..")][..]),
            ("http://h/private/:id/tail", &[("id", ".")][..]),
            ("http://h/private/:id", &[("id", "..")][..]),
            ("http://h/private/:a:b/tail", &[("a", "."), ("b", ".")][..]),
            ("http://h/private/.:id/tail", &[("id", ".")][..]),
        ] {
            let e = send(target, pairs).expect_err(target);
            assert!(e.contains("path param"), "{e}");
        }
        // Everything else keeps its segment.
        let ok = |target: &str, pairs: &[(&str, &str)]| {
            send(target, pairs).unwrap().url.as_str().to_string()
        };
        assert_eq!(
            ok("http://h/private/:id/tail", &[("id", "...")]),
            "http://h/private/%2E%2E%2E/tail"
        );
        assert_eq!(
            ok("http://h/private/:id/tail", &[("id", "a/../b")]),
            "http://h/private/a%2F..%2Fb/tail"
        );
        assert_eq!(
            ok("http://h/private/:id.json", &[("id", ".")]),
            "http://h/private/%2E.json"
        );
        // The query is no path: dots there are harmless.
        assert_eq!(
            ok("http://h/x?id=:id", &[("id", "..")]),
            "http://h/x?id=%2E%2E"
        );
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
            ordering_key: None,
            trace_id: None,
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
        let trace = h("traceparent");
        assert_eq!(trace.len(), 1, "{trace:?}");
        assert_eq!(
            switch_core::trace::TraceId::from_traceparent(trace[0]),
            Some(m.trace())
        );
    }

    #[test]
    fn each_attempt_has_a_span_of_its_own_in_the_messages_trace() {
        let forged = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let m = Message {
            id: "msg_1".into(),
            topic: "t".into(),
            author: None,
            body: serde_json::json!({}),
            headers: params(&[("traceparent", forged)]),
            query_params: BTreeMap::new(),
            path_params: BTreeMap::new(),
            http_method: HttpMethod::Post,
            request_id: None,
            ordering_key: None,
            trace_id: switch_core::trace::TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736"),
            published_at_ms: 0,
            extra: Default::default(),
        };
        let signing = Signing {
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            previous: None,
        };
        let header = |attempt| {
            let p = prepare(&m, "http://h/x", &signing, attempt, 0).unwrap();
            let values: Vec<String> = p
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
                .map(|(_, v)| v.clone())
                .collect();
            assert_eq!(values.len(), 1, "only ours is sent: {values:?}");
            values[0].clone()
        };
        let (first, second) = (header(1), header(2));
        let parts = |h: &str| h.split('-').map(str::to_string).collect::<Vec<_>>();
        let (a, b) = (parts(&first), parts(&second));
        assert_eq!(a.len(), 4, "{first}");
        assert_eq!(
            (a[0].as_str(), a[1].as_str(), a[3].as_str()),
            ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
        );
        assert!(a[2].len() == 16 && a[2].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a[1], b[1], "one trace");
        assert_ne!(a[2], b[2], "a span per attempt");
    }
}
