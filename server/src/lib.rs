//! The Switch HTTP API.

pub mod auth;
pub mod error;
pub mod keys;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod routes;
pub mod seed;
pub mod shapes;
pub mod startup;
pub mod state;
pub mod ui;
