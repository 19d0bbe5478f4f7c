//! The control plane's cache of key records: fresh reads skip the database, stale ones
//! carry known keys through an outage, for a bounded time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::CacheConfig;
use crate::keys::KeyHash;
use crate::record::KeyRecord;

/// What the cache knows about a key at a given moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Read recently enough to answer without the database.
    Fresh(KeyRecord),
    /// Older: ask the database, but use this if the database is away.
    Stale(KeyRecord),
    /// Never read, invalidated, or past the staleness bound.
    Miss,
}

pub struct KeyCache {
    policy: CacheConfig,
    entries: Mutex<HashMap<KeyHash, (KeyRecord, Instant)>>,
}

impl KeyCache {
    pub fn new(policy: CacheConfig) -> Self {
        KeyCache {
            policy,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyHash, (KeyRecord, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, token: &KeyHash, now: Instant) -> Lookup {
        let mut map = self.lock();
        let Some((record, read_at)) = map.get(token) else {
            return Lookup::Miss;
        };
        let age = now.saturating_duration_since(*read_at);
        if age < self.policy.fresh {
            Lookup::Fresh(record.clone())
        } else if age < self.policy.staleness {
            Lookup::Stale(record.clone())
        } else {
            map.remove(token);
            Lookup::Miss
        }
    }

    /// Records a read from the database at `now`.
    pub fn put(&self, record: KeyRecord, now: Instant) {
        let mut map = self.lock();
        if map.len() >= self.policy.max_entries && !map.contains_key(&record.token) {
            evict(&mut map, now, self.policy.staleness);
        }
        map.insert(record.token.clone(), (record, now));
    }

    /// Updates, deletes and blocks call this at once, so no stale answer outlives them here.
    pub fn invalidate(&self, token: &KeyHash) {
        self.lock().remove(token);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Makes room: drop everything past the staleness bound, or else the oldest entry.
fn evict(map: &mut HashMap<KeyHash, (KeyRecord, Instant)>, now: Instant, staleness: Duration) {
    let before = map.len();
    map.retain(|_, (_, at)| now.saturating_duration_since(*at) < staleness);
    if map.len() < before {
        return;
    }
    if let Some(oldest) = map
        .iter()
        .min_by_key(|(_, (_, at))| *at)
        .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::Utc;

    pub fn record(raw: &str) -> KeyRecord {
        KeyRecord {
            token: KeyHash::of_raw(raw),
            key_name: crate::keys::key_name(raw),
            key_alias: None,
            team_id: None,
            user_id: None,
            models: vec![],
            max_budget: None,
            metadata: serde_json::json!({}),
            blocked: false,
            spend: 0.0,
            expires: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn cache(max: usize) -> KeyCache {
        KeyCache::new(CacheConfig {
            fresh: Duration::from_secs(10),
            staleness: Duration::from_secs(900),
            max_entries: max,
        })
    }

    #[test]
    fn records_are_fresh_then_stale_then_gone() {
        let c = cache(10);
        let t0 = Instant::now();
        let r = record("sk-a");
        c.put(r.clone(), t0);
        assert_eq!(
            c.get(&r.token, t0 + Duration::from_secs(5)),
            Lookup::Fresh(r.clone())
        );
        assert_eq!(
            c.get(&r.token, t0 + Duration::from_secs(60)),
            Lookup::Stale(r.clone())
        );
        assert_eq!(c.get(&r.token, t0 + Duration::from_secs(900)), Lookup::Miss);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn invalidation_is_immediate() {
        let c = cache(10);
        let r = record("sk-a");
        c.put(r.clone(), Instant::now());
        c.invalidate(&r.token);
        assert_eq!(c.get(&r.token, Instant::now()), Lookup::Miss);
    }

    #[test]
    fn the_cache_stays_within_its_bound_by_evicting_the_oldest() {
        let c = cache(2);
        let t0 = Instant::now();
        let (a, b, d) = (record("sk-a"), record("sk-b"), record("sk-d"));
        c.put(a.clone(), t0);
        c.put(b.clone(), t0 + Duration::from_secs(1));
        c.put(d.clone(), t0 + Duration::from_secs(2));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&a.token, t0 + Duration::from_secs(2)), Lookup::Miss);
        assert!(matches!(
            c.get(&d.token, t0 + Duration::from_secs(2)),
            Lookup::Fresh(_)
        ));
    }
}
