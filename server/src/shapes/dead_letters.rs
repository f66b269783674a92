//! Dead letters and replay results as the API shows them.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A delivery that gave up, with the whole request last attempted.
#[derive(Serialize, ToSchema)]
#[schema(as = DeadLetter)]
pub struct DeadLetterOut {
    pub id: i64,
    pub message_id: String,
    pub subscriber_id: i64,
    pub topic: String,
    /// The whole request last attempted: `method`, `url`, `headers` (name
    /// and value pairs, without the per-attempt signature headers), `body`,
    /// and the published `message` that a replay enqueues again; a string
    /// when it could not be read as JSON.
    pub request: Value,
    pub last_error: String,
    #[schema(minimum = 0)]
    pub attempts: i32,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it was replayed; null while pending.
    #[schema(required = true, format = DateTime)]
    pub replayed_at: Option<String>,
}

/// A page of dead letters.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    pub items: Vec<DeadLetterOut>,
    /// Pass as `since` to get newer dead letters (the `since` given when the
    /// page is empty).
    #[schema(required = true)]
    pub next_since: Option<i64>,
}

/// A dead letter that cannot be replayed, and why; it stays pending.
#[derive(Serialize, ToSchema)]
pub struct ReplayFailure {
    pub id: i64,
    pub error: String,
}

/// One dead letter replayed.
#[derive(Serialize, ToSchema)]
pub struct ReplayOneResult {
    #[schema(minimum = 0)]
    pub replayed: usize,
    pub message_id: String,
}

/// What a replay of many dead letters did.
#[derive(Serialize, ToSchema)]
pub struct ReplayAllResult {
    /// Dead letters enqueued again.
    #[schema(minimum = 0)]
    pub replayed: usize,
    /// Without `subscriber_id`: dead letters of disabled or deleted
    /// subscribers, left pending.
    #[schema(minimum = 0)]
    pub skipped: usize,
    /// Dead letters that cannot be replayed (an unreadable stored request),
    /// left pending.
    pub failed: Vec<ReplayFailure>,
}
