//! The control plane's answer to `POST /v1/auth/check`, mapped to what the filter does.

use crate::credential::KeyHash;
use serde::Deserialize;

/// Identity values longer than this are dropped rather than forwarded or cached.
pub const MAX_IDENTITY_VALUE_LEN: usize = 256;

/// Bodies past this size are not an auth check answer; the glue reads no more than this.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Who the key belongs to, as the control plane reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
}

/// Why the control plane refused a key; each has its own status and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    InvalidKey,
    KeyBlocked,
    KeyExpired,
}

/// Why an auth check produced no decision: always an error, never a deny or an allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the auth check could not be dispatched")]
    Dispatch,
    #[error("the auth check was reset or timed out (no response headers)")]
    NoResponse,
    #[error("the auth check response has no valid :status")]
    NoStatus,
    #[error("the control plane is unavailable (503)")]
    Unavailable,
    #[error("the control plane answered with unexpected status {0}")]
    UnexpectedStatus(u16),
    #[error("the auth check body is malformed: {0}")]
    MalformedBody(String),
    #[error("the control plane reported a different key hash")]
    KeyHashMismatch,
}

/// The decision the filter acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow {
        identity: Identity,
        /// The control plane's `cache_ttl_seconds`, in milliseconds.
        ttl_hint_ms: Option<u64>,
    },
    Deny(DenyReason),
    Error(CallError),
}

/// What came back from the dispatched call, read by the host glue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallResponse<'a> {
    /// Envoy reports a reset or timeout as a response with zero headers.
    pub header_count: usize,
    pub status: Option<&'a [u8]>,
    pub body: Option<&'a [u8]>,
}

impl DenyReason {
    pub fn parse(reason: &str) -> Option<DenyReason> {
        match reason {
            "invalid_key" => Some(DenyReason::InvalidKey),
            "key_blocked" => Some(DenyReason::KeyBlocked),
            "key_expired" => Some(DenyReason::KeyExpired),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::InvalidKey => "invalid_key",
            DenyReason::KeyBlocked => "key_blocked",
            DenyReason::KeyExpired => "key_expired",
        }
    }

    /// The status the contract pairs with each reason.
    pub fn status(self) -> u16 {
        match self {
            DenyReason::InvalidKey => 401,
            DenyReason::KeyBlocked | DenyReason::KeyExpired => 403,
        }
    }
}

#[derive(Deserialize)]
struct AllowBody {
    decision: String,
    key_hash: Option<String>,
    key_alias: Option<String>,
    team_id: Option<String>,
    user_id: Option<String>,
    cache_ttl_seconds: Option<f64>,
}

#[derive(Deserialize)]
struct DenyBody {
    decision: String,
    reason: String,
}

/// Maps a call response to an outcome, per the contract table in docs/architecture.md.
pub fn decide(response: CallResponse<'_>, expected: &KeyHash) -> Outcome {
    if response.header_count == 0 {
        return Outcome::Error(CallError::NoResponse);
    }
    let Some(status) = response.status.and_then(parse_status) else {
        return Outcome::Error(CallError::NoStatus);
    };
    let body = response.body.unwrap_or_default();
    let decided = match status {
        200 => allow(body, expected),
        401 | 403 => deny(body, status),
        503 => Err(CallError::Unavailable),
        other => Err(CallError::UnexpectedStatus(other)),
    };
    decided.unwrap_or_else(Outcome::Error)
}

fn parse_status(raw: &[u8]) -> Option<u16> {
    std::str::from_utf8(raw)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|s| (100..=599).contains(s))
}

fn allow(body: &[u8], expected: &KeyHash) -> Result<Outcome, CallError> {
    let parsed: AllowBody = parse_body(body)?;
    if parsed.decision != "allow" {
        return Err(malformed("a 200 must carry \"decision\":\"allow\""));
    }
    if parsed.key_hash.is_some_and(|h| !expected.matches(&h)) {
        return Err(CallError::KeyHashMismatch);
    }
    Ok(Outcome::Allow {
        identity: Identity {
            key_alias: header_text(parsed.key_alias),
            team_id: header_text(parsed.team_id),
            user_id: header_text(parsed.user_id),
        },
        ttl_hint_ms: parsed.cache_ttl_seconds.map(seconds_to_ms),
    })
}

fn deny(body: &[u8], status: u16) -> Result<Outcome, CallError> {
    let parsed: DenyBody = parse_body(body)?;
    if parsed.decision != "deny" {
        return Err(malformed("a 401/403 must carry \"decision\":\"deny\""));
    }
    // A reason the contract does not pair with this status is malformed, not a guess.
    match DenyReason::parse(&parsed.reason) {
        Some(reason) if reason.status() == status => Ok(Outcome::Deny(reason)),
        _ => Err(malformed("the deny reason does not match the status")),
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, CallError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(malformed("body too large"));
    }
    serde_json::from_slice(body).map_err(|e| CallError::MalformedBody(e.to_string()))
}

fn malformed(why: &str) -> CallError {
    CallError::MalformedBody(why.to_string())
}

/// Identity values become upstream headers: only short, printable ASCII survives.
fn header_text(value: Option<String>) -> Option<String> {
    value.filter(|v| {
        !v.is_empty()
            && v.len() <= MAX_IDENTITY_VALUE_LEN
            && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
    })
}

/// Negative hints mean "do not cache"; `as` saturates, so huge hints cannot overflow.
fn seconds_to_ms(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1000.0) as u64
}

#[cfg(test)]
mod tests;
