//! The SQL the engine runs for each request, and the mapping of driver errors to typed ones.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{Client, Row};

use super::policy_sql::{
    self, key_with_policies, placeholders, PolicyParams, MEMBERS, MEMBER_COLUMN_NAMES, POLICY,
    POLICY_COLUMN_NAMES, TEAM_COLUMN_NAMES, USER_COLUMN_NAMES,
};
use crate::model::keys::KeyHash;
use crate::model::{KeyChange, KeyFilter, KeyPage, KeyPatch, KeyRecord};
use crate::protocol::EngineError;

/// A key's own columns, without its policy columns (`policy_sql::POLICY`).
const KEY_COLUMNS: &str = "token, key_name, key_alias, team_id, user_id, models, aliases, metadata, blocked, spend, expires, created_at, updated_at, model_rpm_limit, model_tpm_limit, model_max_budget";

/// A key's columns as read: its row and its team's and user's policies
/// (`livegate_key_policies`).
pub(super) static COLUMNS: LazyLock<String> = LazyLock::new(|| {
    let own_policy = POLICY.iter().filter(|c| **c != "budget_duration_secs");
    let own_policy = own_policy.copied().collect::<Vec<_>>().join(", ");
    format!(
        "{KEY_COLUMNS}, version, {own_policy}, {}, {}, {}",
        *TEAM_COLUMN_NAMES, *USER_COLUMN_NAMES, *MEMBER_COLUMN_NAMES
    )
});

/// The written key rows (`w`, every column) with their team's and user's policies, as the
/// view shows them: the change log records this and the statement returns it.
pub(super) static WITH_TEAM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "p AS ({})",
        key_with_policies("livegate_teams", "livegate_users", MEMBERS)
    )
});

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
            Some(c) if c.contains("user_email") => "user_email",
            Some(c) if c.starts_with("livegate_team_members") => "member",
            Some(c) if c.starts_with("livegate_users") => "user_id",
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
        budget: policy_sql::budget(row)?,
        metadata: column(row, "metadata")?,
        blocked: column(row, "blocked")?,
        spend: column(row, "spend")?,
        expires: column(row, "expires")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
        version: column(row, "version")?,
        limits: policy_sql::limits(row, "")?,
        model_limits: policy_sql::model_limits(row, "")?,
        model_max_budget: column::<Json<_>>(row, "model_max_budget")?.0,
        team: policy_sql::team_policy(row)?,
        user: policy_sql::user_policy(row)?,
        member: policy_sql::member_policy(row)?,
    })
}

pub async fn ping(c: &Client) -> Result<(), EngineError> {
    c.simple_query("SELECT 1").await.map_err(classify)?;
    Ok(())
}

pub async fn get_key(c: &Client, t: &KeyHash) -> Result<Option<KeyRecord>, EngineError> {
    // A key's own secret, else an old secret of a key in its grace period (migration 13).
    let sql = format!(
        "SELECT {} FROM livegate_key_policies WHERE token = $1
         UNION ALL
         SELECT {} FROM livegate_key_grace g JOIN livegate_key_policies k ON k.token = g.key_token
         WHERE g.token = $1 AND NOT g.ended AND g.revoke_at > now()
         LIMIT 1",
        *COLUMNS,
        *super::rotation_queries::ALIAS_COLUMNS
    );
    let row = c.query_opt(&sql, &[&t.as_str()]).await.map_err(classify)?;
    row.as_ref().map(record).transpose()
}

/// Inserts the key and logs the change; returns it as stored, with its version and its
/// team's policy.
pub async fn insert_key(c: &Client, r: &KeyRecord) -> Result<KeyRecord, EngineError> {
    let policy = PolicyParams::new(&r.budget, &r.limits);
    let aliases = Json(&r.aliases);
    let token = r.token.as_str();
    let model_rpm = Json(&r.model_limits.model_rpm_limit);
    let model_tpm = Json(&r.model_limits.model_tpm_limit);
    let model_budget = Json(&r.model_max_budget);
    let own: [&(dyn ToSql + Sync); 16] = [
        &token,
        &r.key_name,
        &r.key_alias,
        &r.team_id,
        &r.user_id,
        &r.models,
        &aliases,
        &r.metadata,
        &r.blocked,
        &r.spend,
        &r.expires,
        &r.created_at,
        &r.updated_at,
        &model_rpm,
        &model_tpm,
        &model_budget,
    ];
    let params: Vec<&(dyn ToSql + Sync)> = own.into_iter().chain(policy.params()).collect();
    let sql = format!(
        "WITH {NEXT_VERSION},
         w AS (INSERT INTO livegate_keys ({KEY_COLUMNS}, {policy_columns}, version)
               SELECT {values}, v.seq FROM v
               RETURNING *),
         {with_team}, {LOG_CHANGE}
         SELECT {columns} FROM p",
        policy_columns = *POLICY_COLUMN_NAMES,
        values = placeholders(1, params.len()),
        with_team = *WITH_TEAM,
        columns = *COLUMNS,
    );
    let row = c.query_one(&sql, &params).await.map_err(classify)?;
    record(&row)
}

const FILTER: &str = "($1::text IS NULL OR key_alias = $1) AND ($2::text IS NULL OR team_id = $2) AND ($3::text IS NULL OR user_id = $3) AND ($4::text IS NULL OR token = $4)";

pub async fn list_keys(c: &Client, f: &KeyFilter) -> Result<KeyPage, EngineError> {
    let limit = i64::from(f.size);
    let offset = i64::from(f.page.saturating_sub(1)) * limit;
    let token = f.token.as_ref().map(KeyHash::as_str);
    let sql = format!("SELECT {} FROM livegate_key_policies WHERE {FILTER} ORDER BY created_at DESC, token LIMIT $5 OFFSET $6", *COLUMNS);
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
            model_rpm_limit = COALESCE($10, model_rpm_limit),
            model_tpm_limit = COALESCE($11, model_tpm_limit),
            model_max_budget = COALESCE($12, model_max_budget),
            {policy}, version = (SELECT seq FROM v)
         WHERE token = $1 RETURNING *),
         {with_team}, {LOG_CHANGE}
         SELECT {columns} FROM p",
        policy = policy_sql::updates(13),
        with_team = *WITH_TEAM,
        columns = *COLUMNS,
    );
    let aliases = p.aliases.as_ref().map(Json);
    let policy = PolicyParams::new(&p.budget, &p.limits);
    let token = t.as_str();
    let model_rpm = p.model_rpm_limit.as_ref().map(Json);
    let model_tpm = p.model_tpm_limit.as_ref().map(Json);
    let model_budget = p.model_max_budget.as_ref().map(Json);
    let own: [&(dyn ToSql + Sync); 12] = [
        &token,
        &p.key_alias,
        &p.team_id,
        &p.user_id,
        &p.models,
        &aliases,
        &p.metadata,
        &p.blocked,
        &p.expires,
        &model_rpm,
        &model_tpm,
        &model_budget,
    ];
    let params: Vec<&(dyn ToSql + Sync)> = own.into_iter().chain(policy.params()).collect();
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
