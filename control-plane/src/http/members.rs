//! Team members with LiteLLM's shapes: `/team/member_add`, `/team/member_delete`,
//! `/team/member_update`, and `members_with_roles` on `/team/new` and `/team/update`. A
//! member has a role (`admin` manages the team's keys and members) and a budget in the
//! team (`max_budget_in_team`), enforced on its keys in that team; a change of that budget
//! is logged as a change of each of those keys, so every cache and filter learns it.

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::access::{check_team, manager, Action};
use super::error::ApiError;
use super::extract::{Caller, Fields, JsonBody};
use super::teams::{identity_field, new_uuid, required};
use super::AppState;
use crate::db::DbError;
use crate::key_cache::KeyState;
use crate::model::{
    KeyRecord, MemberPatch, MemberRef, MemberRole, MemberWrite, Membership, NewMember,
};
use crate::protocol::{AddMember, DeleteMember, TeamMembers, UpdateMember};

type ApiResult = Result<Json<Value>, ApiError>;

/// LiteLLM's `Member`: a role and a user id or an email.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberFields {
    role: Option<String>,
    user_id: Option<String>,
    user_email: Option<String>,
}

/// `/team/member_add`: `member` is one member or a list.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct MemberAdd {
    team_id: Option<String>,
    member: Option<Value>,
    max_budget_in_team: Option<f64>,
}

impl Fields for MemberAdd {}

/// `/team/member_delete`: the member by user id or email.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct MemberDelete {
    team_id: Option<String>,
    user_id: Option<String>,
    user_email: Option<String>,
}

impl Fields for MemberDelete {}

/// `/team/member_update`: the member by user id or email, its new budget or role.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct MemberUpdate {
    team_id: Option<String>,
    user_id: Option<String>,
    user_email: Option<String>,
    max_budget_in_team: Option<f64>,
    role: Option<String>,
}

impl Fields for MemberUpdate {
    /// LiteLLM's per-member rate limits, which livegate does not enforce.
    const NOT_SUPPORTED: &'static [&'static str] = &["rpm_limit", "tpm_limit"];
}

fn role(param: &str, text: &str) -> Result<MemberRole, ApiError> {
    MemberRole::parse(text)
        .ok_or_else(|| ApiError::bad(param, format!("{param} must be admin or user, not {text}")))
}

/// A budget in USD: finite and at least 0.
pub(super) fn budget_in_team(value: Option<f64>) -> Result<Option<f64>, ApiError> {
    match value {
        Some(v) if !v.is_finite() || v < 0.0 => Err(ApiError::bad(
            "max_budget_in_team",
            "max_budget_in_team must be a number at least 0 (USD)",
        )),
        other => Ok(other),
    }
}

/// Who a request names: `user_id`, else `user_email`; one is required.
fn member_ref(user_id: Option<String>, user_email: Option<String>) -> Result<MemberRef, ApiError> {
    match (
        user_id.filter(|u| !u.is_empty()),
        user_email.filter(|e| !e.is_empty()),
    ) {
        (Some(id), _) => {
            identity_field("user_id", &id)?;
            Ok(MemberRef::UserId(id))
        }
        (None, Some(email)) => {
            identity_field("user_email", &email)?;
            Ok(MemberRef::Email(email))
        }
        (None, None) => Err(ApiError::bad(
            "user_id",
            "Either user_id or user_email needs to be passed in",
        )),
    }
}

/// `member` (one object or a list, under `param`) as members to add.
pub(super) fn parse_members(
    param: &str,
    value: Value,
    max_budget_in_team: Option<f64>,
) -> Result<Vec<NewMember>, ApiError> {
    let items = match value {
        Value::Array(items) => items,
        Value::Null => return Err(ApiError::bad(param, format!("{param} is required"))),
        one => vec![one],
    };
    let max_budget_in_team = budget_in_team(max_budget_in_team)?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |field: &str| format!("{param}[{i}].{field}");
            let m: MemberFields = serde_json::from_value(item)
                .map_err(|e| ApiError::bad(param, format!("{param}[{i}]: invalid member: {e}")))?;
            let role = role(&at("role"), m.role.as_deref().unwrap_or("user"))?;
            if let Some(email) = &m.user_email {
                identity_field(&at("user_email"), email)?;
            }
            if let Some(id) = &m.user_id {
                identity_field(&at("user_id"), id)?;
            }
            let who = member_ref(m.user_id, m.user_email.clone()).map_err(|_| {
                ApiError::bad(
                    param,
                    format!("{param}[{i}] needs a user_id or a user_email"),
                )
            })?;
            Ok(NewMember {
                who,
                user_email: m.user_email,
                new_user_id: new_uuid()?,
                role,
                max_budget_in_team,
            })
        })
        .collect()
}

/// This replica's cache takes the new state of every key a write changed at once (peers
/// learn it from the change log).
pub(super) fn remember_all(s: &AppState, keys: &[KeyRecord]) {
    let now = Instant::now();
    for key in keys {
        let state = KeyState::Present(Box::new(key.clone()));
        s.cache.put(&key.token, state, key.version, now);
    }
}

fn already_in_team(m: &NewMember) -> ApiError {
    match &m.who {
        MemberRef::UserId(id) => {
            ApiError::bad("user_id", format!("User with user_id={id} already in team"))
        }
        MemberRef::Email(email) => ApiError::bad(
            "user_email",
            format!("User with user_email={email} already in team"),
        ),
    }
}

fn team_not_found(team_id: &str) -> ApiError {
    ApiError::NotFound(format!("Team not found for team_id={team_id}"))
}

/// Adds the members one by one; the first refused stops (those before it stay added).
pub(super) async fn add_all(
    s: &AppState,
    team_id: &str,
    members: Vec<NewMember>,
) -> Result<Vec<Membership>, ApiError> {
    let mut added = vec![];
    for member in members {
        let op = AddMember {
            team_id: team_id.to_owned(),
            member: member.clone(),
        };
        let write = match s.db.run(op).await {
            Ok(Some(write)) => write,
            Ok(None) => return Err(team_not_found(team_id)),
            Err(DbError::Conflict(field)) if field == "member" => {
                return Err(already_in_team(&member))
            }
            Err(e) => return Err(e.into()),
        };
        remember_all(s, &write.keys);
        added.push(write.member);
    }
    Ok(added)
}

/// The team's members as LiteLLM's `members_with_roles`.
pub(super) fn with_roles(members: &[Membership]) -> Value {
    let shown: Vec<Value> = members
        .iter()
        .map(|m| json!({"user_id": m.user_id, "user_email": m.user_email, "role": m.role}))
        .collect();
    Value::Array(shown)
}

/// The team's memberships as LiteLLM's `team_memberships`, with the budget in the team.
pub(super) fn memberships(members: &[Membership]) -> Value {
    let shown: Vec<Value> = members
        .iter()
        .map(|m| {
            let budget = m.max_budget_in_team.map(|b| json!({"max_budget": b}));
            json!({
                "team_id": m.team_id, "user_id": m.user_id, "user_email": m.user_email,
                "role": m.role, "spend": m.spend, "max_budget_in_team": m.max_budget_in_team,
                "litellm_budget_table": budget,
            })
        })
        .collect();
    Value::Array(shown)
}

pub(super) async fn members_of(s: &AppState, team_id: &str) -> Result<Vec<Membership>, ApiError> {
    let team_id = team_id.to_owned();
    Ok(s.db.run(TeamMembers { team_id }).await?)
}

/// `members_with_roles` on `/team/update`: the team's members become exactly these (new
/// ones added, roles changed, those not listed removed), as LiteLLM overwrites the list.
pub(super) async fn replace_all(
    s: &AppState,
    team_id: &str,
    wanted: Vec<NewMember>,
) -> Result<(), ApiError> {
    let current = members_of(s, team_id).await?;
    let names = |m: &Membership, who: &MemberRef| match who {
        MemberRef::UserId(id) => m.user_id == *id,
        MemberRef::Email(email) => m.user_email.as_deref() == Some(email),
    };
    for m in &current {
        let kept = wanted.iter().find(|w| names(m, &w.who));
        let who = MemberRef::UserId(m.user_id.clone());
        let team_id = team_id.to_owned();
        let write = match kept {
            None => s.db.run(DeleteMember { team_id, who }).await?,
            Some(w) if w.role != m.role => {
                let patch = MemberPatch {
                    role: Some(w.role),
                    max_budget_in_team: None,
                };
                s.db.run(UpdateMember {
                    team_id,
                    who,
                    patch,
                })
                .await?
            }
            Some(_) => None,
        };
        if let Some(write) = write {
            remember_all(s, &write.keys);
        }
    }
    let new: Vec<NewMember> = wanted
        .into_iter()
        .filter(|w| !current.iter().any(|m| names(m, &w.who)))
        .collect();
    add_all(s, team_id, new).await.map(|_| ())
}

/// `POST /team/member_add`: one member or a list, each created as a user if none has its
/// id or email; the master key or an admin of the team.
pub async fn add(
    State(s): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<MemberAdd>,
) -> ApiResult {
    manager(&s, &caller).await?;
    let team_id = required("team_id", req.team_id)?;
    let members = parse_members(
        "member",
        req.member.unwrap_or(Value::Null),
        req.max_budget_in_team,
    )?;
    check_team(&s, &caller, Action::ManageTeam(&team_id)).await?;
    let added = add_all(&s, &team_id, members).await?;
    let (team, _) =
        s.db.get_team(&team_id, false)
            .await?
            .ok_or_else(|| team_not_found(&team_id))?;
    let all = members_of(&s, &team_id).await?;
    let mut answer = super::teams::shown(&team);
    answer["members_with_roles"] = with_roles(&all);
    answer["updated_users"] = json!(added
        .iter()
        .map(|m| json!({"user_id": m.user_id, "user_email": m.user_email}))
        .collect::<Vec<_>>());
    answer["updated_team_memberships"] = memberships(&added);
    Ok(Json(answer))
}

/// `POST /team/member_delete`: the member leaves the team (its user and keys stay; its keys
/// in the team lose the budget it had there).
pub async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<MemberDelete>,
) -> ApiResult {
    manager(&s, &caller).await?;
    let team_id = required("team_id", req.team_id)?;
    let who = member_ref(req.user_id, req.user_email)?;
    check_team(&s, &caller, Action::ManageTeam(&team_id)).await?;
    let op = DeleteMember {
        team_id: team_id.clone(),
        who,
    };
    let write = s.db.run(op).await?.ok_or_else(not_in_team)?;
    remember_all(&s, &write.keys);
    let (team, _) =
        s.db.get_team(&team_id, false)
            .await?
            .ok_or_else(|| team_not_found(&team_id))?;
    let mut answer = super::teams::shown(&team);
    answer["members_with_roles"] = with_roles(&members_of(&s, &team_id).await?);
    Ok(Json(answer))
}

fn not_in_team() -> ApiError {
    ApiError::bad("user_id", "User not found in team")
}

/// `POST /team/member_update`: the member's budget in the team, or its role.
pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<MemberUpdate>,
) -> ApiResult {
    manager(&s, &caller).await?;
    let team_id = required("team_id", req.team_id)?;
    let who = member_ref(req.user_id, req.user_email)?;
    let patch = MemberPatch {
        role: req.role.as_deref().map(|r| role("role", r)).transpose()?,
        max_budget_in_team: budget_in_team(req.max_budget_in_team)?,
    };
    check_team(&s, &caller, Action::ManageTeam(&team_id)).await?;
    let op = UpdateMember {
        team_id,
        who,
        patch,
    };
    let MemberWrite { member, keys } = s.db.run(op).await?.ok_or_else(not_in_team)?;
    remember_all(&s, &keys);
    Ok(Json(json!({
        "team_id": member.team_id, "user_id": member.user_id, "user_email": member.user_email,
        "role": member.role, "max_budget_in_team": member.max_budget_in_team,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(e: ApiError) -> String {
        match e {
            ApiError::BadRequest { param, .. } => param.unwrap_or_default(),
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn a_member_is_one_object_or_a_list_named_by_id_else_by_email() {
        let one = parse_members(
            "member",
            json!({"role": "admin", "user_id": "u"}),
            Some(2.0),
        );
        let one = one.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].who, MemberRef::UserId("u".into()));
        assert_eq!(one[0].role, MemberRole::Admin);
        assert_eq!(one[0].max_budget_in_team, Some(2.0));
        let list = json!([{"user_email": "a@example.com"}, {"role": "user", "user_id": "b",
                          "user_email": "b@example.com"}]);
        let list = parse_members("member", list, None).unwrap();
        assert_eq!(list[0].who, MemberRef::Email("a@example.com".into()));
        assert_eq!(list[0].role, MemberRole::User, "role defaults to user");
        assert_eq!(
            list[0].new_user_id.len(),
            36,
            "a UUID for a user made by email"
        );
        assert_eq!(list[1].who, MemberRef::UserId("b".into()));
        assert_eq!(list[1].user_email.as_deref(), Some("b@example.com"));
    }

    #[test]
    fn member_fields_are_refused_naming_the_field() {
        let refused = |v: Value, budget: Option<f64>| {
            param_of(parse_members("member", v, budget).unwrap_err())
        };
        assert_eq!(refused(Value::Null, None), "member");
        assert_eq!(
            refused(
                json!([{"role": "user", "user_id": "v"}, {"role": "owner", "user_id": "u"}]),
                None
            ),
            "member[1].role"
        );
        assert_eq!(refused(json!({"role": "user"}), None), "member");
        assert_eq!(refused(json!({"user_id": "u", "extra": 1}), None), "member");
        assert_eq!(refused(json!({"user_id": ""}), None), "member[0].user_id");
        assert_eq!(
            refused(json!({"user_id": "a\u{7}"}), None),
            "member[0].user_id"
        );
        assert_eq!(
            refused(json!({"user_id": "u"}), Some(f64::NAN)),
            "max_budget_in_team"
        );
        assert_eq!(
            refused(json!({"user_id": "u"}), Some(-1.0)),
            "max_budget_in_team"
        );
        assert_eq!(
            param_of(member_ref(None, Some(String::new())).unwrap_err()),
            "user_id"
        );
        assert_eq!(param_of(role("role", "boss").unwrap_err()), "role");
    }
}
