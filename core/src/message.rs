//! A published message: what publishers send (native or legacy form) and what
//! every delivery job carries.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::topic::Topic;
use crate::trace::TraceId;

/// HTTP methods a delivery may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    /// Case-insensitive: the legacy SDK documents lower-case methods.
    pub fn parse(src: &str) -> Option<Self> {
        Some(match src.to_ascii_uppercase().as_str() {
            "GET" => HttpMethod::Get,
            "POST" => HttpMethod::Post,
            "PUT" => HttpMethod::Put,
            "PATCH" => HttpMethod::Patch,
            "DELETE" => HttpMethod::Delete,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }
}

/// The request part of a message, delivered to every matching subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub topic: String,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default = "empty_object")]
    pub body: Value,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub query_params: BTreeMap<String, String>,
    #[serde(default)]
    pub path_params: BTreeMap<String, String>,
    #[serde(default)]
    pub http_method: HttpMethod,
    /// Id of the publish request, so each delivery links back to it in logs.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Unix milliseconds of the publish.
    #[serde(default)]
    pub published_at_ms: i64,
    /// Messages of one subscriber with the same key are delivered one at a
    /// time, in publish order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// The W3C trace every delivery of this message belongs to (see
    /// [`Message::traced`]). Messages queued before trace ids existed have
    /// none; [`Message::trace`] answers for them.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::trace::lenient"
    )]
    pub trace_id: Option<TraceId>,
    /// Keys of a legacy `Payload` beside the five known ones: the original
    /// filters could read them (`data["special_key"]`). Read by filters at
    /// publish time only; not delivered.
    #[serde(skip)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// Sets the trace of a message being published: the publish request's own
    /// `traceparent` (`incoming`, when it was valid), else a valid
    /// `traceparent` among the headers it forwards, else a new trace.
    pub fn traced(mut self, incoming: Option<TraceId>) -> Self {
        let forwarded = || {
            self.headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("traceparent"))
                .and_then(|(_, value)| TraceId::from_traceparent(value))
        };
        self.trace_id = Some(
            incoming
                .or_else(forwarded)
                .unwrap_or_else(TraceId::generate),
        );
        self
    }

    /// The trace id its deliveries send: its own, or for a message without
    /// one, one taken from its id (the same at every attempt).
    pub fn trace(&self) -> TraceId {
        self.trace_id
            .unwrap_or_else(|| TraceId::of_message_id(&self.id))
    }
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// A publish request after validation, before it has an id.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishRequest {
    pub topic: Topic,
    pub body: Value,
    pub headers: BTreeMap<String, String>,
    pub query_params: BTreeMap<String, String>,
    pub path_params: BTreeMap<String, String>,
    pub http_method: HttpMethod,
    /// See [`Message::ordering_key`].
    pub ordering_key: Option<String>,
    /// See [`Message::extra`].
    pub extra: Map<String, Value>,
}

/// Longest ordering key, in bytes.
pub const MAX_ORDERING_KEY: usize = 255;

/// An ordering key as given (body field or `Ordering-Key` header): 1 to 255
/// bytes, no control characters.
pub fn check_ordering_key(key: &str) -> Result<(), PublishError> {
    if key.is_empty() || key.len() > MAX_ORDERING_KEY {
        return err(format!(
            "`ordering_key` must be 1 to {MAX_ORDERING_KEY} bytes"
        ));
    }
    if key.chars().any(char::is_control) {
        return err("`ordering_key` cannot contain control characters");
    }
    Ok(())
}

/// The keys of a legacy `Payload` that make the request.
const LEGACY_PARTS: [&str; 5] = [
    "body",
    "headers",
    "query_params",
    "path_params",
    "http_method",
];

/// What is wrong with a publish body; becomes `400 invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PublishError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, PublishError> {
    Err(PublishError(msg.into()))
}

/// Turns `{"a": 1, "b": "x"}` into string pairs; scalars are written as text
/// (legacy publishers send `{"id": 1}` as path params).
fn string_map(
    field: &str,
    value: Option<&Value>,
) -> Result<BTreeMap<String, String>, PublishError> {
    let mut out = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => String::new(),
                    _ => return err(format!("`{field}.{k}` must be a string, number or boolean")),
                };
                out.insert(k.clone(), text);
            }
        }
        Some(_) => return err(format!("`{field}` must be an object of names to values")),
    }
    Ok(out)
}

/// A `tchar` of RFC 9110: the only bytes an HTTP header name may hold.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Longest header name HTTP clients accept.
const MAX_HEADER_NAME: usize = 65_535;

/// Why `value` cannot be sent as an HTTP header value, if it cannot: the
/// bytes HTTP allows are visible characters, space, tab and non-ASCII text;
/// control characters (NUL, line breaks, DEL, …) are refused by every client
/// (and would split the request if they were not).
pub fn header_value_problem(value: &str) -> Option<String> {
    value
        .bytes()
        .position(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
        .map(|i| format!("control character {:#04x} at byte {i}", value.as_bytes()[i]))
}

/// Refuses a published header the delivery could not send: without this
/// the HTTP client drops it silently at every attempt.
fn check_header(name: &str, value: &str) -> Result<(), PublishError> {
    if name.is_empty() || name.len() > MAX_HEADER_NAME || !name.bytes().all(is_token_byte) {
        return err(format!(
            "header name `{}` is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)",
            name.escape_default()
        ));
    }
    if let Some(problem) = header_value_problem(value) {
        return err(format!(
            "header `{name}` has a value that is not valid in HTTP: {problem}"
        ));
    }
    Ok(())
}

/// Refuses an author (a token's `author` claim or an API key's name) that
/// could not be sent as `x-switch-author`: subscribers would get the message
/// without its publisher, and nothing would say why.
pub fn check_author(author: &str) -> Result<(), PublishError> {
    match header_value_problem(author) {
        None => Ok(()),
        Some(problem) => err(format!(
            "the token's author `{}` cannot be sent as the x-switch-author header ({problem}); use a credential whose author is printable text",
            author.escape_default()
        )),
    }
}

fn request_from_parts(
    topic: &Value,
    parts: &Map<String, Value>,
) -> Result<PublishRequest, PublishError> {
    let topic = match topic {
        Value::String(s) => Topic::parse(s).map_err(|e| PublishError(e.0))?,
        Value::Null => return err("`topic` is required"),
        _ => return err("`topic` must be a string"),
    };
    let http_method = match parts.get("http_method") {
        None | Some(Value::Null) => HttpMethod::Post,
        Some(Value::String(m)) => match HttpMethod::parse(m) {
            Some(m) => m,
            None => {
                return err(format!(
                    "`http_method` `{m}` is not one of GET, POST, PUT, PATCH, DELETE"
                ))
            }
        },
        Some(_) => return err("`http_method` must be a string"),
    };
    let headers = string_map("headers", parts.get("headers"))?;
    for (name, value) in &headers {
        check_header(name, value)?;
    }
    Ok(PublishRequest {
        topic,
        body: match parts.get("body") {
            None | Some(Value::Null) => empty_object(),
            Some(v) => v.clone(),
        },
        headers,
        query_params: string_map("query_params", parts.get("query_params"))?,
        path_params: string_map("path_params", parts.get("path_params"))?,
        http_method,
        ordering_key: None,
        extra: Map::new(),
    })
}

impl PublishRequest {
    /// Parses either body form of `POST /publish`.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, PublishError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| PublishError(format!("the body is not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Parses either form from JSON already read (an item of a batch).
    pub fn from_value(value: Value) -> Result<Self, PublishError> {
        let Value::Object(obj) = value else {
            return err("the body must be a JSON object");
        };
        if obj.contains_key("Payload") || obj.contains_key("Topic") {
            return Self::from_legacy(&obj);
        }
        const KNOWN: [&str; 7] = [
            "topic",
            "body",
            "headers",
            "query_params",
            "path_params",
            "http_method",
            "ordering_key",
        ];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return err(format!(
                "unknown field `{k}`; expected one of {}",
                KNOWN.join(", ")
            ));
        }
        let mut request = request_from_parts(obj.get("topic").unwrap_or(&Value::Null), &obj)?;
        request.ordering_key = match obj.get("ordering_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => {
                check_ordering_key(k)?;
                Some(k.clone())
            }
            Some(_) => return err("`ordering_key` must be a string"),
        };
        Ok(request)
    }

    /// The original SDKs' form: `{"Topic", "Payload": base64(JSON object)}`.
    fn from_legacy(obj: &Map<String, Value>) -> Result<Self, PublishError> {
        let topic = obj.get("Topic").unwrap_or(&Value::Null);
        let payload = match obj.get("Payload") {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => return err("`Payload` is required"),
            Some(_) => return err("`Payload` must be a base64 string"),
        };
        let engine = base64::engine::general_purpose::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let decoded = engine
            .decode(payload.trim())
            .or_else(|_| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload.trim().trim_end_matches('='))
            })
            .map_err(|e| PublishError(format!("`Payload` is not valid base64: {e}")))?;
        let inner: Value = serde_json::from_slice(&decoded)
            .map_err(|e| PublishError(format!("`Payload` does not decode to JSON: {e}")))?;
        let Value::Object(parts) = inner else {
            return err("`Payload` must decode to a JSON object with body, headers, query_params, path_params, http_method");
        };
        let mut request = request_from_parts(topic, &parts)?;
        request.extra = parts
            .into_iter()
            .filter(|(k, _)| !LEGACY_PARTS.contains(&k.as_str()))
            .collect();
        Ok(request)
    }

    /// Gives the request its id and author, making the message jobs carry.
    pub fn into_message(
        self,
        id: String,
        author: Option<String>,
        request_id: Option<String>,
        now_ms: i64,
    ) -> Message {
        Message {
            id,
            topic: self.topic.as_str().to_string(),
            author,
            body: self.body,
            headers: self.headers,
            query_params: self.query_params,
            path_params: self.path_params,
            http_method: self.http_method,
            request_id,
            published_at_ms: now_ms,
            ordering_key: self.ordering_key,
            trace_id: None,
            extra: self.extra,
        }
    }
}

/// A new message id: time-ordered and unique across servers.
pub fn new_message_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<PublishRequest, PublishError> {
        PublishRequest::from_json_bytes(v.to_string().as_bytes())
    }

    #[test]
    fn native_form_with_defaults() {
        let r = parse(serde_json::json!({"topic": "orders.created"})).unwrap();
        assert_eq!(r.body, serde_json::json!({}));
        assert_eq!(r.http_method, HttpMethod::Post);
        let r = parse(
            serde_json::json!({"topic": "a", "body": [1, 2], "http_method": "put",
            "path_params": {"id": 42}, "headers": {"X-T": "v"}}),
        )
        .unwrap();
        assert_eq!(r.http_method, HttpMethod::Put);
        assert_eq!(r.path_params["id"], "42");
        assert_eq!(r.body, serde_json::json!([1, 2]));
    }

    #[test]
    fn legacy_form() {
        let inner = serde_json::json!({"body": {"hello": "world"}, "http_method": "post"});
        let b64 = base64::engine::general_purpose::STANDARD.encode(inner.to_string());
        let r = parse(serde_json::json!({"Topic": "hellow", "Payload": b64})).unwrap();
        assert_eq!(r.topic.as_str(), "hellow");
        assert_eq!(r.body, serde_json::json!({"hello": "world"}));
        assert!(r.extra.is_empty());
    }

    #[test]
    fn legacy_payload_keys_beyond_the_request_are_kept_for_filters() {
        let inner = serde_json::json!({"body": {}, "special_key": "special value", "n": {"a": 1}});
        let b64 = base64::engine::general_purpose::STANDARD.encode(inner.to_string());
        let r = parse(serde_json::json!({"Topic": "t", "Payload": b64})).unwrap();
        assert_eq!(r.extra["special_key"], "special value");
        assert_eq!(r.extra["n"], serde_json::json!({"a": 1}));
        assert!(!r.extra.contains_key("body"));
        let m = r.into_message("msg_1".into(), None, None, 0);
        let json = serde_json::to_value(&m).unwrap();
        assert!(json.get("extra").is_none() && json.get("special_key").is_none());
    }

    #[test]
    fn a_message_keeps_the_publishers_trace_or_gets_a_new_one() {
        let message = |headers: Value| {
            parse(serde_json::json!({"topic": "t", "headers": headers}))
                .unwrap()
                .into_message("msg_1".into(), None, None, 0)
        };
        let incoming = TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let forwarded = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let m = message(serde_json::json!({"Traceparent": forwarded})).traced(Some(incoming));
        assert_eq!(m.trace_id, Some(incoming), "the request's header first");
        let m = message(serde_json::json!({"Traceparent": forwarded})).traced(None);
        assert_eq!(
            m.trace_id.map(|t| t.to_string()).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c"),
            "then one the message forwards"
        );
        let a = message(serde_json::json!({"traceparent": "bogus"})).traced(None);
        let b = message(serde_json::json!({})).traced(None);
        assert!(a.trace_id.is_some() && b.trace_id.is_some());
        assert_ne!(a.trace_id, b.trace_id, "else a new trace each");
    }

    #[test]
    fn the_trace_id_is_optional_in_message_json() {
        let m = parse(serde_json::json!({"topic": "t"}))
            .unwrap()
            .into_message("msg_0190a1b2c3d4e5f60718293a4b5c6d7e".into(), None, None, 0);
        let untraced = serde_json::to_value(&m).unwrap();
        assert!(untraced.get("trace_id").is_none(), "{untraced}");
        let back: Message = serde_json::from_value(untraced).unwrap();
        assert_eq!(back.trace().to_string(), "0190a1b2c3d4e5f60718293a4b5c6d7e");
        let traced = m.traced(None);
        let json = serde_json::to_value(&traced).unwrap();
        assert_eq!(json["trace_id"], traced.trace().to_string());
        let back: Message = serde_json::from_value(json).unwrap();
        assert_eq!(back.trace_id, traced.trace_id);
        let mut odd = serde_json::to_value(&traced).unwrap();
        odd["trace_id"] = serde_json::json!("not a trace id");
        let back: Message = serde_json::from_value(odd).unwrap();
        assert_eq!(back.trace_id, None, "read as none, never refused");
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "not valid JSON"),
            (b"[1]".to_vec(), "must be a JSON object"),
            (br#"{"body": {}}"#.to_vec(), "`topic` is required"),
            (br#"{"topic": 5}"#.to_vec(), "must be a string"),
            (br#"{"topic": "a b"}"#.to_vec(), "contains"),
            (
                br#"{"topic": "a", "http_method": "TRACE"}"#.to_vec(),
                "is not one of",
            ),
            (
                br#"{"topic": "a", "headers": [1]}"#.to_vec(),
                "`headers` must be an object",
            ),
            (br#"{"topic": "a", "extra": 1}"#.to_vec(), "unknown field"),
            (
                br#"{"Topic": "a", "Payload": "%%%"}"#.to_vec(),
                "not valid base64",
            ),
            (
                format!(r#"{{"Topic": "a", "Payload": "{}"}}"#, b64("[1]")).into_bytes(),
                "must decode to a JSON object",
            ),
            (
                format!(r#"{{"Topic": "a", "Payload": "{}"}}"#, b64("nope")).into_bytes(),
                "does not decode to JSON",
            ),
            (br#"{"Topic": "a"}"#.to_vec(), "`Payload` is required"),
        ];
        for (body, reason) in cases {
            let e = PublishRequest::from_json_bytes(&body).expect_err(reason);
            assert!(e.0.contains(reason), "{} should mention {reason}", e.0);
        }
    }

    #[test]
    fn headers_http_cannot_carry_are_refused_in_both_forms() {
        let b64 =
            |v: serde_json::Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
        let bad: Vec<(serde_json::Value, &str)> = vec![
            (serde_json::json!({"bad header": "v"}), "bad header"),
            (serde_json::json!({"x(y)": "v"}), "x(y)"),
            (serde_json::json!({"": "v"}), "header name"),
            (serde_json::json!({"X-Nl": "a\nb"}), "X-Nl"),
            (serde_json::json!({"X-Cr": "a\rb"}), "X-Cr"),
            (serde_json::json!({"X-Nul": "a\u{0}b"}), "X-Nul"),
            (serde_json::json!({"X-Del": "a\u{7f}b"}), "X-Del"),
        ];
        for (headers, named) in bad {
            let native = parse(serde_json::json!({"topic": "t", "headers": headers.clone()}))
                .expect_err("native");
            assert!(native.0.contains(named), "{} should name {named}", native.0);
            let legacy = parse(serde_json::json!({"Topic": "t", "Payload": b64(serde_json::json!({"headers": headers}))}))
                .expect_err("legacy");
            assert!(legacy.0.contains(named), "{} should name {named}", legacy.0);
        }
        let good = parse(serde_json::json!({"topic": "t", "headers": {
            "X-Trace": "abc def\tghi", "x-utf8": "Zoë", "a!#$%&'*+-.^_`|~1": ""
        }}))
        .unwrap();
        assert_eq!(good.headers.len(), 3);
    }

    #[test]
    fn authors_http_cannot_carry_are_refused() {
        assert!(check_author("shop").is_ok());
        assert!(check_author("Zoë Müller").is_ok());
        for bad in ["a\nb", "a\rb", "a\u{0}b", "a\u{7f}"] {
            let e = check_author(bad).expect_err(bad);
            assert!(e.0.contains("x-switch-author"), "{}", e.0);
        }
    }
}
