//! The client's API key: found in its headers, checked for shape, and hashed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Longer "keys" are refused before hashing or forwarding: real keys are far shorter.
pub const MAX_KEY_LEN: usize = 512;

/// A raw API key as the client sent it. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// SHA-256 of a raw key, lowercase hex: the filter's cache key and the control plane's
/// stored form. Not secret, but `Debug` stays short so logs stay uniform.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyHash(String);

/// Why a request carries no usable credential. One rule for both sides of the house.
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
            (None, Some(value)) => ApiKey::parse(value.trim_ascii()),
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
        KeyHash::of_raw(&self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// A text that is not 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key hash is 64 lowercase hex characters")]
pub struct NotAKeyHash;

impl KeyHash {
    /// Hashes a raw key.
    pub fn of_raw(raw: &str) -> KeyHash {
        KeyHash(hex::encode(Sha256::digest(raw.as_bytes())))
    }

    /// Accepts an already hashed key: exactly 64 lowercase hex characters.
    pub fn parse_hex(s: &str) -> Result<KeyHash, NotAKeyHash> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| KeyHash(s.to_owned())).ok_or(NotAKeyHash)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 16 hex characters: enough to correlate, too little to matter.
    pub fn short(&self) -> &str {
        self.0.get(..16).unwrap_or(&self.0)
    }
}

impl TryFrom<String> for KeyHash {
    type Error = NotAKeyHash;
    fn try_from(s: String) -> Result<KeyHash, NotAKeyHash> {
        KeyHash::parse_hex(&s)
    }
}

impl From<KeyHash> for String {
    fn from(h: KeyHash) -> String {
        h.0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", self.0.get(..8).unwrap_or(&self.0))
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bearer_token(value: &[u8]) -> Result<&[u8], CredentialError> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(CredentialError::Empty);
    }
    let scheme_end = value.iter().position(|b| *b == b' ').unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(CredentialError::NotBearer);
    }
    Ok(rest.trim_ascii())
}

#[cfg(test)]
mod tests;
