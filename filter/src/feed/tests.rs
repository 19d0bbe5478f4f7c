//! The shared change-feed window: merges, drops, gaps, and each worker's progress through it.

use super::*;
use crate::cache::Cached;
use crate::config::CacheConfig;
use crate::decision::Grant;
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
    let seqs: Vec<u64> = shared.changes.iter().map(|c| c.change.seq).collect();
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
    assert_eq!(shared.changes.first().map(|c| c.change.seq), Some(11));
}

#[test]
fn a_worker_applies_a_revocation_once_and_only_the_newest_change_of_a_key() {
    let mut c = cache();
    allowed(&mut c, 1);
    let mut worker = WorkerFeed::default();
    let mut shared = SharedFeed::default();
    shared.merge(answer(8, false, vec![change(8, 1, KeyStatus::Blocked)]));
    assert_eq!(worker.apply(&shared, &mut c, 10).changes, 1);
    assert_eq!(
        c.fresh(&h(1), 11),
        Some(Cached::Deny(DenyReason::KeyBlocked))
    );
    // Applying the same window again changes nothing.
    assert_eq!(worker.apply(&shared, &mut c, 12).changes, 0);
    // An older change of the same key that shows up late does not undo the newer one.
    shared.merge(answer(8, false, vec![change(7, 1, KeyStatus::Active)]));
    assert_eq!(worker.apply(&shared, &mut c, 13).changes, 0);
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

/// `n` changes from number `from`, each of its own key (keys 1000 and up): none of them a
/// key the tests cache.
fn burst(from: u64, n: u64) -> Vec<KeyChange> {
    (from..from + n)
        .map(|s| change(s, 1000 + s, KeyStatus::Deleted))
        .collect()
}

#[test]
fn more_changes_in_one_answer_than_the_window_holds_make_every_worker_forget_its_allows() {
    let mut shared = SharedFeed::default();
    shared.merge(answer(1, true, vec![]));
    let (mut c, mut worker) = (cache(), WorkerFeed::default());
    let (mut other_c, mut other) = (cache(), WorkerFeed::default());
    assert!(!worker.apply(&shared, &mut c, 0).gap);
    assert!(!other.apply(&shared, &mut other_c, 0).gap);
    allowed(&mut c, 1);
    allowed(&mut other_c, 1);
    // Key 1 is revoked first, then more changes than the window holds, in one answer:
    // key 1's revocation leaves the window before any worker saw it.
    let mut changes = vec![change(2, 1, KeyStatus::Deleted)];
    changes.extend(burst(3, WINDOW as u64));
    shared.merge(answer(WINDOW as u64 + 2, false, changes));
    assert!(shared.changes.iter().all(|c| c.change.key_hash != h(1)));
    for (worker, c) in [(&mut worker, &mut c), (&mut other, &mut other_c)] {
        assert!(worker.apply(&shared, c, 5).gap);
        assert_eq!(c.fresh(&h(1), 6), None, "no fresh allow survives");
        assert_eq!(c.stale_allow(&h(1), 6), None, "nor a stale one");
        // Once: the next look finds nothing missing.
        allowed(c, 1);
        assert!(!worker.apply(&shared, c, 7).gap);
        assert!(c.fresh(&h(1), 8).is_some());
    }
}

#[test]
fn a_slow_worker_that_missed_dropped_changes_forgets_and_a_prompt_one_does_not() {
    let mut shared = SharedFeed::default();
    shared.merge(answer(0, true, vec![]));
    let (mut prompt_c, mut prompt) = (cache(), WorkerFeed::default());
    let (mut slow_c, mut slow) = (cache(), WorkerFeed::default());
    prompt.apply(&shared, &mut prompt_c, 0);
    slow.apply(&shared, &mut slow_c, 0);
    allowed(&mut prompt_c, 1);
    allowed(&mut slow_c, 1);
    // Three answers of 400 changes each: the prompt worker looks after every one, the
    // slow one only at the end, when the first answer's oldest changes are gone.
    for round in 0..3u64 {
        shared.merge(answer(0, false, burst(1 + round * 400, 400)));
        assert!(!prompt.apply(&shared, &mut prompt_c, 1 + round).gap);
    }
    assert!(prompt_c.fresh(&h(1), 5).is_some(), "it saw every change");
    assert!(slow.apply(&shared, &mut slow_c, 5).gap);
    assert_eq!(slow_c.stale_allow(&h(1), 6), None);
}

#[test]
fn a_late_change_that_drops_out_as_it_arrives_is_a_gap_for_every_worker() {
    let mut shared = SharedFeed::default();
    shared.merge(answer(0, true, burst(10, WINDOW as u64)));
    let (mut c, mut worker) = (cache(), WorkerFeed::default());
    worker.apply(&shared, &mut c, 0);
    allowed(&mut c, 1);
    // Number 5 commits late: below the whole window, it is dropped by the merge that
    // brings it, and no worker ever sees it.
    shared.merge(answer(0, false, vec![change(5, 1, KeyStatus::Blocked)]));
    assert!(worker.apply(&shared, &mut c, 1).gap);
    assert_eq!(c.stale_allow(&h(1), 2), None);
}

#[test]
fn repeats_of_dropped_changes_are_not_news_and_cost_one_reset() {
    let mut shared = SharedFeed::default();
    shared.merge(answer(0, true, vec![]));
    let (mut c, mut worker) = (cache(), WorkerFeed::default());
    worker.apply(&shared, &mut c, 0);
    let many = burst(1, WINDOW as u64 + 100);
    shared.merge(answer(0, false, many.clone()));
    assert!(worker.apply(&shared, &mut c, 1).gap);
    assert_eq!(shared.dropped, vec![(1, 100)]);
    allowed(&mut c, 1);
    // The control plane repeats its recent changes in the next answers.
    for now in 2..5 {
        shared.merge(answer(0, false, many.clone()));
        assert!(!worker.apply(&shared, &mut c, now).gap, "at {now}");
    }
    assert!(c.fresh(&h(1), 5).is_some());
    // A late change numbered inside the window's span is news as before.
    assert_eq!(shared.changes.first().map(|c| c.change.seq), Some(101));
}

#[test]
fn dropped_ranges_join_and_stay_bounded() {
    let mut shared = SharedFeed::default();
    for seq in [5, 3, 4, 10, 1] {
        shared.note_dropped(seq);
    }
    assert_eq!(shared.dropped, vec![(1, 1), (3, 5), (10, 10)]);
    for seq in (100..100 + 2 * MAX_DROPPED_RANGES as u64).step_by(2) {
        shared.note_dropped(seq);
    }
    assert_eq!(shared.dropped.len(), MAX_DROPPED_RANGES);
    assert!(
        !shared.was_dropped(1),
        "the oldest ranges are forgotten first"
    );
    assert!(shared.was_dropped(100 + 2 * (MAX_DROPPED_RANGES as u64 - 1)));
}

#[test]
fn a_window_that_fits_is_never_a_gap() {
    let mut shared = SharedFeed::default();
    let (mut c, mut worker) = (cache(), WorkerFeed::default());
    shared.merge(answer(0, true, vec![]));
    worker.apply(&shared, &mut c, 0);
    allowed(&mut c, 1);
    shared.merge(answer(0, false, burst(1, WINDOW as u64)));
    shared.merge(answer(0, false, vec![]));
    assert_eq!(shared.dropped_from, 0);
    assert!(!worker.apply(&shared, &mut c, 1).gap);
    assert!(c.fresh(&h(1), 2).is_some());
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
