//! The Switch delivery worker.

pub mod acker;
pub mod metrics;
pub mod process;
pub mod recorder;
pub mod request;
pub mod runner;
pub mod runtime;
pub mod send;
