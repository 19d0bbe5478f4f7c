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
        assert_eq!(local.admit(&h(1), RateLimits::default(), t), Ok(()));
    }
    assert!(local.is_empty());
}

#[test]
fn requests_are_admitted_up_to_the_share_then_refused_until_the_window_has_room() {
    let mut local = LocalLimits::new(0.25, 10);
    for i in 0..25 {
        assert_eq!(
            local.admit(&h(1), rpm(100), 1_000 + i),
            Ok(()),
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
        assert_eq!(local.admit(&h(1), rpm(100), room_at), Ok(()), "request {i}");
    }
    assert!(local.admit(&h(1), rpm(100), room_at).is_err());
}

#[test]
fn a_refusal_is_not_counted() {
    let mut local = LocalLimits::new(0.5, 10);
    assert_eq!(local.admit(&h(1), rpm(2), 0), Ok(()));
    for t in 1..100 {
        assert!(local.admit(&h(1), rpm(2), t).is_err());
    }
    assert_eq!(local.admit(&h(1), rpm(2), WINDOW_MS), Ok(()));
}

#[test]
fn keys_are_counted_apart() {
    let mut local = LocalLimits::new(0.5, 10);
    assert_eq!(local.admit(&h(1), rpm(2), 0), Ok(()));
    assert!(local.admit(&h(1), rpm(2), 0).is_err());
    assert_eq!(local.admit(&h(2), rpm(2), 0), Ok(()));
}

#[test]
fn tokens_refuse_once_the_metered_total_reaches_the_share() {
    let mut local = LocalLimits::new(0.25, 10);
    assert_eq!(local.admit(&h(1), tpm(1_000), 0), Ok(()));
    local.add_tokens(&h(1), 249, 1_500);
    assert_eq!(local.admit(&h(1), tpm(1_000), 2_000), Ok(()));
    local.add_tokens(&h(1), 1, 2_100);
    let refused = local.admit(&h(1), tpm(1_000), 3_000).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Tokens);
    assert_eq!(refused.limit, 250);
    // Counted in whole seconds: the 249 at 1.5 s leave the window at 61 s.
    assert_eq!(refused.reset_at_ms, 1_000 + WINDOW_MS);
    assert_eq!(local.admit(&h(1), tpm(1_000), 1_000 + WINDOW_MS), Ok(()));
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
    assert_eq!(local.admit(&h(1), both, WINDOW_MS), Ok(()));
    assert_eq!(local.admit(&h(1), both, WINDOW_MS), Ok(()));
    let refused = local.admit(&h(1), both, WINDOW_MS).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Requests);
}

#[test]
fn the_keys_tracked_are_bounded_and_the_idlest_is_forgotten() {
    let mut local = LocalLimits::new(0.5, 2);
    assert_eq!(local.admit(&h(1), rpm(2), 0), Ok(()));
    assert_eq!(local.admit(&h(2), rpm(2), 0), Ok(()));
    local.add_tokens(&h(1), 5, 1); // key 1 is the more recently counted
    assert_eq!(local.admit(&h(3), rpm(2), 2), Ok(()));
    assert_eq!(local.len(), 2);
    assert!(
        local.admit(&h(1), rpm(2), 3).is_err(),
        "key 1 is still counted"
    );
    assert_eq!(local.admit(&h(2), rpm(2), 3), Ok(()), "key 2 was forgotten");
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
