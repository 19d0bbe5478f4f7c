//! livegate's proxy-wasm filter: liveness in the VM, API-key auth with a decision cache.
//!
//! Every decision lives in plain modules tested natively (`cargo test -p livegate-filter`).

pub mod cache;
pub mod config;
pub mod credential;
pub mod decision;
pub mod metrics;
pub mod reply;
pub mod routing;
pub mod upstream_headers;
