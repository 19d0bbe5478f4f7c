//! `GET /v1/auth/changes?after=<cursor>`: the change feed the filter polls so that a
//! revocation reaches every Envoy worker within about a second.
//!
//! Every change to a key has a number (`seq`) from Postgres, the same on every control
//! plane. Numbers are unique but may become visible out of order, so an answer repeats the
//! changes of the last few seconds; applying one twice does nothing.

use serde::{Deserialize, Serialize};

use crate::key::KeyHash;

/// The control plane's internal path for the feed; Envoy never routes it from outside.
pub const CHANGES_PATH: &str = "/v1/auth/changes";

/// What a key became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Usable (it may still expire): a cached decision must be checked again.
    Active,
    /// Refused with `key_blocked` from now on.
    Blocked,
    /// Gone: refused with `invalid_key` from now on.
    Deleted,
    /// Its team is blocked: refused with `team_blocked` from now on.
    TeamBlocked,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChange {
    pub seq: u64,
    pub key_hash: KeyHash,
    pub status: KeyStatus,
}

/// The answer: changes after the cursor (and recent ones again), and the cursor to send
/// next. `reset` means this control plane cannot tell what happened after the cursor (it
/// started later, or its history was trimmed): the filter must forget every allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeFeed {
    pub cursor: u64,
    pub reset: bool,
    pub changes: Vec<KeyChange>,
}
