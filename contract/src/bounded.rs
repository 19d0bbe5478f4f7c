//! A map of at most a fixed number of entries that evicts the oldest-written first, in
//! O(log n): the bound on every table keyed by key hash, on both sides (the filter's
//! decision cache and outage windows, the control plane's key records), so that no flood
//! of keys grows a worker's or a replica's memory.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A map of at most `capacity` entries. Writing a key (again) makes it the newest; when
/// a write finds the map full, the oldest-written entries make room.
#[derive(Debug)]
pub struct Bounded<K, V> {
    entries: HashMap<K, (V, u64)>,
    /// Write order: sequence number → key, the oldest first.
    order: BTreeMap<u64, K>,
    next_seq: u64,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V> Bounded<K, V> {
    /// A map of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Bounded {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// The entry to change in place: an update does not make it the newest.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(v, _)| v)
    }

    /// Every entry to change in place, in no particular order; the write order stays.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.values_mut().map(|(v, _)| v)
    }

    /// Writes `value` as the newest entry, evicting the oldest-written ones if the map is
    /// full (a key already held is replaced, and evicts nothing).
    pub fn insert(&mut self, key: K, value: V) {
        self.remove(&key);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.order.insert(seq, key.clone());
        self.entries.insert(key, (value, seq));
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (value, seq) = self.entries.remove(key)?;
        self.order.remove(&seq);
        Some(value)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests;
