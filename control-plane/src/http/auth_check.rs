//! The filter's two internal calls: `POST /v1/auth/check`, answered with the contract's
//! bodies, and `GET /v1/auth/changes`, the change feed that carries revocations.

use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use livegate_contract::headers::{percent_decoded, MODEL_CHECK};
use livegate_contract::{Allow, AuthCheckResponse, KeyHash, ModelAccess};

use super::error::ApiError;
use super::extract::credential;
use super::AppState;
use crate::gate::decision::Decision;
use crate::gate::At;

pub async fn check(State(s): State<AppState>, headers: HeaderMap) -> Response {
    // One deadline for every database call of the check: the filter gives up soon after.
    let at = At::now(s.gate.settings().db_deadline);
    let credential = credential(&headers);
    // The allow names the secret it was asked about: a rotated key's old secret in its
    // grace period reads as the key (its record carries the key's token).
    let presented = credential.as_ref().ok().map(|k| k.hash());
    match headers.get(MODEL_CHECK) {
        None => render(s.gate.check(credential, at).await, presented),
        Some(value) => {
            let model = value.to_str().ok().and_then(percent_decoded);
            let Some(model) = model.filter(|m| !m.trim().is_empty()) else {
                let why = "x-livegate-model must be a percent-encoded model name";
                return ApiError::bad(MODEL_CHECK, why).into_response();
            };
            render(s.gate.check_model(credential, &model, at).await, presented)
        }
    }
}

/// The contract's body with its status; a 503 gets `retry-after` from the router.
fn render(decision: Decision, presented: Option<KeyHash>) -> Response {
    let answer = match decision {
        Decision::Allow {
            record,
            cache_ttl_seconds,
            lease,
        } => AuthCheckResponse::Allow(Allow {
            lease,
            limits: record.limits(),
            model_limits: record.model_limits(),
            key_hash: presented.unwrap_or(record.token),
            key_alias: record.key_alias,
            team_id: record.team_id,
            user_id: record.user_id,
            cache_ttl_seconds,
            expires_at_ms: record
                .expires
                .and_then(|e| u64::try_from(e.timestamp_millis()).ok()),
            version: u64::try_from(record.version).unwrap_or(0),
            access: ModelAccess {
                models: record.models,
                team_models: record.team.models,
                user_models: record.user.models,
                aliases: record.aliases,
                team_aliases: record.team.model_aliases,
            },
        }),
        Decision::Deny(reason) => AuthCheckResponse::deny(reason),
        Decision::OverBudget(budget) => AuthCheckResponse::over_budget(budget),
        Decision::SpendSpoolFull => AuthCheckResponse::spend_spool_full(),
        Decision::RateLimited(limited) => AuthCheckResponse::rate_limited(limited),
        Decision::Unavailable => AuthCheckResponse::db_unavailable(),
    };
    let status = StatusCode::from_u16(answer.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(answer)).into_response()
}

/// The change feed after `?after=<cursor>` (absent: from now, with a reset); 503 until
/// this replica has read the change log once.
pub async fn changes(State(s): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let after = match parse_after(raw.as_deref()) {
        Ok(after) => after,
        Err(e) => return e.into_response(),
    };
    match s.changes.since(after, s.config.feed.recent, Instant::now()) {
        Some(feed) => Json(feed).into_response(),
        None => ApiError::DbUnavailable.into_response(),
    }
}

fn parse_after(raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|e| ApiError::bad("after", format!("malformed query string: {e}")))?;
    match pairs.iter().find(|(k, _)| k == "after") {
        None => Ok(None),
        Some((_, v)) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad("after", "after must be a non-negative integer")),
    }
}
