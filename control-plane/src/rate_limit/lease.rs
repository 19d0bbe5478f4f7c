//! Leased admissions: a request window's admissions reserved a lease at a time (one
//! compare and swap), served from memory for the lease's term, and a share of them handed
//! to the filter that asked (docs/architecture.md, "Rate limits").

use livegate_contract::rate_limit::FILTER_LEASE_MARGIN_MS;
use livegate_contract::{AdmissionLease, LimitKind, RateLimited};

use super::{decide_locally, scopes, Limiter, Patience, Scope, ScopeWindow, Source};
use crate::model::KeyRecord;

/// The most admissions one filter worker is handed at a time.
pub const MAX_FILTER_LEASE: u64 = 256;

impl Limiter {
    /// Admits one request from this replica's lease of the window, or takes a new lease
    /// (one write reserving this request and the next few, sized by `lease_size`), or
    /// decides from what it knows if the database does not answer.
    pub(super) async fn admit_leased(
        &self,
        scope: &Scope,
        now: u64,
        patience: &mut Patience,
    ) -> (Result<(), RateLimited>, Source) {
        let window = self.window(&scope.name, scope.span_ms());
        let mut w = window.lock().await;
        if w.take_leased(now) {
            return (Ok(()), Source::Leased);
        }
        w.end_lease(now, false);
        let plan = |w: &ScopeWindow| w.plan_lease(now, scope.limit, self.max_lease);
        match self.swap_planned(scope, &mut w, now, patience, plan).await {
            Ok(granted) => {
                w.start_lease(now, granted);
                (Ok(()), Source::Shared)
            }
            Err(Some(room)) => (Err(scope.refusal(room)), Source::Shared),
            Err(None) => {
                // The last write's fate is unknown: its returns may have landed.
                w.forget_returns();
                decide_locally(scope, &mut w, scope.limit, now)
            }
        }
    }

    /// Hands the filter that asked a share of this replica's leases of the key's request
    /// windows (half of what every one has left, at most [`MAX_FILTER_LEASE`]), ending
    /// [`FILTER_LEASE_MARGIN_MS`] before the soonest of them, if the key has no other limit:
    /// tokens and requests in flight need the control plane on every request.
    pub async fn hand_off(&self, record: &KeyRecord, now: u64) -> Option<AdmissionLease> {
        let others = [LimitKind::Tokens, LimitKind::Parallel];
        if others.iter().any(|kind| !scopes(record, *kind).is_empty()) {
            return None;
        }
        let windows: Vec<_> = scopes(record, LimitKind::Requests)
            .iter()
            .map(|scope| self.window(&scope.name, scope.span_ms()))
            .collect();
        // Always in the order of `scopes`, and nothing else holds two: no deadlock.
        let mut held = Vec::with_capacity(windows.len());
        for window in &windows {
            held.push(window.lock().await);
        }
        let (mut admissions, mut until) = (MAX_FILTER_LEASE, u64::MAX);
        for w in &held {
            let (left, ends) = w.spare_lease(now)?;
            admissions = admissions.min(left.div_ceil(2));
            until = until.min(ends);
        }
        let valid_for_ms = until.checked_sub(now.saturating_add(FILTER_LEASE_MARGIN_MS))?;
        if held.is_empty() || valid_for_ms == 0 {
            return None;
        }
        for w in &mut held {
            w.give_away(admissions);
        }
        Some(AdmissionLease {
            admissions,
            valid_for_ms,
        })
    }
}
