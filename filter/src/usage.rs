//! Token usage read from upstream responses as they pass, with bounded memory.
//!
//! Pure functions and small structs, no host types: the glue feeds response bytes to a
//! [`Meter`] chunk by chunk (the chunks go on to the client unchanged and unheld) and asks
//! it at the end of the stream what the response said.
//!
//! - [`json`]: a non-streamed body, copied up to a bound and parsed once at its end; past
//!   the bound, walked for its `usage` and `model` ([`members`]).
//! - [`sse`]: a server-sent-event stream, parsed event by event; only the event being
//!   read is held, and an event larger than the bound is walked as a large body is or,
//!   failing that, skipped and counted.
//! - [`stream_options`]: the request-side rewrite that asks OpenAI to report usage at
//!   the end of a stream (`stream_options.include_usage`).
//!
//! Shapes understood, in a whole body or in one event's data:
//!
//! | shape | model | usage |
//! |---|---|---|
//! | OpenAI chat, completions, embeddings; a stream's usage chunk | `model` | `usage.prompt_tokens`, `completion_tokens`, `total_tokens` |
//! | OpenAI Responses API | `model` | `usage.input_tokens`, `output_tokens`, `total_tokens` |
//! | its stream (`response.completed`) | `response.model` | `response.usage.…` |
//! | Anthropic Messages | `model` | `usage.input_tokens`, `output_tokens` |
//! | its stream: `message_start`, then `message_delta` | `message.model` | `message.usage.…`, then `usage.output_tokens` (cumulative) |
//!
//! Details, where the response states them (each `None` when it does not):
//!
//! | detail | OpenAI chat | Responses API | Anthropic |
//! |---|---|---|---|
//! | cached prompt tokens | `usage.prompt_tokens_details.cached_tokens` | `usage.input_tokens_details.cached_tokens` | `usage.cache_read_input_tokens` |
//! | reasoning tokens | `usage.completion_tokens_details.reasoning_tokens` | `usage.output_tokens_details.reasoning_tokens` | — |
//! | cache-write tokens | — | — | `usage.cache_creation_input_tokens` |
//!
//! [`Tokens`] follows OpenAI's (and LiteLLM's) meaning: `prompt` includes the cached and
//! cache-write tokens, `completion` the reasoning ones. Anthropic's `input_tokens` exclude
//! cache reads and writes, so a usage object that states either of Anthropic's cache counts
//! has them added to its prompt, as LiteLLM's `AnthropicConfig.calculate_usage` does.
//!
//! Across the events of a stream each count is the **last** one reported (Anthropic's and
//! continuous-usage streams repeat cumulative counts; Anthropic's `message_start` carries
//! the input and cache counts, `message_delta` the output), and the model is the first one.
//! A total that the response does not state is the sum of the prompt and completion when
//! both are known. Usage is [`Usage::Known`] only when the response stated at least one
//! of prompt, completion or total. The meter also
//! counts what an estimate needs when usage is not stated (the metering module's `estimate`):
//! the body bytes that passed and, in a stream, the bytes of generated content
//! ([`content`]; a skipped or unreadable event counts whole).

use serde_json::Value;

pub mod content;
pub mod json;
pub mod members;
pub mod shape;
pub mod sse;
pub mod stream_options;

pub use json::{JsonError, JsonMeter};
pub use sse::SseMeter;

/// A model name longer than this is not recorded (the spend record's bound).
pub const MAX_MODEL_LEN: usize = livegate_contract::spend::MAX_LABEL_LEN;

/// Token counts as the response stated them, in OpenAI's meaning (see the module's comment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: Option<u64>,
    pub completion: Option<u64>,
    pub total: Option<u64>,
    /// Of `prompt`, read from the provider's prompt cache.
    pub cached: Option<u64>,
    /// Of `completion`, spent reasoning.
    pub reasoning: Option<u64>,
    /// Of `prompt`, written to the provider's prompt cache (Anthropic).
    pub cache_creation: Option<u64>,
}

/// Whether the response reported usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Known(Tokens),
    /// The response said nothing about usage (or nothing that could be read).
    Absent,
}

/// What a response said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub usage: Usage,
    /// The `model` the response named.
    pub model: Option<String>,
}

/// The bounds of one response's metering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest non-streamed body held and parsed whole; a larger one is walked for
    /// its top-level `usage` and `model` only.
    pub max_json_bytes: usize,
    /// The largest event of a stream read; a larger one is skipped and counted.
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_json_bytes: 1024 * 1024,
            max_event_bytes: 64 * 1024,
        }
    }
}

/// The end of one response's metering: what it said, and what could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub reading: Reading,
    pub streamed: bool,
    /// Bodies or events passed over because they exceeded their bound.
    pub oversized: u32,
    /// Bodies or events that were not JSON.
    pub malformed: u32,
    /// The body had a `content-encoding` the meter does not read.
    pub encoded: bool,
    /// Body bytes that passed (encoded bytes for an encoded body).
    pub seen_bytes: u64,
    /// Of a stream, the bytes of generated content seen (see the module's comment).
    pub content_bytes: u64,
}

/// One response's meter, chosen by its headers.
#[derive(Debug, Clone)]
pub enum Meter {
    Json(JsonMeter),
    Sse(SseMeter),
    /// A body the meter cannot read: only its size is counted.
    Encoded {
        streamed: bool,
        bytes: u64,
    },
}

impl Meter {
    /// `text/event-stream` is read as a stream, anything else as one JSON body. A body
    /// with a `content-encoding` other than `identity` is only counted: the filter asks
    /// upstreams for identity and does not decompress, so such a response is estimated.
    pub fn for_response(
        content_type: Option<&[u8]>,
        content_encoding: Option<&[u8]>,
        limits: Limits,
    ) -> Meter {
        let essence = content_type
            .map(|t| t.split(|b| *b == b';').next().unwrap_or(t).trim_ascii())
            .unwrap_or_default();
        let streamed = essence.eq_ignore_ascii_case(b"text/event-stream");
        if content_encoding.is_some_and(|e| !e.trim_ascii().eq_ignore_ascii_case(b"identity")) {
            return Meter::Encoded { streamed, bytes: 0 };
        }
        if streamed {
            Meter::Sse(SseMeter::new(limits.max_event_bytes))
        } else {
            Meter::Json(JsonMeter::new(limits.max_json_bytes))
        }
    }

    /// Reads the next chunk of the response body.
    pub fn feed(&mut self, chunk: &[u8]) {
        match self {
            Meter::Json(meter) => meter.feed(chunk),
            Meter::Sse(meter) => meter.feed(chunk),
            Meter::Encoded { bytes, .. } => *bytes = bytes.saturating_add(len(chunk)),
        }
    }

    /// Whether this meter reads an event stream.
    pub fn is_stream(&self) -> bool {
        matches!(self, Meter::Sse(_) | Meter::Encoded { streamed: true, .. })
    }

    /// The body has ended: what it said.
    pub fn finish(self) -> Report {
        match self {
            Meter::Json(meter) => {
                let seen_bytes = meter.seen_bytes();
                let (reading, oversized, malformed) = match meter.finish() {
                    Ok(reading) => (reading, 0, 0),
                    Err(JsonError::TooLarge { .. }) => (Reading::absent(), 1, 0),
                    Err(JsonError::Malformed) => (Reading::absent(), 0, 1),
                };
                Report {
                    reading,
                    streamed: false,
                    oversized,
                    malformed,
                    encoded: false,
                    seen_bytes,
                    content_bytes: 0,
                }
            }
            Meter::Sse(meter) => {
                let end = meter.finish();
                Report {
                    reading: end.reading,
                    streamed: true,
                    oversized: end.oversized_events,
                    malformed: end.malformed_events,
                    encoded: false,
                    seen_bytes: end.seen_bytes,
                    content_bytes: end.content_bytes,
                }
            }
            Meter::Encoded { streamed, bytes } => Report {
                reading: Reading::absent(),
                streamed,
                oversized: 0,
                malformed: 0,
                encoded: true,
                seen_bytes: bytes,
                content_bytes: 0,
            },
        }
    }
}

impl Reading {
    /// Nothing read.
    pub fn absent() -> Reading {
        Reading {
            usage: Usage::Absent,
            model: None,
        }
    }
}

impl Tokens {
    fn any(&self) -> bool {
        self.prompt.is_some() || self.completion.is_some() || self.total.is_some()
    }
}

/// The counts of usage objects as they were written, merged across a stream's events;
/// [`conclude`] turns them into [`Tokens`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    /// As written: Anthropic's `input_tokens` exclude its cache counts.
    tokens: Tokens,
    /// Anthropic's cache counts were stated: the prompt is `input_tokens` plus them.
    prompt_excludes_cache: bool,
}

impl Counts {
    /// Later counts replace earlier ones; a count a later report omits is kept.
    fn update(&mut self, later: Counts) {
        let (t, l) = (&mut self.tokens, later.tokens);
        t.prompt = l.prompt.or(t.prompt);
        t.completion = l.completion.or(t.completion);
        t.total = l.total.or(t.total);
        t.cached = l.cached.or(t.cached);
        t.reasoning = l.reasoning.or(t.reasoning);
        t.cache_creation = l.cache_creation.or(t.cache_creation);
        self.prompt_excludes_cache |= later.prompt_excludes_cache;
    }
}

/// What one JSON document (a body, or one event's data) says, before any merging.
#[derive(Debug, Default)]
struct Found {
    tokens: Option<Counts>,
    model: Option<String>,
}

/// Usage and model from a document, wherever the shapes above put them: the document
/// itself, or the `message` (Anthropic's `message_start`) or `response` (the Responses
/// API's stream events) it wraps.
fn inspect(document: &Value) -> Found {
    let mut found = Found::default();
    let places = [
        Some(document),
        document.get("message"),
        document.get("response"),
    ];
    for place in places.into_iter().flatten() {
        if found.tokens.is_none() {
            found.tokens = place.get("usage").and_then(tokens);
        }
        if found.model.is_none() {
            found.model = place.get("model").and_then(model);
        }
    }
    found
}

/// The counts of a `usage` object; `None` when it states none (`null`, `{}`, strings).
fn tokens(usage: &Value) -> Option<Counts> {
    let count = |names: &[&str]| names.iter().find_map(|n| usage.get(n)?.as_u64());
    let detail = |paths: &[[&str; 2]]| {
        paths
            .iter()
            .find_map(|[outer, inner]| usage.get(outer)?.get(inner)?.as_u64())
    };
    let cache_read = count(&["cache_read_input_tokens"]);
    let cache_creation = count(&["cache_creation_input_tokens"]);
    let tokens = Tokens {
        prompt: count(&["prompt_tokens", "input_tokens"]),
        completion: count(&["completion_tokens", "output_tokens"]),
        total: count(&["total_tokens"]),
        cached: detail(&[
            ["prompt_tokens_details", "cached_tokens"],
            ["input_tokens_details", "cached_tokens"],
        ])
        .or(cache_read),
        reasoning: detail(&[
            ["completion_tokens_details", "reasoning_tokens"],
            ["output_tokens_details", "reasoning_tokens"],
        ]),
        cache_creation,
    };
    let counts = Counts {
        tokens,
        prompt_excludes_cache: cache_read.is_some() || cache_creation.is_some(),
    };
    tokens.any().then_some(counts)
}

/// A length as a count of bytes.
fn len(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

fn model(value: &Value) -> Option<String> {
    let name = value.as_str()?;
    (!name.is_empty() && name.len() <= MAX_MODEL_LEN).then(|| name.to_string())
}

/// Usage from what was gathered: Anthropic's prompt with its cache counts added; a
/// missing total is the sum of the prompt and completion.
fn conclude(counts: Option<Counts>, model: Option<String>) -> Reading {
    let usage = match counts {
        Some(Counts {
            tokens: mut t,
            prompt_excludes_cache,
        }) if t.any() => {
            if prompt_excludes_cache {
                let cache = [t.cached, t.cache_creation].into_iter().flatten();
                t.prompt = Some(cache.fold(t.prompt.unwrap_or(0), u64::saturating_add));
            }
            if t.total.is_none() {
                t.total = t
                    .prompt
                    .zip(t.completion)
                    .and_then(|(p, c)| p.checked_add(c));
            }
            Usage::Known(t)
        }
        _ => Usage::Absent,
    };
    Reading { usage, model }
}

#[cfg(test)]
mod tests;
