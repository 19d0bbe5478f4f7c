//! Key management with LiteLLM's shapes: generate, list, info, update, delete, block, unblock.

use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{JsonBody, MasterKey};
use super::AppState;
use crate::key_cache::KeyState;
use crate::keys::{self, KeyHash};
use crate::record::{KeyFilter, KeyPatch, KeyRecord};

type ApiResult = Result<Json<Value>, ApiError>;

/// Fields shared by generate and update. Unknown LiteLLM fields are accepted and ignored,
/// so existing scripts keep working.
#[derive(Debug, Default, Deserialize)]
pub struct KeyFields {
    /// Generate: an optional caller-chosen key. Update: the key to change (raw or hash).
    key: Option<String>,
    key_alias: Option<String>,
    duration: Option<String>,
    team_id: Option<String>,
    user_id: Option<String>,
    models: Option<Vec<String>>,
    max_budget: Option<f64>,
    metadata: Option<Value>,
    blocked: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct KeyRef {
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct DeleteRequest {
    keys: Option<Vec<String>>,
    key_aliases: Option<Vec<String>>,
}

impl KeyFields {
    /// Validates every field and turns it into a patch; `now` anchors `duration`.
    fn into_patch(self, now: DateTime<Utc>) -> Result<KeyPatch, ApiError> {
        if let Some(a) = &self.key_alias {
            if a.trim().is_empty() || a.len() > 256 {
                return Err(ApiError::bad(
                    "key_alias",
                    "key_alias must be 1 to 256 characters",
                ));
            }
        }
        if let Some(b) = self.max_budget {
            if !b.is_finite() || b < 0.0 {
                return Err(ApiError::bad(
                    "max_budget",
                    "max_budget must be a non-negative number",
                ));
            }
        }
        if self.metadata.as_ref().is_some_and(|m| !m.is_object()) {
            return Err(ApiError::bad("metadata", "metadata must be a JSON object"));
        }
        let expires = match self.duration.as_deref() {
            None => None,
            Some(d) => {
                let d = keys::parse_duration(d)
                    .map_err(|e| ApiError::bad("duration", e.to_string()))?;
                let d = chrono::Duration::from_std(d)
                    .map_err(|_| ApiError::bad("duration", "duration is too long"))?;
                Some(
                    now.checked_add_signed(d)
                        .ok_or_else(|| ApiError::bad("duration", "duration is too long"))?,
                )
            }
        };
        Ok(KeyPatch {
            key_alias: self.key_alias,
            team_id: self.team_id,
            user_id: self.user_id,
            models: self.models,
            max_budget: self.max_budget,
            metadata: self.metadata,
            blocked: self.blocked,
            expires,
        })
    }
}

/// Reads a key reference (raw key or its hash) from a request field.
fn key_ref(param: &str, value: Option<&str>) -> Result<KeyHash, ApiError> {
    let v = value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad(param, format!("{param} is required")))?;
    keys::key_hash_of_raw_or_hash(v).ok_or_else(|| {
        ApiError::bad(
            param,
            format!("{param} must be an sk- key or its SHA-256 hex"),
        )
    })
}

/// A record as LiteLLM shows it, with `key` set as asked.
fn shown(record: &KeyRecord, key: &str) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or_else(|_| json!({}));
    v["key"] = json!(key);
    v
}

fn not_found() -> ApiError {
    ApiError::NotFound("key not found".into())
}

pub async fn generate(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(mut req): JsonBody<KeyFields>,
) -> ApiResult {
    let now = Utc::now().trunc_subsecs(6);
    let raw = match req.key.take() {
        Some(k) => {
            keys::validate_key(&k).map_err(|e| ApiError::bad("key", e.to_string()))?;
            k
        }
        None => keys::generate_key().map_err(|e| ApiError::Internal(format!("OS RNG: {e}")))?,
    };
    let p = req.into_patch(now)?;
    let record = KeyRecord {
        token: KeyHash::of_raw(&raw),
        key_name: keys::key_name(&raw),
        key_alias: p.key_alias,
        team_id: p.team_id,
        user_id: p.user_id,
        models: p.models.unwrap_or_default(),
        max_budget: p.max_budget,
        metadata: p.metadata.unwrap_or_else(|| json!({})),
        blocked: p.blocked.unwrap_or(false),
        spend: 0.0,
        expires: p.expires,
        created_at: now,
        updated_at: now,
        version: 0,
    };
    let version = s.db.insert_key(record.clone()).await?;
    let record = KeyRecord { version, ..record };
    remember(&s, &record);
    tracing::info!(key_name = %record.key_name, "key generated");
    Ok(Json(shown(&record, &raw)))
}

/// Reads `name` from a query string (percent-decoded).
fn query_param(q: &[(String, String)], name: &str) -> Option<String> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn parse_query(raw: Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(&raw.unwrap_or_default()).map_err(|e| ApiError::BadRequest {
        message: format!("malformed query string: {e}"),
        param: None,
    })
}

fn number(q: &[(String, String)], name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
    match query_param(q, name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad(name, format!("{name} must be an integer from 1 to {max}"))
            }),
    }
}

pub async fn list(State(s): State<AppState>, _: MasterKey, RawQuery(raw): RawQuery) -> ApiResult {
    let q = parse_query(raw)?;
    let filter = KeyFilter {
        key_alias: query_param(&q, "key_alias"),
        team_id: query_param(&q, "team_id"),
        user_id: query_param(&q, "user_id"),
        page: number(&q, "page", 1, u32::MAX)?,
        size: number(&q, "size", 10, 100)?,
    };
    let full = match query_param(&q, "return_full_object").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::bad(
                "return_full_object",
                "return_full_object must be true or false",
            ))
        }
    };
    let (page, size) = (filter.page, filter.size);
    let result = s.db.list_keys(filter).await?;
    let keys: Vec<Value> = result
        .keys
        .iter()
        .map(|r| {
            if full {
                shown(r, r.token.as_str())
            } else {
                json!(r.token)
            }
        })
        .collect();
    let total_pages = result.total.div_ceil(u64::from(size));
    Ok(Json(
        json!({"keys": keys, "total_count": result.total, "current_page": page, "total_pages": total_pages}),
    ))
}

pub async fn info(State(s): State<AppState>, _: MasterKey, RawQuery(raw): RawQuery) -> ApiResult {
    let q = parse_query(raw)?;
    let token = key_ref("key", query_param(&q, "key").as_deref())?;
    let record = s.db.get_key(&token).await?.ok_or_else(not_found)?;
    Ok(Json(json!({"key": record.token, "info": record})))
}

pub async fn update(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(mut req): JsonBody<KeyFields>,
) -> ApiResult {
    let token = key_ref("key", req.key.take().as_deref())?;
    let patch = req.into_patch(Utc::now().trunc_subsecs(6))?;
    apply(&s, &token, patch).await
}

pub async fn block(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(req): JsonBody<KeyRef>,
) -> ApiResult {
    set_blocked(&s, &req, true).await
}

pub async fn unblock(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(req): JsonBody<KeyRef>,
) -> ApiResult {
    set_blocked(&s, &req, false).await
}

async fn set_blocked(s: &AppState, req: &KeyRef, blocked: bool) -> ApiResult {
    let token = key_ref("key", req.key.as_deref())?;
    let patch = KeyPatch {
        blocked: Some(blocked),
        ..KeyPatch::default()
    };
    apply(s, &token, patch).await
}

/// Writes a patch; this replica's cache holds the new state at once (its peers learn it
/// from the change log), and no read older than the write can replace it.
async fn apply(s: &AppState, token: &KeyHash, patch: KeyPatch) -> ApiResult {
    let record = s.db.update_key(token, patch).await?.ok_or_else(not_found)?;
    remember(s, &record);
    Ok(Json(shown(&record, record.token.as_str())))
}

fn remember(s: &AppState, record: &KeyRecord) {
    let state = KeyState::Present(Box::new(record.clone()));
    s.cache
        .put(&record.token, state, record.version, Instant::now());
}

pub async fn delete(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(req): JsonBody<DeleteRequest>,
) -> ApiResult {
    let keys = req.keys.unwrap_or_default();
    let aliases = req.key_aliases.unwrap_or_default();
    if keys.is_empty() && aliases.is_empty() {
        return Err(ApiError::bad("keys", "give keys or key_aliases"));
    }
    let tokens = keys
        .iter()
        .map(|k| key_ref("keys", Some(k)))
        .collect::<Result<Vec<_>, _>>()?;
    let deleted = s.db.delete_keys(tokens, aliases).await?;
    let now = Instant::now();
    for (token, version) in &deleted {
        s.cache.put(token, KeyState::Deleted, *version, now);
    }
    if deleted.is_empty() {
        return Err(not_found());
    }
    let tokens: Vec<&KeyHash> = deleted.iter().map(|(t, _)| t).collect();
    Ok(Json(json!({"deleted_keys": tokens})))
}
