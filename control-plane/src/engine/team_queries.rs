//! The SQL for teams. A team's write that changes its keys' policy (blocked, models) also
//! gives each of its keys a new version and logs it, in the same statement: a team change
//! reaches caches and filters exactly as a key change does.

use tokio_postgres::{Client, Row};

use super::queries::{classify, column, record, token, COLUMNS};
use crate::protocol::{EngineError, TeamAndKeys, TeamList};
use crate::record::{TeamPatch, TeamRecord, TeamWrite, TeamsDeleted};

const TEAM_COLUMNS: &str =
    "team_id, team_alias, models, metadata, blocked, spend, created_at, updated_at, max_budget, soft_budget, budget_duration, budget_reset_at, budget_duration_secs, rpm_limit, tpm_limit, max_parallel_requests";

/// The keys of the written team (`t`) get new versions; `p` is their new state with the
/// team's new policy (the view would still show the old one inside this statement).
const RELOG_KEYS: &str = "
    w AS (UPDATE livegate_keys SET version = nextval('livegate_key_changes_seq_seq')
          WHERE team_id = (SELECT team_id FROM t) AND EXISTS (SELECT 1 FROM o, t
              WHERE o.blocked IS DISTINCT FROM t.blocked OR o.models IS DISTINCT FROM t.models
                 OR o.max_budget IS DISTINCT FROM t.max_budget OR o.spend IS DISTINCT FROM t.spend
                 OR o.rpm_limit IS DISTINCT FROM t.rpm_limit OR o.tpm_limit IS DISTINCT FROM t.tpm_limit
                 OR o.max_parallel_requests IS DISTINCT FROM t.max_parallel_requests)
          RETURNING *),
    p AS (SELECT w.*, t.blocked AS team_blocked, t.models AS team_models,
                 t.max_budget AS team_max_budget, t.spend AS team_spend,
                 t.rpm_limit AS team_rpm_limit, t.tpm_limit AS team_tpm_limit,
                 t.max_parallel_requests AS team_max_parallel_requests FROM w, t),
    c AS (INSERT INTO livegate_key_changes (seq, token, record)
          SELECT version, token, to_jsonb(p) - 'version' FROM p)";

fn team(row: &Row) -> Result<TeamRecord, EngineError> {
    Ok(TeamRecord {
        team_id: column(row, "team_id")?,
        team_alias: column(row, "team_alias")?,
        models: column(row, "models")?,
        metadata: column(row, "metadata")?,
        blocked: column(row, "blocked")?,
        spend: column(row, "spend")?,
        max_budget: column(row, "max_budget")?,
        soft_budget: column(row, "soft_budget")?,
        budget_duration: column(row, "budget_duration")?,
        budget_reset_at: column(row, "budget_reset_at")?,
        rpm_limit: column(row, "rpm_limit")?,
        tpm_limit: column(row, "tpm_limit")?,
        max_parallel_requests: column(row, "max_parallel_requests")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
    })
}

pub async fn insert_team(c: &Client, t: &TeamRecord) -> Result<TeamRecord, EngineError> {
    let budget_duration_secs = super::queries::duration_secs(t.budget_duration.as_deref());
    let sql = format!(
        "INSERT INTO livegate_teams ({TEAM_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         RETURNING {TEAM_COLUMNS}"
    );
    let row = c
        .query_one(
            &sql,
            &[
                &t.team_id,
                &t.team_alias,
                &t.models,
                &t.metadata,
                &t.blocked,
                &t.spend,
                &t.created_at,
                &t.updated_at,
                &t.max_budget,
                &t.soft_budget,
                &t.budget_duration,
                &t.budget_reset_at,
                &budget_duration_secs,
                &t.rpm_limit,
                &t.tpm_limit,
                &t.max_parallel_requests,
            ],
        )
        .await
        .map_err(classify)?;
    team(&row)
}

/// The team, and its keys when `with_keys`.
pub async fn get_team(
    c: &Client,
    team_id: &str,
    with_keys: bool,
) -> Result<Option<TeamAndKeys>, EngineError> {
    let sql = format!("SELECT {TEAM_COLUMNS} FROM livegate_teams WHERE team_id = $1");
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
        "SELECT {TEAM_COLUMNS} FROM livegate_teams ORDER BY created_at DESC, team_id LIMIT $1 OFFSET $2"
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
        "WITH o AS (SELECT blocked, models, max_budget, spend, rpm_limit, tpm_limit, max_parallel_requests FROM livegate_teams WHERE team_id = $1),
         t AS (UPDATE livegate_teams SET
            team_alias = COALESCE($2, team_alias), models = COALESCE($3, models),
            metadata = COALESCE($4, metadata), blocked = COALESCE($5, blocked),
            max_budget = COALESCE($6, max_budget), soft_budget = COALESCE($7, soft_budget),
            budget_duration = COALESCE($8, budget_duration),
            budget_duration_secs = COALESCE($9, budget_duration_secs),
            budget_reset_at = COALESCE($10, budget_reset_at),
            rpm_limit = COALESCE($11, rpm_limit), tpm_limit = COALESCE($12, tpm_limit),
            max_parallel_requests = COALESCE($13, max_parallel_requests),
            updated_at = now()
         WHERE team_id = $1 RETURNING *),
         {RELOG_KEYS}
         SELECT 'team' AS kind, to_jsonb(t) AS row FROM t
         UNION ALL SELECT 'key', to_jsonb(p) FROM p"
    );
    let rows = c
        .query(
            &sql,
            &[
                &team_id,
                &p.team_alias,
                &p.models,
                &p.metadata,
                &p.blocked,
                &p.budget.max_budget,
                &p.budget.soft_budget,
                &p.budget.budget_duration,
                &p.budget.budget_duration_secs,
                &p.budget.budget_reset_at,
                &p.limits.rpm_limit,
                &p.limits.tpm_limit,
                &p.limits.max_parallel_requests,
            ],
        )
        .await
        .map_err(classify)?;
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
async fn team_keys(
    c: &Client,
    team_id: &str,
) -> Result<Vec<crate::record::KeyRecord>, EngineError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM livegate_key_policies WHERE team_id = $1 ORDER BY created_at DESC LIMIT 1000"
    );
    let rows = c.query(&sql, &[&team_id]).await.map_err(classify)?;
    rows.iter().map(record).collect()
}
