//! `POST /v1/spend/records`: what the filter reports about each request it let through,
//! so the control plane can spool it durably and drain it into the spend ledger.
//!
//! One [`SpendRecord`] per request, keyed by Envoy's `x-request-id`: the control plane
//! keeps a request id once, so the filter may send a batch again after a timeout without
//! counting anything twice. Token counts are what the upstream's response said when it said
//! them (`usage_known: true`). When it did not (a client gone before the usage chunk, a body
//! or event past the meter's bounds, a compressed body, no usage at all), the filter charges
//! an estimate that never under-counts what the client demonstrably used: the record then
//! has `usage_known: false`, the estimated counts, and [`SpendRecord::usage_estimate_reason`]
//! saying why (docs/metering.md, "Estimates"). A record with `usage_known: false` and no
//! reason carries no counts: a request answered without reaching the upstream (the filter
//! refused it after its admission) or refused by the upstream (a status other than 2xx).

use serde::{Deserialize, Serialize};

use crate::key::KeyHash;

/// The control plane's internal path for spend records; Envoy never routes it from outside.
pub const SPEND_RECORDS_PATH: &str = "/v1/spend/records";

/// The most records one batch may carry (a batch stays well under the control plane's
/// 64 KiB body limit: a record is a few hundred bytes).
pub const MAX_BATCH_RECORDS: usize = 100;

/// The longest request id accepted (Envoy's are 36-character UUIDs).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The longest model name, key alias or team id a record carries.
pub const MAX_LABEL_LEN: usize = 256;

/// The largest token count a record may carry: far above any real answer, far below
/// Postgres's `bigint`, so a count can never make the drain's statement fail.
pub const MAX_TOKENS: u64 = 1 << 40;

/// How far in the past a record's start may lie when the control plane takes it: a
/// filter holds records in memory while the control plane is away, for hours at most.
pub const MAX_RECORD_AGE_MS: u64 = 30 * 24 * 3_600_000;

/// How far ahead of the control plane's clock a record's end may lie (clock skew between
/// Envoy's host and the control plane's).
pub const MAX_CLOCK_SKEW_MS: u64 = 3_600_000;

/// What replaces a character Postgres's `text` and `jsonb` refuse (NUL) in a label.
pub const REPLACEMENT: char = char::REPLACEMENT_CHARACTER;

/// One request, as the filter saw it. Unknown fields are ignored when read, as in every
/// contract type: during a rolling upgrade a newer filter's record must still be spooled
/// by an older control plane rather than refused and retried forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendRecord {
    /// Envoy's `x-request-id`: the record's identity, end to end.
    pub request_id: String,
    pub key_hash: KeyHash,
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    /// The `model` of the request body, when the filter read one.
    pub model_requested: Option<String>,
    /// The `model` of the response, when it carried one.
    pub model_returned: Option<String>,
    /// The model list's deployment that answered (its route, `livegate_deployment_<i>`,
    /// which is also its `/model/info` id): after retries and fallbacks, the last try's. The
    /// control plane prices the record with that deployment's `model_info`. Left out of the
    /// JSON when `None` (no model list), as the counts below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    /// Of `prompt_tokens`, those read from the provider's prompt cache (OpenAI's
    /// `prompt_tokens_details.cached_tokens`, Anthropic's `cache_read_input_tokens`).
    /// This and the two below are left out of the JSON when `None`, so records of older
    /// filters read the same, and an older control plane ignores them (unknown fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Of `completion_tokens`, those spent reasoning (`completion_tokens_details.reasoning_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Of `prompt_tokens`, those written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
    /// Whether the response reported usage. `false` means it said nothing readable, not
    /// that it used nothing: the counts are then an estimate (with its reason) or absent.
    pub usage_known: bool,
    /// Why the counts are an estimate; `None` when usage is known or nothing is charged.
    /// Left out of the JSON when `None` (a batch's size is bounded; records of older
    /// filters read the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_estimate_reason: Option<EstimateReason>,
    /// The upstream's HTTP status.
    pub status: u16,
    /// Whether the response was a server-sent-event stream.
    pub streamed: bool,
    /// When the request reached the filter, Unix milliseconds.
    pub start_time_ms: u64,
    /// When the response's last byte passed, Unix milliseconds.
    pub end_time_ms: u64,
}

/// Why a record's counts are an estimate rather than what the upstream stated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimateReason {
    /// The stream ended before the response did (the client went away, or a reset):
    /// a stream's final usage chunk never passed.
    ClientDisconnected,
    /// A JSON body larger than the meter reads (1 MiB).
    BodyTooLarge,
    /// A stream event larger than the meter reads (64 KiB), and no usage elsewhere.
    EventTooLarge,
    /// A `content-encoding` the meter cannot read (the filter asks for identity; an
    /// upstream compressed anyway).
    Encoded,
    /// The response was read whole and stated no usage (or was not JSON).
    Absent,
}

impl EstimateReason {
    pub const ALL: [EstimateReason; 5] = [
        EstimateReason::ClientDisconnected,
        EstimateReason::BodyTooLarge,
        EstimateReason::EventTooLarge,
        EstimateReason::Encoded,
        EstimateReason::Absent,
    ];

    /// The wire name (also the metric label and the spend log's value).
    pub fn as_str(self) -> &'static str {
        match self {
            EstimateReason::ClientDisconnected => "client_disconnected",
            EstimateReason::BodyTooLarge => "body_too_large",
            EstimateReason::EventTooLarge => "event_too_large",
            EstimateReason::Encoded => "encoded",
            EstimateReason::Absent => "absent",
        }
    }

    /// The reason named by its wire name.
    pub fn parse(name: &str) -> Option<EstimateReason> {
        EstimateReason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// A batch of records: the body of `POST /v1/spend/records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendBatch {
    pub records: Vec<SpendRecord>,
}

/// The control plane's answer once every record of the batch is durable (spooled and
/// synced): `accepted` were new, `duplicates` had been received before. Anything but a
/// 200 with this body means the filter must keep the batch and send it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendAck {
    pub accepted: u32,
    pub duplicates: u32,
}

/// Why a record is refused: the control plane answers 400 naming the record's field
/// ([`SpendRecordError::field`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpendRecordError {
    #[error("request_id must be 1 to {MAX_REQUEST_ID_LEN} visible ASCII characters")]
    RequestId,
    #[error("{0} is longer than {MAX_LABEL_LEN} bytes")]
    TooLong(&'static str),
    /// Postgres's `text` and `jsonb` refuse U+0000: such a record could never be written.
    #[error("{0} contains a NUL character")]
    Nul(&'static str),
    #[error("{0} is larger than {MAX_TOKENS}")]
    TooManyTokens(&'static str),
    #[error(
        "token counts are present but usage_known is false and no usage_estimate_reason says why"
    )]
    CountsWithoutUsage,
    #[error("usage_estimate_reason is set but usage_known is true")]
    ReasonWithKnownUsage,
    #[error("usage_estimate_reason is set but no token count is present")]
    ReasonWithoutCounts,
    #[error("usage_known is true but no token count is present")]
    UsageWithoutCounts,
    #[error("end_time_ms is before start_time_ms")]
    EndsBeforeStart,
    #[error("start_time_ms is more than {MAX_RECORD_AGE_MS} ms before now")]
    StartsTooEarly,
    #[error("end_time_ms is more than {MAX_CLOCK_SKEW_MS} ms after now")]
    EndsInTheFuture,
}

impl SpendRecordError {
    /// The record's field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            SpendRecordError::RequestId => "request_id",
            SpendRecordError::TooLong(f)
            | SpendRecordError::Nul(f)
            | SpendRecordError::TooManyTokens(f) => f,
            SpendRecordError::CountsWithoutUsage | SpendRecordError::UsageWithoutCounts => {
                "usage_known"
            }
            SpendRecordError::ReasonWithKnownUsage | SpendRecordError::ReasonWithoutCounts => {
                "usage_estimate_reason"
            }
            SpendRecordError::EndsBeforeStart | SpendRecordError::EndsInTheFuture => "end_time_ms",
            SpendRecordError::StartsTooEarly => "start_time_ms",
        }
    }
}

/// Why a batch is refused as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpendBatchError {
    #[error("a batch carries 1 to {MAX_BATCH_RECORDS} records")]
    Size,
    #[error("record {index}: {error}")]
    Record {
        index: usize,
        error: SpendRecordError,
    },
}

impl SpendRecord {
    /// Checks what serde cannot, without a clock: bounded identities and labels that
    /// Postgres accepts, token counts in range, consistent usage, an end not before the
    /// start. (Invalid UTF-8 and lone surrogates never reach here: serde refuses them.)
    pub fn validate(&self) -> Result<(), SpendRecordError> {
        let id = self.request_id.as_bytes();
        if id.is_empty() || id.len() > MAX_REQUEST_ID_LEN || !id.iter().all(u8::is_ascii_graphic) {
            return Err(SpendRecordError::RequestId);
        }
        let labels = [
            ("key_alias", &self.key_alias),
            ("team_id", &self.team_id),
            ("model_requested", &self.model_requested),
            ("model_returned", &self.model_returned),
            ("deployment", &self.deployment),
        ];
        for (name, value) in labels {
            if value.as_ref().is_some_and(|v| v.len() > MAX_LABEL_LEN) {
                return Err(SpendRecordError::TooLong(name));
            }
            if value.as_ref().is_some_and(|v| v.contains('\0')) {
                return Err(SpendRecordError::Nul(name));
            }
        }
        let counts = [
            ("prompt_tokens", self.prompt_tokens),
            ("completion_tokens", self.completion_tokens),
            ("total_tokens", self.total_tokens),
            ("cached_tokens", self.cached_tokens),
            ("reasoning_tokens", self.reasoning_tokens),
            ("cache_creation_tokens", self.cache_creation_tokens),
        ];
        for (name, count) in counts {
            if count.is_some_and(|n| n > MAX_TOKENS) {
                return Err(SpendRecordError::TooManyTokens(name));
            }
        }
        let any_count = self.prompt_tokens.is_some()
            || self.completion_tokens.is_some()
            || self.total_tokens.is_some()
            || self.cached_tokens.is_some()
            || self.reasoning_tokens.is_some()
            || self.cache_creation_tokens.is_some();
        let estimated = self.usage_estimate_reason.is_some();
        match (self.usage_known, estimated, any_count) {
            (true, true, _) => return Err(SpendRecordError::ReasonWithKnownUsage),
            (true, false, false) => return Err(SpendRecordError::UsageWithoutCounts),
            (false, false, true) => return Err(SpendRecordError::CountsWithoutUsage),
            (false, true, false) => return Err(SpendRecordError::ReasonWithoutCounts),
            _ => {}
        }
        if self.end_time_ms < self.start_time_ms {
            return Err(SpendRecordError::EndsBeforeStart);
        }
        Ok(())
    }

    /// [`SpendRecord::validate`], and times within a window around `now_ms` (the
    /// control plane's clock): started at most [`MAX_RECORD_AGE_MS`] ago, ended at most
    /// [`MAX_CLOCK_SKEW_MS`] ahead. What the control plane's intake applies.
    pub fn validate_at(&self, now_ms: u64) -> Result<(), SpendRecordError> {
        self.validate()?;
        if self.start_time_ms < now_ms.saturating_sub(MAX_RECORD_AGE_MS) {
            return Err(SpendRecordError::StartsTooEarly);
        }
        if self.end_time_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(SpendRecordError::EndsInTheFuture);
        }
        Ok(())
    }

    /// Makes the labels a client controls (the model names above all) storable: NUL
    /// becomes U+FFFD and a label past [`MAX_LABEL_LEN`] is cut at a character boundary.
    /// The filter applies it before [`SpendRecord::validate`], so a hostile model name
    /// still yields a billed record instead of none.
    pub fn sanitize(&mut self) {
        for label in [
            &mut self.key_alias,
            &mut self.team_id,
            &mut self.model_requested,
            &mut self.model_returned,
            &mut self.deployment,
        ]
        .into_iter()
        .flatten()
        {
            sanitize_label(label);
        }
    }
}

/// See [`SpendRecord::sanitize`].
fn sanitize_label(label: &mut String) {
    if label.contains('\0') {
        *label = label.replace('\0', &REPLACEMENT.to_string());
    }
    if label.len() > MAX_LABEL_LEN {
        let mut end = MAX_LABEL_LEN;
        while !label.is_char_boundary(end) {
            end -= 1;
        }
        label.truncate(end);
    }
}

impl SpendBatch {
    /// Checks the batch's size and every record (without a clock).
    pub fn validate(&self) -> Result<(), SpendBatchError> {
        self.check(SpendRecord::validate)
    }

    /// Checks the batch's size and every record, times against `now_ms`: the intake's.
    pub fn validate_at(&self, now_ms: u64) -> Result<(), SpendBatchError> {
        self.check(|r| r.validate_at(now_ms))
    }

    fn check(
        &self,
        valid: impl Fn(&SpendRecord) -> Result<(), SpendRecordError>,
    ) -> Result<(), SpendBatchError> {
        if self.records.is_empty() || self.records.len() > MAX_BATCH_RECORDS {
            return Err(SpendBatchError::Size);
        }
        for (index, record) in self.records.iter().enumerate() {
            valid(record).map_err(|error| SpendBatchError::Record { index, error })?;
        }
        Ok(())
    }
}

impl SpendBatchError {
    /// The parameter to name in a 400: `records`, or `records[i].field`.
    pub fn param(&self) -> String {
        match self {
            SpendBatchError::Size => "records".to_string(),
            SpendBatchError::Record { index, error } => {
                format!("records[{index}].{}", error.field())
            }
        }
    }
}

#[cfg(test)]
mod tests;
