//! The SQL of the spend ledger. The drain's write is one statement, so one transaction:
//! the rows whose request id is new are inserted, and only those rows' cost is added to
//! their key's and team's `spend`. A replayed batch inserts nothing and adds nothing.
//! The keys' costs are added to their users' `spend` too (a user's spend is the sum of its
//! keys'), and to their memberships' `spend` (a key with a user and a team adds to what
//! that user has spent in that team). Spend is not policy, except where it crosses a budget: a key whose spend (or
//! whose team's, user's or membership's) goes from under its `max_budget` to at or over it gets a new version and a
//! change-log row in the same statement, so caches and filters drop their allows for it
//! (`budget::crosses` is the same test). The key is otherwise left alone.

use chrono::{NaiveDate, NaiveTime};
use tokio_postgres::types::Json;
use tokio_postgres::{Client, Row};

use std::sync::LazyLock;

use super::policy_sql::{key_with_policies, MEMBERS};
use super::queries::{classify, column};
use super::queries::{LOG_CHANGE, WITH_TEAM};
use crate::model::keys::KeyHash;
use crate::model::LedgerEntry;
use crate::protocol::{
    BudgetsReset, DeadLetter, EngineError, SpendFilter, SpendGroup, SpendInserted,
};
use livegate_contract::spend::{EstimateReason, SpendRecord};

static INSERT_SPEND: LazyLock<String> = LazyLock::new(|| {
    let policies = key_with_policies_spent();
    format!(
        "
WITH input AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(
        request_id text, key_hash text, key_alias text, team_id text,
        model_requested text, model_returned text,
        prompt_tokens bigint, completion_tokens bigint, total_tokens bigint,
        cost double precision, unpriced boolean, usage_known boolean,
        status integer, streamed boolean, start_time_ms bigint, end_time_ms bigint,
        usage_estimate_reason text,
        cached_tokens bigint, reasoning_tokens bigint, cache_creation_tokens bigint,
        deployment text)
),
ins AS (
    INSERT INTO livegate_spend_logs (request_id, key_hash, key_alias, team_id,
        model_requested, model_returned, prompt_tokens, completion_tokens, total_tokens,
        cost, unpriced, usage_known, status, streamed, start_time, end_time,
        usage_estimate_reason, cached_tokens, reasoning_tokens, cache_creation_tokens,
        deployment)
    SELECT request_id,
        -- Spend under a rotated key's old secret belongs to the key (migration 13).
        COALESCE((SELECT g.key_token FROM livegate_key_grace g WHERE g.token = input.key_hash),
            key_hash),
        key_alias, team_id, model_requested, model_returned,
        prompt_tokens, completion_tokens, total_tokens, cost, unpriced, usage_known,
        status, streamed, to_timestamp(start_time_ms / 1000.0), to_timestamp(end_time_ms / 1000.0),
        usage_estimate_reason, cached_tokens, reasoning_tokens, cache_creation_tokens,
        deployment
    FROM input
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id, key_hash, team_id, cost, unpriced
),
ks AS (SELECT key_hash, sum(cost) AS cost FROM ins GROUP BY key_hash),
ts AS (SELECT team_id, sum(cost) AS cost FROM ins WHERE team_id IS NOT NULL GROUP BY team_id),
old_t AS (SELECT team_id, spend FROM livegate_teams WHERE team_id IN (SELECT team_id FROM ts)),
t AS (
    UPDATE livegate_teams t SET spend = t.spend + ts.cost
    FROM ts WHERE t.team_id = ts.team_id
    RETURNING t.team_id, t.max_budget, t.spend
),
tc AS (
    SELECT t.team_id FROM t JOIN old_t o ON o.team_id = t.team_id
    WHERE t.max_budget IS NOT NULL AND o.spend < t.max_budget AND t.spend >= t.max_budget
),
us AS (
    SELECT k.user_id, sum(ks.cost) AS cost FROM ks JOIN livegate_keys k ON k.token = ks.key_hash
    WHERE k.user_id IS NOT NULL GROUP BY k.user_id
),
old_u AS (SELECT user_id, spend FROM livegate_users WHERE user_id IN (SELECT user_id FROM us)),
u AS (
    UPDATE livegate_users u SET spend = u.spend + us.cost
    FROM us WHERE u.user_id = us.user_id
    RETURNING u.user_id, u.max_budget, u.spend
),
uc AS (
    SELECT u.user_id FROM u JOIN old_u o ON o.user_id = u.user_id
    WHERE u.max_budget IS NOT NULL AND o.spend < u.max_budget AND u.spend >= u.max_budget
),
ms AS (
    SELECT k.team_id, k.user_id, sum(ks.cost) AS cost FROM ks JOIN livegate_keys k ON k.token = ks.key_hash
    WHERE k.user_id IS NOT NULL AND k.team_id IS NOT NULL GROUP BY k.team_id, k.user_id
),
old_m AS (
    SELECT team_id, user_id, spend FROM livegate_team_members
    WHERE (team_id, user_id) IN (SELECT team_id, user_id FROM ms)
),
mu AS (
    UPDATE livegate_team_members m SET spend = m.spend + ms.cost
    FROM ms WHERE m.team_id = ms.team_id AND m.user_id = ms.user_id
    RETURNING m.team_id, m.user_id, m.max_budget, m.spend
),
mc AS (
    SELECT mu.team_id, mu.user_id FROM mu JOIN old_m o ON o.team_id = mu.team_id AND o.user_id = mu.user_id
    WHERE mu.max_budget IS NOT NULL AND o.spend < mu.max_budget AND mu.spend >= mu.max_budget
),
kd AS (
    SELECT k.token, k.version AS old_version, COALESCE(ks.cost, 0) AS cost
    FROM livegate_keys k LEFT JOIN ks ON ks.key_hash = k.token
    WHERE k.token IN (SELECT key_hash FROM ks) OR k.team_id IN (SELECT team_id FROM tc)
        OR k.user_id IN (SELECT user_id FROM uc)
        OR (k.team_id, k.user_id) IN (SELECT team_id, user_id FROM mc)
),
w AS (
    UPDATE livegate_keys k SET spend = k.spend + kd.cost,
        version = CASE
            WHEN (k.max_budget IS NOT NULL AND k.spend < k.max_budget
                  AND k.spend + kd.cost >= k.max_budget)
              OR k.team_id IN (SELECT team_id FROM tc)
              OR k.user_id IN (SELECT user_id FROM uc)
              OR (k.team_id, k.user_id) IN (SELECT team_id, user_id FROM mc)
            THEN nextval('livegate_key_changes_seq_seq') ELSE k.version END
    FROM kd WHERE k.token = kd.token
    RETURNING k.*, kd.old_version
),
tn AS (
    SELECT tm.*, COALESCE(t.spend, tm.spend) AS new_spend FROM livegate_teams tm
        LEFT JOIN t ON t.team_id = tm.team_id
    WHERE tm.team_id IN (SELECT team_id FROM w)
),
un AS (
    SELECT um.*, COALESCE(u.spend, um.spend) AS new_spend FROM livegate_users um
        LEFT JOIN u ON u.user_id = um.user_id
    WHERE um.user_id IN (SELECT user_id FROM w)
),
mn AS (
    SELECT mm.*, COALESCE(mu.spend, mm.spend) AS new_spend FROM livegate_team_members mm
        LEFT JOIN mu ON mu.team_id = mm.team_id AND mu.user_id = mm.user_id
    WHERE (mm.team_id, mm.user_id) IN (SELECT team_id, user_id FROM w)
),
p AS (
    {policies}
    WHERE w.version <> w.old_version
),
c AS (
    INSERT INTO livegate_key_changes (seq, token, record)
    SELECT version, token, to_jsonb(p) - 'version' - 'old_version' FROM p
)
SELECT count(*) AS inserted, count(*) FILTER (WHERE unpriced) AS unpriced,
    (SELECT COALESCE(array_agg(i.request_id), ARRAY[]::text[]) FROM input i
     WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.request_id = i.request_id)) AS duplicates
FROM ins"
    )
});

/// The drain's `p`: the written keys with their team's and user's policies, each spend the
/// one this statement wrote (`tn.new_spend`, `un.new_spend`: a CTE's update is not visible
/// to its siblings).
fn key_with_policies_spent() -> String {
    key_with_policies("tn", "un", "mn")
        .replace("t.spend, 0) AS team_spend", "t.new_spend, 0) AS team_spend")
        .replace("u.spend, 0) AS user_spend", "u.new_spend, 0) AS user_spend")
        .replace(
            "m.spend, 0) AS member_spend",
            "m.new_spend, 0) AS member_spend",
        )
}

/// The filter's conditions: $1 key hash, $2 request id, $3 from, $4 before.
const WHERE: &str = "WHERE ($1::text IS NULL OR key_hash = $1)
    AND ($2::text IS NULL OR request_id = $2)
    AND ($3::timestamptz IS NULL OR start_time >= $3)
    AND ($4::timestamptz IS NULL OR start_time < $4)";

pub async fn insert_spend(c: &Client, rows: &[LedgerEntry]) -> Result<SpendInserted, EngineError> {
    let row = c
        .query_one(INSERT_SPEND.as_str(), &[&Json(rows)])
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

/// Writes dead letters, one statement each (they are rare); the bytes go in as they were
/// (`bytea` takes anything), the id and reason with any NUL replaced so `text` takes them.
pub async fn dead_letter(c: &Client, letters: &[DeadLetter]) -> Result<u64, EngineError> {
    let mut written = 0;
    for l in letters {
        let id = l.request_id.replace('\0', "\u{FFFD}");
        let reason = l.reason.replace('\0', "\u{FFFD}");
        written += c
            .execute(
                "INSERT INTO livegate_spend_dead_letters (request_id, data, reason)
                 VALUES ($1, $2, $3) ON CONFLICT (request_id) DO NOTHING",
                &[&id, &l.data.as_slice(), &reason],
            )
            .await
            .map_err(classify)?;
    }
    Ok(written)
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

/// A stored row read back as the entry it was written from; a value the entry cannot hold
/// (a negative count, an unknown estimate reason) is a corrupt row, refused as such.
fn spend_row(row: &Row) -> Result<LedgerEntry, EngineError> {
    let corrupt =
        |name: &str| EngineError::Query(format!("livegate_spend_logs.{name} out of range"));
    let count = |name: &str| -> Result<Option<u64>, EngineError> {
        column::<Option<i64>>(row, name)?
            .map(|n| u64::try_from(n).map_err(|_| corrupt(name)))
            .transpose()
    };
    let millis = |name: &str| -> Result<u64, EngineError> {
        let at: chrono::DateTime<chrono::Utc> = column(row, name)?;
        u64::try_from(at.timestamp_millis()).map_err(|_| corrupt(name))
    };
    let key_hash: String = column(row, "key_hash")?;
    let reason: Option<String> = column(row, "usage_estimate_reason")?;
    let record = SpendRecord {
        request_id: column(row, "request_id")?,
        key_hash: KeyHash::parse_hex(&key_hash).map_err(|_| corrupt("key_hash"))?,
        key_alias: column(row, "key_alias")?,
        team_id: column(row, "team_id")?,
        model_requested: column(row, "model_requested")?,
        model_returned: column(row, "model_returned")?,
        deployment: column(row, "deployment")?,
        prompt_tokens: count("prompt_tokens")?,
        completion_tokens: count("completion_tokens")?,
        total_tokens: count("total_tokens")?,
        cached_tokens: count("cached_tokens")?,
        reasoning_tokens: count("reasoning_tokens")?,
        cache_creation_tokens: count("cache_creation_tokens")?,
        usage_known: column(row, "usage_known")?,
        usage_estimate_reason: reason
            .map(|r| EstimateReason::parse(&r).ok_or_else(|| corrupt("usage_estimate_reason")))
            .transpose()?,
        status: u16::try_from(column::<i32>(row, "status")?).map_err(|_| corrupt("status"))?,
        streamed: column(row, "streamed")?,
        start_time_ms: millis("start_time")?,
        end_time_ms: millis("end_time")?,
    };
    Ok(LedgerEntry {
        record,
        cost: column(row, "cost")?,
        unpriced: column(row, "unpriced")?,
        user_id: None,
    })
}

pub async fn spend_logs(c: &Client, f: &SpendFilter) -> Result<Vec<LedgerEntry>, EngineError> {
    let (from, before) = bounds(f);
    let sql = format!(
        "SELECT request_id, key_hash, key_alias, team_id, model_requested, model_returned,
            prompt_tokens, completion_tokens, total_tokens, cost, unpriced, usage_known,
            status, streamed, start_time, end_time, usage_estimate_reason,
            cached_tokens, reasoning_tokens, cache_creation_tokens, deployment
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

/// A key's drained spend for one model since a period's start (`model_max_budget`); the
/// index on `(key_hash, start_time)` narrows it to the key's rows of the period.
pub async fn key_model_spend(
    c: &Client,
    token: &crate::model::keys::KeyHash,
    model: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<f64, EngineError> {
    let row = c
        .query_one(
            "SELECT COALESCE(sum(cost), 0)::double precision AS spend FROM livegate_spend_logs
             WHERE key_hash = $1::text AND start_time >= $3::timestamptz
               AND lower(btrim(model_requested)) = lower(btrim($2::text))",
            &[&token.as_str(), &model, &since],
        )
        .await
        .map_err(classify)?;
    column(&row, "spend")
}

/// Keys whose own budget is due: spend back to 0, the next reset one duration after `$1`,
/// and a new version logged, so caches and filters forget a refusal or a stale spend.
const RESET_KEYS: &str = "
WITH w AS (
    UPDATE livegate_keys SET spend = 0,
        budget_reset_at = $1 + make_interval(secs => budget_duration_secs::float8),
        version = nextval('livegate_key_changes_seq_seq')
    WHERE budget_reset_at <= $1 AND budget_duration_secs IS NOT NULL
    RETURNING *
),
";

/// Teams whose budget is due, and every key of theirs logged with the team's new spend.
const RESET_TEAMS: &str = "
WITH t AS (
    UPDATE livegate_teams SET spend = 0,
        budget_reset_at = $1 + make_interval(secs => budget_duration_secs::float8)
    WHERE budget_reset_at <= $1 AND budget_duration_secs IS NOT NULL
    RETURNING *
),
w AS (
    UPDATE livegate_keys k SET version = nextval('livegate_key_changes_seq_seq')
    FROM t WHERE k.team_id = t.team_id
    RETURNING k.*
),
p AS ({policies}),
{LOG_CHANGE}
SELECT count(*) AS n FROM t";

/// Users whose budget is due, and every key of theirs logged with the user's new spend.
const RESET_USERS: &str = "
WITH u AS (
    UPDATE livegate_users SET spend = 0,
        budget_reset_at = $1 + make_interval(secs => budget_duration_secs::float8)
    WHERE budget_reset_at <= $1 AND budget_duration_secs IS NOT NULL
    RETURNING *
),
w AS (
    UPDATE livegate_keys k SET version = nextval('livegate_key_changes_seq_seq')
    FROM u WHERE k.user_id = u.user_id
    RETURNING k.*
),
p AS ({policies}),
{LOG_CHANGE}
SELECT count(*) AS n FROM u";

/// Resets the budgets due at `now`: keys' own first, then teams', then users' (three
/// statements: a row is written once per statement).
pub async fn reset_budgets(
    c: &Client,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<BudgetsReset, EngineError> {
    let keys_sql = format!(
        "{RESET_KEYS} {}, {LOG_CHANGE} SELECT count(*) AS n FROM p",
        *WITH_TEAM
    );
    let keys: i64 = column(
        &c.query_one(&keys_sql, &[&now]).await.map_err(classify)?,
        "n",
    )?;
    let teams_sql = RESET_TEAMS
        .replace(
            "{policies}",
            &key_with_policies("t", "livegate_users", MEMBERS),
        )
        .replace("{LOG_CHANGE}", LOG_CHANGE);
    let teams: i64 = column(
        &c.query_one(&teams_sql, &[&now]).await.map_err(classify)?,
        "n",
    )?;
    let users_sql = RESET_USERS
        .replace(
            "{policies}",
            &key_with_policies("livegate_teams", "u", MEMBERS),
        )
        .replace("{LOG_CHANGE}", LOG_CHANGE);
    let users: i64 = column(
        &c.query_one(&users_sql, &[&now]).await.map_err(classify)?,
        "n",
    )?;
    Ok(BudgetsReset {
        keys: u64::try_from(keys).unwrap_or(0),
        teams: u64::try_from(teams).unwrap_or(0),
        users: u64::try_from(users).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::policy_sql::names_every_carried_column;

    /// The drain and the resets log keys with every policy they carry (the team's limits
    /// included: a record logged without them would read as no team limit).
    #[test]
    fn every_statement_that_logs_keys_keeps_every_policy_they_carry() {
        assert!(names_every_carried_column(&INSERT_SPEND));
        assert!(names_every_carried_column(&WITH_TEAM));
        assert!(names_every_carried_column(&key_with_policies(
            "t",
            "livegate_users",
            MEMBERS
        )));
        assert!(INSERT_SPEND.contains("t.new_spend, 0) AS team_spend"));
        assert!(INSERT_SPEND.contains("u.new_spend, 0) AS user_spend"));
        assert!(INSERT_SPEND.contains("m.new_spend, 0) AS member_spend"));
    }
}
