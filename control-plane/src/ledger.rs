//! The spend ledger: records from the filter are priced, spooled (synced) and only then
//! acknowledged; a task drains the spool into Postgres whenever the engine answers.
//!
//! ```text
//! POST /v1/spend/records ─▶ validate ─▶ price ─▶ SpoolHandle::append (fsync) ─▶ SpendAck
//!                                                      │
//!                     drain task ◀─ oldest(batch) ◀────┘
//!                        └─▶ Db::insert_spend (one statement: rows ON CONFLICT DO NOTHING,
//!                            key and team totals from the inserted rows only) ─▶ mark_drained
//!                              └─ refused data: split until the record stands alone
//!                                 ─▶ livegate_spend_dead_letters ([`isolate`])
//! ```
//!
//! Exactly once: the spool holds an id once while it is pending, the drain's statement
//! inserts a request id once, and the totals grow only by the rows that statement inserted,
//! so a batch replayed after a crash between the commit and `mark_drained` adds nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use livegate_contract::spend::{SpendBatch, SpendRecord};
use tokio::sync::Notify;

use crate::budget::reserve::{Held, Reservations};
use crate::model::keys::KeyHash;
use crate::model::{KeyRecord, LedgerEntry};
use crate::pricing::{PriceTable, TokenUsage};
use crate::spool::{Appended, Entry, SpoolError, SpoolHandle};
use spend_series::SpendSeries;

pub mod bind;
mod config;
pub mod drain;
pub mod isolate;
mod pending;
pub mod spend_series;
pub use config::{
    OpenError, SpendConfig, SpoolFullPolicy, MAX_DRAIN_BATCH, MAX_SPEND_METRICS_SERIES,
};
pub use drain::{drain, drain_step, DrainError, DrainPace};
pub use pending::PendingSpend;

/// Prices a record: by its deployment's own prices (`model_info`) when it has them, else
/// the model the upstream returned, else the one requested.
pub fn price(record: SpendRecord, prices: &PriceTable) -> LedgerEntry {
    let usage = TokenUsage::of(&record);
    let own = record
        .deployment
        .as_deref()
        .and_then(|d| prices.deployment(d));
    let model = record
        .model_returned
        .as_deref()
        .or(record.model_requested.as_deref());
    let priced = match own {
        Some(price) => Some(crate::pricing::Priced {
            cost: price.cost(usage),
            unpriced: false,
        }),
        None => model.map(|m| prices.cost(m, usage)),
    };
    let (cost, unpriced) = match priced {
        Some(p) => (p.cost, p.unpriced),
        None => (0.0, true),
    };
    LedgerEntry {
        record,
        cost,
        unpriced,
        user_id: None,
    }
}

/// The spool's entries for a batch: (request id, the priced record as JSON).
pub fn spool_entries(
    batch: SpendBatch,
    prices: &PriceTable,
) -> Result<Vec<(String, Vec<u8>)>, serde_json::Error> {
    let priced: Vec<LedgerEntry> = batch
        .records
        .into_iter()
        .map(|r| price(r, prices))
        .collect();
    encode(&priced)
}

fn encode(entries: &[LedgerEntry]) -> Result<Vec<(String, Vec<u8>)>, serde_json::Error> {
    entries
        .iter()
        .map(|e| Ok((e.record.request_id.clone(), serde_json::to_vec(e)?)))
        .collect()
}

/// What the drain sends for a run of spool entries, and the watermark it may then write.
#[derive(Debug, Default, PartialEq)]
pub struct DrainBatch {
    pub rows: Vec<LedgerEntry>,
    /// The last entry's number: everything up to it is drained once `rows` commit.
    pub through: Option<u64>,
    /// Entries whose data is not a ledger entry (never written by this code), id and
    /// bytes: dead letters rather than blocking the spool forever.
    pub unreadable: Vec<(String, Vec<u8>)>,
}

/// Decodes spool entries into rows (pure).
pub fn drain_batch(entries: &[Entry]) -> DrainBatch {
    let mut batch = DrainBatch::default();
    for entry in entries {
        match serde_json::from_slice::<LedgerEntry>(&entry.data) {
            Ok(row) => batch.rows.push(row),
            Err(_) => batch
                .unreadable
                .push((entry.id.clone(), entry.data.clone())),
        }
        batch.through = Some(entry.seq);
    }
    batch
}

/// Counters of the ledger, rendered by `Metrics`.
#[derive(Debug)]
pub struct LedgerCounters {
    pub drained: AtomicU64,
    pub duplicates: AtomicU64,
    pub unpriced: AtomicU64,
    pub drain_failures: AtomicU64,
    /// Records kept in `livegate_spend_dead_letters` by this process's drain.
    pub dead_letters: AtomicU64,
    pub refused_full: AtomicU64,
    /// The spool refused the last batch it was offered for want of room, and the drain has
    /// not freed any since: the auth check's `--spend-spool-full` applies.
    pub at_bound: AtomicBool,
    /// Tokens and cost by (key alias, team, model) of the records the drain inserted: a
    /// record counts when its row is written, once (a replayed or retried one that Postgres
    /// had already is not counted again). Held for a few map updates, never across an await.
    pub series: Mutex<SpendSeries>,
}

impl LedgerCounters {
    pub fn new(max_series: usize) -> LedgerCounters {
        LedgerCounters {
            drained: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unpriced: AtomicU64::new(0),
            drain_failures: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            at_bound: AtomicBool::new(false),
            series: Mutex::new(SpendSeries::new(max_series)),
        }
    }

    /// Adds the rows the drain inserted (those not in `duplicates`) to their series.
    pub fn count_inserted(&self, rows: &[LedgerEntry], duplicates: &[String]) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for row in rows {
            if !duplicates.contains(&row.record.request_id) {
                series.add_entry(row);
            }
        }
    }
}

/// The spool, the prices and the drain's wake-up, shared by the intake and the drain.
#[derive(Clone)]
pub struct Ledger {
    pub spool: SpoolHandle,
    pub prices: Arc<PriceTable>,
    pub counters: Arc<LedgerCounters>,
    /// What the spool holds and the drain has not written, by key and team.
    pub pending: Arc<Mutex<PendingSpend>>,
    /// Which database the spool belongs to, and the spools set aside ([`bind`]).
    pub binding: Arc<bind::Binding>,
    /// What requests in flight of budgeted keys reserve (`budget::reserve`).
    pub reservations: Arc<Mutex<Reservations>>,
    wake: Arc<Notify>,
}

/// Why a batch was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the spend spool is full: retry later")]
    Full,
    #[error("the spend spool waits to learn whether the database reached is its own")]
    Unbound,
    #[error("the spend spool cannot write: {0}")]
    Spool(SpoolError),
    #[error("a record cannot be encoded: {0}")]
    Encode(serde_json::Error),
}

/// What the budget says of a key about to be let in.
#[derive(Debug, Clone, PartialEq)]
pub enum SpendVerdict {
    /// The key's or its team's spend (drained, spooled, reserved) reached its budget.
    OverBudget(livegate_contract::Budget),
    /// Within budget: the reservation taken for the request (if the key has a budget), and
    /// whether the request would take it near the budget (then the filter must not cache
    /// the allow).
    Within {
        held: Option<Held>,
        near_budget: bool,
    },
}

impl Ledger {
    /// Opens (and replays) the spool, creating its directory, and loads the prices.
    pub async fn open(config: &SpendConfig) -> Result<Ledger, OpenError> {
        if let Some(dir) = config
            .spool
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| OpenError::Spool(format!("cannot create {}: {e}", dir.display())))?;
        }
        let (spool, replay) = SpoolHandle::open(config.spool.clone())
            .await
            .map_err(|e| OpenError::Spool(e.to_string()))?;
        tracing::info!(
            path = %config.spool.path.display(),
            pending = replay.pending,
            truncated_bytes = replay.truncated_bytes,
            "spend spool opened"
        );
        let mut pending = PendingSpend::default();
        let replayed = spool
            .oldest(usize::MAX)
            .await
            .map_err(|e| OpenError::Spool(e.to_string()))?;
        for entry in drain_batch(&replayed).rows {
            pending.add(&entry);
        }
        let binding = bind::at_start(&spool, &config.spool.path)
            .await
            .map_err(|e| OpenError::Spool(e.to_string()))?;
        let prices = match &config.prices_file {
            None => {
                tracing::warn!("no --prices-file: every model costs 0 and is marked unpriced");
                PriceTable::default()
            }
            Some(file) => PriceTable::load(file)
                .await
                .map_err(|e| OpenError::Prices(e.to_string()))?,
        };
        Ok(Ledger {
            spool,
            prices: Arc::new(prices),
            counters: Arc::new(LedgerCounters::new(config.metrics_max_series)),
            pending: Arc::new(Mutex::new(pending)),
            binding: Arc::new(binding),
            reservations: Arc::new(Mutex::new(Reservations::new(
                config.reservation_usd,
                config.reservation_lease.as_millis() as u64,
            ))),
            wake: Arc::default(),
        })
    }

    /// The undrained cost (held only briefly, never across an await).
    pub fn pending_spend(&self) -> std::sync::MutexGuard<'_, PendingSpend> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The budget check of a key about to be let in, counting this replica's undrained
    /// spend and the reservations of the key's and its team's requests in flight; within
    /// budget, it reserves for the request at once (under the same lock, so two checks
    /// cannot both take the last room). The caller releases the [`Held`] if a later check
    /// refuses the request.
    pub fn admit_spend(&self, record: &KeyRecord, now_ms: u64) -> SpendVerdict {
        let mut reservations = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
        let (reserved_key, reserved_team) = reservations.reserved(record, now_ms);
        let pending = self.pending_spend();
        let key = pending.key(&record.token) + reserved_key;
        let team = pending.team(record.team_id.as_deref()) + reserved_team;
        let user = pending.user(record.user_id.as_deref());
        let member = pending.member(record.team_id.as_deref(), record.user_id.as_deref());
        drop(pending);
        let held = crate::budget::Pending {
            key,
            user,
            team,
            member,
        };
        if let Some(budget) = crate::budget::exceeded(record, held) {
            return SpendVerdict::OverBudget(budget);
        }
        let Some(held) = reservations.reserve(record, now_ms) else {
            return SpendVerdict::Within {
                held: None,
                near_budget: false,
            };
        };
        let (after_key, after_team) = reservations.reserved(record, now_ms);
        let near_budget = reservations.near_budget(
            record,
            record.spend + key - reserved_key + after_key,
            record.team.spend + team - reserved_team + after_team,
            record.user.spend + user,
            record.member.spend + member,
        );
        SpendVerdict::Within {
            held: Some(held),
            near_budget,
        }
    }

    /// A key's budget for one model (`model_max_budget`), checked with `drained` (what
    /// Postgres had), this replica's undrained cost for it (the larger of `pending_before`,
    /// taken before `drained` was read, and what is pending now: a record drained during
    /// the read, or one whose reservation became pending during it, is counted, never
    /// missed), its reservations for the key's requests for the model in flight, and,
    /// within the budget, a reservation for this one (under the same lock, so two checks
    /// cannot both take the last room). `Err`: the spend counted.
    pub fn admit_model_spend(
        &self,
        key: &KeyHash,
        model: &str,
        drained: f64,
        pending_before: f64,
        limit: f64,
        now_ms: u64,
    ) -> Result<(), f64> {
        let mut reservations = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
        // Intake adds a record's cost to pending before it frees its reservation, so
        // under this lock a request in flight is in one or the other, or both.
        let pending_now = self.pending_spend().key_model(key, model);
        let reserved = reservations.reserved_model(key, model, now_ms);
        let spend = drained + pending_before.max(pending_now) + reserved;
        if spend > limit {
            return Err(spend);
        }
        reservations.reserve_model(key, model, now_ms);
        Ok(())
    }

    /// Frees a reservation of a key's requests for a model (see [`Self::release`]).
    pub fn release_model(&self, key: &KeyHash, model: &str) {
        self.reservations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release_model(key, model);
    }

    /// Frees a reservation: its request's spend record arrived, or a check after the
    /// budget's refused it.
    pub fn release(&self, key: &KeyHash, team: Option<&str>) {
        self.reservations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(key, team);
    }

    /// Whether the spool is at its bound (see [`LedgerCounters::at_bound`]).
    pub fn at_bound(&self) -> bool {
        self.counters.at_bound.load(Relaxed)
    }

    /// Prices and spools a validated batch; returns once it is synced. `user_of` names the
    /// user of a record's key, as this replica knows it (its cost is pending for that user).
    pub async fn intake(
        &self,
        batch: SpendBatch,
        user_of: impl Fn(&KeyHash) -> Option<String>,
    ) -> Result<Appended, IntakeError> {
        if !self.binding.confirmed() {
            return Err(IntakeError::Unbound);
        }
        let priced: Vec<LedgerEntry> = batch
            .records
            .into_iter()
            .map(|r| {
                let user_id = user_of(&r.key_hash);
                LedgerEntry {
                    user_id,
                    ..price(r, &self.prices)
                }
            })
            .collect();
        let entries = encode(&priced).map_err(IntakeError::Encode)?;
        match self.spool.append(entries).await {
            Ok(appended) => {
                let accepted: std::collections::HashSet<&str> =
                    appended.accepted_ids.iter().map(String::as_str).collect();
                let mut pending = self.pending_spend();
                for entry in priced
                    .iter()
                    .filter(|e| accepted.contains(e.record.request_id.as_str()))
                {
                    pending.add(entry);
                }
                drop(pending);
                self.counters.at_bound.store(false, Relaxed);
                if appended.accepted > 0 {
                    self.wake.notify_one();
                }
                Ok(appended)
            }
            Err(SpoolError::Full { .. }) => {
                self.counters.refused_full.fetch_add(1, Relaxed);
                self.counters.at_bound.store(true, Relaxed);
                Err(IntakeError::Full)
            }
            Err(e) => Err(IntakeError::Spool(e)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
