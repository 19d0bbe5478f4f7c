//! The end-to-end harness: real Envoy, real Postgres, real control plane on free ports.
//!
//! Everything here is synchronous on purpose: tests drive processes and probe them
//! over HTTP from plain threads, so no async runtime of the tests can hide a stall
//! of the system under test. Every process is torn down on drop; when a test fails
//! (the thread is panicking) the logs are printed and kept on disk.

pub mod artifacts;
pub mod big_bodies;
pub mod control_plane;
pub mod demo_upstream;
pub mod disconnects;
pub mod envoy;
pub mod failing_provider;
pub mod fleet;
pub mod flood;
pub mod h2_client;
pub mod http;
pub mod internal_token;
pub mod lab;
pub mod mesh;
pub mod poll;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod procfs;
pub mod provider_double;
pub mod providers;
pub mod python_client;
pub mod refusal;
pub mod stack;
