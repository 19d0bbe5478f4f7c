//! Key records: what the database stores about a key, and the changes callers ask for.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use livegate_contract::{ModelLimits, RateLimits};
use serde::{Deserialize, Serialize};

use super::keys::KeyHash;
use super::policy::{
    member_columns, team_columns, user_columns, BudgetPolicy, Limits, MemberPolicy, ModelBudget,
    PerModelLimits, TeamPolicy, UserPolicy,
};

/// One key as stored (never the raw key), with its team's policy. Field names follow
/// LiteLLM's; the embedded policies are flattened, so the JSON and the columns are flat.
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
    #[serde(flatten)]
    pub budget: BudgetPolicy,
    pub metadata: serde_json::Value,
    pub blocked: bool,
    pub spend: f64,
    pub expires: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The number of the key's last change (`livegate_key_changes.seq`); 0 before its first.
    #[serde(default)]
    pub version: i64,
    #[serde(flatten)]
    pub limits: Limits,
    /// The key's own `model_rpm_limit` and `model_tpm_limit`.
    #[serde(flatten)]
    pub model_limits: PerModelLimits,
    /// `{"gpt-4o": {"budget_limit": 5.0, "time_period": "1d"}}` (LiteLLM's `model_max_budget`).
    #[serde(default)]
    pub model_max_budget: BTreeMap<String, ModelBudget>,
    /// From the key's team when the record was read or logged (`team_*`).
    #[serde(flatten, with = "team_columns")]
    pub team: TeamPolicy,
    /// From the user its `user_id` names when the record was read or logged (`user_*`);
    /// the open default when it names none.
    #[serde(flatten, with = "user_columns")]
    pub user: UserPolicy,
    /// From the membership of its user in its team (`member_*`): the open default when
    /// the key lacks either, or the user is no member.
    #[serde(flatten, with = "member_columns")]
    pub member: MemberPolicy,
}

impl KeyRecord {
    /// The limits that apply: for each, the strictest of the key's, its user's and its
    /// team's.
    pub fn limits(&self) -> RateLimits {
        Limits::strictest(&[&self.limits, &self.user.limits, &self.team.limits])
    }

    /// The per-model limits that apply, the stricter of the key's and its team's by model,
    /// and an entry (maybe with no limit) for each model with a `model_max_budget`: the
    /// filter asks again for a request of any of them.
    pub fn model_limits(&self) -> ModelLimits {
        let mut all = PerModelLimits::strictest(&[&self.model_limits, &self.team.model_limits]);
        for model in self.model_max_budget.keys() {
            all.entry(model.clone()).or_default();
        }
        all
    }

    /// The key's budget for `model` (the model the request resolved to), with the name it
    /// is configured as (case and surrounding whitespace aside).
    pub fn model_budget(&self, model: &str) -> Option<(&String, &ModelBudget)> {
        livegate_contract::model_entry(&self.model_max_budget, model)
    }

    /// Whether a budget of the key, its user, its team or its user's in that team applies.
    pub fn budgeted(&self) -> bool {
        self.budget.max_budget.is_some()
            || self.user.max_budget.is_some()
            || self.team.max_budget.is_some()
            || self.member.max_budget.is_some()
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// LiteLLM's flag: the key's spend has reached its `soft_budget` (an alert, not a limit).
    pub fn soft_budget_cooldown(&self) -> bool {
        self.budget.soft_budget_cooldown(self.spend)
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
    pub budget: BudgetPolicy,
    #[serde(default)]
    pub limits: Limits,
    /// A map given replaces the key's whole map (`{}` removes every entry).
    pub model_rpm_limit: Option<BTreeMap<String, i64>>,
    pub model_tpm_limit: Option<BTreeMap<String, i64>>,
    /// A map given replaces the key's whole map.
    pub model_max_budget: Option<BTreeMap<String, ModelBudget>>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BudgetDuration;

    /// The change log stores a key as the view's flat row (`to_jsonb`): the embedded
    /// policies read from and write to the same flat names.
    #[test]
    fn a_record_reads_and_writes_the_views_flat_row() {
        let row = serde_json::json!({
            "token": KeyHash::of_raw("sk-flat").as_str(), "key_name": "sk-...flat",
            "key_alias": null, "team_id": "t", "user_id": null, "models": [],
            "aliases": {}, "metadata": {}, "blocked": false, "spend": 1.5, "expires": null,
            "created_at": "2026-12-03T00:00:00Z", "updated_at": "2026-12-03T00:00:00Z",
            "max_budget": 10.0, "budget_duration": "30d", "budget_duration_secs": 2592000,
            "rpm_limit": 5, "team_blocked": true, "team_models": ["gpt-4o"],
            "team_max_budget": 20.0, "team_spend": 3.0, "team_tpm_limit": 100,
        });
        let record: KeyRecord = serde_json::from_value(row).unwrap();
        assert_eq!(record.budget.max_budget, Some(10.0));
        assert_eq!(
            record.budget.budget_duration,
            BudgetDuration::parse("30d").ok()
        );
        assert_eq!(record.limits.rpm_limit, Some(5));
        assert!(record.team.blocked);
        assert_eq!(record.team.models, ["gpt-4o"]);
        assert_eq!(record.team.max_budget, Some(20.0));
        assert_eq!(record.team.spend, 3.0);
        assert_eq!(record.team.limits.tpm_limit, Some(100));
        assert_eq!(record.limits().tpm_limit, Some(100));
        let written = serde_json::to_value(&record).unwrap();
        assert_eq!(written["team_tpm_limit"], 100);
        assert_eq!(written["budget_duration"], "30d");
        assert_eq!(written["team_id"], "t");
        assert_eq!(
            serde_json::from_value::<KeyRecord>(written).unwrap(),
            record
        );
    }
}
