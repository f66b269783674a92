//! W3C Trace Context: the trace id a published message carries, and the
//! `traceparent` header each delivery attempt sends with it, so subscribers
//! (and the publisher's own tracing) can join one message's deliveries into
//! one trace.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A trace id: 16 bytes, not all zero, written as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// A span id: 8 bytes, not all zero, written as 16 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

/// Decodes exactly `N` bytes from `2 * N` lower-case hex digits (the only
/// case the W3C format allows).
fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// [`from_hex`] for an id, where all zeros means "none" and is invalid.
fn id_from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    from_hex(text).filter(|bytes| *bytes != [0u8; N])
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Random bytes that are not all zero (a zero id is invalid).
fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let bytes: [u8; N] = rand::random();
        if bytes != [0u8; N] {
            return bytes;
        }
    }
}

impl TraceId {
    /// A new random trace id.
    pub fn generate() -> Self {
        TraceId(random_id())
    }

    /// 32 lower-case hex digits, not all zero.
    pub fn parse(hex: &str) -> Option<Self> {
        id_from_hex(hex).map(TraceId)
    }

    /// The trace id of a `traceparent` header value, if it is valid: version
    /// `00` is exactly `00-<trace id>-<parent id>-<flags>`; a later version may
    /// append `-…` fields, which are ignored; version `ff`, upper-case hex and
    /// all-zero ids are invalid.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']);
        // version(2) - trace id(32) - parent id(16) - flags(2): 55 bytes.
        let head = value.get(..55)?;
        let [version] = from_hex::<1>(head.get(..2)?)?;
        let exact = value.len() == 55;
        if version == 0xff || (version == 0 && !exact) || (!exact && !value[55..].starts_with('-'))
        {
            return None;
        }
        let fields: Vec<&str> = head[3..].split('-').collect();
        let [trace, parent, flags] = fields.as_slice() else {
            return None;
        };
        if head.as_bytes()[2] != b'-' {
            return None;
        }
        id_from_hex::<8>(parent)?;
        from_hex::<1>(flags)?;
        id_from_hex(trace).map(TraceId)
    }

    /// The trace of a message published without one (a message queued before
    /// trace ids existed, or one replayed from the message log): taken from its
    /// id, so every attempt of the message still shares one trace. A message id
    /// is `msg_` and a UUID's 32 hex digits, used as they are; any other id is
    /// hashed.
    pub fn of_message_id(message_id: &str) -> Self {
        if let Some(id) = message_id.strip_prefix("msg_").and_then(TraceId::parse) {
            return id;
        }
        let digest = Sha256::digest(message_id.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        if bytes == [0u8; 16] {
            bytes[15] = 1;
        }
        TraceId(bytes)
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl SpanId {
    /// A new random span id: one per delivery attempt.
    pub fn generate() -> Self {
        SpanId(random_id())
    }

    /// The span of a message's publish, taken from its id, so that each
    /// delivery attempt (which knows only the message) can name it as parent.
    pub fn of_message_id(message_id: &str) -> Self {
        let digest = Sha256::digest(message_id.as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        if bytes == [0u8; 8] {
            bytes[7] = 1;
        }
        SpanId(bytes)
    }

    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

impl Serialize for TraceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// For [`crate::message::Message::trace_id`]: a value that is not a valid
/// trace id reads as none (the worker then derives one), never as a message
/// that cannot be read.
pub(crate) fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TraceId>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(value.as_str().and_then(TraceId::parse))
}

/// The `traceparent` header of one delivery attempt: this trace, a new span,
/// sampled.
pub fn traceparent(trace: TraceId, span: SpanId) -> String {
    format!("00-{trace}-{span}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_gives_its_trace_id() {
        let id = TraceId::from_traceparent(VALID).unwrap();
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // Unsampled, surrounded by optional whitespace.
        let unsampled = " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\t";
        assert_eq!(TraceId::from_traceparent(unsampled), Some(id));
        // A later version may add fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(TraceId::from_traceparent(later), Some(id));
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        let cases = [
            ("", "empty"),
            ("garbage", "not the format"),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "upper-case hex",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "all-zero trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "all-zero parent id",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version ff",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                "version 00 with more fields",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                "a later version not followed by a dash",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                "a short trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                "flags not hex",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                "no dashes",
            ),
            (
                "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "a one-digit version",
            ),
        ];
        for (value, why) in cases {
            assert_eq!(TraceId::from_traceparent(value), None, "{why}: {value}");
        }
    }

    #[test]
    fn generated_ids_are_well_formed_and_differ() {
        let (a, b) = (TraceId::generate(), TraceId::generate());
        assert_ne!(a, b);
        let header = traceparent(a, SpanId::generate());
        assert_eq!(TraceId::from_traceparent(&header), Some(a), "{header}");
        assert_eq!(header.len(), 55);
        assert!(header.ends_with("-01"));
        assert_ne!(SpanId::generate(), SpanId::generate());
    }

    #[test]
    fn a_message_without_a_trace_takes_it_from_its_id() {
        let id = TraceId::of_message_id("msg_0190a1b2c3d4e5f60718293a4b5c6d7e");
        assert_eq!(id.to_string(), "0190a1b2c3d4e5f60718293a4b5c6d7e");
        let other = TraceId::of_message_id("legacy-id");
        assert_eq!(other, TraceId::of_message_id("legacy-id"), "stable");
        assert_ne!(other, TraceId::of_message_id("legacy-id-2"));
    }

    #[test]
    fn a_publish_span_is_named_by_its_message_id() {
        let id = "msg_0190a1b2c3d4e5f60718293a4b5c6d7e";
        let span = SpanId::of_message_id(id);
        assert_eq!(span, SpanId::of_message_id(id), "stable");
        assert_ne!(
            span,
            SpanId::of_message_id("msg_0190a1b2c3d4e5f60718293a4b5c6d7f")
        );
        assert_eq!(span.to_string().len(), 16);
        assert_ne!(span.to_bytes(), [0u8; 8]);
    }

    #[test]
    fn serialized_as_hex_and_read_leniently() {
        #[derive(Serialize, Deserialize)]
        struct Holder {
            #[serde(default, deserialize_with = "lenient")]
            t: Option<TraceId>,
        }
        let id = TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let json = serde_json::to_string(&Holder { t: Some(id) }).unwrap();
        assert_eq!(json, r#"{"t":"4bf92f3577b34da6a3ce929d0e0e4736"}"#);
        let back: Holder = serde_json::from_str(&json).unwrap();
        assert_eq!(back.t, Some(id));
        for bad in [r#"{"t":"nope"}"#, r#"{"t":5}"#, r#"{"t":null}"#, "{}"] {
            let h: Holder = serde_json::from_str(bad).expect(bad);
            assert_eq!(h.t, None, "{bad}");
        }
    }
}
