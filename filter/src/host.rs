//! The few host operations the request flow needs; lib.rs implements them over proxy-wasm.

use crate::metrics::Metric;
use crate::reply::LocalReply;

/// The auth check to dispatch to the control plane; the host turns it into headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthCheck<'a> {
    pub cluster: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    /// Sent as `authorization: Bearer <key>`.
    pub key: &'a str,
    pub timeout_ms: u64,
}

/// The host dispatch refused the call (unknown cluster, bad headers, internal failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchRefused;

/// What the request flow may ask of Envoy. Every method is total: host failures
/// are absorbed by the implementation (and logged), never surfaced as panics.
pub trait Host {
    /// A request header's raw value; Envoy lowercases names.
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    /// The names of all request headers, for stripping `x-livegate-*`.
    fn request_header_names(&self) -> Vec<String>;
    fn set_request_header(&self, name: &str, value: &str);
    fn remove_request_header(&self, name: &str);
    fn send_reply(&self, reply: &LocalReply);
    fn dispatch_auth_check(&self, check: &AuthCheck<'_>) -> Result<(), DispatchRefused>;
    fn increment(&self, metric: Metric);
    /// Per-request detail: debug level, so an outage cannot flood the log.
    fn debug(&self, message: &str);
}
