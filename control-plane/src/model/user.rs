//! User records: what the database stores about a user (LiteLLM's internal user), and the
//! changes callers ask for. A user's policy applies to every key whose `user_id` names it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::key::KeyRecord;
use super::keys::KeyHash;
use super::policy::{BudgetPolicy, Limits, UserPolicy};

/// One user as stored. Field names follow LiteLLM's `LiteLLM_UserTable`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user_id: String,
    pub user_email: Option<String>,
    pub user_role: Option<String>,
    pub models: Vec<String>,
    pub metadata: serde_json::Value,
    /// The sum of its keys' drained spend since the last reset.
    pub spend: f64,
    #[serde(flatten)]
    pub budget: BudgetPolicy,
    #[serde(flatten)]
    pub limits: Limits,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl UserRecord {
    /// What the user imposes on its keys (the view's `user_*` columns).
    pub fn policy(&self) -> UserPolicy {
        UserPolicy {
            models: self.models.clone(),
            max_budget: self.budget.max_budget,
            spend: self.spend,
            limits: self.limits,
        }
    }
}

/// Fields a user update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserPatch {
    pub user_email: Option<String>,
    pub user_role: Option<String>,
    pub models: Option<Vec<String>>,
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub budget: BudgetPolicy,
    #[serde(default)]
    pub limits: Limits,
}

/// A user after a write, and the new state of each key whose policy the write changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserWrite {
    pub user: UserRecord,
    pub keys: Vec<KeyRecord>,
}

/// A user and its keys (`/user/info`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserAndKeys {
    pub user: UserRecord,
    pub keys: Vec<KeyRecord>,
}

/// One page of users and the total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPage {
    pub users: Vec<UserRecord>,
    /// Keys per user of this page.
    pub key_counts: Vec<(String, i64)>,
    /// `(user_id, team_id)` of every membership of this page's users, by team.
    #[serde(default)]
    pub memberships: Vec<(String, String)>,
    pub total: u64,
}

/// Users deleted, and the tombstones (token, version) of the keys deleted with them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsersDeleted {
    pub user_ids: Vec<String>,
    pub keys: Vec<(KeyHash, i64)>,
}
