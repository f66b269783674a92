//! Publish bodies and answers, for the OpenAPI document (the bodies are parsed by `switch_core::message`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{HeaderMap, HttpMethodIn, ParamMap, Topic};

/// The native publish body. Only `topic` is required; other fields are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"topic": "orders.created", "body": {"id": 42, "total": 9.5}, "headers": {"X-Trace": "abc"}, "query_params": {"source": "web"}, "path_params": {"id": "42"}, "http_method": "POST"}))]
pub struct PublishNative {
    #[schema(value_type = Topic)]
    pub topic: String,
    /// Any JSON value, sent as the delivery's JSON body; `{}` when absent or null.
    pub body: Option<serde_json::Value>,
    /// Headers sent with each delivery.
    #[schema(value_type = HeaderMap, required = false)]
    pub headers: Option<serde_json::Value>,
    /// Appended to the target URL's query.
    #[schema(value_type = ParamMap, required = false)]
    pub query_params: Option<serde_json::Value>,
    /// Fill the target URL's `:name` placeholders.
    #[schema(value_type = ParamMap, required = false)]
    pub path_params: Option<serde_json::Value>,
    #[schema(value_type = HttpMethodIn, required = false)]
    pub http_method: Option<String>,
    /// Messages of one subscriber with the same key are delivered one at a
    /// time, in publish order (1 to 255 bytes, no control characters).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
        required = false
    )]
    pub ordering_key: Option<String>,
}

/// The body the original switch SDKs send.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"Topic": "orders.created", "Payload": "eyJib2R5IjogeyJpZCI6IDQyfX0="}))]
pub struct PublishLegacy {
    #[serde(rename = "Topic")]
    #[schema(value_type = Topic)]
    pub topic: String,
    /// Base64 (standard or URL-safe, padding optional) of the JSON object
    /// `{body, headers, query_params, path_params, http_method}`, each as in
    /// the native form.
    #[serde(rename = "Payload")]
    #[schema(content_encoding = "base64", content_media_type = "application/json")]
    pub payload: String,
}

/// Either form of a publish body, told apart by their keys.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PublishBody {
    Native(PublishNative),
    Legacy(PublishLegacy),
}

/// A message accepted (or an earlier one, for a duplicate).
#[derive(Serialize, ToSchema)]
pub struct PublishAccepted {
    #[schema(example = "msg_0190a2b3c4d57e6f8091a2b3c4d5e6f7")]
    pub message_id: String,
    /// How many subscribers got a job.
    #[schema(minimum = 0)]
    pub matched: u64,
    /// Present, and true, only when the `Idempotency-Key` was seen before:
    /// the id and count are the first publish's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    /// Present, and true, when Redis was unreachable: the message is kept in
    /// the database and moves into the queue, in order, once Redis is back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spooled: Option<bool>,
}

/// Which subscribers a message would reach, and why each does or does not.
#[derive(Serialize, ToSchema)]
pub struct Explain {
    /// The subscribers that would get a job.
    pub matched: Vec<i64>,
    /// Every subscriber whose pattern matches the topic.
    pub subscribers: Vec<Explained>,
}

/// One subscriber's verdict.
#[derive(Serialize, ToSchema)]
pub struct Explained {
    pub id: i64,
    pub matched: bool,
    pub reason: ExplainReason,
    /// Variables its filter read that the message lacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<String>>,
}

/// Why a subscriber does or does not get the message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExplainReason {
    Matched,
    FilterFalse,
    FilterError,
    Disabled,
}

/// The `200` answers of `POST /publish`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum PublishAnswer {
    Duplicate(PublishAccepted),
    Explain(Explain),
}

/// 1 to 1,000 native publish bodies.
#[derive(Deserialize, ToSchema)]
pub struct PublishBatch {
    #[schema(min_items = 1, max_items = 1000)]
    pub messages: Vec<PublishNative>,
}

/// One message of a batch, accepted.
#[derive(Serialize, ToSchema)]
pub struct PublishBatchItem {
    pub message_id: String,
    #[schema(minimum = 0)]
    pub matched: u64,
}

/// The messages of a batch, in order.
#[derive(Serialize, ToSchema)]
pub struct PublishBatchAccepted {
    pub items: Vec<PublishBatchItem>,
    /// Present, and true, when the batch was kept in the database while
    /// Redis was unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spooled: Option<bool>,
}

/// The subscriber cache reloaded.
#[derive(Serialize, ToSchema)]
pub struct Refreshed {
    /// How many subscribers are loaded.
    #[schema(minimum = 0)]
    pub subscribers: u64,
}
