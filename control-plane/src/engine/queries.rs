//! The SQL the engine runs for each request, and the mapping of driver errors to typed ones.

use std::collections::BTreeMap;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use tokio_postgres::{Client, Row};

use crate::keys::KeyHash;
use crate::protocol::EngineError;
use crate::record::{KeyChange, KeyFilter, KeyPage, KeyPatch, KeyRecord};

/// A key's columns as read: its row and its team's policy (`livegate_key_policies`).
pub(super) const COLUMNS: &str = "token, key_name, key_alias, team_id, user_id, models, aliases, max_budget, metadata, blocked, spend, expires, created_at, updated_at, version, team_blocked, team_models, soft_budget, budget_duration, budget_reset_at, team_max_budget, team_spend, rpm_limit, tpm_limit, max_parallel_requests, team_rpm_limit, team_tpm_limit, team_max_parallel_requests";

/// The written key rows (`w`, every column) with their team's policy, as the view shows
/// them: the change log records this and the statement returns it.
pub(super) const WITH_TEAM: &str = "p AS (SELECT w.*, COALESCE(t.blocked, false) AS team_blocked, COALESCE(t.models, '{}'::text[]) AS team_models, t.max_budget AS team_max_budget, COALESCE(t.spend, 0) AS team_spend, t.rpm_limit AS team_rpm_limit, t.tpm_limit AS team_tpm_limit, t.max_parallel_requests AS team_max_parallel_requests FROM w LEFT JOIN livegate_teams t ON t.team_id = w.team_id)";

/// Appends the written rows' new state (`p`) to the change log, numbered by the version
/// the write gave them.
pub(super) const LOG_CHANGE: &str = "c AS (INSERT INTO livegate_key_changes (seq, token, record) SELECT version, token, to_jsonb(p) - 'version' FROM p)";

/// A fresh change number, taken once per statement.
const NEXT_VERSION: &str = "v AS (SELECT nextval('livegate_key_changes_seq_seq') AS seq)";

/// Sorts driver errors into the kinds the supervisor acts on.
pub fn classify(e: tokio_postgres::Error) -> EngineError {
    let Some(db) = e.as_db_error() else {
        // No server error: the socket closed, timed out or failed. The connection is in doubt.
        return EngineError::Transport(with_causes(&e));
    };
    let code = db.code();
    if *code == SqlState::UNIQUE_VIOLATION {
        let field = match db.constraint() {
            Some(c) if c.contains("team_alias") => "team_alias",
            Some(c) if c.contains("key_alias") => "key_alias",
            Some(c) if c.starts_with("livegate_teams") => "team_id",
            _ => "key",
        };
        EngineError::Conflict(field.into())
    } else if *code == SqlState::FOREIGN_KEY_VIOLATION {
        EngineError::NoSuchReference("team_id".into())
    } else if *code == SqlState::QUERY_CANCELED {
        EngineError::Timeout
    } else if code.code().starts_with("22") {
        EngineError::Data(db.message().to_owned())
    } else if code.code().starts_with("57P") || code.code().starts_with("08") {
        // Admin shutdown, crash shutdown, cannot connect now, connection exceptions.
        EngineError::Transport(db.message().to_owned())
    } else {
        EngineError::Query(db.message().to_owned())
    }
}

/// The driver's message followed by its causes: "error performing TLS handshake" alone does
/// not say that the certificate was refused, nor why.
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    message
}

/// A stored token is a SHA-256 in lowercase hex; anything else is a corrupt row, refused as
/// such (never re-hashed into a different key, never echoed: it might be a raw key).
pub(super) fn token(row: &Row) -> Result<KeyHash, EngineError> {
    let stored: String = column(row, "token")?;
    KeyHash::parse_hex(&stored).map_err(|_| {
        EngineError::Query("livegate_keys holds a token that is not a SHA-256 in hex".into())
    })
}

/// One column, typed; a type mismatch (a schema drift) is an error value, not a panic.
pub(super) fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    name: &str,
) -> Result<T, EngineError> {
    row.try_get(name)
        .map_err(|e| EngineError::Query(format!("column {name}: {e}")))
}

pub(super) fn record(row: &Row) -> Result<KeyRecord, EngineError> {
    Ok(KeyRecord {
        token: token(row)?,
        key_name: column(row, "key_name")?,
        key_alias: column(row, "key_alias")?,
        team_id: column(row, "team_id")?,
        user_id: column(row, "user_id")?,
        models: column(row, "models")?,
        aliases: column::<Json<BTreeMap<String, String>>>(row, "aliases")?.0,
        max_budget: column(row, "max_budget")?,
        metadata: column(row, "metadata")?,
        blocked: column(row, "blocked")?,
        spend: column(row, "spend")?,
        expires: column(row, "expires")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
        version: column(row, "version")?,
        team_blocked: column(row, "team_blocked")?,
        team_models: column(row, "team_models")?,
        soft_budget: column(row, "soft_budget")?,
        budget_duration: column(row, "budget_duration")?,
        budget_reset_at: column(row, "budget_reset_at")?,
        team_max_budget: column(row, "team_max_budget")?,
        team_spend: column(row, "team_spend")?,
        rpm_limit: column(row, "rpm_limit")?,
        tpm_limit: column(row, "tpm_limit")?,
        max_parallel_requests: column(row, "max_parallel_requests")?,
        team_rpm_limit: column(row, "team_rpm_limit")?,
        team_tpm_limit: column(row, "team_tpm_limit")?,
        team_max_parallel_requests: column(row, "team_max_parallel_requests")?,
    })
}

pub async fn ping(c: &Client) -> Result<(), EngineError> {
    c.simple_query("SELECT 1").await.map_err(classify)?;
    Ok(())
}

pub async fn get_key(c: &Client, t: &KeyHash) -> Result<Option<KeyRecord>, EngineError> {
    let sql = format!("SELECT {COLUMNS} FROM livegate_key_policies WHERE token = $1");
    let row = c.query_opt(&sql, &[&t.as_str()]).await.map_err(classify)?;
    row.as_ref().map(record).transpose()
}

/// A `budget_duration` in seconds, for the reset task's SQL (validated at the edge).
pub(super) fn duration_secs(d: Option<&str>) -> Option<i64> {
    let d = crate::keys::parse_duration(d?).ok()?;
    i64::try_from(d.as_secs()).ok()
}

/// A key's own columns, in the order `insert_key` binds them.
const KEY_COLUMNS: &str = "token, key_name, key_alias, team_id, user_id, models, aliases, max_budget, metadata, blocked, spend, expires, created_at, updated_at, soft_budget, budget_duration, budget_duration_secs, budget_reset_at, rpm_limit, tpm_limit, max_parallel_requests, version";

/// Inserts the key and logs the change; returns it as stored, with its version and its
/// team's policy.
pub async fn insert_key(c: &Client, r: &KeyRecord) -> Result<KeyRecord, EngineError> {
    let budget_duration_secs = duration_secs(r.budget_duration.as_deref());
    let sql = format!(
        "WITH {NEXT_VERSION},
         w AS (INSERT INTO livegate_keys ({KEY_COLUMNS})
               SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, v.seq FROM v
               RETURNING *),
         {WITH_TEAM}, {LOG_CHANGE}
         SELECT {COLUMNS} FROM p"
    );
    let aliases = Json(&r.aliases);
    let row = c
        .query_one(
            &sql,
            &[
                &r.token.as_str(),
                &r.key_name,
                &r.key_alias,
                &r.team_id,
                &r.user_id,
                &r.models,
                &aliases,
                &r.max_budget,
                &r.metadata,
                &r.blocked,
                &r.spend,
                &r.expires,
                &r.created_at,
                &r.updated_at,
                &r.soft_budget,
                &r.budget_duration,
                &budget_duration_secs,
                &r.budget_reset_at,
                &r.rpm_limit,
                &r.tpm_limit,
                &r.max_parallel_requests,
            ],
        )
        .await
        .map_err(classify)?;
    record(&row)
}

const FILTER: &str = "($1::text IS NULL OR key_alias = $1) AND ($2::text IS NULL OR team_id = $2) AND ($3::text IS NULL OR user_id = $3) AND ($4::text IS NULL OR token = $4)";

pub async fn list_keys(c: &Client, f: &KeyFilter) -> Result<KeyPage, EngineError> {
    let limit = i64::from(f.size);
    let offset = i64::from(f.page.saturating_sub(1)) * limit;
    let token = f.token.as_ref().map(KeyHash::as_str);
    let sql = format!("SELECT {COLUMNS} FROM livegate_key_policies WHERE {FILTER} ORDER BY created_at DESC, token LIMIT $5 OFFSET $6");
    let rows = c
        .query(
            &sql,
            &[
                &f.key_alias,
                &f.team_id,
                &f.user_id,
                &token,
                &limit,
                &offset,
            ],
        )
        .await
        .map_err(classify)?;
    let count_sql = format!("SELECT count(*) FROM livegate_keys WHERE {FILTER}");
    let count = c
        .query_one(&count_sql, &[&f.key_alias, &f.team_id, &f.user_id, &token])
        .await
        .map_err(classify)?;
    let total: i64 = count
        .try_get(0)
        .map_err(|e| EngineError::Query(format!("count: {e}")))?;
    Ok(KeyPage {
        keys: rows.iter().map(record).collect::<Result<_, _>>()?,
        total: u64::try_from(total).unwrap_or(0),
    })
}

pub async fn update_key(
    c: &Client,
    t: &KeyHash,
    p: &KeyPatch,
) -> Result<Option<KeyRecord>, EngineError> {
    let sql = format!(
        "WITH {NEXT_VERSION},
         w AS (UPDATE livegate_keys SET
            key_alias = COALESCE($2, key_alias), team_id = COALESCE($3, team_id),
            user_id = COALESCE($4, user_id), models = COALESCE($5, models),
            aliases = COALESCE($6, aliases), metadata = COALESCE($7, metadata),
            blocked = COALESCE($8, blocked), expires = COALESCE($9, expires), updated_at = now(),
            max_budget = COALESCE($10, max_budget), soft_budget = COALESCE($11, soft_budget),
            budget_duration = COALESCE($12, budget_duration),
            budget_duration_secs = COALESCE($13, budget_duration_secs),
            budget_reset_at = COALESCE($14, budget_reset_at),
            rpm_limit = COALESCE($15, rpm_limit), tpm_limit = COALESCE($16, tpm_limit),
            max_parallel_requests = COALESCE($17, max_parallel_requests),
            version = (SELECT seq FROM v)
         WHERE token = $1 RETURNING *),
         {WITH_TEAM}, {LOG_CHANGE}
         SELECT {COLUMNS} FROM p"
    );
    let aliases = p.aliases.as_ref().map(Json);
    let b = &p.budget;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 17] = [
        &t.as_str(),
        &p.key_alias,
        &p.team_id,
        &p.user_id,
        &p.models,
        &aliases,
        &p.metadata,
        &p.blocked,
        &p.expires,
        &b.max_budget,
        &b.soft_budget,
        &b.budget_duration,
        &b.budget_duration_secs,
        &b.budget_reset_at,
        &p.limits.rpm_limit,
        &p.limits.tpm_limit,
        &p.limits.max_parallel_requests,
    ];
    let row = c.query_opt(&sql, &params).await.map_err(classify)?;
    row.as_ref().map(record).transpose()
}

/// Deletes the keys and logs a tombstone for each; returns each token with its version.
pub async fn delete_keys(
    c: &Client,
    tokens: &[KeyHash],
    aliases: &[String],
) -> Result<Vec<(KeyHash, i64)>, EngineError> {
    let tokens: Vec<&str> = tokens.iter().map(KeyHash::as_str).collect();
    let sql = "WITH d AS (DELETE FROM livegate_keys WHERE token = ANY($1) OR key_alias = ANY($2) RETURNING token),
         c AS (INSERT INTO livegate_key_changes (token, record) SELECT token, NULL FROM d RETURNING seq, token)
         SELECT token, seq FROM c";
    let rows = c.query(sql, &[&tokens, &aliases]).await.map_err(classify)?;
    rows.iter()
        .map(|r| Ok((token(r)?, column(r, "seq")?)))
        .collect()
}

/// Changes numbered after `after` first, then again those logged in the last
/// `recent_ms`: a number is taken before its statement commits, so a lower one can
/// become visible after a higher one.
pub async fn changes_since(
    c: &Client,
    after: i64,
    recent_ms: i64,
    limit: i64,
) -> Result<Vec<KeyChange>, EngineError> {
    let sql = "SELECT seq, token, record FROM livegate_key_changes
         WHERE seq > $1 OR changed_at > now() - make_interval(secs => ($2::bigint / 1000.0)::float8)
         ORDER BY seq > $1 DESC, seq LIMIT $3";
    let rows = c
        .query(sql, &[&after, &recent_ms, &limit])
        .await
        .map_err(classify)?;
    rows.iter().map(change).collect()
}

/// The highest change number so far (0 with none).
pub async fn last_change(c: &Client) -> Result<i64, EngineError> {
    let row = c
        .query_one(
            "SELECT COALESCE(max(seq), 0) AS seq FROM livegate_key_changes",
            &[],
        )
        .await
        .map_err(classify)?;
    column(&row, "seq")
}

/// Drops change-log rows older than `keep_ms`: peers read the log within seconds.
pub async fn prune_changes(c: &Client, keep_ms: i64) -> Result<u64, EngineError> {
    c.execute(
        "DELETE FROM livegate_key_changes WHERE changed_at < now() - make_interval(secs => ($1::bigint / 1000.0)::float8)",
        &[&keep_ms],
    )
    .await
    .map_err(classify)
}

/// A change-log row; its JSON record is the key's row as written, without its version
/// (the row's own number is that).
fn change(row: &Row) -> Result<KeyChange, EngineError> {
    let seq: i64 = column(row, "seq")?;
    let json: Option<serde_json::Value> = column(row, "record")?;
    let record = match json {
        None => None,
        Some(mut j) => {
            j["version"] = seq.into();
            let record = serde_json::from_value::<KeyRecord>(j)
                .map_err(|e| EngineError::Query(format!("livegate_key_changes.record: {e}")))?;
            Some(Box::new(record))
        }
    };
    Ok(KeyChange {
        seq,
        token: token(row)?,
        record,
    })
}
