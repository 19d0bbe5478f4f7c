//! The SQL for users. A user's write that changes its keys' policy (models, budget, spend,
//! limits) also gives each of its keys a new version and logs it, in the same statement,
//! as a team's does: a user change reaches caches and filters exactly as a key change does.
//! Deleting a user deletes its keys, with a tombstone for each.

use std::sync::LazyLock;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::policy_sql::{
    self, key_with_policies, placeholders, user_policy_changed, PolicyParams, MEMBERS,
    POLICY_COLUMN_NAMES,
};
use super::queries::{classify, column, record, token, COLUMNS};
use crate::model::{
    KeyRecord, UserAndKeys, UserPage, UserPatch, UserRecord, UserWrite, UsersDeleted,
};
use crate::protocol::EngineError;

/// A user's own columns, without its policy columns (`policy_sql::POLICY`).
const USER_OWN_COLUMNS: &str =
    "user_id, user_email, user_role, models, metadata, spend, created_at, updated_at";

static USER_COLUMNS: LazyLock<String> =
    LazyLock::new(|| format!("{USER_OWN_COLUMNS}, {}", *POLICY_COLUMN_NAMES));

/// The keys of the written user (`u`) get new versions when the policy they carry changed
/// (`o` is the user's row before the write); `p` is their new state with the user's new
/// policy (the view would still show the old one inside this statement).
static RELOG_KEYS: LazyLock<String> = LazyLock::new(|| {
    policy_sql::relog_keys(
        "user_id",
        "u",
        &user_policy_changed("o", "u"),
        &key_with_policies("livegate_teams", "u", MEMBERS),
    )
});

fn user(row: &Row) -> Result<UserRecord, EngineError> {
    Ok(UserRecord {
        user_id: column(row, "user_id")?,
        user_email: column(row, "user_email")?,
        user_role: column(row, "user_role")?,
        models: column(row, "models")?,
        metadata: column(row, "metadata")?,
        spend: column(row, "spend")?,
        budget: policy_sql::budget(row)?,
        limits: policy_sql::limits(row, "")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
    })
}

/// Inserts the user; keys that already name its `user_id` take its policy (logged).
pub async fn insert_user(c: &Client, r: &UserRecord) -> Result<UserWrite, EngineError> {
    let policy = PolicyParams::new(&r.budget, &r.limits);
    let own: [&(dyn ToSql + Sync); 8] = [
        &r.user_id,
        &r.user_email,
        &r.user_role,
        &r.models,
        &r.metadata,
        &r.spend,
        &r.created_at,
        &r.updated_at,
    ];
    let params: Vec<&(dyn ToSql + Sync)> = own.into_iter().chain(policy.params()).collect();
    // `o` is an open policy (no row before): keys naming this id are relogged if the new
    // user imposes anything.
    let sql = format!(
        "WITH o AS (SELECT '{{}}'::text[] AS models, NULL::float8 AS max_budget, 0::float8 AS spend,
                NULL::bigint AS rpm_limit, NULL::bigint AS tpm_limit,
                NULL::bigint AS max_parallel_requests),
         u AS (INSERT INTO livegate_users ({columns}) VALUES ({values}) RETURNING *),
         {relog}
         SELECT 'user' AS kind, to_jsonb(u) AS row FROM u
         UNION ALL SELECT 'key', to_jsonb(p) FROM p",
        columns = *USER_COLUMNS,
        values = placeholders(1, params.len()),
        relog = *RELOG_KEYS,
    );
    let rows = c.query(&sql, &params).await.map_err(classify)?;
    user_write(&rows)?.ok_or_else(|| EngineError::Query("insert returned no user".into()))
}

/// The user and its keys.
pub async fn get_user(c: &Client, user_id: &str) -> Result<Option<UserAndKeys>, EngineError> {
    let sql = format!(
        "SELECT {} FROM livegate_users WHERE user_id = $1",
        *USER_COLUMNS
    );
    let row = c.query_opt(&sql, &[&user_id]).await.map_err(classify)?;
    let Some(user) = row.as_ref().map(user).transpose()? else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT {} FROM livegate_key_policies WHERE user_id = $1 ORDER BY created_at DESC LIMIT 1000",
        *COLUMNS
    );
    let rows = c.query(&sql, &[&user_id]).await.map_err(classify)?;
    let keys = rows.iter().map(record).collect::<Result<_, _>>()?;
    Ok(Some(UserAndKeys { user, keys }))
}

/// One page of users (newest first), with each one's number of keys; `role` and
/// `user_ids` filter as LiteLLM's `/user/list` does.
pub async fn list_users(
    c: &Client,
    page: u32,
    size: u32,
    role: Option<&str>,
    user_ids: Option<&[String]>,
) -> Result<UserPage, EngineError> {
    let limit = i64::from(size);
    let offset = i64::from(page.saturating_sub(1)) * limit;
    let filter =
        "($1::text IS NULL OR user_role = $1) AND ($2::text[] IS NULL OR user_id = ANY($2))";
    let sql = format!(
        "SELECT {} FROM livegate_users WHERE {filter}
         ORDER BY created_at DESC, user_id LIMIT $3 OFFSET $4",
        *USER_COLUMNS
    );
    let rows = c
        .query(&sql, &[&role, &user_ids, &limit, &offset])
        .await
        .map_err(classify)?;
    let users: Vec<UserRecord> = rows.iter().map(user).collect::<Result<_, _>>()?;
    let count_sql = format!("SELECT count(*) AS n FROM livegate_users WHERE {filter}");
    let total: i64 = column(
        &c.query_one(&count_sql, &[&role, &user_ids])
            .await
            .map_err(classify)?,
        "n",
    )?;
    let ids: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
    let counted = c
        .query(
            "SELECT user_id, count(*) AS n FROM livegate_keys WHERE user_id = ANY($1) GROUP BY user_id",
            &[&ids],
        )
        .await
        .map_err(classify)?;
    let key_counts = counted
        .iter()
        .map(|r| Ok((column(r, "user_id")?, column(r, "n")?)))
        .collect::<Result<_, EngineError>>()?;
    let joined = c
        .query(
            "SELECT user_id, team_id FROM livegate_team_members WHERE user_id = ANY($1) ORDER BY team_id",
            &[&ids],
        )
        .await
        .map_err(classify)?;
    let memberships = joined
        .iter()
        .map(|r| Ok((column(r, "user_id")?, column(r, "team_id")?)))
        .collect::<Result<_, EngineError>>()?;
    Ok(UserPage {
        users,
        key_counts,
        memberships,
        total: u64::try_from(total).unwrap_or(0),
    })
}

/// Updates the user; its keys are logged anew when their policy changed.
pub async fn update_user(
    c: &Client,
    user_id: &str,
    p: &UserPatch,
) -> Result<Option<UserWrite>, EngineError> {
    let sql = format!(
        "WITH o AS (SELECT * FROM livegate_users WHERE user_id = $1),
         u AS (UPDATE livegate_users SET
            user_email = COALESCE($2, user_email), user_role = COALESCE($3, user_role),
            models = COALESCE($4, models), metadata = COALESCE($5, metadata),
            {policy}, updated_at = now()
         WHERE user_id = $1 RETURNING *),
         {relog}
         SELECT 'user' AS kind, to_jsonb(u) AS row FROM u
         UNION ALL SELECT 'key', to_jsonb(p) FROM p",
        policy = policy_sql::updates(6),
        relog = *RELOG_KEYS,
    );
    let policy = PolicyParams::new(&p.budget, &p.limits);
    let own: [&(dyn ToSql + Sync); 5] = [
        &user_id,
        &p.user_email,
        &p.user_role,
        &p.models,
        &p.metadata,
    ];
    let params: Vec<&(dyn ToSql + Sync)> = own.into_iter().chain(policy.params()).collect();
    let rows = c.query(&sql, &params).await.map_err(classify)?;
    user_write(&rows)
}

/// Splits a write's rows: the user, then the keys it changed.
fn user_write(rows: &[Row]) -> Result<Option<UserWrite>, EngineError> {
    let mut user = None;
    let mut keys: Vec<KeyRecord> = vec![];
    for row in rows {
        let kind: String = column(row, "kind")?;
        let json: serde_json::Value = column(row, "row")?;
        let bad = |e: serde_json::Error| EngineError::Query(format!("user write row: {e}"));
        if kind == "user" {
            user = Some(serde_json::from_value::<UserRecord>(json).map_err(bad)?);
        } else {
            keys.push(serde_json::from_value(json).map_err(bad)?);
        }
    }
    Ok(user.map(|user| UserWrite { user, keys }))
}

/// Deletes the users and every key of theirs, with a tombstone for each key.
pub async fn delete_users(c: &Client, user_ids: &[String]) -> Result<UsersDeleted, EngineError> {
    // Only the keys of users that exist: a key naming an id no user holds is not theirs.
    let sql = "WITH k AS (DELETE FROM livegate_keys WHERE user_id IN
             (SELECT user_id FROM livegate_users WHERE user_id = ANY($1)) RETURNING token),
         c AS (INSERT INTO livegate_key_changes (token, record) SELECT token, NULL FROM k RETURNING seq, token),
         u AS (DELETE FROM livegate_users WHERE user_id = ANY($1) RETURNING user_id)
         SELECT 'user' AS kind, user_id AS token, 0::bigint AS seq FROM u
         UNION ALL SELECT 'key', token, seq FROM c";
    let rows = c.query(sql, &[&user_ids]).await.map_err(classify)?;
    let mut deleted = UsersDeleted::default();
    for row in &rows {
        let kind: String = column(row, "kind")?;
        if kind == "user" {
            deleted.user_ids.push(column(row, "token")?);
        } else {
            deleted.keys.push((token(row)?, column(row, "seq")?));
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    /// A user's write logs its keys with their team's policy as well as the user's.
    #[test]
    fn a_relogged_key_keeps_every_policy_it_carries() {
        assert!(super::policy_sql::names_every_carried_column(
            &super::RELOG_KEYS
        ));
    }
}
