use super::*;
use crate::model::keys::KeyHash;

fn change(seq: u64, status: KeyStatus) -> FeedChange {
    FeedChange {
        seq,
        key_hash: KeyHash::of_raw(&format!("sk-{seq}")),
        status,
    }
}

fn seqs(feed: &ChangeFeed) -> Vec<u64> {
    feed.changes.iter().map(|c| c.seq).collect()
}

const RECENT: Duration = Duration::from_secs(10);

#[test]
fn no_feed_before_the_log_was_read_once() {
    let ring = ChangeRing::default();
    assert_eq!(ring.since(Some(0), RECENT, Instant::now()), None);
}

#[test]
fn a_filter_gets_what_came_after_its_cursor_and_the_recent_changes_again() {
    let ring = ChangeRing::default();
    let t0 = Instant::now();
    ring.start_at(10);
    ring.record(change(11, KeyStatus::Blocked), t0, 100);
    ring.record(change(12, KeyStatus::Deleted), t0, 100);
    let later = t0 + RECENT;
    let feed = ring.since(Some(11), RECENT, later).unwrap();
    assert_eq!(
        (feed.cursor, feed.reset, seqs(&feed)),
        (12, false, vec![12])
    );
    // Within the recent window, a change below the cursor is served again: it may have
    // committed after a higher number did.
    let feed = ring.since(Some(12), RECENT, t0).unwrap();
    assert_eq!(seqs(&feed), vec![11, 12]);
}

#[test]
fn a_cursor_from_before_this_replica_started_is_a_reset() {
    let ring = ChangeRing::default();
    ring.start_at(50);
    let feed = ring.since(Some(40), RECENT, Instant::now()).unwrap();
    assert!(feed.reset);
    assert_eq!(feed.cursor, 50);
    assert!(ring.since(None, RECENT, Instant::now()).unwrap().reset);
    assert!(!ring.since(Some(50), RECENT, Instant::now()).unwrap().reset);
}

#[test]
fn trimmed_history_resets_filters_that_fell_behind_it() {
    let ring = ChangeRing::default();
    let t0 = Instant::now();
    ring.start_at(0);
    for seq in 1..=5 {
        ring.record(change(seq, KeyStatus::Active), t0, 3);
    }
    let later = t0 + RECENT;
    assert!(ring.since(Some(1), RECENT, later).unwrap().reset);
    let feed = ring.since(Some(2), RECENT, later).unwrap();
    assert_eq!((feed.reset, seqs(&feed)), (false, vec![3, 4, 5]));
}

#[test]
fn a_change_log_row_becomes_what_the_filter_must_do() {
    let record = crate::key_cache::tests::record("sk-a");
    let token = record.token.clone();
    let blocked = KeyChange {
        seq: 7,
        token: token.clone(),
        record: Some(Box::new(crate::model::KeyRecord {
            blocked: true,
            ..record.clone()
        })),
    };
    let status = |c: &KeyChange| feed_change(c).map(|f| f.status);
    assert_eq!(status(&blocked), Some(KeyStatus::Blocked));
    let active = KeyChange {
        record: Some(Box::new(record)),
        ..blocked.clone()
    };
    assert_eq!(status(&active), Some(KeyStatus::Active));
    let deleted = KeyChange {
        record: None,
        ..blocked
    };
    assert_eq!(status(&deleted), Some(KeyStatus::Deleted));
}

#[test]
fn applying_a_change_never_undoes_a_newer_state() {
    let cache = KeyCache::new(crate::key_cache::CacheConfig {
        fresh: Duration::from_secs(10),
        staleness: Duration::from_secs(900),
        max_silence: Duration::from_secs(240),
        max_entries: 10,
    });
    let ring = ChangeRing::default();
    let record = crate::key_cache::tests::record("sk-a");
    let token = record.token.clone();
    cache.put(&token, KeyState::Deleted, 9, Instant::now());
    let old = KeyChange {
        seq: 8,
        token: token.clone(),
        record: Some(Box::new(record)),
    };
    apply(&cache, &ring, old, &FeedConfig::default());
    assert_eq!(
        cache.get(&token, Instant::now()),
        crate::key_cache::Lookup::Fresh(KeyState::Deleted)
    );
}
