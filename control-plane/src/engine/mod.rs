//! The engine subprocess: holds the Postgres pool and answers framed requests on stdin/stdout.

mod queries;
mod rate_queries;
mod schema;
mod spend_queries;
mod team_queries;
pub mod tls;

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, NoTls, Socket};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::db::ipc::{codec, encode, LaneSenders, Lanes};
use crate::protocol::{
    EngineError, EngineSettings, Request, RequestFrame, Response, ResponseFrame,
};

/// Exit code when a pooled connection is lost: the supervisor sees the exit and reconnects.
const EXIT_CONNECTION_LOST: i32 = 3;

/// A small fixed pool: requests take clients round-robin; tokio-postgres pipelines on each.
/// The heartbeat has a connection of its own: behind a pipeline of auth queries it would
/// measure the queue, not the database, and a flood would get a healthy engine replaced.
struct Pool {
    clients: Vec<Client>,
    heartbeat: Client,
    next: AtomicUsize,
    /// The database's identity (`schema::identity`), read once at start.
    database: String,
}

impl Pool {
    fn client(&self) -> &Client {
        &self.clients[self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len()]
    }
}

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
    let Request::Init(settings) = frame.request else {
        anyhow::bail!("the first frame must be init");
    };
    let pool = match start(&settings).await {
        Ok(pool) => Arc::new(pool),
        Err(e) => {
            tracing::error!(error = %e, "engine could not start");
            reply(&tx.traffic, frame.id, Err(e)).await;
            drop(tx);
            let _ = writer.await;
            std::process::exit(2);
        }
    };
    let ready = Response::Ready {
        database: Some(pool.database.clone()),
    };
    reply(&tx.traffic, frame.id, Ok(ready)).await;
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

async fn reply(tx: &mpsc::Sender<Bytes>, id: u64, result: Result<Response, EngineError>) {
    match encode(&ResponseFrame { id, result }) {
        Ok(b) => {
            let _ = tx.send(b).await;
        }
        Err(e) => tracing::error!(error = %e, "could not encode a response"),
    }
}

async fn handle(pool: Arc<Pool>, frame: RequestFrame, tx: LaneSenders) {
    let c = pool.client();
    let tx = tx.for_request(&frame.request).clone();
    let result =
        match frame.request {
            Request::Init(_) => Err(EngineError::Protocol("already initialised".into())),
            Request::Ping => queries::ping(&pool.heartbeat).await.map(|_| Response::Pong),
            Request::GetKey { token } => {
                queries::get_key(c, &token)
                    .await
                    .map(|record| Response::Key {
                        record: record.map(Box::new),
                    })
            }
            Request::InsertKey { record } => {
                queries::insert_key(c, &record)
                    .await
                    .map(|record| Response::Inserted {
                        record: Box::new(record),
                    })
            }
            Request::ListKeys { filter } => queries::list_keys(c, &filter)
                .await
                .map(|page| Response::Page { page }),
            Request::UpdateKey { token, patch } => queries::update_key(c, &token, &patch)
                .await
                .map(|record| Response::Key {
                    record: record.map(Box::new),
                }),
            Request::DeleteKeys { tokens, aliases } => queries::delete_keys(c, &tokens, &aliases)
                .await
                .map(|tokens| Response::Deleted { tokens }),
            Request::ChangesSince {
                after,
                recent_ms,
                limit,
            } => queries::changes_since(c, after, recent_ms, limit)
                .await
                .map(|changes| Response::Changes { changes }),
            Request::LastChange => queries::last_change(c)
                .await
                .map(|seq| Response::LastChange { seq }),
            Request::PruneChanges { keep_ms } => queries::prune_changes(c, keep_ms)
                .await
                .map(|rows| Response::Pruned { rows }),
            team => handle_team(c, &pool.database, team).await,
        };
    reply(&tx, frame.id, result).await;
}

/// The team and spend requests (every other request is answered in `handle`); `database`
/// is this engine's database identity.
async fn handle_team(
    c: &Client,
    database: &str,
    request: Request,
) -> Result<Response, EngineError> {
    match request {
        Request::InsertTeam { team } => {
            team_queries::insert_team(c, &team)
                .await
                .map(|team| Response::Team {
                    team: Some(Box::new(team)),
                    keys: vec![],
                })
        }
        Request::GetTeam { team_id, with_keys } => {
            let team = team_queries::get_team(c, &team_id).await?;
            let keys = if with_keys && team.is_some() {
                team_queries::team_keys(c, &team_id).await?
            } else {
                vec![]
            };
            Ok(Response::Team {
                team: team.map(Box::new),
                keys,
            })
        }
        Request::ListTeams { page, size } => team_queries::list_teams(c, page, size)
            .await
            .map(|(teams, total)| Response::Teams { teams, total }),
        Request::UpdateTeam { team_id, patch } => team_queries::update_team(c, &team_id, &patch)
            .await
            .map(|write| Response::TeamWritten {
                write: write.map(Box::new),
            }),
        Request::DeleteTeams { team_ids } => team_queries::delete_teams(c, &team_ids)
            .await
            .map(|deleted| Response::TeamsDeleted { deleted }),
        Request::InsertSpend {
            rows,
            database: expected,
        } => match same_database(database, expected) {
            Err(e) => Err(e),
            Ok(()) => spend_queries::insert_spend(c, &rows)
                .await
                .map(|inserted| Response::SpendInserted { inserted }),
        },
        Request::DeadLetterSpend {
            letters,
            database: expected,
        } => match same_database(database, expected) {
            Err(e) => Err(e),
            Ok(()) => spend_queries::dead_letter(c, &letters)
                .await
                .map(|rows| Response::DeadLettered { rows }),
        },
        Request::SpendLogs { filter } => spend_queries::spend_logs(c, &filter)
            .await
            .map(|rows| Response::SpendLogs { rows }),
        Request::SpendSummary { filter } => spend_queries::spend_summary(c, &filter)
            .await
            .map(|groups| Response::SpendSummary { groups }),
        Request::GlobalSpend => spend_queries::global_spend(c)
            .await
            .map(|spend| Response::GlobalSpend { spend }),
        Request::ResetBudgets { now } => spend_queries::reset_budgets(c, now)
            .await
            .map(|reset| Response::BudgetsReset { reset }),
        Request::SwapRateWindow {
            scope,
            expected,
            window,
        } => rate_queries::swap_window(c, &scope, expected, &window).await,
        other => Err(EngineError::Protocol(format!(
            "unexpected request {other:?}"
        ))),
    }
}

/// A spool's records go only into the database they belong to: the drain names it, and an
/// engine connected to another (a reconnect that reached a different database between the
/// drain's look and its write) refuses.
fn same_database(database: &str, expected: Option<String>) -> Result<(), EngineError> {
    match expected {
        Some(d) if d != database => Err(EngineError::Protocol(format!(
            "spend for database {d} refused: this engine is connected to {database}"
        ))),
        _ => Ok(()),
    }
}

/// Connects the pool (bounded by `connect_timeout` as a whole, not only the TCP connect) and migrates.
async fn start(s: &EngineSettings) -> Result<Pool, EngineError> {
    let config = postgres_config(s)?;
    let verify = database_url(s)?.verify;
    let deadline = Duration::from_millis(s.connect_timeout_ms);
    // The pool, then the heartbeat's own connection.
    let mut clients = Vec::with_capacity(s.pool_size + 1);
    for _ in 0..=s.pool_size.max(1) {
        let c = tokio::time::timeout(deadline, connect(&config, &verify))
            .await
            .map_err(|_| EngineError::Transport("connect timed out".into()))??;
        clients.push(c);
    }
    let heartbeat = clients
        .pop()
        .ok_or_else(|| EngineError::Protocol("no connection for the heartbeat".into()))?;
    let applied = schema::migrate(&mut clients[0])
        .await
        .map_err(queries::classify)?;
    if !applied.is_empty() {
        tracing::info!(?applied, "schema migrations applied");
    }
    let database = schema::identity(&clients[0])
        .await
        .map_err(queries::classify)?;
    Ok(Pool {
        clients,
        heartbeat,
        next: AtomicUsize::new(0),
        database,
    })
}

/// The URL split into what the driver parses and how the server's certificate is checked.
fn database_url(s: &EngineSettings) -> Result<tls::DatabaseUrl, EngineError> {
    tls::split_database_url(s.database_url.expose())
        .map_err(|e| EngineError::Protocol(format!("DATABASE_URL: {e}")))
}

/// The driver's configuration from the URL, with every timeout set explicitly.
pub fn postgres_config(s: &EngineSettings) -> Result<Config, EngineError> {
    let mut c = Config::from_str(&database_url(s)?.driver_url)
        .map_err(|e| EngineError::Protocol(format!("DATABASE_URL: {e}")))?;
    c.connect_timeout(Duration::from_millis(s.connect_timeout_ms))
        .keepalives(true)
        .keepalives_idle(Duration::from_millis(s.keepalive_idle_ms))
        .keepalives_interval(Duration::from_millis(s.keepalive_interval_ms))
        .keepalives_retries(s.keepalive_retries)
        .tcp_user_timeout(Duration::from_millis(s.tcp_user_timeout_ms));
    // Server notices (e.g. "already exists, skipping") are not worth a log line each.
    let options = format!(
        "{} -c statement_timeout={} -c client_min_messages=warning",
        c.get_options().unwrap_or(""),
        s.statement_timeout_ms
    );
    c.options(options.trim_start());
    if c.get_application_name().is_none() {
        c.application_name("livegate-engine");
    }
    Ok(c)
}

async fn connect(config: &Config, verify: &tls::Verify) -> Result<Client, EngineError> {
    match config.get_ssl_mode() {
        SslMode::Disable => open(config, NoTls).await,
        _ => {
            open(
                config,
                tls::connector_for(verify).map_err(EngineError::Protocol)?,
            )
            .await
        }
    }
}

async fn open<T>(config: &Config, tls: T) -> Result<Client, EngineError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await.map_err(queries::classify)?;
    tokio::spawn(async move {
        // A lost connection makes the whole engine disposable: exit, and let the supervisor
        // start a fresh one, instead of repairing a pool in place.
        match connection.await {
            Ok(()) => tracing::warn!("database connection closed"),
            Err(e) => tracing::error!(error = %e, "database connection lost"),
        }
        std::process::exit(EXIT_CONNECTION_LOST);
    });
    Ok(client)
}
