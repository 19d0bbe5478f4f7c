//! Rate limits at the control plane: each limited key's and team's sliding window, shared
//! with the other control planes through one Postgres row per window.
//!
//! A window row is written by compare and swap; the arithmetic is the contract's
//! [`WindowLog`], so every control plane and the filter count alike. What this replica
//! knows of a window (the row as it last saw it, and what it counted since) is a lower
//! bound of the truth: a refusal from it needs no round trip. An admission needs one, so
//! two control planes never admit the same slot while the database answers. Without the
//! database a replica admits from what it knows and writes it when the database is back
//! (docs/operations.md, "Rate limits").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use livegate_contract::{LimitKind, RateLimited, WindowLog};

use crate::db::{Db, WindowSwap};
use crate::model::KeyRecord;

mod lease;
mod window;
pub use lease::MAX_FILTER_LEASE;
pub use window::{model_scopes, scopes, Scope, ScopeWindow, MAX_LEASE};

#[cfg(test)]
mod tests;

/// Compare-and-swap attempts before a replica decides from what it knows: each failed one
/// means another replica wrote the row meanwhile, which only happens while it admits.
const MAX_SWAPS: usize = 8;

/// How old this replica's copy of a token window may be when it decides a `tpm_limit`:
/// tokens another replica charged are seen within this (plus its own flush interval).
pub const TOKEN_REFRESH_MS: u64 = 250;

/// How often counts made without a round trip (tokens, outage admissions) are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// How a decision was reached, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Written to or read from the database.
    Shared,
    /// Refused from what this replica knew, with no round trip.
    Known,
    /// The database did not answer: decided from what this replica knew.
    Local,
    /// Served from a lease this replica holds in the row: no round trip, and exact.
    Leased,
}

/// Every window this replica has touched.
#[derive(Clone)]
pub struct Limiter {
    db: Db,
    deadline: Duration,
    /// The most admissions one lease reserves (1: none beyond the request's own).
    max_lease: u64,
    windows: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<ScopeWindow>>>>>,
}

impl Limiter {
    pub fn new(db: Db, deadline: Duration) -> Limiter {
        Limiter {
            db,
            deadline,
            max_lease: MAX_LEASE,
            windows: Arc::default(),
        }
    }

    /// Leases of at most `max_lease` admissions (at least 1: then every admission is its
    /// own write and no filter gets a share).
    pub fn with_max_lease(self, max_lease: u64) -> Limiter {
        Limiter {
            max_lease: max_lease.max(1),
            ..self
        }
    }

    fn window(&self, name: &str, span_ms: u64) -> Arc<tokio::sync::Mutex<ScopeWindow>> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let window = windows.entry(name.to_owned());
        window
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(ScopeWindow::spanning(span_ms))))
            .clone()
    }

    /// Admits one request in every request window of the key (and its team), or the first
    /// refusal, asking the database until `until` at the latest. A window already counted
    /// stays counted if a later one refuses.
    pub async fn admit(
        &self,
        record: &KeyRecord,
        now: u64,
        until: tokio::time::Instant,
    ) -> (Result<(), RateLimited>, Source) {
        let windows = [
            scopes(record, LimitKind::Requests),
            scopes(record, LimitKind::Tokens),
            scopes(record, LimitKind::Parallel),
        ];
        self.admit_in(windows, now, until).await
    }

    /// Admits one request of the key for `model` (the model it resolved to) in the windows
    /// of its per-model limits only (`model_rpm_limit`, `model_tpm_limit`), exactly as
    /// [`Limiter::admit`] does in the key's own.
    pub async fn admit_model(
        &self,
        record: &KeyRecord,
        model: &str,
        now: u64,
        until: tokio::time::Instant,
    ) -> (Result<(), RateLimited>, Source) {
        let windows = [
            model_scopes(record, model, LimitKind::Requests),
            model_scopes(record, model, LimitKind::Tokens),
            vec![],
        ];
        self.admit_in(windows, now, until).await
    }

    /// Requests, tokens and parallel windows, in that order: refusals from what is known
    /// first (no round trip), then the token windows, then each admission.
    async fn admit_in(
        &self,
        [requests, tokens, parallel]: [Vec<Scope>; 3],
        now: u64,
        until: tokio::time::Instant,
    ) -> (Result<(), RateLimited>, Source) {
        let mut patience = Patience {
            until,
            gave_up: false,
        };
        let mut source = Source::Leased;
        for scope in &requests {
            let window = self.window(&scope.name, scope.span_ms());
            let w = window.lock().await;
            // A full row may be full of this replica's own lease: that is room for it.
            if w.has_leased(now) {
                continue;
            }
            let known = w.known(now).room_at(now, scope.limit);
            if known > now {
                return (Err(scope.refusal(known)), Source::Known);
            }
        }
        for scope in tokens {
            let (verdict, from) = self.check_tokens(&scope, now, &mut patience).await;
            source = worse(source, from);
            if let Err(e) = verdict {
                return (Err(e), source);
            }
        }
        for scope in &requests {
            let (verdict, from) = self.admit_leased(scope, now, &mut patience).await;
            source = worse(source, from);
            if let Err(e) = verdict {
                return (Err(e), source);
            }
        }
        for scope in parallel {
            let (verdict, from) = self.start_one(&scope, now, &mut patience).await;
            source = worse(source, from);
            if let Err(e) = verdict {
                return (Err(e), source);
            }
        }
        (Ok(()), source)
    }

    /// A parallel limit: the request is counted in the window of starts if the starts the
    /// lease window holds, less the ends known, leave room. The ends known are never more
    /// than the truth, so the estimate of what is in flight never falls short of it.
    async fn start_one(
        &self,
        scope: &Scope,
        now: u64,
        patience: &mut Patience,
    ) -> (Result<(), RateLimited>, Source) {
        let finished = self.window(&scope.finished_name(), scope.span_ms());
        let mut done = finished.lock().await;
        if done.is_stale(now, TOKEN_REFRESH_MS) {
            self.sync(&mut done, &scope.finished_name(), now, patience)
                .await;
        }
        let ended = done.known(now).total(now);
        drop(done);
        let (verdict, source) = self.admit_one(scope, now, ended, patience).await;
        // Which slot frees first is not known: ask again in a second.
        (verdict.map_err(|_| scope.refusal(now + 1000)), source)
    }

    /// Counts one request in the scope's window if it holds less than its limit (plus
    /// `released`: entries that no longer hold a place, the ends of parallel requests).
    async fn admit_one(
        &self,
        scope: &Scope,
        now: u64,
        released: u64,
        patience: &mut Patience,
    ) -> (Result<(), RateLimited>, Source) {
        let limit = scope.limit.saturating_add(released);
        let window = self.window(&scope.name, scope.span_ms());
        let mut w = window.lock().await;
        let plan = |w: &ScopeWindow| w.plan_admit(now, limit).map(|planned| (planned, ()));
        match self.swap_planned(scope, &mut w, now, patience, plan).await {
            Ok(()) => (Ok(()), Source::Shared),
            Err(Some(room)) => (Err(scope.refusal(room)), Source::Shared),
            Err(None) => decide_locally(scope, &mut w, limit, now),
        }
    }

    /// Writes what `plan` makes of the window, reading the row again after each lost swap:
    /// what the plan carried once the row took it, `Err(Some(room))` if the window refuses,
    /// `Err(None)` if the database does not answer (or the swaps never win).
    async fn swap_planned<T>(
        &self,
        scope: &Scope,
        w: &mut ScopeWindow,
        now: u64,
        patience: &mut Patience,
        plan: impl Fn(&ScopeWindow) -> Result<(WindowLog, T), u64>,
    ) -> Result<T, Option<u64>> {
        for _ in 0..MAX_SWAPS {
            let (planned, carried) = plan(w).map_err(Some)?;
            match self
                .swap(&scope.name, w.version, planned.clone(), patience)
                .await
            {
                Ok(WindowSwap::Swapped { version }) => {
                    w.swapped(planned, version, now);
                    return Ok(carried);
                }
                Ok(WindowSwap::Current { window, version }) => w.current(window, version, now),
                Err(()) => break,
            }
        }
        Err(None)
    }

    async fn check_tokens(
        &self,
        scope: &Scope,
        now: u64,
        patience: &mut Patience,
    ) -> (Result<(), RateLimited>, Source) {
        let window = self.window(&scope.name, scope.span_ms());
        let mut w = window.lock().await;
        let mut source = Source::Known;
        if w.is_stale(now, TOKEN_REFRESH_MS) {
            source = if self.sync(&mut w, &scope.name, now, patience).await {
                Source::Shared
            } else {
                Source::Local
            };
        }
        let room = w.known(now).room_at(now, scope.limit);
        let verdict = if room > now {
            Err(scope.refusal(room))
        } else {
            Ok(())
        };
        (verdict, source)
    }

    /// Charges a response's tokens to the key's (and its team's) token windows, and to
    /// those of the per-model limits of `model` (the model the request resolved to).
    pub async fn charge_tokens(
        &self,
        record: &KeyRecord,
        model: Option<&str>,
        tokens: u64,
        at: u64,
        now: u64,
    ) {
        let per_model = model.map_or_else(Vec::new, |m| model_scopes(record, m, LimitKind::Tokens));
        for scope in scopes(record, LimitKind::Tokens)
            .into_iter()
            .chain(per_model)
        {
            let window = self.window(&scope.name, scope.span_ms());
            window.lock().await.count(at, tokens, now);
        }
    }

    /// Records the end of a request that started at `started_at` in the key's (and its
    /// team's) parallel windows, freeing its slot.
    pub async fn finish(&self, record: &KeyRecord, started_at: u64, now: u64) {
        for scope in scopes(record, LimitKind::Parallel) {
            let window = self.window(&scope.finished_name(), scope.span_ms());
            window.lock().await.count(started_at, 1, now);
        }
    }

    /// Writes every window with something pending, and forgets idle ones; returns how many
    /// windows could not be written.
    pub async fn flush(&self, now: u64) -> usize {
        self.flush_ending_leases(now, false).await
    }

    /// Gives back every lease's unused rest and writes it (at shutdown, so the other
    /// replicas have the room at once rather than after the leases' terms).
    pub async fn release_leases(&self, now: u64) -> usize {
        self.flush_ending_leases(now, true).await
    }

    async fn flush_ending_leases(&self, now: u64, end_all: bool) -> usize {
        let all: Vec<(String, Arc<tokio::sync::Mutex<ScopeWindow>>)> = {
            let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            windows
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let mut failed = 0;
        let mut idle = vec![];
        for (name, window) in all {
            let mut w = window.lock().await;
            w.end_lease(now, end_all);
            let mut patience = Patience::within(self.deadline);
            if w.has_pending() && !self.sync(&mut w, &name, now, &mut patience).await {
                failed += 1;
            } else if w.is_idle(now) {
                idle.push(name);
            }
        }
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        for name in idle {
            // Only if no request holds it now: a held one is in use again.
            if windows
                .get(&name)
                .is_some_and(|w| Arc::strong_count(w) == 1)
            {
                windows.remove(&name);
            }
        }
        failed
    }

    /// Writes what is pending and reads what others wrote; false if the database is away.
    async fn sync(
        &self,
        w: &mut ScopeWindow,
        name: &str,
        now: u64,
        patience: &mut Patience,
    ) -> bool {
        for _ in 0..MAX_SWAPS {
            let planned = w.known(now);
            match self.swap(name, w.version, planned.clone(), patience).await {
                Ok(WindowSwap::Swapped { version }) => {
                    w.swapped(planned, version, now);
                    return true;
                }
                Ok(WindowSwap::Current { window, version }) => w.current(window, version, now),
                Err(()) => {
                    w.forget_returns();
                    return false;
                }
            }
        }
        false
    }

    /// One compare and swap within what is left of the request's patience; after one
    /// failure the request asks no more (the database is away for all its windows).
    async fn swap(
        &self,
        name: &str,
        expected: i64,
        window: WindowLog,
        patience: &mut Patience,
    ) -> Result<WindowSwap, ()> {
        let Some(left) = patience.left() else {
            return Err(());
        };
        let swapped = self.db.swap_rate_window(name, expected, window, left).await;
        swapped.map_err(|e| {
            patience.give_up();
            tracing::debug!(error = %e, "rate window not written");
        })
    }

    /// Windows held in memory (a gauge).
    pub fn windows(&self) -> usize {
        self.windows.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// How long one auth check may wait on the database for all its windows together: the
/// filter gives up on the whole check soon after.
pub struct Patience {
    until: tokio::time::Instant,
    gave_up: bool,
}

impl Patience {
    fn within(deadline: Duration) -> Patience {
        Patience {
            until: tokio::time::Instant::now() + deadline,
            gave_up: false,
        }
    }

    fn left(&self) -> Option<Duration> {
        let left = self
            .until
            .saturating_duration_since(tokio::time::Instant::now());
        (!self.gave_up && !left.is_zero()).then_some(left)
    }

    fn give_up(&mut self) {
        self.gave_up = true;
    }
}

/// No answer from the database (or endless contention): one request decided from what this
/// replica knows, and counted to be written later.
fn decide_locally(
    scope: &Scope,
    w: &mut ScopeWindow,
    limit: u64,
    now: u64,
) -> (Result<(), RateLimited>, Source) {
    let verdict = match w.plan_admit(now, limit) {
        Ok(_) => {
            w.count(now, 1, now);
            Ok(())
        }
        Err(room) => Err(scope.refusal(room)),
    };
    (verdict, Source::Local)
}

fn worse(a: Source, b: Source) -> Source {
    match (a, b) {
        (Source::Local, _) | (_, Source::Local) => Source::Local,
        (Source::Shared, _) | (_, Source::Shared) => Source::Shared,
        (Source::Known, _) | (_, Source::Known) => Source::Known,
        _ => Source::Leased,
    }
}

/// Flushes pending counts every `interval` until `stop`.
pub async fn run_flusher(
    limiter: Limiter,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                limiter.release_leases(crate::rate_limit::now_ms()).await;
                return;
            }
            _ = tick.tick() => {
                limiter.flush(crate::rate_limit::now_ms()).await;
            }
        }
    }
}

/// The wall clock in Unix milliseconds: windows are shared between replicas, so they count
/// in the time they share.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
