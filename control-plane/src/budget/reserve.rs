//! Reservations for requests in flight: a budget is checked at admission, so without them
//! N parallel requests of a key near its budget would all be admitted before the first
//! one's cost is known, and overspend it by N answers. Each admitted request of a key (or
//! team) with a budget reserves `per_request` USD, counted as spend in the budget check,
//! until its spend record arrives or its lease ends (a lost record frees it).
//!
//! Per control plane: a replica sees the reservations it made. Pure: time is a parameter.

use std::collections::{HashMap, VecDeque};

use crate::model::keys::KeyHash;
use crate::model::KeyRecord;

/// Within this many reservations of its budget, a key's allow is not cached by the filter
/// (every request asks, and reserves); farther away it is cached as before.
pub const NEAR_BUDGET_RESERVATIONS: f64 = 100.0;

/// The reservations of one control plane, by key and by team: each an expiry (ms).
#[derive(Debug, Default)]
pub struct Reservations {
    per_request: f64,
    lease_ms: u64,
    keys: HashMap<KeyHash, VecDeque<u64>>,
    teams: HashMap<String, VecDeque<u64>>,
    /// By key and model (trimmed, lowercased): a key's `model_max_budget`.
    key_models: HashMap<(KeyHash, String), VecDeque<u64>>,
}

/// What one admission reserved, to release if a later check refuses the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub key: KeyHash,
    pub team: Option<String>,
}

impl Reservations {
    /// `per_request` 0 turns reservations off.
    pub fn new(per_request: f64, lease_ms: u64) -> Reservations {
        Reservations {
            per_request: if per_request.is_finite() {
                per_request.max(0.0)
            } else {
                0.0
            },
            lease_ms,
            ..Reservations::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_request > 0.0
    }

    /// The USD reserved for the key's and its team's requests in flight at `now_ms`.
    pub fn reserved(&mut self, record: &KeyRecord, now_ms: u64) -> (f64, f64) {
        let key = live(&mut self.keys, &record.token, now_ms);
        let team = match &record.team_id {
            Some(t) => live(&mut self.teams, t, now_ms),
            None => 0,
        };
        (
            key as f64 * self.per_request,
            team as f64 * self.per_request,
        )
    }

    /// Reserves for one request of the key, if it (or its team) has a budget.
    pub fn reserve(&mut self, record: &KeyRecord, now_ms: u64) -> Option<Held> {
        if !self.enabled() || !record.budgeted() {
            return None;
        }
        let until = now_ms.saturating_add(self.lease_ms);
        self.keys
            .entry(record.token.clone())
            .or_default()
            .push_back(until);
        if let Some(team) = &record.team_id {
            self.teams.entry(team.clone()).or_default().push_back(until);
        }
        Some(Held {
            key: record.token.clone(),
            team: record.team_id.clone(),
        })
    }

    /// Frees one reservation of the key and its team (the oldest): a request ended (its
    /// record arrived) or was refused after it reserved. Nothing held: nothing changes.
    pub fn release(&mut self, key: &KeyHash, team: Option<&str>) {
        pop(&mut self.keys, key);
        if let Some(team) = team {
            pop(&mut self.teams, team);
        }
    }

    /// The USD reserved for the key's requests for `model` in flight at `now_ms`.
    pub fn reserved_model(&mut self, key: &KeyHash, model: &str, now_ms: u64) -> f64 {
        let at = (key.clone(), model_key(model));
        live(&mut self.key_models, &at, now_ms) as f64 * self.per_request
    }

    /// Reserves for one request of the key for `model` (it has a `model_max_budget`).
    pub fn reserve_model(&mut self, key: &KeyHash, model: &str, now_ms: u64) {
        if self.enabled() {
            let until = now_ms.saturating_add(self.lease_ms);
            let at = (key.clone(), model_key(model));
            self.key_models.entry(at).or_default().push_back(until);
        }
    }

    /// Frees one reservation of the key for `model` (the oldest), as [`Self::release`].
    pub fn release_model(&mut self, key: &KeyHash, model: &str) {
        pop(&mut self.key_models, &(key.clone(), model_key(model)));
    }

    /// Whether the key is near its budget (or its team's, its user's, or its user's in its
    /// team): fewer than [`NEAR_BUDGET_RESERVATIONS`] reservations left, counting `spent`
    /// (drained, pending and reserved) for the key and the team, and drained and pending
    /// for the user and the membership (their requests in flight are not reserved: the
    /// keys' are).
    pub fn near_budget(
        &self,
        record: &KeyRecord,
        spent_key: f64,
        spent_team: f64,
        spent_user: f64,
        spent_member: f64,
    ) -> bool {
        let margin = self.per_request * NEAR_BUDGET_RESERVATIONS;
        let near = |max: Option<f64>, spent: f64| max.is_some_and(|m| m - spent < margin);
        self.enabled()
            && (near(record.budget.max_budget, spent_key)
                || near(record.team.max_budget, spent_team)
                || near(record.user.max_budget, spent_user)
                || near(record.member.max_budget, spent_member))
    }
}

fn model_key(model: &str) -> String {
    model.trim().to_ascii_lowercase()
}

/// The reservations of `id` still live at `now_ms` (expired ones are dropped).
fn live<K, Q>(map: &mut HashMap<K, VecDeque<u64>>, id: &Q, now_ms: u64) -> usize
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    let Some(q) = map.get_mut(id) else {
        return 0;
    };
    // Expiries are pushed in increasing order (one lease, a clock that moves forward).
    while q.front().is_some_and(|until| *until <= now_ms) {
        q.pop_front();
    }
    let n = q.len();
    if n == 0 {
        map.remove(id);
    }
    n
}

fn pop<K, Q>(map: &mut HashMap<K, VecDeque<u64>>, id: &Q)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(q) = map.get_mut(id) {
        q.pop_front();
        if q.is_empty() {
            map.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_cache::tests::record;

    fn budgeted(max: f64) -> KeyRecord {
        let mut r = record("sk-a");
        r.budget.max_budget = Some(max);
        r.team_id = Some("t".into());
        r
    }

    #[test]
    fn a_keys_requests_for_a_model_reserve_by_model_until_released_or_expired() {
        let mut r = Reservations::new(0.5, 1_000);
        let key = KeyHash::of_raw("sk-a");
        r.reserve_model(&key, "gpt-4o", 0);
        r.reserve_model(&key, "GPT-4o ", 10);
        assert_eq!(r.reserved_model(&key, "gpt-4o", 20), 1.0);
        assert_eq!(r.reserved_model(&key, "gpt-4o-mini", 20), 0.0);
        r.release_model(&key, " Gpt-4o");
        assert_eq!(r.reserved_model(&key, "gpt-4o", 20), 0.5);
        assert_eq!(
            r.reserved_model(&key, "gpt-4o", 1_010),
            0.0,
            "its lease ended"
        );
        let mut off = Reservations::new(0.0, 1_000);
        off.reserve_model(&key, "gpt-4o", 0);
        assert_eq!(off.reserved_model(&key, "gpt-4o", 1), 0.0);
    }

    #[test]
    fn each_request_in_flight_of_a_budgeted_key_reserves_until_released() {
        let mut r = Reservations::new(0.25, 1_000);
        let key = budgeted(1.0);
        assert_eq!(r.reserved(&key, 0), (0.0, 0.0));
        let held = r.reserve(&key, 0).unwrap();
        r.reserve(&key, 10).unwrap();
        assert_eq!(r.reserved(&key, 20), (0.5, 0.5));
        r.release(&held.key, held.team.as_deref());
        assert_eq!(r.reserved(&key, 20), (0.25, 0.25));
        r.release(&held.key, held.team.as_deref());
        r.release(&held.key, held.team.as_deref()); // nothing held: nothing changes
        assert_eq!(r.reserved(&key, 20), (0.0, 0.0));
        assert!(r.keys.is_empty() && r.teams.is_empty());
    }

    #[test]
    fn a_lost_record_frees_its_reservation_at_the_lease_end() {
        let mut r = Reservations::new(0.25, 1_000);
        let key = budgeted(1.0);
        r.reserve(&key, 0);
        r.reserve(&key, 500);
        assert_eq!(r.reserved(&key, 999).0, 0.5);
        assert_eq!(r.reserved(&key, 1_000).0, 0.25);
        assert_eq!(r.reserved(&key, 1_500).0, 0.0);
    }

    #[test]
    fn keys_without_a_budget_and_a_zero_reservation_reserve_nothing() {
        let mut off = Reservations::new(0.0, 1_000);
        assert_eq!(off.reserve(&budgeted(1.0), 0), None);
        let mut on = Reservations::new(0.25, 1_000);
        assert_eq!(on.reserve(&record("sk-free"), 0), None);
        assert_eq!(Reservations::new(f64::NAN, 1).per_request, 0.0);
    }

    #[test]
    fn near_its_budget_a_key_is_within_a_hundred_reservations() {
        let r = Reservations::new(0.01, 1_000);
        let key = budgeted(10.0);
        assert!(!r.near_budget(&key, 8.9, 0.0, 0.0, 0.0));
        assert!(r.near_budget(&key, 9.1, 0.0, 0.0, 0.0));
        assert!(!Reservations::new(0.0, 1).near_budget(&key, 9.99, 0.0, 0.0, 0.0));
        let mut member = record("sk-m");
        member.member.max_budget = Some(10.0);
        assert!(r.near_budget(&member, 0.0, 0.0, 0.0, 9.5));
        assert!(!r.near_budget(&member, 0.0, 0.0, 0.0, 5.0));
    }
}
