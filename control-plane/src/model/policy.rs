//! The policies keys, users and teams share (rate limits, budgets) and what a team and a
//! user impose on their keys, each written once and embedded where it applies.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use livegate_contract::{same_model, LimitKind, ModelLimits, RateLimits};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::keys::{parse_duration, DurationError};

/// Requests and tokens in any 60 s window, and requests in flight (LiteLLM's `rpm_limit`,
/// `tpm_limit`, `max_parallel_requests`). In a patch, `None` leaves a limit as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default)]
    pub rpm_limit: Option<i64>,
    #[serde(default)]
    pub tpm_limit: Option<i64>,
    #[serde(default)]
    pub max_parallel_requests: Option<i64>,
}

impl Limits {
    /// The limit of one kind as the windows count it (a stored negative admits nothing).
    pub fn of(&self, kind: LimitKind) -> Option<u64> {
        let stored = match kind {
            LimitKind::Requests => self.rpm_limit,
            LimitKind::Tokens => self.tpm_limit,
            LimitKind::Parallel => self.max_parallel_requests,
        };
        stored.map(|n| u64::try_from(n).unwrap_or(0))
    }

    /// For each kind, the stricter of these limits and `other`'s, as the filter is told.
    pub fn stricter(&self, other: &Limits) -> RateLimits {
        Limits::strictest(&[self, other])
    }

    /// For each kind, the strictest of all these limits (none set: none).
    pub fn strictest(all: &[&Limits]) -> RateLimits {
        let of = |kind| {
            all.iter()
                .fold(None, |acc, l| RateLimits::stricter(acc, l.of(kind)))
        };
        RateLimits {
            rpm_limit: of(LimitKind::Requests),
            tpm_limit: of(LimitKind::Tokens),
            max_parallel_requests: of(LimitKind::Parallel),
        }
    }
}

/// Per-model limits (LiteLLM's `model_rpm_limit` and `model_tpm_limit`, `{"gpt-4o": 10}`),
/// a key's or a team's own, by the model name as configured. A request for a model is
/// counted in the windows of every entry that names it ([`same_model`]: case and
/// surrounding whitespace aside).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerModelLimits {
    #[serde(default)]
    pub model_rpm_limit: BTreeMap<String, i64>,
    #[serde(default)]
    pub model_tpm_limit: BTreeMap<String, i64>,
}

impl PerModelLimits {
    pub fn is_empty(&self) -> bool {
        self.model_rpm_limit.is_empty() && self.model_tpm_limit.is_empty()
    }

    fn of_kind(&self, kind: LimitKind) -> Option<&BTreeMap<String, i64>> {
        match kind {
            LimitKind::Requests => Some(&self.model_rpm_limit),
            LimitKind::Tokens => Some(&self.model_tpm_limit),
            LimitKind::Parallel => None,
        }
    }

    /// The entries of one kind that apply to `model`: the configured name and the limit as
    /// the windows count it (a stored negative admits nothing).
    pub fn matching(&self, kind: LimitKind, model: &str) -> Vec<(String, u64)> {
        self.of_kind(kind)
            .into_iter()
            .flatten()
            .filter(|(name, _)| same_model(name, model))
            .map(|(name, n)| (name.clone(), u64::try_from(*n).unwrap_or(0)))
            .collect()
    }

    /// Every model named by any of these, with the strictest limit of each kind, as the
    /// filter is told (it asks again for a request of one of these models).
    pub fn strictest(all: &[&PerModelLimits]) -> ModelLimits {
        let mut out = ModelLimits::new();
        for limits in all {
            for (name, n) in &limits.model_rpm_limit {
                let entry = out.entry(name.clone()).or_default();
                let n = Some(u64::try_from(*n).unwrap_or(0));
                entry.rpm_limit = RateLimits::stricter(entry.rpm_limit, n);
            }
            for (name, n) in &limits.model_tpm_limit {
                let entry = out.entry(name.clone()).or_default();
                let n = Some(u64::try_from(*n).unwrap_or(0));
                entry.tpm_limit = RateLimits::stricter(entry.tpm_limit, n);
            }
        }
        out
    }
}

/// A key's budget for one model (LiteLLM's `model_max_budget` entry): the spend of the
/// key's requests for the model within the current `time_period` (periods aligned to the
/// Unix epoch) may not pass `budget_limit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelBudget {
    pub budget_limit: f64,
    pub time_period: BudgetDuration,
}

impl ModelBudget {
    /// Where the period holding `now_ms` starts, Unix milliseconds.
    pub fn period_start_ms(&self, now_ms: u64) -> u64 {
        let period = u64::try_from(self.time_period.secs())
            .unwrap_or(1)
            .max(1)
            .saturating_mul(1000);
        now_ms - now_ms % period
    }
}

/// LiteLLM's `budget_duration` (`30s`, `30m`, `1h`, `1d`, `30d`): parsed once where it
/// enters, kept as written for display, with its length for the reset task's SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetDuration {
    text: String,
    secs: i64,
}

impl BudgetDuration {
    pub fn parse(text: &str) -> Result<BudgetDuration, DurationError> {
        let secs = i64::try_from(parse_duration(text)?.as_secs()).map_err(|_| DurationError)?;
        Ok(BudgetDuration {
            text: text.to_owned(),
            secs,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn secs(&self) -> i64 {
        self.secs
    }
}

impl fmt::Display for BudgetDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for BudgetDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for BudgetDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BudgetDuration, D::Error> {
        let text = String::deserialize(d)?;
        BudgetDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A budget (keys and teams alike). In a patch, `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetPolicy {
    #[serde(default)]
    pub max_budget: Option<f64>,
    /// Alerts only: `spend >= soft_budget` sets `soft_budget_cooldown` in the info calls.
    #[serde(default)]
    pub soft_budget: Option<f64>,
    /// Spend goes back to 0 at `budget_reset_at`, then every `budget_duration`.
    #[serde(default)]
    pub budget_duration: Option<BudgetDuration>,
    #[serde(default)]
    pub budget_reset_at: Option<DateTime<Utc>>,
}

impl BudgetPolicy {
    /// LiteLLM's flag: `spend` has reached the `soft_budget` (an alert, not a limit).
    pub fn soft_budget_cooldown(&self, spend: f64) -> bool {
        self.soft_budget.is_some_and(|soft| spend >= soft)
    }
}

/// What a team imposes on each of its keys, as of the key's version: a team's change of
/// any of it (and its crossing of its budget) is logged as a change of each of its keys.
/// A key carries it as the `team_*` columns of `livegate_key_policies`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TeamPolicy {
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub max_budget: Option<f64>,
    /// The team's drained spend.
    #[serde(default)]
    pub spend: f64,
    #[serde(flatten)]
    pub limits: Limits,
    /// `{"alias": "model"}`, consulted after the key's own aliases.
    #[serde(default)]
    pub model_aliases: BTreeMap<String, String>,
    /// The team's `model_rpm_limit` and `model_tpm_limit`, shared by its keys.
    #[serde(flatten)]
    pub model_limits: PerModelLimits,
}

serde_with::with_prefix!(pub team_columns "team_");

/// What a user imposes on each of its keys (the keys whose `user_id` names it), as of the
/// key's version: a user's change of any of it (and its crossing of its budget) is logged
/// as a change of each of its keys. A key carries it as the `user_*` columns of
/// `livegate_key_policies`; a key whose `user_id` names no user carries the open default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserPolicy {
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub max_budget: Option<f64>,
    /// The user's drained spend (the sum of its keys' drained records).
    #[serde(default)]
    pub spend: f64,
    #[serde(flatten)]
    pub limits: Limits,
}

serde_with::with_prefix!(pub user_columns "user_");

/// What a user's membership of a team imposes on that user's keys in that team (a key
/// whose `user_id` and `team_id` name them): LiteLLM's `max_budget_in_team`, and what
/// those keys have spent in the team. A membership's change of its budget (and its
/// crossing of it) is logged as a change of each of those keys. A key carries it as the
/// `member_*` columns of `livegate_key_policies`; no membership: the open default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberPolicy {
    #[serde(default)]
    pub max_budget: Option<f64>,
    /// The drained spend of the user's keys in the team.
    #[serde(default)]
    pub spend: f64,
}

serde_with::with_prefix!(pub member_columns "member_");
