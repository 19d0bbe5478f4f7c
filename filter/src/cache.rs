//! The decision cache: fresh allows and denies, stale-if-error allows, revocations pushed
//! by the change feed, and rate-limit refusals (of requests or tokens) until their window
//! has room. Allows, denies and refusals live in separately bounded pools, so a flood of
//! bad keys cannot evict the allows that would be served through an outage.
//!
//! An allow for a key with rate limits is recorded for outages only: it is never fresh,
//! because the control plane counts every request such a key makes; unless it came with
//! a lease (admissions the control plane already counted for this worker), which it
//! serves until the lease runs out or its term ends.
//!
//! Time is always a parameter (`now`, milliseconds on any clock that only moves
//! forward in practice); the policy never reads a clock, so tests drive it exactly.

use crate::config::CacheConfig;
use crate::decision::{DenyReason, Grant, Identity};
use crate::time::Millis;
use livegate_contract::bounded::Bounded;
use livegate_contract::rate_limit::WINDOW_MS;
use livegate_contract::{KeyChange, KeyHash, KeyStatus, LimitKind, RateLimited};

/// A decision the cache can hand back while it is fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Allow(Identity),
    /// A rate-limited key admitted from the lease its last allow brought.
    Leased(Identity),
    Deny(DenyReason),
    /// The control plane's 429, until its window has room.
    RateLimited(RateLimited),
}

#[derive(Debug)]
struct AllowEntry {
    identity: Identity,
    fresh_until: Millis,
    key_expires_at: Option<Millis>,
    version: u64,
    lease: Option<HeldLease>,
}

/// What is left of a lease, and when it ends on this worker's clock.
#[derive(Debug)]
struct HeldLease {
    admissions: u64,
    until: Millis,
}

#[derive(Debug)]
struct DenyEntry {
    reason: DenyReason,
    until: Millis,
    version: u64,
}

#[derive(Debug)]
struct LimitedEntry {
    limited: RateLimited,
    until: Millis,
}

/// Per-worker cache of auth decisions, keyed by key hash (never the raw key).
#[derive(Debug)]
pub struct DecisionCache {
    policy: CacheConfig,
    allows: Bounded<KeyHash, AllowEntry>,
    denies: Bounded<KeyHash, DenyEntry>,
    /// Rate-limit refusals: apart from the denies because the key is still valid (its
    /// allow stays usable through an outage) and apart from the allows so that a flood of
    /// refusals cannot evict them.
    limited: Bounded<KeyHash, LimitedEntry>,
    /// The newest change the feed brought for each key (its number): an allow the control
    /// plane made before it (a check answered just before a budget crossing, arriving
    /// after the crossing's change) must not be kept, or it would outlive the change.
    changed: Bounded<KeyHash, u64>,
}

impl DecisionCache {
    pub fn new(policy: CacheConfig) -> Self {
        let capacity = usize::try_from(policy.max_entries).unwrap_or(usize::MAX);
        DecisionCache {
            policy,
            allows: Bounded::new(capacity),
            denies: Bounded::new(capacity),
            limited: Bounded::new(capacity),
            changed: Bounded::new(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.allows.len() + self.denies.len() + self.limited.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached decision if it is still fresh; drops entries that can serve nothing more.
    pub fn fresh(&mut self, hash: &KeyHash, now: Millis) -> Option<Cached> {
        if let Some(deny) = self.denies.get(hash) {
            if now < deny.until {
                return Some(Cached::Deny(deny.reason));
            }
            self.denies.remove(hash);
        }
        if let Some(entry) = self.limited.get(hash) {
            if now < entry.until {
                return Some(Cached::RateLimited(entry.limited.clone()));
            }
            self.limited.remove(hash);
        }
        let allow = self.allows.get_mut(hash)?;
        if now < allow.fresh_until && !past(allow.key_expires_at, now) {
            return Some(Cached::Allow(allow.identity.clone()));
        }
        if let Some(lease) = allow.lease.as_mut() {
            if now < lease.until && lease.admissions > 0 && !past(allow.key_expires_at, now) {
                lease.admissions -= 1;
                return Some(Cached::Leased(allow.identity.clone()));
            }
            allow.lease = None;
        }
        let allow = self.allows.get(hash)?;
        if !self.stale_usable(allow, now) {
            self.allows.remove(hash);
        }
        None
    }

    /// A previously allowed identity whose entry expired less than `stale_if_error_ms` ago
    /// and whose key has not expired. Only for when the control plane cannot answer.
    pub fn stale_allow(&self, hash: &KeyHash, now: Millis) -> Option<Identity> {
        let allow = self.allows.get(hash)?;
        self.stale_usable(allow, now)
            .then(|| allow.identity.clone())
    }

    /// Remembers an allow for `min(allow_ttl_ms, hint)`, then keeps it for stale use; an
    /// allow for a key with rate limits is never fresh, only kept for stale use.
    /// Returns the deny that wins instead, if a newer revocation of this key is known.
    pub fn record_allow(
        &mut self,
        hash: KeyHash,
        identity: Identity,
        grant: Grant,
        now: Millis,
    ) -> Option<DenyReason> {
        if let Some(deny) = self.denies.get(&hash) {
            if deny.version > grant.version && now < deny.until {
                return Some(deny.reason);
            }
        }
        self.denies.remove(&hash);
        if self
            .changed
            .get(&hash)
            .is_some_and(|seq| *seq > grant.version)
        {
            // Made before a change this worker has applied: the request it answers goes
            // on (it was in flight), but the allow is not kept, fresh or stale.
            self.allows.remove(&hash);
            return None;
        }
        let ttl = if identity.limits.is_none() {
            grant.ttl_hint_ms.min(self.policy.allow_ttl_ms)
        } else {
            0
        };
        if ttl == 0 && self.policy.stale_if_error_ms == 0 && grant.lease.is_none() {
            self.allows.remove(&hash);
            return None;
        }
        let lease = grant
            .lease
            .filter(|_| leasable(&identity.limits))
            .map(|l| HeldLease {
                admissions: l.admissions,
                until: now.saturating_add(l.valid_for_ms),
            });
        let entry = AllowEntry {
            identity,
            fresh_until: now.saturating_add(ttl),
            key_expires_at: grant.expires_at,
            version: grant.version,
            lease,
        };
        self.allows.insert(hash, entry);
        None
    }

    /// Remembers a deny for `deny_ttl_ms`. It always replaces an earlier allow, so a key
    /// the control plane has refused can never come back through the stale window.
    pub fn record_deny(&mut self, hash: KeyHash, reason: DenyReason, now: Millis) {
        self.deny_for(hash, reason, self.policy.deny_ttl_ms, 0, now);
    }

    /// Remembers the control plane's 429 until its window has room, so further requests of
    /// the key are refused here. Never longer than one window from now, whatever the
    /// control plane's clock says: a sliding window always has room within one.
    ///
    /// A parallel 429 is not kept: a slot frees whenever one of the key's requests ends,
    /// anywhere in the fleet, and its `reset_at_ms` is only a guess (now + 1 s), so the
    /// next request asks again.
    pub fn record_rate_limited(&mut self, hash: KeyHash, limited: RateLimited, now: Millis) {
        if limited.kind == LimitKind::Parallel {
            return;
        }
        let until = limited.reset_at_ms.min(now.saturating_add(WINDOW_MS));
        if until <= now {
            self.limited.remove(&hash);
            return;
        }
        self.limited.insert(hash, LimitedEntry { limited, until });
    }

    /// Applies a change from the feed: a revocation replaces any allow with a deny kept as
    /// long as the stale window (so it holds through a control-plane outage); any other
    /// change forgets what is cached, so the next request asks again, unless what is
    /// cached is already as new as the change (an allow for the version it made). Any
    /// change drops a cached 429: the key's limits may have moved. The change's number is
    /// kept: an allow made before it, arriving later, is not cached (`record_allow`).
    pub fn apply_change(&mut self, change: &KeyChange, now: Millis) {
        self.limited.remove(&change.key_hash);
        if self
            .changed
            .get(&change.key_hash)
            .is_none_or(|seq| *seq < change.seq)
        {
            self.changed.insert(change.key_hash.clone(), change.seq);
        }
        let reason = match change.status {
            KeyStatus::Active => {
                if self
                    .allows
                    .get(&change.key_hash)
                    .is_none_or(|allow| allow.version < change.seq)
                {
                    self.allows.remove(&change.key_hash);
                }
                if self
                    .denies
                    .get(&change.key_hash)
                    .is_none_or(|deny| deny.version < change.seq)
                {
                    self.denies.remove(&change.key_hash);
                }
                return;
            }
            KeyStatus::Blocked => DenyReason::KeyBlocked,
            KeyStatus::Deleted => DenyReason::InvalidKey,
            KeyStatus::TeamBlocked => DenyReason::TeamBlocked,
        };
        let ttl = self.policy.deny_ttl_ms.max(self.policy.stale_if_error_ms);
        self.deny_for(change.key_hash.clone(), reason, ttl, change.seq, now);
    }

    /// Forgets every allow, and every cached 429: the change feed could not say what
    /// happened to those keys.
    pub fn forget_allows(&mut self) {
        self.allows.clear();
        self.limited.clear();
    }

    fn deny_for(&mut self, hash: KeyHash, reason: DenyReason, ttl: u64, version: u64, now: Millis) {
        self.allows.remove(&hash);
        self.limited.remove(&hash);
        if ttl == 0 {
            self.denies.remove(&hash);
            return;
        }
        let until = now.saturating_add(ttl);
        self.denies.insert(
            hash,
            DenyEntry {
                reason,
                until,
                version,
            },
        );
    }

    fn stale_usable(&self, allow: &AllowEntry, now: Millis) -> bool {
        !past(allow.key_expires_at, now)
            && now
                < allow
                    .fresh_until
                    .saturating_add(self.policy.stale_if_error_ms)
    }
}

/// Only `rpm_limit`s can be served from a lease: a token or parallel limit needs the
/// control plane on every request (the control plane sends none then; this holds to it).
fn leasable(limits: &livegate_contract::RateLimits) -> bool {
    limits.rpm_limit.is_some()
        && limits.tpm_limit.is_none()
        && limits.max_parallel_requests.is_none()
}

fn past(deadline: Option<Millis>, now: Millis) -> bool {
    deadline.is_some_and(|d| now >= d)
}

#[cfg(test)]
mod tests;
