//! Usage as providers bill it, on request: a request's `livegate_usage_details` field
//! (`{"cached": n, "reasoning": n, "cache_creation": n}`, each optional) makes the demo
//! state those counts in OpenAI's shapes (chat, its stream's usage chunk, the Responses
//! API) and, on `/v1/messages`, in Anthropic's (JSON, and a stream whose `message_start`
//! carries the input and cache counts and `message_delta` the output), so a test knows
//! exactly what a provider would bill.
//!
//! The counts follow each provider's meaning: OpenAI's `prompt_tokens` include the cached
//! tokens and its `completion_tokens` the reasoning ones (the completion is the answer's
//! [`COMPLETION_TOKENS`] plus the reasoning asked for); Anthropic's `input_tokens` are
//! the prompt without its cache reads and writes, which it reports beside it.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::{answer_text, encoded, forced_gzip, prompt_tokens, received, wait_as_asked, ANSWER};
use crate::{COMPLETION_TOKENS, EVENT_STREAM, JSON, MODEL};

/// The request field asking for usage details.
pub const DETAILS_FIELD: &str = "livegate_usage_details";

/// The details a request asks the demo to state; `None`: not stated at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Details {
    pub cached: Option<u64>,
    pub reasoning: Option<u64>,
    pub cache_creation: Option<u64>,
}

/// What `livegate_usage_details` asks for (a value that is not a count is not stated).
pub fn details(request: &Value) -> Details {
    let count = |name: &str| request.get(DETAILS_FIELD)?.get(name)?.as_u64();
    Details {
        cached: count("cached"),
        reasoning: count("reasoning"),
        cache_creation: count("cache_creation"),
    }
}

/// The completion's tokens: the answer's, plus the reasoning before it.
pub fn completion_tokens(d: Details) -> u64 {
    COMPLETION_TOKENS + d.reasoning.unwrap_or(0)
}

/// OpenAI chat's `usage`: details under `prompt_tokens_details` and
/// `completion_tokens_details`, as OpenAI sends them (each only when asked).
pub fn chat_usage(prompt: u64, d: Details) -> Value {
    let completion = completion_tokens(d);
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    });
    if let Some(cached) = d.cached {
        usage["prompt_tokens_details"] = json!({"cached_tokens": cached, "audio_tokens": 0});
    }
    if let Some(reasoning) = d.reasoning {
        usage["completion_tokens_details"] =
            json!({"reasoning_tokens": reasoning, "audio_tokens": 0});
    }
    usage
}

/// The Responses API's `usage`: `input_tokens_details`, `output_tokens_details`.
pub fn responses_usage(prompt: u64, d: Details) -> Value {
    let completion = completion_tokens(d);
    let mut usage = json!({
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": prompt + completion,
    });
    if let Some(cached) = d.cached {
        usage["input_tokens_details"] = json!({"cached_tokens": cached});
    }
    if let Some(reasoning) = d.reasoning {
        usage["output_tokens_details"] = json!({"reasoning_tokens": reasoning});
    }
    usage
}

/// Anthropic's `usage` for a prompt of `input` tokens outside the cache: cache counts
/// beside it when asked; `output` tokens (Anthropic states no total).
pub fn anthropic_usage(input: u64, output: u64, d: Details) -> Value {
    let mut usage = Map::new();
    usage.insert("input_tokens".into(), json!(input));
    if let Some(n) = d.cache_creation {
        usage.insert("cache_creation_input_tokens".into(), json!(n));
    }
    if let Some(n) = d.cached {
        usage.insert("cache_read_input_tokens".into(), json!(n));
    }
    usage.insert("output_tokens".into(), json!(output));
    Value::Object(usage)
}

/// Anthropic's Messages API: the prompt (its messages' `content` characters) is the
/// uncached input; `stream: true` gets its event stream.
pub async fn messages(headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let input = prompt_tokens(&request);
    let d = details(&request);
    wait_as_asked(&request).await;
    let force = forced_gzip(&request);
    if request.get("stream") == Some(&Value::Bool(true)) {
        return encoded(&headers, force, EVENT_STREAM, anthropic_events(input, d));
    }
    let answer = json!({
        "id": "msg_livegate_demo",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": answer_text(&request)}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": anthropic_usage(input, COMPLETION_TOKENS, d),
        "livegate": received(&headers, &body),
    });
    encoded(&headers, force, JSON, answer.to_string())
}

/// Anthropic's stream: `message_start` (input and cache counts, one output token), the
/// answer's words as `content_block_delta`s, `message_delta` with the output count,
/// `message_stop`.
pub fn anthropic_events(input: u64, d: Details) -> String {
    let event = |kind: &str, data: Value| format!("event: {kind}\ndata: {data}\n\n");
    let start = json!({"type": "message_start", "message": {
        "id": "msg_livegate_demo", "type": "message", "role": "assistant", "content": [],
        "model": MODEL, "stop_reason": null, "stop_sequence": null,
        "usage": anthropic_usage(input, 1, d),
    }});
    let mut out = event("message_start", start);
    out.push_str(&event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    for word in ANSWER {
        out.push_str(&event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}),
        ));
    }
    out.push_str(&event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push_str(&event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": COMPLETION_TOKENS}}),
    ));
    out.push_str(&event("message_stop", json!({"type": "message_stop"})));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_stated_only_when_asked_in_each_providers_shape() {
        let none = details(&json!({}));
        assert_eq!(none, Details::default());
        assert_eq!(
            chat_usage(5, none),
            json!({"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13})
        );
        let d =
            details(&json!({DETAILS_FIELD: {"cached": 3, "reasoning": 4, "cache_creation": "x"}}));
        assert_eq!(d.cache_creation, None);
        let chat = chat_usage(5, d);
        assert_eq!(
            chat["completion_tokens"], 12,
            "reasoning is part of the completion"
        );
        assert_eq!(chat["prompt_tokens_details"]["cached_tokens"], 3);
        assert_eq!(chat["completion_tokens_details"]["reasoning_tokens"], 4);
        let responses = responses_usage(5, d);
        assert_eq!(responses["input_tokens_details"]["cached_tokens"], 3);
        assert_eq!(responses["output_tokens_details"]["reasoning_tokens"], 4);
        let d = details(&json!({DETAILS_FIELD: {"cached": 30, "cache_creation": 20}}));
        assert_eq!(
            anthropic_usage(5, 8, d),
            json!({"input_tokens": 5, "cache_creation_input_tokens": 20,
                   "cache_read_input_tokens": 30, "output_tokens": 8})
        );
    }

    #[test]
    fn an_anthropic_stream_starts_with_the_input_and_ends_with_the_output() {
        let d = details(&json!({DETAILS_FIELD: {"cached": 30, "cache_creation": 20}}));
        let stream = anthropic_events(5, d);
        let data: Vec<Value> = stream
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(data[0]["message"]["usage"]["cache_read_input_tokens"], 30);
        let delta = &data[data.len() - 2];
        assert_eq!(delta["type"], "message_delta");
        assert_eq!(delta["usage"], json!({"output_tokens": 8}));
        assert_eq!(data[data.len() - 1]["type"], "message_stop");
    }
}
