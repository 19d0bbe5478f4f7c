//! `POST /v1/auth/check`: the filter asks, the control plane answers with one of three
//! bodies. The request has no body: the client's key rides in `authorization: Bearer`.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorObject, ErrorType};
use crate::key::KeyHash;
use crate::models::ModelAccess;
use crate::rate_limit::{AdmissionLease, ModelLimits, RateLimited, RateLimits};

pub use crate::refusal::{BudgetScope, DenyReason};

/// The control plane's internal path for auth checks; Envoy never routes it from outside.
pub const AUTH_CHECK_PATH: &str = "/v1/auth/check";

/// The numbers of a budget refusal: the spend the control plane counted (drained, plus
/// what it holds spooled) and the maximum it reached. USD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub scope: BudgetScope,
    /// The team whose budget it is (`scope` `team`, `member`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// The user whose budget it is (`scope` `user`, `member`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub spend: f64,
    pub max_budget: f64,
    /// A key's budget for one model (`model_max_budget`): the model, as configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelBudgetOf>,
}

/// Whose budget for a model was crossed, as LiteLLM's message names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelBudgetOf {
    pub model: String,
    pub key_hash: KeyHash,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_alias: Option<String>,
}

// JSON has no NaN: a decoded or computed spend is a finite number, so equality is total.
impl Eq for Budget {}

impl Budget {
    /// LiteLLM's 400 `budget_exceeded`, with its message for a key, a user or a team.
    pub fn error(&self) -> ErrorObject {
        let reason = DenyReason::BudgetExceeded;
        if let Some(of) = &self.model {
            // LiteLLM's `_PROXY_VirtualKeyModelMaxBudgetLimiter`, word for word.
            let message = format!(
                "LiteLLM Virtual Key: {}, key_alias: {}, exceeded budget for model={}",
                of.key_hash.as_str(),
                of.key_alias.as_deref().unwrap_or("None"),
                of.model
            );
            return ErrorObject::new(reason.status(), reason.error_type(), message)
                .with_param("model_max_budget")
                .with_reason(reason.as_str());
        }
        let message = match (self.scope, &self.team_id) {
            (BudgetScope::User, _) => format!(
                "ExceededBudget: User={} over budget. Spend={}, Budget={}",
                self.user_id.as_deref().unwrap_or(""),
                self.spend,
                self.max_budget
            ),
            (BudgetScope::Member, team) => format!(
                "Budget has been exceeded! User={} in Team={} Current cost: {}, Max budget: {}",
                self.user_id.as_deref().unwrap_or(""),
                team.as_deref().unwrap_or(""),
                self.spend,
                self.max_budget
            ),
            (BudgetScope::Team, Some(team)) => format!(
                "Budget has been exceeded! Team={team} Current cost: {}, Max budget: {}",
                self.spend, self.max_budget
            ),
            (BudgetScope::Team, None) => format!(
                "Budget has been exceeded! Current cost: {}, Max budget: {}",
                self.spend, self.max_budget
            ),
            (BudgetScope::Key, _) => format!(
                "ExceededTokenBudget: Current spend for token: {}; Max Budget for Token: {}",
                self.spend, self.max_budget
            ),
        };
        ErrorObject::new(reason.status(), reason.error_type(), message)
            .with_param("key")
            .with_reason(reason.as_str())
    }
}

/// Why the control plane could not decide (503): never a deny and never an allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableReason {
    DbUnavailable,
    /// The spend spool is at its bound and the operator's `--spend-spool-full` refuses this
    /// key: its spend could not be recorded. The filter refuses it too (no stale allow).
    SpendSpoolFull,
}

/// The body of a 200: who the key belongs to, and how long the filter may cache that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allow {
    pub key_hash: KeyHash,
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub cache_ttl_seconds: u64,
    /// The key's `expires` in Unix milliseconds: nothing may serve it past this, stale or not.
    pub expires_at_ms: Option<u64>,
    /// The key's state version (the change-feed number of its last change): an allow older
    /// than a change the filter has already applied is not cached.
    pub version: u64,
    /// Which models the key may call (its own list, its team's, its aliases).
    #[serde(flatten)]
    pub access: ModelAccess,
    /// The key's effective rate limits. A key with any is checked by the control plane on
    /// every request (never admitted from a cache while the control plane answers).
    #[serde(default, skip_serializing_if = "RateLimits::is_none")]
    pub limits: RateLimits,
    /// For a key whose only limits are `rpm_limit`s: admissions the filter may serve from
    /// its cache, already counted in the key's windows (docs/architecture.md, "Rate limits").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<AdmissionLease>,
    /// Per-model limits (`model_rpm_limit`, `model_tpm_limit`; the stricter of the key's and
    /// its team's), by model: a request for one of these models is checked again, with its
    /// model, on every request (`x-livegate-model`), once its body has named it. A model of
    /// the key's `model_max_budget` is listed too (with no limit: the check is its budget's).
    #[serde(default, skip_serializing_if = "ModelLimits::is_empty")]
    pub model_limits: ModelLimits,
}

/// Every answer to an auth check, tagged by `decision`. The status goes with the variant:
/// see [`AuthCheckResponse::status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum AuthCheckResponse {
    Allow(Allow),
    Deny {
        reason: DenyReason,
        error: ErrorObject,
        /// With `budget_exceeded` only: whose budget, the spend and the maximum.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget: Option<Budget>,
        /// With `rate_limited` only: which limit, and when the window has room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate_limit: Option<RateLimited>,
    },
    Unavailable {
        reason: UnavailableReason,
        error: ErrorObject,
    },
}

impl UnavailableReason {
    pub fn as_str(self) -> &'static str {
        match self {
            UnavailableReason::DbUnavailable => "db_unavailable",
            UnavailableReason::SpendSpoolFull => "spend_spool_full",
        }
    }
}

impl AuthCheckResponse {
    pub fn deny(reason: DenyReason) -> AuthCheckResponse {
        AuthCheckResponse::Deny {
            reason,
            error: reason.error(),
            budget: None,
            rate_limit: None,
        }
    }

    /// 429 `rate_limit_error`, with the limit and when the window has room.
    pub fn rate_limited(limited: RateLimited) -> AuthCheckResponse {
        AuthCheckResponse::Deny {
            reason: DenyReason::RateLimited,
            error: limited.error(),
            budget: None,
            rate_limit: Some(limited),
        }
    }

    /// 400 `budget_exceeded` with the numbers, structured and in the message.
    pub fn over_budget(budget: Budget) -> AuthCheckResponse {
        AuthCheckResponse::Deny {
            reason: DenyReason::BudgetExceeded,
            error: budget.error(),
            budget: Some(budget),
            rate_limit: None,
        }
    }

    pub fn db_unavailable() -> AuthCheckResponse {
        let reason = UnavailableReason::DbUnavailable;
        let error = ErrorObject::new(
            503,
            ErrorType::NoDbConnection,
            "the database is unavailable and this key is not known without it; retry later",
        )
        .with_reason(reason.as_str());
        AuthCheckResponse::Unavailable { reason, error }
    }

    /// 503 `spend_spool_full`: spend cannot be recorded, and this key is refused for it.
    pub fn spend_spool_full() -> AuthCheckResponse {
        let reason = UnavailableReason::SpendSpoolFull;
        let error = ErrorObject::new(
            503,
            ErrorType::SpendSpoolFull,
            "spend cannot be recorded right now (the spend spool is full), so keys with a budget are refused; retry later",
        )
        .with_reason(reason.as_str());
        AuthCheckResponse::Unavailable { reason, error }
    }

    /// The HTTP status this answer is sent with; the filter checks the pair.
    pub fn status(&self) -> u16 {
        match self {
            AuthCheckResponse::Allow(_) => 200,
            AuthCheckResponse::Deny { reason, .. } => reason.status(),
            AuthCheckResponse::Unavailable { .. } => 503,
        }
    }
}

#[cfg(test)]
mod tests;
