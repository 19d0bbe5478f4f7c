//! The responses the filter sends itself: liveness, and OpenAI-style JSON errors.

use crate::credential::CredentialError;
use crate::decision::DenyReason;
use serde_json::{json, Value};

/// The liveness body: a JSON string, quotes included.
pub const LIVENESS_BODY: &str = "\"I'm alive!\"";

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
        let body = error_body(
            "liveness paths answer GET and HEAD only",
            "invalid_request_error",
            Value::Null,
            405,
            "method_not_allowed",
        );
        LocalReply::json(405, body).with("allow", "GET, HEAD")
    }

    /// 401 for a request without a usable API key.
    pub fn missing_credential(why: CredentialError) -> LocalReply {
        let body = error_body(
            &why.to_string(),
            "auth_error",
            json!("key"),
            401,
            "missing_credential",
        );
        LocalReply::json(401, body).with_challenge()
    }

    /// 401 or 403 for a key the control plane refused.
    pub fn denied(reason: DenyReason) -> LocalReply {
        let message = match reason {
            DenyReason::InvalidKey => "invalid API key",
            DenyReason::KeyBlocked => "this API key is blocked",
            DenyReason::KeyExpired => "this API key has expired",
        };
        let status = reason.status();
        let message = format!("{message} (reason: {})", reason.as_str());
        let body = error_body(
            &message,
            "auth_error",
            json!("key"),
            status,
            reason.as_str(),
        );
        let reply = LocalReply::json(status, body);
        if status == 401 {
            reply.with_challenge()
        } else {
            reply
        }
    }

    /// 503 when no decision can be made: never a 200 for a key nobody vouched for.
    pub fn unavailable(retry_after_seconds: u32) -> LocalReply {
        let body = error_body(
            "authentication is temporarily unavailable; retry later",
            "service_unavailable",
            Value::Null,
            503,
            "control_plane_unavailable",
        );
        LocalReply::json(503, body).with("retry-after", &retry_after_seconds.to_string())
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

/// `{"error": {"message", "type", "param", "code", "reason"}}`; `code` is the status as text.
fn error_body(message: &str, kind: &str, param: Value, status: u16, reason: &str) -> String {
    json!({
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": status.to_string(),
            "reason": reason,
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests;
