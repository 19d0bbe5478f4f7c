//! Each worker's outage windows: its share of a key's limits, parallel requests, tokens.

use super::*;
use livegate_contract::rate_limit::WINDOW_MS;
use proptest::prelude::*;

fn h(n: u32) -> KeyHash {
    KeyHash::parse_hex(&format!("{n:064x}")).unwrap()
}

fn rpm(n: u64) -> RateLimits {
    RateLimits {
        rpm_limit: Some(n),
        tpm_limit: None,
        max_parallel_requests: None,
    }
}

fn tpm(n: u64) -> RateLimits {
    RateLimits {
        rpm_limit: None,
        tpm_limit: Some(n),
        max_parallel_requests: None,
    }
}

#[test]
fn the_local_limit_is_the_share_rounded_down_and_never_below_one() {
    let quarter = LocalLimits::new(0.25, 10);
    assert_eq!(quarter.local_limit(100), 25);
    assert_eq!(quarter.local_limit(7), 1);
    assert_eq!(quarter.local_limit(3), 1);
    assert_eq!(quarter.local_limit(0), 1);
    assert_eq!(quarter.local_limit(u64::MAX), u64::MAX / 4);
    // 0.29 × 100 is 28.999… in floating point: the share is exact here.
    assert_eq!(LocalLimits::new(0.29, 10).local_limit(100), 29);
    assert_eq!(LocalLimits::new(1.0, 10).local_limit(100), 100);
    assert_eq!(LocalLimits::new(1e-9, 10).local_limit(1_000_000), 1);
}

#[test]
fn a_key_without_limits_is_admitted_and_not_tracked() {
    let mut local = LocalLimits::new(0.25, 10);
    for t in 0..1_000 {
        assert_eq!(local.admit(&h(1), RateLimits::default(), t), Ok(None));
    }
    assert!(local.is_empty());
}

#[test]
fn requests_are_admitted_up_to_the_share_then_refused_until_the_window_has_room() {
    let mut local = LocalLimits::new(0.25, 10);
    for i in 0..25 {
        assert_eq!(
            local.admit(&h(1), rpm(100), 1_000 + i),
            Ok(None),
            "request {i}"
        );
    }
    let refused = local.admit(&h(1), rpm(100), 2_000).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Requests);
    assert_eq!(refused.scope, BudgetScope::Key);
    assert_eq!(refused.limit, 25);
    // The 25 admissions share one 100 ms bucket, held to its latest (1_024): they leave
    // the window together, a minute after it, never earlier.
    let room_at = 1_024 + WINDOW_MS;
    assert_eq!(refused.reset_at_ms, room_at);
    assert!(local.admit(&h(1), rpm(100), room_at - 1).is_err());
    for i in 0..25 {
        assert_eq!(
            local.admit(&h(1), rpm(100), room_at),
            Ok(None),
            "request {i}"
        );
    }
    assert!(local.admit(&h(1), rpm(100), room_at).is_err());
}

#[test]
fn a_refusal_is_not_counted() {
    let mut local = LocalLimits::new(0.5, 10);
    assert_eq!(local.admit(&h(1), rpm(2), 0), Ok(None));
    for t in 1..100 {
        assert!(local.admit(&h(1), rpm(2), t).is_err());
    }
    assert_eq!(local.admit(&h(1), rpm(2), WINDOW_MS), Ok(None));
}

#[test]
fn keys_are_counted_apart() {
    let mut local = LocalLimits::new(0.5, 10);
    assert_eq!(local.admit(&h(1), rpm(2), 0), Ok(None));
    assert!(local.admit(&h(1), rpm(2), 0).is_err());
    assert_eq!(local.admit(&h(2), rpm(2), 0), Ok(None));
}

#[test]
fn tokens_refuse_once_the_metered_total_reaches_the_share() {
    let mut local = LocalLimits::new(0.25, 10);
    assert_eq!(local.admit(&h(1), tpm(1_000), 0), Ok(None));
    local.add_tokens(&h(1), 249, 1_500);
    assert_eq!(local.admit(&h(1), tpm(1_000), 2_000), Ok(None));
    local.add_tokens(&h(1), 1, 2_100);
    let refused = local.admit(&h(1), tpm(1_000), 3_000).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Tokens);
    assert_eq!(refused.limit, 250);
    // Counted in whole seconds: the 249 at 1.5 s leave the window at 61 s.
    assert_eq!(refused.reset_at_ms, 1_000 + WINDOW_MS);
    assert_eq!(local.admit(&h(1), tpm(1_000), 1_000 + WINDOW_MS), Ok(None));
}

#[test]
fn a_tokens_refusal_counts_no_request() {
    let mut local = LocalLimits::new(1.0, 10);
    let both = RateLimits {
        rpm_limit: Some(2),
        tpm_limit: Some(10),
        max_parallel_requests: None,
    };
    local.add_tokens(&h(1), 10, 0);
    assert!(local.admit(&h(1), both, 0).is_err());
    assert!(local.admit(&h(1), both, 0).is_err());
    assert_eq!(local.admit(&h(1), both, WINDOW_MS), Ok(None));
    assert_eq!(local.admit(&h(1), both, WINDOW_MS), Ok(None));
    let refused = local.admit(&h(1), both, WINDOW_MS).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Requests);
}

#[test]
fn the_keys_tracked_are_bounded_and_the_idlest_is_forgotten() {
    let mut local = LocalLimits::new(0.5, 2);
    assert_eq!(local.admit(&h(1), rpm(2), 0), Ok(None));
    assert_eq!(local.admit(&h(2), rpm(2), 0), Ok(None));
    local.add_tokens(&h(1), 5, 1); // key 1 is the more recently counted
    assert_eq!(local.admit(&h(3), rpm(2), 2), Ok(None));
    assert_eq!(local.len(), 2);
    assert!(
        local.admit(&h(1), rpm(2), 3).is_err(),
        "key 1 is still counted"
    );
    assert_eq!(
        local.admit(&h(2), rpm(2), 3),
        Ok(None),
        "key 2 was forgotten"
    );
}

fn parallel(n: u64) -> RateLimits {
    RateLimits {
        max_parallel_requests: Some(n),
        ..RateLimits::default()
    }
}

#[test]
fn requests_in_flight_are_admitted_up_to_the_share_then_refused_until_one_ends() {
    // max_parallel_requests 10 at 0.25: max(1, ⌊2.5⌋) = 2 in flight on this worker.
    let mut local = LocalLimits::new(0.25, 10);
    let first = local.admit(&h(1), parallel(10), 0).unwrap().unwrap();
    let second = local.admit(&h(1), parallel(10), 1).unwrap().unwrap();
    assert_eq!(local.in_flight(&h(1)), 2);
    let refused = local.admit(&h(1), parallel(10), 5_000).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Parallel);
    assert_eq!(refused.scope, BudgetScope::Key);
    assert_eq!(refused.limit, 2);
    // A slot frees whenever a request ends: a second is the best guess of when.
    assert_eq!(refused.reset_at_ms, 6_000);
    assert_eq!(local.in_flight(&h(1)), 2, "a refusal holds no slot");
    // No window: however long they run, two in flight are two.
    assert!(local.admit(&h(1), parallel(10), 10 * WINDOW_MS).is_err());

    local.end(first);
    assert_eq!(local.in_flight(&h(1)), 1);
    let third = local
        .admit(&h(1), parallel(10), 10 * WINDOW_MS)
        .unwrap()
        .unwrap();
    assert!(local.admit(&h(1), parallel(10), 10 * WINDOW_MS).is_err());
    local.end(second);
    local.end(third);
    assert_eq!(local.in_flight(&h(1)), 0);
}

#[test]
fn the_local_parallel_limit_is_never_below_one() {
    let mut local = LocalLimits::new(0.25, 10);
    let only = local.admit(&h(1), parallel(1), 0).unwrap().unwrap();
    assert!(local.admit(&h(1), parallel(1), 0).is_err());
    local.end(only);
    assert!(local.admit(&h(1), parallel(1), 0).is_ok());
}

#[test]
fn requests_the_control_plane_admitted_count_in_flight_and_are_never_refused() {
    let mut local = LocalLimits::new(0.5, 10);
    let started: Vec<_> = (0..5)
        .map(|_| local.start(&h(1), parallel(2)).unwrap())
        .collect();
    assert_eq!(local.in_flight(&h(1)), 5);
    assert_eq!(
        local.admit(&h(1), parallel(2), 0).unwrap_err().kind,
        LimitKind::Parallel
    );
    for request in started {
        local.end(request);
    }
    assert_eq!(local.in_flight(&h(1)), 0);
    assert!(local.admit(&h(1), parallel(2), 0).is_ok());
}

#[test]
fn a_key_without_a_parallel_limit_holds_nothing_in_flight() {
    let mut local = LocalLimits::new(0.5, 10);
    assert_eq!(local.start(&h(1), rpm(10)), None);
    assert_eq!(local.admit(&h(1), rpm(10), 0), Ok(None));
    assert_eq!(local.in_flight(&h(1)), 0);
}

#[test]
fn a_parallel_refusal_counts_no_request_in_the_window() {
    let mut local = LocalLimits::new(1.0, 10);
    let both = RateLimits {
        rpm_limit: Some(2),
        max_parallel_requests: Some(1),
        ..RateLimits::default()
    };
    let held = local.admit(&h(1), both, 0).unwrap().unwrap();
    for t in 1..10 {
        assert_eq!(
            local.admit(&h(1), both, t).unwrap_err().kind,
            LimitKind::Parallel
        );
    }
    local.end(held);
    assert!(
        local.admit(&h(1), both, 10).is_ok(),
        "one of two in the window"
    );
}

#[test]
fn a_full_request_window_refuses_before_the_parallel_limit() {
    // Both reached: the window's wait is the longer, and the true one.
    let mut local = LocalLimits::new(1.0, 10);
    let both = RateLimits {
        rpm_limit: Some(1),
        max_parallel_requests: Some(1),
        ..RateLimits::default()
    };
    let _held = local.admit(&h(1), both, 0).unwrap().unwrap();
    let refused = local.admit(&h(1), both, 1).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Requests);
    assert_eq!(refused.reset_at_ms, WINDOW_MS);
}

#[test]
fn a_key_forgotten_at_the_bound_starts_again_from_zero_and_old_ends_leave_it_alone() {
    let mut local = LocalLimits::new(1.0, 1);
    let old_a = local.admit(&h(1), parallel(2), 0).unwrap().unwrap();
    let old_b = local.admit(&h(1), parallel(2), 0).unwrap().unwrap();
    // Key 2 evicts key 1, in flight or not.
    let other = local.start(&h(2), parallel(2)).unwrap();
    assert_eq!(local.in_flight(&h(1)), 0);
    // Ending a request of a forgotten key changes nothing, and does not panic.
    local.end(old_a);
    assert_eq!(local.len(), 1);
    // Key 1 again, from zero: the old requests' ends do not free the new one's slots.
    let new = local.admit(&h(1), parallel(2), 1).unwrap().unwrap();
    local.end(old_b);
    assert_eq!(local.in_flight(&h(1)), 1);
    local.end(other);
    local.end(new);
    assert_eq!(local.in_flight(&h(1)), 0);
}

proptest! {
    #[test]
    fn in_flight_never_passes_the_local_limit_and_returns_to_zero(
        limit in 1u64..20,
        share in 0.01f64..=1.0,
        steps in proptest::collection::vec(any::<bool>(), 1..200),
    ) {
        let mut local = LocalLimits::new(share, 10);
        let bound = local.local_limit(limit);
        let mut held = Vec::new();
        for (t, start) in steps.into_iter().enumerate() {
            if start {
                if let Ok(Some(request)) = local.admit(&h(1), parallel(limit), t as u64) {
                    held.push(request);
                }
            } else if let Some(request) = held.pop() {
                local.end(request);
            }
            prop_assert_eq!(local.in_flight(&h(1)), held.len() as u64);
            prop_assert!(local.in_flight(&h(1)) <= bound);
        }
        for request in held {
            local.end(request);
        }
        prop_assert_eq!(local.in_flight(&h(1)), 0);
    }
}

proptest! {
    #[test]
    fn a_window_never_admits_more_than_the_local_limit(
        limit in 1u64..50,
        share in 0.01f64..=1.0,
        gaps in proptest::collection::vec(0u64..5_000, 1..200),
    ) {
        let mut local = LocalLimits::new(share, 10);
        let bound = local.local_limit(limit);
        let mut admitted: Vec<u64> = Vec::new();
        let mut now = 0;
        for gap in gaps {
            now += gap;
            if local.admit(&h(1), rpm(limit), now).is_ok() {
                admitted.push(now);
            }
            let in_window = admitted.iter().filter(|t| **t + WINDOW_MS > now).count() as u64;
            prop_assert!(in_window <= bound);
            prop_assert!(bound >= 1);
        }
    }
}
