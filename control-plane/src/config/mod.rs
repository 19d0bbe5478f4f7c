//! Typed configuration, validated once at start-up; every error names its flag.
//!
//! Each group of flags (clap's `#[command(flatten)]`) lives in a file of its own with its
//! validation, turned into the typed config of its subsystem (`key_cache::CacheConfig`,
//! `ledger::SpendConfig`, `db::supervisor::SupervisorConfig`, …); [`Config`] only composes
//! them. A flag's name and variable are written once, in its group's `flags!` block.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::db::supervisor::SupervisorConfig;
use crate::feed::FeedConfig;
use crate::key_cache::CacheConfig;
use crate::ledger::SpendConfig;
use crate::secret::Secret;

pub mod cache;
pub mod database;
pub mod flags;
pub mod http;
pub mod model_list;
pub mod secrets;
pub mod spend;

/// Where the auth check finds it (the policy is the ledger's).
pub use crate::ledger::SpoolFullPolicy;
pub use cache::CacheFlags;
pub use database::DatabaseFlags;
pub use http::{HttpFlags, HttpSettings};
pub use model_list::ModelListFlags;
pub use secrets::{SecretFlags, Secrets, MASTER_KEY_MIN_CHARS};
pub use spend::{BudgetFlags, SpendFlags, SpoolFlags};

/// A configuration value that cannot be used, with the flag (and variable) to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        reason: reason.into(),
    }
}

fn ms(flag: &'static str, v: u64) -> Result<Duration, ConfigError> {
    if v == 0 {
        return Err(invalid(flag, "must be greater than 0"));
    }
    Ok(Duration::from_millis(v))
}

flags::flags! {
    LOG_FORMAT: long = "log-format", env = "LIVEGATE_LOG_FORMAT";
}

/// How the process logs; the engine subprocess is told the same.
#[derive(Debug, Args)]
pub struct LogFlags {
    /// `text` or `json`.
    #[arg(long = LOG_FORMAT.long, env = LOG_FORMAT.env, default_value = "text")]
    pub log_format: String,
}

impl LogFlags {
    /// `true` for JSON logs.
    pub fn json(&self) -> Result<bool, ConfigError> {
        match self.log_format.as_str() {
            "text" => Ok(false),
            "json" => Ok(true),
            other => Err(invalid(
                LOG_FORMAT.named,
                format!("must be text or json, not {other:?}"),
            )),
        }
    }
}

/// Flags of `serve`, by group; [`Config::from_args`] turns them into a validated `Config`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub http: HttpFlags,
    #[command(flatten)]
    pub secrets: SecretFlags,
    #[command(flatten)]
    pub database: DatabaseFlags,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub cache: CacheFlags,
    #[command(flatten)]
    pub spend: SpendFlags,
    #[command(flatten)]
    pub budget: BudgetFlags,
    #[command(flatten)]
    pub model_list: ModelListFlags,
}

/// Everything `serve` needs. Its `Debug` is safe to log: the secrets print as `<redacted>`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `/metrics` alone, on its own listener.
    pub metrics_listen: SocketAddr,
    pub master_key: Secret,
    /// The credential every internal call must carry (`x-livegate-internal-token`).
    pub internal_token: Secret,
    pub json_logs: bool,
    pub supervisor: SupervisorConfig,
    pub cache: CacheConfig,
    pub auth_cache_ttl: Duration,
    pub auth_db_deadline: Duration,
    pub retry_after: Duration,
    pub body_limit: usize,
    pub loop_lag_interval: Duration,
    pub drain_timeout: Duration,
    /// The most admissions one lease of a rate window reserves (1: no leases).
    pub rate_limit_max_lease: u64,
    pub feed: FeedConfig,
    pub spend: SpendConfig,
    /// The operator's model list (`--config`), when given.
    pub model_list: Option<Arc<livegate_contract::model_list::ModelList>>,
}

impl Config {
    /// Validates the flags once; the service starts only with a usable configuration.
    pub fn from_args(a: ServeArgs) -> Result<Config, ConfigError> {
        let spend = a.spend.validate(a.budget)?;
        let http = HttpSettings::try_from(a.http)?;
        let secrets = Secrets::try_from(a.secrets)?;
        let json_logs = a.log.json()?;
        let supervisor = a.database.supervisor(a.log.log_format)?;
        let cache = CacheConfig::try_from(a.cache)?;
        let model_list = a.model_list.load()?;
        let statement_timeout = Duration::from_millis(supervisor.settings.statement_timeout_ms);
        Ok(Config {
            spend,
            model_list,
            listen: http.listen,
            metrics_listen: http.metrics_listen,
            master_key: secrets.master_key,
            internal_token: secrets.internal_token,
            json_logs,
            supervisor,
            cache,
            auth_cache_ttl: http.auth_cache_ttl,
            auth_db_deadline: http.auth_db_deadline,
            retry_after: http.retry_after,
            body_limit: http.body_limit,
            loop_lag_interval: http.loop_lag_interval,
            drain_timeout: http.drain_timeout,
            rate_limit_max_lease: http.rate_limit_max_lease,
            // No change can commit later after taking its number than a statement may run.
            feed: FeedConfig {
                recent: FeedConfig::default().recent.max(2 * statement_timeout),
                ..FeedConfig::default()
            },
        })
    }
}

#[cfg(test)]
mod tests;
