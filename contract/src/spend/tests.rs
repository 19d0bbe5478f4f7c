//! The spend record and batch: validation naming the bad field.

use super::*;

fn record() -> SpendRecord {
    SpendRecord {
        request_id: "0f4c7e0e-7d2a-4a57-9d1b-6f3f1d0c2a11".into(),
        key_hash: KeyHash::of_raw("sk-test"),
        key_alias: Some("billing".into()),
        team_id: None,
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
        streamed: false,
        start_time_ms: 1_790_000_000_000,
        end_time_ms: 1_790_000_000_250,
    }
}

#[test]
fn a_complete_record_is_valid() {
    assert_eq!(record().validate(), Ok(()));
}

#[test]
fn a_record_without_usage_has_no_counts() {
    let unknown = SpendRecord {
        prompt_tokens: None,
        completion_tokens: None,
        total_tokens: None,
        usage_known: false,
        usage_estimate_reason: None,
        ..record()
    };
    assert_eq!(unknown.validate(), Ok(()));
    let guessed = SpendRecord {
        usage_known: false,
        usage_estimate_reason: None,
        ..record()
    };
    assert_eq!(
        guessed.validate(),
        Err(SpendRecordError::CountsWithoutUsage)
    );
    let empty = SpendRecord {
        usage_known: true,
        usage_estimate_reason: None,
        ..unknown
    };
    assert_eq!(empty.validate(), Err(SpendRecordError::UsageWithoutCounts));
}

#[test]
fn request_ids_are_bounded_visible_ascii() {
    for bad in ["", "has space", "é", &"x".repeat(MAX_REQUEST_ID_LEN + 1)] {
        let r = SpendRecord {
            request_id: bad.into(),
            ..record()
        };
        assert_eq!(r.validate(), Err(SpendRecordError::RequestId), "{bad:?}");
    }
}

#[test]
fn labels_are_bounded_and_named() {
    let r = SpendRecord {
        model_returned: Some("m".repeat(MAX_LABEL_LEN + 1)),
        ..record()
    };
    assert_eq!(
        r.validate(),
        Err(SpendRecordError::TooLong("model_returned"))
    );
}

#[test]
fn a_record_cannot_end_before_it_starts() {
    let r = SpendRecord {
        end_time_ms: 1,
        ..record()
    };
    assert_eq!(r.validate(), Err(SpendRecordError::EndsBeforeStart));
}

#[test]
fn a_batch_is_bounded_and_names_the_bad_record() {
    assert_eq!(
        SpendBatch { records: vec![] }.validate(),
        Err(SpendBatchError::Size)
    );
    let full = SpendBatch {
        records: vec![record(); MAX_BATCH_RECORDS + 1],
    };
    assert_eq!(full.validate(), Err(SpendBatchError::Size));
    let bad = SpendBatch {
        records: vec![
            record(),
            SpendRecord {
                end_time_ms: 0,
                ..record()
            },
        ],
    };
    assert_eq!(
        bad.validate(),
        Err(SpendBatchError::Record {
            index: 1,
            error: SpendRecordError::EndsBeforeStart
        })
    );
}

#[test]
fn an_estimate_carries_counts_and_its_reason() {
    let estimate = SpendRecord {
        usage_known: false,
        usage_estimate_reason: Some(EstimateReason::BodyTooLarge),
        ..record()
    };
    assert_eq!(estimate.validate(), Ok(()));
    let known_and_estimated = SpendRecord {
        usage_known: true,
        ..estimate.clone()
    };
    assert_eq!(
        known_and_estimated.validate(),
        Err(SpendRecordError::ReasonWithKnownUsage)
    );
    let reason_without_counts = SpendRecord {
        prompt_tokens: None,
        completion_tokens: None,
        total_tokens: None,
        cached_tokens: None,
        reasoning_tokens: None,
        cache_creation_tokens: None,
        ..estimate
    };
    assert_eq!(
        reason_without_counts.validate(),
        Err(SpendRecordError::ReasonWithoutCounts)
    );
}

#[test]
fn a_nul_in_any_label_is_refused_naming_the_field() {
    let r = SpendRecord {
        model_requested: Some("x\0".into()),
        ..record()
    };
    assert_eq!(r.validate(), Err(SpendRecordError::Nul("model_requested")));
    let r = SpendRecord {
        team_id: Some("\0".into()),
        ..record()
    };
    assert_eq!(r.validate().map_err(|e| e.field()), Err("team_id"));
}

#[test]
fn token_counts_past_the_bound_are_refused() {
    let r = SpendRecord {
        total_tokens: Some(u64::MAX),
        ..record()
    };
    assert_eq!(
        r.validate(),
        Err(SpendRecordError::TooManyTokens("total_tokens"))
    );
    type Detail = fn(&mut SpendRecord) -> &mut Option<u64>;
    let details: [(&str, Detail); 3] = [
        ("cached_tokens", |r| &mut r.cached_tokens),
        ("reasoning_tokens", |r| &mut r.reasoning_tokens),
        ("cache_creation_tokens", |r| &mut r.cache_creation_tokens),
    ];
    for (name, field) in details {
        let mut r = record();
        *field(&mut r) = Some(MAX_TOKENS);
        assert_eq!(r.validate(), Ok(()), "{name} at the bound");
        *field(&mut r) = Some(MAX_TOKENS + 1);
        assert_eq!(r.validate(), Err(SpendRecordError::TooManyTokens(name)));
        assert_eq!(r.validate().map_err(|e| e.field()), Err(name));
    }
}

#[test]
fn a_usage_detail_is_a_count_like_the_others() {
    // A cached count on a record that charges nothing would bill a request that was not.
    let unknown = SpendRecord {
        prompt_tokens: None,
        completion_tokens: None,
        total_tokens: None,
        cached_tokens: Some(5),
        usage_known: false,
        ..record()
    };
    assert_eq!(
        unknown.validate(),
        Err(SpendRecordError::CountsWithoutUsage)
    );
    // Detail counts larger than their whole are the provider's to explain: kept, priced
    // as LiteLLM prices them, never a reason to drop (and so not bill) the record.
    let odd = SpendRecord {
        cached_tokens: Some(50),
        reasoning_tokens: Some(60),
        cache_creation_tokens: Some(70),
        ..record()
    };
    assert_eq!(odd.validate(), Ok(()));
}

#[test]
fn times_must_lie_in_a_window_around_now() {
    let now = record().start_time_ms;
    assert_eq!(record().validate_at(now), Ok(()));
    let future = SpendRecord {
        start_time_ms: u64::MAX,
        end_time_ms: u64::MAX,
        ..record()
    };
    assert_eq!(future.validate(), Ok(()), "no clock, no window");
    assert_eq!(
        future.validate_at(now),
        Err(SpendRecordError::EndsInTheFuture)
    );
    let old = SpendRecord {
        start_time_ms: now - MAX_RECORD_AGE_MS - 1,
        ..record()
    };
    assert_eq!(old.validate_at(now), Err(SpendRecordError::StartsTooEarly));
    assert_eq!(
        SpendRecord {
            start_time_ms: 0,
            end_time_ms: 0,
            ..record()
        }
        .validate_at(now)
        .map_err(|e| e.field()),
        Err("start_time_ms")
    );
}

#[test]
fn sanitizing_makes_hostile_labels_storable() {
    let mut r = SpendRecord {
        model_requested: Some("x\0y".into()),
        model_returned: Some("é".repeat(MAX_LABEL_LEN)),
        ..record()
    };
    assert!(r.validate().is_err());
    r.sanitize();
    assert_eq!(r.validate(), Ok(()));
    assert_eq!(r.model_requested.as_deref(), Some("x\u{FFFD}y"));
    assert_eq!(
        r.model_returned.as_ref().map(String::len),
        Some(MAX_LABEL_LEN)
    );
}

#[test]
fn a_bad_record_is_named_by_index_and_field() {
    let bad = SpendBatch {
        records: vec![
            record(),
            SpendRecord {
                model_requested: Some("x\0".into()),
                ..record()
            },
        ],
    };
    assert_eq!(
        bad.validate().map_err(|e| e.param()),
        Err("records[1].model_requested".to_string())
    );
}
