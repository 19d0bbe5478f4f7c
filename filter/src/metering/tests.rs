//! One response's meter: its record, with usage read, missing or estimated.

use super::*;

fn requester() -> Requester {
    Requester {
        request_id: request_id(Some(b"6f1c-req")),
        key_hash: KeyHash::of_raw("sk-test"),
        key_alias: Some("ci".into()),
        team_id: Some("t1".into()),
        model: Some("gpt-4o".into()),
        deployment: Some("livegate_deployment_0".into()),
        start: Some(1_000),
    }
}

#[test]
fn a_json_answer_becomes_a_record_with_its_usage() {
    let mut meter = ResponseMeter::new(requester());
    meter.on_headers(Some(b"200"), Some(b"application/json"), None);
    meter.feed(br#"{"model": "gpt-4o-2024", "usage": {"prompt_tokens": 3,"#);
    meter.feed(br#" "completion_tokens": 5}}"#);
    let record = meter.finish(Some(1_500)).unwrap();
    assert_eq!(record.request_id, "6f1c-req");
    assert_eq!(record.key_hash, KeyHash::of_raw("sk-test"));
    assert_eq!(record.key_alias.as_deref(), Some("ci"));
    assert_eq!(record.team_id.as_deref(), Some("t1"));
    assert_eq!(record.model_requested.as_deref(), Some("gpt-4o"));
    assert_eq!(record.deployment.as_deref(), Some("livegate_deployment_0"));
    assert_eq!(record.model_returned.as_deref(), Some("gpt-4o-2024"));
    let counts = (
        record.prompt_tokens,
        record.completion_tokens,
        record.total_tokens,
    );
    assert_eq!(counts, (Some(3), Some(5), Some(8)));
    assert!(record.usage_known && !record.streamed);
    assert_eq!(
        (record.status, record.start_time_ms, record.end_time_ms),
        (200, 1_000, 1_500)
    );
}

#[test]
fn the_record_names_the_deployment_that_answered_over_the_first_try_s() {
    let first = Requester {
        deployment: Some("livegate_deployment_0".into()),
        ..requester()
    };
    let finish = |route: Option<&[u8]>| {
        let mut meter = ResponseMeter::released(first.clone(), 10);
        meter.on_headers(Some(b"200"), Some(b"application/json"), None);
        meter.answered_by(route);
        meter.finish(Some(1_500)).unwrap().deployment
    };
    assert_eq!(
        finish(Some(b"livegate_deployment_7")).as_deref(),
        Some("livegate_deployment_7")
    );
    // No word from a try (a deployment without a chain): the one the filter picked.
    assert_eq!(finish(None).as_deref(), Some("livegate_deployment_0"));
    // A value the contract would refuse is ignored, never stored.
    for bad in [&b""[..], b"has space", &[b'a'; 257][..]] {
        assert_eq!(finish(Some(bad)).as_deref(), Some("livegate_deployment_0"));
    }
}

#[test]
fn a_record_carries_cached_reasoning_and_cache_write_counts() {
    let mut meter = ResponseMeter::released(requester(), 100);
    meter.on_headers(Some(b"200"), Some(b"text/event-stream"), None);
    meter.feed(b"data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude\",\"usage\":");
    meter.feed(b"{\"input_tokens\":12,\"cache_creation_input_tokens\":1500,\"cache_read_input_tokens\":2000}}}\n\n");
    meter.feed(b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":340}}\n\n");
    let record = meter.finish(Some(1_500)).unwrap();
    let counts = (
        record.prompt_tokens,
        record.completion_tokens,
        record.total_tokens,
    );
    assert_eq!(counts, (Some(3512), Some(340), Some(3852)));
    let details = (
        record.cached_tokens,
        record.reasoning_tokens,
        record.cache_creation_tokens,
    );
    assert_eq!(details, (Some(2000), None, Some(1500)));
    assert!(record.usage_known);
    let mut meter = ResponseMeter::released(requester(), 100);
    meter.on_headers(Some(b"200"), Some(b"application/json"), None);
    meter.feed(br#"{"usage":{"prompt_tokens":9,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":5}}}"#);
    let record = meter.finish(Some(1_500)).unwrap();
    let details = (
        record.cached_tokens,
        record.reasoning_tokens,
        record.cache_creation_tokens,
    );
    assert_eq!(details, (Some(4), Some(5), None));
}

#[test]
fn a_stream_cut_before_its_usage_is_a_record_without_usage() {
    let mut meter = ResponseMeter::new(requester());
    meter.on_headers(
        Some(b"200"),
        Some(b"text/event-stream; charset=utf-8"),
        None,
    );
    meter.feed(b"data: {\"model\": \"m\", \"choices\": []}\n\ndata: {\"mo");
    let record = meter.finish(Some(2_000)).unwrap();
    assert!(record.streamed);
    assert!(!record.usage_known);
    assert_eq!(record.prompt_tokens, None);
    assert_eq!(record.model_returned.as_deref(), Some("m"));
}

#[test]
fn no_response_headers_is_status_zero_and_an_encoded_body_is_not_read() {
    let record = ResponseMeter::new(requester()).finish(Some(1_200)).unwrap();
    assert_eq!(record.status, 0);
    assert!(!record.usage_known);

    let mut meter = ResponseMeter::new(requester());
    meter.on_headers(Some(b"200"), Some(b"application/json"), Some(b"gzip"));
    meter.feed(br#"{"usage": {"prompt_tokens": 3}}"#);
    assert!(!meter.finish(Some(1_200)).unwrap().usage_known);
}

#[test]
fn without_a_request_id_or_any_clock_there_is_no_record() {
    for raw in [
        None,
        Some(&b""[..]),
        Some(b"has space"),
        Some(&[b'a'; 129][..]),
    ] {
        let who = Requester {
            request_id: request_id(raw),
            ..requester()
        };
        assert_eq!(
            ResponseMeter::new(who).finish(Some(1)).unwrap_err(),
            NoRecord::NoRequestId
        );
    }
    let clockless = Requester {
        start: None,
        ..requester()
    };
    assert_eq!(
        ResponseMeter::new(clockless.clone())
            .finish(None)
            .unwrap_err(),
        NoRecord::NoClock
    );
    let one_end = ResponseMeter::new(clockless).finish(Some(7)).unwrap();
    assert_eq!((one_end.start_time_ms, one_end.end_time_ms), (7, 7));
    let clock_back = ResponseMeter::new(requester()).finish(Some(10)).unwrap();
    assert_eq!(clock_back.end_time_ms, 1_000, "never ends before it starts");
}
