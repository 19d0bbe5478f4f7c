//! Key records: what the database stores about a key, and the changes callers ask for.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::keys::KeyHash;

/// One key as stored (never the raw key). Field names follow LiteLLM's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub token: KeyHash,
    pub key_name: String,
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub models: Vec<String>,
    /// `{"alias": "model"}` (LiteLLM's `aliases`).
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    pub max_budget: Option<f64>,
    /// Alerts only: `spend >= soft_budget` sets `soft_budget_cooldown` in `/key/info`.
    #[serde(default)]
    pub soft_budget: Option<f64>,
    /// LiteLLM's `30s`, `30m`, `1h`, `1d`, `30d`: spend goes back to 0 at `budget_reset_at`.
    #[serde(default)]
    pub budget_duration: Option<String>,
    #[serde(default)]
    pub budget_reset_at: Option<DateTime<Utc>>,
    pub metadata: serde_json::Value,
    pub blocked: bool,
    pub spend: f64,
    pub expires: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The number of the key's last change (`livegate_key_changes.seq`); 0 before its first.
    #[serde(default)]
    pub version: i64,
    /// From the key's team when the record was read or logged: a team's change is logged
    /// as a change of each of its keys, so these are never older than the key's version.
    #[serde(default)]
    pub team_blocked: bool,
    #[serde(default)]
    pub team_models: Vec<String>,
    /// The team's budget and drained spend, as of the key's version: a team's crossing of
    /// its budget (and its reset) is logged as a change of each of its keys.
    #[serde(default)]
    pub team_max_budget: Option<f64>,
    #[serde(default)]
    pub team_spend: f64,
    /// Requests and tokens in any 60 s window (LiteLLM's `rpm_limit`, `tpm_limit`).
    #[serde(default)]
    pub rpm_limit: Option<i64>,
    #[serde(default)]
    pub tpm_limit: Option<i64>,
    /// Requests admitted and not yet finished (LiteLLM's `max_parallel_requests`).
    #[serde(default)]
    pub max_parallel_requests: Option<i64>,
    /// The team's limits, as of the key's version (a team's change of them is logged as a
    /// change of each of its keys).
    #[serde(default)]
    pub team_rpm_limit: Option<i64>,
    #[serde(default)]
    pub team_tpm_limit: Option<i64>,
    #[serde(default)]
    pub team_max_parallel_requests: Option<i64>,
}

impl KeyRecord {
    /// The limits that apply: for each, the stricter of the key's and its team's.
    pub fn limits(&self) -> livegate_contract::RateLimits {
        let unsigned = |v: Option<i64>| v.map(|n| u64::try_from(n).unwrap_or(0));
        livegate_contract::RateLimits {
            rpm_limit: livegate_contract::RateLimits::stricter(
                unsigned(self.rpm_limit),
                unsigned(self.team_rpm_limit),
            ),
            tpm_limit: livegate_contract::RateLimits::stricter(
                unsigned(self.tpm_limit),
                unsigned(self.team_tpm_limit),
            ),
            max_parallel_requests: livegate_contract::RateLimits::stricter(
                unsigned(self.max_parallel_requests),
                unsigned(self.team_max_parallel_requests),
            ),
        }
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// LiteLLM's flag: the key's spend has reached its `soft_budget` (an alert, not a limit).
    pub fn soft_budget_cooldown(&self) -> bool {
        self.soft_budget.is_some_and(|soft| self.spend >= soft)
    }
}

/// Fields an update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyPatch {
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub models: Option<Vec<String>>,
    pub aliases: Option<BTreeMap<String, String>>,
    pub metadata: Option<serde_json::Value>,
    pub blocked: Option<bool>,
    pub expires: Option<DateTime<Utc>>,
    #[serde(default)]
    pub budget: BudgetPatch,
    #[serde(default)]
    pub limits: LimitsPatch,
}

/// Rate limits a write may set (keys and teams alike); `None` leaves a limit as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsPatch {
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub max_parallel_requests: Option<i64>,
}

/// Budget fields a write may set (keys and teams alike); `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetPatch {
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub budget_duration: Option<String>,
    /// Its length in seconds, parsed once at the edge (the reset task adds it in SQL).
    pub budget_duration_secs: Option<i64>,
    /// `now + budget_duration` when a duration is set.
    pub budget_reset_at: Option<DateTime<Utc>>,
}

/// Filters and paging of `/key/list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyFilter {
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub token: Option<KeyHash>,
    /// 1-based.
    pub page: u32,
    pub size: u32,
}

/// One page of keys and the total that matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyPage {
    pub keys: Vec<KeyRecord>,
    pub total: u64,
}

/// A key's state after one change, as every control plane learns it from the change log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyChange {
    pub seq: i64,
    pub token: KeyHash,
    /// `None`: the key was deleted.
    pub record: Option<Box<KeyRecord>>,
}

/// One team as stored. Field names follow LiteLLM's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamRecord {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub models: Vec<String>,
    pub metadata: serde_json::Value,
    pub blocked: bool,
    pub spend: f64,
    #[serde(default)]
    pub max_budget: Option<f64>,
    #[serde(default)]
    pub soft_budget: Option<f64>,
    #[serde(default)]
    pub budget_duration: Option<String>,
    #[serde(default)]
    pub budget_reset_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub rpm_limit: Option<i64>,
    #[serde(default)]
    pub tpm_limit: Option<i64>,
    #[serde(default)]
    pub max_parallel_requests: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TeamRecord {
    /// The team's spend has reached its `soft_budget` (an alert, not a limit), as a key's
    /// `soft_budget_cooldown`.
    pub fn soft_budget_cooldown(&self) -> bool {
        self.soft_budget.is_some_and(|soft| self.spend >= soft)
    }
}

/// Fields a team update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TeamPatch {
    pub team_alias: Option<String>,
    pub models: Option<Vec<String>>,
    pub metadata: Option<serde_json::Value>,
    pub blocked: Option<bool>,
    #[serde(default)]
    pub budget: BudgetPatch,
    #[serde(default)]
    pub limits: LimitsPatch,
}

/// A team after a write, and the new state of each key whose policy the write changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamWrite {
    pub team: TeamRecord,
    pub keys: Vec<KeyRecord>,
}

/// Teams deleted, and the tombstones (token, version) of the keys deleted with them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TeamsDeleted {
    pub team_ids: Vec<String>,
    pub keys: Vec<(KeyHash, i64)>,
}
