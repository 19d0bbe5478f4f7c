//! The skim against serde_json: the same verdict on what is JSON, the same count as a
//! document walk, the same usage objects as `inspect` reads.

use super::*;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// The content count and usage objects of a parsed document, walked the slow way.
fn walked(document: &Value) -> Skim {
    fn leaves(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.len() as u64,
            Value::Array(a) => a.iter().map(leaves).sum(),
            Value::Object(o) => o.values().map(leaves).sum(),
            _ => 0,
        }
    }
    let choices = document.get("choices").and_then(Value::as_array);
    let from_choices: u64 = choices
        .into_iter()
        .flatten()
        .map(|c| c.get("text").map_or(0, leaves) + c.get("delta").map_or(0, leaves))
        .sum();
    let places = [
        Some(document),
        document.get("message"),
        document.get("response"),
    ];
    Skim {
        content: from_choices + document.get("delta").map_or(0, leaves),
        usage_object: places
            .into_iter()
            .flatten()
            .any(|p| p.get("usage").is_some_and(Value::is_object)),
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "choices", "delta", "text", "usage", "message", "response", "model", "content",
        ])
        .prop_map(String::from),
        1 => any::<String>(),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((name(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #[test]
    fn the_word_at_a_time_search_finds_what_a_byte_loop_finds(
        bytes in prop::collection::vec(
            prop_oneof![Just(b'"'), Just(b'\\'), Just(0x22 ^ 0x80), Just(0x5c ^ 0x01), any::<u8>()],
            0..40,
        ),
    ) {
        let naive = bytes.iter().position(|b| *b == b'"' || *b == b'\\');
        prop_assert_eq!(quote_or_backslash(&bytes), naive);
    }

    #[test]
    fn a_document_skims_as_its_walk_says_in_any_layout(document in document()) {
        let expected = walked(&document);
        let compact = serde_json::to_vec(&document).unwrap();
        let pretty = serde_json::to_vec_pretty(&document).unwrap();
        prop_assert_eq!(skim(&compact), Some(expected));
        prop_assert_eq!(skim(&pretty), Some(expected));
    }

    #[test]
    fn a_cut_document_is_json_exactly_when_serde_says_so(
        document in document(),
        cut in any::<prop::sample::Index>(),
    ) {
        let text = serde_json::to_vec(&document).unwrap();
        let prefix = &text[..cut.index(text.len() + 1)];
        let serde = serde_json::from_slice::<Value>(prefix).is_ok();
        prop_assert_eq!(skim(prefix).is_some(), serde, "{}", String::from_utf8_lossy(prefix));
    }
}

#[test]
fn escapes_count_what_they_decode_to() {
    let count = |data: &str| content_bytes(data.as_bytes());
    assert_eq!(count(r#"{"delta": "a\nb\"c\\d\/"}"#), Some(8));
    assert_eq!(
        count(r#"{"delta": "\u00e9\u20ac\ud83d\ude00"}"#),
        Some(2 + 3 + 4)
    );
    assert_eq!(count(r#"{"delta": "\x"}"#), None);
    assert_eq!(count(r#"{"delta": "\u12"}"#), None);
    assert_eq!(count(r#"{"delta": "\u+123"}"#), None);
}

#[test]
fn what_is_not_json_is_refused() {
    for data in [
        "",
        "{",
        "}",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "[1,]",
        "[1 2]",
        "tru",
        "nul",
        "01",
        "-",
        "1.",
        "1e",
        "+1",
        "{\"a\":1}}",
        "\"open",
        "{'a':1}",
        "[] []",
    ] {
        assert_eq!(skim(data.as_bytes()), None, "{data}");
    }
    for data in [
        "0",
        "-0.5e+3",
        "[]",
        "{}",
        " {\"a\" : [true, false, null] } ",
        "\"\"",
    ] {
        assert!(skim(data.as_bytes()).is_some(), "{data}");
    }
}

#[test]
fn nesting_past_the_bound_is_refused_without_exhausting_the_stack() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(skim(deep(MAX_DEPTH).as_bytes()).is_some());
    assert_eq!(skim(deep(MAX_DEPTH + 1).as_bytes()), None);
    assert_eq!(skim("[".repeat(100_000).as_bytes()), None);
}

#[test]
fn usage_counts_only_where_it_is_read_and_only_as_an_object() {
    let usage = |data: &str| skim(data.as_bytes()).map(|s| s.usage_object);
    assert_eq!(usage(r#"{"usage": {"prompt_tokens": 1}}"#), Some(true));
    assert_eq!(usage(r#"{"message": {"usage": {}}}"#), Some(true));
    assert_eq!(usage(r#"{"response": {"usage": {}}}"#), Some(true));
    assert_eq!(usage(r#"{"usage": null}"#), Some(false));
    assert_eq!(usage(r#"{"choices": [{"usage": {}}]}"#), Some(false));
    assert_eq!(usage(r#"{"delta": {"usage": {}}}"#), Some(false));
    assert_eq!(usage(r#"{"x": "\"usage\": {"}"#), Some(false));
}
