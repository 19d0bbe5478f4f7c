//! The HTTP API's flags: where it listens, how long it waits and what it answers with.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::flags::flags;
use super::{invalid, ms, ConfigError};

flags! {
    LISTEN: long = "listen", env = "LIVEGATE_LISTEN";
    METRICS_LISTEN: long = "metrics-listen", env = "LIVEGATE_METRICS_LISTEN";
    AUTH_CACHE_TTL: long = "auth-cache-ttl-secs", env = "LIVEGATE_AUTH_CACHE_TTL_SECS";
    AUTH_DB_DEADLINE: long = "auth-db-deadline-ms", env = "LIVEGATE_AUTH_DB_DEADLINE_MS";
    RETRY_AFTER: long = "retry-after-secs", env = "LIVEGATE_RETRY_AFTER_SECS";
    BODY_LIMIT: long = "body-limit-bytes", env = "LIVEGATE_BODY_LIMIT_BYTES";
    LOOP_LAG_INTERVAL: long = "loop-lag-interval-ms", env = "LIVEGATE_LOOP_LAG_INTERVAL_MS";
    DRAIN_TIMEOUT: long = "drain-timeout-ms", env = "LIVEGATE_DRAIN_TIMEOUT_MS";
    MAX_LEASE: long = "rate-limit-max-lease", env = "LIVEGATE_RATE_LIMIT_MAX_LEASE";
}

#[derive(Debug, Args)]
pub struct HttpFlags {
    /// Address to listen on (loopback by default: `/v1/auth/check` is internal).
    #[arg(long = LISTEN.long, env = LISTEN.env, default_value = "127.0.0.1:4001")]
    pub listen: String,
    /// Where `/metrics` is served, alone: scraping it grants nothing else (loopback by default;
    /// a pod's Prometheus needs `0.0.0.0:4005`).
    #[arg(
        long = METRICS_LISTEN.long,
        env = METRICS_LISTEN.env,
        default_value = "127.0.0.1:4005"
    )]
    pub metrics_listen: String,
    /// `cache_ttl_seconds` suggested to the filter on allow (capped by the key's expiry).
    #[arg(long = AUTH_CACHE_TTL.long, env = AUTH_CACHE_TTL.env, default_value_t = 60)]
    pub auth_cache_ttl_secs: u64,
    /// Longest an auth check waits for the database (the filter gives up at 200 ms).
    #[arg(long = AUTH_DB_DEADLINE.long, env = AUTH_DB_DEADLINE.env, default_value_t = 150)]
    pub auth_db_deadline_ms: u64,
    /// `retry-after` on 503 answers.
    #[arg(long = RETRY_AFTER.long, env = RETRY_AFTER.env, default_value_t = 5)]
    pub retry_after_secs: u64,
    /// Largest accepted request body.
    #[arg(long = BODY_LIMIT.long, env = BODY_LIMIT.env, default_value_t = 65_536)]
    pub body_limit_bytes: usize,
    #[arg(
        long = LOOP_LAG_INTERVAL.long,
        env = LOOP_LAG_INTERVAL.env,
        default_value_t = 10
    )]
    pub loop_lag_interval_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long = DRAIN_TIMEOUT.long, env = DRAIN_TIMEOUT.env, default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// The most admissions of a request window one write reserves (a lease); 1 turns
    /// leases off: every admission is its own write, and no filter gets a share.
    #[arg(long = MAX_LEASE.long, env = MAX_LEASE.env, default_value_t = crate::rate_limit::MAX_LEASE)]
    pub rate_limit_max_lease: u64,
}

/// The HTTP API's settings, validated.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub auth_cache_ttl: Duration,
    pub auth_db_deadline: Duration,
    pub retry_after: Duration,
    pub body_limit: usize,
    pub loop_lag_interval: Duration,
    pub drain_timeout: Duration,
    pub rate_limit_max_lease: u64,
}

impl TryFrom<HttpFlags> for HttpSettings {
    type Error = ConfigError;

    fn try_from(a: HttpFlags) -> Result<HttpSettings, ConfigError> {
        let listen = a
            .listen
            .parse()
            .map_err(|e| invalid(LISTEN.named, format!("{e}")))?;
        let metrics_listen = a
            .metrics_listen
            .parse()
            .map_err(|e| invalid(METRICS_LISTEN.named, format!("{e}")))?;
        if metrics_listen == listen {
            return Err(invalid(
                METRICS_LISTEN.named,
                format!(
                    "must differ from {}: metrics have a listener of their own",
                    LISTEN.bare
                ),
            ));
        }
        if a.rate_limit_max_lease == 0 {
            return Err(invalid(MAX_LEASE.bare, "must be at least 1 (1: no leases)"));
        }
        if a.body_limit_bytes < 1024 {
            return Err(invalid(BODY_LIMIT.bare, "must be at least 1024"));
        }
        Ok(HttpSettings {
            listen,
            metrics_listen,
            auth_cache_ttl: Duration::from_secs(a.auth_cache_ttl_secs),
            auth_db_deadline: ms(AUTH_DB_DEADLINE.bare, a.auth_db_deadline_ms)?,
            retry_after: Duration::from_secs(a.retry_after_secs.max(1)),
            body_limit: a.body_limit_bytes,
            loop_lag_interval: ms(LOOP_LAG_INTERVAL.bare, a.loop_lag_interval_ms)?,
            drain_timeout: ms(DRAIN_TIMEOUT.bare, a.drain_timeout_ms)?,
            rate_limit_max_lease: a.rate_limit_max_lease,
        })
    }
}
