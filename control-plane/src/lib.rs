//! livegate control plane: the HTTP API, the key cache, and the supervised database engine.
//!
//! A library so the end-to-end tests and the in-process router tests can use its types
//! (the command line, the metrics, the router); `main.rs` only calls [`cli::main`].

pub mod app;
pub mod auth;
pub mod budget;
pub mod cli;
pub mod config;
pub mod db;
pub mod feed;
pub mod histogram;
pub mod http;
// `KeyCache::len` feeds a gauge; an `is_empty` would have no caller.
#[allow(clippy::len_without_is_empty)]
pub mod key_cache;
pub mod keys;
pub mod ledger;
pub mod looplag;
pub mod metrics;
pub mod pricing;
pub mod rate_limit;
pub mod record;
pub mod secret;
pub mod spool;
pub mod spool_drain;
