//! `POST /v1/auth/check`: the filter's question, answered with the contract's exact bodies.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::json;

use super::error::{retry_after, ApiError};
use super::AppState;
use crate::auth::{self, Decision, DenyReason};
use crate::keys::KeyHash;

pub async fn check(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let decision = match auth::credential(&headers) {
        None => Decision::Deny(DenyReason::InvalidKey),
        Some(raw) => {
            let token = KeyHash::of_raw(raw);
            match auth::resolve(
                &s.db,
                &s.cache,
                &s.metrics,
                &token,
                s.config.auth_db_deadline,
            )
            .await
            {
                Ok(record) => auth::decide(record, Utc::now(), s.config.auth_cache_ttl.as_secs()),
                Err(_) => Decision::Unavailable,
            }
        }
    };
    render(&s, decision)
}

fn render(s: &AppState, decision: Decision) -> Response {
    match decision {
        Decision::Allow {
            record,
            cache_ttl_seconds,
        } => {
            s.metrics.count_auth_decision("allow");
            let body = json!({
                "decision": "allow",
                "key_hash": record.token,
                "key_alias": record.key_alias,
                "team_id": record.team_id,
                "user_id": record.user_id,
                "cache_ttl_seconds": cache_ttl_seconds,
            });
            (StatusCode::OK, Json(body)).into_response()
        }
        Decision::Deny(reason) => {
            s.metrics.count_auth_decision(reason.as_str());
            let (status, err) = match reason {
                DenyReason::InvalidKey => (StatusCode::UNAUTHORIZED, ApiError::Unauthorized),
                DenyReason::KeyBlocked | DenyReason::KeyExpired => {
                    (StatusCode::FORBIDDEN, ApiError::Forbidden)
                }
            };
            let mut body = deny_error(reason, err);
            body["decision"] = json!("deny");
            body["reason"] = json!(reason.as_str());
            (status, Json(body)).into_response()
        }
        Decision::Unavailable => {
            s.metrics.count_auth_decision("db_unavailable");
            let err = ApiError::DbUnavailable {
                retry_after: s.config.retry_after,
            };
            let mut body = err.body();
            body["decision"] = json!("unavailable");
            body["reason"] = json!("db_unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [retry_after(s.config.retry_after)],
                Json(body),
            )
                .into_response()
        }
    }
}

/// The `error` object of a deny, with a message that says which rule refused the key.
fn deny_error(reason: DenyReason, err: ApiError) -> serde_json::Value {
    let mut body = err.body();
    body["error"]["message"] = json!(match reason {
        DenyReason::InvalidKey => "invalid or missing API key",
        DenyReason::KeyBlocked => "this API key is blocked",
        DenyReason::KeyExpired => "this API key has expired",
    });
    body
}
