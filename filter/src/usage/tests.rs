//! Usage read from responses as they pass: JSON bodies and event streams of every shape understood.

use super::stream_options::{include_usage, Rewrite, Unchanged};
use super::*;
use proptest::prelude::*;

const OPENAI_CHAT: &str = include_str!("fixtures/openai_chat.json");
const OPENAI_EMBEDDINGS: &str = include_str!("fixtures/openai_embeddings.json");
const OPENAI_RESPONSES: &str = include_str!("fixtures/openai_responses.json");
const ANTHROPIC: &str = include_str!("fixtures/anthropic_messages.json");
const OPENAI_STREAM: &str = include_str!("fixtures/openai_chat_stream.sse");
const OPENAI_STREAM_NO_USAGE: &str = include_str!("fixtures/openai_chat_stream_no_usage.sse");
const ANTHROPIC_STREAM: &str = include_str!("fixtures/anthropic_stream.sse");
const RESPONSES_STREAM: &str = include_str!("fixtures/openai_responses_stream.sse");
const OPENAI_REASONING: &str = include_str!("fixtures/openai_chat_reasoning.json");
const RESPONSES_REASONING: &str = include_str!("fixtures/openai_responses_reasoning.json");
const ANTHROPIC_CACHE: &str = include_str!("fixtures/anthropic_messages_cache.json");
const OPENAI_REASONING_STREAM: &str = include_str!("fixtures/openai_chat_stream_reasoning.sse");
const ANTHROPIC_CACHE_STREAM: &str = include_str!("fixtures/anthropic_stream_cache.sse");
const RESPONSES_REASONING_STREAM: &str =
    include_str!("fixtures/openai_responses_stream_reasoning.sse");

/// The standard's corners around content events: a comment, an event of two data lines,
/// fields after a data line, an event with no data.
const SSE_CORNERS: &str = ": hi\nevent: delta\ndata: {\"model\":\"m\",\ndata: \"delta\":\"ab\"}\nid: 1\n\ndata: {\"delta\":\"cd\"}\nretry: 5\n\nevent: ping\n\ndata: {\"delta\":\"ef\"}\n\ndata: {\"delta\":\"gh\"}\n\ndata: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n";

/// An event bound most fixtures' usage events are past (their usage and model fit in it).
const SMALL_BOUND: usize = 256;

const STREAMS: [&str; 8] = [
    SSE_CORNERS,
    OPENAI_STREAM,
    OPENAI_STREAM_NO_USAGE,
    ANTHROPIC_STREAM,
    RESPONSES_STREAM,
    OPENAI_REASONING_STREAM,
    ANTHROPIC_CACHE_STREAM,
    RESPONSES_REASONING_STREAM,
];

fn known(prompt: Option<u64>, completion: Option<u64>, total: Option<u64>) -> Usage {
    Usage::Known(Tokens {
        prompt,
        completion,
        total,
        ..Tokens::default()
    })
}

/// Known usage with its details: `[cached, reasoning, cache_creation]`.
fn detailed(
    prompt: u64,
    completion: u64,
    total: u64,
    [cached, reasoning, cache_creation]: [Option<u64>; 3],
) -> Usage {
    Usage::Known(Tokens {
        prompt: Some(prompt),
        completion: Some(completion),
        total: Some(total),
        cached,
        reasoning,
        cache_creation,
    })
}

fn reading(usage: Usage, model: &str) -> Reading {
    Reading {
        usage,
        model: Some(model.into()),
    }
}

fn stream(chunks: &[&[u8]]) -> sse::StreamEnd {
    let mut meter = SseMeter::new(Limits::default().max_event_bytes);
    for chunk in chunks {
        meter.feed(chunk);
    }
    meter.finish()
}

fn whole(text: &str) -> sse::StreamEnd {
    stream(&[text.as_bytes()])
}

/// What a stream said, whatever its line ends (its byte count aside).
fn said(mut end: sse::StreamEnd) -> sse::StreamEnd {
    end.seen_bytes = 0;
    end
}

// ---- JSON bodies ----

#[test]
fn an_openai_chat_completion_reports_its_usage_and_model() {
    assert_eq!(
        json::read(OPENAI_CHAT.as_bytes()),
        Ok(reading(
            detailed(1117, 46, 1163, [Some(0), Some(0), None]),
            "gpt-4o-2024-08-06"
        ))
    );
}

#[test]
fn an_embedding_reports_prompt_and_total_only() {
    assert_eq!(
        json::read(OPENAI_EMBEDDINGS.as_bytes()),
        Ok(reading(
            known(Some(8), None, Some(8)),
            "text-embedding-3-small"
        ))
    );
}

#[test]
fn a_responses_api_answer_reports_input_and_output_tokens() {
    assert_eq!(
        json::read(OPENAI_RESPONSES.as_bytes()),
        Ok(reading(
            detailed(36, 87, 123, [Some(0), Some(0), None]),
            "gpt-4.1-2025-04-14"
        ))
    );
}

#[test]
fn an_anthropic_message_reports_usage_with_the_total_summed() {
    assert_eq!(
        json::read(ANTHROPIC.as_bytes()),
        Ok(reading(
            detailed(2095, 503, 2598, [Some(0), None, Some(0)]),
            "claude-3-5-sonnet-20241022"
        ))
    );
}

#[test]
fn cached_and_reasoning_tokens_are_read_from_openai_chat_and_the_responses_api() {
    assert_eq!(
        json::read(OPENAI_REASONING.as_bytes()),
        Ok(reading(
            detailed(2006, 300, 2306, [Some(1920), Some(256), None]),
            "o3-2025-04-16"
        ))
    );
    assert_eq!(
        json::read(RESPONSES_REASONING.as_bytes()),
        Ok(reading(
            detailed(1540, 412, 1952, [Some(1024), Some(384), None]),
            "o4-mini-2025-04-16"
        ))
    );
}

#[test]
fn anthropic_cache_reads_and_writes_are_read_and_added_to_its_prompt() {
    // input_tokens (12) exclude the cache: the prompt is 12 + 2000 read + 1500 written,
    // as LiteLLM's AnthropicConfig.calculate_usage counts it.
    assert_eq!(
        json::read(ANTHROPIC_CACHE.as_bytes()),
        Ok(reading(
            detailed(3512, 340, 3852, [Some(2000), None, Some(1500)]),
            "claude-sonnet-4-20250514"
        ))
    );
    let only_writes = r#"{"model":"m","usage":{"input_tokens":3,"cache_creation_input_tokens":7,"output_tokens":1}}"#;
    assert_eq!(
        json::read(only_writes.as_bytes()),
        Ok(reading(detailed(10, 1, 11, [None, None, Some(7)]), "m"))
    );
    // A total the response states is kept as stated.
    let stated = r#"{"model":"m","usage":{"input_tokens":3,"cache_read_input_tokens":7,"output_tokens":1,"total_tokens":4}}"#;
    assert_eq!(
        json::read(stated.as_bytes()),
        Ok(reading(detailed(10, 1, 4, [Some(7), None, None]), "m"))
    );
}

#[test]
fn details_that_are_not_counts_are_not_read() {
    let body = r#"{"model":"m","usage":{"prompt_tokens":5,"completion_tokens":2,
        "prompt_tokens_details":{"cached_tokens":"3"},"completion_tokens_details":null,
        "cache_creation_input_tokens":-1}}"#;
    assert_eq!(
        json::read(body.as_bytes()),
        Ok(reading(detailed(5, 2, 7, [None, None, None]), "m"))
    );
}

#[test]
fn streams_report_their_details_in_every_shape() {
    assert_eq!(
        whole(OPENAI_REASONING_STREAM).reading,
        reading(
            detailed(2006, 300, 2306, [Some(1920), Some(256), None]),
            "o3-2025-04-16"
        )
    );
    // message_start carries the input and cache counts, message_delta the output.
    assert_eq!(
        whole(ANTHROPIC_CACHE_STREAM).reading,
        reading(
            detailed(3512, 340, 3852, [Some(2000), None, Some(1500)]),
            "claude-sonnet-4-20250514"
        )
    );
    assert_eq!(
        whole(RESPONSES_REASONING_STREAM).reading,
        reading(
            detailed(1540, 412, 1952, [Some(1024), Some(384), None]),
            "o4-mini-2025-04-16"
        )
    );
    // A message_delta that repeats the cumulative input and cache counts reads the same.
    let repeated = ANTHROPIC_CACHE_STREAM.replace(
        r#""usage":{"output_tokens":340}"#,
        r#""usage":{"input_tokens":12,"cache_creation_input_tokens":1500,"cache_read_input_tokens":2000,"output_tokens":340}"#,
    );
    assert_ne!(repeated, ANTHROPIC_CACHE_STREAM);
    assert_eq!(
        whole(&repeated).reading,
        whole(ANTHROPIC_CACHE_STREAM).reading
    );
}

#[test]
fn a_body_without_usage_is_absent_never_zero() {
    for body in [
        r#"{"model":"m","choices":[]}"#,
        r#"{"model":"m","usage":null}"#,
        r#"{"model":"m","usage":{}}"#,
        r#"{"model":"m","usage":{"prompt_tokens":"12","completion_tokens":-1,"total_tokens":1.5}}"#,
    ] {
        assert_eq!(
            json::read(body.as_bytes()),
            Ok(reading(Usage::Absent, "m")),
            "{body}"
        );
    }
    assert_eq!(json::read(b"[1,2]"), Ok(Reading::absent()));
}

#[test]
fn a_body_that_is_not_json_is_an_error() {
    assert_eq!(
        json::read(b"<html>bad gateway</html>"),
        Err(JsonError::Malformed)
    );
    assert_eq!(json::read(b""), Err(JsonError::Malformed));
}

#[test]
fn an_unreasonable_model_name_is_not_recorded() {
    let body = format!(
        r#"{{"model":"{}","usage":{{"total_tokens":3}}}}"#,
        "m".repeat(MAX_MODEL_LEN + 1)
    );
    assert_eq!(
        json::read(body.as_bytes()),
        Ok(Reading {
            usage: known(None, None, Some(3)),
            model: None
        })
    );
}

#[test]
fn a_body_past_the_bound_is_walked_for_its_usage_and_forgotten() {
    let mut meter = JsonMeter::new(100);
    meter.feed(&OPENAI_CHAT.as_bytes()[..60]);
    meter.feed(&OPENAI_CHAT.as_bytes()[60..]);
    assert_eq!(meter.finish(), json::read(OPENAI_CHAT.as_bytes()));
    let mut meter = JsonMeter::new(10);
    meter.feed(br#"[{"usage": {"prompt_tokens": 1}}]"#);
    assert_eq!(meter.finish(), Err(JsonError::TooLarge { limit: 10 }));
    let mut meter = JsonMeter::new(OPENAI_CHAT.len());
    for chunk in OPENAI_CHAT.as_bytes().chunks(7) {
        meter.feed(chunk);
    }
    assert_eq!(meter.finish(), json::read(OPENAI_CHAT.as_bytes()));
}

// ---- streams ----

#[test]
fn an_openai_stream_reports_the_usage_chunk() {
    let end = whole(OPENAI_STREAM);
    assert_eq!(
        end.reading,
        reading(
            detailed(9, 12, 21, [Some(0), Some(0), None]),
            "gpt-4o-mini-2024-07-18"
        )
    );
    assert!(end.done);
    assert_eq!((end.oversized_events, end.malformed_events), (0, 0));
}

#[test]
fn an_openai_stream_without_the_usage_chunk_is_absent() {
    let end = whole(OPENAI_STREAM_NO_USAGE);
    assert_eq!(
        end.reading,
        reading(Usage::Absent, "gpt-4o-mini-2024-07-18")
    );
    assert!(end.done);
}

#[test]
fn an_anthropic_stream_takes_input_from_the_start_and_output_from_the_last_delta() {
    let end = whole(ANTHROPIC_STREAM);
    assert_eq!(
        end.reading,
        reading(
            known(Some(25), Some(15), Some(40)),
            "claude-3-5-sonnet-20241022"
        )
    );
    assert!(!end.done);
}

#[test]
fn a_responses_api_stream_reports_the_completed_event() {
    assert_eq!(
        whole(RESPONSES_STREAM).reading,
        reading(
            detailed(37, 11, 48, [None, Some(0), None]),
            "gpt-4.1-2025-04-14"
        )
    );
}

#[test]
fn crlf_and_cr_line_ends_read_the_same() {
    for text in STREAMS {
        let crlf = text.replace('\n', "\r\n");
        let cr = text.replace('\n', "\r");
        assert_eq!(said(whole(&crlf)), said(whole(text)));
        assert_eq!(said(whole(&cr)), said(whole(text)));
    }
}

#[test]
fn data_lines_join_and_comments_and_other_fields_are_ignored() {
    let text = ": keep-alive\nevent: x\nid: 7\nretry: 10\ndata: {\"model\":\"m\",\ndata:\"usage\":{\"prompt_tokens\":1}}\n\n";
    assert_eq!(
        whole(text).reading,
        reading(known(Some(1), None, None), "m")
    );
}

#[test]
fn a_byte_order_mark_opening_the_stream_is_dropped() {
    let text = "\u{feff}data: {\"model\":\"m\",\"usage\":{\"total_tokens\":5}}\n\n";
    let expected = reading(known(None, None, Some(5)), "m");
    assert_eq!(whole(text).reading, expected);
    let bytes = text.as_bytes();
    let end = stream(&[&bytes[..1], &bytes[1..2], &bytes[2..]]);
    assert_eq!(end.reading, expected);
    let twice = format!("\u{feff}{text}");
    assert_eq!(
        whole(&twice).reading.usage,
        Usage::Absent,
        "only one mark is dropped"
    );
}

#[test]
fn an_event_left_open_at_the_end_is_still_read() {
    let text = "data: {\"model\":\"m\",\"usage\":{\"total_tokens\":5}}";
    assert_eq!(
        whole(text).reading,
        reading(known(None, None, Some(5)), "m")
    );
}

#[test]
fn a_stream_cut_inside_the_usage_event_is_absent_and_counted() {
    let cut = OPENAI_STREAM
        .find("\"completion_tokens\"")
        .map(|at| &OPENAI_STREAM[..at])
        .unwrap();
    let end = whole(cut);
    assert_eq!(
        end.reading,
        reading(Usage::Absent, "gpt-4o-mini-2024-07-18")
    );
    assert_eq!(end.malformed_events, 1);
}

#[test]
fn an_oversized_event_is_walked_for_its_usage_and_model() {
    let big = format!(
        "event: big\ndata: {{\"model\":\"m\",\"pad\":\"{}\",\"usage\":{{\"prompt_tokens\":1}}}}\n\ndata: {{\"model\":\"n\",\"usage\":{{\"completion_tokens\":2}}}}\n\n",
        "x".repeat(500)
    );
    for size in [1, 3, 64, 1000] {
        let mut meter = SseMeter::new(200);
        for chunk in big.as_bytes().chunks(size) {
            meter.feed(chunk);
            assert!(meter.held_bytes() <= 200);
        }
        let end = meter.finish();
        assert_eq!(end.reading, reading(known(Some(1), Some(2), Some(3)), "m"));
        assert_eq!(end.oversized_events, 0, "walked, not passed over");
    }
}

/// The Responses API's `response.completed` carries the whole response: a long answer
/// takes it past the bound, and its usage is read all the same.
#[test]
fn a_long_response_completed_is_walked_to_its_usage() {
    for stream in [RESPONSES_STREAM, RESPONSES_REASONING_STREAM] {
        let longest = stream.lines().map(str::len).max().unwrap_or(0);
        assert!(longest > SMALL_BOUND, "{longest}");
        let mut meter = SseMeter::new(SMALL_BOUND);
        meter.feed(stream.as_bytes());
        let end = meter.finish();
        assert_eq!(end.oversized_events, 0);
        assert_eq!(end.reading, whole(stream).reading);
        assert!(matches!(end.reading.usage, Usage::Known(_)));
    }
}

#[test]
fn an_oversized_event_that_cannot_be_walked_is_skipped_counted_and_the_next_one_read() {
    let pad = "x".repeat(500);
    let not_json = format!("data: {pad}\n\n");
    let two_lines =
        format!("data: {{\"usage\":{{\"prompt_tokens\":1}},\n: {pad}\ndata: \"x\":1}}\n\n");
    let huge_usage = format!("data: {{\"usage\":{{\"prompt_tokens\":1,\"pad\":\"{pad}\"}}}}\n\n");
    let next = "data: {\"model\":\"n\",\"usage\":{\"prompt_tokens\":2}}\n\n";
    for big in [not_json, two_lines, huge_usage] {
        let stream = format!("{big}{next}");
        for size in [1, 3, 64, 1000] {
            let mut meter = SseMeter::new(200);
            for chunk in stream.as_bytes().chunks(size) {
                meter.feed(chunk);
                assert!(meter.held_bytes() <= 200);
            }
            let end = meter.finish();
            assert_eq!(
                end.reading,
                reading(known(Some(2), None, None), "n"),
                "{big}"
            );
            assert_eq!(end.oversized_events, 1, "{big}");
        }
    }
}

#[test]
fn a_line_without_end_is_bounded_too() {
    let mut meter = SseMeter::new(1024);
    for _ in 0..10_000 {
        meter.feed(b"data: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert!(meter.held_bytes() <= 1024);
    }
    assert_eq!(meter.finish().oversized_events, 1);
}

#[test]
fn every_cut_into_two_chunks_reads_the_same() {
    for text in STREAMS {
        let bytes = text.as_bytes();
        let expected = whole(text);
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(stream(&[a, b]), expected, "cut at {at}");
        }
        let crlf = text.replace('\n', "\r\n");
        for at in 0..=crlf.len() {
            let (a, b) = crlf.as_bytes().split_at(at);
            assert_eq!(
                said(stream(&[a, b])),
                said(expected.clone()),
                "crlf cut at {at}"
            );
        }
    }
}

#[test]
fn the_meter_is_chosen_by_content_type_and_only_counts_encoded_bodies() {
    let limits = Limits::default();
    let pick = |t: Option<&str>, e: Option<&str>| {
        Meter::for_response(t.map(str::as_bytes), e.map(str::as_bytes), limits)
    };
    assert!(matches!(
        pick(Some("text/event-stream; charset=utf-8"), None),
        Meter::Sse(_)
    ));
    assert!(matches!(
        pick(Some("Text/Event-Stream"), Some("identity")),
        Meter::Sse(_)
    ));
    assert!(matches!(
        pick(Some("application/json"), None),
        Meter::Json(_)
    ));
    assert!(matches!(pick(None, None), Meter::Json(_)));
    let mut gzip = pick(Some("application/json"), Some("gzip"));
    assert!(matches!(
        gzip,
        Meter::Encoded {
            streamed: false,
            ..
        }
    ));
    gzip.feed(&[0x1f, 0x8b, 8, 0]);
    gzip.feed(b"{\"usage\": {\"prompt_tokens\": 3}}");
    let report = gzip.finish();
    assert!(report.encoded && !report.streamed);
    assert_eq!(report.seen_bytes, 4 + 31);
    assert_eq!(report.reading, Reading::absent(), "never read");
    assert!(pick(Some("text/event-stream"), Some("br")).is_stream());
}

#[test]
fn a_meter_reports_streamed_and_what_it_could_not_read() {
    let mut meter = Meter::for_response(Some(b"text/event-stream"), None, Limits::default());
    meter.feed(ANTHROPIC_STREAM.as_bytes());
    let report = meter.finish();
    assert!(report.streamed);
    assert_eq!(report.reading, whole(ANTHROPIC_STREAM).reading);

    let mut meter = Meter::for_response(None, None, Limits::default());
    meter.feed(b"not json");
    let report = meter.finish();
    assert_eq!(
        (report.streamed, report.malformed, report.oversized),
        (false, 1, 0)
    );
    assert_eq!(report.reading, Reading::absent());
    assert_eq!(report.seen_bytes, 8);

    let limits = Limits {
        max_json_bytes: 10,
        ..Limits::default()
    };
    let mut meter = Meter::for_response(None, None, limits);
    meter.feed(OPENAI_CHAT.as_bytes());
    let report = meter.finish();
    assert_eq!(report.oversized, 0, "walked past the bound");
    assert_eq!(report.reading, json::read(OPENAI_CHAT.as_bytes()).unwrap());
    assert_eq!(
        report.seen_bytes,
        OPENAI_CHAT.len() as u64,
        "counted past the bound"
    );
    let mut meter = Meter::for_response(None, None, limits);
    meter.feed(br#"[{"usage": {"prompt_tokens": 1}}]"#);
    assert_eq!(meter.finish().oversized, 1, "not an object: passed over");
}

#[test]
fn a_stream_counts_its_generated_content_in_every_shape() {
    // OpenAI chat: each chunk's delta (role included, a few bytes on the client's side).
    let chat = "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hello\"}}]}\n\n\
                data: {\"choices\":[{\"delta\":{\"content\":\" world\"},\"finish_reason\":null}]}\n\n\
                data: [DONE]\n\n";
    assert_eq!(whole(chat).content_bytes, 9 + 5 + 6);
    // Text completions: each choice's text; tool calls: their arguments and names.
    let completions = "data: {\"choices\":[{\"text\":\"abc\"},{\"text\":\"de\"}]}\n\n";
    assert_eq!(whole(completions).content_bytes, 5);
    let tools = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n";
    assert_eq!(whole(tools).content_bytes, 7);
    // Anthropic's content_block_delta and the Responses API's delta events.
    let anthropic = whole(ANTHROPIC_STREAM).content_bytes;
    assert!(anthropic > 0, "{anthropic}");
    let responses = "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi there\"}\n\n";
    assert_eq!(whole(responses).content_bytes, 8);
    // An event that is not JSON counts whole; so does one skipped for its size.
    assert_eq!(whole("data: not json\n\n").content_bytes, 8);
    let mut meter = SseMeter::new(16);
    meter.feed(b"data: 0123456789abcdefghij\n\ndata: [DONE]\n\n");
    let end = meter.finish();
    assert_eq!(end.oversized_events, 1);
    assert!(end.content_bytes >= 20, "{}", end.content_bytes);
    assert_eq!(end.seen_bytes, 42);
}

// ---- stream_options ----

fn rewritten(body: &str) -> (String, bool) {
    match include_usage(body.as_bytes(), 1 << 20) {
        Rewrite::Rewritten { body, overrode } => (String::from_utf8(body).unwrap(), overrode),
        Rewrite::Unchanged(why) => panic!("{body}: unchanged ({why:?})"),
    }
}

fn unchanged(body: &str) -> Unchanged {
    match include_usage(body.as_bytes(), 1 << 20) {
        Rewrite::Unchanged(why) => why,
        Rewrite::Rewritten { body, .. } => panic!("rewritten: {}", String::from_utf8_lossy(&body)),
    }
}

#[test]
fn a_stream_without_options_gets_them_and_keeps_every_other_byte() {
    let body = "{ \"model\": \"gpt-4o\", \"stream\": true, \"temperature\": 1.0e0 }\n";
    assert_eq!(
        rewritten(body),
        (
            "{ \"model\": \"gpt-4o\", \"stream\": true, \"temperature\": 1.0e0 ,\"stream_options\":{\"include_usage\":true}}\n".into(),
            false
        )
    );
}

#[test]
fn existing_options_gain_include_usage() {
    assert_eq!(
        rewritten(r#"{"stream":true,"stream_options":{}}"#).0,
        r#"{"stream":true,"stream_options":{"include_usage":true}}"#
    );
    assert_eq!(
        rewritten(r#"{"stream":true,"stream_options":{"x":1},"n":2}"#).0,
        r#"{"stream":true,"stream_options":{"include_usage":true,"x":1},"n":2}"#
    );
    assert_eq!(
        rewritten(r#"{"stream":true,"stream_options":null}"#).0,
        r#"{"stream":true,"stream_options":{"include_usage":true}}"#
    );
}

#[test]
fn a_client_that_declines_usage_is_overridden_and_said_so() {
    assert_eq!(
        rewritten(r#"{"stream":true,"stream_options":{"include_usage": false, "x":1}}"#),
        (
            r#"{"stream":true,"stream_options":{"include_usage": true, "x":1}}"#.into(),
            true
        )
    );
}

#[test]
fn bodies_that_need_no_change_or_cannot_take_one_are_left_alone() {
    assert_eq!(
        unchanged(r#"{"stream":true,"stream_options":{"include_usage":true}}"#),
        Unchanged::AlreadyIncluded
    );
    for body in [
        r#"{"model":"m"}"#,
        r#"{"stream":false}"#,
        r#"{"stream":"true"}"#,
    ] {
        assert_eq!(unchanged(body), Unchanged::NotStreamed, "{body}");
    }
    for body in [
        "",
        "[true]",
        "{\"stream\":true",
        r#"{"stream":true,"stream_options":"yes"}"#,
        "\u{feff}{\"stream\":true}",
    ] {
        assert_eq!(unchanged(body), Unchanged::NotEditable, "{body}");
    }
    assert_eq!(
        include_usage(br#"{"stream":true}"#, 5),
        Rewrite::Unchanged(Unchanged::TooLarge)
    );
}

#[test]
fn the_last_of_duplicate_keys_is_the_one_edited_as_upstreams_read_it() {
    let (body, _) =
        rewritten(r#"{"stream":true,"stream_options":{"include_usage":true},"stream_options":{}}"#);
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["stream_options"]["include_usage"], true);
}

fn member() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#""model": "gpt-4o""#.to_string()),
        Just(r#""messages": [{"role": "user", "content": "}{\"stream_options\""}]"#.to_string()),
        Just(r#""temperature": 0.7"#.to_string()),
        Just(r#""stream_options": {}"#.to_string()),
        Just(r#""stream_options": {"include_usage": false}"#.to_string()),
        Just(r#""stream_options": {"x": [1, {"include_usage": 0}]}"#.to_string()),
        Just(r#""stream_options": null"#.to_string()),
    ]
}

/// `bytes` cut at the points `cuts` pick (any split, empty chunks included).
pub(super) fn chunks_at<'b>(bytes: &'b [u8], cuts: &[prop::sample::Index]) -> Vec<&'b [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(at.len() + 1);
    let mut from = 0;
    for to in at {
        chunks.push(&bytes[from..to]);
        from = to;
    }
    chunks.push(&bytes[from..]);
    chunks
}

proptest! {
    #[test]
    fn any_chunking_of_a_stream_reads_the_same(
        which in 0..STREAMS.len(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let chunks = chunks_at(STREAMS[which].as_bytes(), &cuts);
        prop_assert_eq!(stream(&chunks), whole(STREAMS[which]));
    }

    #[test]
    fn events_past_a_small_bound_are_walked_to_what_they_say(
        which in 0..STREAMS.len(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut meter = SseMeter::new(SMALL_BOUND);
        for chunk in chunks_at(STREAMS[which].as_bytes(), &cuts) {
            meter.feed(chunk);
            prop_assert!(meter.held_bytes() <= SMALL_BOUND);
        }
        prop_assert_eq!(meter.finish().reading, whole(STREAMS[which]).reading);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20),
    ) {
        let mut meter = SseMeter::new(256);
        for chunk in &chunks {
            meter.feed(chunk);
            prop_assert!(meter.held_bytes() <= 256);
        }
        let _ = meter.finish();
        let body = chunks.concat();
        let _ = json::read(&body);
        let _ = include_usage(&body, 1 << 20);
    }

    #[test]
    fn a_rewrite_changes_nothing_but_include_usage(
        members in proptest::collection::vec(member(), 0..4),
        space in "[ \n\t]{0,2}",
    ) {
        let mut all = members.clone();
        all.push(r#""stream": true"#.to_string());
        let body = format!("{{{space}{}{space}}}{space}", all.join(&format!(",{space}")));
        let before: serde_json::Value = serde_json::from_str(&body).unwrap();
        match include_usage(body.as_bytes(), 1 << 20) {
            Rewrite::Rewritten { body: after, .. } => {
                let after: serde_json::Value = serde_json::from_slice(&after).unwrap();
                let mut expected = before.clone();
                let options = &mut expected["stream_options"];
                if !options.is_object() {
                    *options = serde_json::json!({});
                }
                options["include_usage"] = true.into();
                prop_assert_eq!(after, expected);
            }
            Rewrite::Unchanged(why) => prop_assert!(false, "{body}: {why:?}"),
        }
    }
}

/// The content count, as a document walk: what [`content::content_bytes`] does in one pass.
fn content_by_walking(document: &serde_json::Value) -> u64 {
    fn leaves(v: &serde_json::Value) -> u64 {
        match v {
            serde_json::Value::String(s) => s.len() as u64,
            serde_json::Value::Array(a) => a.iter().map(leaves).sum(),
            serde_json::Value::Object(o) => o.values().map(leaves).sum(),
            _ => 0,
        }
    }
    let choices = document["choices"].as_array().into_iter().flatten();
    let from_choices: u64 = choices
        .map(|c| c.get("text").map_or(0, leaves) + c.get("delta").map_or(0, leaves))
        .sum();
    from_choices + document.get("delta").map_or(0, leaves)
}

#[test]
fn the_one_pass_content_count_agrees_with_a_document_walk_on_every_fixture_event() {
    let mut events = 0;
    for text in STREAMS {
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let Ok(document) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            events += 1;
            assert_eq!(
                content::content_bytes(data.as_bytes()),
                Some(content_by_walking(&document)),
                "{data}"
            );
        }
    }
    assert!(events >= 20, "{events}");
    assert_eq!(
        content::content_bytes(b"{\"choices\": 3, \"delta\": null}"),
        Some(0)
    );
    assert_eq!(content::content_bytes(b"[\"text\"]"), Some(0));
    assert_eq!(
        content::content_bytes(b"{\"delta\": \"\\u00e9t\\u00e9\"}"),
        Some(5)
    );
    assert_eq!(content::content_bytes(b"{\"delta\": \"x\"} trailing"), None);
    assert_eq!(content::content_bytes(b"{\"delta\": "), None);
}
