//! The SQL of the spend ledger. The drain's write is one statement, so one transaction:
//! the rows whose request id is new are inserted, and only those rows' cost is added to
//! their key's and team's `spend`. A replayed batch inserts nothing and adds nothing.
//! Spend is not policy: the key's `version` and the change log are left alone.

use chrono::{NaiveDate, NaiveTime};
use tokio_postgres::types::Json;
use tokio_postgres::{Client, Row};

use super::protocol::{EngineError, SpendFilter, SpendGroup, SpendInserted, SpendRow};
use super::queries::{classify, column};
use crate::ledger::LedgerEntry;

const INSERT_SPEND: &str = "
WITH input AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(
        request_id text, key_hash text, key_alias text, team_id text,
        model_requested text, model_returned text,
        prompt_tokens bigint, completion_tokens bigint, total_tokens bigint,
        cost double precision, unpriced boolean, usage_known boolean,
        status integer, streamed boolean, start_time_ms bigint, end_time_ms bigint)
),
ins AS (
    INSERT INTO livegate_spend_logs (request_id, key_hash, key_alias, team_id,
        model_requested, model_returned, prompt_tokens, completion_tokens, total_tokens,
        cost, unpriced, usage_known, status, streamed, start_time, end_time)
    SELECT request_id, key_hash, key_alias, team_id, model_requested, model_returned,
        prompt_tokens, completion_tokens, total_tokens, cost, unpriced, usage_known,
        status, streamed, to_timestamp(start_time_ms / 1000.0), to_timestamp(end_time_ms / 1000.0)
    FROM input
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id, key_hash, team_id, cost, unpriced
),
k AS (
    UPDATE livegate_keys k SET spend = k.spend + s.cost
    FROM (SELECT key_hash, sum(cost) AS cost FROM ins GROUP BY key_hash) s
    WHERE k.token = s.key_hash
),
t AS (
    UPDATE livegate_teams t SET spend = t.spend + s.cost
    FROM (SELECT team_id, sum(cost) AS cost FROM ins WHERE team_id IS NOT NULL GROUP BY team_id) s
    WHERE t.team_id = s.team_id
)
SELECT count(*) AS inserted, count(*) FILTER (WHERE unpriced) AS unpriced,
    (SELECT COALESCE(array_agg(i.request_id), ARRAY[]::text[]) FROM input i
     WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.request_id = i.request_id)) AS duplicates
FROM ins";

/// The filter's conditions: $1 key hash, $2 request id, $3 from, $4 before.
const WHERE: &str = "WHERE ($1::text IS NULL OR key_hash = $1)
    AND ($2::text IS NULL OR request_id = $2)
    AND ($3::timestamptz IS NULL OR start_time >= $3)
    AND ($4::timestamptz IS NULL OR start_time < $4)";

pub async fn insert_spend(c: &Client, rows: &[LedgerEntry]) -> Result<SpendInserted, EngineError> {
    let row = c
        .query_one(INSERT_SPEND, &[&Json(rows)])
        .await
        .map_err(classify)?;
    let inserted: i64 = column(&row, "inserted")?;
    let unpriced: i64 = column(&row, "unpriced")?;
    let duplicates: Vec<String> = column(&row, "duplicates")?;
    Ok(SpendInserted {
        inserted: u64::try_from(inserted).unwrap_or(0),
        unpriced: u64::try_from(unpriced).unwrap_or(0),
        duplicates,
    })
}

/// The filter's bounds as instants: from the start day's midnight (UTC) to the midnight
/// after the end day.
fn bounds(
    f: &SpendFilter,
) -> (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
) {
    let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN).and_utc();
    (
        f.start_date.map(midnight),
        f.end_date.and_then(|d| d.succ_opt()).map(midnight),
    )
}

fn spend_row(row: &Row) -> Result<SpendRow, EngineError> {
    Ok(SpendRow {
        request_id: column(row, "request_id")?,
        key_hash: column(row, "key_hash")?,
        key_alias: column(row, "key_alias")?,
        team_id: column(row, "team_id")?,
        model_requested: column(row, "model_requested")?,
        model_returned: column(row, "model_returned")?,
        prompt_tokens: column(row, "prompt_tokens")?,
        completion_tokens: column(row, "completion_tokens")?,
        total_tokens: column(row, "total_tokens")?,
        cost: column(row, "cost")?,
        unpriced: column(row, "unpriced")?,
        usage_known: column(row, "usage_known")?,
        status: column(row, "status")?,
        streamed: column(row, "streamed")?,
        start_time: column(row, "start_time")?,
        end_time: column(row, "end_time")?,
    })
}

pub async fn spend_logs(c: &Client, f: &SpendFilter) -> Result<Vec<SpendRow>, EngineError> {
    let (from, before) = bounds(f);
    let sql = format!(
        "SELECT request_id, key_hash, key_alias, team_id, model_requested, model_returned,
            prompt_tokens, completion_tokens, total_tokens, cost, unpriced, usage_known,
            status, streamed, start_time, end_time
         FROM livegate_spend_logs {WHERE} ORDER BY start_time DESC, request_id LIMIT $5"
    );
    let rows = c
        .query(
            &sql,
            &[&f.key_hash, &f.request_id, &from, &before, &f.limit],
        )
        .await
        .map_err(classify)?;
    rows.iter().map(spend_row).collect()
}

pub async fn spend_summary(c: &Client, f: &SpendFilter) -> Result<Vec<SpendGroup>, EngineError> {
    let (from, before) = bounds(f);
    let sql = format!(
        "SELECT (start_time AT TIME ZONE 'UTC')::date AS day, key_hash,
            COALESCE(model_returned, model_requested, '') AS model, sum(cost) AS spend
         FROM livegate_spend_logs {WHERE} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    );
    let rows = c
        .query(&sql, &[&f.key_hash, &f.request_id, &from, &before])
        .await
        .map_err(classify)?;
    rows.iter()
        .map(|row| {
            Ok(SpendGroup {
                day: column(row, "day")?,
                key_hash: column(row, "key_hash")?,
                model: column(row, "model")?,
                spend: column(row, "spend")?,
            })
        })
        .collect()
}

pub async fn global_spend(c: &Client) -> Result<f64, EngineError> {
    let row = c
        .query_one(
            "SELECT COALESCE(sum(cost), 0)::double precision AS spend FROM livegate_spend_logs",
            &[],
        )
        .await
        .map_err(classify)?;
    column(&row, "spend")
}
