//! Row types, in threes per table: read, insert, update.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::schema::{api_keys, dead_letters, delivery_attempts, messages, outbox, subscribers};

#[derive(Debug, Clone, PartialEq, Queryable, Serialize)]
pub struct Subscriber {
    pub id: i64,
    pub topic: String,
    pub target_url: String,
    pub filter_expression: Option<String>,
    pub secret: Option<String>,
    pub enabled: bool,
    pub description: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<NaiveDateTime>,
    /// Deliveries of one worker in flight to this subscriber; `None`: the hub's default.
    pub max_in_flight: Option<i32>,
    /// Why the hub disabled it (`failing`), when it did.
    pub disabled_reason: Option<String>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = subscribers)]
pub struct NewSubscriber {
    pub topic: String,
    pub target_url: String,
    pub filter_expression: Option<String>,
    pub secret: Option<String>,
    pub enabled: bool,
    pub description: Option<String>,
    pub max_in_flight: Option<i32>,
}

#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = subscribers)]
pub struct SubscriberChanges {
    pub topic: Option<String>,
    pub target_url: Option<String>,
    pub filter_expression: Option<Option<String>>,
    pub secret: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub description: Option<Option<String>>,
    pub updated_at: Option<NaiveDateTime>,
    pub previous_secret: Option<Option<String>>,
    pub previous_secret_expires_at: Option<Option<NaiveDateTime>>,
    pub max_in_flight: Option<Option<i32>>,
    pub disabled_reason: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Serialize)]
pub struct DeliveryAttempt {
    pub id: i64,
    pub message_id: String,
    pub subscriber_id: i64,
    pub attempt: i32,
    pub outcome: String,
    pub http_status: Option<i32>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = delivery_attempts)]
pub struct NewDeliveryAttempt {
    pub message_id: String,
    pub subscriber_id: i64,
    pub attempt: i32,
    pub outcome: String,
    pub http_status: Option<i32>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct DeadLetter {
    pub id: i64,
    pub message_id: String,
    pub subscriber_id: i64,
    pub topic: String,
    pub request: String,
    pub last_error: String,
    pub attempts: i32,
    pub created_at: NaiveDateTime,
    pub replayed_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = dead_letters)]
pub struct NewDeadLetter {
    pub message_id: String,
    pub subscriber_id: i64,
    pub topic: String,
    pub request: String,
    pub last_error: String,
    pub attempts: i32,
    pub created_at: NaiveDateTime,
}

/// A logged message; `body`, `headers` and the params are JSON text, and
/// `log_seq` is its place in publish order (the `since` cursor).
#[derive(Debug, Clone, PartialEq, Queryable, Insertable)]
#[diesel(table_name = messages)]
pub struct LoggedMessage {
    pub id: String,
    pub log_seq: i64,
    pub topic: String,
    pub author: Option<String>,
    pub body: String,
    pub headers: String,
    pub query_params: String,
    pub path_params: String,
    pub http_method: String,
    pub ordering_key: Option<String>,
    pub matched: i32,
    /// JSON array of the subscribers it was enqueued for.
    pub subscriber_ids: String,
    pub created_at: NaiveDateTime,
}

/// An API key as stored: its scope and topics, and a hash of the key.
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub scope: String,
    /// JSON array of topic patterns; `None`: any topic.
    pub topics: Option<String>,
    /// SHA-256 of the key, hex.
    pub key_hash: String,
    pub expires_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = api_keys)]
pub struct NewApiKey {
    pub name: String,
    pub scope: String,
    pub topics: Option<String>,
    pub key_hash: String,
    pub expires_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

/// Now, in UTC, as the tables store it.
pub fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// A publish accepted while Redis was unreachable, waiting to be moved into
/// the queue (`seq` is publish order).
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct OutboxRow {
    pub seq: i64,
    pub message_id: String,
    /// The message JSON, as jobs carry it.
    pub message: String,
    /// JSON array of the subscribers it matched when published.
    pub subscriber_ids: String,
    /// The publisher's `Idempotency-Key`, as its Redis key, and the record to keep.
    pub idempotency_key: Option<String>,
    pub idempotency_record: Option<String>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = outbox)]
pub struct NewOutboxRow {
    pub message_id: String,
    pub message: String,
    pub subscriber_ids: String,
    pub idempotency_key: Option<String>,
    pub idempotency_record: Option<String>,
    pub created_at: NaiveDateTime,
}
