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
        return EngineError::Transport(with_causes(&e));
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

fn token(row: &Row) -> KeyHash {
    let s: String = row.get("token");
    KeyHash::parse_hex(&s).unwrap_or_else(|| KeyHash::of_raw(&s))
}

fn record(row: &Row) -> KeyRecord {
    KeyRecord {
        token: token(row),
        key_name: row.get("key_name"),
        key_alias: row.get("key_alias"),
        team_id: row.get("team_id"),
        user_id: row.get("user_id"),
        models: row.get("models"),
        max_budget: row.get("max_budget"),
        metadata: row.get("metadata"),
        blocked: row.get("blocked"),
        spend: row.get("spend"),
        expires: row.get("expires"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

pub async fn ping(c: &Client) -> Result<(), tokio_postgres::Error> {
    c.simple_query("SELECT 1").await.map(|_| ())
}

pub async fn get_key(c: &Client, t: &KeyHash) -> Result<Option<KeyRecord>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM livegate_keys WHERE token = $1");
    Ok(c.query_opt(&sql, &[&t.as_str()])
        .await?
        .as_ref()
        .map(record))
}

pub async fn insert_key(c: &Client, r: &KeyRecord) -> Result<(), tokio_postgres::Error> {
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
    .map(|_| ())
}

const FILTER: &str = "($1::text IS NULL OR key_alias = $1) AND ($2::text IS NULL OR team_id = $2) AND ($3::text IS NULL OR user_id = $3)";

pub async fn list_keys(c: &Client, f: &KeyFilter) -> Result<KeyPage, tokio_postgres::Error> {
    let limit = i64::from(f.size);
    let offset = i64::from(f.page.saturating_sub(1)) * limit;
    let sql = format!("SELECT {COLUMNS} FROM livegate_keys WHERE {FILTER} ORDER BY created_at DESC, token LIMIT $4 OFFSET $5");
    let rows = c
        .query(
            &sql,
            &[&f.key_alias, &f.team_id, &f.user_id, &limit, &offset],
        )
        .await?;
    let count_sql = format!("SELECT count(*) FROM livegate_keys WHERE {FILTER}");
    let total: i64 = c
        .query_one(&count_sql, &[&f.key_alias, &f.team_id, &f.user_id])
        .await?
        .get(0);
    Ok(KeyPage {
        keys: rows.iter().map(record).collect(),
        total: u64::try_from(total).unwrap_or(0),
    })
}

pub async fn update_key(
    c: &Client,
    t: &KeyHash,
    p: &KeyPatch,
) -> Result<Option<KeyRecord>, tokio_postgres::Error> {
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
    Ok(c.query_opt(&sql, &params).await?.as_ref().map(record))
}

pub async fn delete_keys(
    c: &Client,
    tokens: &[KeyHash],
    aliases: &[String],
) -> Result<Vec<KeyHash>, tokio_postgres::Error> {
    let tokens: Vec<&str> = tokens.iter().map(KeyHash::as_str).collect();
    let rows = c.query("DELETE FROM livegate_keys WHERE token = ANY($1) OR key_alias = ANY($2) RETURNING token", &[&tokens, &aliases]).await?;
    Ok(rows.iter().map(token).collect())
}
