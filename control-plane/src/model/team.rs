//! Team records: what the database stores about a team, and the changes callers ask for.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::key::KeyRecord;
use super::keys::KeyHash;
use super::policy::{BudgetPolicy, Limits, PerModelLimits, TeamPolicy};

/// One team as stored. Field names follow LiteLLM's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamRecord {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub models: Vec<String>,
    pub metadata: serde_json::Value,
    pub blocked: bool,
    pub spend: f64,
    /// `{"alias": "model"}` for the team's keys, after each key's own (LiteLLM's
    /// `model_aliases`).
    #[serde(default)]
    pub model_aliases: BTreeMap<String, String>,
    #[serde(flatten)]
    pub budget: BudgetPolicy,
    #[serde(flatten)]
    pub limits: Limits,
    /// `model_rpm_limit` and `model_tpm_limit`, shared by the team's keys.
    #[serde(flatten)]
    pub model_limits: PerModelLimits,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TeamRecord {
    /// The team's spend has reached its `soft_budget` (an alert, not a limit).
    pub fn soft_budget_cooldown(&self) -> bool {
        self.budget.soft_budget_cooldown(self.spend)
    }

    /// What the team imposes on its keys (the view's `team_*` columns).
    pub fn policy(&self) -> TeamPolicy {
        TeamPolicy {
            blocked: self.blocked,
            models: self.models.clone(),
            max_budget: self.budget.max_budget,
            spend: self.spend,
            limits: self.limits,
            model_aliases: self.model_aliases.clone(),
            model_limits: self.model_limits.clone(),
        }
    }
}

/// Fields a team update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TeamPatch {
    pub team_alias: Option<String>,
    pub models: Option<Vec<String>>,
    pub model_aliases: Option<BTreeMap<String, String>>,
    pub metadata: Option<serde_json::Value>,
    pub blocked: Option<bool>,
    #[serde(default)]
    pub budget: BudgetPolicy,
    #[serde(default)]
    pub limits: Limits,
    /// A map given replaces the team's whole map (`{}` removes every entry).
    pub model_rpm_limit: Option<BTreeMap<String, i64>>,
    pub model_tpm_limit: Option<BTreeMap<String, i64>>,
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
