//! Shared library of the Switch hub: configuration, domain types, the database
//! layer, filter compilation, the delivery job and the Redis queue.

pub mod backoff;
pub mod config;
pub mod db;
pub mod duration;
pub mod filter;
pub mod job;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod otlp;
pub mod queue;
pub mod signature;
pub mod subscribers;
pub mod target;
pub mod telemetry;
pub mod topic;
pub mod trace;

pub use config::Settings;
