//! A rate-limited key's share of a control plane's lease: admitted from the cache, with no
//! check, as many times as the share holds and no longer than its term.

use super::mock::*;
use super::*;
use livegate_contract::{AdmissionLease, AuthCheckResponse, RateLimits};

const T0: u64 = 1_000_000;

fn allow_leasing(limits: RateLimits, admissions: u64, valid_for_ms: u64) -> String {
    let body = allow_body_limited(ModelAccess::default(), limits);
    let mut answer: AuthCheckResponse = serde_json::from_str(&body).unwrap();
    if let AuthCheckResponse::Allow(allow) = &mut answer {
        allow.lease = Some(AdmissionLease {
            admissions,
            valid_for_ms,
        });
    }
    serde_json::to_string(&answer).unwrap()
}

fn rpm(n: u64) -> RateLimits {
    RateLimits {
        rpm_limit: Some(n),
        ..RateLimits::default()
    }
}

/// One keyed request at `now`: whether it asked the control plane, and its verdict
/// (answered with `answer` if it asked).
fn request(p: &Rc<Plugin>, now: u64, answer: &str) -> (bool, Verdict) {
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p.clone());
    let verdict = flow.on_request_headers(&host, Some(now));
    let asked = !host.dispatched.borrow().is_empty();
    if asked {
        return (true, respond(&mut flow, &host, "200", answer, now));
    }
    (false, verdict)
}

#[test]
fn a_leased_key_is_admitted_without_a_check_as_often_as_its_share_holds() {
    let p = plugin(Config::default());
    let answer = allow_leasing(rpm(100), 3, 500);
    assert_eq!(request(&p, T0, &answer), (true, Verdict::Continue));
    for i in 1..=3 {
        assert_eq!(request(&p, T0 + i, &answer), (false, Verdict::Continue));
    }
    // The share is used up: the next one asks (and brings a new share).
    assert_eq!(request(&p, T0 + 4, &answer), (true, Verdict::Continue));
}

#[test]
fn a_share_ends_with_its_term_whatever_is_left() {
    let p = plugin(Config::default());
    let answer = allow_leasing(rpm(100), 50, 500);
    assert_eq!(request(&p, T0, &answer), (true, Verdict::Continue));
    assert_eq!(request(&p, T0 + 499, &answer), (false, Verdict::Continue));
    assert_eq!(request(&p, T0 + 500, &answer), (true, Verdict::Continue));
}

#[test]
fn a_key_with_a_token_limit_takes_no_share_even_if_one_is_sent() {
    let p = plugin(Config::default());
    let limits = RateLimits {
        tpm_limit: Some(1000),
        ..rpm(100)
    };
    let answer = allow_leasing(limits, 5, 500);
    assert_eq!(request(&p, T0, &answer), (true, Verdict::Continue));
    assert_eq!(request(&p, T0 + 1, &answer), (true, Verdict::Continue));
}

#[test]
fn a_filter_that_waits_longer_than_the_margin_for_its_checks_takes_no_share() {
    let config = Config {
        auth_timeout_ms: livegate_contract::rate_limit::FILTER_LEASE_MARGIN_MS + 1,
        ..Config::default()
    };
    let p = plugin(config);
    let answer = allow_leasing(rpm(100), 5, 500);
    assert_eq!(request(&p, T0, &answer), (true, Verdict::Continue));
    assert_eq!(request(&p, T0 + 1, &answer), (true, Verdict::Continue));
}

#[test]
fn a_change_to_the_key_drops_its_share() {
    let p = plugin(Config::default());
    let answer = allow_leasing(rpm(100), 5, 500);
    assert_eq!(request(&p, T0, &answer), (true, Verdict::Continue));
    let change = livegate_contract::KeyChange {
        seq: 2,
        key_hash: livegate_contract::KeyHash::of_raw(KEY),
        status: livegate_contract::KeyStatus::Active,
    };
    p.with_cache(|c| c.apply_change(&change, T0 + 1));
    assert_eq!(request(&p, T0 + 2, &answer), (true, Verdict::Continue));
}
