//! The messages between the supervisor and the engine: typed operations, their replies,
//! typed errors, and the frames that carry them. Both sides import this; neither imports
//! the other.
//!
//! On the wire a request is `{"id": 7, "request": {"op": "GetKey", "token": "…"}}` and its
//! answer `{"id": 7, "result": {"Ok": {"op": "GetKey", "reply": {…}}}}` (or
//! `{"Err": {"kind": "conflict", "message": "key_alias"}}`): the reply names the operation
//! it answers, so a reply to another operation is a protocol error, never a misread.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::{KeyRecord, TeamRecord};
use crate::secret::Secret;
use livegate_contract::WindowLog;

mod frame;
mod ops;
#[cfg(test)]
mod tests;

pub use frame::{codec, encode, LaneSenders, Lanes};
pub use ops::*;

/// One operation the engine serves: its request (`Self`) and its reply, declared together
/// in the [`ops`] table.
pub trait Op: Serialize + DeserializeOwned + Send + 'static {
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// The name on the wire, in the request's `op` and in its answer's.
    const NAME: &'static str;

    fn into_request(self) -> Request;

    /// The engine's side: the reply, encoded and named for this operation.
    fn answer(&self, reply: &Self::Reply) -> Result<Answer, EngineError> {
        let reply = serde_json::value::to_raw_value(reply)
            .map_err(|e| EngineError::Protocol(format!("{} reply not encoded: {e}", Self::NAME)))?;
        Ok(Answer {
            op: Self::NAME.to_owned(),
            reply,
        })
    }

    /// The supervisor's side: the reply to this operation, or a protocol error for an
    /// answer to another one or one that does not decode as this one's reply.
    fn read_answer(answer: &Answer) -> Result<Self::Reply, EngineError> {
        if answer.op != Self::NAME {
            return Err(EngineError::Protocol(format!(
                "{} was answered with a {} reply",
                Self::NAME,
                answer.op
            )));
        }
        serde_json::from_str(answer.reply.get())
            .map_err(|e| EngineError::Protocol(format!("{} reply unreadable: {e}", Self::NAME)))
    }
}

/// An engine's successful answer: the operation it answers and its reply, decoded only by
/// the caller who knows the reply's type.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub op: String,
    pub reply: Box<RawValue>,
}

/// `Init`'s reply: connected and migrated; `database` is the database's identity
/// (`engine::schema::identity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    #[serde(default)]
    pub database: Option<String>,
}

/// `GetTeam`'s reply: the team and (when asked for) its keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeamAndKeys {
    pub team: TeamRecord,
    pub keys: Vec<KeyRecord>,
}

/// `ListTeams`' reply: one page and the number of teams in all.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeamList {
    pub teams: Vec<TeamRecord>,
    pub total: u64,
}

/// What a rate-limit window's compare and swap found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum WindowSwap {
    Swapped {
        version: i64,
    },
    /// Another writer got there first: its window, to merge and try again.
    Current {
        window: WindowLog,
        version: i64,
    },
}

/// Connection settings the engine applies explicitly (never the driver's defaults).
/// Sent in the first frame so the database URL never appears in argv or the environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineSettings {
    pub database_url: Secret,
    pub pool_size: usize,
    pub connect_timeout_ms: u64,
    pub keepalive_idle_ms: u64,
    pub keepalive_interval_ms: u64,
    pub keepalive_retries: u32,
    pub tcp_user_timeout_ms: u64,
    pub statement_timeout_ms: u64,
}

/// What `/spend/logs` asks for; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpendFilter {
    pub key_hash: Option<String>,
    pub request_id: Option<String>,
    /// Rows that started on or after this UTC day…
    pub start_date: Option<chrono::NaiveDate>,
    /// …and on or before this one.
    pub end_date: Option<chrono::NaiveDate>,
    pub limit: i64,
}

/// A spooled record the database refused (or that is not a ledger entry): its request
/// id, its spooled bytes as they were, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub request_id: String,
    pub data: Vec<u8>,
    pub reason: String,
}

/// What the drain's statement did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendInserted {
    /// Rows inserted (the rest were there already).
    pub inserted: u64,
    /// Of those, rows whose model has no price.
    pub unpriced: u64,
    /// The request ids of the batch that were there already (a replay or a retry; rare).
    #[serde(default)]
    pub duplicates: Vec<String>,
}

/// Spend of one key on one model on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendGroup {
    pub day: chrono::NaiveDate,
    pub key_hash: String,
    pub model: String,
    pub spend: f64,
}

impl Request {
    /// The watchdog's heartbeat: it travels in a lane of its own and runs on a connection
    /// of its own, so auth traffic never delays it.
    pub fn is_heartbeat(&self) -> bool {
        matches!(self, Request::Ping(_))
    }
}

/// What a budget reset did: keys and teams whose spend went back to 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetsReset {
    pub keys: u64,
    pub teams: u64,
    #[serde(default)]
    pub users: u64,
}

/// Typed failures from the engine. `Transport` means the connection itself is in doubt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum EngineError {
    #[error("database transport failure: {0}")]
    Transport(String),
    #[error("conflict on {0}")]
    Conflict(String),
    /// A reference to a row that does not exist (a key's `team_id` naming no team).
    #[error("{0} names nothing")]
    NoSuchReference(String),
    #[error("statement timed out")]
    Timeout,
    #[error("database error: {0}")]
    Query(String),
    /// Postgres refused the data itself (SQLSTATE class 22: a NUL in `jsonb`, a number or
    /// a time out of range): the statement's input is at fault, not the database.
    #[error("database refused the data: {0}")]
    Data(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// A request on the wire, tagged with its id so many can be in flight at once.
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: u64,
    pub request: Request,
}

/// A response on the wire, carrying the id of the request it answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub id: u64,
    pub result: Result<Answer, EngineError>,
}
