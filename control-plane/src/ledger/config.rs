//! The ledger's configuration (validated by `config` from the spend, spool and budget flags)
//! and what goes wrong opening it.

use std::path::PathBuf;
use std::time::Duration;

use crate::spool::SpoolConfig;

/// The spend ledger: where records are spooled, how they are priced and drained.
#[derive(Debug, Clone)]
pub struct SpendConfig {
    pub spool: SpoolConfig,
    /// LiteLLM's price file; `None`: every model costs 0 and is marked unpriced.
    pub prices_file: Option<PathBuf>,
    pub drain_batch: usize,
    pub drain_retry: Duration,
    /// How long an idle drain woken by new records waits for more (zero: not at all).
    pub drain_linger: Duration,
    /// The most (key alias, team, model) series of the spend metrics; beyond: `other`.
    pub metrics_max_series: usize,
    pub when_full: SpoolFullPolicy,
    /// USD reserved per request in flight of a budgeted key (0: no reservations).
    pub reservation_usd: f64,
    /// How long a reservation lasts without its spend record.
    pub reservation_lease: Duration,
}

/// What the auth check answers while the spend spool is at its bound (`--spend-spool-full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolFullPolicy {
    /// Keys with a budget (their own or their team's) are refused: their spend could not
    /// be counted. The default: fail closed where spend matters.
    RefuseBudgeted,
    /// Every key is refused.
    RefuseAll,
    /// Nobody is refused: spend made meanwhile reaches the ledger only as the filter's
    /// retries are accepted.
    Admit,
}

impl SpoolFullPolicy {
    pub fn parse(s: &str) -> Option<SpoolFullPolicy> {
        match s {
            "refuse-budgeted" => Some(SpoolFullPolicy::RefuseBudgeted),
            "refuse-all" => Some(SpoolFullPolicy::RefuseAll),
            "admit" => Some(SpoolFullPolicy::Admit),
            _ => None,
        }
    }
}

/// The largest bound on spend metric series a flag may set.
pub const MAX_SPEND_METRICS_SERIES: usize = 100_000;

/// The largest drain batch: one transaction, one IPC frame well under its 16 MiB bound.
pub const MAX_DRAIN_BATCH: usize = 5000;

/// Why the ledger did not open: the spool's path or the price file (`config` names the flag).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Spool(String),
    #[error("{0}")]
    Prices(String),
}
