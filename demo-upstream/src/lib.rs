//! A tiny OpenAI-shaped upstream for trying livegate: it answers `/v1/models` (and
//! `/models`), `/v1/chat/completions`, `/v1/responses` and Anthropic's `/v1/messages`
//! (with cached, reasoning and cache-write counts when asked: [`details`]), and echoes what the gateway
//! told it about the caller.
//!
//! Like OpenAI, it gzips its JSON and event-stream answers when the request's
//! `Accept-Encoding` allows gzip (`content-encoding: gzip`, `vary: accept-encoding`); a
//! request field `livegate_gzip: true` makes it gzip whatever the request accepts (an
//! upstream that compresses anyway, for tests of the meter).
//!
//! Every handler reads the whole request body before it answers, as a real API does. An
//! HTTP server that answers first and then closes the connection with the body still
//! unread makes the kernel reset it (unread data at close is an RST), and the reset can
//! reach Envoy before the answer does: the client then gets Envoy's 503 "reset before
//! headers" for a request the upstream answered with 200.

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::LazyLock;

pub mod details;
use details::{chat_usage, responses_usage, Details};

/// The demo's routes; anything else is echoed too, so every protected path shows
/// what reached the upstream.
pub fn router() -> Router {
    Router::new()
        .route("/v1/models", get(models))
        // LiteLLM serves both spellings, and its `lite models list` asks for this one.
        .route("/models", get(models))
        .route("/v1/chat/completions", post(chat_completion))
        .route("/v1/responses", post(responses))
        .route("/v1/messages", post(details::messages))
        .fallback(echo)
        // Far above the gateway's largest request body: the gateway decides what is too large.
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
}

/// The largest body the demo reads (64 MiB).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024 * 1024;

async fn models(headers: HeaderMap, body: Bytes) -> Response {
    let answer = json!({
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "owned_by": "livegate"}],
        "livegate": received(&headers, &body),
    });
    encoded(&headers, false, JSON, answer.to_string())
}

pub(crate) const JSON: &str = "application/json";
pub(crate) const EVENT_STREAM: &str = "text/event-stream";

/// The request field asking for gzip whatever `Accept-Encoding` says.
pub const GZIP_FIELD: &str = "livegate_gzip";

/// The request field asking for an answer of about this many bytes of content (the
/// answer's words repeated; at most [`MAX_ANSWER_BYTES`]), for tests of the meter's bounds.
pub const ANSWER_BYTES_FIELD: &str = "livegate_answer_bytes";

/// The largest answer a request may ask for (8 MiB).
pub const MAX_ANSWER_BYTES: u64 = 8 * 1024 * 1024;

/// Whether an `Accept-Encoding` value allows gzip (`gzip` or `*`, with a q-value above 0).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding
        .into_iter()
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// gzip of `data` (in memory: the demo's answers are whole strings).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// Whether an answer to these headers is gzipped: forced, or accepted.
fn gzipped(headers: &HeaderMap, force: bool) -> bool {
    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok());
    force || accepts_gzip(accept)
}

/// An answer of `content_type`, gzipped when the request accepts it or `force`s it.
pub(crate) fn encoded(
    headers: &HeaderMap,
    force: bool,
    content_type: &'static str,
    body: String,
) -> Response {
    let mut response = if gzipped(headers, force) {
        let mut r = gzip(body.as_bytes()).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        r
    } else {
        body.into_response()
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The answer's text: the demo's sentence, or its words repeated to about
/// `livegate_answer_bytes` bytes.
pub fn answer_text(request: &Value) -> String {
    let wanted = request
        .get(ANSWER_BYTES_FIELD)
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(MAX_ANSWER_BYTES);
    let mut text = ANSWER.concat();
    while (text.len() as u64) < wanted {
        text.push_str(ANSWER[text.len() % ANSWER.len()]);
    }
    text
}

pub(crate) fn forced_gzip(request: &Value) -> bool {
    request.get(GZIP_FIELD) == Some(&Value::Bool(true))
}

/// The model the demo serves and names in every answer.
pub const MODEL: &str = "livegate-demo";

/// The demo's answer, in words (one stream chunk each).
pub(crate) const ANSWER: [&str; 6] = ["Hello ", "from ", "the ", "livegate ", "demo ", "upstream."];

/// Every answer counts this many completion tokens.
pub const COMPLETION_TOKENS: u64 = 8;

/// The prompt's token count, as the demo counts it: the characters of every message's
/// `content` string, so a test knows each request's usage exactly.
pub fn prompt_tokens(request: &Value) -> u64 {
    let messages = request.get("messages").and_then(Value::as_array);
    messages
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_str))
        .map(|c| c.chars().count() as u64)
        .sum()
}

/// The request field naming how many content chunks a streamed answer has (the answer's
/// words, repeated), for benchmarks; absent, not a number, or 0: one chunk per word.
pub const EVENTS_FIELD: &str = "livegate_events";

/// The most content chunks a stream is made of, whatever the request asks.
pub const MAX_EVENTS: u64 = 100_000;

/// The request field asking the demo to hold its answer this many milliseconds (a slow
/// model, for tests of requests in flight); at most [`MAX_DELAY_MS`].
pub const DELAY_FIELD: &str = "livegate_delay_ms";

/// The longest a request may ask the demo to wait.
pub const MAX_DELAY_MS: u64 = 60_000;

/// Waits the `livegate_delay_ms` a request asks for; at once without one (a zero-length
/// sleep still waits for the timer's next tick, a millisecond under load).
pub async fn wait_as_asked(request: &Value) {
    let delay = delay(request);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// How long a request asks the demo to wait before it answers.
pub fn delay(request: &Value) -> std::time::Duration {
    millis_field(request, DELAY_FIELD, MAX_DELAY_MS)
}

/// A request's field of milliseconds, at most `max`; zero when absent or not a count.
fn millis_field(request: &Value, field: &str, max: u64) -> std::time::Duration {
    let ms = request.get(field).and_then(Value::as_u64).unwrap_or(0);
    std::time::Duration::from_millis(ms.min(max))
}

/// The request field asking for a stream paced as a provider sends it: each event written
/// on its own, this many milliseconds after the last (at most [`MAX_EVENT_GAP_MS`]); the
/// answer is then chunked, without `content-length`. Absent or 0: the whole stream at once.
/// An answer gzipped (asked for or forced) is never paced.
pub const EVENT_GAP_FIELD: &str = "livegate_event_gap_ms";

/// The longest gap a request may ask for between two events.
pub const MAX_EVENT_GAP_MS: u64 = 1_000;

/// The gap a request asks for between a stream's events.
pub fn event_gap(request: &Value) -> std::time::Duration {
    millis_field(request, EVENT_GAP_FIELD, MAX_EVENT_GAP_MS)
}

/// `sse` (whole events, each ending with its blank line) as a body written one event at a
/// time, `gap` apart.
fn paced(sse: String, gap: std::time::Duration) -> Response {
    let events: Vec<String> = sse.split_inclusive("\n\n").map(str::to_owned).collect();
    let stream = futures_util::stream::unfold(
        (events.into_iter(), true),
        move |(mut events, first)| async move {
            let event = events.next()?;
            if !first {
                tokio::time::sleep(gap).await;
            }
            Some((Ok::<_, std::convert::Infallible>(event), (events, false)))
        },
    );
    let mut response = axum::body::Body::from_stream(stream).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    response
}

/// The content chunks a request asks for: `livegate_events` (at most [`MAX_EVENTS`]), else
/// one per word of the answer.
pub fn content_chunks(request: &Value) -> usize {
    match request.get(EVENTS_FIELD).and_then(Value::as_u64) {
        Some(n) if n > 0 => usize::try_from(n.min(MAX_EVENTS)).unwrap_or(ANSWER.len()),
        _ => ANSWER.len(),
    }
}

/// `stream: true` gets a server-sent-event stream of `chat.completion.chunk`s, ending with
/// a usage chunk when `stream_options.include_usage` is true, then `data: [DONE]`; any
/// other request one JSON answer.
async fn chat_completion(headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let prompt = prompt_tokens(&request);
    wait_as_asked(&request).await;
    let force = forced_gzip(&request);
    if request.get("stream") == Some(&Value::Bool(true)) {
        let include_usage = request.pointer("/stream_options/include_usage") == Some(&json!(true));
        let chunks = content_chunks(&request);
        let sse = stream_events_with(prompt, details::details(&request), include_usage, chunks);
        let gap = event_gap(&request);
        if !gap.is_zero() && !gzipped(&headers, force) {
            return paced(sse, gap);
        }
        return encoded(&headers, force, EVENT_STREAM, sse);
    }
    let answer = json!({
        "id": "chatcmpl-livegate-demo",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer_text(&request)},
            "finish_reason": "stop",
        }],
        "usage": chat_usage(prompt, details::details(&request)),
        "livegate": received(&headers, &body),
    });
    encoded(&headers, force, JSON, answer.to_string())
}

/// OpenAI's Responses API: `input` (a string; its characters are the prompt's tokens)
/// answered as one `response`, or with `stream: true` as its events, ending with
/// `response.completed`, which carries the whole response and its usage (so a long
/// answer makes that one event large, as OpenAI's does).
async fn responses(headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let prompt = request
        .get("input")
        .and_then(Value::as_str)
        .map_or(0, |s| s.chars().count() as u64);
    let text = answer_text(&request);
    let response = json!({
        "id": "resp_livegate_demo",
        "object": "response",
        "status": "completed",
        "model": MODEL,
        "output": [{
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text}],
        }],
        "usage": responses_usage(prompt, details::details(&request)),
    });
    let force = forced_gzip(&request);
    if request.get("stream") != Some(&Value::Bool(true)) {
        return encoded(&headers, force, JSON, response.to_string());
    }
    let event = |kind: &str, data: Value| format!("event: {kind}\ndata: {data}\n\n");
    let mut sse = event(
        "response.created",
        json!({"type": "response.created", "response": {"id": "resp_livegate_demo", "model": MODEL, "status": "in_progress"}}),
    );
    for word in ANSWER {
        sse.push_str(&event(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "delta": word}),
        ));
    }
    sse.push_str(&event(
        "response.completed",
        json!({"type": "response.completed", "response": response}),
    ));
    encoded(&headers, force, EVENT_STREAM, sse)
}

/// The events of a streamed answer, as OpenAI sends them: `chunks` content chunks (the
/// answer's words in turn), a stop chunk, the usage chunk when asked, `[DONE]`.
pub fn stream_events(prompt: u64, include_usage: bool, chunks: usize) -> String {
    stream_events_with(prompt, Details::default(), include_usage, chunks)
}

/// [`stream_events`], its usage chunk stating the `details` asked for.
pub fn stream_events_with(
    prompt: u64,
    details: Details,
    include_usage: bool,
    chunks: usize,
) -> String {
    let content = &*CONTENT_CHUNKS;
    let mut out = String::with_capacity(content.iter().map(String::len).sum::<usize>() * chunks);
    for chunk in content.iter().cycle().take(chunks) {
        out.push_str(chunk);
    }
    let stop = json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]);
    out.push_str(&stream_chunk(stop, Value::Null));
    if include_usage {
        out.push_str(&stream_chunk(json!([]), chat_usage(prompt, details)));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// The content chunk of each word of the answer, rendered once: a benchmark streams
/// thousands of answers a second, and building each chunk's JSON anew made the upstream,
/// not the gateway, the busiest process on the machine.
static CONTENT_CHUNKS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let content =
        |word: &str| json!([{"index": 0, "delta": {"content": word}, "finish_reason": null}]);
    ANSWER
        .iter()
        .map(|word| stream_chunk(content(word), Value::Null))
        .collect()
});

/// One `chat.completion.chunk` event.
fn stream_chunk(choices: Value, usage: Value) -> String {
    let event = json!({
        "id": "chatcmpl-livegate-demo",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": choices,
        "usage": usage,
    });
    format!("data: {event}\n\n")
}

async fn echo(headers: HeaderMap, body: Bytes) -> Response {
    let answer = json!({"livegate": received(&headers, &body)});
    encoded(&headers, false, JSON, answer.to_string())
}

/// What the upstream saw: the identity headers, whether any credential leaked, and how
/// many body bytes arrived.
pub(crate) fn received(headers: &HeaderMap, body: &Bytes) -> Value {
    let identity: serde_json::Map<String, Value> = headers
        .iter()
        // Every spelling a framework may read as an identity header: `x_livegate_user_id`
        // is `x-livegate-user-id` to many, so the tests must see it if it ever arrives.
        .filter(|(name, _)| name.as_str().replace('_', "-").starts_with("x-livegate-"))
        .map(|(name, value)| {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), Value::String(text))
        })
        .collect();
    json!({
        "identity_headers": identity,
        // Whether, never what: the demo must not echo a credential back to a client.
        "authorization_present": headers.contains_key("authorization"),
        "x_api_key_present": headers.contains_key("x-api-key"),
        "body_bytes": body.len(),
        // What the gateway let the client ask for (it asks for identity on metered routes).
        "accept_encoding": headers
            .get(header::ACCEPT_ENCODING)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        // The model the request named as it arrived (after the gateway resolved an alias).
        "model": serde_json::from_slice::<Value>(body).ok().and_then(|b| b.get("model").cloned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(stream: &str) -> Vec<&str> {
        stream
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect()
    }

    #[test]
    fn a_stream_ends_with_its_usage_only_when_asked_then_done() {
        let asked = stream_events(5, true, ANSWER.len());
        let data = events(&asked);
        assert_eq!(data.last(), Some(&"[DONE]"));
        let usage: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13})
        );
        let chunks = data.len() - 2;
        assert!(chunks > 2, "several content chunks");

        let unasked = stream_events(5, false, ANSWER.len());
        assert!(!unasked.contains("prompt_tokens"));
        assert_eq!(events(&unasked).len(), chunks + 1);
    }

    #[test]
    fn a_request_may_ask_for_a_number_of_content_chunks_within_a_bound() {
        assert_eq!(content_chunks(&json!({})), ANSWER.len());
        assert_eq!(content_chunks(&json!({"livegate_events": 0})), ANSWER.len());
        assert_eq!(
            content_chunks(&json!({"livegate_events": "9"})),
            ANSWER.len()
        );
        assert_eq!(content_chunks(&json!({"livegate_events": 200})), 200);
        assert_eq!(
            content_chunks(&json!({"livegate_events": u64::MAX})),
            MAX_EVENTS as usize
        );
        let stream = stream_events(3, true, 200);
        // 200 content chunks, the stop chunk, the usage chunk, [DONE].
        assert_eq!(events(&stream).len(), 203);
        assert!(stream.contains("\"completion_tokens\":8"));
    }

    #[test]
    fn a_request_may_ask_for_a_delay_within_a_bound() {
        assert_eq!(delay(&json!({})), std::time::Duration::ZERO);
        assert_eq!(delay(&json!({"livegate_delay_ms": 250})).as_millis(), 250);
        assert_eq!(
            delay(&json!({"livegate_delay_ms": "1"})),
            std::time::Duration::ZERO
        );
        assert_eq!(
            delay(&json!({"livegate_delay_ms": u64::MAX})).as_millis(),
            u128::from(MAX_DELAY_MS)
        );
    }

    #[test]
    fn a_request_may_ask_for_a_gap_between_events_within_a_bound() {
        assert_eq!(event_gap(&json!({})), std::time::Duration::ZERO);
        assert_eq!(
            event_gap(&json!({"livegate_event_gap_ms": 2})).as_millis(),
            2
        );
        assert_eq!(
            event_gap(&json!({"livegate_event_gap_ms": u64::MAX})).as_millis(),
            u128::from(MAX_EVENT_GAP_MS)
        );
    }

    #[tokio::test]
    async fn a_paced_stream_is_chunked_one_event_at_a_time_and_says_the_same() {
        use futures_util::StreamExt;
        let sse = stream_events(3, true, 5);
        let response = paced(sse.clone(), std::time::Duration::from_millis(1));
        assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
        assert_eq!(response.headers()[header::CONTENT_TYPE], EVENT_STREAM);
        let mut frames = response.into_body().into_data_stream();
        let mut got = Vec::new();
        while let Some(frame) = frames.next().await {
            got.push(String::from_utf8(frame.unwrap().to_vec()).unwrap());
        }
        // 5 content chunks, the stop chunk, the usage chunk, [DONE]: one frame each.
        assert_eq!(got.len(), 8);
        assert!(got.iter().all(|event| event.ends_with("\n\n")));
        assert_eq!(got.concat(), sse);
    }

    #[test]
    fn gzip_is_used_when_accepted_and_not_refused() {
        for yes in ["gzip", "br, gzip;q=0.5", "*", "GZIP", "deflate, gzip, br"] {
            assert!(accepts_gzip(Some(yes)), "{yes}");
        }
        for no in ["", "identity", "br", "gzip;q=0", "deflate"] {
            assert!(!accepts_gzip(Some(no)), "{no}");
        }
        assert!(!accepts_gzip(None));
        let data = b"data: {}\n\n".repeat(100);
        let packed = gzip(&data);
        assert!(packed.len() < data.len());
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn an_answer_may_be_asked_to_be_long_within_a_bound() {
        assert_eq!(answer_text(&json!({})), ANSWER.concat());
        assert!(answer_text(&json!({"livegate_answer_bytes": 2_000_000})).len() >= 2_000_000);
        let capped = answer_text(&json!({"livegate_answer_bytes": u64::MAX}));
        assert!((capped.len() as u64) < MAX_ANSWER_BYTES + 100);
    }

    #[test]
    fn prompt_tokens_are_the_characters_of_the_messages() {
        let request = json!({"messages": [{"content": "héllo"}, {"content": "ab"}, {"role": "x"}]});
        assert_eq!(prompt_tokens(&request), 7);
        assert_eq!(prompt_tokens(&json!({"model": "m"})), 0);
    }
}
