//! Header names both sides rely on: where the credential is read, and what the filter
//! tells the upstream about the caller.

/// The headers that may carry the client's key; the filter removes each before upstream.
pub const CREDENTIAL_HEADERS: [&str; 2] = [AUTHORIZATION, X_API_KEY];
pub const AUTHORIZATION: &str = "authorization";
pub const X_API_KEY: &str = "x-api-key";

/// Every header the filter vouches for starts with this; clients may not send any.
pub const LIVEGATE_PREFIX: &str = "x-livegate-";

pub const KEY_ALIAS: &str = "x-livegate-key-alias";
/// The first 16 hex characters of the key's hash.
pub const KEY_HASH: &str = "x-livegate-key-hash";
pub const TEAM_ID: &str = "x-livegate-team-id";
pub const USER_ID: &str = "x-livegate-user-id";
/// `true` when the allow was served from the stale-if-error window.
pub const STALE: &str = "x-livegate-stale";
/// `open` when `failure_mode: open` let the request through without identity.
pub const FAILURE_MODE: &str = "x-livegate-failure-mode";
