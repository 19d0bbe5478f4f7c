use super::*;
use crate::cache::{Cached, Grant};
use crate::config::CacheConfig;
use crate::decision::{DenyReason, Identity};
use livegate_contract::KeyStatus;
use proptest::prelude::*;

fn h(n: u64) -> KeyHash {
    KeyHash::parse_hex(&format!("{n:064x}")).unwrap()
}

fn change(seq: u64, key: u64, status: KeyStatus) -> KeyChange {
    KeyChange {
        seq,
        key_hash: h(key),
        status,
    }
}

fn answer(cursor: u64, reset: bool, changes: Vec<KeyChange>) -> ChangeFeed {
    ChangeFeed {
        cursor,
        reset,
        changes,
    }
}

fn cache() -> DecisionCache {
    DecisionCache::new(CacheConfig::default())
}

fn allowed(c: &mut DecisionCache, key: u64) {
    let _ = c.record_allow(h(key), Identity::default(), Grant::ttl(u64::MAX), 0);
}

#[test]
fn merging_keeps_one_change_per_number_in_order_and_moves_the_cursor() {
    let mut shared = SharedFeed::default();
    shared.merge(answer(5, true, vec![change(5, 1, KeyStatus::Blocked)]));
    shared.merge(answer(
        6,
        false,
        vec![
            change(5, 1, KeyStatus::Blocked),
            change(6, 2, KeyStatus::Deleted),
        ],
    ));
    let seqs: Vec<u64> = shared.changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, vec![5, 6]);
    assert_eq!(shared.cursor, Some(6));
    // An answer from a peer that is behind never moves the cursor back.
    shared.merge(answer(4, false, vec![]));
    assert_eq!(shared.cursor, Some(6));
}

#[test]
fn the_window_keeps_the_newest_changes() {
    let mut shared = SharedFeed::default();
    let many = (1..=WINDOW as u64 + 10)
        .map(|s| change(s, s, KeyStatus::Active))
        .collect();
    shared.merge(answer(0, false, many));
    assert_eq!(shared.changes.len(), WINDOW);
    assert_eq!(shared.changes.first().map(|c| c.seq), Some(11));
}

#[test]
fn a_worker_applies_a_revocation_once_and_only_the_newest_change_of_a_key() {
    let mut c = cache();
    allowed(&mut c, 1);
    let mut worker = WorkerFeed::default();
    let mut shared = SharedFeed::default();
    shared.merge(answer(8, false, vec![change(8, 1, KeyStatus::Blocked)]));
    assert_eq!(worker.apply(&shared, &mut c, 10), 1);
    assert_eq!(
        c.fresh(&h(1), 11),
        Some(Cached::Deny(DenyReason::KeyBlocked))
    );
    // Applying the same window again changes nothing.
    assert_eq!(worker.apply(&shared, &mut c, 12), 0);
    // An older change of the same key that shows up late does not undo the newer one.
    shared.merge(answer(8, false, vec![change(7, 1, KeyStatus::Active)]));
    assert_eq!(worker.apply(&shared, &mut c, 13), 0);
    assert_eq!(
        c.fresh(&h(1), 14),
        Some(Cached::Deny(DenyReason::KeyBlocked))
    );
}

#[test]
fn the_first_answer_starts_the_feed_without_forgetting_anything() {
    let mut c = cache();
    let mut worker = WorkerFeed::default();
    let mut shared = SharedFeed::default();
    worker.apply(&shared, &mut c, 0);
    allowed(&mut c, 1);
    shared.merge(answer(3, true, vec![]));
    worker.apply(&shared, &mut c, 1);
    assert!(c.fresh(&h(1), 2).is_some());
    assert_eq!(shared.cursor, Some(3));
}

#[test]
fn a_reset_makes_every_worker_forget_its_allows_once() {
    let mut c = cache();
    let mut worker = WorkerFeed::default();
    let mut shared = SharedFeed::default();
    shared.merge(answer(3, true, vec![]));
    worker.apply(&shared, &mut c, 0);
    allowed(&mut c, 1);
    worker.apply(&shared, &mut c, 1);
    assert!(c.fresh(&h(1), 2).is_some(), "same epoch: nothing forgotten");
    shared.merge(answer(9, true, vec![]));
    worker.apply(&shared, &mut c, 3);
    assert_eq!(c.fresh(&h(1), 4), None);
    assert_eq!(c.stale_allow(&h(1), 4), None);
}

#[test]
fn the_lease_is_free_when_absent_unreadable_or_run_out() {
    assert!(lease_free(None, 5));
    assert!(lease_free(Some(b"xx"), 5));
    let until = lease_until(10);
    assert!(!lease_free(Some(&until), 9));
    assert!(lease_free(Some(&until), 10));
}

#[test]
fn only_a_200_with_the_contracts_body_is_an_answer() {
    let body = serde_json::to_vec(&answer(1, false, vec![])).unwrap();
    assert!(parse_answer(Some(b"200"), Some(&body)).is_some());
    assert!(parse_answer(Some(b"503"), Some(&body)).is_none());
    assert!(parse_answer(Some(b"200"), Some(b"{}")).is_none());
    assert!(parse_answer(None, Some(&body)).is_none());
    assert_eq!(
        poll_path("/v1/auth/changes", Some(4)),
        "/v1/auth/changes?after=4"
    );
    assert_eq!(poll_path("/v1/auth/changes", None), "/v1/auth/changes");
}

#[test]
fn shared_bytes_round_trip_and_garbage_is_an_empty_feed() {
    let mut shared = SharedFeed::default();
    shared.merge(answer(2, false, vec![change(2, 1, KeyStatus::Deleted)]));
    assert_eq!(SharedFeed::decode(Some(&shared.encode())), shared);
    assert_eq!(SharedFeed::decode(Some(b"\xff")), SharedFeed::default());
}

proptest! {
    /// Whatever order changes arrive in, each worker ends with the newest state per key.
    #[test]
    fn workers_converge_on_the_newest_change_of_each_key(
        batches in proptest::collection::vec(
            proptest::collection::vec((1u64..40, 0u64..4, 0u8..4), 0..8), 1..6),
    ) {
        let mut shared = SharedFeed::default();
        let mut c = cache();
        let mut worker = WorkerFeed::default();
        let mut newest: HashMap<u64, (u64, KeyStatus)> = HashMap::new();
        let mut seen = BTreeSet::new();
        for batch in batches {
            let changes: Vec<KeyChange> = batch
                .into_iter()
                .filter(|(seq, _, _)| seen.insert(*seq))
                .map(|(seq, key, s)| {
                    let status = [KeyStatus::Active, KeyStatus::Blocked, KeyStatus::Deleted, KeyStatus::TeamBlocked][usize::from(s)];
                    let e = newest.entry(key).or_insert((seq, status));
                    if seq >= e.0 { *e = (seq, status); }
                    change(seq, key, status)
                })
                .collect();
            shared.merge(answer(0, false, changes));
            worker.apply(&shared, &mut c, 1);
        }
        for (key, (_, status)) in newest {
            let expected = match status {
                KeyStatus::Active => None,
                KeyStatus::Blocked => Some(Cached::Deny(DenyReason::KeyBlocked)),
                KeyStatus::Deleted => Some(Cached::Deny(DenyReason::InvalidKey)),
                KeyStatus::TeamBlocked => Some(Cached::Deny(DenyReason::TeamBlocked)),
            };
            prop_assert_eq!(c.fresh(&h(key), 2), expected);
        }
    }
}
