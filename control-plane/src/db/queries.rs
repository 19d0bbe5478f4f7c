//! The SQL the engine runs for each request, and the mapping of driver errors to typed ones.

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row};

use super::protocol::EngineError;
use crate::keys::KeyHash;
use crate::record::{KeyFilter, KeyPage, KeyPatch, KeyRecord};

const COLUMNS: &str = "token, key_name, key_alias, team_id, user_id, models, max_budget, metadata, blocked, spend, expires, created_at, updated_at";

/// Sorts driver errors into the kinds the supervisor acts on.
pub fn classify(e: tokio_postgres::Error) -> EngineError {
    let Some(db) = e.as_db_error() else {
        // No server error: the socket closed, timed out or failed. The connection is in doubt.
        return EngineError::Transport(e.to_string());
    };
    let code = db.code();
    if *code == SqlState::UNIQUE_VIOLATION {
        let field = match db.constraint() {
            Some(c) if c.contains("alias") => "key_alias",
            _ => "key",
        };
        EngineError::Conflict(field.into())
    } else if *code == SqlState::QUERY_CANCELED {
        EngineError::Timeout
    } else if code.code().starts_with("57P") || code.code().starts_with("08") {
        // Admin shutdown, crash shutdown, cannot connect now, connection exceptions.
        EngineError::Transport(db.message().to_owned())
    } else {
        EngineError::Query(db.message().to_owned())
    }
}

/// A stored token is a SHA-256 in lowercase hex; anything else is a corrupt row, refused as
/// such (never re-hashed into a different key, never echoed: it might be a raw key).
fn token(row: &Row) -> Result<KeyHash, EngineError> {
    let stored: String = column(row, "token")?;
    KeyHash::parse_hex(&stored).ok_or_else(|| {
        EngineError::Query("livegate_keys holds a token that is not a SHA-256 in hex".into())
    })
}

/// One column, typed; a type mismatch (a schema drift) is an error value, not a panic.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    name: &str,
) -> Result<T, EngineError> {
    row.try_get(name)
        .map_err(|e| EngineError::Query(format!("column {name}: {e}")))
}

fn record(row: &Row) -> Result<KeyRecord, EngineError> {
    Ok(KeyRecord {
        token: token(row)?,
        key_name: column(row, "key_name")?,
        key_alias: column(row, "key_alias")?,
        team_id: column(row, "team_id")?,
        user_id: column(row, "user_id")?,
        models: column(row, "models")?,
        max_budget: column(row, "max_budget")?,
        metadata: column(row, "metadata")?,
        blocked: column(row, "blocked")?,
        spend: column(row, "spend")?,
        expires: column(row, "expires")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
    })
}

pub async fn ping(c: &Client) -> Result<(), EngineError> {
    c.simple_query("SELECT 1").await.map_err(classify)?;
    Ok(())
}

pub async fn get_key(c: &Client, t: &KeyHash) -> Result<Option<KeyRecord>, EngineError> {
    let sql = format!("SELECT {COLUMNS} FROM livegate_keys WHERE token = $1");
    let row = c.query_opt(&sql, &[&t.as_str()]).await.map_err(classify)?;
    row.as_ref().map(record).transpose()
}

pub async fn insert_key(c: &Client, r: &KeyRecord) -> Result<(), EngineError> {
    let sql = format!("INSERT INTO livegate_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)");
    c.execute(
        &sql,
        &[
            &r.token.as_str(),
            &r.key_name,
            &r.key_alias,
            &r.team_id,
            &r.user_id,
            &r.models,
            &r.max_budget,
            &r.metadata,
            &r.blocked,
            &r.spend,
            &r.expires,
            &r.created_at,
            &r.updated_at,
        ],
    )
    .await
    .map_err(classify)?;
    Ok(())
}

const FILTER: &str = "($1::text IS NULL OR key_alias = $1) AND ($2::text IS NULL OR team_id = $2) AND ($3::text IS NULL OR user_id = $3)";

pub async fn list_keys(c: &Client, f: &KeyFilter) -> Result<KeyPage, EngineError> {
    let limit = i64::from(f.size);
    let offset = i64::from(f.page.saturating_sub(1)) * limit;
    let sql = format!("SELECT {COLUMNS} FROM livegate_keys WHERE {FILTER} ORDER BY created_at DESC, token LIMIT $4 OFFSET $5");
    let rows = c
        .query(
            &sql,
            &[&f.key_alias, &f.team_id, &f.user_id, &limit, &offset],
        )
        .await
        .map_err(classify)?;
    let count_sql = format!("SELECT count(*) FROM livegate_keys WHERE {FILTER}");
    let count = c
        .query_one(&count_sql, &[&f.key_alias, &f.team_id, &f.user_id])
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
        "UPDATE livegate_keys SET
            key_alias = COALESCE($2, key_alias), team_id = COALESCE($3, team_id),
            user_id = COALESCE($4, user_id), models = COALESCE($5, models),
            max_budget = COALESCE($6, max_budget), metadata = COALESCE($7, metadata),
            blocked = COALESCE($8, blocked), expires = COALESCE($9, expires), updated_at = now()
         WHERE token = $1 RETURNING {COLUMNS}"
    );
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
        &t.as_str(),
        &p.key_alias,
        &p.team_id,
        &p.user_id,
        &p.models,
        &p.max_budget,
        &p.metadata,
        &p.blocked,
        &p.expires,
    ];
    let row = c.query_opt(&sql, &params).await.map_err(classify)?;
    row.as_ref().map(record).transpose()
}

pub async fn delete_keys(
    c: &Client,
    tokens: &[KeyHash],
    aliases: &[String],
) -> Result<Vec<KeyHash>, EngineError> {
    let tokens: Vec<&str> = tokens.iter().map(KeyHash::as_str).collect();
    let rows = c
        .query(
            "DELETE FROM livegate_keys WHERE token = ANY($1) OR key_alias = ANY($2) RETURNING token",
            &[&tokens, &aliases],
        )
        .await
        .map_err(classify)?;
    rows.iter().map(token).collect()
}
