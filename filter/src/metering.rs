//! One admitted request's response, metered as it passes, and its spend record.
//!
//! The response is never held: each body chunk is fed to a [`Meter`] and goes on. At the
//! end of the stream (or when the stream ends early: a reset, a client gone) the record
//! says what was seen: the status (0 if no response headers came) and the usage read so
//! far. Usage the response did not state readably (a stream cut before its usage chunk, a
//! body past the meter's bounds, a compressed body) is charged as an [`estimate`] and
//! marked `usage_known: false` with its reason: never free.

use crate::time::Millis;
use crate::usage::{Limits, Meter, Tokens};
use estimate::{charge, Charge, Context};
use livegate_contract::spend::{EstimateReason, SpendRecord, MAX_LABEL_LEN, MAX_REQUEST_ID_LEN};
use livegate_contract::KeyHash;

pub mod estimate;

/// Who the request was, known when it is admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// Envoy's `x-request-id`, if it is one the contract accepts.
    pub request_id: Option<String>,
    pub key_hash: KeyHash,
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    /// The model sent upstream: the key's alias resolved, as prices name models.
    pub model: Option<String>,
    /// The deployment the filter sent it to (its first try), with a model list.
    pub deployment: Option<String>,
    /// When the request reached the filter (`None`: the clock could not be read).
    pub start: Option<Millis>,
}

/// Why an admitted request has no record (counted by the glue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRecord {
    /// No `x-request-id` the contract accepts (Envoy sets one on every request).
    NoRequestId,
    /// The host clock could not be read at the start nor at the end.
    NoClock,
    /// The record broke the contract (a bound); never expected.
    Invalid,
}

/// The response side of one admitted request.
#[derive(Debug, Clone)]
pub struct ResponseMeter {
    requester: Requester,
    status: u16,
    event_stream: bool,
    meter: Option<Meter>,
    /// The request went upstream: only then can its answer be charged.
    released: bool,
    /// The request body's bytes (an estimate's prompt).
    prompt_bytes: u64,
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its last byte passed (end of stream, or trailers).
    Complete,
    /// The stream ended first: a client gone, a reset.
    Early,
}

/// The request id, if the header holds one the contract accepts.
pub fn request_id(raw: Option<&[u8]>) -> Option<String> {
    let raw = raw?;
    let fits = !raw.is_empty() && raw.len() <= MAX_REQUEST_ID_LEN;
    if !fits || !raw.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    String::from_utf8(raw.to_vec()).ok()
}

impl ResponseMeter {
    /// The meter of an admitted request not (yet) sent upstream: its record charges nothing.
    pub fn new(requester: Requester) -> ResponseMeter {
        ResponseMeter {
            requester,
            status: 0,
            event_stream: false,
            meter: None,
            released: false,
            prompt_bytes: 0,
        }
    }

    /// The meter of a request sent upstream with a body of `prompt_bytes`.
    pub fn released(requester: Requester, prompt_bytes: u64) -> ResponseMeter {
        ResponseMeter {
            released: true,
            prompt_bytes,
            ..ResponseMeter::new(requester)
        }
    }

    /// The response headers: its status and how to read its body.
    pub fn on_headers(
        &mut self,
        status: Option<&[u8]>,
        content_type: Option<&[u8]>,
        content_encoding: Option<&[u8]>,
    ) {
        self.status = status
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let meter = Meter::for_response(content_type, content_encoding, Limits::default());
        self.event_stream = meter.is_stream();
        self.meter = Some(meter);
    }

    /// The deployment whose try answered (the attempt filter's response header): it
    /// replaces the first try's. A value the contract would refuse is ignored.
    pub fn answered_by(&mut self, route: Option<&[u8]>) {
        let route = route
            .filter(|r| {
                !r.is_empty() && r.len() <= MAX_LABEL_LEN && r.iter().all(u8::is_ascii_graphic)
            })
            .and_then(|r| String::from_utf8(r.to_vec()).ok());
        if route.is_some() {
            self.requester.deployment = route;
        }
    }

    /// The filter answered the request itself after admitting it (its model refused, a
    /// body it could not edit): the record carries that status, and no usage.
    pub fn answered_locally(&mut self, status: u16) {
        self.status = status;
        self.meter = None;
        self.released = false;
    }

    /// Reads one body chunk (which goes on to the client unchanged).
    pub fn feed(&mut self, chunk: &[u8]) {
        if let Some(meter) = &mut self.meter {
            meter.feed(chunk);
        }
    }

    /// The record of a response that ended with its last byte, at `end` (the host clock
    /// now; `None` if it cannot be read).
    pub fn finish(self, end: Option<Millis>) -> Result<SpendRecord, NoRecord> {
        self.finish_counting(end, Ending::Complete).0
    }

    /// The record, and what of the response the meter could not read (the glue counts it).
    pub fn finish_counting(
        self,
        end: Option<Millis>,
        ending: Ending,
    ) -> (Result<SpendRecord, NoRecord>, Unread) {
        let report = self.meter.map(Meter::finish);
        let unread = report.as_ref().map_or_else(Unread::default, |r| Unread {
            oversized: r.oversized > 0,
            malformed: r.malformed > 0,
        });
        let context = Context {
            released: self.released,
            model_route: self.requester.model.is_some(),
            prompt_bytes: self.prompt_bytes,
            status: self.status,
            complete: ending == Ending::Complete,
        };
        let charged = charge(report.as_ref(), context);
        let model_returned = report.and_then(|r| r.reading.model);
        let record = record(
            self.requester,
            (self.status, self.event_stream),
            charged,
            model_returned,
            end,
        );
        (record, unread)
    }
}

/// The tokens a record charges (stated or estimated): the total, else the sum of the
/// parts; 0 when it carries none (nothing charged).
pub fn tokens_used(record: &SpendRecord) -> u64 {
    record.total_tokens.unwrap_or_else(|| {
        let parts = [record.prompt_tokens, record.completion_tokens];
        parts.into_iter().flatten().fold(0, u64::saturating_add)
    })
}

/// What of one response the meter passed over: a body or event past its bound, or one
/// that was not JSON. Such a response's usage is estimated unless stated elsewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unread {
    pub oversized: bool,
    pub malformed: bool,
}

/// The record of a response: `answer` is its status and whether it was an event stream.
fn record(
    requester: Requester,
    answer: (u16, bool),
    charged: Charge,
    model_returned: Option<String>,
    end: Option<Millis>,
) -> Result<SpendRecord, NoRecord> {
    let request_id = requester.request_id.ok_or(NoRecord::NoRequestId)?;
    let (start, end) = match (requester.start, end) {
        (Some(start), Some(end)) => (start, end.max(start)),
        (Some(t), None) | (None, Some(t)) => (t, t),
        (None, None) => return Err(NoRecord::NoClock),
    };
    let (tokens, usage_known, reason): (Option<Tokens>, bool, Option<EstimateReason>) =
        match charged {
            Charge::Known(tokens) => (Some(tokens), true, None),
            Charge::Estimated(tokens, reason) => (Some(tokens), false, Some(reason)),
            Charge::None => (None, false, None),
        };
    let mut record = SpendRecord {
        request_id,
        key_hash: requester.key_hash,
        key_alias: requester.key_alias,
        team_id: requester.team_id,
        model_requested: requester.model,
        model_returned,
        deployment: requester.deployment,
        prompt_tokens: tokens.and_then(|t| t.prompt),
        completion_tokens: tokens.and_then(|t| t.completion),
        total_tokens: tokens.and_then(|t| t.total),
        cached_tokens: tokens.and_then(|t| t.cached),
        reasoning_tokens: tokens.and_then(|t| t.reasoning),
        cache_creation_tokens: tokens.and_then(|t| t.cache_creation),
        usage_known,
        usage_estimate_reason: reason,
        status: answer.0,
        streamed: answer.1,
        start_time_ms: start,
        end_time_ms: end,
    };
    // A hostile model name (NUL, too long) must still be billed: made storable, not dropped.
    record.sanitize();
    record.validate().map_err(|_| NoRecord::Invalid)?;
    Ok(record)
}

#[cfg(test)]
mod tests;
