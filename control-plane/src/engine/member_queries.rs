//! The SQL for team memberships. A write that changes a membership's budget (adding one
//! with a budget, changing it, removing one that had it) gives each of the member's keys in
//! the team a new version and logs it, in the same statement, as a team's or a user's
//! write does: a membership change reaches caches and filters exactly as a key change does.

use std::sync::LazyLock;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::policy_sql::{key_with_policies, MEMBERS, NO_MEMBERS};
use super::queries::{classify, column};
use super::team_queries::{team, TEAM_COLUMNS};
use crate::model::{
    KeyRecord, MemberPatch, MemberRef, MemberWrite, Membership, NewMember, TeamRecord,
};
use crate::protocol::EngineError;

/// A membership as `Membership` reads it, from the membership row `m` and its user `u`.
const MEMBERSHIP: &str = "m.team_id, m.user_id, u.user_email, m.role,
    m.max_budget AS max_budget_in_team, m.spend, m.created_at, m.updated_at";

/// The member `$2` (a user id) or `$3` (an email) of team `$1`, as `who (user_id)`.
const MEMBER_OF_TEAM: &str = "who AS (SELECT m.user_id FROM livegate_team_members m
        JOIN livegate_users u ON u.user_id = m.user_id
    WHERE m.team_id = $1 AND CASE WHEN $2::text IS NOT NULL THEN m.user_id = $2
        ELSE u.user_email = $3 END)";

/// The member's keys in the team (`mu` the written membership) get new versions when the
/// written budget differs from `old_budget` (SQL); `p` is their new state with the
/// membership read from `member_row`.
fn relog(old_budget: &str, member_row: &str) -> String {
    format!(
        "w AS (UPDATE livegate_keys SET version = nextval('livegate_key_changes_seq_seq')
          WHERE team_id = $1 AND user_id IN (SELECT user_id FROM mu)
            AND ({old_budget}) IS DISTINCT FROM (SELECT max_budget FROM mu)
          RETURNING *),
    p AS ({policies}),
    c AS (INSERT INTO livegate_key_changes (seq, token, record)
          SELECT version, token, to_jsonb(p) - 'version' FROM p)",
        policies = key_with_policies("livegate_teams", "livegate_users", member_row),
    )
}

/// The statement's answer: the membership (`mu` with its user's email from `e`), then the
/// keys it logged.
const ANSWER: &str = "SELECT 'member' AS kind, to_jsonb(x) AS row FROM (
        SELECT mu.team_id, mu.user_id, (SELECT user_email FROM e) AS user_email, mu.role,
            mu.max_budget AS max_budget_in_team, mu.spend, mu.created_at, mu.updated_at
        FROM mu) x
    UNION ALL SELECT 'key', to_jsonb(p) FROM p";

/// Adds a member named by id (`by` `user_id`) or by email (`user_email`). Two calls
/// creating the same user at once both succeed (LiteLLM's own test makes ten teams with
/// one new member in parallel): the second waits for the first's user and takes it.
fn add(by: &str) -> String {
    format!(
        "WITH team AS (SELECT team_id FROM livegate_teams WHERE team_id = $1),
    found AS (SELECT user_id, user_email FROM livegate_users
        WHERE CASE WHEN $2::text IS NOT NULL THEN user_id = $2 ELSE user_email = $3 END),
    made AS (INSERT INTO livegate_users (user_id, user_email, user_role)
        SELECT COALESCE($2, $4), $3, 'internal_user' FROM team
        WHERE NOT EXISTS (SELECT 1 FROM found)
        ON CONFLICT ({by}) DO UPDATE SET {by} = EXCLUDED.{by}
        RETURNING user_id, user_email),
    e AS (SELECT * FROM found UNION ALL SELECT * FROM made),
    mu AS (INSERT INTO livegate_team_members (team_id, user_id, role, max_budget)
        SELECT team.team_id, e.user_id, $5, $6 FROM team, e RETURNING *),
    {relog}
    {ANSWER}",
        relog = relog("NULL::float8", "mu"),
    )
}

static ADD_BY_ID: LazyLock<String> = LazyLock::new(|| add("user_id"));
static ADD_BY_EMAIL: LazyLock<String> = LazyLock::new(|| add("user_email"));

static UPDATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH {MEMBER_OF_TEAM},
    o AS (SELECT * FROM livegate_team_members
        WHERE team_id = $1 AND user_id IN (SELECT user_id FROM who)),
    mu AS (UPDATE livegate_team_members SET role = COALESCE($4, role),
            max_budget = COALESCE($5, max_budget), updated_at = now()
        WHERE team_id = $1 AND user_id IN (SELECT user_id FROM who) RETURNING *),
    e AS (SELECT user_id, user_email FROM livegate_users WHERE user_id IN (SELECT user_id FROM who)),
    {relog}
    {ANSWER}",
        relog = relog("SELECT max_budget FROM o", "mu"),
    )
});

static DELETE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH {MEMBER_OF_TEAM},
    mu AS (DELETE FROM livegate_team_members
        WHERE team_id = $1 AND user_id IN (SELECT user_id FROM who) RETURNING *),
    e AS (SELECT user_id, user_email FROM livegate_users WHERE user_id IN (SELECT user_id FROM who)),
    {relog}
    {ANSWER}",
        // Gone: its keys read no membership (the table still shows it inside the statement).
        relog = relog("NULL::float8", NO_MEMBERS).replace(
            "AND (NULL::float8) IS DISTINCT FROM (SELECT max_budget FROM mu)",
            "AND (SELECT max_budget FROM mu) IS NOT NULL",
        ),
    )
});

fn reference(who: &MemberRef) -> (Option<&str>, Option<&str>) {
    match who {
        MemberRef::UserId(id) => (Some(id), None),
        MemberRef::Email(email) => (None, Some(email)),
    }
}

/// Adds the member to the team, creating its user if none has its id (or email). `None`:
/// no such team. A member already in the team is a conflict on `member`.
pub async fn add_member(
    c: &Client,
    team_id: &str,
    m: &NewMember,
) -> Result<Option<MemberWrite>, EngineError> {
    let (user_id, by_email) = reference(&m.who);
    let email = by_email.or(m.user_email.as_deref());
    let role = m.role.as_str();
    let params: [&(dyn ToSql + Sync); 6] = [
        &team_id,
        &user_id,
        &email,
        &m.new_user_id,
        &role,
        &m.max_budget_in_team,
    ];
    let sql = if user_id.is_some() {
        &*ADD_BY_ID
    } else {
        &*ADD_BY_EMAIL
    };
    let rows = c.query(sql.as_str(), &params).await.map_err(classify)?;
    member_write(&rows)
}

/// Changes the member's role or budget in the team. `None`: no such member.
pub async fn update_member(
    c: &Client,
    team_id: &str,
    who: &MemberRef,
    patch: &MemberPatch,
) -> Result<Option<MemberWrite>, EngineError> {
    let (user_id, email) = reference(who);
    let role = patch.role.map(|r| r.as_str());
    let params: [&(dyn ToSql + Sync); 5] =
        [&team_id, &user_id, &email, &role, &patch.max_budget_in_team];
    let rows = c.query(UPDATE.as_str(), &params).await.map_err(classify)?;
    member_write(&rows)
}

/// Removes the member from the team (its user and keys stay). `None`: no such member.
pub async fn delete_member(
    c: &Client,
    team_id: &str,
    who: &MemberRef,
) -> Result<Option<MemberWrite>, EngineError> {
    let (user_id, email) = reference(who);
    let params: [&(dyn ToSql + Sync); 3] = [&team_id, &user_id, &email];
    let rows = c.query(DELETE.as_str(), &params).await.map_err(classify)?;
    member_write(&rows)
}

/// The team's members, oldest first.
pub async fn team_members(c: &Client, team_id: &str) -> Result<Vec<Membership>, EngineError> {
    let sql = format!(
        "SELECT {MEMBERSHIP} FROM {MEMBERS} m JOIN livegate_users u ON u.user_id = m.user_id
         WHERE m.team_id = $1 ORDER BY m.created_at, m.user_id LIMIT 1000"
    );
    let rows = c.query(&sql, &[&team_id]).await.map_err(classify)?;
    rows.iter().map(membership).collect()
}

/// The teams the user is a member of, oldest membership first.
pub async fn user_teams(c: &Client, user_id: &str) -> Result<Vec<TeamRecord>, EngineError> {
    let columns = TEAM_COLUMNS
        .split(", ")
        .map(|c| format!("t.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {columns} FROM {MEMBERS} m JOIN livegate_teams t ON t.team_id = m.team_id
         WHERE m.user_id = $1 ORDER BY m.created_at, m.team_id LIMIT 1000"
    );
    let rows = c.query(&sql, &[&user_id]).await.map_err(classify)?;
    rows.iter().map(team).collect()
}

fn membership(row: &Row) -> Result<Membership, EngineError> {
    let role: String = column(row, "role")?;
    Ok(Membership {
        team_id: column(row, "team_id")?,
        user_id: column(row, "user_id")?,
        user_email: column(row, "user_email")?,
        role: crate::model::MemberRole::parse(&role)
            .ok_or_else(|| EngineError::Query("livegate_team_members.role out of range".into()))?,
        max_budget_in_team: column(row, "max_budget_in_team")?,
        spend: column(row, "spend")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
    })
}

/// Splits a write's rows: the membership, then the keys it changed.
fn member_write(rows: &[Row]) -> Result<Option<MemberWrite>, EngineError> {
    let mut member = None;
    let mut keys: Vec<KeyRecord> = vec![];
    for row in rows {
        let kind: String = column(row, "kind")?;
        let json: serde_json::Value = column(row, "row")?;
        let bad = |e: serde_json::Error| EngineError::Query(format!("member write row: {e}"));
        if kind == "member" {
            member = Some(serde_json::from_value::<Membership>(json).map_err(bad)?);
        } else {
            keys.push(serde_json::from_value(json).map_err(bad)?);
        }
    }
    Ok(member.map(|member| MemberWrite { member, keys }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::policy_sql::names_every_carried_column;

    /// Every membership write logs its keys with every policy they carry.
    #[test]
    fn a_relogged_key_keeps_every_policy_it_carries() {
        for sql in [&*ADD_BY_ID, &*ADD_BY_EMAIL, &*UPDATE, &*DELETE] {
            assert!(names_every_carried_column(sql));
        }
        assert!(DELETE.contains("(SELECT max_budget FROM mu) IS NOT NULL"));
        assert!(DELETE.contains(NO_MEMBERS));
    }
}
