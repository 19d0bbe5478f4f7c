//! The SQL of key rotation: a new secret for the same key row, its old secret kept as a
//! grace alias (`livegate_key_grace`, migration 13) until its end is logged as a tombstone.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Client;

use super::policy_sql::{self, PolicyParams};
use super::queries::{classify, column, record, COLUMNS, LOG_CHANGE, WITH_TEAM};
use crate::model::keys::KeyHash;
use crate::model::{KeyPatch, KeyRecord};
use crate::protocol::EngineError;

/// The key row an old secret in grace reads as (`k`, through its grace row `g`): the
/// key's columns, its expiry the earlier of its own and the grace's end.
pub(super) static ALIAS_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    COLUMNS
        .split(", ")
        .map(|c| match c {
            "expires" => "LEAST(k.expires, g.revoke_at) AS expires".to_owned(),
            c => format!("k.{c}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
});

/// The key under `old`, moved to `new` (its name `new_name`) with the patch applied, in
/// one statement: its older secrets in grace follow it, its ledger rows and rate windows
/// move with it, and `old` becomes a grace alias until `revoke_at` (`None`: a tombstone at
/// once, as for a deleted key). The change logged for the key reaches every alias in grace
/// through the trigger. `Ok(None)`: no key under `old`.
pub async fn regenerate_key(
    c: &Client,
    old: &KeyHash,
    new: &KeyHash,
    new_name: &str,
    revoke_at: Option<DateTime<Utc>>,
    p: &KeyPatch,
) -> Result<Option<KeyRecord>, EngineError> {
    // A secret in grace for some key cannot become another's (nor its own again).
    let taken = c
        .query_opt(
            "SELECT 1 FROM livegate_key_grace WHERE token = $1",
            &[&new.as_str()],
        )
        .await
        .map_err(classify)?;
    if taken.is_some() {
        return Err(EngineError::Conflict("new_key".into()));
    }
    let sql = format!(
        "WITH v AS (SELECT nextval('livegate_key_changes_seq_seq') AS seq),
         w AS (UPDATE livegate_keys SET token = $2, key_name = $3,
            key_alias = COALESCE($5, key_alias), team_id = COALESCE($6, team_id),
            user_id = COALESCE($7, user_id), models = COALESCE($8, models),
            aliases = COALESCE($9, aliases), metadata = COALESCE($10, metadata),
            blocked = COALESCE($11, blocked), expires = COALESCE($12, expires),
            updated_at = now(), {policy}, version = (SELECT seq FROM v)
         WHERE token = $1 RETURNING *),
         moved AS (UPDATE livegate_key_grace SET key_token = $2
            WHERE key_token = $1 AND EXISTS (SELECT 1 FROM w)),
         grace AS (INSERT INTO livegate_key_grace (token, key_token, revoke_at)
            SELECT $1, $2, $4::timestamptz FROM w WHERE $4::timestamptz IS NOT NULL
            ON CONFLICT (token) DO UPDATE SET key_token = $2, revoke_at = $4::timestamptz,
                ended = false),
         gone AS (INSERT INTO livegate_key_changes (token, record)
            SELECT $1, NULL FROM w WHERE $4::timestamptz IS NULL),
         ledger AS (UPDATE livegate_spend_logs SET key_hash = $2
            WHERE key_hash = $1 AND EXISTS (SELECT 1 FROM w)),
         windows AS (UPDATE livegate_rate_windows SET scope = 'key:' || $2 || substr(scope, length('key:' || $1) + 1)
            WHERE starts_with(scope, 'key:' || $1 || ':') AND EXISTS (SELECT 1 FROM w)),
         {with_team}, {LOG_CHANGE}
         SELECT {columns} FROM p",
        policy = policy_sql::updates(13),
        with_team = *WITH_TEAM,
        columns = *COLUMNS,
    );
    let aliases = p.aliases.as_ref().map(Json);
    let policy = PolicyParams::new(&p.budget, &p.limits);
    let (old, new) = (old.as_str(), new.as_str());
    let own: [&(dyn ToSql + Sync); 12] = [
        &old,
        &new,
        &new_name,
        &revoke_at,
        &p.key_alias,
        &p.team_id,
        &p.user_id,
        &p.models,
        &aliases,
        &p.metadata,
        &p.blocked,
        &p.expires,
    ];
    let params: Vec<&(dyn ToSql + Sync)> = own.into_iter().chain(policy.params()).collect();
    let row = c.query_opt(&sql, &params).await.map_err(classify)?;
    row.as_ref().map(record).transpose()
}

/// Logs a tombstone for each old secret whose grace has ended; answers how many. Every
/// replica runs it: the `ended` flag makes each tombstone logged once. Grace rows are
/// kept 30 days after their end (spend spooled under an old secret during an outage
/// still finds its key), then dropped.
pub async fn end_graces(c: &Client) -> Result<u64, EngineError> {
    c.execute(
        "WITH d AS (UPDATE livegate_key_grace SET ended = true
            WHERE NOT ended AND revoke_at <= now() RETURNING token),
         old AS (DELETE FROM livegate_key_grace
            WHERE ended AND revoke_at < now() - interval '30 days')
         INSERT INTO livegate_key_changes (token, record) SELECT token, NULL FROM d",
        &[],
    )
    .await
    .map_err(classify)
}

/// When the last of the key's old secrets still in grace stops working (`None`: none is).
pub async fn grace_end(c: &Client, t: &KeyHash) -> Result<Option<DateTime<Utc>>, EngineError> {
    let row = c
        .query_one(
            "SELECT max(revoke_at) AS revoke_at FROM livegate_key_grace
             WHERE key_token = $1 AND NOT ended AND revoke_at > now()",
            &[&t.as_str()],
        )
        .await
        .map_err(classify)?;
    column(&row, "revoke_at")
}
