//! Why a key is refused, and whose budget: the vocabulary the auth check's denies and the
//! rate limits' 429s share, below both.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorObject, ErrorType};

/// Why a key is refused; each has its own status, `error.type` and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    InvalidKey,
    KeyBlocked,
    KeyExpired,
    /// The key's team is blocked (or was deleted while the key was cached).
    TeamBlocked,
    /// The key's, its user's or its team's spend has reached its `max_budget`: the deny carries a
    /// `Budget` with the numbers.
    BudgetExceeded,
    /// A rate limit of the key, its user or its team is reached: the deny carries a
    /// `RateLimited` with the limit and when the window has room.
    RateLimited,
}

/// Whose budget refused a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    Key,
    Team,
    /// The key's user (the user its `user_id` names).
    User,
    /// The key's user within the key's team (the membership's `max_budget_in_team`).
    Member,
}

impl DenyReason {
    pub const ALL: [DenyReason; 6] = [
        DenyReason::InvalidKey,
        DenyReason::KeyBlocked,
        DenyReason::KeyExpired,
        DenyReason::TeamBlocked,
        DenyReason::BudgetExceeded,
        DenyReason::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::InvalidKey => "invalid_key",
            DenyReason::KeyBlocked => "key_blocked",
            DenyReason::KeyExpired => "key_expired",
            DenyReason::TeamBlocked => "team_blocked",
            DenyReason::BudgetExceeded => "budget_exceeded",
            DenyReason::RateLimited => "rate_limited",
        }
    }

    /// The status the contract pairs with each reason.
    pub fn status(self) -> u16 {
        match self {
            DenyReason::InvalidKey => 401,
            DenyReason::BudgetExceeded => 400,
            DenyReason::RateLimited => 429,
            DenyReason::KeyBlocked | DenyReason::KeyExpired | DenyReason::TeamBlocked => 403,
        }
    }

    pub fn error_type(self) -> ErrorType {
        match self {
            DenyReason::InvalidKey => ErrorType::TokenNotFoundInDb,
            DenyReason::KeyBlocked | DenyReason::TeamBlocked => ErrorType::AuthError,
            DenyReason::KeyExpired => ErrorType::ExpiredKey,
            DenyReason::BudgetExceeded => ErrorType::BudgetExceeded,
            DenyReason::RateLimited => ErrorType::RateLimitError,
        }
    }

    /// The error a client sees for this refusal, from the filter or the control plane alike.
    pub fn error(self) -> ErrorObject {
        let message = match self {
            DenyReason::InvalidKey => "invalid API key",
            DenyReason::KeyBlocked => "this API key is blocked",
            DenyReason::KeyExpired => "this API key has expired",
            DenyReason::TeamBlocked => "this API key's team is blocked",
            DenyReason::BudgetExceeded => "this API key's budget is exceeded",
            DenyReason::RateLimited => "this API key's rate limit is reached",
        };
        ErrorObject::new(self.status(), self.error_type(), message)
            .with_param("key")
            .with_reason(self.as_str())
    }
}
