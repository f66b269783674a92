//! Delivery attempts as the API shows them.

use serde::Serialize;
use utoipa::ToSchema;

/// How an attempt ended: `delivered` (a 2xx), `failed` (to be retried) or
/// `dead` (no more attempts: a dead letter).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    Failed,
    Dead,
}

/// One delivery attempt.
#[derive(Serialize, ToSchema)]
#[schema(as = DeliveryAttempt)]
pub struct AttemptOut {
    /// Ascending: the paging cursor.
    pub id: i64,
    pub message_id: String,
    pub subscriber_id: i64,
    /// From 1.
    #[schema(minimum = 1)]
    pub attempt: i32,
    #[schema(value_type = Outcome)]
    pub outcome: String,
    /// The receiver's answer, when there was one.
    #[schema(required = true)]
    pub http_status: Option<i32>,
    /// `timeout`, `connect`, `dns`, `http_status`, `blocked`, …
    #[schema(required = true)]
    pub error_kind: Option<String>,
    #[schema(required = true)]
    pub error: Option<String>,
    pub duration_ms: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A page of attempts.
#[derive(Serialize, ToSchema)]
#[schema(as = DeliveryAttemptList)]
pub struct AttemptList {
    pub items: Vec<AttemptOut>,
    /// Pass as `since` to get newer attempts (the `since` given when the
    /// page is empty).
    #[schema(required = true)]
    pub next_since: Option<i64>,
}
