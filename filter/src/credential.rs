//! The client's API key: found in its headers, checked for shape, and hashed.

use sha2::{Digest, Sha256};
use std::fmt;

/// Longer "keys" are refused before hashing or forwarding: real keys are far shorter.
pub const MAX_KEY_LEN: usize = 512;

/// A raw API key as the client sent it. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// SHA-256 of a raw key, lowercase hex: the cache key and the control plane's stored form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(String);

/// Why a request carries no usable credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`")]
    Missing,
    #[error("the API key is empty")]
    Empty,
    #[error("the Authorization header must be `Bearer <key>`")]
    NotBearer,
    #[error("the API key contains characters that are not allowed")]
    BadCharacters,
    #[error("the API key is longer than {MAX_KEY_LEN} bytes")]
    TooLong,
}

impl ApiKey {
    /// Reads the key from `authorization` (Bearer) or, when that is absent, `x-api-key`.
    ///
    /// A present but malformed `authorization` is refused rather than skipped: falling
    /// back to `x-api-key` would make the accepted credential ambiguous.
    pub fn from_headers(
        authorization: Option<&[u8]>,
        x_api_key: Option<&[u8]>,
    ) -> Result<ApiKey, CredentialError> {
        match (authorization, x_api_key) {
            (Some(value), _) => ApiKey::parse(bearer_token(value)?),
            (None, Some(value)) => ApiKey::parse(trim(value)),
            (None, None) => Err(CredentialError::Missing),
        }
    }

    fn parse(raw: &[u8]) -> Result<ApiKey, CredentialError> {
        if raw.is_empty() {
            return Err(CredentialError::Empty);
        }
        if raw.len() > MAX_KEY_LEN {
            return Err(CredentialError::TooLong);
        }
        // Visible ASCII only: the key goes into a header of the auth check, so no
        // whitespace, control characters or non-ASCII bytes can ride along.
        if !raw.iter().all(|b| b.is_ascii_graphic()) {
            return Err(CredentialError::BadCharacters);
        }
        String::from_utf8(raw.to_vec())
            .map(ApiKey)
            .map_err(|_| CredentialError::BadCharacters)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(hex::encode(Sha256::digest(self.0.as_bytes())))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl KeyHash {
    /// A hash from its hex text, for tests that need many distinct keys.
    #[cfg(test)]
    pub(crate) fn from_hex(hex: &str) -> KeyHash {
        KeyHash(hex.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 16 hex characters: enough to correlate, too little to matter.
    pub fn short(&self) -> &str {
        self.0.get(..16).unwrap_or(&self.0)
    }

    /// Compares with a hash the control plane reported, ignoring hex case.
    pub fn matches(&self, reported: &str) -> bool {
        self.0.eq_ignore_ascii_case(reported)
    }
}

fn bearer_token(value: &[u8]) -> Result<&[u8], CredentialError> {
    let value = trim(value);
    if value.is_empty() {
        return Err(CredentialError::Empty);
    }
    let scheme_end = value.iter().position(|b| *b == b' ').unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(CredentialError::NotBearer);
    }
    Ok(trim(rest))
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

#[cfg(test)]
mod tests;
