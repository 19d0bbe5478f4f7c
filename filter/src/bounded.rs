//! A map of at most a fixed number of entries that evicts the oldest-written first, in
//! O(log n): the bound on every per-worker table keyed by key hash (the decision cache's
//! pools, the outage limits' windows), so no flood of keys grows a worker's memory.

use livegate_contract::KeyHash;
use std::collections::{BTreeMap, HashMap};

/// A map of at most `capacity` entries that evicts the oldest-written first, in O(log n).
#[derive(Debug)]
pub struct Bounded<V> {
    entries: HashMap<KeyHash, (V, u64)>,
    order: BTreeMap<u64, KeyHash>,
    next_seq: u64,
    capacity: usize,
}

impl<V> Bounded<V> {
    pub fn new(capacity: usize) -> Self {
        Bounded {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, key: &KeyHash) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    pub fn get_mut(&mut self, key: &KeyHash) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(v, _)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn insert(&mut self, key: KeyHash, value: V) {
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

    pub fn remove(&mut self, key: &KeyHash) -> Option<V> {
        let (value, seq) = self.entries.remove(key)?;
        self.order.remove(&seq);
        Some(value)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}
