//! The bounded map: eviction order, capacity, updates in place, against a model.

use super::*;
use proptest::prelude::*;

fn filled(capacity: usize, keys: &[u32]) -> Bounded<u32, u32> {
    let mut map = Bounded::new(capacity);
    for &k in keys {
        map.insert(k, k * 10);
    }
    map
}

#[test]
fn a_full_map_evicts_the_oldest_written_entry() {
    let mut map = filled(3, &[1, 2, 3]);
    map.insert(4, 40);
    assert_eq!(map.len(), 3);
    assert_eq!(map.get(&1), None);
    assert_eq!(map.get(&2), Some(&20));
    assert_eq!(map.get(&4), Some(&40));
}

#[test]
fn writing_a_key_again_makes_it_the_newest() {
    let mut map = filled(3, &[1, 2, 3]);
    map.insert(1, 11);
    map.insert(4, 40);
    assert_eq!(map.get(&1), Some(&11));
    assert_eq!(map.get(&2), None, "2 is now the oldest written");
    assert_eq!(map.len(), 3);
}

#[test]
fn replacing_a_key_in_a_full_map_evicts_nothing() {
    let mut map = filled(2, &[1, 2]);
    map.insert(2, 21);
    assert_eq!(map.get(&1), Some(&10));
    assert_eq!(map.get(&2), Some(&21));
}

#[test]
fn an_update_in_place_does_not_make_an_entry_the_newest() {
    let mut map = filled(2, &[1, 2]);
    if let Some(v) = map.get_mut(&1) {
        *v += 1;
    }
    map.insert(3, 30);
    assert_eq!(map.get(&1), None, "1 was still the oldest written");
    assert_eq!(map.get(&2), Some(&20));
}

#[test]
fn values_mut_reaches_every_entry() {
    let mut map = filled(4, &[1, 2, 3]);
    for v in map.values_mut() {
        *v += 1;
    }
    assert_eq!(
        [map.get(&1), map.get(&2), map.get(&3)],
        [Some(&11), Some(&21), Some(&31)]
    );
}

#[test]
fn a_removed_entry_frees_its_place() {
    let mut map = filled(2, &[1, 2]);
    assert_eq!(map.remove(&1), Some(10));
    assert_eq!(map.remove(&1), None);
    map.insert(3, 30);
    assert_eq!(map.get(&2), Some(&20), "a slot was free: nothing evicted");
    assert_eq!(map.len(), 2);
}

#[test]
fn clear_empties_the_map_and_it_fills_again() {
    let mut map = filled(2, &[1, 2]);
    map.clear();
    assert!(map.is_empty());
    map.insert(3, 30);
    map.insert(4, 40);
    assert_eq!(map.len(), 2);
    assert_eq!(map.get(&3), Some(&30));
}

#[test]
fn a_capacity_of_zero_holds_one_entry() {
    let map = filled(0, &[1, 2]);
    assert_eq!(map.capacity(), 1);
    assert_eq!(map.len(), 1);
    assert_eq!(map.get(&2), Some(&20));
}

proptest! {
    /// Against a model: the map holds exactly the `capacity` most recently written keys
    /// that were not removed since, with their last values.
    #[test]
    fn holds_the_newest_writes_up_to_its_capacity(
        capacity in 1usize..8,
        ops in prop::collection::vec((any::<bool>(), 0u8..16, any::<u32>()), 0..200),
    ) {
        let mut map = Bounded::new(capacity);
        // The model: keys in write order, oldest first.
        let mut model: Vec<(u8, u32)> = Vec::new();
        for (write, key, value) in ops {
            model.retain(|(k, _)| *k != key);
            if write {
                map.insert(key, value);
                model.push((key, value));
                if model.len() > capacity {
                    model.remove(0);
                }
            } else {
                map.remove(&key);
            }
            prop_assert_eq!(map.len(), model.len());
        }
        for key in 0u8..16 {
            let expected = model.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
            prop_assert_eq!(map.get(&key), expected);
        }
    }
}
