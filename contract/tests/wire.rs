//! Pins the wire format: each message serialises to its golden JSON, and the golden JSON
//! reads back to the same value. A failure here means the contract changed: update the
//! golden file and docs/architecture.md in the same commit, deliberately.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use livegate_contract::{
    AdmissionLease, Allow, AuthCheckResponse, Budget, BudgetScope, ChangeFeed, DenyReason,
    ErrorObject, ErrorType, EstimateReason, KeyChange, KeyHash, KeyStatus, LimitKind, ModelAccess,
    RateLimited, RateLimits, SpendAck, SpendBatch, SpendRecord,
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
                user_models: vec![],
                aliases: [("fast".to_string(), "gpt-4o".to_string())].into(),
                team_aliases: Default::default(),
            },
            limits: RateLimits {
                rpm_limit: Some(60),
                tpm_limit: None,
                max_parallel_requests: Some(4),
            },
            lease: None,
            model_limits: [(
                "gpt-4o".to_string(),
                RateLimits {
                    rpm_limit: Some(10),
                    tpm_limit: Some(1000),
                    max_parallel_requests: None,
                },
            )]
            .into(),
        }),
    );
}

#[test]
fn an_allow_with_a_share_of_a_lease_is_pinned() {
    pins(
        "auth_check_allow_leased",
        AuthCheckResponse::Allow(Allow {
            key_hash: KeyHash::of_raw("sk-test"),
            key_alias: None,
            team_id: None,
            user_id: None,
            cache_ttl_seconds: 30,
            expires_at_ms: None,
            version: 7,
            access: ModelAccess::default(),
            limits: RateLimits {
                rpm_limit: Some(600),
                ..RateLimits::default()
            },
            lease: Some(AdmissionLease {
                admissions: 12,
                valid_for_ms: 700,
            }),
            model_limits: Default::default(),
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
fn a_budget_deny_is_pinned_and_other_denies_need_no_budget() {
    pins(
        "auth_check_deny_budget_exceeded",
        AuthCheckResponse::over_budget(Budget {
            scope: BudgetScope::Team,
            team_id: Some("team-a".into()),
            user_id: None,
            spend: 1.25,
            max_budget: 1.0,
            model: None,
        }),
    );
    // A field the contract does not know yet is tolerated, as everywhere in it.
    let mut body = golden("auth_check_deny_budget_exceeded");
    body["budget"]["currency"] = "USD".into();
    assert!(serde_json::from_value::<AuthCheckResponse>(body).is_ok());
}

#[test]
fn a_model_budget_deny_is_pinned() {
    pins(
        "auth_check_deny_model_budget_exceeded",
        AuthCheckResponse::over_budget(Budget {
            scope: BudgetScope::Key,
            team_id: None,
            user_id: None,
            spend: 5.5,
            max_budget: 5.0,
            model: Some(livegate_contract::ModelBudgetOf {
                model: "gpt-4o".into(),
                key_hash: KeyHash::of_raw("sk-test"),
                key_alias: Some("billing".into()),
            }),
        }),
    );
}

#[test]
fn a_rate_limit_deny_is_pinned() {
    pins(
        "auth_check_deny_rate_limited",
        AuthCheckResponse::rate_limited(RateLimited {
            kind: LimitKind::Requests,
            scope: BudgetScope::Team,
            team_id: Some("team-a".into()),
            user_id: None,
            model: None,
            limit: 60,
            reset_at_ms: 1_790_000_060_000,
        }),
    );
}

#[test]
fn unavailable_is_pinned() {
    pins(
        "auth_check_unavailable",
        AuthCheckResponse::db_unavailable(),
    );
    pins(
        "auth_check_unavailable_spend_spool_full",
        AuthCheckResponse::spend_spool_full(),
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

fn spend_batch() -> SpendBatch {
    let key_hash = KeyHash::of_raw("sk-test");
    SpendBatch {
        records: vec![
            SpendRecord {
                request_id: "0f4c7e0e-7d2a-4a57-9d1b-6f3f1d0c2a11".into(),
                key_hash: key_hash.clone(),
                key_alias: Some("billing".into()),
                team_id: Some("team-a".into()),
                model_requested: Some("gpt-4o".into()),
                model_returned: Some("gpt-4o-2024-08-06".into()),
                deployment: None,
                prompt_tokens: Some(12),
                completion_tokens: Some(30),
                total_tokens: Some(42),
                cached_tokens: None,
                reasoning_tokens: None,
                cache_creation_tokens: None,
                usage_known: true,
                usage_estimate_reason: None,
                status: 200,
                streamed: true,
                start_time_ms: 1_790_000_000_000,
                end_time_ms: 1_790_000_000_250,
            },
            SpendRecord {
                request_id: "6b1d3c55-93a4-4c1e-8f0e-2a7d9e4b5c60".into(),
                key_hash: key_hash.clone(),
                key_alias: None,
                team_id: None,
                model_requested: Some("gpt-4o".into()),
                model_returned: None,
                deployment: None,
                prompt_tokens: None,
                completion_tokens: None,
                total_tokens: None,
                cached_tokens: None,
                reasoning_tokens: None,
                cache_creation_tokens: None,
                usage_known: false,
                usage_estimate_reason: None,
                status: 502,
                streamed: false,
                start_time_ms: 1_790_000_001_000,
                end_time_ms: 1_790_000_001_003,
            },
            SpendRecord {
                request_id: "9a0e51c2-2f7b-4d8e-b6a3-0c4d5e6f7a81".into(),
                key_hash,
                key_alias: Some("billing".into()),
                team_id: None,
                model_requested: Some("gpt-4o".into()),
                model_returned: Some("gpt-4o-2024-08-06".into()),
                deployment: None,
                prompt_tokens: Some(25),
                completion_tokens: Some(113),
                total_tokens: Some(138),
                cached_tokens: None,
                reasoning_tokens: None,
                cache_creation_tokens: None,
                usage_known: false,
                usage_estimate_reason: Some(EstimateReason::ClientDisconnected),
                status: 200,
                streamed: true,
                start_time_ms: 1_790_000_002_000,
                end_time_ms: 1_790_000_002_900,
            },
        ],
    }
}

#[test]
fn a_spend_batch_is_pinned() {
    let batch = spend_batch();
    assert_eq!(batch.validate(), Ok(()));
    pins("spend_batch", batch);
}

#[test]
fn the_spend_ack_is_pinned() {
    pins(
        "spend_ack",
        SpendAck {
            accepted: 1,
            duplicates: 1,
        },
    );
}

#[test]
fn a_spend_record_from_a_newer_filter_is_still_read() {
    let mut body = golden("spend_batch");
    body["records"][0]["tokens_in_a_future_shape"] = 7.into();
    assert_eq!(
        serde_json::from_value::<SpendBatch>(body).unwrap(),
        spend_batch()
    );
}

/// A record carrying the usage details (cached, reasoning, cache-write counts).
fn spend_batch_with_usage_details() -> SpendBatch {
    let mut batch = spend_batch();
    batch.records.truncate(1);
    let r = &mut batch.records[0];
    r.prompt_tokens = Some(3512);
    r.completion_tokens = Some(340);
    r.total_tokens = Some(3852);
    r.cached_tokens = Some(2000);
    r.reasoning_tokens = Some(128);
    r.cache_creation_tokens = Some(1500);
    batch
}

#[test]
fn a_spend_record_with_usage_details_is_pinned() {
    let batch = spend_batch_with_usage_details();
    assert_eq!(batch.validate(), Ok(()));
    pins("spend_batch_usage_details", batch);
}

#[test]
fn the_deployment_that_answered_is_pinned_and_left_out_when_none() {
    let mut batch = spend_batch_with_usage_details();
    batch.records[0].deployment = Some("livegate_deployment_7".into());
    assert_eq!(batch.validate(), Ok(()));
    pins("spend_batch_deployment", batch);
    let without = serde_json::to_value(spend_batch_with_usage_details()).unwrap();
    assert!(without["records"][0].get("deployment").is_none());
    assert_eq!(without, golden("spend_batch_usage_details"));
}

#[test]
fn usage_details_are_left_out_when_none_so_older_filters_and_control_planes_agree() {
    // Written by this contract without details: byte-for-byte what older filters wrote
    // (the `spend_batch` golden predates the details and is unchanged).
    let old_shape = serde_json::to_value(spend_batch()).unwrap();
    for record in old_shape["records"].as_array().unwrap() {
        for name in ["cached_tokens", "reasoning_tokens", "cache_creation_tokens"] {
            assert!(record.get(name).is_none(), "{name} written as null");
        }
    }
    assert_eq!(old_shape, golden("spend_batch"));
    // An older control plane (the record as it was, unknown fields ignored) reads a
    // newer filter's record, and keeps every count it knows.
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct OlderRecord {
        request_id: String,
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        total_tokens: Option<u64>,
        usage_known: bool,
        status: u16,
    }
    #[derive(serde::Deserialize)]
    struct OlderBatch {
        records: Vec<OlderRecord>,
    }
    let newer = golden("spend_batch_usage_details");
    let older: OlderBatch = serde_json::from_value(newer).unwrap();
    assert_eq!(older.records[0].prompt_tokens, Some(3512));
    assert_eq!(older.records[0].total_tokens, Some(3852));
}

#[test]
fn a_record_without_an_estimate_leaves_the_reason_out_and_reads_null_as_none() {
    let mut body = golden("spend_batch");
    assert!(body["records"][1].get("usage_estimate_reason").is_none());
    body["records"][1]["usage_estimate_reason"] = serde_json::Value::Null;
    assert_eq!(
        serde_json::from_value::<SpendBatch>(body).unwrap(),
        spend_batch()
    );
}

#[test]
fn every_estimate_reason_has_its_wire_name() {
    for reason in EstimateReason::ALL {
        let wire = serde_json::to_value(reason).unwrap();
        assert_eq!(wire, reason.as_str());
        assert_eq!(EstimateReason::parse(reason.as_str()), Some(reason));
    }
    assert_eq!(EstimateReason::parse("zero"), None);
}

#[test]
fn a_spend_record_missing_a_field_is_refused() {
    let mut body = golden("spend_batch");
    body["records"][0]
        .as_object_mut()
        .unwrap()
        .remove("usage_known");
    assert!(serde_json::from_value::<SpendBatch>(body).is_err());
}
