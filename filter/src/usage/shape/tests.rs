//! The template against the skim it stands in for: the same answer for every event, and
//! the template taken only where it is exact.

use super::*;
use crate::usage::content::skim;
use proptest::prelude::*;

/// OpenAI's chat chunk as it streams today (with its `obfuscation` padding).
fn openai_chunk(content: &str, padding: &str) -> String {
    let content = serde_json::to_string(content).unwrap();
    let padding = serde_json::to_string(padding).unwrap();
    format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{{"index":0,"delta":{{"content":{content}}},"logprobs":null,"finish_reason":null}}],"obfuscation":{padding}}}"#
    )
}

/// Anthropic's text delta.
fn anthropic_delta(text: &str) -> String {
    let text = serde_json::to_string(text).unwrap();
    format!(
        r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{text}}}}}"#
    )
}

fn read(skimmer: &mut ShapedSkimmer, data: &str) -> (Option<Skim>, bool) {
    let by_template = skimmer.read_as_template(data.as_bytes()).is_some();
    (skimmer.skim(data.as_bytes()), by_template)
}

#[test]
fn the_next_chunk_of_a_shape_is_read_against_it() {
    let mut skimmer = ShapedSkimmer::default();
    let first = openai_chunk("Hello", "ab");
    assert_eq!(read(&mut skimmer, &first), (skim(first.as_bytes()), false));
    for (content, padding) in [(", wor", "x"), ("ld \"é\" \n", ""), ("", "abcdef")] {
        let next = openai_chunk(content, padding);
        let expected = skim(next.as_bytes());
        assert_eq!(expected.map(|s| s.content), Some(content.len() as u64));
        assert_eq!(read(&mut skimmer, &next), (expected, true), "{next}");
    }
}

#[test]
fn a_change_outside_the_strings_is_skimmed_whole() {
    let mut skimmer = ShapedSkimmer::default();
    skimmer.skim(openai_chunk("a", "b").as_bytes());
    let changed = [
        openai_chunk("a", "b").replace(r#""index":0"#, r#""index":1"#),
        openai_chunk("a", "b").replace(r#""logprobs":null,"#, ""),
        // A string that would close early and add a member: its first quote ends it.
        openai_chunk("a", "b").replace(r#""content":"a""#, r#""content":"a","text":"xyz""#),
        // A bad escape: not JSON.
        openai_chunk("a", "b").replace(r#""content":"a""#, r#""content":"\x""#),
        r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#.to_string(),
    ];
    for data in changed {
        let expected = skim(data.as_bytes());
        assert_eq!(read(&mut skimmer, &data), (expected, false), "{data}");
    }
}

#[test]
fn only_an_event_with_content_and_no_usage_becomes_the_template() {
    let mut skimmer = ShapedSkimmer::default();
    skimmer.skim(anthropic_delta("hi").as_bytes());
    // A ping, and an event with content and usage, pass without replacing the delta's shape.
    skimmer.skim(br#"{"type":"ping"}"#);
    skimmer.skim(br#"{"delta":{"text":"x"},"usage":{"output_tokens":1}}"#);
    assert!(read(&mut skimmer, &anthropic_delta("there")).1);
    // An event too long to keep is read, and not kept.
    let long = anthropic_delta(&"x".repeat(MAX_TEMPLATE_BYTES));
    assert_eq!(read(&mut skimmer, &long), (skim(long.as_bytes()), true));
    let long_other = long.replace("text_delta", "text_delta2");
    skimmer.skim(long_other.as_bytes());
    assert!(read(&mut skimmer, &anthropic_delta("again")).1);
}

#[test]
fn what_a_stream_holds_is_bounded_whatever_its_events() {
    let mut skimmer = ShapedSkimmer::default();
    // Many strings, in a small event and in a large one: neither becomes a template.
    let many = |n: usize| format!(r#"{{"delta":[{}"x"]}}"#, r#""","#.repeat(n));
    for data in [many(MAX_TEMPLATE_SLOTS), many(600), many(20_000)] {
        assert_eq!(skimmer.skim(data.as_bytes()), skim(data.as_bytes()));
        let (bytes, slots) = skimmer.held();
        assert!(bytes <= MAX_TEMPLATE_BYTES, "{bytes}");
        assert!(slots <= MAX_TEMPLATE_SLOTS, "{slots}");
    }
    let template = many(MAX_TEMPLATE_SLOTS - 1);
    skimmer.skim(template.as_bytes());
    assert!(skimmer.read_as_template(template.as_bytes()).is_some());
    skimmer.skim(many(600).as_bytes());
    assert!(skimmer.read_as_template(template.as_bytes()).is_some());
}

#[test]
fn words_compare_as_bytes_do() {
    let text = b"0123456789abcdefghij";
    for len in 0..text.len() {
        let a = &text[..len];
        assert!(same(a, a));
        for at in 0..len {
            let mut b = a.to_vec();
            b[at] ^= 1;
            assert!(!same(a, &b));
        }
        assert!(!same(a, &text[..len + 1]));
    }
}

/// An event of one of a stream's shapes, its strings any text.
fn event() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<String>(), "[a-zA-Z0-9]{0,12}").prop_map(|(c, p)| openai_chunk(&c, &p)),
        any::<String>().prop_map(|t| anthropic_delta(&t)),
        Just(r#"{"type":"ping"}"#.to_string()),
        Just(r#"{"choices":[],"usage":{"prompt_tokens":3}}"#.to_string()),
    ]
}

/// An event's bytes, perhaps edited at one place (a byte changed, dropped or added).
fn edited() -> impl Strategy<Value = Vec<u8>> {
    let edit = prop_oneof![
        Just(None),
        (any::<prop::sample::Index>(), any::<u8>(), 0..3u8).prop_map(Some),
    ];
    (event(), edit).prop_map(|(event, edit)| {
        let mut bytes = event.into_bytes();
        if let Some((at, byte, how)) = edit {
            let at = at.index(bytes.len());
            match how {
                0 => bytes[at] = byte,
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, byte),
            }
        }
        bytes
    })
}

proptest! {
    #[test]
    fn a_stream_skims_as_each_event_alone_does(events in prop::collection::vec(edited(), 1..24)) {
        let mut skimmer = ShapedSkimmer::default();
        for data in &events {
            prop_assert_eq!(skimmer.skim(data), skim(data), "{}", String::from_utf8_lossy(data));
        }
    }
}
