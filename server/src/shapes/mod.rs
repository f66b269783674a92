//! The API's request and response bodies, one module per resource, and the
//! schemas and error answers they share. Handlers read and answer with these
//! types (or, where a body is parsed by hand for its error messages, these
//! describe it), and the OpenAPI document is generated from them.

pub mod dead_letters;
pub mod deliveries;
pub mod filters;
pub mod health;
pub mod keys;
pub mod messages;
pub mod publish;
pub mod subscribers;

use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToResponse, ToSchema};

use crate::error::ErrorBody;

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

/// The characters of a topic segment.
const SEGMENT: &str = "[A-Za-z0-9_:-]+";

/// A concrete topic.
pub struct Topic;

impl PartialSchema for Topic {
    fn schema() -> RefOr<Schema> {
        string(
            "A topic: segments of `A-Z a-z 0-9 _ - :` joined by single dots, 1 to 255 characters.",
        )
        .min_length(Some(1))
        .max_length(Some(255))
        .pattern(Some(format!("^{SEGMENT}(\\.{SEGMENT})*$")))
        .examples(["orders.created"])
        .into()
    }
}
impl ToSchema for Topic {}

/// A subscriber's (or a query's) topic pattern.
pub struct TopicPattern;

impl PartialSchema for TopicPattern {
    fn schema() -> RefOr<Schema> {
        let segment = format!("({SEGMENT}|\\*|#)");
        string("A topic pattern with AMQP topic-exchange semantics: a segment is a literal, `*` (exactly one segment) or `#` (zero or more), 1 to 255 characters.")
            .min_length(Some(1))
            .max_length(Some(255))
            .pattern(Some(format!("^{segment}(\\.{segment})*$")))
            .examples(["orders.*"])
            .into()
    }
}
impl ToSchema for TopicPattern {}

/// A filter expression (evalexpr, or the original switch's Python-like form).
pub struct FilterExpression;

/// Longest filter expression accepted.
pub const MAX_FILTER_BYTES: usize = 4096;

impl PartialSchema for FilterExpression {
    fn schema() -> RefOr<Schema> {
        string("An evalexpr expression over `body.<path>`, `headers.<name>`, `query_params.<name>`, `path_params.<name>`, `http_method`, `topic` and `author`. Empty, `true` or `True` always matches. Legacy `data[\"…\"]` expressions are accepted and stored translated. At most 4,096 bytes; one that does not compile is refused with `400` and the byte offset of the problem in `error.position`.")
            .max_length(Some(MAX_FILTER_BYTES))
            .examples(["body.total > 100"])
            .into()
    }
}
impl ToSchema for FilterExpression {}

/// A Standard Webhooks signing secret.
pub struct Secret;

impl PartialSchema for Secret {
    fn schema() -> RefOr<Schema> {
        // Canonical base64 of 24 to 64 bytes: 8 to 21 whole groups of four,
        // then optionally one padded group (one or two bytes, the unused bits zero).
        const B64: &str = "[A-Za-z0-9+/]";
        let pattern = format!(
            "^whsec_(({B64}{{4}}){{8,20}}(({B64}{{4}})|{B64}[AQgw]==|{B64}{{2}}[AEIMQUYcgkosw048]=)?|({B64}{{4}}){{21}}({B64}[AQgw]==)?)$"
        );
        string("A Standard Webhooks signing secret: `whsec_` followed by the standard base64 of 24 to 64 bytes.")
            .pattern(Some(pattern))
            .examples(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
            .into()
    }
}
impl ToSchema for Secret {}

/// Where a subscriber's deliveries go.
pub struct TargetUrl;

impl PartialSchema for TargetUrl {
    fn schema() -> RefOr<Schema> {
        string("An absolute `http` or `https` URL without credentials; `:name` placeholders in the path are replaced by the message's path params. A literal address in `SWITCH_TARGET_DENY` (and not in `SWITCH_TARGET_ALLOW`) is refused with `400 target_not_allowed`.")
            .format(Some(SchemaFormat::Custom("uri".into())))
            .pattern(Some("^[Hh][Tt][Tt][Pp][Ss]?://"))
            .examples(["http://localhost:9000/hook/:id"])
            .into()
    }
}
impl ToSchema for TargetUrl {}

/// A value of query or path params and headers as published.
fn param_value(text: ObjectBuilder) -> Schema {
    OneOfBuilder::new()
        .item(text)
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "A string, number or boolean; numbers and booleans are sent as their text, null as the empty string.",
        ))
        .into()
}

/// Query or path params of a published message.
pub struct ParamMap;

impl PartialSchema for ParamMap {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
            .description(Some("Names to values."))
            .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(param_value(
                ObjectBuilder::new().schema_type(Type::String),
            )))))
            .into()
    }
}
impl ToSchema for ParamMap {}

/// Headers of a published message: only what HTTP can carry.
pub struct HeaderMap;

impl PartialSchema for HeaderMap {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
            .description(Some("HTTP headers to send with each delivery: names are HTTP tokens, values hold no control characters (tab aside)."))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")),
            ))
            .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(param_value(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F]*$")),
            )))))
            .into()
    }
}
impl ToSchema for HeaderMap {}

/// The method of a delivery, as a publisher writes it.
pub struct HttpMethodIn;

impl PartialSchema for HttpMethodIn {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .description(Some("GET, POST, PUT, PATCH or DELETE, in any case; POST when absent or null."))
            .pattern(Some("^([Gg][Ee][Tt]|[Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee])$"))
            .examples(["POST"])
            .into()
    }
}
impl ToSchema for HttpMethodIn {}

/// The request is invalid (`invalid_request`; `target_not_allowed` for a target URL the hub will not deliver to).
#[derive(ToResponse)]
pub struct BadRequest(pub ErrorBody);

/// No valid credential (`unauthorized`).
#[derive(ToResponse)]
#[response(headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
pub struct Unauthorized(pub ErrorBody);

/// The credential lacks the scope or the topic this needs (`forbidden`).
#[derive(ToResponse)]
pub struct Forbidden(pub ErrorBody);

/// No such record (`not_found`).
#[derive(ToResponse)]
pub struct NotFound(pub ErrorBody);

/// The request conflicts with the current state (`conflict`).
#[derive(ToResponse)]
pub struct Conflict(pub ErrorBody);

/// The body is larger than `SWITCH_MAX_BODY_BYTES` (`payload_too_large`).
#[derive(ToResponse)]
pub struct PayloadTooLarge(pub ErrorBody);

/// The body did not arrive within 10 s (`invalid_request`); the connection is closed.
#[derive(ToResponse)]
pub struct RequestTimeout(pub ErrorBody);

/// The database or Redis cannot be reached (`unavailable`); nothing was done.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u32, description = "Seconds to wait before trying again.")))]
pub struct Unavailable(pub ErrorBody);

/// An internal error (`internal`); the cause is in the server's log.
#[derive(ToResponse)]
pub struct Internal(pub ErrorBody);
