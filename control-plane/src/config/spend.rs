//! The spend ledger's flags (its spool, prices, drain and metric series) and the budgets'
//! reservations for requests in flight; together the ledger's `SpendConfig`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::flags::flags;
use super::{invalid, ms, ConfigError};
use crate::ledger::{
    spend_series, OpenError, SpendConfig, SpoolFullPolicy, MAX_DRAIN_BATCH,
    MAX_SPEND_METRICS_SERIES,
};
use crate::spool::SpoolConfig;

flags! {
    SPEND_SPOOL_PATH: long = "spend-spool-path", env = "LIVEGATE_SPEND_SPOOL_PATH";
    SPEND_SPOOL_MAX_RECORDS: long = "spend-spool-max-records", env = "LIVEGATE_SPEND_SPOOL_MAX_RECORDS";
    SPEND_SPOOL_MAX_BYTES: long = "spend-spool-max-bytes", env = "LIVEGATE_SPEND_SPOOL_MAX_BYTES";
    PRICES_FILE: long = "prices-file", env = "LIVEGATE_PRICES_FILE";
    SPEND_DRAIN_BATCH: long = "spend-drain-batch", env = "LIVEGATE_SPEND_DRAIN_BATCH";
    SPEND_DRAIN_RETRY: long = "spend-drain-retry-ms", env = "LIVEGATE_SPEND_DRAIN_RETRY_MS";
    SPEND_DRAIN_LINGER: long = "spend-drain-linger-ms", env = "LIVEGATE_SPEND_DRAIN_LINGER_MS";
    SPEND_METRICS_MAX_SERIES: long = "spend-metrics-max-series", env = "LIVEGATE_SPEND_METRICS_MAX_SERIES";
    SPEND_SPOOL_FULL: long = "spend-spool-full", env = "LIVEGATE_SPEND_SPOOL_FULL";
    BUDGET_RESERVATION_USD: long = "budget-reservation-usd", env = "LIVEGATE_BUDGET_RESERVATION_USD";
    BUDGET_RESERVATION_LEASE: long = "budget-reservation-lease-secs", env = "LIVEGATE_BUDGET_RESERVATION_LEASE_SECS";
}

/// The drain's default linger: at a few thousand answers a second, the records of several
/// intakes per statement, for at most a tenth of a second's delay.
pub const DEFAULT_DRAIN_LINGER_MS: u64 = 100;

/// The longest linger accepted.
const MAX_DRAIN_LINGER_MS: u64 = 10_000;

/// The spend spool's file and bounds.
#[derive(Debug, Args)]
pub struct SpoolFlags {
    /// The spend spool: every acknowledged spend record waits here, synced, until it is in
    /// Postgres. Its directory is created at start. One file per control plane.
    #[arg(
        long = SPEND_SPOOL_PATH.long,
        env = SPEND_SPOOL_PATH.env,
        default_value = "livegate-data/spend.spool"
    )]
    pub spend_spool_path: String,
    /// The most spend records waiting in the spool; beyond it records are refused with 503.
    #[arg(
        long = SPEND_SPOOL_MAX_RECORDS.long,
        env = SPEND_SPOOL_MAX_RECORDS.env,
        default_value_t = 200_000
    )]
    pub spend_spool_max_records: usize,
    /// The spool file's largest size (waiting records are also held in memory).
    #[arg(
        long = SPEND_SPOOL_MAX_BYTES.long,
        env = SPEND_SPOOL_MAX_BYTES.env,
        default_value_t = 134_217_728
    )]
    pub spend_spool_max_bytes: u64,
}

impl TryFrom<SpoolFlags> for SpoolConfig {
    type Error = ConfigError;

    fn try_from(a: SpoolFlags) -> Result<SpoolConfig, ConfigError> {
        let path = a.spend_spool_path.trim();
        if path.is_empty() {
            return Err(invalid(SPEND_SPOOL_PATH.named, "must not be empty"));
        }
        if a.spend_spool_max_records == 0 {
            return Err(invalid(
                SPEND_SPOOL_MAX_RECORDS.named,
                "must be greater than 0",
            ));
        }
        // The largest batch (100 records of a few hundred bytes) must fit many times over.
        if a.spend_spool_max_bytes < 1 << 20 {
            return Err(invalid(
                SPEND_SPOOL_MAX_BYTES.named,
                "must be at least 1048576 (1 MiB)",
            ));
        }
        Ok(SpoolConfig {
            path: PathBuf::from(path),
            max_bytes: a.spend_spool_max_bytes,
            max_records: a.spend_spool_max_records,
        })
    }
}

/// The ledger's flags beyond its spool.
#[derive(Debug, Args)]
pub struct SpendFlags {
    #[command(flatten)]
    pub spool: SpoolFlags,
    /// LiteLLM's `model_prices_and_context_window.json`; without it every model costs 0.
    #[arg(long = PRICES_FILE.long, env = PRICES_FILE.env)]
    pub prices_file: Option<String>,
    /// Records written to Postgres per drain transaction.
    #[arg(
        long = SPEND_DRAIN_BATCH.long,
        env = SPEND_DRAIN_BATCH.env,
        default_value_t = 500
    )]
    pub spend_drain_batch: usize,
    /// Wait before the drain tries again after the database refused or was away.
    #[arg(
        long = SPEND_DRAIN_RETRY.long,
        env = SPEND_DRAIN_RETRY.env,
        default_value_t = 1000
    )]
    pub spend_drain_retry_ms: u64,
    /// How long the drain, woken by new records while idle, waits for more to join them in
    /// one statement (0 to 10000; 0: at once). Spend reaches `/spend/logs` that much later;
    /// budgets count spooled records already, so they are not loosened.
    #[arg(
        long = SPEND_DRAIN_LINGER.long,
        env = SPEND_DRAIN_LINGER.env,
        default_value_t = DEFAULT_DRAIN_LINGER_MS
    )]
    pub spend_drain_linger_ms: u64,
    /// The most (key alias, team, model) series of the spend metrics (0 to 100000); records
    /// of further triples are counted under the series labelled `other`.
    #[arg(
        long = SPEND_METRICS_MAX_SERIES.long,
        env = SPEND_METRICS_MAX_SERIES.env,
        default_value_t = spend_series::DEFAULT_MAX_SERIES
    )]
    pub spend_metrics_max_series: usize,
    /// What auth checks answer while the spend spool is at its bound: `refuse-budgeted`
    /// (keys with a budget, their own or their team's, get 503), `refuse-all` or `admit`.
    #[arg(
        long = SPEND_SPOOL_FULL.long,
        env = SPEND_SPOOL_FULL.env,
        default_value = "refuse-budgeted"
    )]
    pub spend_spool_full: String,
}

/// Budgets' reservations for requests in flight (the ledger holds them).
#[derive(Debug, Args)]
pub struct BudgetFlags {
    /// USD reserved per request in flight of a key or team with a budget, counted as spend
    /// in the budget check until the request's spend record arrives (0: off). Set it to
    /// about one answer's cost: see docs/operations.md, "Requests in flight".
    #[arg(
        long = BUDGET_RESERVATION_USD.long,
        env = BUDGET_RESERVATION_USD.env,
        default_value_t = 0.01
    )]
    pub budget_reservation_usd: f64,
    /// How long a reservation lasts when its spend record never arrives.
    #[arg(
        long = BUDGET_RESERVATION_LEASE.long,
        env = BUDGET_RESERVATION_LEASE.env,
        default_value_t = 600
    )]
    pub budget_reservation_lease_secs: u64,
}

impl SpendFlags {
    /// The ledger's configuration, with the budgets' reservations.
    pub fn validate(self, budget: BudgetFlags) -> Result<SpendConfig, ConfigError> {
        let a = self;
        let spool = SpoolConfig::try_from(a.spool)?;
        if !(1..=MAX_DRAIN_BATCH).contains(&a.spend_drain_batch) {
            return Err(invalid(
                SPEND_DRAIN_BATCH.named,
                format!("must be between 1 and {MAX_DRAIN_BATCH}"),
            ));
        }
        if a.spend_drain_linger_ms > MAX_DRAIN_LINGER_MS {
            return Err(invalid(
                SPEND_DRAIN_LINGER.named,
                format!("must be at most {MAX_DRAIN_LINGER_MS}"),
            ));
        }
        if a.spend_metrics_max_series > MAX_SPEND_METRICS_SERIES {
            return Err(invalid(
                SPEND_METRICS_MAX_SERIES.named,
                format!("must be at most {MAX_SPEND_METRICS_SERIES}"),
            ));
        }
        let prices_file = match a.prices_file.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(p) => Some(PathBuf::from(p)),
        };
        Ok(SpendConfig {
            spool,
            prices_file,
            when_full: SpoolFullPolicy::parse(a.spend_spool_full.trim()).ok_or_else(|| {
                invalid(
                    SPEND_SPOOL_FULL.named,
                    format!(
                        "must be refuse-budgeted, refuse-all or admit, not {:?}",
                        a.spend_spool_full
                    ),
                )
            })?,
            drain_batch: a.spend_drain_batch,
            drain_retry: ms(SPEND_DRAIN_RETRY.named, a.spend_drain_retry_ms)?,
            drain_linger: Duration::from_millis(a.spend_drain_linger_ms),
            metrics_max_series: a.spend_metrics_max_series,
            reservation_usd: match budget.budget_reservation_usd {
                r if r.is_finite() && r >= 0.0 => r,
                _ => {
                    return Err(invalid(
                        BUDGET_RESERVATION_USD.named,
                        "must be a number at least 0",
                    ))
                }
            },
            reservation_lease: Duration::from_secs(budget.budget_reservation_lease_secs.max(1)),
        })
    }
}

/// A ledger that did not open names the flag to fix, like any other start-up error.
impl From<OpenError> for ConfigError {
    fn from(e: OpenError) -> ConfigError {
        match e {
            OpenError::Spool(reason) => invalid(SPEND_SPOOL_PATH.named, reason),
            OpenError::Prices(reason) => invalid(PRICES_FILE.named, reason),
        }
    }
}
