//! User management with LiteLLM's shapes: new, info, list, update, delete. A user's
//! `models`, budget and limits apply to every key whose `user_id` names it; changing them
//! is logged as a change of each key, so it reaches every cache and filter like a key's
//! own change. Deleting a user deletes its keys (a tombstone each, as `/key/delete`).

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{Caller, Fields, JsonBody, MasterKey};
use super::keys::{check_model_name, check_query, info_of, number, parse_query, query_param};
use super::teams::{identity_field, new_uuid, required};
use super::AppState;
use crate::gate::decision::{decide, Decision};
use crate::key_cache::KeyState;
use crate::model::keys::{self, KeyHash};
use crate::model::{
    KeyRecord, MemberRef, MemberRole, NewMember, TeamPolicy, UserPatch, UserRecord, UserWrite,
};

type ApiResult = Result<Json<Value>, ApiError>;

mod read;
pub use read::{info, list};

/// The roles livegate gives a meaning: a user's keys read only their own user's and key's
/// info, as LiteLLM's internal users' do. The admin roles would make a user's keys admins,
/// which livegate does not do (the master key alone administers): refused by name.
const ROLES: &[&str] = &["internal_user", "internal_user_viewer"];

/// Fields of `/user/new` and `/user/update`. Any other field is refused by name.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct UserFields {
    user_id: Option<String>,
    user_email: Option<String>,
    user_role: Option<String>,
    models: Option<Vec<String>>,
    metadata: Option<Value>,
    max_budget: Option<f64>,
    soft_budget: Option<f64>,
    budget_duration: Option<String>,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    max_parallel_requests: Option<i64>,
    /// `/user/new` only: the team the user joins as a member (role `user`), as LiteLLM's
    /// `team_id` does; the key it creates is in that team.
    team_id: Option<String>,
    /// `/user/new` only: more teams the user joins as a member (role `user`), as LiteLLM's
    /// `teams` does (its key is in `team_id`'s team, or none).
    teams: Option<Vec<String>>,
    /// `/user/new` only: create a key for the user (default true), with these fields.
    auto_create_key: Option<bool>,
    key_alias: Option<String>,
    duration: Option<String>,
    aliases: Option<BTreeMap<String, String>>,
}

impl Fields for UserFields {
    /// LiteLLM's user fields livegate does not enforce: refused unless they ask for nothing.
    const NOT_SUPPORTED: &'static [&'static str] = &[
        "organizations",
        "user_alias",
        "send_invite_email",
        "model_max_budget",
        "model_rpm_limit",
        "model_tpm_limit",
        "budget_fallbacks",
        "mcp_rpm_limit",
        "tag_rpm_limit",
        "budget_limits",
        "spend",
        "agent_id",
        "sso_user_id",
        "object_permission",
        "prompts",
        "password",
        "config",
        "allowed_cache_controls",
        "blocked",
        "guardrails",
        "policies",
        "permissions",
    ];
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct DeleteUsers {
    user_ids: Option<Vec<String>>,
}

impl Fields for DeleteUsers {}

impl UserFields {
    /// Validates the user's own fields and turns them into a patch; `now` anchors the
    /// first budget reset.
    fn into_patch(self, now: DateTime<Utc>) -> Result<UserPatch, ApiError> {
        if let Some(email) = &self.user_email {
            identity_field("user_email", email)?;
        }
        if let Some(role) = &self.user_role {
            if !ROLES.contains(&role.as_str()) {
                return Err(ApiError::bad(
                    "user_role",
                    format!(
                        "user_role {role} is not supported by livegate (the master key alone administers); accepted: {}",
                        ROLES.join(", ")
                    ),
                ));
            }
        }
        for model in self.models.iter().flatten() {
            check_model_name("models", model)?;
        }
        if self.metadata.as_ref().is_some_and(|m| !m.is_object()) {
            return Err(ApiError::bad("metadata", "metadata must be a JSON object"));
        }
        let budget =
            crate::budget::patch(self.max_budget, self.soft_budget, self.budget_duration, now)?;
        let limits =
            super::keys::limits_patch(self.rpm_limit, self.tpm_limit, self.max_parallel_requests)?;
        Ok(UserPatch {
            budget,
            limits,
            user_email: self.user_email,
            user_role: self.user_role,
            models: self.models,
            metadata: self.metadata,
        })
    }

    /// The key fields (`/user/new`'s key), taken out; a field set without a key to put it
    /// on is refused by name.
    fn take_key_fields(&mut self) -> Result<Option<NewKey>, ApiError> {
        let key = NewKey {
            team_id: self.team_id.clone(),
            key_alias: self.key_alias.take(),
            duration: self.duration.take(),
            aliases: self.aliases.take(),
        };
        if self.auto_create_key.take().unwrap_or(true) {
            return Ok(Some(key));
        }
        let set = [
            ("key_alias", key.key_alias.is_some()),
            ("duration", key.duration.is_some()),
            (
                "aliases",
                key.aliases.as_ref().is_some_and(|a| !a.is_empty()),
            ),
        ];
        match set.iter().find(|(_, is_set)| *is_set) {
            Some((param, _)) => Err(ApiError::bad(
                param,
                format!("{param} is for the key /user/new creates; auto_create_key is false"),
            )),
            None => Ok(None),
        }
    }
}

/// The key `/user/new` creates for the user.
struct NewKey {
    team_id: Option<String>,
    key_alias: Option<String>,
    duration: Option<String>,
    aliases: Option<BTreeMap<String, String>>,
}

impl NewKey {
    /// The key's record (its raw key beside it), the user's own.
    fn record(self, user_id: &str, now: DateTime<Utc>) -> Result<(String, KeyRecord), ApiError> {
        if let Some(alias) = &self.key_alias {
            identity_field("key_alias", alias)?;
        }
        for (alias, model) in self.aliases.iter().flatten() {
            check_model_name("aliases", alias)?;
            check_model_name("aliases", model)?;
        }
        let too_long = || ApiError::bad("duration", "duration is too long");
        let expires = match self.duration.as_deref() {
            None => None,
            Some(d) => {
                let d = keys::parse_duration(d)
                    .map_err(|e| ApiError::bad("duration", e.to_string()))?;
                let d = chrono::Duration::from_std(d).map_err(|_| too_long())?;
                Some(now.checked_add_signed(d).ok_or_else(too_long)?)
            }
        };
        let raw = keys::generate_key().map_err(|e| ApiError::Internal(format!("OS RNG: {e}")))?;
        let record = KeyRecord {
            token: KeyHash::of_raw(&raw),
            key_name: keys::key_name(&raw),
            key_alias: self.key_alias,
            team_id: self.team_id,
            user_id: Some(user_id.to_owned()),
            models: vec![],
            aliases: self.aliases.unwrap_or_default(),
            model_limits: Default::default(),
            model_max_budget: Default::default(),
            budget: Default::default(),
            metadata: json!({}),
            blocked: false,
            spend: 0.0,
            expires,
            created_at: now,
            updated_at: now,
            version: 0,
            limits: Default::default(),
            team: TeamPolicy::default(),
            user: Default::default(),
            member: Default::default(),
        };
        Ok((raw, record))
    }
}

fn not_found(user_id: &str) -> ApiError {
    ApiError::NotFound(format!("User {user_id} not found"))
}

/// A user as LiteLLM shows it, with `soft_budget_cooldown`.
fn shown(user: &UserRecord) -> Value {
    let mut v = serde_json::to_value(user).unwrap_or_else(|_| json!({}));
    v["soft_budget_cooldown"] = json!(user.budget.soft_budget_cooldown(user.spend));
    v
}

/// This replica's cache takes the new state of every key a user write changed at once
/// (peers learn it from the change log).
fn remember_keys(s: &AppState, write: &UserWrite) {
    super::members::remember_all(s, &write.keys);
}

/// `POST /user/new`: the user, and (unless `auto_create_key` is false) a key of its own,
/// answered as LiteLLM's `NewUserResponse`: the user's fields and `key`.
pub async fn new(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(mut req): JsonBody<UserFields>,
) -> ApiResult {
    let user_id = match req.user_id.take() {
        Some(id) => {
            identity_field("user_id", &id)?;
            id
        }
        None => new_uuid()?,
    };
    let now = Utc::now().trunc_subsecs(6);
    if let Some(team) = &req.team_id {
        identity_field("team_id", team)?;
    }
    let teams = req.teams.take().unwrap_or_default();
    for (i, team) in teams.iter().enumerate() {
        identity_field(&format!("teams[{i}]"), team)?;
    }
    let new_key = req.take_key_fields()?;
    let team_id = req.team_id.take();
    // `team_id` first (its key's team), then `teams` in order, each joined once.
    let mut joins: Vec<(String, String)> = team_id
        .iter()
        .map(|t| ("team_id".to_string(), t.clone()))
        .collect();
    for (i, team) in teams.into_iter().enumerate() {
        if !joins.iter().any(|(_, t)| *t == team) {
            joins.push((format!("teams[{i}]"), team));
        }
    }
    let p = req.into_patch(now)?;
    let key = new_key.map(|k| k.record(&user_id, now)).transpose()?;
    let user = UserRecord {
        user_id,
        user_email: p.user_email,
        user_role: Some(p.user_role.unwrap_or_else(|| "internal_user".into())),
        models: p.models.unwrap_or_default(),
        metadata: p.metadata.unwrap_or_else(|| json!({})),
        spend: 0.0,
        budget: p.budget,
        limits: p.limits,
        created_at: now,
        updated_at: now,
    };
    let write = s.db.run(crate::protocol::InsertUser { user }).await?;
    remember_keys(&s, &write);
    tracing::info!(user_id = %write.user.user_id, "user created");
    // Up to three statements: a membership or a key refused (no such team, its alias
    // taken) takes the new user back out with its membership, so a refused `/user/new`
    // leaves nothing behind.
    let undo = |e: ApiError| {
        let user_ids = vec![write.user.user_id.clone()];
        let s = s.clone();
        async move {
            if let Err(undo) = s.db.run(crate::protocol::DeleteUsers { user_ids }).await {
                tracing::warn!(error = %undo, "a user whose key or team was refused stays");
            }
            e
        }
    };
    for (field, team) in &joins {
        let member = NewMember {
            who: MemberRef::UserId(write.user.user_id.clone()),
            user_email: None,
            new_user_id: write.user.user_id.clone(),
            role: MemberRole::User,
            max_budget_in_team: None,
        };
        if let Err(e) = super::members::add_all(&s, team, vec![member]).await {
            let e = match e {
                ApiError::NotFound(_) => ApiError::bad(
                    field,
                    format!("{field} names no team: create it with /team/new first"),
                ),
                e => e,
            };
            return Err(undo(e).await);
        }
    }
    let mut answer = shown(&write.user);
    answer["key"] = json!("");
    answer["teams"] = json!(joins.iter().map(|(_, t)| t).collect::<Vec<_>>());
    if let Some((raw, record)) = key {
        let record = match s.db.insert_key(record).await {
            Ok(record) => record,
            Err(e) => return Err(undo(e.into()).await),
        };
        super::keys::remember(&s, &record);
        answer["key"] = json!(raw);
        answer["key_name"] = json!(record.key_name);
        answer["key_alias"] = json!(record.key_alias);
        answer["expires"] = json!(record.expires);
        answer["token"] = json!(record.token);
    }
    Ok(Json(answer))
}

/// `POST /user/update`: the user's fields; its keys take the new policy everywhere.
pub async fn update(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(mut req): JsonBody<UserFields>,
) -> ApiResult {
    let user_id = required("user_id", req.user_id.take())?;
    for (field, set) in [
        ("team_id", req.team_id.is_some()),
        ("teams", req.teams.is_some()),
    ] {
        if set {
            return Err(ApiError::bad(
                field,
                format!("{field} joins teams on /user/new only: use /team/member_add"),
            ));
        }
    }
    let key_only = [
        ("auto_create_key", req.auto_create_key.is_some()),
        ("key_alias", req.key_alias.is_some()),
        ("duration", req.duration.is_some()),
        ("aliases", req.aliases.is_some()),
    ];
    if let Some((param, _)) = key_only.iter().find(|(_, set)| *set) {
        return Err(ApiError::bad(
            param,
            format!("{param} is a field of /user/new's key, not of a user: use /key/update"),
        ));
    }
    let patch = req.into_patch(Utc::now().trunc_subsecs(6))?;
    let write =
        s.db.run(crate::protocol::UpdateUser {
            user_id: user_id.clone(),
            patch,
        })
        .await?
        .ok_or_else(|| not_found(&user_id))?;
    remember_keys(&s, &write);
    Ok(Json(
        json!({"user_id": write.user.user_id, "data": shown(&write.user)}),
    ))
}

/// `POST /user/delete`: the users and their keys, revoked fleet-wide like deleted keys.
pub async fn delete(
    State(s): State<AppState>,
    _: MasterKey,
    JsonBody(req): JsonBody<DeleteUsers>,
) -> ApiResult {
    let user_ids = req.user_ids.unwrap_or_default();
    if user_ids.is_empty() {
        return Err(ApiError::bad("user_ids", "user_ids is required"));
    }
    let deleted = s.db.run(crate::protocol::DeleteUsers { user_ids }).await?;
    let now = Instant::now();
    for (token, version) in &deleted.keys {
        s.cache.put(token, KeyState::Deleted, *version, now);
    }
    if deleted.user_ids.is_empty() {
        return Err(ApiError::NotFound("no such user".into()));
    }
    let keys: Vec<_> = deleted.keys.iter().map(|(t, _)| t).collect();
    Ok(Json(
        json!({"deleted_users": deleted.user_ids, "deleted_keys": keys}),
    ))
}
