//! Rate limits: the 60-second sliding window both halves count with, a key's effective
//! limits, and how a refusal reads (LiteLLM's message, OpenAI's `x-ratelimit-*` headers).
//!
//! A limit of N means at most N in any 60-second window: the window slides with each
//! request (no fixed minute, so no double burst at an edge) and a fresh key may use all N
//! at once. Time is passed in as Unix milliseconds; nothing here reads a clock.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::error::{ErrorObject, ErrorType};
use crate::refusal::{BudgetScope, DenyReason};

/// The window every limit counts over.
pub const WINDOW_MS: u64 = 60_000;

/// The resolution of a window's log: what is counted within one bucket is held until the
/// bucket's latest entry leaves the window.
pub const BUCKET_MS: u64 = 1_000;

/// The term of a lease of admissions: a control plane that reserves several admissions of
/// a window in one write serves them for this long. The reservation is stamped at the end
/// of its term, so it leaves the window no earlier than the last admission it served.
pub const LEASE_MS: u64 = BUCKET_MS;

/// How much sooner than a control plane's lease a filter's share of it ends. The check
/// that carried the share took at most the filter's `auth_timeout_ms` (200 ms by default)
/// to come back, so a share counted from its arrival still ends before the lease does; a
/// filter that waits longer than this for its checks takes no share.
pub const FILTER_LEASE_MARGIN_MS: u64 = 250;

/// Admissions of a key's request windows that a control plane has reserved and hands to
/// the filter worker that asked: it may admit `admissions` more of the key's requests with
/// no check, for `valid_for_ms` from the allow's arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionLease {
    pub admissions: u64,
    pub valid_for_ms: u64,
}

/// How long a request holds its `max_parallel_requests` slot at most: one whose end was
/// never reported (an Envoy that crashed, a record lost) frees its slot after this.
pub const PARALLEL_LEASE_MS: u64 = 600_000;

/// A key's effective limits: for each, the stricter of the key's and its team's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_requests: Option<u64>,
}

impl RateLimits {
    /// No limit at all: the key may be served from a cache with no round trip.
    pub fn is_none(&self) -> bool {
        self.rpm_limit.is_none() && self.tpm_limit.is_none() && self.max_parallel_requests.is_none()
    }

    /// The stricter of two limits of one kind (`None` is no limit).
    pub fn stricter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// `rpm_limit`: requests admitted.
    Requests,
    /// `tpm_limit`: tokens the responses used (charged when they are metered).
    Tokens,
    /// `max_parallel_requests`: requests admitted and not yet finished.
    Parallel,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::Parallel => "parallel",
        }
    }

    /// LiteLLM's name for the limit.
    pub fn field(self) -> &'static str {
        match self {
            LimitKind::Requests => "rpm_limit",
            LimitKind::Tokens => "tpm_limit",
            LimitKind::Parallel => "max_parallel_requests",
        }
    }

    /// LiteLLM's name for the limit per model (there is none for parallel requests).
    pub fn model_field(self) -> &'static str {
        match self {
            LimitKind::Requests => "model_rpm_limit",
            LimitKind::Tokens => "model_tpm_limit",
            LimitKind::Parallel => "max_parallel_requests",
        }
    }
}

/// Per-model limits (`model_rpm_limit`, `model_tpm_limit`), by the model name configured.
pub type ModelLimits = BTreeMap<String, RateLimits>;

/// Whether a request's model is the one a per-model limit names: the same name but for
/// ASCII case and surrounding whitespace, so a model spelled `GPT-4o ` cannot escape the
/// limit of `gpt-4o` at an upstream that reads it either way.
pub fn same_model(configured: &str, requested: &str) -> bool {
    configured.trim().eq_ignore_ascii_case(requested.trim())
}

/// The per-model entry that applies to `model` (its configured name and value), if any.
pub fn model_entry<'a, V>(
    limits: &'a BTreeMap<String, V>,
    model: &str,
) -> Option<(&'a String, &'a V)> {
    limits.iter().find(|(name, _)| same_model(name, model))
}

/// A refusal for a limit: which one, whose, and when the window lets the next one in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimited {
    pub kind: LimitKind,
    pub scope: BudgetScope,
    /// The team whose limit it is (`scope` `team`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// The user whose limit it is (`scope` `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The model whose limit it is (`model_rpm_limit`, `model_tpm_limit`), as configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub limit: u64,
    /// When the window has room again, Unix milliseconds.
    pub reset_at_ms: u64,
}

impl RateLimited {
    /// 429 `rate_limit_error` with LiteLLM's wording of the limit.
    pub fn error(&self) -> ErrorObject {
        if let Some(model) = &self.model {
            return self.model_error(model);
        }
        let whose = match (self.scope, &self.team_id) {
            (BudgetScope::Team, Some(team)) => format!("team_id: {team}"),
            (BudgetScope::Team, None) => "team".to_owned(),
            (BudgetScope::User | BudgetScope::Member, _) => {
                format!("user: {}", self.user_id.as_deref().unwrap_or(""))
            }
            (BudgetScope::Key, _) => "api_key".to_owned(),
        };
        let message = match self.kind {
            LimitKind::Parallel => format!(
                "Max parallel request limit reached for {whose}. max_parallel_requests: {}.",
                self.limit
            ),
            kind => format!(
                "Rate limit exceeded for {whose}. Limit type: {}. Current limit: {}, Remaining: 0.",
                kind.field(),
                self.limit,
            ),
        };
        ErrorObject::new(429, ErrorType::RateLimitError, message)
            .with_param(self.kind.field())
            .with_reason(DenyReason::RateLimited.as_str())
    }

    /// A per-model limit, worded as LiteLLM's limiter names its descriptors
    /// (`model_per_key`, `model_per_team`) with the model the limit is configured for.
    fn model_error(&self, model: &str) -> ErrorObject {
        let whose = match self.scope {
            BudgetScope::Team => {
                format!(
                    "model_per_team: {}:{model}",
                    self.team_id.as_deref().unwrap_or("")
                )
            }
            // No per-model limit is a membership's: named as its user's if one ever is.
            BudgetScope::User | BudgetScope::Member => {
                format!(
                    "model_per_user: {}:{model}",
                    self.user_id.as_deref().unwrap_or("")
                )
            }
            BudgetScope::Key => format!("model_per_key: {model}"),
        };
        let field = self.kind.model_field();
        let message = format!(
            "Rate limit exceeded for {whose}. Limit type: {field}. Current limit: {}, Remaining: 0.",
            self.limit,
        );
        ErrorObject::new(429, ErrorType::RateLimitError, message)
            .with_param(field)
            .with_reason(DenyReason::RateLimited.as_str())
    }

    /// Whole seconds until the window has room (at least 1), for `retry-after`.
    pub fn retry_after_seconds(&self, now_ms: u64) -> u64 {
        self.reset_at_ms
            .saturating_sub(now_ms)
            .div_ceil(1000)
            .max(1)
    }

    /// The headers a client of OpenAI's API reads on a 429: `retry-after` and the three
    /// `x-ratelimit-*` of the limit's kind (`-requests` or `-tokens`); OpenAI has none for
    /// parallel requests, so those get `retry-after` alone.
    pub fn headers(&self, now_ms: u64) -> Vec<(String, String)> {
        let retry = (
            "retry-after".to_owned(),
            self.retry_after_seconds(now_ms).to_string(),
        );
        if self.kind == LimitKind::Parallel {
            return vec![retry];
        }
        let kind = self.kind.as_str();
        let wait = self.reset_at_ms.saturating_sub(now_ms);
        vec![
            retry,
            (format!("x-ratelimit-limit-{kind}"), self.limit.to_string()),
            (format!("x-ratelimit-remaining-{kind}"), "0".to_owned()),
            (format!("x-ratelimit-reset-{kind}"), openai_duration(wait)),
        ]
    }
}

/// OpenAI's spelling of a wait: `250ms`, `12s`, `1m30s`.
pub fn openai_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let seconds = ms.div_ceil(1000);
    match (seconds / 60, seconds % 60) {
        (0, s) => format!("{s}s"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// The sliding window's log: what was counted when, oldest first. Entries in the same
/// [`BUCKET_MS`] merge, so a window holds at most 60 entries whatever the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowLog {
    entries: VecDeque<(u64, u64)>,
    /// How long an entry counts: [`WINDOW_MS`] for rates, [`PARALLEL_LEASE_MS`] for the
    /// starts and ends of requests.
    #[serde(default = "default_span", skip_serializing_if = "is_default_span")]
    span_ms: u64,
}

fn default_span() -> u64 {
    WINDOW_MS
}

fn is_default_span(span: &u64) -> bool {
    *span == WINDOW_MS
}

impl Default for WindowLog {
    fn default() -> WindowLog {
        WindowLog::spanning(WINDOW_MS)
    }
}

impl WindowLog {
    pub fn new() -> WindowLog {
        WindowLog::default()
    }

    /// Entries merge within this: [`BUCKET_MS`] for a minute, a 60th of longer spans, so
    /// a log holds about 60 entries whatever its span (a row of about a kilobyte, written
    /// whole on every admission).
    fn bucket_ms(&self) -> u64 {
        (self.span_ms / 60).max(BUCKET_MS)
    }

    /// How long an entry counts.
    pub fn span_ms(&self) -> u64 {
        self.span_ms
    }

    /// A log whose entries count for `span_ms` (at least one bucket).
    pub fn spanning(span_ms: u64) -> WindowLog {
        WindowLog {
            entries: VecDeque::new(),
            span_ms: span_ms.max(BUCKET_MS),
        }
    }

    /// The entries, oldest first, as `(unix_ms, amount)`.
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// Counts `amount` at `at`. An entry up to [`LEASE_MS`] ahead of `now` keeps its time
    /// (a lease's reservation); one further ahead (a clock stepped back, another replica's
    /// clock ahead) is counted at `now + LEASE_MS`: it holds the window at most one window
    /// and one lease longer than the clocks' difference allows, never for the size of the
    /// step.
    ///
    /// Entries in one bucket ([`BUCKET_MS`] in a minute's window) merge into one that carries the latest time of the
    /// bucket: what was counted leaves the window up to a bucket late, never early, so a
    /// window of any limit holds at most `WINDOW_MS / BUCKET_MS` entries (small enough to
    /// write whole on every admission).
    pub fn add(&mut self, at: u64, amount: u64, now: u64) {
        if amount == 0 {
            return;
        }
        let at = at.min(latest(now));
        let width = self.bucket_ms();
        let bucket = at / width;
        let position = self.entries.partition_point(|&(t, _)| t <= at);
        let same_bucket = |i: usize, entries: &VecDeque<(u64, u64)>| {
            entries.get(i).is_some_and(|&(t, _)| t / width == bucket)
        };
        let merge_into = if position > 0 && same_bucket(position - 1, &self.entries) {
            Some(position - 1)
        } else if same_bucket(position, &self.entries) {
            Some(position)
        } else {
            None
        };
        match merge_into.and_then(|i| self.entries.get_mut(i)) {
            Some(entry) => {
                entry.0 = entry.0.max(at);
                entry.1 = entry.1.saturating_add(amount);
            }
            None => self.entries.insert(position, (at, amount)),
        }
    }

    /// Drops what has left the window at `now`, and clamps entries further from the future
    /// than a lease to `now + LEASE_MS`.
    pub fn prune(&mut self, now: u64) {
        while self
            .entries
            .front()
            .is_some_and(|&(t, _)| t.saturating_add(self.span_ms) <= now)
        {
            self.entries.pop_front();
        }
        let latest = latest(now);
        if self.entries.back().is_some_and(|&(t, _)| t > latest) {
            let future: u64 = self
                .entries
                .iter()
                .filter(|&&(t, _)| t > latest)
                .map(|&(_, a)| a)
                .fold(0, u64::saturating_add);
            self.entries.retain(|&(t, _)| t <= latest);
            self.add(latest, future, now);
        }
    }

    /// Takes back `amount` counted at `at` that was never used (the unused rest of a
    /// lease): it comes off the entry of `at`'s bucket, never off another.
    pub fn release(&mut self, at: u64, amount: u64, now: u64) {
        let at = at.min(latest(now));
        let bucket = at / self.bucket_ms();
        let width = self.bucket_ms();
        if let Some(i) = self.entries.iter().position(|&(t, _)| t / width == bucket) {
            if let Some(entry) = self.entries.get_mut(i) {
                entry.1 = entry.1.saturating_sub(amount);
                if entry.1 == 0 {
                    self.entries.remove(i);
                }
            }
        }
    }

    /// What the window holds at `now`.
    pub fn total(&mut self, now: u64) -> u64 {
        self.prune(now);
        self.entries
            .iter()
            .map(|&(_, a)| a)
            .fold(0, u64::saturating_add)
    }

    /// The earliest time the window holds less than `limit` (now, if it already does).
    pub fn room_at(&mut self, now: u64, limit: u64) -> u64 {
        if limit == 0 {
            return now.saturating_add(self.span_ms);
        }
        let mut over = self.total(now).saturating_sub(limit.saturating_sub(1));
        if over == 0 {
            return now;
        }
        for &(t, amount) in &self.entries {
            over = over.saturating_sub(amount);
            if over == 0 {
                return t.saturating_add(self.span_ms);
            }
        }
        now.saturating_add(self.span_ms)
    }

    /// Admits one request if the window holds less than `limit`, counting it at `now`;
    /// otherwise the time it would have room.
    pub fn admit(&mut self, now: u64, limit: u64) -> Result<u64, u64> {
        let total = self.total(now);
        if total < limit {
            self.add(now, 1, now);
            Ok(limit - total - 1)
        } else {
            Err(self.room_at(now, limit))
        }
    }

    /// Reserves up to `wanted` admissions (at least one, at most half the room left, so
    /// other replicas keep some) if the window holds less than `limit`, stamped at the end
    /// of a lease from `now`; otherwise the time it would have room. Returns how many.
    pub fn reserve(&mut self, now: u64, limit: u64, wanted: u64) -> Result<u64, u64> {
        let total = self.total(now);
        if total >= limit {
            return Err(self.room_at(now, limit));
        }
        let room = limit - total;
        let granted = wanted.min(room.div_ceil(2)).max(1);
        self.add(now.saturating_add(LEASE_MS), granted, now);
        Ok(granted)
    }

    /// Adds every entry of `other` (what another replica counted, or what this one has not
    /// yet shared); the window's arithmetic is the same whichever order they arrive in.
    pub fn merge(&mut self, other: &WindowLog, now: u64) {
        for (at, amount) in other.entries() {
            self.add(at, amount, now);
        }
        self.prune(now);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The latest time an entry may carry at `now`: a lease's term ahead.
fn latest(now: u64) -> u64 {
    now.saturating_add(LEASE_MS)
}

#[cfg(test)]
mod tests;
