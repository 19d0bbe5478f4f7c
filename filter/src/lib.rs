//! livegate's proxy-wasm filter: liveness in the VM, API-key auth with a decision cache.
//!
//! Every decision lives in plain modules tested natively (`cargo test -p livegate-filter`).

pub mod config;
pub mod metrics;
pub mod routing;
