//! The cost this control plane has spooled and not yet drained, per key, user and team: a
//! budget is decided on the drained spend plus this, so spend this replica acknowledged
//! during a database outage counts before Postgres has it.

use std::collections::HashMap;

use crate::model::keys::KeyHash;
use crate::model::LedgerEntry;

/// Undrained cost by key, user and team. Entries leave when the drain has written them.
#[derive(Debug, Default)]
pub struct PendingSpend {
    keys: HashMap<KeyHash, f64>,
    teams: HashMap<String, f64>,
    users: HashMap<String, f64>,
    /// By (team, user): what a user's keys spent in a team.
    members: HashMap<(String, String), f64>,
    /// By key and model (the model as the record names it, trimmed and lowercased): a
    /// key's `model_max_budget`.
    key_models: HashMap<(KeyHash, String), f64>,
}

impl PendingSpend {
    /// An entry the spool took.
    pub fn add(&mut self, entry: &LedgerEntry) {
        self.apply(entry, 1.0);
    }

    /// An entry the drain wrote (inserted, or there already).
    pub fn remove(&mut self, entry: &LedgerEntry) {
        self.apply(entry, -1.0);
    }

    fn apply(&mut self, entry: &LedgerEntry, sign: f64) {
        if entry.cost <= 0.0 || !entry.cost.is_finite() {
            return;
        }
        let delta = sign * entry.cost;
        settle(&mut self.keys, entry.record.key_hash.clone(), delta);
        if let Some(team) = &entry.record.team_id {
            settle(&mut self.teams, team.clone(), delta);
        }
        if let Some(user) = &entry.user_id {
            settle(&mut self.users, user.clone(), delta);
        }
        if let (Some(team), Some(user)) = (&entry.record.team_id, &entry.user_id) {
            settle(&mut self.members, (team.clone(), user.clone()), delta);
        }
        if let Some(model) = &entry.record.model_requested {
            let at = (entry.record.key_hash.clone(), model_key(model));
            settle(&mut self.key_models, at, delta);
        }
    }

    /// The key's user's in the key's team.
    pub fn member(&self, team: Option<&str>, user: Option<&str>) -> f64 {
        match (team, user) {
            (Some(t), Some(u)) => self
                .members
                .get(&(t.to_owned(), u.to_owned()))
                .copied()
                .unwrap_or(0.0),
            _ => 0.0,
        }
    }

    /// The key's undrained cost for `model` (whatever its period: it drains in seconds).
    pub fn key_model(&self, key: &KeyHash, model: &str) -> f64 {
        let at = (key.clone(), model_key(model));
        self.key_models.get(&at).copied().unwrap_or(0.0)
    }

    pub fn user(&self, user: Option<&str>) -> f64 {
        user.and_then(|u| self.users.get(u)).copied().unwrap_or(0.0)
    }

    pub fn key(&self, key: &KeyHash) -> f64 {
        self.keys.get(key).copied().unwrap_or(0.0)
    }

    pub fn team(&self, team: Option<&str>) -> f64 {
        team.and_then(|t| self.teams.get(t)).copied().unwrap_or(0.0)
    }
}

fn model_key(model: &str) -> String {
    model.trim().to_ascii_lowercase()
}

/// Adds `delta`; a total back at (about) zero is forgotten, so the maps hold only what is
/// pending and rounding never leaves a negative cost behind.
fn settle<K: std::hash::Hash + Eq>(map: &mut HashMap<K, f64>, key: K, delta: f64) {
    let total = map.get(&key).copied().unwrap_or(0.0) + delta;
    if total > 1e-12 {
        map.insert(key, total);
    } else {
        map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use livegate_contract::spend::SpendRecord;

    fn entry(key: &str, team: Option<&str>, cost: f64) -> LedgerEntry {
        LedgerEntry {
            record: SpendRecord {
                request_id: format!("{key}-{cost}"),
                key_hash: KeyHash::of_raw(key),
                key_alias: None,
                team_id: team.map(str::to_string),
                model_requested: None,
                model_returned: None,
                deployment: None,
                prompt_tokens: None,
                completion_tokens: None,
                total_tokens: None,
                cached_tokens: None,
                reasoning_tokens: None,
                cache_creation_tokens: None,
                usage_known: true,
                usage_estimate_reason: None,
                status: 200,
                streamed: false,
                start_time_ms: 0,
                end_time_ms: 0,
            },
            cost,
            unpriced: false,
            user_id: Some(format!("user-of-{key}")),
        }
    }

    #[test]
    fn spooled_cost_counts_for_its_key_and_team_until_drained() {
        let mut pending = PendingSpend::default();
        let (a, b) = (entry("a", Some("t"), 1.5), entry("b", Some("t"), 0.25));
        pending.add(&a);
        pending.add(&b);
        assert_eq!(pending.key(&KeyHash::of_raw("a")), 1.5);
        assert_eq!(pending.team(Some("t")), 1.75);
        assert_eq!(pending.team(None), 0.0);
        assert_eq!(pending.user(Some("user-of-a")), 1.5);
        assert_eq!(pending.member(Some("t"), Some("user-of-a")), 1.5);
        assert_eq!(pending.member(None, Some("user-of-a")), 0.0);
        assert_eq!(pending.user(None), 0.0);
        pending.remove(&a);
        assert_eq!(pending.user(Some("user-of-a")), 0.0);
        assert_eq!(pending.key(&KeyHash::of_raw("a")), 0.0);
        assert_eq!(pending.team(Some("t")), 0.25);
        pending.remove(&b);
        assert!(pending.keys.is_empty() && pending.teams.is_empty() && pending.users.is_empty());
        assert!(pending.members.is_empty());
    }

    #[test]
    fn spooled_cost_counts_for_its_key_and_model_whatever_the_models_spelling() {
        let mut pending = PendingSpend::default();
        let mut a = entry("a", None, 1.5);
        a.record.model_requested = Some("GPT-4o".into());
        let mut b = entry("a", None, 0.5);
        b.record.model_requested = Some("gpt-4o-mini".into());
        pending.add(&a);
        pending.add(&b);
        let key = KeyHash::of_raw("a");
        assert_eq!(pending.key_model(&key, " gpt-4o"), 1.5);
        assert_eq!(pending.key_model(&key, "gpt-4o-mini"), 0.5);
        assert_eq!(pending.key_model(&KeyHash::of_raw("b"), "gpt-4o"), 0.0);
        pending.remove(&a);
        assert_eq!(pending.key_model(&key, "gpt-4o"), 0.0);
    }

    #[test]
    fn free_and_malformed_costs_leave_nothing() {
        let mut pending = PendingSpend::default();
        pending.add(&entry("a", Some("t"), 0.0));
        pending.add(&entry("a", Some("t"), f64::NAN));
        assert!(pending.keys.is_empty() && pending.teams.is_empty());
    }
}
