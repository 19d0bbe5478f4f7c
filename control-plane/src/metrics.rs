//! Prometheus text metrics: renders the counters each subsystem owns (loop lag, database
//! state, the spend ledger, …), handed to it by `app` and `AppState`; it counts nothing itself.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::db::{DbCounters, Snapshot};
use crate::gate::GateCounters;
use crate::ledger::Ledger;
use crate::looplag::LoopLag;

/// Every metric the control plane exports.
pub struct Metrics {
    /// The loop-lag probe's own histogram, shared with the probe.
    pub loop_lag: Arc<LoopLag>,
    /// The supervisor's own counters (heartbeats, engine lifecycle): db owns them, this
    /// renders them.
    pub db: Arc<DbCounters>,
    /// The gate's own counters (key states, decisions): the gate owns them, this renders them.
    pub gate: Arc<GateCounters>,
    /// Admin calls refused because the presented key was not the master key.
    pub master_key_failures: AtomicU64,
    /// Internal calls refused for a missing or wrong `x-livegate-internal-token`.
    pub internal_token_failures: AtomicU64,
    http_requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            loop_lag: Arc::default(),
            db: Arc::default(),
            gate: Arc::default(),
            master_key_failures: AtomicU64::new(0),
            internal_token_failures: AtomicU64::new(0),
            http_requests: Mutex::default(),
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// The spend ledger's counters, its spool's depth and its binding to a database.
fn render_ledger(out: &mut String, ledger: &Ledger) {
    let (c, spool, binding) = (&ledger.counters, &ledger.spool, &ledger.binding);
    let aside = binding.set_aside();
    gauge(
        out,
        "livegate_spend_spools_set_aside",
        "Spend spools of another database, set aside and waiting for `spool drain`.",
        aside.len() as f64,
    );
    gauge(
        out,
        "livegate_spend_spool_set_aside_records",
        "Records in the set-aside spend spools (as of start or of setting aside).",
        aside.iter().map(|s| s.records).sum::<usize>() as f64,
    );
    counter(
        out,
        "livegate_spend_spool_database_mismatches_total",
        "Times the spend spool was found bound to another database than the one reached.",
        binding.mismatches.load(Relaxed),
    );
    let depth = spool.depth();
    gauge(
        out,
        "livegate_spend_spool_records",
        "Spend records spooled and not yet drained into Postgres.",
        depth.records as f64,
    );
    gauge(
        out,
        "livegate_spend_spool_bytes",
        "Size of the spend spool file.",
        depth.file_bytes as f64,
    );
    counter(
        out,
        "livegate_spend_drained_total",
        "Spend records written to Postgres by the drain.",
        c.drained.load(Relaxed),
    );
    counter(
        out,
        "livegate_spend_duplicates_total",
        "Spend records the drain found in Postgres already (a replay or a retry).",
        c.duplicates.load(Relaxed),
    );
    counter(
        out,
        "livegate_spend_unpriced_total",
        "Spend records written whose model has no price (cost 0).",
        c.unpriced.load(Relaxed),
    );
    counter(
        out,
        "livegate_spend_drain_failures_total",
        "Drain attempts that failed (the database away or refusing); retried.",
        c.drain_failures.load(Relaxed),
    );
    counter(
        out,
        "livegate_spend_dead_letters_total",
        "Spooled spend records the database refused (or that could not be read), kept in \
             livegate_spend_dead_letters instead of being retried.",
        c.dead_letters.load(Relaxed),
    );
    counter(
        out,
        "livegate_spend_spool_full_total",
        "Spend batches refused with 503 because the spool was at its bound.",
        c.refused_full.load(Relaxed),
    );
    c.series
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .render(out);
}

impl Metrics {
    pub fn count_request(&self, route: &str, status: u16) {
        let mut m = self.http_requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((route.to_owned(), status)).or_default() += 1;
    }

    /// The Prometheus text exposition of everything, with the supervisor's current snapshot
    /// and the ledger (`None` in tests that run without one).
    pub fn render(
        &self,
        snap: &Snapshot,
        key_cache_entries: usize,
        ledger: Option<&Ledger>,
    ) -> String {
        let mut out = String::with_capacity(4096);
        self.loop_lag.ticks.render(
            &mut out,
            "livegate_loop_lag_seconds",
            "How late the loop-lag probe's ticks fired.",
        );
        gauge(
            &mut out,
            "livegate_loop_lag_max_seconds",
            "Largest loop lag seen since start.",
            self.loop_lag.ticks.max().as_secs_f64(),
        );
        let _ = writeln!(out, "# HELP livegate_db_state 1 for the database state the supervisor is in.\n# TYPE livegate_db_state gauge");
        for s in ["connected", "reconnecting", "disconnected"] {
            let _ = writeln!(
                out,
                "livegate_db_state{{state=\"{s}\"}} {}",
                u8::from(snap.db.as_str() == s)
            );
        }
        counter(
            &mut out,
            "livegate_db_reconnects_total",
            "Reconnects started after a connected engine was lost.",
            snap.reconnects,
        );
        self.db.heartbeat.render(
            &mut out,
            "livegate_db_heartbeat_seconds",
            "Round trip of successful heartbeats.",
        );
        counter(
            &mut out,
            "livegate_db_heartbeat_failures_total",
            "Heartbeats that failed or missed their deadline.",
            self.db.heartbeat_failures.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_engine_spawns_total",
            "Engine subprocesses started.",
            self.db.engine_spawns.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_engine_sigterm_total",
            "SIGTERMs sent to engines.",
            self.db.engine_sigterms.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_engine_sigkill_total",
            "SIGKILLs sent to engines that outlived the grace period.",
            self.db.engine_sigkills.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_key_cache_hits_total",
            "Auth checks answered from a fresh cached key record.",
            self.gate.key_cache_hits.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_key_cache_misses_total",
            "Auth checks that needed the database.",
            self.gate.key_cache_misses.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_key_cache_stale_served_total",
            "Auth checks answered from a stale record while the database was away.",
            self.gate.key_cache_stale_served.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_master_key_failures_total",
            "Admin calls refused because they presented a key that is not the master key.",
            self.master_key_failures.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_internal_token_failures_total",
            "Internal API calls refused for a missing or wrong internal token.",
            self.internal_token_failures.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_soft_budget_exceeded_total",
            "Auth checks that admitted a key whose spend has reached its soft_budget.",
            self.gate.soft_budget_exceeded.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_rate_limit_local_decisions_total",
            "Rate-limit decisions made from this replica's memory because the database did not answer.",
            self.gate.rate_limit_local_decisions.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_rate_limit_leased_admissions_total",
            "Rate-limited keys admitted from this replica's leases of their windows, with no round trip.",
            self.gate.rate_limit_leased_admissions.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_rate_limit_handed_admissions_total",
            "Admissions handed to filter workers as their shares of this replica's leases.",
            self.gate.rate_limit_handed_admissions.load(Relaxed),
        );
        counter(
            &mut out,
            "livegate_rate_limit_shared_decisions_total",
            "Rate-limit decisions that wrote or read the database (or refused from what this replica knew).",
            self.gate.rate_limit_shared_decisions.load(Relaxed),
        );
        gauge(
            &mut out,
            "livegate_key_cache_entries",
            "Key records held in the cache.",
            key_cache_entries as f64,
        );
        if let Some(ledger) = ledger {
            render_ledger(&mut out, ledger);
        }
        self.render_labelled(&mut out);
        out
    }

    fn render_labelled(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP livegate_auth_decisions_total Auth check outcomes.\n# TYPE livegate_auth_decisions_total counter");
        for (k, v) in self.gate.decisions() {
            let _ = writeln!(out, "livegate_auth_decisions_total{{outcome=\"{k}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP livegate_http_requests_total HTTP requests by route and status.\n# TYPE livegate_http_requests_total counter");
        for ((route, status), v) in self
            .http_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "livegate_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {v}"
            );
        }
    }
}
