//! Key records: what the database stores about a key, and the changes callers ask for.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::keys::KeyHash;

/// One key as stored (never the raw key). Field names follow LiteLLM's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub token: KeyHash,
    pub key_name: String,
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub models: Vec<String>,
    pub max_budget: Option<f64>,
    pub metadata: serde_json::Value,
    pub blocked: bool,
    pub spend: f64,
    pub expires: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The number of the key's last change (`livegate_key_changes.seq`); 0 before its first.
    #[serde(default)]
    pub version: i64,
}

impl KeyRecord {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// Fields an update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyPatch {
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub models: Option<Vec<String>>,
    pub max_budget: Option<f64>,
    pub metadata: Option<serde_json::Value>,
    pub blocked: Option<bool>,
    pub expires: Option<DateTime<Utc>>,
}

/// Filters and paging of `/key/list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyFilter {
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
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
