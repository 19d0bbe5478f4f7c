//! `POST /v1/auth/check`: the filter's question, answered with the contract's bodies.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use livegate_contract::{Allow, AuthCheckResponse, DenyReason};

use super::AppState;
use crate::auth::{self, Decision};

pub async fn check(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let decision = match auth::credential(&headers) {
        Err(_) => Decision::Deny(DenyReason::InvalidKey),
        Ok(key) => {
            let token = key.hash();
            let deadline = s.config.auth_db_deadline;
            match auth::resolve(&s.db, &s.cache, &s.metrics, &token, deadline).await {
                Ok(record) => auth::decide(record, Utc::now(), s.config.auth_cache_ttl.as_secs()),
                Err(_) => Decision::Unavailable,
            }
        }
    };
    s.metrics.count_auth_decision(outcome(&decision));
    render(decision)
}

/// The metric label of a decision.
fn outcome(decision: &Decision) -> &'static str {
    match decision {
        Decision::Allow { .. } => "allow",
        Decision::Deny(reason) => reason.as_str(),
        Decision::Unavailable => "db_unavailable",
    }
}

/// The contract's body with its status; a 503 gets `retry-after` from the router.
fn render(decision: Decision) -> Response {
    let answer = match decision {
        Decision::Allow {
            record,
            cache_ttl_seconds,
        } => AuthCheckResponse::Allow(Allow {
            key_hash: record.token,
            key_alias: record.key_alias,
            team_id: record.team_id,
            user_id: record.user_id,
            cache_ttl_seconds,
        }),
        Decision::Deny(reason) => AuthCheckResponse::deny(reason),
        Decision::Unavailable => AuthCheckResponse::db_unavailable(),
    };
    let status = StatusCode::from_u16(answer.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(answer)).into_response()
}
