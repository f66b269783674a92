//! Logged messages, their deliveries and range replays as the API reads and shows them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{Topic, TopicPattern};

/// A logged message, as the API and the live stream show it.
#[derive(Serialize, ToSchema)]
#[schema(as = Message)]
pub struct MessageOut {
    #[schema(example = "msg_0190a2b3c4d57e6f8091a2b3c4d5e6f7")]
    pub id: String,
    #[schema(value_type = Topic)]
    pub topic: String,
    /// Who published it: the token's `author`, or the API key's name.
    #[schema(required = true)]
    pub author: Option<String>,
    /// The published body, any JSON value.
    pub body: Value,
    #[schema(value_type = BTreeMap<String, String>)]
    pub headers: Value,
    #[schema(value_type = BTreeMap<String, String>)]
    pub query_params: Value,
    #[schema(value_type = BTreeMap<String, String>)]
    pub path_params: Value,
    #[schema(value_type = HttpMethodOut)]
    pub http_method: String,
    #[schema(required = true)]
    pub ordering_key: Option<String>,
    /// Jobs the publish enqueued.
    #[schema(minimum = 0)]
    pub matched: i32,
    /// When it was published, to the millisecond.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// The method its deliveries use.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
#[schema(as = HttpMethod)]
pub enum HttpMethodOut {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// A page of the message log.
#[derive(Serialize, ToSchema)]
pub struct MessageList {
    pub items: Vec<MessageOut>,
    /// Pass back as `since` to get only newer messages.
    #[schema(required = true)]
    pub next_since: Option<String>,
}

/// A message, and where each subscriber it matched stands.
#[derive(Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: MessageOut,
    pub deliveries: Vec<DeliveryState>,
}

/// Where one subscriber's delivery of a message stands.
#[derive(Serialize, ToSchema)]
pub struct DeliveryState {
    pub subscriber_id: i64,
    pub state: DeliveryStateName,
    #[schema(minimum = 0)]
    pub attempts: usize,
    /// The receiver's answer to the last attempt, when there was one.
    #[schema(required = true)]
    pub last_http_status: Option<i32>,
}

/// `pending` (no attempt yet), `delivered`, `failed` (retrying) or `dead`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStateName {
    Pending,
    Delivered,
    Failed,
    Dead,
}

/// A range of the log to match again and enqueue. Fields not listed are
/// refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"topic": "orders.#", "after": "2026-12-05T00:00:00Z", "subscriber_id": 7, "dry_run": true}))]
pub struct ReplayRange {
    /// Only messages whose topic this pattern matches.
    #[schema(value_type = Option<TopicPattern>)]
    pub topic: Option<String>,
    /// Only messages published after this time (exclusive).
    #[schema(format = DateTime)]
    pub after: Option<String>,
    /// Only messages published before this time (exclusive).
    #[schema(format = DateTime)]
    pub before: Option<String>,
    /// Only this subscriber, its filter applied (a backfill); every enabled
    /// subscriber when absent.
    pub subscriber_id: Option<i64>,
    /// Count only; enqueue nothing.
    #[schema(default = false)]
    pub dry_run: Option<bool>,
}

/// What a range replay matched.
#[derive(Serialize, ToSchema)]
pub struct ReplayRangeResult {
    /// Logged messages in the range.
    #[schema(minimum = 0)]
    pub messages: usize,
    /// Jobs enqueued (with `dry_run`, that would have been).
    #[schema(minimum = 0)]
    pub jobs: usize,
    pub dry_run: bool,
}
