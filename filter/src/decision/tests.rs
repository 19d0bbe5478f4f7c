//! The auth check's answer mapped to an outcome, for every status and body, malformed ones included.

use super::*;
use livegate_contract::{Allow, ApiKey};
use proptest::prelude::*;

fn hash() -> KeyHash {
    match ApiKey::from_headers(None, Some(b"sk-test")) {
        Ok(key) => key.hash(),
        Err(e) => panic!("{e:?}"),
    }
}

fn answer(status: &str, body: &str) -> Outcome {
    decide(
        CallResponse {
            header_count: 3,
            status: Some(status.as_bytes()),
            body: Some(body.as_bytes()),
        },
        &hash(),
    )
}

fn allow(key_alias: Option<&str>, team_id: Option<&str>, user_id: Option<&str>) -> Allow {
    Allow {
        key_hash: hash(),
        key_alias: key_alias.map(str::to_string),
        team_id: team_id.map(str::to_string),
        user_id: user_id.map(str::to_string),
        cache_ttl_seconds: 30,
        expires_at_ms: Some(1_790_000_000_000),
        version: 4,
        access: Default::default(),
        limits: Default::default(),
        lease: None,
        model_limits: Default::default(),
    }
}

fn grant() -> Grant {
    Grant {
        ttl_hint_ms: 30_000,
        expires_at: Some(1_790_000_000_000),
        version: 4,
        lease: None,
    }
}

fn json(answer: &AuthCheckResponse) -> String {
    serde_json::to_string(answer).unwrap()
}

fn deny_body(reason: DenyReason) -> String {
    json(&AuthCheckResponse::deny(reason))
}

#[test]
fn a_200_allow_carries_the_identity_and_the_ttl_hint() {
    let body = json(&AuthCheckResponse::Allow(allow(
        Some("ci"),
        Some("t1"),
        None,
    )));
    assert_eq!(
        answer("200", &body),
        Outcome::Allow {
            identity: Identity {
                model_limits: Default::default(),
                key_alias: Some("ci".into()),
                team_id: Some("t1".into()),
                user_id: None,
                access: Default::default(),
                limits: Default::default(),
            },
            grant: grant(),
        }
    );
}

#[test]
fn a_200_for_another_key_hash_is_an_error() {
    let mut other = allow(None, None, None);
    other.key_hash = KeyHash::of_raw("sk-other");
    let body = json(&AuthCheckResponse::Allow(other));
    assert_eq!(
        answer("200", &body),
        Outcome::Error(CallError::KeyHashMismatch)
    );
}

#[test]
fn a_200_that_does_not_say_allow_is_an_error() {
    assert!(matches!(
        answer("200", &deny_body(DenyReason::InvalidKey)),
        Outcome::Error(CallError::MalformedBody(_))
    ));
}

#[test]
fn each_deny_is_read_with_the_status_the_contract_pairs_it_with() {
    for reason in DenyReason::ALL
        .into_iter()
        .filter(|r| !matches!(r, DenyReason::BudgetExceeded | DenyReason::RateLimited))
    {
        let status = reason.status().to_string();
        assert_eq!(
            answer(&status, &deny_body(reason)),
            Outcome::Deny(reason),
            "{reason:?}"
        );
    }
}

fn over_budget() -> livegate_contract::Budget {
    livegate_contract::Budget {
        scope: livegate_contract::BudgetScope::Key,
        team_id: None,
        user_id: None,
        spend: 0.75,
        max_budget: 0.5,
        model: None,
    }
}

#[test]
fn a_budget_deny_is_read_with_its_numbers() {
    let body = json(&AuthCheckResponse::over_budget(over_budget()));
    assert_eq!(answer("400", &body), Outcome::OverBudget(over_budget()));
    // The same body with another status is not believed.
    assert!(matches!(answer("403", &body), Outcome::Error(_)));
}

#[test]
fn a_budget_deny_without_its_numbers_is_an_error_not_a_deny() {
    let body = deny_body(DenyReason::BudgetExceeded);
    assert!(matches!(
        answer("400", &body),
        Outcome::Error(CallError::MalformedBody(_))
    ));
}

fn rate_limited() -> livegate_contract::RateLimited {
    livegate_contract::RateLimited {
        kind: livegate_contract::LimitKind::Tokens,
        scope: livegate_contract::BudgetScope::Team,
        team_id: Some("t1".into()),
        user_id: None,
        model: None,
        limit: 1_000,
        reset_at_ms: 1_790_000_030_000,
    }
}

#[test]
fn a_429_rate_limited_deny_is_read_with_its_limit() {
    let body = json(&AuthCheckResponse::rate_limited(rate_limited()));
    assert_eq!(answer("429", &body), Outcome::RateLimited(rate_limited()));
    // The same body with another status is not believed.
    assert!(matches!(answer("403", &body), Outcome::Error(_)));
    assert!(matches!(answer("200", &body), Outcome::Error(_)));
}

#[test]
fn a_rate_limited_deny_without_its_limit_is_malformed() {
    let body = deny_body(DenyReason::RateLimited);
    assert!(matches!(
        answer("429", &body),
        Outcome::Error(CallError::MalformedBody(_))
    ));
}

#[test]
fn a_429_without_the_contract_body_is_an_error() {
    assert!(matches!(
        answer("429", "Too Many Requests"),
        Outcome::Error(CallError::MalformedBody(_))
    ));
    let blocked = deny_body(DenyReason::KeyBlocked);
    assert!(matches!(answer("429", &blocked), Outcome::Error(_)));
}

#[test]
fn an_allow_carries_the_keys_limits_into_its_identity() {
    let limits = livegate_contract::RateLimits {
        rpm_limit: Some(60),
        tpm_limit: Some(10_000),
        max_parallel_requests: Some(4),
    };
    let body = json(&AuthCheckResponse::Allow(Allow {
        limits,
        ..allow(None, None, None)
    }));
    match answer("200", &body) {
        Outcome::Allow { identity, .. } => assert_eq!(identity.limits, limits),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_deny_reason_that_does_not_match_its_status_is_an_error() {
    let blocked = deny_body(DenyReason::KeyBlocked);
    assert!(matches!(answer("401", &blocked), Outcome::Error(_)));
    let unknown = blocked.replace("\"key_blocked\"", "\"over_budget\"");
    assert!(matches!(answer("403", &unknown), Outcome::Error(_)));
}

#[test]
fn a_401_without_the_contract_body_is_an_error_not_a_deny() {
    assert!(matches!(
        answer("401", ""),
        Outcome::Error(CallError::MalformedBody(_))
    ));
    assert!(matches!(answer("401", "Unauthorized"), Outcome::Error(_)));
}

#[test]
fn a_503_is_unavailable_whatever_its_body() {
    let body = json(&AuthCheckResponse::db_unavailable());
    assert_eq!(answer("503", &body), Outcome::Error(CallError::Unavailable));
    let allow_body = json(&AuthCheckResponse::Allow(allow(None, None, None)));
    assert_eq!(
        answer("503", &allow_body),
        Outcome::Error(CallError::Unavailable)
    );
}

#[test]
fn a_503_saying_the_spend_spool_is_full_is_a_refusal_not_an_outage() {
    let body = json(&AuthCheckResponse::spend_spool_full());
    assert_eq!(answer("503", &body), Outcome::SpendSpoolFull);
    // The same body with another status is not believed.
    assert!(matches!(answer("200", &body), Outcome::Error(_)));
}

#[test]
fn a_500_or_any_other_status_is_an_error() {
    for status in ["500", "502", "204", "302", "404", "409"] {
        assert!(
            matches!(
                answer(status, "{}"),
                Outcome::Error(CallError::UnexpectedStatus(_))
            ),
            "{status}"
        );
    }
}

#[test]
fn zero_headers_is_a_reset_or_timeout() {
    let outcome = decide(
        CallResponse {
            header_count: 0,
            status: None,
            body: None,
        },
        &hash(),
    );
    assert_eq!(outcome, Outcome::Error(CallError::NoResponse));
}

#[test]
fn a_missing_or_garbled_status_is_an_error() {
    let no_status = CallResponse {
        header_count: 2,
        status: None,
        body: Some(b"{}"),
    };
    assert_eq!(
        decide(no_status, &hash()),
        Outcome::Error(CallError::NoStatus)
    );
    for status in ["", "abc", "2000", "99", "-200"] {
        assert_eq!(
            answer(status, "{}"),
            Outcome::Error(CallError::NoStatus),
            "{status}"
        );
    }
}

#[test]
fn bad_json_in_a_200_is_an_error() {
    for body in [
        "",
        "{",
        "null",
        "[]",
        r#"{"decision":1}"#,
        r#"{"decision":"allow"}"#,
        r#"{"decision":"allow","key_hash":"00","cache_ttl_seconds":1}"#,
    ] {
        assert!(
            matches!(
                answer("200", body),
                Outcome::Error(CallError::MalformedBody(_))
            ),
            "{body}"
        );
    }
}

#[test]
fn an_oversized_body_is_an_error() {
    let mut body = json(&AuthCheckResponse::Allow(allow(None, None, None)));
    body.insert_str(1, &format!(r#""pad":"{}","#, "x".repeat(MAX_BODY_BYTES)));
    assert!(matches!(
        answer("200", &body),
        Outcome::Error(CallError::MalformedBody(_))
    ));
}

#[test]
fn identity_values_survive_whatever_their_characters_and_only_unfit_ones_are_dropped() {
    let long = "a".repeat(MAX_IDENTITY_VALUE_LEN + 1);
    let body = json(&AuthCheckResponse::Allow(allow(
        Some("équipe ✓"),
        Some(&long),
        Some("u 1"),
    )));
    let Outcome::Allow { identity, .. } = answer("200", &body) else {
        panic!("not an allow");
    };
    assert_eq!(identity.key_alias.as_deref(), Some("équipe ✓"));
    assert_eq!(identity.team_id, None, "longer than the API accepts");
    assert_eq!(identity.user_id.as_deref(), Some("u 1"));
    let body = json(&AuthCheckResponse::Allow(allow(
        Some("bad\r\nx: y"),
        Some("t\u{0}"),
        Some(""),
    )));
    let Outcome::Allow { identity, .. } = answer("200", &body) else {
        panic!("not an allow");
    };
    assert_eq!(
        identity.key_alias.as_deref(),
        Some("bad\r\nx: y"),
        "encoded in headers"
    );
    assert_eq!(identity.team_id, None);
    assert_eq!(identity.user_id, None);
}

proptest! {
    /// Only the contract's own allow for this key, with a 200, lets a request in.
    #[test]
    fn arbitrary_bytes_never_decide_allow(
        headers in 0usize..4,
        status in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
    ) {
        let response = CallResponse {
            header_count: headers,
            status: status.as_deref(),
            body: body.as_deref(),
        };
        let allowed = matches!(decide(response, &hash()), Outcome::Allow { .. });
        prop_assert!(!allowed);
    }
}
