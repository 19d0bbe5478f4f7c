//! The sliding window and the 429 both halves count rate limits with.

#![allow(clippy::unwrap_used)] // a test module: failures are panics

use super::*;
use proptest::prelude::*;

const T0: u64 = 1_800_000_000_000;

#[test]
fn a_fresh_key_uses_its_whole_limit_at_once_then_waits_a_full_window() {
    let mut log = WindowLog::new();
    for i in 0..5 {
        assert_eq!(log.admit(T0, 5), Ok(4 - i));
    }
    assert_eq!(log.admit(T0, 5), Err(T0 + WINDOW_MS));
    assert_eq!(log.admit(T0 + WINDOW_MS - 1, 5), Err(T0 + WINDOW_MS));
    assert_eq!(log.admit(T0 + WINDOW_MS, 5), Ok(4));
}

#[test]
fn no_double_burst_at_a_window_edge() {
    // Five at the end of one minute and five at the start of the next: a fixed window
    // would admit ten within two seconds; the sliding one admits none of the second five.
    let mut log = WindowLog::new();
    let edge = T0 + 59_000;
    for _ in 0..5 {
        log.admit(edge, 5).unwrap();
    }
    for _ in 0..5 {
        assert_eq!(log.admit(edge + 2_000, 5), Err(edge + WINDOW_MS));
    }
}

#[test]
fn room_comes_back_one_request_at_a_time() {
    let mut log = WindowLog::new();
    for s in 0..3 {
        log.admit(T0 + s * 1000, 3).unwrap();
    }
    assert_eq!(log.room_at(T0 + 3000, 3), T0 + WINDOW_MS);
    log.admit(T0 + WINDOW_MS, 3).unwrap();
    assert_eq!(log.room_at(T0 + WINDOW_MS, 3), T0 + 1000 + WINDOW_MS);
}

#[test]
fn a_limit_of_zero_admits_nothing() {
    let mut log = WindowLog::new();
    assert_eq!(log.admit(T0, 0), Err(T0 + WINDOW_MS));
}

#[test]
fn tokens_hold_the_window_until_enough_of_them_leave() {
    let mut log = WindowLog::new();
    log.add(T0, 600, T0);
    log.add(T0 + 10_000, 500, T0 + 10_000);
    // 1,100 of 1,000: room once the first 600 leave (500 < 1,000).
    assert_eq!(log.room_at(T0 + 20_000, 1000), T0 + WINDOW_MS);
    assert_eq!(log.total(T0 + WINDOW_MS), 500);
}

#[test]
fn a_clock_stepped_back_holds_the_window_one_window_not_the_size_of_the_step() {
    let mut log = WindowLog::new();
    for _ in 0..2 {
        log.admit(T0, 2).unwrap();
    }
    let back = T0 - 3_600_000;
    assert_eq!(log.admit(back, 2), Err(back + LEASE_MS + WINDOW_MS));
    assert_eq!(log.admit(back + LEASE_MS + WINDOW_MS, 2), Ok(1));
}

#[test]
fn a_lease_is_stamped_at_the_end_of_its_term_and_leaves_the_window_after_its_last_use() {
    let mut log = WindowLog::new();
    assert_eq!(log.reserve(T0, 10, 4), Ok(4));
    // Used up to the end of its term, it holds the window until a window after that.
    let end = T0 + LEASE_MS;
    assert_eq!(log.total(end + WINDOW_MS - 1), 4);
    assert_eq!(log.total(end + WINDOW_MS), 0);
}

#[test]
fn a_lease_takes_at_most_half_the_room_and_at_least_one() {
    let mut log = WindowLog::new();
    assert_eq!(log.reserve(T0, 10, 100), Ok(5));
    assert_eq!(log.reserve(T0, 10, 100), Ok(3));
    assert_eq!(log.reserve(T0, 10, 100), Ok(1));
    assert_eq!(log.reserve(T0, 10, 100), Ok(1));
    assert_eq!(log.total(T0), 10);
    assert_eq!(log.reserve(T0, 10, 1), Err(T0 + LEASE_MS + WINDOW_MS));
}

#[test]
fn the_unused_rest_of_a_lease_comes_back() {
    let mut log = WindowLog::new();
    log.admit(T0, 10).unwrap();
    assert_eq!(log.reserve(T0 + 10, 10, 4), Ok(4));
    log.release(T0 + 10 + LEASE_MS, 3, T0 + 500);
    assert_eq!(log.total(T0 + 500), 2);
    // Never more than was counted in that bucket, never off another bucket.
    log.release(T0 + 10 + LEASE_MS, 5, T0 + 500);
    assert_eq!(log.total(T0 + 500), 1);
}

#[test]
fn a_clock_stepped_forward_frees_the_window() {
    let mut log = WindowLog::new();
    log.admit(T0, 1).unwrap();
    assert_eq!(log.admit(T0 + 3_600_000, 1), Ok(0));
}

#[test]
fn entries_in_one_bucket_merge_and_leave_with_the_latest() {
    let mut log = WindowLog::new();
    let start = T0 - T0 % BUCKET_MS;
    for i in 0..BUCKET_MS {
        log.add(start + i, 1, start + i);
    }
    assert_eq!(log.entries().count(), 1);
    let last = start + BUCKET_MS - 1;
    assert_eq!(log.total(last + WINDOW_MS - 1), BUCKET_MS);
    assert_eq!(log.total(last + WINDOW_MS), 0);
    // A minute of admissions at 1,000 a second is 60 entries, not 60,000.
    let mut busy = WindowLog::new();
    for ms in 0..WINDOW_MS {
        busy.add(T0 + ms, 1, T0 + ms);
    }
    assert!(busy.entries().count() <= 61, "{}", busy.entries().count());
}

#[test]
fn the_headers_name_the_kind_and_the_wait() {
    let limited = RateLimited {
        kind: LimitKind::Tokens,
        scope: BudgetScope::Key,
        team_id: None,
        user_id: None,
        model: None,
        limit: 100,
        reset_at_ms: T0 + 90_500,
    };
    let headers = limited.headers(T0);
    assert_eq!(headers[0], ("retry-after".into(), "91".into()));
    assert_eq!(
        headers[1],
        ("x-ratelimit-limit-tokens".into(), "100".into())
    );
    assert_eq!(
        headers[2],
        ("x-ratelimit-remaining-tokens".into(), "0".into())
    );
    assert_eq!(
        headers[3],
        ("x-ratelimit-reset-tokens".into(), "1m31s".into())
    );
    assert_eq!(limited.retry_after_seconds(T0 + 90_500), 1);
    assert_eq!(openai_duration(250), "250ms");
    assert_eq!(openai_duration(12_000), "12s");
    let error = limited.error();
    assert_eq!(error.code, "429");
    assert!(error.message.contains("tpm_limit"), "{}", error.message);
    assert!(error.message.contains("100"), "{}", error.message);
}

#[test]
fn a_parallel_refusal_reads_as_litellm_says_it_and_sends_retry_after_alone() {
    let limited = RateLimited {
        kind: LimitKind::Parallel,
        scope: BudgetScope::Key,
        team_id: None,
        user_id: None,
        model: None,
        limit: 2,
        reset_at_ms: T0 + 1000,
    };
    assert_eq!(
        limited.headers(T0),
        vec![("retry-after".into(), "1".into())]
    );
    let error = limited.error();
    assert!(
        error
            .message
            .starts_with("Max parallel request limit reached"),
        "{}",
        error.message
    );
    assert_eq!(error.param.as_deref(), Some("max_parallel_requests"));
}

#[test]
fn a_long_span_counts_its_entries_for_that_long_in_coarser_buckets() {
    let mut log = WindowLog::spanning(PARALLEL_LEASE_MS);
    log.add(T0, 1, T0);
    assert_eq!(log.total(T0 + WINDOW_MS), 1);
    assert_eq!(log.total(T0 + PARALLEL_LEASE_MS), 0);
    let mut busy = WindowLog::spanning(PARALLEL_LEASE_MS);
    for s in 0..600_u64 {
        for ms in [0, 250, 500, 750] {
            busy.add(T0 + s * 1000 + ms, 1, T0 + s * 1000 + ms);
        }
    }
    // Ten-second buckets over ten minutes.
    assert!(busy.entries().count() <= 61, "{}", busy.entries().count());
    // A log read back keeps its span.
    let back: WindowLog = serde_json::from_value(serde_json::to_value(&busy).unwrap()).unwrap();
    assert_eq!(back, busy);
}

#[test]
fn the_stricter_limit_wins() {
    assert_eq!(RateLimits::stricter(Some(5), Some(3)), Some(3));
    assert_eq!(RateLimits::stricter(None, Some(3)), Some(3));
    assert_eq!(RateLimits::stricter(Some(5), None), Some(5));
    assert_eq!(RateLimits::stricter(None, None), None);
}

proptest! {
    /// Whatever the arrival times on a clock that moves forward, no 60 s span of
    /// admission times holds more than the limit, and a refusal's time is in the future.
    #[test]
    fn no_window_ever_holds_more_than_the_limit(
        limit in 0u64..8,
        steps in proptest::collection::vec(0u64..20_000, 1..200),
    ) {
        let mut log = WindowLog::new();
        let mut now = T0;
        let mut admitted: Vec<u64> = Vec::new();
        for step in steps {
            now += step;
            match log.admit(now, limit) {
                Ok(_) => admitted.push(now),
                Err(at) => prop_assert!(at > now),
            }
        }
        for (i, &t) in admitted.iter().enumerate() {
            let inside = admitted[i..].iter().filter(|&&u| u < t + WINDOW_MS).count();
            prop_assert!(inside as u64 <= limit);
        }
    }

    /// Admissions served from leases (each used within its term, the unused rest given
    /// back) never put more than the limit in any 60 s span either.
    #[test]
    fn leased_admissions_never_exceed_the_limit_in_any_window(
        limit in 1u64..20,
        steps in proptest::collection::vec((0u64..3_000, 1u64..8), 1..300),
    ) {
        let mut log = WindowLog::new();
        let mut now = T0;
        let mut lease: Option<(u64, u64)> = None; // (stamp, left)
        let mut admitted: Vec<u64> = Vec::new();
        for (step, wanted) in steps {
            now += step;
            match lease {
                Some((stamp, left)) if now <= stamp && left > 0 => {
                    lease = Some((stamp, left - 1));
                    admitted.push(now);
                    continue;
                }
                Some((stamp, left)) => log.release(stamp, left, now),
                None => {}
            }
            lease = None;
            if let Ok(granted) = log.reserve(now, limit, wanted) {
                lease = Some((now + LEASE_MS, granted - 1));
                admitted.push(now);
            }
        }
        for (i, &t) in admitted.iter().enumerate() {
            let inside = admitted[i..].iter().filter(|&&u| u < t + WINDOW_MS).count();
            prop_assert!(inside as u64 <= limit, "{} in the window from {}", inside, t);
        }
    }

    /// Merging two logs gives the same totals in either order.
    #[test]
    fn merging_is_order_free(
        a in proptest::collection::vec((0u64..120_000, 1u64..50), 0..30),
        b in proptest::collection::vec((0u64..120_000, 1u64..50), 0..30),
        probe in 0u64..200_000,
    ) {
        let now = T0 + 120_000;
        let build = |entries: &[(u64, u64)]| {
            let mut log = WindowLog::new();
            for &(t, amount) in entries {
                log.add(T0 + t, amount, now);
            }
            log
        };
        let (x, y) = (build(&a), build(&b));
        let mut xy = x.clone();
        xy.merge(&y, now);
        let mut yx = y.clone();
        yx.merge(&x, now);
        prop_assert_eq!(xy.total(now + probe), yx.total(now + probe));
    }
}
