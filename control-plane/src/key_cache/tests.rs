use super::*;
use chrono::Utc;

pub fn record(raw: &str) -> KeyRecord {
    KeyRecord {
        token: KeyHash::of_raw(raw),
        key_name: crate::model::keys::key_name(raw),
        key_alias: None,
        team_id: None,
        user_id: None,
        models: vec![],
        aliases: Default::default(),
        budget: Default::default(),
        metadata: serde_json::json!({}),
        blocked: false,
        spend: 0.0,
        expires: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        version: 1,
        limits: Default::default(),
        model_limits: Default::default(),
        model_max_budget: Default::default(),
        team: Default::default(),
        user: Default::default(),
        member: Default::default(),
    }
}

fn cache(max: usize) -> KeyCache {
    KeyCache::new(CacheConfig {
        fresh: Duration::from_secs(10),
        staleness: Duration::from_secs(900),
        max_silence: Duration::from_secs(240),
        max_entries: max,
    })
}

fn present(r: &KeyRecord) -> KeyState {
    KeyState::Present(Box::new(r.clone()))
}

fn blocked(r: &KeyRecord) -> KeyRecord {
    KeyRecord {
        blocked: true,
        ..r.clone()
    }
}

#[test]
fn states_are_fresh_then_stale_then_gone() {
    let c = cache(10);
    let t0 = Instant::now();
    let r = record("sk-a");
    c.put(&r.token, present(&r), 1, t0);
    let at = |s| t0 + Duration::from_secs(s);
    c.heard_change_log(t0);
    assert_eq!(c.get(&r.token, at(5)), Lookup::Fresh(present(&r)));
    assert_eq!(c.get(&r.token, at(60)), Lookup::Stale(present(&r)));
    assert_eq!(c.get(&r.token, at(900)), Lookup::Miss);
    assert_eq!(c.len(), 0);
}

#[test]
fn a_record_lets_a_key_in_late_only_while_the_change_log_vouches_for_it() {
    let c = cache(10);
    let t0 = Instant::now();
    let at = |s| t0 + Duration::from_secs(s);
    let r = record("sk-a");
    let gone = record("sk-gone");
    let off = blocked(&record("sk-off"));
    c.put(&r.token, present(&r), 1, t0);
    c.put(&gone.token, KeyState::Deleted, 1, t0);
    c.put(&off.token, present(&off), 1, t0);
    // Never heard: a record vouches for itself for 240 s after its read (the test
    // cache's `max_silence`), then only fresh records answer.
    assert_eq!(c.change_log_age(at(5)), None);
    assert_eq!(c.get(&r.token, at(5)), Lookup::Fresh(present(&r)));
    assert_eq!(c.get(&r.token, at(240)), Lookup::Stale(present(&r)));
    assert_eq!(c.get(&r.token, at(241)), Lookup::Miss);
    // Heard at 100 s: vouched for 240 s after (the test cache's `max_silence`).
    c.heard_change_log(at(100));
    assert_eq!(c.change_log_age(at(340)), Some(Duration::from_secs(240)));
    assert_eq!(c.get(&r.token, at(340)), Lookup::Stale(present(&r)));
    assert_eq!(c.get(&r.token, at(341)), Lookup::Miss, "a cut-off replica");
    // Refusals need no voucher; the record was kept, and answers once heard again.
    assert_eq!(
        c.get(&gone.token, at(500)),
        Lookup::Stale(KeyState::Deleted)
    );
    assert_eq!(c.get(&off.token, at(500)), Lookup::Stale(present(&off)));
    c.heard_change_log(at(400));
    assert_eq!(c.get(&r.token, at(500)), Lookup::Stale(present(&r)));
    // An older read never moves the voucher back.
    c.heard_change_log(at(10));
    assert_eq!(c.get(&r.token, at(600)), Lookup::Stale(present(&r)));
}

#[test]
fn a_read_from_before_a_block_cannot_overwrite_the_block() {
    // The auth check read version 1, the block wrote version 2 first, then the read lands.
    let c = cache(10);
    let now = Instant::now();
    let r = record("sk-a");
    c.put(&r.token, present(&blocked(&r)), 2, now);
    let won = c.put(&r.token, present(&r), 1, now);
    assert_eq!(won, present(&blocked(&r)), "the older read loses");
    assert_eq!(c.get(&r.token, now), Lookup::Fresh(present(&blocked(&r))));
}

#[test]
fn a_delete_leaves_a_tombstone_that_an_older_read_cannot_revive() {
    let c = cache(10);
    let now = Instant::now();
    let r = record("sk-a");
    c.put(&r.token, KeyState::Deleted, 5, now);
    assert_eq!(c.put(&r.token, present(&r), 4, now), KeyState::Deleted);
    assert_eq!(c.get(&r.token, now), Lookup::Fresh(KeyState::Deleted));
    // Stale too: a tombstone answers during an outage.
    let later = now + Duration::from_secs(60);
    assert_eq!(c.get(&r.token, later), Lookup::Stale(KeyState::Deleted));
}

#[test]
fn unknown_keys_are_remembered_briefly_and_never_over_a_known_state() {
    let c = cache(10);
    let now = Instant::now();
    let r = record("sk-a");
    let ghost = KeyHash::of_raw("sk-ghost");
    assert_eq!(c.put_unknown(&ghost, now), None);
    assert_eq!(c.get(&ghost, now), Lookup::Unknown);
    assert_eq!(c.get(&ghost, now + UNKNOWN_TTL), Lookup::Miss);
    // A key this replica just generated beats a read that missed it.
    c.put(&r.token, present(&r), 3, now);
    assert_eq!(c.put_unknown(&r.token, now), Some(present(&r)));
    assert_eq!(c.get(&r.token, now), Lookup::Fresh(present(&r)));
    // And a key learnt later replaces the unknown entry at once.
    assert_eq!(c.put_unknown(&ghost, now), None);
    c.put(&ghost, KeyState::Deleted, 9, now);
    assert_eq!(c.get(&ghost, now), Lookup::Fresh(KeyState::Deleted));
}

#[test]
fn a_flood_of_unknown_keys_does_not_evict_known_ones() {
    let c = cache(2);
    let now = Instant::now();
    let r = record("sk-a");
    c.put(&r.token, present(&r), 1, now);
    for i in 0..100 {
        c.put_unknown(&KeyHash::of_raw(&format!("sk-random-{i}")), now);
    }
    assert_eq!(c.get(&r.token, now), Lookup::Fresh(present(&r)));
}

#[test]
fn the_cache_stays_within_its_bound_by_evicting_the_oldest() {
    let c = cache(2);
    let t0 = Instant::now();
    let (a, b, d) = (record("sk-a"), record("sk-b"), record("sk-d"));
    c.put(&a.token, present(&a), 1, t0);
    c.put(&b.token, present(&b), 1, t0);
    c.put(&d.token, present(&d), 1, t0);
    assert_eq!(c.len(), 2);
    assert_eq!(c.get(&a.token, t0), Lookup::Miss);
    assert_eq!(c.get(&d.token, t0), Lookup::Fresh(present(&d)));
}

#[test]
fn drained_spend_is_added_to_the_records_held_for_their_key_and_team() {
    let c = cache(10);
    let now = Instant::now();
    let mut a = record("a");
    a.team_id = Some("t".into());
    let mut b = record("b");
    b.team_id = Some("t".into());
    let other = record("c");
    for r in [&a, &b, &other] {
        c.put(&r.token, present(r), 1, now);
    }
    let keys = [(a.token.clone(), 2.0)].into();
    let teams = [("t".to_string(), 3.0)].into();
    c.add_spend(&keys, &teams);
    let spend = |r: &KeyRecord| match c.get(&r.token, now) {
        Lookup::Fresh(KeyState::Present(r)) => (r.spend, r.team.spend),
        other => panic!("{other:?}"),
    };
    assert_eq!(spend(&a), (2.0, 3.0));
    assert_eq!(spend(&b), (0.0, 3.0));
    assert_eq!(spend(&other), (0.0, 0.0));
}

#[test]
fn drained_spend_reaches_a_rotated_keys_old_secret_held_under_its_own_hash() {
    let c = cache(10);
    let now = Instant::now();
    let key = record("sk-new-secret");
    let old_secret = record("sk-old-secret").token;
    // The old secret in its grace holds the key's record (its token the key's).
    c.put(&key.token, present(&key), 1, now);
    c.put(&old_secret, present(&key), 2, now);
    c.add_spend(&[(key.token.clone(), 2.5)].into(), &HashMap::new());
    for held_as in [&key.token, &old_secret] {
        match c.get(held_as, now) {
            Lookup::Fresh(KeyState::Present(r)) => assert_eq!(r.spend, 2.5),
            other => panic!("{other:?}"),
        }
    }
}

/// The feed reads recent changes again at every poll: the logged row of a write the cache
/// already holds (spend 0 as written) must not undo the spend drained since.
#[test]
fn a_change_already_held_does_not_reset_the_spend_drained_since() {
    let c = cache(10);
    let now = Instant::now();
    let key = record("sk-rotated");
    c.put(&key.token, present(&key), 7, now);
    c.add_spend(&[(key.token.clone(), 2.5)].into(), &HashMap::new());
    let spend = || match c.get(&key.token, now) {
        Lookup::Fresh(KeyState::Present(r)) => r.spend,
        other => panic!("{other:?}"),
    };
    c.put_change(&key.token, present(&key), 7, now);
    assert_eq!(spend(), 2.5, "the same write, logged: kept");
    c.put_change(&key.token, present(&key), 6, now);
    assert_eq!(spend(), 2.5, "an older write: kept");
    let mut rewritten = key.clone();
    rewritten.spend = 3.0;
    c.put_change(&key.token, present(&rewritten), 8, now);
    assert_eq!(
        c.get(&key.token, now),
        Lookup::Stale(present(&rewritten)),
        "a newer write: taken, not fresh"
    );
}

/// A peer's write reaches this replica a poll later, as the row was written: without what
/// this replica drained in between. It does not answer alone; the read it causes does.
#[test]
fn a_peers_write_from_the_log_is_read_again_before_it_answers_alone() {
    let c = cache(10);
    let t0 = Instant::now();
    let key = record("sk-shared");
    c.put(&key.token, present(&key), 1, t0);
    c.add_spend(&[(key.token.clone(), 4.0)].into(), &HashMap::new());
    let written_by_peer = KeyRecord {
        key_alias: Some("renamed".into()),
        spend: 1.0,
        ..key.clone()
    };
    c.put_change(&key.token, present(&written_by_peer), 2, t0);
    assert_eq!(
        c.get(&key.token, t0),
        Lookup::Stale(present(&written_by_peer))
    );
    let read = KeyRecord {
        spend: 4.0,
        ..written_by_peer.clone()
    };
    c.put(&key.token, present(&read), 2, t0);
    assert_eq!(c.get(&key.token, t0), Lookup::Fresh(present(&read)));
    c.put_change(&key.token, present(&written_by_peer), 2, t0);
    assert_eq!(
        c.get(&key.token, t0),
        Lookup::Fresh(present(&read)),
        "the same write read again from the log: the read is kept"
    );
}

/// A check's read whose snapshot began before a drain, put after the drain added its spend
/// to the held record: of the same version, the larger spend is kept (spend only grows
/// within a version); a newer version is taken as it is (a reset is a write).
#[test]
fn a_read_from_before_a_drain_does_not_undo_the_spend_it_added() {
    let c = cache(10);
    let now = Instant::now();
    let mut key = record("sk-raced");
    key.team_id = Some("t".into());
    key.spend = 1.0;
    key.team.spend = 10.0;
    c.put(&key.token, present(&key), 4, now);
    let drained = [(key.token.clone(), 2.0)].into();
    c.add_spend(&drained, &[("t".to_string(), 2.0)].into());
    let spends = || match c.get(&key.token, now) {
        Lookup::Fresh(KeyState::Present(r)) => (r.spend, r.team.spend),
        other => panic!("{other:?}"),
    };
    c.put(&key.token, present(&key), 4, now);
    assert_eq!(spends(), (3.0, 12.0), "the read from before the drain");
    let mut later = key.clone();
    later.spend = 5.0;
    c.put(&key.token, present(&later), 4, now);
    assert_eq!(spends(), (5.0, 12.0), "a read with a peer's drains too");
    let mut reset = key.clone();
    reset.spend = 0.0;
    reset.team.spend = 0.0;
    c.put(&key.token, present(&reset), 5, now);
    assert_eq!(spends(), (0.0, 0.0), "a newer version: a reset");
}
