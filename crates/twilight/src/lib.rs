#![forbid(unsafe_code)]
//! Wiring for the `twilight` binary, as a library so tests and benches start the same app.

pub mod app;
pub mod cfg;
pub mod provisioning;
pub mod scheduler;
