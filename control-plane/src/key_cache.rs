//! The control plane's cache of key states. Every state carries the version of the write
//! that made it, so no older read can overwrite a newer write (a block, a delete); deleted
//! keys leave a tombstone; unknown keys are remembered briefly in a pool of their own, so
//! a flood of random keys neither reaches Postgres each time nor evicts known keys.
//!
//! A state older than `fresh` lets a key in only while this replica knows it is current:
//! it was read, or the change log was last read in full, within `max_silence`, so a
//! revocation written through a peer since would be here. A replica cut off from Postgres for longer stops letting keys in from its
//! records (the auth check answers 503), before the filters forget the revocations they
//! hold (`max_silence` < the filter's hold, checked at start: docs/architecture.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use livegate_contract::bounded::Bounded;

use crate::model::keys::KeyHash;
use crate::model::KeyRecord;

mod config;
pub use config::CacheConfig;

/// How long "no such key" is believed without asking the database again. Short: a key
/// generated through a peer reaches this cache through the change log within a second.
pub const UNKNOWN_TTL: Duration = Duration::from_secs(5);

/// What a key is, as of some version.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyState {
    Present(Box<KeyRecord>),
    /// Deleted: refused as an invalid key, during an outage too.
    Deleted,
}

impl KeyState {
    pub fn into_record(self) -> Option<KeyRecord> {
        match self {
            KeyState::Present(r) => Some(*r),
            KeyState::Deleted => None,
        }
    }
}

/// What the cache knows about a key at a given moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Read or written recently enough to answer without the database.
    Fresh(KeyState),
    /// Older: ask the database, but use this if the database is away. A state that lets
    /// the key in is stale only while the change log vouches for it; past that it is a
    /// `Miss`, whatever its age.
    Stale(KeyState),
    /// The database said recently that no such key exists.
    Unknown,
    /// Never read, or past the staleness bound.
    Miss,
}

#[derive(Debug)]
struct Known {
    entry: Entry,
    at: Instant,
}

/// A key's state as of a version, and where it came from.
#[derive(Debug)]
struct Entry {
    state: KeyState,
    version: i64,
    /// Whether the state may answer without the database while young: true for what this
    /// replica read or wrote, false for a peer's write learnt from the change log.
    answers_alone: bool,
}

pub struct KeyCache {
    policy: CacheConfig,
    pools: Mutex<Pools>,
}

struct Pools {
    known: Bounded<KeyHash, Known>,
    unknown: Bounded<KeyHash, Instant>,
    /// When the last read of the change log that succeeded began: every state held is
    /// true as of then. `None` until the first.
    heard: Option<Instant>,
}

impl KeyCache {
    pub fn new(policy: CacheConfig) -> Self {
        KeyCache {
            policy,
            pools: Mutex::new(Pools {
                known: Bounded::new(policy.max_entries),
                unknown: Bounded::new(policy.max_entries),
                heard: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, token: &KeyHash, now: Instant) -> Lookup {
        let mut pools = self.lock();
        if let Some(known) = pools.known.get(token) {
            let age = now.saturating_duration_since(known.at);
            if age < self.policy.fresh && known.entry.answers_alone {
                return Lookup::Fresh(known.entry.state.clone());
            }
            if age < self.policy.staleness {
                // Known as of its own read or of the last complete read of the log, whichever
                // is later: a record read from Postgres needs no log read to vouch for it.
                let confirmed = pools.heard.map_or(known.at, |heard| heard.max(known.at));
                let vouched = now.saturating_duration_since(confirmed) <= self.policy.max_silence;
                if vouched || refuses(&known.entry.state) {
                    return Lookup::Stale(known.entry.state.clone());
                }
                // Kept: the next read of the log vouches for it again.
                return Lookup::Miss;
            }
            pools.known.remove(token);
        }
        match pools.unknown.get(token) {
            Some(at) if now.saturating_duration_since(*at) < UNKNOWN_TTL => Lookup::Unknown,
            Some(_) => {
                pools.unknown.remove(token);
                Lookup::Miss
            }
            None => Lookup::Miss,
        }
    }

    /// Records `state` as of `version`, unless the cache already holds a newer version.
    /// Returns the state that won: callers answer with it, never with an older read.
    ///
    /// Of the same version, the spends kept are the larger of the held and the new: spend
    /// only grows within a version (a reset is a write), and a read whose snapshot began
    /// before a drain this replica has since added to the held state (`add_spend`) lacks
    /// that drain, which is no longer pending either.
    pub fn put(&self, token: &KeyHash, state: KeyState, version: i64, now: Instant) -> KeyState {
        let entry = Entry {
            state,
            version,
            answers_alone: true,
        };
        self.put_unless(token, entry, now, |held| held > version)
    }

    /// Records a state the change log brought (the key's row as written at `seq`), unless
    /// the cache holds that version or a newer one. An entry of the same version is the
    /// same write, held since and kept current: spend drained after the write was added to
    /// it (`add_spend`), which the logged row lacks. The feed reads recent changes again at
    /// every poll, so replacing it would reset the key's spend to what it was at the write
    /// for as long as the change is recent, and let the key past its budget.
    ///
    /// A newer write taken from the log is not fresh: the next auth check reads the key
    /// (and the database's answer is fresh). The row lacks what this replica drained
    /// between the write and this poll, so answering from it alone could admit the key
    /// past its budget; while the database is away it still answers, as a stale state.
    pub fn put_change(&self, token: &KeyHash, state: KeyState, seq: i64, now: Instant) -> KeyState {
        let entry = Entry {
            state,
            version: seq,
            answers_alone: false,
        };
        self.put_unless(token, entry, now, |held| held >= seq)
    }

    /// Records `entry` unless the version held makes `keep_held` true; the state that won.
    fn put_unless(
        &self,
        token: &KeyHash,
        mut entry: Entry,
        now: Instant,
        keep_held: impl Fn(i64) -> bool,
    ) -> KeyState {
        let mut pools = self.lock();
        pools.unknown.remove(token);
        if let Some(known) = pools.known.get(token) {
            if keep_held(known.entry.version) {
                return known.entry.state.clone();
            }
            if known.entry.version == entry.version {
                keep_larger_spends(&mut entry.state, &known.entry.state);
            }
        }
        let state = entry.state.clone();
        pools.known.insert(token.clone(), Known { entry, at: now });
        state
    }

    /// The database found no such key. A state the cache already holds (a key written
    /// through this replica, or learnt from the change log) wins over that read: it is
    /// returned, and nothing is recorded.
    pub fn put_unknown(&self, token: &KeyHash, now: Instant) -> Option<KeyState> {
        let mut pools = self.lock();
        if let Some(known) = pools.known.get(token) {
            return Some(known.entry.state.clone());
        }
        pools.unknown.insert(token.clone(), now);
        None
    }

    /// A read of the change log that began at `at` succeeded: every change committed
    /// before then is in this cache.
    pub fn heard_change_log(&self, at: Instant) {
        let mut pools = self.lock();
        pools.heard = pools.heard.max(Some(at));
    }

    /// How long ago the last complete read of the change log began (`None`: never).
    pub fn change_log_age(&self, now: Instant) -> Option<Duration> {
        self.lock()
            .heard
            .map(|at| now.saturating_duration_since(at))
    }

    pub fn len(&self) -> usize {
        self.lock().known.len()
    }

    /// Adds spend the drain has just written to the records held, so that a budget check
    /// between the drain and the next read of the key does not see it neither spooled nor
    /// spent. (A crossing of a budget is logged as a change as well; a read replaces all.)
    pub fn add_spend(&self, keys: &HashMap<KeyHash, f64>, teams: &HashMap<String, f64>) {
        if keys.is_empty() && teams.is_empty() {
            return;
        }
        let mut pools = self.lock();
        // Every record is looked at: a team's spend is on each of its keys' records, and a
        // rotated key's record is also held under each old secret in its grace (by the
        // key's token, which the record carries), whose budget is the key's.
        for known in pools.known.values_mut() {
            let KeyState::Present(record) = &mut known.entry.state else {
                continue;
            };
            if let Some(cost) = keys.get(&record.token) {
                record.spend += cost;
            }
            if let Some(team) = record.team_id.as_ref().and_then(|t| teams.get(t)) {
                record.team.spend += team;
            }
        }
    }
}

/// Two states of one version: `new` takes the larger of each spend (the key's, its
/// team's, its user's, its membership's).
fn keep_larger_spends(new: &mut KeyState, held: &KeyState) {
    let (KeyState::Present(new), KeyState::Present(held)) = (new, held) else {
        return;
    };
    new.spend = new.spend.max(held.spend);
    new.team.spend = new.team.spend.max(held.team.spend);
    new.user.spend = new.user.spend.max(held.user.spend);
    new.member.spend = new.member.spend.max(held.member.spend);
}

/// A state that refuses the key whatever happened since (a tombstone, a block): serving it
/// late can never let a revoked key in.
fn refuses(state: &KeyState) -> bool {
    match state {
        KeyState::Deleted => true,
        KeyState::Present(record) => record.blocked || record.team.blocked,
    }
}

#[cfg(test)]
pub(crate) mod tests;
