//! The messages between the supervisor and the engine: requests, responses, typed errors.

use serde::{Deserialize, Serialize};

use crate::keys::KeyHash;
use crate::ledger::LedgerEntry;
use crate::record::{
    KeyChange, KeyFilter, KeyPage, KeyPatch, KeyRecord, TeamPatch, TeamRecord, TeamWrite,
    TeamsDeleted,
};
use crate::secret::Secret;
use livegate_contract::WindowLog;

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

/// What the supervisor asks of the engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// First frame: connect the pool and migrate the schema, then answer `Ready`.
    Init(EngineSettings),
    /// The watchdog's heartbeat: `SELECT 1`.
    Ping,
    GetKey {
        token: KeyHash,
    },
    InsertKey {
        record: KeyRecord,
    },
    ListKeys {
        filter: KeyFilter,
    },
    UpdateKey {
        token: KeyHash,
        patch: KeyPatch,
    },
    DeleteKeys {
        tokens: Vec<KeyHash>,
        aliases: Vec<String>,
    },
    /// The change log after `after`, and its last `recent_ms` again (see `queries`).
    ChangesSince {
        after: i64,
        recent_ms: i64,
        limit: i64,
    },
    /// The highest change number.
    LastChange,
    /// Drops change-log rows older than `keep_ms`.
    PruneChanges {
        keep_ms: i64,
    },
    InsertTeam {
        team: TeamRecord,
    },
    /// The team, and its keys when `with_keys`.
    GetTeam {
        team_id: String,
        with_keys: bool,
    },
    ListTeams {
        page: u32,
        size: u32,
    },
    /// Updates the team and logs a change for each of its keys whose policy changed.
    UpdateTeam {
        team_id: String,
        patch: TeamPatch,
    },
    /// Deletes the teams and their keys, with a tombstone for each key.
    DeleteTeams {
        team_ids: Vec<String>,
    },
    /// The drain's one statement: inserts the rows whose request id is new and adds only
    /// their cost to their key's and team's `spend` (no version, no change logged).
    InsertSpend {
        rows: Vec<LedgerEntry>,
        /// The identity of the database the rows belong to: an engine connected to
        /// another refuses (`None`: any).
        #[serde(default)]
        database: Option<String>,
    },
    /// Records the drain cannot write (or read), kept in `livegate_spend_dead_letters`
    /// instead of blocking the rows behind them; a letter already there is left as it is.
    DeadLetterSpend {
        letters: Vec<DeadLetter>,
        #[serde(default)]
        database: Option<String>,
    },
    /// Rows of `livegate_spend_logs`, newest first.
    SpendLogs {
        filter: SpendFilter,
    },
    /// Spend per UTC day, key and model within the filter's dates.
    SpendSummary {
        filter: SpendFilter,
    },
    /// The sum of every row's cost.
    GlobalSpend,
    /// Budgets whose `budget_reset_at` is at or before `now`: spend back to 0, the next
    /// reset at `now + budget_duration`, and a change logged for each key concerned.
    ResetBudgets {
        now: chrono::DateTime<chrono::Utc>,
    },
    /// Compare and swap of one rate-limit window: writes `window` if the row's version is
    /// still `expected` (0: no row yet), else answers the row as it is.
    SwapRateWindow {
        scope: String,
        expected: i64,
        window: WindowLog,
    },
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

/// One row of `livegate_spend_logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendRow {
    pub request_id: String,
    pub key_hash: String,
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub model_requested: Option<String>,
    pub model_returned: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub cost: f64,
    pub unpriced: bool,
    pub usage_known: bool,
    pub status: i32,
    pub streamed: bool,
    pub start_time: chrono::DateTime<chrono::Utc>,
    pub end_time: chrono::DateTime<chrono::Utc>,
    /// Why the counts are an estimate (`contract::EstimateReason`'s name), if they are.
    #[serde(default)]
    pub usage_estimate_reason: Option<String>,
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
        matches!(self, Request::Ping)
    }
}

/// What the engine answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Connected and migrated; `database` is the database's identity (`schema::identity`).
    Ready {
        #[serde(default)]
        database: Option<String>,
    },
    Pong,
    Key {
        record: Option<Box<KeyRecord>>,
    },
    Page {
        page: KeyPage,
    },
    Inserted {
        record: Box<KeyRecord>,
    },
    Deleted {
        tokens: Vec<(KeyHash, i64)>,
    },
    Changes {
        changes: Vec<KeyChange>,
    },
    LastChange {
        seq: i64,
    },
    Pruned {
        rows: u64,
    },
    Team {
        team: Option<Box<TeamRecord>>,
        keys: Vec<KeyRecord>,
    },
    Teams {
        teams: Vec<TeamRecord>,
        total: u64,
    },
    TeamWritten {
        write: Option<Box<TeamWrite>>,
    },
    TeamsDeleted {
        deleted: TeamsDeleted,
    },
    SpendInserted {
        inserted: SpendInserted,
    },
    /// Dead letters written (the rest were there already).
    DeadLettered {
        rows: u64,
    },
    SpendLogs {
        rows: Vec<SpendRow>,
    },
    SpendSummary {
        groups: Vec<SpendGroup>,
    },
    GlobalSpend {
        spend: f64,
    },
    BudgetsReset {
        reset: BudgetsReset,
    },
    /// The swap was made: the row's new version.
    RateWindowSwapped {
        version: i64,
    },
    /// The swap was not made: the row as another writer left it.
    RateWindowCurrent {
        window: WindowLog,
        version: i64,
    },
}

/// What a budget reset did: keys and teams whose spend went back to 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetsReset {
    pub keys: u64,
    pub teams: u64,
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
    pub result: Result<Response, EngineError>,
}
