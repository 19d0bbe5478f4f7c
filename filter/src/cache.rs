//! The decision cache: fresh allows and denies, stale-if-error allows, bounded in size.
//!
//! Time is always a parameter (`now`, milliseconds on any clock that only moves
//! forward in practice); the policy never reads a clock, so tests drive it exactly.

use crate::config::CacheConfig;
use crate::decision::{DenyReason, Identity};
use livegate_contract::KeyHash;
use std::collections::{BTreeMap, HashMap};

/// Milliseconds since an arbitrary epoch, supplied by the caller.
pub type Millis = u64;

/// A decision the cache can hand back while it is fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Allow(Identity),
    Deny(DenyReason),
}

#[derive(Debug)]
struct Entry {
    cached: Cached,
    expires_at: Millis,
    /// Insertion order, for evicting the oldest entry when full.
    seq: u64,
}

/// Per-worker cache of auth decisions, keyed by key hash (never the raw key).
#[derive(Debug)]
pub struct DecisionCache {
    policy: CacheConfig,
    entries: HashMap<KeyHash, Entry>,
    order: BTreeMap<u64, KeyHash>,
    next_seq: u64,
}

impl DecisionCache {
    pub fn new(policy: CacheConfig) -> Self {
        DecisionCache {
            policy,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached decision if it is still fresh; drops entries that can serve nothing more.
    pub fn fresh(&mut self, hash: &KeyHash, now: Millis) -> Option<Cached> {
        let entry = self.entries.get(hash)?;
        if now < entry.expires_at {
            return Some(entry.cached.clone());
        }
        if !self.stale_usable(entry, now) {
            self.remove(hash);
        }
        None
    }

    /// A previously allowed identity whose entry expired less than `stale_if_error_ms` ago.
    /// Only for when the control plane cannot answer; a deny is never returned as an allow.
    pub fn stale_allow(&self, hash: &KeyHash, now: Millis) -> Option<Identity> {
        let entry = self.entries.get(hash)?;
        match &entry.cached {
            Cached::Allow(identity) if self.stale_usable(entry, now) => Some(identity.clone()),
            _ => None,
        }
    }

    /// Remembers an allow for `min(allow_ttl_ms, hint)`, then keeps it for stale use.
    pub fn record_allow(&mut self, hash: KeyHash, identity: Identity, hint_ms: u64, now: Millis) {
        let ttl = hint_ms.min(self.policy.allow_ttl_ms);
        if ttl == 0 && self.policy.stale_if_error_ms == 0 {
            self.remove(&hash);
            return;
        }
        self.insert(hash, Cached::Allow(identity), now.saturating_add(ttl));
    }

    /// Remembers a deny for `deny_ttl_ms`. It always replaces an earlier allow, so a key
    /// the control plane has refused can never come back through the stale window.
    pub fn record_deny(&mut self, hash: KeyHash, reason: DenyReason, now: Millis) {
        let ttl = self.policy.deny_ttl_ms;
        if ttl == 0 {
            self.remove(&hash);
            return;
        }
        self.insert(hash, Cached::Deny(reason), now.saturating_add(ttl));
    }

    fn stale_usable(&self, entry: &Entry, now: Millis) -> bool {
        matches!(entry.cached, Cached::Allow(_))
            && now
                < entry
                    .expires_at
                    .saturating_add(self.policy.stale_if_error_ms)
    }

    fn insert(&mut self, hash: KeyHash, cached: Cached, expires_at: Millis) {
        self.remove(&hash);
        self.evict_to(self.capacity().saturating_sub(1));
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.order.insert(seq, hash.clone());
        self.entries.insert(
            hash,
            Entry {
                cached,
                expires_at,
                seq,
            },
        );
    }

    fn capacity(&self) -> usize {
        usize::try_from(self.policy.max_entries)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    fn evict_to(&mut self, limit: usize) {
        while self.entries.len() > limit {
            let Some((_, oldest)) = self.order.pop_first() else {
                return;
            };
            self.entries.remove(&oldest);
        }
    }

    fn remove(&mut self, hash: &KeyHash) {
        if let Some(entry) = self.entries.remove(hash) {
            self.order.remove(&entry.seq);
        }
    }
}

#[cfg(test)]
mod tests;
