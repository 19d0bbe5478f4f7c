//! Team management with LiteLLM's shapes: new, info, list, update, delete, block, unblock.
//! A team's `models` and `blocked` apply to every key in it; changing them is logged as a
//! change of each key, so it reaches every cache and filter like a key's own change. Its
//! members (`members_with_roles`) are `members.rs`'s; deleting a team removes them.

use std::time::Instant;

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::access::{check_team, manager, Action};
use super::error::ApiError;
use super::extract::{Caller, Fields, JsonBody, MasterKey};
use super::keys::{check_query, number, parse_query, query_param};
use super::members;
use super::AppState;
use crate::key_cache::KeyState;
use crate::model::{TeamPatch, TeamRecord};

type ApiResult = Result<Json<Value>, ApiError>;

/// Fields of `/team/new` and `/team/update`.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct TeamFields {
    team_id: Option<String>,
    team_alias: Option<String>,
    models: Option<Vec<String>>,
    model_aliases: Option<BTreeMap<String, String>>,
    metadata: Option<Value>,
    blocked: Option<bool>,
    max_budget: Option<f64>,
    soft_budget: Option<f64>,
    budget_duration: Option<String>,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    max_parallel_requests: Option<i64>,
    /// LiteLLM's `Member` list: on `/team/new` the first members, on `/team/update` the
    /// members the team has afterwards.
    members_with_roles: Option<Value>,
    model_rpm_limit: Option<Value>,
    model_tpm_limit: Option<Value>,
}

impl Fields for TeamFields {
    /// LiteLLM's team fields livegate does not enforce (yet): refused unless they ask for
    /// nothing. (`members` and `admins` are LiteLLM's older lists: `members_with_roles`
    /// replaced them.)
    const NOT_SUPPORTED: &'static [&'static str] = &[
        "model_max_budget",
        "members",
        "admins",
        "organization_id",
        "tags",
        "guardrails",
        "prompts",
        "object_permission",
        "team_member_budget",
        "team_member_rpm_limit",
        "team_member_tpm_limit",
        "team_member_key_duration",
        "team_member_permissions",
        "allowed_passthrough_routes",
        "router_settings",
        "secret_manager_settings",
    ];
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct TeamRef {
    team_id: Option<String>,
}

impl Fields for TeamRef {}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct DeleteTeams {
    team_ids: Option<Vec<String>>,
}

impl Fields for DeleteTeams {}

fn text_field(param: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > 256 {
        return Err(ApiError::bad(
            param,
            format!("{param} must be 1 to 256 characters"),
        ));
    }
    Ok(())
}

/// The longest identity (team id, key alias, user id) accepted: the filter carries every
/// one it is given up to this length, in spend records as is and in headers encoded.
pub const MAX_IDENTITY_BYTES: usize = 256;

/// An identity that reaches the filter, its headers and the spend records: 1 to 256 bytes
/// of UTF-8 (any script), not blank, no control characters (a NUL cannot be stored, and
/// a line break in an id is a log line forged, never a name).
pub(super) fn identity_field(param: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > MAX_IDENTITY_BYTES {
        return Err(ApiError::bad(
            param,
            format!("{param} must be 1 to {MAX_IDENTITY_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad(
            param,
            format!("{param} must not contain control characters"),
        ));
    }
    Ok(())
}

impl TeamFields {
    fn into_patch(self, now: DateTime<Utc>) -> Result<TeamPatch, ApiError> {
        if let Some(a) = &self.team_alias {
            text_field("team_alias", a)?;
        }
        for m in self.models.iter().flatten() {
            text_field("models", m)?;
        }
        for (alias, model) in self.model_aliases.iter().flatten() {
            super::keys::check_model_name("model_aliases", alias)?;
            super::keys::check_model_name("model_aliases", model)?;
        }
        if self.metadata.as_ref().is_some_and(|m| !m.is_object()) {
            return Err(ApiError::bad("metadata", "metadata must be a JSON object"));
        }
        let budget =
            crate::budget::patch(self.max_budget, self.soft_budget, self.budget_duration, now)?;
        let limits =
            super::keys::limits_patch(self.rpm_limit, self.tpm_limit, self.max_parallel_requests)?;
        let model_rpm_limit =
            super::model_fields::model_limits_field("model_rpm_limit", self.model_rpm_limit)?;
        let model_tpm_limit =
            super::model_fields::model_limits_field("model_tpm_limit", self.model_tpm_limit)?;
        Ok(TeamPatch {
            model_rpm_limit,
            model_tpm_limit,
            budget,
            limits,
            team_alias: self.team_alias,
            models: self.models,
            model_aliases: self.model_aliases,
            metadata: self.metadata,
            blocked: self.blocked,
        })
    }
}

pub(super) fn required(param: &str, value: Option<String>) -> Result<String, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad(param, format!("{param} is required")))
}

fn not_found() -> ApiError {
    ApiError::NotFound("team not found".into())
}

/// A new team or user id (a user made for a team member too), in the form LiteLLM gives
/// them: a UUID v4, from the OS RNG.
pub(super) fn new_uuid() -> Result<String, ApiError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| ApiError::Internal(format!("OS RNG: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

pub async fn new(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(mut req): JsonBody<TeamFields>,
) -> ApiResult {
    let team_id = match req.team_id.take() {
        Some(id) => {
            identity_field("team_id", &id)?;
            id
        }
        None => new_uuid()?,
    };
    let now = Utc::now().trunc_subsecs(6);
    let members = req
        .members_with_roles
        .take()
        .map(|m| members::parse_members("members_with_roles", m, None))
        .transpose()?;
    let p = req.into_patch(now)?;
    let team = TeamRecord {
        team_id,
        team_alias: p.team_alias,
        models: p.models.unwrap_or_default(),
        model_aliases: p.model_aliases.unwrap_or_default(),
        metadata: p.metadata.unwrap_or_else(|| json!({})),
        blocked: p.blocked.unwrap_or(false),
        spend: 0.0,
        budget: p.budget,
        limits: p.limits,
        model_limits: crate::model::PerModelLimits {
            model_rpm_limit: p.model_rpm_limit.unwrap_or_default(),
            model_tpm_limit: p.model_tpm_limit.unwrap_or_default(),
        },
        created_at: now,
        updated_at: now,
    };
    let team = s.db.insert_team(team).await?;
    tracing::info!(team_id = %team.team_id, "team created");
    let mut answer = json!(team);
    if let Some(members) = members {
        // Two steps: a member refused takes its new team back out (with the members added
        // before it), so a refused `/team/new` leaves nothing behind.
        if let Err(e) = members::add_all(&s, &team.team_id, members).await {
            let team_ids = vec![team.team_id.clone()];
            if let Err(undo) = s.db.delete_teams(team_ids).await {
                tracing::warn!(error = %undo, "a team whose member was refused stays");
            }
            return Err(e);
        }
    }
    // LiteLLM's team object always carries its members.
    answer["members_with_roles"] =
        members::with_roles(&members::members_of(&s, &team.team_id).await?);
    Ok(Json(answer))
}

/// `GET /team/info?team_id=`: the master key any team's; a key its own team's, or a team
/// its user is an admin of (LiteLLM's 403 otherwise). With its members and memberships.
pub async fn info(State(s): State<AppState>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult {
    let q = parse_query(raw)?;
    check_query(&q, &["team_id"], &[])?;
    let team_id = required("team_id", query_param(&q, "team_id"))?;
    check_team(&s, &caller, Action::ReadTeam(&team_id)).await?;
    let (team, keys) = s.db.get_team(&team_id, true).await?.ok_or_else(not_found)?;
    let members = members::members_of(&s, &team_id).await?;
    let mut team_info = shown(&team);
    team_info["members_with_roles"] = members::with_roles(&members);
    Ok(Json(json!({
        "team_id": team.team_id,
        "team_info": team_info,
        "keys": keys,
        "team_memberships": members::memberships(&members),
    })))
}

/// A team with `soft_budget_cooldown`: its spend has reached its `soft_budget`.
pub(super) fn shown(team: &TeamRecord) -> Value {
    let mut v = serde_json::to_value(team).unwrap_or_else(|_| json!({}));
    v["soft_budget_cooldown"] = json!(team.soft_budget_cooldown());
    v
}

/// LiteLLM answers a plain list of teams; `page` and `size` bound it (default 1 and 100).
pub async fn list(State(s): State<AppState>, _: MasterKey, RawQuery(raw): RawQuery) -> ApiResult {
    let q = parse_query(raw)?;
    check_query(&q, &["page", "size"], &["user_id", "organization_id"])?;
    let page = number(&q, "page", 1, u32::MAX)?;
    let size = number(&q, "size", 100, 1000)?;
    let (teams, _) = s.db.list_teams(page, size).await?;
    Ok(Json(Value::Array(teams.iter().map(shown).collect())))
}

/// Teams a user could join on its own (LiteLLM's `available_teams` setting): livegate offers
/// none; members join through `/team/member_add`. Any good key may ask, as in LiteLLM.
pub async fn available(State(s): State<AppState>, caller: Caller) -> ApiResult {
    manager(&s, &caller).await?;
    Ok(Json(json!([])))
}

pub async fn update(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(mut req): JsonBody<TeamFields>,
) -> ApiResult {
    let team_id = required("team_id", req.team_id.take())?;
    let members = req
        .members_with_roles
        .take()
        .map(|m| members::parse_members("members_with_roles", m, None))
        .transpose()?;
    let patch = req.into_patch(Utc::now().trunc_subsecs(6))?;
    let mut answer = apply(&s, &team_id, patch).await?;
    if let Some(members) = members {
        members::replace_all(&s, &team_id, members).await?;
    }
    answer["data"]["members_with_roles"] =
        members::with_roles(&members::members_of(&s, &team_id).await?);
    Ok(Json(answer))
}

pub async fn block(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(req): JsonBody<TeamRef>,
) -> ApiResult {
    set_blocked(&s, req, true).await
}

pub async fn unblock(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(req): JsonBody<TeamRef>,
) -> ApiResult {
    set_blocked(&s, req, false).await
}

async fn set_blocked(s: &AppState, req: TeamRef, blocked: bool) -> ApiResult {
    let team_id = required("team_id", req.team_id)?;
    let patch = TeamPatch {
        blocked: Some(blocked),
        ..TeamPatch::default()
    };
    apply(s, &team_id, patch).await.map(Json)
}

/// Writes the patch; this replica's cache takes the new state of every key it changed at
/// once (peers learn it from the change log).
async fn apply(s: &AppState, team_id: &str, patch: TeamPatch) -> Result<Value, ApiError> {
    let write =
        s.db.update_team(team_id, patch)
            .await?
            .ok_or_else(not_found)?;
    members::remember_all(s, &write.keys);
    Ok(json!({"team_id": write.team.team_id, "data": write.team}))
}

pub async fn delete(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(req): JsonBody<DeleteTeams>,
) -> ApiResult {
    let team_ids = req.team_ids.unwrap_or_default();
    if team_ids.is_empty() {
        return Err(ApiError::bad("team_ids", "team_ids is required"));
    }
    let deleted = s.db.delete_teams(team_ids).await?;
    let now = Instant::now();
    for (token, version) in &deleted.keys {
        s.cache.put(token, KeyState::Deleted, *version, now);
    }
    if deleted.team_ids.is_empty() {
        return Err(not_found());
    }
    let keys: Vec<_> = deleted.keys.iter().map(|(t, _)| t).collect();
    Ok(Json(
        json!({"deleted_teams": deleted.team_ids, "deleted_keys": keys}),
    ))
}
