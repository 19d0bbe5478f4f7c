//! Who may do what with a key that is not the master key: read its own key's, user's and
//! team's info; manage a team's keys and members if its user is an admin of that team
//! (generate keys in the team for its members, update, block and delete keys in it, add,
//! change and remove members). Moving a key between teams or users, and everything
//! else, stays with the master key.
//! The decision is a pure function of the caller, the action and its target; the handlers
//! look up what it needs (the caller's record, its user's role in the target team).

use chrono::Utc;

use super::error::ApiError;
use super::extract::Caller;
use super::AppState;
use crate::gate::decision::{decide, Decision};
use crate::model::keys::KeyHash;
use crate::model::{KeyRecord, MemberRole};

/// What a caller asks to do, and to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// `/team/info?team_id=`.
    ReadTeam(&'a str),
    /// `/team/member_*`, and `/key/*` writes of keys in the team.
    ManageTeam(&'a str),
}

/// Who is asking: the master key, or a key (its record, good as of now) with its user's
/// role in the action's team (`None`: no user, or not a member).
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    Master,
    Key {
        key: &'a KeyRecord,
        role_in_team: Option<MemberRole>,
    },
}

/// Allowed, or LiteLLM's 403 message saying why not.
pub fn allowed(who: Who<'_>, action: Action<'_>) -> Result<(), String> {
    let Who::Key { key, role_in_team } = who else {
        return Ok(());
    };
    let admin = role_in_team == Some(MemberRole::Admin);
    match action {
        Action::ReadTeam(team) if key.team_id.as_deref() == Some(team) || admin => Ok(()),
        Action::ReadTeam(team) => Err(format!(
            "key not allowed to access this team's info. Key team_id={}, Requested team_id={team}",
            key.team_id.as_deref().unwrap_or("None")
        )),
        Action::ManageTeam(_) if admin => Ok(()),
        Action::ManageTeam(team) => Err(format!(
            "Call not allowed. User not proxy admin OR team admin. team_id={team}"
        )),
    }
}

/// The caller's own key record, if it is still good (unknown, blocked or expired keys are
/// refused as an auth check refuses them; a key over budget may still read and manage).
/// Read through the key cache, like an auth check: a stranger's bearer costs at most one
/// read per 5 s.
pub async fn own_key(s: &AppState, token: &KeyHash) -> Result<KeyRecord, ApiError> {
    let record = s
        .gate
        .resolve(token)
        .await
        .map_err(|_| ApiError::DbUnavailable)?;
    match decide(record, Utc::now(), 0) {
        Decision::Allow { record, .. } => Ok(*record),
        Decision::Deny(reason) => Err(ApiError::Denied(reason)),
        _ => Err(ApiError::DbUnavailable),
    }
}

/// The first check of a write a team admin may make (and of a read any good key may make):
/// the master key passes; a key passes if it is good (its team's rights are checked later,
/// against the target). A key that is unknown, blocked or expired gets the 403 of a key
/// that is not the master key, as before team admins existed: nothing here tells a
/// stranger whether a key exists.
pub async fn manager(s: &AppState, caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Master => Ok(()),
        Caller::Key(token) => match own_key(s, token).await {
            Err(ApiError::Denied(_)) => Err(ApiError::Forbidden),
            other => other.map(|_| ()),
        },
    }
}

/// Checks the caller may do `action` to team `team_id`: the master key may; a key may when
/// [`allowed`] says so, its user's role in the team read from the database.
pub async fn check_team(s: &AppState, caller: &Caller, action: Action<'_>) -> Result<(), ApiError> {
    let key = match caller {
        Caller::Master => None,
        Caller::Key(token) => Some(own_key(s, token).await?),
    };
    let team_id = match action {
        Action::ReadTeam(t) | Action::ManageTeam(t) => t,
    };
    let role_in_team = match key.as_ref().and_then(|k| k.user_id.as_deref()) {
        Some(user) => role_of(s, team_id, user).await?,
        None => None,
    };
    let who = match &key {
        None => Who::Master,
        Some(key) => Who::Key { key, role_in_team },
    };
    allowed(who, action).map_err(ApiError::NotAllowed)
}

/// Checks the caller may write the key `token` (update, block, delete): the master key may;
/// a key may if the target key is in a team the caller's user is an admin of. A key the
/// caller may not write is refused alike whether it exists or not (nothing is learned of
/// it); the master key gets the handler's 404.
pub async fn check_key_write(
    s: &AppState,
    caller: &Caller,
    token: &KeyHash,
) -> Result<(), ApiError> {
    if matches!(caller, Caller::Master) {
        return Ok(());
    }
    let target = s.db.get_key(token).await?;
    match target.as_ref().and_then(|k| k.team_id.as_deref()) {
        Some(team) => check_team(s, caller, Action::ManageTeam(team)).await,
        None => Err(ApiError::NotAllowed(
            "Call not allowed. Only the proxy admin (the master key) manages keys outside a team"
                .into(),
        )),
    }
}

/// Checks the caller may create a key with this `team_id` and `user_id`: the master key
/// may; a key only in a team its user is an admin of, for a member of that team (or no user).
pub async fn check_new_key(
    s: &AppState,
    caller: &Caller,
    team_id: Option<&str>,
    user_id: Option<&str>,
) -> Result<(), ApiError> {
    if matches!(caller, Caller::Master) {
        return Ok(());
    }
    let Some(team) = team_id else {
        return Err(ApiError::NotAllowed(
            "Call not allowed. A team admin generates keys with its team's team_id; only the proxy admin (the master key) generates others".into(),
        ));
    };
    check_team(s, caller, Action::ManageTeam(team)).await?;
    if let Some(user) = user_id {
        if role_of(s, team, user).await?.is_none() {
            return Err(ApiError::NotAllowed(format!(
                "Call not allowed. user_id={user} is not a member of team_id={team}"
            )));
        }
    }
    Ok(())
}

/// Refuses, for a key that is not the master key, what only the master key may change on
/// a key: its team or user (moving it), and `blocked: false` (unblocking).
pub fn check_no_move(
    caller: &Caller,
    team_id: Option<&str>,
    user_id: Option<&str>,
    blocked: Option<bool>,
) -> Result<(), ApiError> {
    let refused = |what: &str| {
        Err(ApiError::NotAllowed(format!(
            "Call not allowed. Only the proxy admin (the master key) {what}"
        )))
    };
    match caller {
        Caller::Master => Ok(()),
        Caller::Key(_) if team_id.is_some() || user_id.is_some() => {
            refused("moves a key to another team or user")
        }
        Caller::Key(_) if blocked == Some(false) => refused("unblocks a key"),
        Caller::Key(_) => Ok(()),
    }
}

/// The user's role in the team, if a member.
async fn role_of(
    s: &AppState,
    team_id: &str,
    user_id: &str,
) -> Result<Option<MemberRole>, ApiError> {
    let members =
        s.db.run(crate::protocol::TeamMembers {
            team_id: team_id.to_owned(),
        })
        .await?;
    Ok(members
        .into_iter()
        .find(|m| m.user_id == user_id)
        .map(|m| m.role))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_cache::tests::record;

    fn key(team: Option<&str>, user: Option<&str>) -> KeyRecord {
        let mut r = record("sk-caller");
        r.team_id = team.map(str::to_owned);
        r.user_id = user.map(str::to_owned);
        r
    }

    fn as_key(key: &KeyRecord, role: Option<MemberRole>) -> Who<'_> {
        Who::Key {
            key,
            role_in_team: role,
        }
    }

    #[test]
    fn the_master_key_may_do_anything() {
        assert_eq!(allowed(Who::Master, Action::ReadTeam("t")), Ok(()));
        assert_eq!(allowed(Who::Master, Action::ManageTeam("t")), Ok(()));
    }

    #[test]
    fn a_key_reads_its_own_teams_info_and_no_other() {
        let k = key(Some("t1"), Some("u"));
        assert_eq!(allowed(as_key(&k, None), Action::ReadTeam("t1")), Ok(()));
        let refused = allowed(as_key(&k, None), Action::ReadTeam("t2")).unwrap_err();
        assert!(refused.contains("Requested team_id=t2"), "{refused}");
        // A plain member of another team reads it no more than a stranger does.
        let member = Some(MemberRole::User);
        assert!(allowed(as_key(&k, member), Action::ReadTeam("t2")).is_err());
        let teamless = key(None, None);
        assert!(allowed(as_key(&teamless, None), Action::ReadTeam("t1")).is_err());
    }

    #[test]
    fn only_a_team_admin_manages_its_team() {
        let k = key(Some("t1"), Some("u"));
        let admin = Some(MemberRole::Admin);
        assert_eq!(allowed(as_key(&k, admin), Action::ManageTeam("t2")), Ok(()));
        assert_eq!(allowed(as_key(&k, admin), Action::ReadTeam("t2")), Ok(()));
        for role in [None, Some(MemberRole::User)] {
            let refused = allowed(as_key(&k, role), Action::ManageTeam("t1")).unwrap_err();
            assert!(refused.starts_with("Call not allowed"), "{refused}");
        }
    }
}
