//! The key cache's flags, and the one relation between them that keeps a replica cut off
//! from Postgres from reviving a revoked key (docs/architecture.md).

use std::time::Duration;

use clap::Args;

use super::flags::flags;
use super::{invalid, ConfigError};
use crate::key_cache::CacheConfig;

flags! {
    KEY_CACHE_FRESH: long = "key-cache-fresh-secs", env = "LIVEGATE_KEY_CACHE_FRESH_SECS";
    KEY_CACHE_STALENESS: long = "key-cache-staleness-secs", env = "LIVEGATE_KEY_CACHE_STALENESS_SECS";
    MAX_CHANGE_LOG_SILENCE: long = "max-change-log-silence-secs", env = "LIVEGATE_MAX_CHANGE_LOG_SILENCE_SECS";
    FILTER_REVOCATION_HOLD: long = "filter-revocation-hold-secs", env = "LIVEGATE_FILTER_REVOCATION_HOLD_SECS";
    KEY_CACHE_MAX_ENTRIES: long = "key-cache-max-entries", env = "LIVEGATE_KEY_CACHE_MAX_ENTRIES";
}

#[derive(Debug, Args)]
pub struct CacheFlags {
    /// Records younger than this answer auth checks without asking the database.
    #[arg(long = KEY_CACHE_FRESH.long, env = KEY_CACHE_FRESH.env, default_value_t = 10)]
    pub key_cache_fresh_secs: u64,
    /// While the database is away, known keys keep working for this long after their last read.
    #[arg(
        long = KEY_CACHE_STALENESS.long,
        env = KEY_CACHE_STALENESS.env,
        default_value_t = 900
    )]
    pub key_cache_staleness_secs: u64,
    /// A record older than the fresh bound lets a key in only if the change log was read
    /// within this; must be below --filter-revocation-hold-secs (docs/architecture.md).
    #[arg(
        long = MAX_CHANGE_LOG_SILENCE.long,
        env = MAX_CHANGE_LOG_SILENCE.env,
        default_value_t = 240
    )]
    pub max_change_log_silence_secs: u64,
    /// How long the filters hold a revocation from the change feed: the larger of their
    /// `cache.stale_if_error_ms` and `cache.deny_ttl_ms`, in seconds.
    #[arg(
        long = FILTER_REVOCATION_HOLD.long,
        env = FILTER_REVOCATION_HOLD.env,
        default_value_t = 300
    )]
    pub filter_revocation_hold_secs: u64,
    #[arg(
        long = KEY_CACHE_MAX_ENTRIES.long,
        env = KEY_CACHE_MAX_ENTRIES.env,
        default_value_t = 100_000
    )]
    pub key_cache_max_entries: usize,
}

impl TryFrom<CacheFlags> for CacheConfig {
    type Error = ConfigError;

    fn try_from(a: CacheFlags) -> Result<CacheConfig, ConfigError> {
        let cache = CacheConfig {
            fresh: Duration::from_secs(a.key_cache_fresh_secs),
            staleness: Duration::from_secs(a.key_cache_staleness_secs),
            max_entries: a.key_cache_max_entries.max(1),
            max_silence: Duration::from_secs(a.max_change_log_silence_secs),
        };
        if cache.staleness < cache.fresh {
            return Err(invalid(
                KEY_CACHE_STALENESS.bare,
                format!("must not be below {}", KEY_CACHE_FRESH.bare),
            ));
        }
        // The one relation that keeps a cut-off replica from reviving a revoked key:
        // fresh ≤ silence < the filters' hold of a revocation.
        if cache.max_silence < cache.fresh {
            return Err(invalid(
                MAX_CHANGE_LOG_SILENCE.bare,
                format!("must not be below {}", KEY_CACHE_FRESH.bare),
            ));
        }
        if a.max_change_log_silence_secs >= a.filter_revocation_hold_secs {
            return Err(invalid(
                MAX_CHANGE_LOG_SILENCE.bare,
                format!(
                    "must be below {} (the filters' cache.stale_if_error_ms), or a replica cut off from Postgres could let a revoked key in again once the filters forgot the revocation",
                    FILTER_REVOCATION_HOLD.bare
                ),
            ));
        }
        Ok(cache)
    }
}
