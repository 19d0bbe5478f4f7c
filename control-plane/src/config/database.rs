//! The database's flags: the URL, the engine subprocess, its watchdog and its connections.
//! They become the supervisor's `SupervisorConfig` (for `serve` and `spool drain` alike).

use std::str::FromStr;
use std::time::Duration;

use clap::Args;

use super::flags::flags;
use super::{invalid, ms, ConfigError};
use crate::db::process::EngineCommand;
use crate::db::protocol::EngineSettings;
use crate::db::state::Backoff;
use crate::db::supervisor::SupervisorConfig;
use crate::secret::Secret;

flags! {
    DATABASE_URL: long = "database-url", env = "DATABASE_URL";
    ENGINE_COMMAND: long = "engine-command", env = "LIVEGATE_ENGINE_COMMAND";
    HEARTBEAT_INTERVAL: long = "heartbeat-interval-ms", env = "LIVEGATE_HEARTBEAT_INTERVAL_MS";
    HEARTBEAT_DEADLINE: long = "heartbeat-deadline-ms", env = "LIVEGATE_HEARTBEAT_DEADLINE_MS";
    ENGINE_GRACE: long = "engine-grace-ms", env = "LIVEGATE_ENGINE_GRACE_MS";
    ENGINE_START_TIMEOUT: long = "engine-start-timeout-ms", env = "LIVEGATE_ENGINE_START_TIMEOUT_MS";
    BACKOFF_BASE: long = "backoff-base-ms", env = "LIVEGATE_BACKOFF_BASE_MS";
    BACKOFF_CAP: long = "backoff-cap-ms", env = "LIVEGATE_BACKOFF_CAP_MS";
    DB_POOL_SIZE: long = "db-pool-size", env = "LIVEGATE_DB_POOL_SIZE";
    DB_CONNECT_TIMEOUT: long = "db-connect-timeout-ms", env = "LIVEGATE_DB_CONNECT_TIMEOUT_MS";
    DB_STATEMENT_TIMEOUT: long = "db-statement-timeout-ms", env = "LIVEGATE_DB_STATEMENT_TIMEOUT_MS";
    DB_KEEPALIVE_IDLE: long = "db-keepalive-idle-ms", env = "LIVEGATE_DB_KEEPALIVE_IDLE_MS";
    DB_KEEPALIVE_INTERVAL: long = "db-keepalive-interval-ms", env = "LIVEGATE_DB_KEEPALIVE_INTERVAL_MS";
    DB_KEEPALIVE_RETRIES: long = "db-keepalive-retries", env = "LIVEGATE_DB_KEEPALIVE_RETRIES";
    DB_TCP_USER_TIMEOUT: long = "db-tcp-user-timeout-ms", env = "LIVEGATE_DB_TCP_USER_TIMEOUT_MS";
    DB_MAX_IN_FLIGHT: long = "db-max-in-flight", env = "LIVEGATE_DB_MAX_IN_FLIGHT";
}

#[derive(Debug, Args)]
pub struct DatabaseFlags {
    /// libpq URL of Postgres; `sslmode` disable, prefer or require.
    #[arg(long = DATABASE_URL.long, env = DATABASE_URL.env, hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Engine program and arguments, split like a shell line, no shell run (default: this binary's `engine`).
    #[arg(long = ENGINE_COMMAND.long, env = ENGINE_COMMAND.env)]
    pub engine_command: Option<String>,
    #[arg(
        long = HEARTBEAT_INTERVAL.long,
        env = HEARTBEAT_INTERVAL.env,
        default_value_t = 1000
    )]
    pub heartbeat_interval_ms: u64,
    /// A heartbeat slower than this counts as failed.
    #[arg(
        long = HEARTBEAT_DEADLINE.long,
        env = HEARTBEAT_DEADLINE.env,
        default_value_t = 1000
    )]
    pub heartbeat_deadline_ms: u64,
    /// Time between SIGTERM and SIGKILL when tearing an engine down.
    #[arg(long = ENGINE_GRACE.long, env = ENGINE_GRACE.env, default_value_t = 500)]
    pub engine_grace_ms: u64,
    /// Upper bound on an engine's start (connect pool + migrate).
    #[arg(
        long = ENGINE_START_TIMEOUT.long,
        env = ENGINE_START_TIMEOUT.env,
        default_value_t = 10_000
    )]
    pub engine_start_timeout_ms: u64,
    #[arg(long = BACKOFF_BASE.long, env = BACKOFF_BASE.env, default_value_t = 100)]
    pub backoff_base_ms: u64,
    /// Kept at a second so a database that comes back is found within about a
    /// second; each attempt is one engine process and one connect, cheap at this rate.
    #[arg(long = BACKOFF_CAP.long, env = BACKOFF_CAP.env, default_value_t = 1000)]
    pub backoff_cap_ms: u64,
    #[arg(long = DB_POOL_SIZE.long, env = DB_POOL_SIZE.env, default_value_t = 4)]
    pub db_pool_size: usize,
    #[arg(
        long = DB_CONNECT_TIMEOUT.long,
        env = DB_CONNECT_TIMEOUT.env,
        default_value_t = 3000
    )]
    pub db_connect_timeout_ms: u64,
    #[arg(
        long = DB_STATEMENT_TIMEOUT.long,
        env = DB_STATEMENT_TIMEOUT.env,
        default_value_t = 5000
    )]
    pub db_statement_timeout_ms: u64,
    #[arg(
        long = DB_KEEPALIVE_IDLE.long,
        env = DB_KEEPALIVE_IDLE.env,
        default_value_t = 5000
    )]
    pub db_keepalive_idle_ms: u64,
    #[arg(
        long = DB_KEEPALIVE_INTERVAL.long,
        env = DB_KEEPALIVE_INTERVAL.env,
        default_value_t = 2000
    )]
    pub db_keepalive_interval_ms: u64,
    #[arg(
        long = DB_KEEPALIVE_RETRIES.long,
        env = DB_KEEPALIVE_RETRIES.env,
        default_value_t = 3
    )]
    pub db_keepalive_retries: u32,
    #[arg(
        long = DB_TCP_USER_TIMEOUT.long,
        env = DB_TCP_USER_TIMEOUT.env,
        default_value_t = 5000
    )]
    pub db_tcp_user_timeout_ms: u64,
    /// Requests to the engine in flight at once; beyond it calls fail fast with 503.
    #[arg(
        long = DB_MAX_IN_FLIGHT.long,
        env = DB_MAX_IN_FLIGHT.env,
        default_value_t = 1024
    )]
    pub db_max_in_flight: usize,
}

impl DatabaseFlags {
    /// The supervisor's configuration; `log_format` is handed on to the engine.
    pub fn supervisor(self, log_format: String) -> Result<SupervisorConfig, ConfigError> {
        let a = self;
        if !(1..=64).contains(&a.db_pool_size) {
            return Err(invalid(DB_POOL_SIZE.bare, "must be between 1 and 64"));
        }
        let backoff = Backoff {
            base: ms(BACKOFF_BASE.bare, a.backoff_base_ms)?,
            cap: ms(BACKOFF_CAP.bare, a.backoff_cap_ms)?,
        };
        if backoff.cap < backoff.base {
            return Err(invalid(
                BACKOFF_CAP.bare,
                format!("must not be below {}", BACKOFF_BASE.bare),
            ));
        }
        let millis = |flag: &'static str, v: u64| ms(flag, v).map(|d| d.as_millis() as u64);
        let settings = EngineSettings {
            database_url: database_url(a.database_url)?,
            pool_size: a.db_pool_size,
            connect_timeout_ms: millis(DB_CONNECT_TIMEOUT.bare, a.db_connect_timeout_ms)?,
            keepalive_idle_ms: millis(DB_KEEPALIVE_IDLE.bare, a.db_keepalive_idle_ms)?,
            keepalive_interval_ms: millis(DB_KEEPALIVE_INTERVAL.bare, a.db_keepalive_interval_ms)?,
            keepalive_retries: a.db_keepalive_retries,
            tcp_user_timeout_ms: millis(DB_TCP_USER_TIMEOUT.bare, a.db_tcp_user_timeout_ms)?,
            statement_timeout_ms: millis(DB_STATEMENT_TIMEOUT.bare, a.db_statement_timeout_ms)?,
        };
        let statement_timeout = Duration::from_millis(settings.statement_timeout_ms);
        Ok(SupervisorConfig {
            engine: engine_command(a.engine_command)?,
            settings,
            log_format,
            heartbeat_interval: ms(HEARTBEAT_INTERVAL.bare, a.heartbeat_interval_ms)?,
            heartbeat_deadline: ms(HEARTBEAT_DEADLINE.bare, a.heartbeat_deadline_ms)?,
            grace: ms(ENGINE_GRACE.bare, a.engine_grace_ms)?,
            backoff,
            start_timeout: ms(ENGINE_START_TIMEOUT.bare, a.engine_start_timeout_ms)?,
            // The server gives up at statement_timeout; a second more covers the round trip.
            request_deadline: statement_timeout + Duration::from_secs(1),
            max_in_flight: a.db_max_in_flight.max(1),
        })
    }
}

fn engine_command(arg: Option<String>) -> Result<EngineCommand, ConfigError> {
    let flag = ENGINE_COMMAND.named;
    match arg {
        Some(s) => {
            // Split like a POSIX shell would (quotes honoured) but run no shell: the engine's
            // pid is the program's, so signals reach it directly.
            let parts = shell_words::split(&s)
                .map_err(|e| invalid(flag, format!("cannot be split into words: {e}")))?;
            let mut parts = parts.into_iter();
            let program = parts.next().ok_or_else(|| invalid(flag, "is empty"))?;
            Ok(EngineCommand {
                program: program.into(),
                args: parts.collect(),
            })
        }
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| invalid(flag, format!("cannot find this binary: {e}")))?;
            Ok(EngineCommand {
                program: exe,
                args: vec!["engine".into()],
            })
        }
    }
}

fn database_url(arg: Option<Secret>) -> Result<Secret, ConfigError> {
    let flag = DATABASE_URL.named;
    let url = arg
        .filter(|u| !u.expose().trim().is_empty())
        .ok_or_else(|| invalid(flag, "is required"))?;
    // The driver's parse errors name the bad option, never the URL, so no password leaks here.
    let split =
        crate::engine::tls::split_database_url(url.expose()).map_err(|e| invalid(flag, e))?;
    tokio_postgres::Config::from_str(&split.driver_url)
        .map_err(|e| invalid(flag, format!("not a usable Postgres URL: {e}")))?;
    Ok(url)
}
