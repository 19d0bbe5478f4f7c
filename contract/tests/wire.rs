//! Pins the wire format: each message serialises to its golden JSON, and the golden JSON
//! reads back to the same value. A failure here means the contract changed: update the
//! golden file and docs/architecture.md in the same commit, deliberately.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use livegate_contract::{
    Allow, AuthCheckResponse, ChangeFeed, DenyReason, ErrorObject, ErrorType, KeyChange, KeyHash,
    KeyStatus, ModelAccess,
};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

fn golden(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/golden/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn pins<T: Serialize + DeserializeOwned + PartialEq + Debug>(name: &str, value: T) {
    let expected = golden(name);
    assert_eq!(serde_json::to_value(&value).unwrap(), expected, "{name}");
    let back: T = serde_json::from_value(expected).unwrap();
    assert_eq!(back, value, "{name}");
}

#[test]
fn an_allow_is_pinned() {
    pins(
        "auth_check_allow",
        AuthCheckResponse::Allow(Allow {
            key_hash: KeyHash::of_raw("sk-test"),
            key_alias: Some("billing".into()),
            team_id: Some("team-a".into()),
            user_id: None,
            cache_ttl_seconds: 30,
            expires_at_ms: Some(1_790_000_000_000),
            version: 42,
            access: ModelAccess {
                models: vec!["gpt-4o".into(), "openai/*".into()],
                team_models: vec![],
                aliases: [("fast".to_string(), "gpt-4o".to_string())].into(),
            },
        }),
    );
}

#[test]
fn each_deny_is_pinned() {
    pins(
        "auth_check_deny_invalid_key",
        AuthCheckResponse::deny(DenyReason::InvalidKey),
    );
    pins(
        "auth_check_deny_key_blocked",
        AuthCheckResponse::deny(DenyReason::KeyBlocked),
    );
    pins(
        "auth_check_deny_key_expired",
        AuthCheckResponse::deny(DenyReason::KeyExpired),
    );
    pins(
        "auth_check_deny_team_blocked",
        AuthCheckResponse::deny(DenyReason::TeamBlocked),
    );
}

#[test]
fn unavailable_is_pinned() {
    pins(
        "auth_check_unavailable",
        AuthCheckResponse::db_unavailable(),
    );
}

#[test]
fn the_error_body_is_pinned() {
    pins(
        "error_bad_request",
        ErrorObject::new(
            400,
            ErrorType::BadRequestError,
            "duration must be 30s, 30m, 24h or 7d",
        )
        .with_param("duration")
        .into_body(),
    );
}

#[test]
fn an_unknown_decision_or_reason_is_refused() {
    let mut body = golden("auth_check_deny_key_blocked");
    body["reason"] = "key_unknown".into();
    assert!(serde_json::from_value::<AuthCheckResponse>(body).is_err());
    let mut body = golden("auth_check_allow");
    body["decision"] = "maybe".into();
    assert!(serde_json::from_value::<AuthCheckResponse>(body).is_err());
}

#[test]
fn the_change_feed_is_pinned() {
    pins(
        "change_feed",
        ChangeFeed {
            cursor: 44,
            reset: false,
            changes: vec![
                KeyChange {
                    seq: 42,
                    key_hash: KeyHash::of_raw("sk-test"),
                    status: KeyStatus::Blocked,
                },
                KeyChange {
                    seq: 43,
                    key_hash: KeyHash::of_raw("abc"),
                    status: KeyStatus::Deleted,
                },
                KeyChange {
                    seq: 44,
                    key_hash: KeyHash::of_raw("sk-team"),
                    status: KeyStatus::TeamBlocked,
                },
            ],
        },
    );
}
