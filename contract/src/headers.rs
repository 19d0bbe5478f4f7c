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

/// The shared credential of the control plane's internal API (`/v1/auth/check`, the change
/// feed, the spend intake): the filter sends it on every call it dispatches there. Envoy
/// removes it from every client request, and the filter too (it is an `x-livegate-*` header).
pub const INTERNAL_TOKEN: &str = "x-livegate-internal-token";
/// On an auth check, the model a request resolved to (percent-encoded): the control plane
/// then admits the request in that model's windows only (`model_rpm_limit`, `model_tpm_limit`).
pub const MODEL_CHECK: &str = "x-livegate-model";
/// The environment variable both processes read that credential from (Envoy hands it to the
/// filter's VM through `vm_config.environment_variables.host_env_keys`).
pub const INTERNAL_TOKEN_ENV: &str = "LIVEGATE_INTERNAL_TOKEN";

/// A header value as the filter encodes identities and models (printable ASCII as is,
/// every other byte and `%` as `%XX`), decoded; `None` if it is not such a value or not
/// UTF-8.
pub fn percent_decoded(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
