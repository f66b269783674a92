//! Filter tests as the API reads and answers them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{FilterExpression, HeaderMap, HttpMethodIn, ParamMap, Topic};

/// A filter and a message to try it on.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"filter_expression": "body.total > 100", "message": {"topic": "orders.created", "body": {"total": 120}}}))]
pub struct FilterTest {
    #[schema(value_type = Option<FilterExpression>)]
    pub filter_expression: Option<String>,
    /// A native publish body, and optionally the `author` a token would
    /// give it; `topic` defaults to `test`, the whole message to `{}`.
    pub message: Option<FilterTestMessage>,
}

/// A native publish body, as a filter sees it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterTestMessage {
    #[schema(value_type = Topic, required = false)]
    pub topic: Option<String>,
    /// Any JSON value.
    pub body: Option<Value>,
    #[schema(value_type = HeaderMap, required = false)]
    pub headers: Option<Value>,
    #[schema(value_type = ParamMap, required = false)]
    pub query_params: Option<Value>,
    #[schema(value_type = ParamMap, required = false)]
    pub path_params: Option<Value>,
    #[schema(value_type = HttpMethodIn, required = false)]
    pub http_method: Option<String>,
    /// The publisher; by default the caller's own.
    pub author: Option<String>,
}

/// Whether the filter matches the message.
#[derive(Serialize, ToSchema)]
pub struct FilterTestResult {
    pub matches: bool,
    /// The expression as it is evaluated (legacy expressions translated).
    pub compiled: String,
}
