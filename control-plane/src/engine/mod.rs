//! The engine subprocess: holds the Postgres pool and answers framed requests on stdin/stdout.
//!
//! It imports the protocol and the plain types it stores (key hashes, records, spend rows)
//! and nothing of the supervisor's side (`db`), which it meets only through its pipes.

mod connect;
mod member_queries;
mod policy_sql;
mod queries;
mod rate_queries;
mod rotation_queries;
mod schema;
mod spend_queries;
mod team_queries;
pub mod tls;
mod user_queries;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::protocol::{
    codec, encode, Answer, EngineError, LaneSenders, Lanes, Op, Ready, Request, RequestFrame,
    ResponseFrame,
};
use connect::Pool;

/// The `engine` subcommand's main loop. Returns when stdin closes (the parent is gone or
/// tearing us down); the process should then exit.
pub async fn run() -> anyhow::Result<()> {
    let mut input = FramedRead::new(tokio::io::stdin(), codec());
    let (tx, rx) = Lanes::new(1024);
    let writer = tokio::spawn(write_frames(rx));
    let Some(first) = input.next().await.transpose()? else {
        return Ok(());
    };
    let frame: RequestFrame = serde_json::from_slice(&first)?;
    let Request::Init(init) = frame.request else {
        anyhow::bail!("the first frame must be init");
    };
    let pool = match connect::start(&init.settings).await {
        Ok(pool) => Arc::new(pool),
        Err(e) => {
            tracing::error!(error = %e, "engine could not start");
            reply(&tx.traffic, frame.id, Err(e)).await;
            drop(tx);
            let _ = writer.await;
            std::process::exit(2);
        }
    };
    let ready = Ready {
        database: Some(pool.database.clone()),
    };
    reply(&tx.traffic, frame.id, init.answer(&ready)).await;
    while let Some(bytes) = input.next().await.transpose()? {
        match serde_json::from_slice::<RequestFrame>(&bytes) {
            Ok(f) => {
                tokio::spawn(handle(pool.clone(), f, tx.clone()));
            }
            Err(e) => tracing::warn!(error = %e, "unreadable request frame"),
        }
    }
    Ok(())
}

async fn write_frames(mut rx: Lanes) {
    let mut out = FramedWrite::new(tokio::io::stdout(), codec());
    while let Some(b) = rx.next().await {
        if out.send(b).await.is_err() {
            // Nobody reads our answers: the supervisor is gone.
            std::process::exit(0);
        }
    }
}

async fn reply(tx: &mpsc::Sender<Bytes>, id: u64, result: Result<Answer, EngineError>) {
    match encode(&ResponseFrame { id, result }) {
        Ok(b) => {
            let _ = tx.send(b).await;
        }
        Err(e) => tracing::error!(error = %e, "could not encode a response"),
    }
}

async fn handle(pool: Arc<Pool>, frame: RequestFrame, tx: LaneSenders) {
    let tx = tx.for_request(&frame.request).clone();
    let result = serve(&pool, frame.request).await;
    reply(&tx, frame.id, result).await;
}

/// Each operation to the one function that serves it, its reply named for it. No catch-all
/// arm: an operation added to the table without a line here does not compile.
async fn serve(pool: &Pool, request: Request) -> Result<Answer, EngineError> {
    let c = pool.client();
    match request {
        Request::Init(_) => Err(EngineError::Protocol("already initialised".into())),
        Request::Ping(op) => op.answer(&queries::ping(&pool.heartbeat).await?),
        Request::GetKey(op) => op.answer(&queries::get_key(c, &op.token).await?),
        Request::InsertKey(op) => op.answer(&queries::insert_key(c, &op.record).await?),
        Request::ListKeys(op) => op.answer(&queries::list_keys(c, &op.filter).await?),
        Request::UpdateKey(op) => op.answer(&queries::update_key(c, &op.token, &op.patch).await?),
        Request::RegenerateKey(op) => {
            let (old, new, name) = (&op.old, &op.new, &op.new_name);
            let regenerated =
                rotation_queries::regenerate_key(c, old, new, name, op.revoke_at, &op.patch);
            op.answer(&regenerated.await?)
        }
        Request::EndGraces(op) => op.answer(&rotation_queries::end_graces(c).await?),
        Request::GraceEnd(op) => op.answer(&rotation_queries::grace_end(c, &op.token).await?),
        Request::DeleteKeys(op) => {
            op.answer(&queries::delete_keys(c, &op.tokens, &op.aliases).await?)
        }
        Request::ChangesSince(op) => {
            let changes = queries::changes_since(c, op.after, op.recent_ms, op.limit).await?;
            op.answer(&changes)
        }
        Request::LastChange(op) => op.answer(&queries::last_change(c).await?),
        Request::PruneChanges(op) => op.answer(&queries::prune_changes(c, op.keep_ms).await?),
        Request::InsertTeam(op) => op.answer(&team_queries::insert_team(c, &op.team).await?),
        Request::GetTeam(op) => {
            op.answer(&team_queries::get_team(c, &op.team_id, op.with_keys).await?)
        }
        Request::ListTeams(op) => op.answer(&team_queries::list_teams(c, op.page, op.size).await?),
        Request::UpdateTeam(op) => {
            op.answer(&team_queries::update_team(c, &op.team_id, &op.patch).await?)
        }
        Request::DeleteTeams(op) => op.answer(&team_queries::delete_teams(c, &op.team_ids).await?),
        Request::InsertUser(op) => op.answer(&user_queries::insert_user(c, &op.user).await?),
        Request::GetUser(op) => op.answer(&user_queries::get_user(c, &op.user_id).await?),
        Request::ListUsers(op) => {
            let ids = op.user_ids.as_deref();
            let page = user_queries::list_users(c, op.page, op.size, op.role.as_deref(), ids);
            op.answer(&page.await?)
        }
        Request::UpdateUser(op) => {
            op.answer(&user_queries::update_user(c, &op.user_id, &op.patch).await?)
        }
        Request::DeleteUsers(op) => op.answer(&user_queries::delete_users(c, &op.user_ids).await?),
        Request::AddMember(op) => {
            op.answer(&member_queries::add_member(c, &op.team_id, &op.member).await?)
        }
        Request::UpdateMember(op) => {
            let write = member_queries::update_member(c, &op.team_id, &op.who, &op.patch);
            op.answer(&write.await?)
        }
        Request::DeleteMember(op) => {
            op.answer(&member_queries::delete_member(c, &op.team_id, &op.who).await?)
        }
        Request::TeamMembers(op) => op.answer(&member_queries::team_members(c, &op.team_id).await?),
        Request::UserTeams(op) => op.answer(&member_queries::user_teams(c, &op.user_id).await?),
        Request::InsertSpend(op) => {
            same_database(&pool.database, op.database.as_deref())?;
            op.answer(&spend_queries::insert_spend(c, &op.rows).await?)
        }
        Request::DeadLetterSpend(op) => {
            same_database(&pool.database, op.database.as_deref())?;
            op.answer(&spend_queries::dead_letter(c, &op.letters).await?)
        }
        Request::SpendLogs(op) => op.answer(&spend_queries::spend_logs(c, &op.filter).await?),
        Request::SpendSummary(op) => op.answer(&spend_queries::spend_summary(c, &op.filter).await?),
        Request::GlobalSpend(op) => op.answer(&spend_queries::global_spend(c).await?),
        Request::KeyModelSpend(op) => {
            op.answer(&spend_queries::key_model_spend(c, &op.token, &op.model, op.since).await?)
        }
        Request::ResetBudgets(op) => op.answer(&spend_queries::reset_budgets(c, op.now).await?),
        Request::SwapRateWindow(op) => {
            let swap = rate_queries::swap_window(c, &op.scope, op.expected, &op.window).await?;
            op.answer(&swap)
        }
    }
}

/// A spool's records go only into the database they belong to: the drain names it, and an
/// engine connected to another (a reconnect that reached a different database between the
/// drain's look and its write) refuses.
fn same_database(database: &str, expected: Option<&str>) -> Result<(), EngineError> {
    match expected {
        Some(d) if d != database => Err(EngineError::Protocol(format!(
            "spend for database {d} refused: this engine is connected to {database}"
        ))),
        _ => Ok(()),
    }
}
