//! The decision cache: fresh and stale allows, denies, cached 429s, revocations and its bound.

use super::*;
use proptest::prelude::*;

const ALLOW_TTL: u64 = 10_000;
const DENY_TTL: u64 = 2_000;
const STALE: u64 = 300_000;

fn policy() -> CacheConfig {
    CacheConfig {
        max_entries: 3,
        allow_ttl_ms: ALLOW_TTL,
        deny_ttl_ms: DENY_TTL,
        stale_if_error_ms: STALE,
    }
}

fn cache() -> DecisionCache {
    DecisionCache::new(policy())
}

fn h(n: u32) -> KeyHash {
    KeyHash::parse_hex(&format!("{n:064x}")).unwrap()
}

fn who(alias: &str) -> Identity {
    Identity {
        model_limits: Default::default(),
        key_alias: Some(alias.into()),
        ..Identity::default()
    }
}

#[test]
fn an_unknown_key_is_a_miss() {
    assert_eq!(cache().fresh(&h(1), 0), None);
    assert_eq!(cache().stale_allow(&h(1), 0), None);
}

#[test]
fn an_allow_is_fresh_until_its_ttl_ends() {
    let mut c = cache();
    c.record_allow(h(1), who("a"), Grant::ttl(u64::MAX), 1_000);
    assert_eq!(c.fresh(&h(1), 1_000), Some(Cached::Allow(who("a"))));
    assert_eq!(
        c.fresh(&h(1), 1_000 + ALLOW_TTL - 1),
        Some(Cached::Allow(who("a")))
    );
    assert_eq!(c.fresh(&h(1), 1_000 + ALLOW_TTL), None);
}

#[test]
fn a_shorter_hint_from_the_control_plane_wins() {
    let mut c = cache();
    c.record_allow(h(1), who("a"), Grant::ttl(3_000), 0);
    assert!(c.fresh(&h(1), 2_999).is_some());
    assert_eq!(c.fresh(&h(1), 3_000), None);
}

#[test]
fn a_longer_hint_is_capped_by_the_configured_ttl() {
    let mut c = cache();
    c.record_allow(h(1), who("a"), Grant::ttl(60_000), 0);
    assert_eq!(c.fresh(&h(1), ALLOW_TTL), None);
}

#[test]
fn a_zero_hint_is_never_fresh_but_can_still_serve_stale() {
    let mut c = cache();
    c.record_allow(h(1), who("a"), Grant::ttl(0), 0);
    assert_eq!(c.fresh(&h(1), 0), None);
    assert_eq!(c.stale_allow(&h(1), 1), Some(who("a")));
}

#[test]
fn a_deny_is_cached_for_the_negative_ttl() {
    let mut c = cache();
    c.record_deny(h(1), DenyReason::KeyBlocked, 500);
    assert_eq!(
        c.fresh(&h(1), 500 + DENY_TTL - 1),
        Some(Cached::Deny(DenyReason::KeyBlocked))
    );
    assert_eq!(c.fresh(&h(1), 500 + DENY_TTL), None);
    assert!(
        c.is_empty(),
        "an expired deny serves nothing and is dropped"
    );
}

#[test]
fn a_zero_negative_ttl_caches_no_deny() {
    let mut c = DecisionCache::new(CacheConfig {
        deny_ttl_ms: 0,
        ..policy()
    });
    c.record_deny(h(1), DenyReason::InvalidKey, 0);
    assert_eq!(c.fresh(&h(1), 0), None);
}

#[test]
fn an_expired_allow_is_served_stale_inside_the_window_only() {
    let mut c = cache();
    c.record_allow(h(1), who("a"), Grant::ttl(u64::MAX), 0);
    let expired_at = ALLOW_TTL;
    assert_eq!(c.fresh(&h(1), expired_at), None);
    assert_eq!(c.stale_allow(&h(1), expired_at), Some(who("a")));
    assert_eq!(c.stale_allow(&h(1), expired_at + STALE - 1), Some(who("a")));
    assert_eq!(c.stale_allow(&h(1), expired_at + STALE), None);
}

#[test]
fn a_fresh_miss_keeps_the_entry_for_stale_use_then_drops_it() {
    let mut c = cache();
    c.record_allow(h(1), who("a"), Grant::ttl(u64::MAX), 0);
    assert_eq!(c.fresh(&h(1), ALLOW_TTL + 1), None);
    assert_eq!(c.len(), 1);
    assert_eq!(c.fresh(&h(1), ALLOW_TTL + STALE), None);
    assert!(c.is_empty());
}

#[test]
fn no_stale_window_means_no_stale_allow() {
    let mut c = DecisionCache::new(CacheConfig {
        stale_if_error_ms: 0,
        ..policy()
    });
    c.record_allow(h(1), who("a"), Grant::ttl(u64::MAX), 0);
    assert_eq!(c.stale_allow(&h(1), ALLOW_TTL), None);
}

#[test]
fn a_deny_is_never_served_stale() {
    let mut c = cache();
    c.record_deny(h(1), DenyReason::KeyBlocked, 0);
    for now in [0, DENY_TTL, DENY_TTL + 1, STALE] {
        assert_eq!(c.stale_allow(&h(1), now), None, "at {now}");
    }
}

#[test]
fn a_deny_replaces_an_earlier_allow_even_for_stale_use() {
    let mut c = cache();
    c.record_allow(h(1), who("a"), Grant::ttl(u64::MAX), 0);
    c.record_deny(h(1), DenyReason::KeyBlocked, 1);
    assert_eq!(c.stale_allow(&h(1), ALLOW_TTL + 1), None);
}

#[test]
fn a_deny_with_zero_negative_ttl_still_forgets_the_allow() {
    let mut c = DecisionCache::new(CacheConfig {
        deny_ttl_ms: 0,
        ..policy()
    });
    c.record_allow(h(1), who("a"), Grant::ttl(u64::MAX), 0);
    c.record_deny(h(1), DenyReason::KeyExpired, 1);
    assert_eq!(c.fresh(&h(1), 2), None);
    assert_eq!(c.stale_allow(&h(1), 2), None);
}

#[test]
fn a_new_allow_replaces_the_old_identity() {
    let mut c = cache();
    c.record_allow(h(1), who("old"), Grant::ttl(u64::MAX), 0);
    c.record_allow(h(1), who("new"), Grant::ttl(u64::MAX), 1);
    assert_eq!(c.fresh(&h(1), 2), Some(Cached::Allow(who("new"))));
    assert_eq!(c.len(), 1);
}

#[test]
fn the_cache_never_holds_more_than_max_entries() {
    let mut c = cache();
    for n in 0..10 {
        c.record_allow(h(n), who("a"), Grant::ttl(u64::MAX), 0);
        assert!(c.len() <= 3);
    }
    assert_eq!(c.len(), 3);
}

#[test]
fn the_oldest_entry_is_evicted_first() {
    let mut c = cache();
    c.record_allow(h(1), who("1"), Grant::ttl(u64::MAX), 0);
    c.record_allow(h(2), who("2"), Grant::ttl(u64::MAX), 0);
    c.record_allow(h(3), who("3"), Grant::ttl(u64::MAX), 0);
    c.record_allow(h(1), who("1b"), Grant::ttl(u64::MAX), 1); // refreshed: now the newest
    c.record_allow(h(4), who("4"), Grant::ttl(u64::MAX), 2);
    assert_eq!(c.fresh(&h(2), 3), None, "h(2) was the oldest");
    assert!(c.fresh(&h(1), 3).is_some());
    assert!(c.fresh(&h(3), 3).is_some());
    assert!(c.fresh(&h(4), 3).is_some());
}

#[test]
fn a_flood_of_denies_cannot_evict_an_allow() {
    let mut c = cache();
    c.record_allow(h(1), who("a"), Grant::ttl(u64::MAX), 0);
    for n in 100..10_100 {
        c.record_deny(h(n), DenyReason::InvalidKey, 0);
    }
    assert_eq!(c.fresh(&h(1), 1), Some(Cached::Allow(who("a"))));
    assert_eq!(c.len(), 1 + 3, "each pool holds at most max_entries");
}

#[test]
fn nothing_is_served_past_the_keys_expiry_fresh_or_stale() {
    let mut c = cache();
    let grant = Grant {
        expires_at: Some(5_000),
        ..Grant::ttl(u64::MAX)
    };
    c.record_allow(h(1), who("a"), grant, 0);
    assert!(c.fresh(&h(1), 4_999).is_some());
    assert_eq!(c.fresh(&h(1), 5_000), None);
    assert_eq!(c.stale_allow(&h(1), 5_000), None);
}

fn change(seq: u64, n: u32, status: KeyStatus) -> KeyChange {
    KeyChange {
        seq,
        key_hash: h(n),
        status,
    }
}

#[test]
fn a_pushed_revocation_replaces_the_allow_and_holds_through_the_stale_window() {
    let mut c = cache();
    c.record_allow(h(1), who("a"), Grant::ttl(u64::MAX), 0);
    c.apply_change(&change(7, 1, KeyStatus::Blocked), 10);
    assert_eq!(
        c.fresh(&h(1), 11),
        Some(Cached::Deny(DenyReason::KeyBlocked))
    );
    assert_eq!(c.stale_allow(&h(1), 11), None);
    assert_eq!(
        c.fresh(&h(1), 10 + STALE - 1),
        Some(Cached::Deny(DenyReason::KeyBlocked))
    );
    c.apply_change(&change(8, 2, KeyStatus::Deleted), 10);
    assert_eq!(
        c.fresh(&h(2), 11),
        Some(Cached::Deny(DenyReason::InvalidKey))
    );
}

#[test]
fn an_allow_older_than_a_revocation_already_applied_is_refused() {
    let mut c = cache();
    c.apply_change(&change(7, 1, KeyStatus::Blocked), 0);
    let older = Grant {
        version: 6,
        ..Grant::ttl(u64::MAX)
    };
    assert_eq!(
        c.record_allow(h(1), who("a"), older, 1),
        Some(DenyReason::KeyBlocked)
    );
    assert_eq!(
        c.fresh(&h(1), 2),
        Some(Cached::Deny(DenyReason::KeyBlocked))
    );
    let newer = Grant {
        version: 9,
        ..Grant::ttl(u64::MAX)
    };
    assert_eq!(c.record_allow(h(1), who("a"), newer, 3), None);
    assert_eq!(c.fresh(&h(1), 4), Some(Cached::Allow(who("a"))));
}

#[test]
fn an_unblock_forgets_the_key_so_the_next_request_asks_again() {
    let mut c = cache();
    c.apply_change(&change(7, 1, KeyStatus::Blocked), 0);
    c.apply_change(&change(8, 1, KeyStatus::Active), 1);
    assert_eq!(c.fresh(&h(1), 2), None);
    assert_eq!(c.stale_allow(&h(1), 2), None);
}

#[test]
fn a_change_the_cached_allow_already_reflects_keeps_it() {
    // The key's creation (version 5) reaches the feed after its first allow (version 5):
    // the allow stays, so it can still be served through an outage.
    let mut c = cache();
    let grant = Grant {
        version: 5,
        ..Grant::ttl(u64::MAX)
    };
    let _ = c.record_allow(h(1), who("a"), grant, 0);
    c.apply_change(&change(5, 1, KeyStatus::Active), 1);
    assert_eq!(c.fresh(&h(1), 2), Some(Cached::Allow(who("a"))));
    c.apply_change(&change(6, 1, KeyStatus::Active), 3);
    assert_eq!(
        c.fresh(&h(1), 4),
        None,
        "a newer change is asked about again"
    );
}

#[test]
fn forgetting_allows_keeps_denies() {
    let mut c = cache();
    c.record_allow(h(1), who("a"), Grant::ttl(u64::MAX), 0);
    c.record_deny(h(2), DenyReason::InvalidKey, 0);
    c.forget_allows();
    assert_eq!(c.fresh(&h(1), 1), None);
    assert_eq!(c.stale_allow(&h(1), 1), None);
    assert!(c.fresh(&h(2), 1).is_some());
}

#[test]
fn a_single_slot_cache_keeps_the_latest_decision() {
    let mut c = DecisionCache::new(CacheConfig {
        max_entries: 1,
        ..policy()
    });
    c.record_allow(h(1), who("1"), Grant::ttl(u64::MAX), 0);
    c.record_allow(h(2), who("2"), Grant::ttl(u64::MAX), 0);
    assert_eq!(c.len(), 1);
    assert!(c.fresh(&h(2), 0).is_some());
}

#[test]
fn times_near_the_end_of_the_clock_do_not_overflow() {
    let mut c = cache();
    c.record_allow(h(1), who("a"), Grant::ttl(u64::MAX), u64::MAX - 1);
    assert!(c.fresh(&h(1), u64::MAX - 1).is_some());
    assert_eq!(c.stale_allow(&h(1), u64::MAX), None);
}

proptest! {
    #[test]
    fn any_sequence_of_operations_stays_bounded_and_never_serves_a_deny_stale(
        ops in proptest::collection::vec((0u8..4, 0u32..6, 0u64..400_000), 0..80),
    ) {
        let mut c = cache();
        let mut now = 0u64;
        for (op, key, step) in ops {
            now = now.saturating_add(step);
            match op {
                0 => { let _ = c.record_allow(h(key), who("a"), Grant::ttl(step), now); }
                1 => c.record_deny(h(key), DenyReason::KeyBlocked, now),
                2 => { let _ = c.fresh(&h(key), now); }
                _ => {
                    let fresh = c.fresh(&h(key), now);
                    if matches!(fresh, Some(Cached::Deny(_))) {
                        prop_assert_eq!(c.stale_allow(&h(key), now), None);
                    }
                }
            }
            prop_assert!(c.len() <= 6);
        }
    }
}

fn limited_who(alias: &str) -> Identity {
    Identity {
        model_limits: Default::default(),
        limits: livegate_contract::RateLimits {
            rpm_limit: Some(10),
            tpm_limit: None,
            max_parallel_requests: None,
        },
        ..who(alias)
    }
}

fn limited(reset_at_ms: u64) -> RateLimited {
    RateLimited {
        kind: livegate_contract::LimitKind::Requests,
        scope: livegate_contract::BudgetScope::Key,
        team_id: None,
        user_id: None,
        model: None,
        limit: 10,
        reset_at_ms,
    }
}

#[test]
fn an_allow_for_a_key_with_limits_is_never_fresh_but_kept_for_outages() {
    let mut c = cache();
    c.record_allow(h(1), limited_who("a"), Grant::ttl(u64::MAX), 1_000);
    assert_eq!(c.fresh(&h(1), 1_000), None);
    assert_eq!(
        c.stale_allow(&h(1), 1_000 + STALE - 1),
        Some(limited_who("a"))
    );
    assert_eq!(c.stale_allow(&h(1), 1_000 + STALE), None);
}

#[test]
fn a_key_without_limits_keeps_its_fresh_allow() {
    let mut c = cache();
    c.record_allow(h(1), who("a"), Grant::ttl(u64::MAX), 0);
    c.record_allow(h(2), limited_who("b"), Grant::ttl(u64::MAX), 0);
    assert_eq!(c.fresh(&h(1), 1), Some(Cached::Allow(who("a"))));
    assert_eq!(c.fresh(&h(2), 1), None);
}

#[test]
fn a_rate_limit_refusal_is_served_until_its_window_has_room() {
    let mut c = cache();
    c.record_rate_limited(h(1), limited(5_000), 1_000);
    assert_eq!(
        c.fresh(&h(1), 4_999),
        Some(Cached::RateLimited(limited(5_000)))
    );
    assert_eq!(c.fresh(&h(1), 5_000), None);
    assert!(c.is_empty());
}

#[test]
fn a_rate_limit_refusal_is_kept_no_longer_than_one_window() {
    let mut c = cache();
    c.record_rate_limited(h(1), limited(10 * WINDOW_MS), 0);
    assert!(c.fresh(&h(1), WINDOW_MS - 1).is_some());
    assert_eq!(c.fresh(&h(1), WINDOW_MS), None);
}

#[test]
fn a_rate_limit_refusal_already_past_is_not_kept() {
    let mut c = cache();
    c.record_rate_limited(h(1), limited(1_000), 1_000);
    assert!(c.is_empty());
}

#[test]
fn a_rate_limit_refusal_leaves_the_stale_allow_usable() {
    let mut c = cache();
    c.record_allow(h(1), limited_who("a"), Grant::ttl(0), 0);
    c.record_rate_limited(h(1), limited(5_000), 1_000);
    assert_eq!(c.stale_allow(&h(1), 2_000), Some(limited_who("a")));
}

#[test]
fn any_change_or_a_feed_reset_drops_a_rate_limit_refusal() {
    let mut c = cache();
    c.record_rate_limited(h(1), limited(50_000), 0);
    c.apply_change(&change(7, 1, KeyStatus::Active), 1);
    assert_eq!(c.fresh(&h(1), 2), None);
    c.record_rate_limited(h(1), limited(50_000), 0);
    c.forget_allows();
    assert_eq!(c.fresh(&h(1), 2), None);
    c.record_rate_limited(h(1), limited(50_000), 0);
    c.apply_change(&change(8, 1, KeyStatus::Blocked), 1);
    assert_eq!(
        c.fresh(&h(1), 2),
        Some(Cached::Deny(DenyReason::KeyBlocked))
    );
}

fn parallel_who(alias: &str) -> Identity {
    Identity {
        model_limits: Default::default(),
        limits: livegate_contract::RateLimits {
            max_parallel_requests: Some(2),
            ..livegate_contract::RateLimits::default()
        },
        ..who(alias)
    }
}

#[test]
fn an_allow_for_a_key_with_only_a_parallel_limit_is_never_fresh_but_kept_for_outages() {
    let mut c = cache();
    c.record_allow(h(1), parallel_who("a"), Grant::ttl(u64::MAX), 0);
    assert_eq!(c.fresh(&h(1), 1), None);
    assert_eq!(c.stale_allow(&h(1), 1), Some(parallel_who("a")));
}

#[test]
fn a_parallel_refusal_is_not_kept_and_leaves_a_kept_refusal_alone() {
    let parallel = RateLimited {
        kind: livegate_contract::LimitKind::Parallel,
        ..limited(2_000)
    };
    let mut c = cache();
    c.record_rate_limited(h(1), parallel.clone(), 1_000);
    assert!(c.is_empty());
    assert_eq!(c.fresh(&h(1), 1_000), None);

    c.record_rate_limited(h(1), limited(5_000), 1_000);
    c.record_rate_limited(h(1), parallel, 1_001);
    assert_eq!(
        c.fresh(&h(1), 1_002),
        Some(Cached::RateLimited(limited(5_000)))
    );
}

/// The race of a budget crossing: a check answered just before the crossing arrives after
/// the feed brought the crossing's change (an Active change: the key's new record). That
/// allow must not be kept, or the worker admits the key for a whole allow TTL.
#[test]
fn an_allow_made_before_a_change_already_applied_is_not_kept() {
    let mut c = cache();
    c.apply_change(&change(5, 1, KeyStatus::Active), 0);
    let before_the_change = Grant {
        version: 4,
        ..Grant::ttl(u64::MAX)
    };
    assert_eq!(c.record_allow(h(1), who("a"), before_the_change, 1), None);
    assert_eq!(c.fresh(&h(1), 2), None, "the next request asks again");
    assert_eq!(
        c.stale_allow(&h(1), 2),
        None,
        "nor is it kept for an outage"
    );
    let after_it = Grant {
        version: 5,
        ..Grant::ttl(u64::MAX)
    };
    assert_eq!(c.record_allow(h(1), who("a"), after_it, 3), None);
    assert_eq!(c.fresh(&h(1), 4), Some(Cached::Allow(who("a"))));
    // An older change arriving late does not lower what is known.
    c.apply_change(&change(3, 1, KeyStatus::Active), 5);
    assert_eq!(c.fresh(&h(1), 6), Some(Cached::Allow(who("a"))));
}
