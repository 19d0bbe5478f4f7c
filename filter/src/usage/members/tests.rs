//! The walk past the bound reads what the whole-body parser reads, in any chunking.

use super::super::json::{self, JsonError, JsonMeter, MAX_KEPT_BYTES};
use super::super::tests::chunks_at;
use super::super::{Reading, Usage};
use super::*;
use proptest::prelude::*;

const BODIES: [&str; 7] = [
    include_str!("../fixtures/openai_chat.json"),
    include_str!("../fixtures/openai_embeddings.json"),
    include_str!("../fixtures/openai_responses.json"),
    include_str!("../fixtures/anthropic_messages.json"),
    include_str!("../fixtures/openai_chat_reasoning.json"),
    include_str!("../fixtures/openai_responses_reasoning.json"),
    include_str!("../fixtures/anthropic_messages_cache.json"),
];

/// A meter whose bound every body here is past: it walks.
fn walked(chunks: &[&[u8]]) -> Result<Reading, JsonError> {
    let mut meter = JsonMeter::new(8);
    for chunk in chunks {
        meter.feed(chunk);
    }
    meter.finish()
}

fn walked_whole(body: &str) -> Result<Reading, JsonError> {
    walked(&[body.as_bytes()])
}

#[test]
fn every_shape_walked_reads_as_parsed_whole() {
    for body in BODIES {
        let parsed = json::read(body.as_bytes()).unwrap();
        assert!(matches!(parsed.usage, Usage::Known(_)), "{body}");
        assert_eq!(walked_whole(body), Ok(parsed), "{body}");
    }
}

/// Every event of every stream fixture, walked as one document, says what it says whole:
/// Anthropic's `message` and the Responses API's `response` included.
#[test]
fn every_stream_event_walked_reads_as_parsed_whole() {
    let streams = [
        include_str!("../fixtures/anthropic_stream.sse"),
        include_str!("../fixtures/anthropic_stream_cache.sse"),
        include_str!("../fixtures/openai_responses_stream.sse"),
        include_str!("../fixtures/openai_responses_stream_reasoning.sse"),
        include_str!("../fixtures/openai_chat_stream.sse"),
    ];
    let mut wrapped = 0;
    for data in streams
        .iter()
        .flat_map(|s| s.lines())
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
    {
        let whole: Value = serde_json::from_str(data).unwrap();
        let mut walk = Members::new(MAX_KEPT_BYTES);
        walk.feed(data.as_bytes());
        let walked = walk.finish().unwrap();
        let (a, b) = (
            super::super::inspect(&walked),
            super::super::inspect(&whole),
        );
        assert_eq!((a.tokens, a.model), (b.tokens, b.model), "{data}");
        wrapped += usize::from(walked.get("response").or(walked.get("message")).is_some());
    }
    assert!(wrapped >= 4, "the wrappers were walked: {wrapped}");
}

#[test]
fn an_embedding_batch_past_the_bound_states_its_usage() {
    let vector = vec!["-0.0123456789"; 1536].join(",");
    let data: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"object":"embedding","index":{i},"embedding":[{vector}]}}"#))
        .collect();
    let body = format!(
        r#"{{"object":"list","data":[{}],"model":"text-embedding-3-small","usage":{{"prompt_tokens":800,"total_tokens":800}}}}"#,
        data.join(",")
    );
    assert!(body.len() > 2 * 1024 * 1024);
    let mut meter = JsonMeter::new(1024 * 1024);
    for chunk in body.as_bytes().chunks(16 * 1024) {
        meter.feed(chunk);
    }
    assert_eq!(meter.finish(), json::read(body.as_bytes()));
}

#[test]
fn only_top_level_members_count_and_the_last_duplicate_wins() {
    let body = r#"{"data": {"usage": {"prompt_tokens": 99}, "model": "inner"},
        "usage": {"prompt_tokens": 1}, "mod\u0065l": "first",
        "text": "a \"usage\": {\"prompt_tokens\": 7}, } ] { [",
        "usage": {"prompt_tokens": 2, "completion_tokens": 3}, "model": "last"}"#;
    assert_eq!(walked_whole(body), json::read(body.as_bytes()));
    let reading = walked_whole(body).unwrap();
    assert_eq!(reading.model.as_deref(), Some("last"));
    let Usage::Known(tokens) = reading.usage else {
        panic!("{reading:?}");
    };
    assert_eq!((tokens.prompt, tokens.total), (Some(2), Some(5)));
}

#[test]
fn a_body_without_usage_is_absent() {
    let body = r#"{"object": "list", "data": []}"#;
    assert_eq!(walked_whole(body), Ok(Reading::absent()));
}

#[test]
fn what_cannot_be_walked_is_too_large_or_malformed() {
    let too_large = Err(JsonError::TooLarge { limit: 8 });
    assert_eq!(
        walked_whole(r#"[{"usage": {"prompt_tokens": 1}}]"#),
        too_large
    );
    assert_eq!(walked_whole(r#""just a string""#), too_large);
    let huge_usage = format!(
        r#"{{"usage": {{"prompt_tokens": 1, "pad": "{}"}}}}"#,
        " ".repeat(MAX_KEPT_BYTES)
    );
    assert_eq!(walked_whole(&huge_usage), too_large);
    let malformed = Err(JsonError::Malformed);
    for cut in [
        r#"{"usage": {"prompt_tokens": 1}"#,
        r#"{"usage": {"prompt_tokens": 1}, "model": "m"#,
        r#"{"usage": {"prompt_tokens": 1}} trailing"#,
        r#"{"usage" {"prompt_tokens": 1}}"#,
        r#"{"usage": {"prompt_tokens": 1]}"#,
        r#"{"usage": {"prompt_tokens": nope}}"#,
    ] {
        assert_eq!(walked_whole(cut), malformed, "{cut}");
    }
}

#[test]
fn a_model_too_long_to_keep_is_not_recorded_and_the_usage_still_is() {
    let body = format!(
        r#"{{"model": "{}", "usage": {{"prompt_tokens": 4}}}}"#,
        "m".repeat(MAX_KEPT_BYTES)
    );
    let reading = walked_whole(&body).unwrap();
    assert_eq!(reading.model, None);
    assert!(matches!(reading.usage, Usage::Known(_)));
}

/// Any JSON value, a few levels deep, with strings that look like structure.
fn value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u32>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("}"),
            Just("\""),
            Just("\\"),
            Just("usage"),
            Just("é\u{1}")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("usage".to_string()),
        Just("model".to_string()),
        Just("response".to_string()),
        Just("message".to_string()),
        Just("prompt_tokens".to_string()),
        Just("completion_tokens".to_string()),
        "[a-z]{1,6}",
    ]
}

proptest! {
    #[test]
    fn any_object_in_any_chunking_walks_as_it_parses_whole(
        members in proptest::collection::vec((key(), value()), 0..6),
        pretty in any::<bool>(),
        at in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        // Written by hand so that duplicate names survive, as an upstream may send them.
        let render = |v: &serde_json::Value| if pretty {
            serde_json::to_string_pretty(v).unwrap()
        } else {
            v.to_string()
        };
        let body = format!(
            "{{{}}}",
            members
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::Value::from(k.as_str()), render(v)))
                .collect::<Vec<_>>()
                .join(if pretty { ",\n " } else { "," })
        );
        prop_assert_eq!(walked(&chunks_at(body.as_bytes(), &at)), json::read(body.as_bytes()));
    }

    #[test]
    fn each_fixture_in_any_chunking_walks_the_same(
        which in 0..BODIES.len(),
        at in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let body = BODIES[which].as_bytes();
        prop_assert_eq!(walked(&chunks_at(body, &at)), json::read(body));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20),
    ) {
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let _ = walked(&refs);
    }
}
