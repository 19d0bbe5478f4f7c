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
    /// Sent as `x-livegate-internal-token`: the control plane's internal API wants it.
    pub token: &'a str,
    pub timeout_ms: u64,
    /// A model check: sent as `x-livegate-model` (percent-encoded), the model the request
    /// resolved to, to be admitted in its per-model windows only.
    pub model: Option<&'a str>,
}

/// The host dispatch refused the call (unknown cluster, bad headers, internal failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchRefused;

/// The host would not change a request header (the stream is gone, or Envoy refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRefused;

/// The request's headers as read from the host, names lowercased by Envoy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders(Vec<(String, Vec<u8>)>);

impl RequestHeaders {
    pub fn new(pairs: Vec<(String, Vec<u8>)>) -> RequestHeaders {
        RequestHeaders(pairs)
    }

    /// The first value of `name`, raw: values need not be UTF-8.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }
}

/// What the request flow may ask of Envoy. Nothing here panics: reads absorb host
/// failures (a header that cannot be read is absent), and writes report them as values
/// so the flow can refuse a request it could not make safe.
pub trait Host {
    /// One request header's raw value; Envoy lowercases names.
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    /// Every request header (the pseudo-headers `:path`, `:method`… too) in one host
    /// call: every route needs `:path`, liveness `:method`, the auth path the credential
    /// and every name (to strip `x-livegate-*`), and one read beats several.
    fn request_headers(&self) -> RequestHeaders;
    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HeaderRefused>;
    fn remove_request_header(&self, name: &str) -> Result<(), HeaderRefused>;
    fn send_reply(&self, reply: &LocalReply);
    /// The request body buffered so far (the whole body once `end_of_stream` was seen).
    fn request_body(&self) -> Option<Vec<u8>>;
    /// Bytes of the request body buffered so far, as the body callback reported them (no
    /// host call).
    fn request_body_size(&self) -> usize;
    /// Replaces the whole buffered request body.
    fn set_request_body(&self, body: &[u8]) -> Result<(), HeaderRefused>;
    fn dispatch_auth_check(&self, check: &AuthCheck<'_>) -> Result<(), DispatchRefused>;
    /// One response header's raw value (`:status`, `content-type`, …).
    fn response_header(&self, name: &str) -> Option<Vec<u8>>;
    /// One response header's raw value, removed from the response (it was for the filter).
    fn take_response_header(&self, name: &str) -> Option<Vec<u8>>;
    /// The response body chunk the host holds now (the filter never holds more than one).
    fn response_body(&self) -> Option<Vec<u8>>;
    fn increment(&self, metric: Metric);
    /// Per-request detail: debug level, so an outage cannot flood the log.
    fn debug(&self, message: &str);
}
