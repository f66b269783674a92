//! Integration tests: real Redis, real SQLite and PostgreSQL, real HTTP receivers.

mod admin;
mod contract;
mod delivery;
mod helpers;
mod hostile_input;
mod isolation;
mod keys;
mod legacy_sdk;
mod messages;
mod otlp;
mod publish;
mod queue;
mod resilience;
mod scale;
mod stream;
mod trace_context;
mod ui;
