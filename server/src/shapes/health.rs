//! Health answers.

use serde::Serialize;
use utoipa::ToSchema;

/// `ok`, or `down` when the check failed.
#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Ok,
    Down,
}

/// `ok` when every dependency answers, else `degraded`.
#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

/// What the database and Redis answered.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ok", "database": "ok", "redis": "ok"}))]
pub struct Health {
    pub status: HealthStatus,
    pub database: CheckState,
    pub redis: CheckState,
}
