//! The responses the filter sends itself: liveness, and OpenAI-style JSON errors.

use crate::model_body::BodyError;
use crate::path::PathError;
use livegate_contract::{
    Budget, CredentialError, DenyReason, ErrorObject, ErrorType, ModelDenied, RateLimited,
};

/// The liveness body: a JSON string, quotes included.
pub const LIVENESS_BODY: &str = "\"I'm alive!\"";

/// Every header name `RateLimited::headers` gives, for any kind of limit (a parallel
/// limit gives `retry-after` alone).
const RATE_LIMIT_HEADERS: [&str; 7] = [
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

/// A complete local reply; the glue hands it to `send_http_response` as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl LocalReply {
    /// `200 "I'm alive!"`, built from constants: nothing can delay or fail it.
    pub fn liveness() -> LocalReply {
        LocalReply::json(200, LIVENESS_BODY.to_string())
    }

    /// A non-probe method on a liveness path.
    pub fn method_not_allowed() -> LocalReply {
        let error = ErrorObject::new(
            405,
            ErrorType::BadRequestError,
            "liveness paths answer GET and HEAD only",
        )
        .with_reason("method_not_allowed");
        LocalReply::error(error).with("allow", "GET, HEAD")
    }

    /// 401 for a request without a usable API key.
    pub fn missing_credential(why: CredentialError) -> LocalReply {
        let error = ErrorObject::new(401, ErrorType::AuthError, why.to_string())
            .with_param("key")
            .with_reason("missing_credential");
        LocalReply::error(error).with_challenge()
    }

    /// 401 or 403 for a key the control plane refused: the contract's own error.
    pub fn denied(reason: DenyReason) -> LocalReply {
        let reply = LocalReply::error(reason.error());
        if reply.status == 401 {
            reply.with_challenge()
        } else {
            reply
        }
    }

    /// 400 `budget_exceeded`: LiteLLM's message with the spend and the maximum.
    pub fn over_budget(budget: &Budget) -> LocalReply {
        LocalReply::error(budget.error())
    }

    /// 429 `rate_limit_error`: the contract's error for the limit, with `retry-after` and
    /// OpenAI's `x-ratelimit-*` headers counted from `now_ms`.
    pub fn rate_limited(limited: &RateLimited, now_ms: u64) -> LocalReply {
        let mut reply = LocalReply::error(limited.error());
        for (name, value) in limited.headers(now_ms) {
            // A reply's header names are static; the contract names only these (a test
            // checks every one it can produce is here), so nothing is dropped.
            if let Some(name) = RATE_LIMIT_HEADERS
                .iter()
                .copied()
                .find(|known| *known == name)
            {
                reply = reply.with(name, &value);
            }
        }
        reply
    }

    /// 503 `spend_spool_full`: the control plane refused the key because its spend
    /// cannot be recorded; the contract's error, with `retry-after`.
    pub fn spend_spool_full(retry_after_seconds: u32) -> LocalReply {
        let error = match livegate_contract::AuthCheckResponse::spend_spool_full() {
            livegate_contract::AuthCheckResponse::Unavailable { error, .. } => error,
            _ => ErrorObject::new(503, ErrorType::SpendSpoolFull, "spend spool full"),
        };
        LocalReply::error(error).with("retry-after", &retry_after_seconds.to_string())
    }

    /// 503 when no decision can be made: never a 200 for a key nobody vouched for.
    pub fn unavailable(retry_after_seconds: u32) -> LocalReply {
        LocalReply::retry_later(
            "authentication is temporarily unavailable; retry later",
            "control_plane_unavailable",
            retry_after_seconds,
        )
    }

    /// 503 when the worker already holds its budget of bodies whose keys are being checked
    /// (`crate::unverified`): shed before the key is known, with `retry-after`.
    pub fn unverified_bodies_full(retry_after_seconds: u32) -> LocalReply {
        LocalReply::retry_later(
            "the gateway holds too many request bodies whose keys are being checked; retry later",
            "unverified_bodies_full",
            retry_after_seconds,
        )
    }

    /// A 503 `service_unavailable` with its `reason`, and `retry-after`.
    fn retry_later(message: &str, reason: &str, retry_after_seconds: u32) -> LocalReply {
        let error =
            ErrorObject::new(503, ErrorType::ServiceUnavailable, message).with_reason(reason);
        LocalReply::error(error).with("retry-after", &retry_after_seconds.to_string())
    }

    /// 500 when the filter could not make the request safe to forward (a credential
    /// header the host would not remove): refused rather than sent on with the key.
    pub fn internal_error() -> LocalReply {
        let error = ErrorObject::new(
            500,
            ErrorType::InternalServerError,
            "the gateway could not prepare this request; it was not forwarded",
        )
        .with_reason("header_rewrite_failed");
        LocalReply::error(error)
    }

    /// 401 for a model the key (or its team) may not call: LiteLLM's type, the model named.
    pub fn model_denied(denied: &ModelDenied) -> LocalReply {
        LocalReply::error(denied.error())
    }

    /// 400 for a model route whose body names no model: nothing is forwarded.
    pub fn bad_body(why: BodyError) -> LocalReply {
        let error = ErrorObject::new(400, ErrorType::BadRequestError, why.message())
            .with_param("model")
            .with_reason("model_missing");
        LocalReply::error(error)
    }

    /// 400 for a model route whose `stream` is not a JSON boolean: a lax upstream would
    /// stream it without the usage the filter asks for, so it is never forwarded.
    pub fn bad_stream() -> LocalReply {
        let error = ErrorObject::new(
            400,
            ErrorType::BadRequestError,
            "stream must be a JSON boolean (true or false)",
        )
        .with_param("stream");
        LocalReply::error(error)
    }

    /// 400 for a path the filter cannot normalise safely: decided on nothing, sent nowhere.
    pub fn bad_path(why: PathError) -> LocalReply {
        let error = ErrorObject::new(400, ErrorType::BadRequestError, why.to_string())
            .with_reason("bad_path");
        LocalReply::error(error)
    }

    /// The first value of a header the reply carries.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// An error reply whose status is the error's own `code`.
    /// 200 with a JSON body the filter answers itself (`GET /v1/models`).
    pub fn ok_json(body: String) -> LocalReply {
        LocalReply::json(200, body)
    }

    /// 400 for a model the model list cannot serve on this route: LiteLLM's message.
    pub fn unroutable(why: &crate::providers::Unroutable) -> LocalReply {
        let error = ErrorObject::new(400, ErrorType::BadRequestError, why.to_string())
            .with_param("model")
            .with_reason("invalid_model");
        LocalReply::error(error)
    }

    fn error(error: ErrorObject) -> LocalReply {
        let status = error.code.parse().unwrap_or(500);
        let body = serde_json::to_string(&error.into_body()).unwrap_or_default();
        LocalReply::json(status, body)
    }

    fn json(status: u16, body: String) -> LocalReply {
        LocalReply {
            status,
            headers: vec![
                ("content-type", "application/json".to_string()),
                ("cache-control", "no-store".to_string()),
            ],
            body,
        }
    }

    fn with(mut self, name: &'static str, value: &str) -> LocalReply {
        self.headers.push((name, value.to_string()));
        self
    }

    fn with_challenge(self) -> LocalReply {
        self.with("www-authenticate", "Bearer realm=\"livegate\"")
    }
}

#[cfg(test)]
mod tests;
