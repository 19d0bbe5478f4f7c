//! One function per fuzz target: feeds a network peer's bytes to a parser and asserts what
//! must hold for every input. cargo-fuzz calls them with generated inputs (fuzz/); the tests
//! replay the committed corpus and every crash ever found, on stable, in CI.
#![allow(clippy::panic, clippy::expect_used)] // a failed check must crash the fuzzer

use livegate_contract::spend::SpendBatch;
use livegate_contract::{ApiKey, KeyHash};
use livegate_filter::decision::{decide, CallResponse};
use livegate_filter::feed::{parse_answer, SharedFeed};
use livegate_filter::model_body::requested_model;
use livegate_filter::path::{decode_segment, encode_segment, normalize};
use livegate_filter::usage::stream_options::{include_usage, stream_flag, Rewrite};
use livegate_filter::usage::{json, JsonMeter, Limits, Meter};

/// What a target asserts of one input (it panics if the parser broke a promise).
pub type Check = fn(&[u8]);

/// Every target, by the name of its corpus folder.
pub const TARGETS: &[(&str, Check)] = &[
    ("usage_json", usage_json),
    ("usage_sse", usage_sse),
    ("include_usage", include_usage_rewrite),
    ("model_body", model_body),
    ("credentials", credentials),
    ("auth_check", auth_check),
    ("change_feed", change_feed),
    ("spend_intake", spend_intake),
    ("request_path", request_path),
];

/// Small bounds, so the fuzzer reaches the oversized paths with short inputs.
const LIMITS: Limits = Limits {
    max_json_bytes: 4096,
    max_event_bytes: 256,
};

/// The first byte chooses the chunk size: every split of a body is reachable.
fn chunked(data: &[u8]) -> Option<(usize, &[u8])> {
    let (&cut, body) = data.split_first()?;
    Some((usize::from(cut).max(1), body))
}

/// The JSON usage meter, fed an upstream's body in arbitrary chunks; and walked past its
/// bound, it reads of a JSON object what the whole-body parser reads.
pub fn usage_json(data: &[u8]) {
    meter(data, b"application/json", false);
    let Some((size, body)) = chunked(data) else {
        return;
    };
    if !matches!(
        serde_json::from_slice::<serde_json::Value>(body),
        Ok(serde_json::Value::Object(_))
    ) {
        return;
    }
    let mut walked = JsonMeter::new(0);
    for chunk in body.chunks(size) {
        walked.feed(chunk);
    }
    assert_eq!(walked.finish(), json::read(body), "walked as parsed whole");
}

/// The SSE usage meter, fed an upstream's stream in arbitrary chunks.
pub fn usage_sse(data: &[u8]) {
    meter(data, b"text/event-stream", true);
}

fn meter(data: &[u8], content_type: &[u8], streamed: bool) {
    let Some((size, body)) = chunked(data) else {
        return;
    };
    let mut meter = Meter::for_response(Some(content_type), None, LIMITS);
    for chunk in body.chunks(size) {
        meter.feed(chunk);
    }
    assert_eq!(meter.finish().streamed, streamed);
}

/// The `stream_options.include_usage` rewrite of a client's body: what it writes is JSON
/// that asks for usage, and it rewrites only a body whose `stream` is `true`.
pub fn include_usage_rewrite(data: &[u8]) {
    let streamed = stream_flag(data);
    if let Rewrite::Rewritten { body, .. } = include_usage(data, 64 * 1024) {
        assert_eq!(
            streamed,
            Ok(true),
            "only a streamed request is asked for usage"
        );
        // A number beyond f64 is JSON by the grammar (Python reads it as inf) but not a
        // `Value`: such a body is checked for its grammar only.
        if serde_json::from_slice::<serde_json::Value>(data).is_err() {
            serde_json::from_slice::<Box<serde_json::value::RawValue>>(&body)
                .expect("a rewritten body is JSON");
            return;
        }
        let value: serde_json::Value =
            serde_json::from_slice(&body).expect("a rewritten body is JSON");
        assert_eq!(
            value["stream_options"]["include_usage"],
            serde_json::json!(true)
        );
    }
}

/// The model reader and its alias splice: a body that names a model, spliced with another
/// name (quotes and a NUL in it), is a body naming exactly that other name.
pub fn model_body(data: &[u8]) {
    const ALIAS: &str = "fuzz-\u{0}-\"alias\"";
    let Ok(requested) = requested_model(data) else {
        return;
    };
    let spliced = requested
        .replaced(data, ALIAS)
        .expect("the body it was read from splices");
    let again = requested_model(&spliced).expect("a spliced body still names a model");
    assert_eq!(again.name, ALIAS);
}

/// The credential rule on arbitrary header values: whatever it accepts is 1-512 visible
/// ASCII bytes.
pub fn credentials(data: &[u8]) {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = rest.split_at(usize::from(shape >> 2).min(rest.len()));
    let authorization = (shape & 1 == 1).then_some(first);
    let x_api_key = (shape & 2 == 2).then_some(second);
    if let Ok(key) = ApiKey::from_headers(authorization, x_api_key) {
        let raw = key.as_str().as_bytes();
        assert!(!raw.is_empty() && raw.len() <= livegate_contract::MAX_KEY_LEN);
        assert!(raw.iter().all(u8::is_ascii_graphic));
    }
}

/// The filter's reading of an auth-check answer (or of Envoy's report of a reset): total.
pub fn auth_check(data: &[u8]) {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let (status, body) = rest.split_at(usize::from(shape >> 3).min(rest.len()));
    let response = CallResponse {
        header_count: usize::from(shape & 3),
        status: (shape & 4 == 4).then_some(status),
        body: Some(body),
    };
    let _ = decide(response, &KeyHash::of_raw("sk-fuzz"));
}

/// The change feed: the control plane's answer and the window shared between workers (shared
/// data any worker may have written); what a worker shares reads back as it was.
pub fn change_feed(data: &[u8]) {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let status: &[u8] = if shape & 1 == 1 { b"200" } else { b"503" };
    let mut shared = SharedFeed::decode(Some(rest));
    if let Some(answer) = parse_answer(Some(status), Some(rest)) {
        shared.merge(answer);
    }
    assert_eq!(SharedFeed::decode(Some(&shared.encode())), shared);
}

/// The intake of `POST /v1/spend/records`: a batch that validates survives the JSON round
/// trip unchanged, so what the spool writes is what was accepted.
pub fn spend_intake(data: &[u8]) {
    let Ok(batch) = serde_json::from_slice::<SpendBatch>(data) else {
        return;
    };
    if batch.validate().is_ok() {
        let bytes = serde_json::to_vec(&batch).expect("a batch serialises");
        let again: SpendBatch = serde_json::from_slice(&bytes).expect("and reads back");
        assert_eq!(again, batch);
    }
}

/// The request path the filter decides on: a normal path is its own normal form (no
/// second decoding can turn it into another route: `%252F` stays what it was), has no dot
/// segment or empty segment, and a segment survives the trip through encoding.
pub fn request_path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(normal) = normalize(raw) {
        let again = normalize(&normal.path).expect("a normal path normalises");
        assert_eq!(again.path, normal.path);
        assert!(again.rest.is_empty());
        let inner = normal
            .path
            .strip_prefix('/')
            .expect("a normal path is absolute");
        for segment in inner.split('/').filter(|_| !inner.is_empty()) {
            assert!(!matches!(segment, "." | ".."), "dot segment in {normal:?}");
        }
        assert!(!normal.path.contains("//"), "empty segment in {normal:?}");
    }
    assert_eq!(decode_segment(&encode_segment(raw)).as_deref(), Some(raw));
}
