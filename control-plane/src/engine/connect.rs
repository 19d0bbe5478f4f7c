//! The engine's connections: the pool and the heartbeat's own, each opened with every
//! timeout set explicitly, and the process's exit when any of them is lost.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, NoTls, Socket};

use super::{queries, schema, tls};
use crate::protocol::{EngineError, EngineSettings};

/// Exit code when a pooled connection is lost: the supervisor sees the exit and reconnects.
const EXIT_CONNECTION_LOST: i32 = 3;

/// A small fixed pool: requests take clients round-robin; tokio-postgres pipelines on each.
/// The heartbeat has a connection of its own: behind a pipeline of auth queries it would
/// measure the queue, not the database, and a flood would get a healthy engine replaced.
pub(super) struct Pool {
    clients: Vec<Client>,
    pub(super) heartbeat: Client,
    next: AtomicUsize,
    /// The database's identity (`schema::identity`), read once at start.
    pub(super) database: String,
}

impl Pool {
    pub(super) fn client(&self) -> &Client {
        &self.clients[self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len()]
    }
}

/// Connects the pool (bounded by `connect_timeout` as a whole, not only the TCP connect) and migrates.
pub(super) async fn start(s: &EngineSettings) -> Result<Pool, EngineError> {
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
