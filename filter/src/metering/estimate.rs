//! What a record charges: the usage the response stated, or an estimate when it stated
//! none that the meter could read. Pure; the numbers are documented in docs/metering.md.
//!
//! An estimate never under-counts what the client demonstrably used: the prompt is the
//! request body's bytes / 4 (rounded up; the whole JSON body, not only its messages), and
//! the completion is the generated content seen / 4 in a stream, the body's bytes / 4 in
//! a JSON answer, and one token per byte of a compressed body (whose text is larger than
//! its bytes). Where the response stated some counts but may not have finished (a stream
//! cut early), each count is the larger of the stated one and the estimate. Of the
//! details, an estimate keeps only the stated cache writes (Anthropic billed them when the
//! prompt was read, and they cost more than input): cached and reasoning tokens would
//! lower the price of counts that are already a guess, so they are charged as prompt and
//! completion.
//!
//! Charged: a response of the upstream on a model route (its body names a model) with a
//! 2xx status, or no status at all when the stream ended before the response headers (the
//! upstream had the request: providers bill a prompt they received). Not charged: a
//! request the filter answered itself, a request that never went upstream, an upstream's
//! refusal (4xx, 5xx: providers do not bill them), and routes without a model
//! (`/v1/models`, files), whose bodies are not generated tokens. Usage an answer states is
//! charged whatever the route: a retrieval (`GET /v1/responses/{id}`) may be the only
//! answer that carries a generation's usage.

use crate::usage::{Report, Tokens, Usage};
use livegate_contract::EstimateReason;

/// What is known of the request when its response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The request went upstream (released by the filter).
    pub released: bool,
    /// It named a model: a route whose answers are billed by tokens.
    pub model_route: bool,
    /// The request body's bytes.
    pub prompt_bytes: u64,
    /// The response's status, 0 if no headers came.
    pub status: u16,
    /// The response ended with its last byte (not cut by a reset or a client gone).
    pub complete: bool,
}

/// The counts a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// As the response stated them.
    Known(Tokens),
    /// Estimated, and why.
    Estimated(Tokens, EstimateReason),
    /// Nothing charged (see the module's comment).
    None,
}

/// The charge of one response; `report` is the meter's (`None`: no response body meter).
pub fn charge(report: Option<&Report>, context: Context) -> Charge {
    let stated = match report.map(|r| r.reading.usage) {
        Some(Usage::Known(tokens)) => Some(tokens),
        _ => None,
    };
    let billable = context.released
        && context.model_route
        && ((200..300).contains(&context.status) || (context.status == 0 && !context.complete));
    let cut_stream = !context.complete && report.is_none_or(|r| r.streamed);
    match stated {
        Some(tokens) if !(billable && cut_stream) => return Charge::Known(tokens),
        None if !billable => return Charge::None,
        _ => {}
    }
    let reason = reason(report, context.complete);
    let prompt = quarter(context.prompt_bytes);
    let completion = report.map_or(0, |r| match (r.encoded, r.streamed) {
        (true, _) => r.seen_bytes,
        (false, true) => quarter(r.content_bytes),
        (false, false) => quarter(r.seen_bytes),
    });
    let known = stated.unwrap_or_default();
    let prompt = known.prompt.unwrap_or(0).max(prompt);
    let completion = known.completion.unwrap_or(0).max(completion);
    let total = known
        .total
        .unwrap_or(0)
        .max(prompt.saturating_add(completion));
    let tokens = Tokens {
        prompt: Some(prompt),
        completion: Some(completion),
        total: Some(total),
        cache_creation: known.cache_creation,
        ..Tokens::default()
    };
    Charge::Estimated(tokens, reason)
}

/// Why the response's usage could not be read, the most telling cause first.
fn reason(report: Option<&Report>, complete: bool) -> EstimateReason {
    match report {
        _ if !complete => EstimateReason::ClientDisconnected,
        Some(r) if r.encoded => EstimateReason::Encoded,
        Some(r) if r.oversized > 0 && !r.streamed => EstimateReason::BodyTooLarge,
        Some(r) if r.oversized > 0 => EstimateReason::EventTooLarge,
        _ => EstimateReason::Absent,
    }
}

/// Bytes / 4, rounded up: about a token per four bytes of English text, the usual rule.
fn quarter(bytes: u64) -> u64 {
    bytes.div_ceil(4)
}

#[cfg(test)]
mod tests;
