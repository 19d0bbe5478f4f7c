//! The one error body of livegate, OpenAI's shape with LiteLLM's `type` strings:
//! `{"error": {"message", "type", "param", "code"}}`, plus a machine-readable `reason`
//! where the filter or the auth check has one.

use serde::{Deserialize, Serialize};

/// Every `error.type` livegate sends. Where LiteLLM's proxy has a string for the same case
/// it is LiteLLM's (clients and dashboards already match on them); the rest are OpenAI's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// 400, 405, 413: the request itself is wrong (LiteLLM's `bad_request_error`).
    BadRequestError,
    /// 401/403: no usable credential, a blocked key, or not the master key.
    AuthError,
    /// 401: a well-formed key that no record matches.
    TokenNotFoundInDb,
    /// 403: the key's `expires` has passed.
    ExpiredKey,
    /// 401: the key's own `models` does not list the requested model.
    KeyModelAccessDenied,
    /// 401: the key's team's `models` does not list the requested model.
    TeamModelAccessDenied,
    /// 401: the key's user's `models` does not list the requested model.
    UserModelAccessDenied,
    /// 404.
    NotFoundError,
    /// 400: the key's or its team's spend has reached its `max_budget` (LiteLLM's type).
    BudgetExceeded,
    /// 429: a rate limit of the key or its team is reached (with `retry-after` and
    /// OpenAI's `x-ratelimit-*` headers).
    RateLimitError,
    /// 503: the spend spool is at its bound and the key has a budget (or the operator chose
    /// to refuse every key there): its spend could not be recorded.
    SpendSpoolFull,
    /// 503: the database is away and the answer needs it.
    NoDbConnection,
    /// 503: the filter could not reach the control plane and had nothing it may serve.
    ServiceUnavailable,
    /// 500: the detail is logged, never returned.
    InternalServerError,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadRequestError => "bad_request_error",
            ErrorType::AuthError => "auth_error",
            ErrorType::TokenNotFoundInDb => "token_not_found_in_db",
            ErrorType::ExpiredKey => "expired_key",
            ErrorType::KeyModelAccessDenied => "key_model_access_denied",
            ErrorType::TeamModelAccessDenied => "team_model_access_denied",
            ErrorType::UserModelAccessDenied => "user_model_access_denied",
            ErrorType::NotFoundError => "not_found_error",
            ErrorType::BudgetExceeded => "budget_exceeded",
            ErrorType::RateLimitError => "rate_limit_error",
            ErrorType::SpendSpoolFull => "spend_spool_full",
            ErrorType::NoDbConnection => "no_db_connection",
            ErrorType::ServiceUnavailable => "service_unavailable",
            ErrorType::InternalServerError => "internal_server_error",
        }
    }
}

/// The object under `error`. `code` is the HTTP status as text, as LiteLLM sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub param: Option<String>,
    pub code: String,
    /// A finer cause than `type` (`invalid_key`, `key_blocked`, `missing_credential`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `{"error": {...}}`: every error livegate answers, from the filter or the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

impl ErrorObject {
    pub fn new(status: u16, kind: ErrorType, message: impl Into<String>) -> ErrorObject {
        ErrorObject {
            message: message.into(),
            kind,
            param: None,
            code: status.to_string(),
            reason: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> ErrorObject {
        self.param = Some(param.into());
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> ErrorObject {
        self.reason = Some(reason.into());
        self
    }

    pub fn into_body(self) -> ErrorBody {
        ErrorBody { error: self }
    }
}
