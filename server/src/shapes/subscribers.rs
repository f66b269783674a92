//! Subscribers as the API reads and shows them.

use serde::{Deserialize, Serialize};
use switch_core::db::models::Subscriber;
use switch_core::queue::circuit::CircuitState;
use switch_core::subscribers::Loaded;
use utoipa::ToSchema;

use super::{FilterExpression, Secret, TargetUrl, TopicPattern};
use crate::routes::ts;

/// A subscriber as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Subscriber)]
pub struct SubscriberOut {
    pub id: i64,
    #[schema(value_type = TopicPattern)]
    pub topic: String,
    /// Where deliveries go; `:name` placeholders are replaced by path params.
    #[schema(example = "http://localhost:9000/hook/:id")]
    pub target_url: String,
    #[schema(required = true)]
    pub filter_expression: Option<String>,
    /// The signing secret (`whsec_…`); null only for a row inserted by SQL
    /// that no server has loaded yet.
    #[schema(required = true)]
    pub secret: Option<String>,
    pub enabled: bool,
    #[schema(required = true)]
    pub description: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Why the stored `filter_expression` does not compile (rows written by
    /// SQL); such a subscriber gets no messages.
    #[schema(required = true)]
    pub filter_error: Option<String>,
    /// Deliveries of one worker in flight to this subscriber; null: the
    /// hub's `SWITCH_SUBSCRIBER_CONCURRENCY`.
    #[schema(required = true, minimum = 1, maximum = 10000)]
    pub max_in_flight: Option<i32>,
    /// Why the hub disabled it: `failing` (every attempt failed for
    /// `SWITCH_AUTO_DISABLE_AFTER`) or `gone` (it answered 410); null when
    /// enabled, or disabled by an operator.
    #[schema(required = true)]
    pub disabled_reason: Option<String>,
    pub circuit: CircuitOut,
}

/// The circuit breaker the workers share: `open` holds the subscriber's jobs
/// until a probe succeeds.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
#[schema(as = Circuit)]
pub enum CircuitOut {
    Closed,
    Open,
    HalfOpen,
}

impl From<CircuitState> for CircuitOut {
    fn from(c: CircuitState) -> Self {
        match c {
            CircuitState::Closed => CircuitOut::Closed,
            CircuitState::Open => CircuitOut::Open,
            CircuitState::HalfOpen => CircuitOut::HalfOpen,
        }
    }
}

impl SubscriberOut {
    pub fn new(s: &Subscriber, circuit: CircuitState) -> Self {
        let loaded = Loaded::new(s.clone());
        SubscriberOut {
            id: s.id,
            topic: s.topic.clone(),
            target_url: s.target_url.clone(),
            filter_expression: s.filter_expression.clone(),
            secret: s.secret.clone(),
            enabled: s.enabled,
            description: s.description.clone(),
            created_at: ts(s.created_at),
            updated_at: ts(s.updated_at),
            filter_error: loaded.load_error(),
            max_in_flight: s.max_in_flight,
            disabled_reason: s.disabled_reason.clone(),
            circuit: circuit.into(),
        }
    }
}

/// `{"items": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct SubscriberList {
    pub items: Vec<SubscriberOut>,
}

/// A new subscriber. Fields not listed are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"topic": "orders.*", "target_url": "http://localhost:9000/hook/:id", "filter_expression": "body.total > 100"}))]
pub struct SubscriberIn {
    #[schema(value_type = TopicPattern)]
    pub topic: String,
    #[schema(value_type = TargetUrl)]
    pub target_url: String,
    #[schema(value_type = Option<FilterExpression>)]
    pub filter_expression: Option<String>,
    /// Generated when absent or null.
    #[schema(value_type = Option<Secret>)]
    pub secret: Option<String>,
    #[schema(value_type = bool, required = false, default = true)]
    pub enabled: Option<bool>,
    /// Free text, for people.
    #[schema(pattern = "^[^\\u0000]*$")]
    pub description: Option<String>,
    /// Deliveries of one worker in flight to this subscriber; null: the
    /// hub's default.
    #[schema(minimum = 1, maximum = 10000)]
    pub max_in_flight: Option<i32>,
}

/// Only the fields given change; `filter_expression`, `description` and
/// `max_in_flight` may be null to clear them. Enabling or disabling clears
/// `disabled_reason`; enabling also closes the circuit.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true}))]
pub struct SubscriberPatch {
    #[schema(value_type = TopicPattern, required = false)]
    pub topic: Option<String>,
    #[schema(value_type = TargetUrl, required = false)]
    pub target_url: Option<String>,
    #[schema(value_type = Option<FilterExpression>)]
    pub filter_expression: Option<String>,
    #[schema(value_type = Secret, required = false)]
    pub secret: Option<String>,
    #[schema(value_type = bool, required = false)]
    pub enabled: Option<bool>,
    /// Free text, for people.
    #[schema(pattern = "^[^\\u0000]*$")]
    pub description: Option<String>,
    #[schema(minimum = 1, maximum = 10000)]
    pub max_in_flight: Option<i32>,
}
