//! The control plane's answer to `POST /v1/auth/check`, mapped to what the filter does.

use crate::time::Millis;
use livegate_contract::{
    AdmissionLease, AuthCheckResponse, Budget, KeyHash, ModelAccess, ModelLimits, RateLimited,
    RateLimits, UnavailableReason,
};

pub use livegate_contract::DenyReason;

/// Identity values longer than this are dropped rather than forwarded or cached (the
/// control plane's API accepts no longer one).
pub const MAX_IDENTITY_VALUE_LEN: usize = 256;

/// Bodies past this size are not an auth check answer; the glue reads no more than this.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Who the key belongs to, as the control plane reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    /// Which models the key may call (checked on the model routes).
    pub access: ModelAccess,
    /// The key's effective rate limits. With any, the key is never admitted from the cache
    /// while the control plane answers (it counts), and a stale allow is held to the
    /// worker's share of them (`local_limits`).
    pub limits: RateLimits,
    /// Per-model limits by model: a request for one of these models asks the control plane
    /// again with its model once its body named it (`flow/model_limits.rs`).
    pub model_limits: ModelLimits,
}

/// What an allow from the control plane says besides the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The control plane's `cache_ttl_seconds`, in milliseconds (capped by `allow_ttl_ms`).
    pub ttl_hint_ms: u64,
    /// The key's expiry: nothing is served past it, fresh or stale.
    pub expires_at: Option<Millis>,
    /// The key's state version: older than a revocation already applied, it is refused.
    pub version: u64,
    /// Admissions of a rate-limited key this worker may serve itself (`Allow::lease`).
    pub lease: Option<AdmissionLease>,
}

impl Grant {
    /// A grant with only a TTL hint (no expiry, version 0).
    pub fn ttl(ttl_hint_ms: u64) -> Grant {
        Grant {
            ttl_hint_ms,
            expires_at: None,
            version: 0,
            lease: None,
        }
    }
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
// One per auth check answer, consumed at once: boxing the allow would add an allocation
// to every answer to save a few bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow {
        identity: Identity,
        grant: Grant,
    },
    Deny(DenyReason),
    /// 400 `budget_exceeded`, with the numbers for the message. Never cached: the next
    /// request asks again, so a budget reset or a raised `max_budget` lets the key in.
    OverBudget(Budget),
    /// 429 `rate_limited`, with the limit and when its window has room: cached for the key
    /// until then, so a flood of a limited key costs the control plane nothing (not a
    /// parallel one: a slot frees whenever one of the key's requests ends).
    RateLimited(RateLimited),
    /// 503 `spend_spool_full`: the control plane cannot record spend and refuses this key
    /// for it. Refused, never served from a stale allow (that would be failing open).
    SpendSpoolFull,
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

/// Maps a call response to an outcome, per the contract table in docs/architecture.md.
pub fn decide(response: CallResponse<'_>, expected: &KeyHash) -> Outcome {
    if response.header_count == 0 {
        return Outcome::Error(CallError::NoResponse);
    }
    let Some(status) = response.status.and_then(parse_status) else {
        return Outcome::Error(CallError::NoStatus);
    };
    match status {
        // Unavailable whatever the body says, but for the one refusal a 503 carries: a
        // 503 is never read as an allow or a deny.
        503 => match parse_body(response.body.unwrap_or_default()) {
            Ok(AuthCheckResponse::Unavailable {
                reason: UnavailableReason::SpendSpoolFull,
                ..
            }) => Outcome::SpendSpoolFull,
            _ => Outcome::Error(CallError::Unavailable),
        },
        200 | 400 | 401 | 403 | 429 => match parse_body(response.body.unwrap_or_default()) {
            Ok(answer) if answer.status() != status => Outcome::Error(malformed(
                "the decision does not match the status it came with",
            )),
            Ok(answer) => outcome(answer, expected),
            Err(e) => Outcome::Error(e),
        },
        other => Outcome::Error(CallError::UnexpectedStatus(other)),
    }
}

fn outcome(answer: AuthCheckResponse, expected: &KeyHash) -> Outcome {
    match answer {
        AuthCheckResponse::Allow(allow) if allow.key_hash != *expected => {
            Outcome::Error(CallError::KeyHashMismatch)
        }
        AuthCheckResponse::Allow(allow) => Outcome::Allow {
            identity: Identity {
                key_alias: identity_text(allow.key_alias),
                team_id: identity_text(allow.team_id),
                user_id: identity_text(allow.user_id),
                access: allow.access,
                limits: allow.limits,
                model_limits: allow.model_limits,
            },
            grant: Grant {
                ttl_hint_ms: allow.cache_ttl_seconds.saturating_mul(1000),
                expires_at: allow.expires_at_ms,
                version: allow.version,
                lease: allow.lease,
            },
        },
        AuthCheckResponse::Deny {
            reason: DenyReason::BudgetExceeded,
            budget,
            ..
        } => match budget {
            Some(budget) if budget.spend.is_finite() && budget.max_budget.is_finite() => {
                Outcome::OverBudget(budget)
            }
            _ => Outcome::Error(malformed("a budget_exceeded deny without its numbers")),
        },
        AuthCheckResponse::Deny {
            reason: DenyReason::RateLimited,
            rate_limit,
            ..
        } => match rate_limit {
            Some(limited) => Outcome::RateLimited(limited),
            None => Outcome::Error(malformed("a rate_limited deny without its limit")),
        },
        AuthCheckResponse::Deny { reason, .. } => Outcome::Deny(reason),
        AuthCheckResponse::Unavailable { .. } => Outcome::Error(CallError::Unavailable),
    }
}

fn parse_status(raw: &[u8]) -> Option<u16> {
    std::str::from_utf8(raw)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|s| (100..=599).contains(s))
}

fn parse_body(body: &[u8]) -> Result<AuthCheckResponse, CallError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(malformed("body too large"));
    }
    serde_json::from_slice(body).map_err(|e| CallError::MalformedBody(e.to_string()))
}

fn malformed(why: &str) -> CallError {
    CallError::MalformedBody(why.to_string())
}

/// Identity values are kept as the control plane sent them, whatever their characters:
/// the spend record carries them as they are (so a team's spend reaches the team for
/// every id the API accepts), and headers carry them percent-encoded (`upstream_headers`).
/// Only an empty or over-long value, or one with a NUL (which no database row can hold),
/// is dropped.
fn identity_text(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty() && v.len() <= MAX_IDENTITY_VALUE_LEN && !v.contains('\0'))
}

#[cfg(test)]
mod tests;
