//! The SQL for teams. A team's write that changes its keys' policy (blocked, models) also
//! gives each of its keys a new version and logs it, in the same statement: a team change
//! reaches caches and filters exactly as a key change does.

use std::sync::LazyLock;

use std::collections::BTreeMap;

use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{Client, Row};

use super::policy_sql::{
    self, key_with_policies, placeholders, team_policy_changed, PolicyParams, MEMBERS,
    POLICY_COLUMN_NAMES,
};

use super::queries::{classify, column, record, token, COLUMNS};
use crate::model::{TeamPatch, TeamRecord, TeamWrite, TeamsDeleted};
use crate::protocol::{EngineError, TeamAndKeys, TeamList};

/// A team's own columns, without its policy columns (`policy_sql::POLICY`).
const TEAM_OWN_COLUMNS: &str =
    "team_id, team_alias, models, metadata, blocked, spend, created_at, updated_at, model_aliases, model_rpm_limit, model_tpm_limit";

pub(super) static TEAM_COLUMNS: LazyLock<String> =
    LazyLock::new(|| format!("{TEAM_OWN_COLUMNS}, {}", *POLICY_COLUMN_NAMES));

/// The keys of the written team (`t`) get new versions when the policy they carry changed
/// (`o` is the team's row before the write); `p` is their new state with the team's new
/// policy (the view would still show the old one inside this statement).
static RELOG_KEYS: LazyLock<String> = LazyLock::new(|| {
    policy_sql::relog_keys(
        "team_id",
        "t",
        &team_policy_changed("o", "t"),
        &key_with_policies("t", "livegate_users", MEMBERS),
    )
});

pub(super) fn team(row: &Row) -> Result<TeamRecord, EngineError> {
    Ok(TeamRecord {
        team_id: column(row, "team_id")?,
        team_alias: column(row, "team_alias")?,
        models: column(row, "models")?,
        metadata: column(row, "metadata")?,
        blocked: column(row, "blocked")?,
        spend: column(row, "spend")?,
        model_aliases: column::<Json<BTreeMap<String, String>>>(row, "model_aliases")?.0,
        budget: policy_sql::budget(row)?,
        limits: policy_sql::limits(row, "")?,
        model_limits: policy_sql::model_limits(row, "")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
    })
}

pub async fn insert_team(c: &Client, t: &TeamRecord) -> Result<TeamRecord, EngineError> {
    let policy = PolicyParams::new(&t.budget, &t.limits);
    let aliases = Json(&t.model_aliases);
    let model_rpm = Json(&t.model_limits.model_rpm_limit);
    let model_tpm = Json(&t.model_limits.model_tpm_limit);
    let own: [&(dyn ToSql + Sync); 11] = [
        &t.team_id,
        &t.team_alias,
        &t.models,
        &t.metadata,
        &t.blocked,
        &t.spend,
        &t.created_at,
        &t.updated_at,
        &aliases,
        &model_rpm,
        &model_tpm,
    ];
    let params: Vec<&(dyn ToSql + Sync)> = own.into_iter().chain(policy.params()).collect();
    let sql = format!(
        "INSERT INTO livegate_teams ({columns}) VALUES ({values}) RETURNING {columns}",
        columns = *TEAM_COLUMNS,
        values = placeholders(1, params.len()),
    );
    let row = c.query_one(&sql, &params).await.map_err(classify)?;
    team(&row)
}

/// The team, and its keys when `with_keys`.
pub async fn get_team(
    c: &Client,
    team_id: &str,
    with_keys: bool,
) -> Result<Option<TeamAndKeys>, EngineError> {
    let sql = format!(
        "SELECT {} FROM livegate_teams WHERE team_id = $1",
        *TEAM_COLUMNS
    );
    let row = c.query_opt(&sql, &[&team_id]).await.map_err(classify)?;
    let Some(team) = row.as_ref().map(team).transpose()? else {
        return Ok(None);
    };
    let keys = if with_keys {
        team_keys(c, team_id).await?
    } else {
        vec![]
    };
    Ok(Some(TeamAndKeys { team, keys }))
}

pub async fn list_teams(c: &Client, page: u32, size: u32) -> Result<TeamList, EngineError> {
    let limit = i64::from(size);
    let offset = i64::from(page.saturating_sub(1)) * limit;
    let sql = format!(
        "SELECT {} FROM livegate_teams ORDER BY created_at DESC, team_id LIMIT $1 OFFSET $2",
        *TEAM_COLUMNS
    );
    let rows = c.query(&sql, &[&limit, &offset]).await.map_err(classify)?;
    let total: i64 = column(
        &c.query_one("SELECT count(*) AS n FROM livegate_teams", &[])
            .await
            .map_err(classify)?,
        "n",
    )?;
    let teams = rows.iter().map(team).collect::<Result<_, _>>()?;
    Ok(TeamList {
        teams,
        total: u64::try_from(total).unwrap_or(0),
    })
}

/// Updates the team; its keys are logged anew when their policy changed.
pub async fn update_team(
    c: &Client,
    team_id: &str,
    p: &TeamPatch,
) -> Result<Option<TeamWrite>, EngineError> {
    let sql = format!(
        "WITH o AS (SELECT * FROM livegate_teams WHERE team_id = $1),
         t AS (UPDATE livegate_teams SET
            team_alias = COALESCE($2, team_alias), models = COALESCE($3, models),
            metadata = COALESCE($4, metadata), blocked = COALESCE($5, blocked),
            model_aliases = COALESCE($6, model_aliases),
            model_rpm_limit = COALESCE($7, model_rpm_limit),
            model_tpm_limit = COALESCE($8, model_tpm_limit), {policy}, updated_at = now()
         WHERE team_id = $1 RETURNING *),
         {relog}
         SELECT 'team' AS kind, to_jsonb(t) AS row FROM t
         UNION ALL SELECT 'key', to_jsonb(p) FROM p",
        policy = policy_sql::updates(9),
        relog = *RELOG_KEYS,
    );
    let policy = PolicyParams::new(&p.budget, &p.limits);
    let aliases = p.model_aliases.as_ref().map(Json);
    let model_rpm = p.model_rpm_limit.as_ref().map(Json);
    let model_tpm = p.model_tpm_limit.as_ref().map(Json);
    let own: [&(dyn ToSql + Sync); 8] = [
        &team_id,
        &p.team_alias,
        &p.models,
        &p.metadata,
        &p.blocked,
        &aliases,
        &model_rpm,
        &model_tpm,
    ];
    let params: Vec<&(dyn ToSql + Sync)> = own.into_iter().chain(policy.params()).collect();
    let rows = c.query(&sql, &params).await.map_err(classify)?;
    team_write(&rows)
}

/// Splits the update's rows: the team, then the keys it changed.
fn team_write(rows: &[Row]) -> Result<Option<TeamWrite>, EngineError> {
    let mut team = None;
    let mut keys = vec![];
    for row in rows {
        let kind: String = column(row, "kind")?;
        let json: serde_json::Value = column(row, "row")?;
        let bad = |e: serde_json::Error| EngineError::Query(format!("team update row: {e}"));
        if kind == "team" {
            team = Some(serde_json::from_value::<TeamRecord>(json).map_err(bad)?);
        } else {
            keys.push(serde_json::from_value(json).map_err(bad)?);
        }
    }
    Ok(team.map(|team| TeamWrite { team, keys }))
}

/// Deletes the teams and every key in them, with a tombstone for each key.
pub async fn delete_teams(c: &Client, team_ids: &[String]) -> Result<TeamsDeleted, EngineError> {
    let sql = "WITH k AS (DELETE FROM livegate_keys WHERE team_id = ANY($1) RETURNING token),
         c AS (INSERT INTO livegate_key_changes (token, record) SELECT token, NULL FROM k RETURNING seq, token),
         t AS (DELETE FROM livegate_teams WHERE team_id = ANY($1) RETURNING team_id)
         SELECT 'team' AS kind, team_id AS token, 0::bigint AS seq FROM t
         UNION ALL SELECT 'key', token, seq FROM c";
    let rows = c.query(sql, &[&team_ids]).await.map_err(classify)?;
    let mut deleted = TeamsDeleted::default();
    for row in &rows {
        let kind: String = column(row, "kind")?;
        if kind == "team" {
            deleted.team_ids.push(column(row, "token")?);
        } else {
            deleted.keys.push((token(row)?, column(row, "seq")?));
        }
    }
    Ok(deleted)
}

/// A team's keys as the view shows them (for `/team/info`).
async fn team_keys(c: &Client, team_id: &str) -> Result<Vec<crate::model::KeyRecord>, EngineError> {
    let sql = format!(
        "SELECT {} FROM livegate_key_policies WHERE team_id = $1 ORDER BY created_at DESC LIMIT 1000",
        *COLUMNS
    );
    let rows = c.query(&sql, &[&team_id]).await.map_err(classify)?;
    rows.iter().map(record).collect()
}

#[cfg(test)]
mod tests {
    /// A team's write logs its keys with their user's policy as well as the team's.
    #[test]
    fn a_relogged_key_keeps_every_policy_it_carries() {
        assert!(super::policy_sql::names_every_carried_column(
            &super::RELOG_KEYS
        ));
    }
}
