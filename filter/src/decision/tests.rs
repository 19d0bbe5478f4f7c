use super::*;
use crate::credential::ApiKey;
use proptest::prelude::*;

fn hash() -> KeyHash {
    match ApiKey::from_headers(None, Some(b"sk-test")) {
        Ok(key) => key.hash(),
        Err(e) => panic!("{e:?}"),
    }
}

const HASH: &str = "f3abf2a6cc4f00987743db5f544ba345b4899ae31f326d8ee9c4816de153c9e0";

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

fn allow_body() -> String {
    format!(
        r#"{{"decision":"allow","key_hash":"{HASH}","key_alias":"ci","team_id":"t1",
             "user_id":null,"cache_ttl_seconds":30}}"#
    )
}

#[test]
fn a_200_allow_carries_the_identity_and_the_ttl_hint() {
    assert_eq!(
        answer("200", &allow_body()),
        Outcome::Allow {
            identity: Identity {
                key_alias: Some("ci".into()),
                team_id: Some("t1".into()),
                user_id: None,
            },
            ttl_hint_ms: Some(30_000),
        }
    );
}

#[test]
fn an_allow_without_optional_fields_is_still_an_allow() {
    assert_eq!(
        answer("200", r#"{"decision":"allow"}"#),
        Outcome::Allow {
            identity: Identity::default(),
            ttl_hint_ms: None
        }
    );
}

#[test]
fn a_negative_or_fractional_ttl_hint_is_clamped() {
    let outcome = answer("200", r#"{"decision":"allow","cache_ttl_seconds":-4}"#);
    assert!(matches!(
        outcome,
        Outcome::Allow {
            ttl_hint_ms: Some(0),
            ..
        }
    ));
    let outcome = answer("200", r#"{"decision":"allow","cache_ttl_seconds":1.5}"#);
    assert!(matches!(
        outcome,
        Outcome::Allow {
            ttl_hint_ms: Some(1500),
            ..
        }
    ));
}

#[test]
fn a_200_for_another_key_hash_is_an_error() {
    let body = r#"{"decision":"allow","key_hash":"00"}"#;
    assert_eq!(
        answer("200", body),
        Outcome::Error(CallError::KeyHashMismatch)
    );
}

#[test]
fn a_200_that_does_not_say_allow_is_an_error() {
    assert!(matches!(
        answer("200", r#"{"decision":"deny","reason":"invalid_key"}"#),
        Outcome::Error(CallError::MalformedBody(_))
    ));
}

#[test]
fn a_401_invalid_key_is_a_deny() {
    let body = r#"{"decision":"deny","reason":"invalid_key","error":{"message":"x"}}"#;
    assert_eq!(answer("401", body), Outcome::Deny(DenyReason::InvalidKey));
}

#[test]
fn a_403_carries_blocked_or_expired() {
    let blocked = r#"{"decision":"deny","reason":"key_blocked"}"#;
    let expired = r#"{"decision":"deny","reason":"key_expired"}"#;
    assert_eq!(
        answer("403", blocked),
        Outcome::Deny(DenyReason::KeyBlocked)
    );
    assert_eq!(
        answer("403", expired),
        Outcome::Deny(DenyReason::KeyExpired)
    );
}

#[test]
fn a_deny_reason_that_does_not_match_its_status_is_an_error() {
    let blocked = r#"{"decision":"deny","reason":"key_blocked"}"#;
    let unknown = r#"{"decision":"deny","reason":"over_budget"}"#;
    assert!(matches!(answer("401", blocked), Outcome::Error(_)));
    assert!(matches!(answer("403", unknown), Outcome::Error(_)));
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
fn a_503_is_an_error() {
    let body = r#"{"decision":"unavailable","reason":"db_unavailable"}"#;
    assert_eq!(answer("503", body), Outcome::Error(CallError::Unavailable));
}

#[test]
fn a_500_or_any_other_status_is_an_error() {
    for status in ["500", "502", "204", "302", "404", "429"] {
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
        r#"{"key_alias":5}"#,
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
    let body = format!(
        r#"{{"decision":"allow","pad":"{}"}}"#,
        "x".repeat(MAX_BODY_BYTES)
    );
    assert!(matches!(
        answer("200", &body),
        Outcome::Error(CallError::MalformedBody(_))
    ));
}

proptest! {
    #[test]
    fn deciding_on_arbitrary_bytes_never_panics(
        headers in 0usize..4,
        status in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
    ) {
        let response = CallResponse {
            header_count: headers,
            status: status.as_deref(),
            body: body.as_deref(),
        };
        let _ = decide(response, &hash());
    }

    #[test]
    fn deciding_on_json_like_bodies_never_panics(
        status in prop_oneof![Just("200"), Just("401"), Just("403"), Just("503")],
        body in r#"\{("(decision|reason|key_hash|key_alias|cache_ttl_seconds)": ?("[a-z_]{0,12}"|-?[0-9.e+]{1,12}|null|true),?){0,5}\}"#,
    ) {
        let _ = answer(status, &body);
    }
}

#[test]
fn identity_values_unfit_for_a_header_are_dropped() {
    let long = "a".repeat(MAX_IDENTITY_VALUE_LEN + 1);
    let body = format!(
        r#"{{"decision":"allow","key_alias":"bad\r\nx: y","team_id":"{long}","user_id":"u 1"}}"#
    );
    assert_eq!(
        answer("200", &body),
        Outcome::Allow {
            identity: Identity {
                key_alias: None,
                team_id: None,
                user_id: Some("u 1".into()),
            },
            ttl_hint_ms: None,
        }
    );
}
