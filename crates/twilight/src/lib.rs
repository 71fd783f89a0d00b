#![forbid(unsafe_code)]
//! Wiring for the `twilight` binary, as a library so tests and benches start the same app.

pub mod app;
pub mod backfill;
pub mod backup;
pub mod cfg;
pub mod provisioning;
pub mod scheduler;

/// Every binary linking this crate (the server, its tests and benches) allocates with mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
