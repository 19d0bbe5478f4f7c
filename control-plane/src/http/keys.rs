//! Key management with LiteLLM's shapes: generate, list, info, update, delete, block, unblock.
//! The master key manages every key; a team admin's key the keys of its team (`access.rs`).

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::access::{check_key_write, check_new_key, check_no_move, manager};
use super::error::ApiError;
use super::extract::{check_fields, Caller, Fields, JsonBody, MasterKey};
use super::AppState;
use crate::gate::decision::{decide, Decision};
use crate::key_cache::KeyState;
use crate::model::keys::{self, KeyHash};
use crate::model::{KeyFilter, KeyPatch, KeyRecord, Limits, TeamPolicy};

type ApiResult = Result<Json<Value>, ApiError>;

/// Fields shared by generate and update. Any other field is refused by name (`Fields`).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct KeyFields {
    /// Generate: an optional caller-chosen key. Update: the key to change (raw or hash).
    pub(super) key: Option<String>,
    key_alias: Option<String>,
    duration: Option<String>,
    team_id: Option<String>,
    user_id: Option<String>,
    models: Option<Vec<String>>,
    aliases: Option<BTreeMap<String, String>>,
    metadata: Option<Value>,
    blocked: Option<bool>,
    max_budget: Option<f64>,
    soft_budget: Option<f64>,
    budget_duration: Option<String>,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    max_parallel_requests: Option<i64>,
    model_rpm_limit: Option<Value>,
    model_tpm_limit: Option<Value>,
    model_max_budget: Option<Value>,
}

impl Fields for KeyFields {
    /// LiteLLM's key fields livegate does not enforce (yet).
    const NOT_SUPPORTED: &'static [&'static str] = &[
        "budget_id",
        "spend",
        "config",
        "permissions",
        "allowed_cache_controls",
        "guardrails",
        "prompts",
        "tags",
        "enforced_params",
        "allowed_routes",
        "allowed_passthrough_routes",
        "object_permission",
        "organization_id",
        "send_invite_email",
        "key_type",
        "auto_rotate",
        "rotation_interval",
        "temp_budget_increase",
        "temp_budget_expiry",
    ];
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct KeyRef {
    key: Option<String>,
}

impl Fields for KeyRef {}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct DeleteRequest {
    keys: Option<Vec<String>>,
    key_aliases: Option<Vec<String>>,
}

impl Fields for DeleteRequest {}

/// A model name or alias: what a request's `model` can match.
pub(super) fn check_model_name(param: &str, name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.len() > 256 {
        return Err(ApiError::bad(
            param,
            format!("{param} entries must be 1 to 256 characters"),
        ));
    }
    Ok(())
}

impl KeyFields {
    /// Validates every field and turns it into a patch; `now` anchors `duration`.
    pub(super) fn into_patch(self, now: DateTime<Utc>) -> Result<KeyPatch, ApiError> {
        // Each reaches the filter's headers and spend records: see `identity_field`.
        let identities = [
            ("key_alias", &self.key_alias),
            ("team_id", &self.team_id),
            ("user_id", &self.user_id),
        ];
        for (param, value) in identities {
            if let Some(value) = value {
                super::teams::identity_field(param, value)?;
            }
        }
        for model in self.models.iter().flatten() {
            check_model_name("models", model)?;
        }
        for (alias, model) in self.aliases.iter().flatten() {
            check_model_name("aliases", alias)?;
            check_model_name("aliases", model)?;
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
        let budget =
            crate::budget::patch(self.max_budget, self.soft_budget, self.budget_duration, now)?;
        let limits = limits_patch(self.rpm_limit, self.tpm_limit, self.max_parallel_requests)?;
        let model_rpm_limit =
            super::model_fields::model_limits_field("model_rpm_limit", self.model_rpm_limit)?;
        let model_tpm_limit =
            super::model_fields::model_limits_field("model_tpm_limit", self.model_tpm_limit)?;
        let model_max_budget = super::model_fields::model_budgets_field(self.model_max_budget)?;
        Ok(KeyPatch {
            model_max_budget,
            model_rpm_limit,
            model_tpm_limit,
            budget,
            limits,
            key_alias: self.key_alias,
            team_id: self.team_id,
            user_id: self.user_id,
            models: self.models,
            aliases: self.aliases,
            metadata: self.metadata,
            blocked: self.blocked,
            expires,
        })
    }
}

/// `rpm_limit`, `tpm_limit` and `max_parallel_requests` as given: whole numbers, 0 or more
/// (0 admits nothing, as a `max_budget` of 0 does).
pub(super) fn limits_patch(
    rpm: Option<i64>,
    tpm: Option<i64>,
    parallel: Option<i64>,
) -> Result<Limits, ApiError> {
    let limits = [
        ("rpm_limit", rpm),
        ("tpm_limit", tpm),
        ("max_parallel_requests", parallel),
    ];
    for (param, value) in limits {
        if value.is_some_and(|v| v < 0) {
            return Err(ApiError::bad(param, format!("{param} must be 0 or more")));
        }
    }
    Ok(Limits {
        rpm_limit: rpm,
        tpm_limit: tpm,
        max_parallel_requests: parallel,
    })
}

/// Reads a key reference (raw key or its hash) from a request field.
pub(super) fn key_ref(param: &str, value: Option<&str>) -> Result<KeyHash, ApiError> {
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
pub(super) fn shown(record: &KeyRecord, key: &str) -> Value {
    let mut v = info_of(record);
    v["key"] = json!(key);
    v
}

/// A record with LiteLLM's `soft_budget_cooldown`: its spend has reached `soft_budget`.
pub(super) fn info_of(record: &KeyRecord) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or_else(|_| json!({}));
    v["soft_budget_cooldown"] = json!(record.soft_budget_cooldown());
    v
}

pub(super) fn not_found() -> ApiError {
    ApiError::NotFound("key not found".into())
}

pub async fn generate(
    State(s): State<AppState>,
    caller: Caller,
    JsonBody(mut req): JsonBody<KeyFields>,
) -> ApiResult {
    manager(&s, &caller).await?;
    check_new_key(&s, &caller, req.team_id.as_deref(), req.user_id.as_deref()).await?;
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
        aliases: p.aliases.unwrap_or_default(),
        budget: p.budget,
        metadata: p.metadata.unwrap_or_else(|| json!({})),
        blocked: p.blocked.unwrap_or(false),
        spend: 0.0,
        expires: p.expires,
        created_at: now,
        updated_at: now,
        version: 0,
        limits: p.limits,
        model_limits: crate::model::PerModelLimits {
            model_rpm_limit: p.model_rpm_limit.unwrap_or_default(),
            model_tpm_limit: p.model_tpm_limit.unwrap_or_default(),
        },
        model_max_budget: p.model_max_budget.unwrap_or_default(),
        team: TeamPolicy::default(),
        user: Default::default(),
        member: Default::default(),
    };
    let record = s.db.insert_key(record).await?;
    remember(&s, &record);
    tracing::info!(key_name = %record.key_name, "key generated");
    Ok(Json(shown(&record, &raw)))
}

/// Reads `name` from a query string (percent-decoded).
pub(super) fn query_param(q: &[(String, String)], name: &str) -> Option<String> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// Refuses a query parameter the endpoint does not implement: an ignored filter would
/// answer more than was asked.
pub(super) fn check_query(
    q: &[(String, String)],
    accepted: &[&str],
    not_supported: &[&str],
) -> Result<(), ApiError> {
    check_fields(
        q.iter().map(|(k, v)| (k.as_str(), v.is_empty())),
        accepted,
        not_supported,
    )
}

pub(super) fn parse_query(raw: Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(&raw.unwrap_or_default()).map_err(|e| ApiError::BadRequest {
        message: format!("malformed query string: {e}"),
        param: None,
    })
}

pub(super) fn number(
    q: &[(String, String)],
    name: &str,
    default: u32,
    max: u32,
) -> Result<u32, ApiError> {
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
    check_query(
        &q,
        &[
            "key_alias",
            "team_id",
            "user_id",
            "key_hash",
            "page",
            "size",
            "return_full_object",
            "include_team_keys",
        ],
        &[
            "organization_id",
            "sort_by",
            "sort_order",
            "expand",
            "status",
        ],
    )?;
    let token = match query_param(&q, "key_hash") {
        None => None,
        Some(k) => Some(key_ref("key_hash", Some(&k))?),
    };
    let filter = KeyFilter {
        key_alias: query_param(&q, "key_alias"),
        team_id: query_param(&q, "team_id"),
        user_id: query_param(&q, "user_id"),
        token,
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

/// A key's info: with the master key, any key's (`?key=`); with a key, its own only,
/// `?key=` naming it or absent (as LiteLLM lets an application read its own budget).
pub async fn info(State(s): State<AppState>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult {
    let q = parse_query(raw)?;
    check_query(&q, &["key"], &[])?;
    let asked = query_param(&q, "key");
    let token = match (&caller, asked.as_deref()) {
        (Caller::Key(own), None) => own.clone(),
        (_, asked) => key_ref("key", asked)?,
    };
    if let Caller::Key(own) = &caller {
        if *own != token {
            return Err(ApiError::Forbidden);
        }
        // The key's own credential must still be good: a blocked key learns nothing (a key
        // over its budget may still read its spend, as in LiteLLM). Checked like an auth
        // check, through the key cache: this route is public, and a bearer nobody issued
        // must cost no more than one read per 5 s (an unknown key is remembered) instead of
        // a Postgres read per call.
        let record = s
            .gate
            .resolve(own)
            .await
            .map_err(|_| ApiError::DbUnavailable)?;
        if let Decision::Deny(reason) = decide(record, Utc::now(), 0) {
            return Err(ApiError::Denied(reason));
        }
    }
    let record = s.db.get_key(&token).await?.ok_or_else(not_found)?;
    let mut info = info_of(&record);
    super::rotation::with_grace(&s, &record, &mut info).await?;
    Ok(Json(json!({"key": record.token, "info": info})))
}

pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    JsonBody(mut req): JsonBody<KeyFields>,
) -> ApiResult {
    manager(&s, &caller).await?;
    let token = key_ref("key", req.key.take().as_deref())?;
    let moves = (req.team_id.as_deref(), req.user_id.as_deref());
    check_no_move(&caller, moves.0, moves.1, req.blocked)?;
    check_key_write(&s, &caller, &token).await?;
    let patch = req.into_patch(Utc::now().trunc_subsecs(6))?;
    apply(&s, &token, patch).await
}

pub async fn block(
    State(s): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<KeyRef>,
) -> ApiResult {
    manager(&s, &caller).await?;
    check_key_write(&s, &caller, &key_ref("key", req.key.as_deref())?).await?;
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

pub(super) fn remember(s: &AppState, record: &KeyRecord) {
    let state = KeyState::Present(Box::new(record.clone()));
    s.cache
        .put(&record.token, state, record.version, Instant::now());
}

pub async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<DeleteRequest>,
) -> ApiResult {
    manager(&s, &caller).await?;
    let keys = req.keys.unwrap_or_default();
    let aliases = req.key_aliases.unwrap_or_default();
    if keys.is_empty() && aliases.is_empty() {
        return Err(ApiError::bad("keys", "give keys or key_aliases"));
    }
    let tokens = keys
        .iter()
        .map(|k| key_ref("keys", Some(k)))
        .collect::<Result<Vec<_>, _>>()?;
    if matches!(caller, Caller::Key(_)) && !aliases.is_empty() {
        return Err(ApiError::NotAllowed(
            "Call not allowed. A team admin deletes keys by keys, not key_aliases".into(),
        ));
    }
    for token in &tokens {
        check_key_write(&s, &caller, token).await?;
    }
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
