//! API keys as the API reads and shows them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::TopicPattern;

/// What a key may do.
#[derive(Serialize, Deserialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "publish")]
    Publish,
    #[serde(rename = "admin")]
    Admin,
    #[serde(rename = "publish admin")]
    PublishAdmin,
}

/// An API key as listed: never the key itself.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiKey)]
pub struct KeyOut {
    pub id: i64,
    /// Sent to subscribers as `x-switch-author`.
    pub name: String,
    #[schema(value_type = Scope)]
    pub scope: String,
    /// The topic patterns it may publish to; null: any.
    #[schema(required = true, value_type = Option<Vec<TopicPattern>>)]
    pub topics: Option<Value>,
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A key just issued: the only answer that holds the key.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiKeyCreated)]
pub struct KeyCreated {
    #[serde(flatten)]
    pub key_info: KeyOut,
    /// `sk_…`: shown only now; only its hash is stored.
    pub key: String,
}

/// `{"items": [...]}`.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiKeyList)]
pub struct KeyList {
    pub items: Vec<KeyOut>,
}

/// A key to issue. Fields not listed are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ApiKeyIn, example = json!({"name": "shop", "scope": "publish", "topics": ["orders.#"], "expires_at": "2027-06-01T00:00:00Z"}))]
pub struct KeyIn {
    /// 1 to 200 characters without control characters (tab aside), as it
    /// is sent as `x-switch-author`; spaces around it are dropped.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^\\s*[^\\s\\u0000-\\u001F\\u007F]([^\\u0000-\\u0008\\u000A-\\u001F\\u007F]*[^\\s\\u0000-\\u001F\\u007F])?\\s*$"
    )]
    pub name: String,
    pub scope: Scope,
    /// Topic patterns it may publish to; any when absent or null.
    #[schema(value_type = Option<Vec<TopicPattern>>)]
    pub topics: Option<Vec<String>>,
    /// When it stops working; never when absent or null.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}
