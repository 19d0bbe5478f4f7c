//! What the gate counts: where its key states came from and what it decided. The gate owns
//! these; `metrics` only renders them.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct GateCounters {
    /// Checks answered from a fresh cached key record (or a remembered unknown key).
    pub key_cache_hits: AtomicU64,
    /// Checks that needed the database.
    pub key_cache_misses: AtomicU64,
    /// Checks answered from a stale record while the database was away.
    pub key_cache_stale_served: AtomicU64,
    /// Checks that admitted a key whose spend has reached its `soft_budget`.
    pub soft_budget_exceeded: AtomicU64,
    /// Rate-limit decisions made without the database (it did not answer in time).
    pub rate_limit_local_decisions: AtomicU64,
    /// Rate-limit decisions that wrote or read the database, or refused from what the
    /// replica knew.
    pub rate_limit_shared_decisions: AtomicU64,
    /// Checks whose request windows were all served from this replica's leases.
    pub rate_limit_leased_admissions: AtomicU64,
    /// Admissions handed to filter workers as their share of a lease (what a worker does
    /// not use before the share ends stays out of the window for its minute).
    pub rate_limit_handed_admissions: AtomicU64,
    /// Checks by outcome (`Decision::label`).
    decisions: Mutex<BTreeMap<&'static str, u64>>,
}

impl GateCounters {
    pub fn count_decision(&self, outcome: &'static str) {
        *self
            .decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome)
            .or_default() += 1;
    }

    /// Each outcome seen and how often, in label order.
    pub fn decisions(&self) -> Vec<(&'static str, u64)> {
        let decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        decisions.iter().map(|(k, v)| (*k, *v)).collect()
    }
}
