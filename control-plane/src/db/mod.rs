//! The database room: a handle the HTTP layer calls, backed by a supervised engine subprocess.

pub mod ipc;
pub mod process;
mod spawner;
pub mod state;
pub mod supervisor;
/// The messages between supervisor and engine live at the crate root, shared by both sides.
pub use crate::protocol;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::keys::KeyHash;
use crate::ledger::LedgerEntry;
pub use crate::protocol::{
    BudgetsReset, DeadLetter, SpendFilter, SpendGroup, SpendInserted, SpendRow,
};
use crate::protocol::{EngineError, Request, Response};
use crate::record::{
    KeyChange, KeyFilter, KeyPage, KeyPatch, KeyRecord, TeamPatch, TeamRecord, TeamWrite,
    TeamsDeleted,
};
use ipc::{CallError, EngineLink};
pub use supervisor::Snapshot;

/// What a rate-limit window's compare and swap found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowSwap {
    Swapped {
        version: i64,
    },
    /// Another writer got there first: its window, to merge and try again.
    Current {
        window: livegate_contract::WindowLog,
        version: i64,
    },
}

/// Why a database call did not succeed, as the HTTP layer needs to know it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbError {
    /// No engine, engine busy, or the call failed in transit: the caller gets 503.
    #[error("database unavailable")]
    Unavailable,
    /// A unique constraint: the field that clashed.
    #[error("conflict on {0}")]
    Conflict(String),
    /// A reference to nothing (a key's `team_id` naming no team): the field.
    #[error("{0} names nothing")]
    NoSuchReference(String),
    /// Postgres refused the statement's data (see `EngineError::Data`): retrying the same
    /// input fails the same way.
    #[error("the database refused the data: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// The link to the current engine, tagged with its generation so stale reports are ignored.
pub(crate) type CurrentLink = Arc<RwLock<Option<(u64, Arc<EngineLink>)>>>;

/// A cheap, cloneable handle: every call fails fast with `Unavailable` while the engine is away.
#[derive(Clone)]
pub struct Db {
    link: CurrentLink,
    snapshot: watch::Receiver<Snapshot>,
    trouble: mpsc::Sender<u64>,
    deadline: Duration,
}

impl Db {
    /// A handle on a given link, with a fixed snapshot and no supervisor behind it: the
    /// in-process router tests put a fake engine on the other end of a `tokio::io::duplex`
    /// (or no link at all, a database that is away). Trouble reports go nowhere.
    pub fn fixed(link: Option<EngineLink>, snapshot: Snapshot, deadline: Duration) -> Db {
        let (trouble, _) = mpsc::channel(1);
        Db {
            link: Arc::new(RwLock::new(link.map(|l| (1, Arc::new(l))))),
            snapshot: watch::channel(snapshot).1,
            trouble,
            deadline,
        }
    }

    /// The supervisor's state, from memory.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// The supervisor's state as it changes (a connect, a loss): for tasks that act at once.
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }

    async fn call(&self, request: Request) -> Result<Response, DbError> {
        self.call_within(request, self.deadline).await
    }

    /// A call with its own deadline. A deadline shorter than the default is the caller's
    /// impatience, not evidence against the connection, so it does not report trouble.
    async fn call_within(&self, request: Request, deadline: Duration) -> Result<Response, DbError> {
        let current = self.link.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some((generation, link)) = current else {
            return Err(DbError::Unavailable);
        };
        match link.call(request, deadline).await {
            Ok(r) => Ok(r),
            Err(CallError::Deadline) if deadline < self.deadline => Err(DbError::Unavailable),
            Err(e) if e.is_transport() => {
                // Full channel: a report for this generation is already queued.
                let _ = self.trouble.try_send(generation);
                Err(DbError::Unavailable)
            }
            Err(CallError::Busy | CallError::Engine(EngineError::Timeout)) => {
                Err(DbError::Unavailable)
            }
            Err(CallError::Engine(EngineError::Conflict(field))) => Err(DbError::Conflict(field)),
            Err(CallError::Engine(EngineError::NoSuchReference(field))) => {
                Err(DbError::NoSuchReference(field))
            }
            Err(CallError::Engine(EngineError::Data(reason))) => Err(DbError::Refused(reason)),
            Err(e) => Err(DbError::Failed(e.to_string())),
        }
    }

    pub async fn get_key(&self, token: &KeyHash) -> Result<Option<KeyRecord>, DbError> {
        self.get_key_within(token, self.deadline).await
    }

    /// The auth check's lookup: bounded below the filter's own timeout.
    pub async fn get_key_within(
        &self,
        token: &KeyHash,
        deadline: Duration,
    ) -> Result<Option<KeyRecord>, DbError> {
        match self
            .call_within(
                Request::GetKey {
                    token: token.clone(),
                },
                deadline,
            )
            .await?
        {
            Response::Key { record } => Ok(record.map(|r| *r)),
            other => Err(unexpected(other)),
        }
    }

    /// Inserts the key; returns it as stored (its version, its team's policy).
    pub async fn insert_key(&self, record: KeyRecord) -> Result<KeyRecord, DbError> {
        match self.call(Request::InsertKey { record }).await? {
            Response::Inserted { record } => Ok(*record),
            other => Err(unexpected(other)),
        }
    }

    pub async fn insert_team(&self, team: TeamRecord) -> Result<TeamRecord, DbError> {
        match self.call(Request::InsertTeam { team }).await? {
            Response::Team { team: Some(t), .. } => Ok(*t),
            other => Err(unexpected(other)),
        }
    }

    /// The team, and its keys when `with_keys`.
    pub async fn get_team(
        &self,
        team_id: &str,
        with_keys: bool,
    ) -> Result<Option<(TeamRecord, Vec<KeyRecord>)>, DbError> {
        let team_id = team_id.to_owned();
        match self.call(Request::GetTeam { team_id, with_keys }).await? {
            Response::Team { team, keys } => Ok(team.map(|t| (*t, keys))),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list_teams(
        &self,
        page: u32,
        size: u32,
    ) -> Result<(Vec<TeamRecord>, u64), DbError> {
        match self.call(Request::ListTeams { page, size }).await? {
            Response::Teams { teams, total } => Ok((teams, total)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn update_team(
        &self,
        team_id: &str,
        patch: TeamPatch,
    ) -> Result<Option<TeamWrite>, DbError> {
        let team_id = team_id.to_owned();
        match self.call(Request::UpdateTeam { team_id, patch }).await? {
            Response::TeamWritten { write } => Ok(write.map(|w| *w)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete_teams(&self, team_ids: Vec<String>) -> Result<TeamsDeleted, DbError> {
        match self.call(Request::DeleteTeams { team_ids }).await? {
            Response::TeamsDeleted { deleted } => Ok(deleted),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list_keys(&self, filter: KeyFilter) -> Result<KeyPage, DbError> {
        match self.call(Request::ListKeys { filter }).await? {
            Response::Page { page } => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    pub async fn update_key(
        &self,
        token: &KeyHash,
        patch: KeyPatch,
    ) -> Result<Option<KeyRecord>, DbError> {
        match self
            .call(Request::UpdateKey {
                token: token.clone(),
                patch,
            })
            .await?
        {
            Response::Key { record } => Ok(record.map(|r| *r)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete_keys(
        &self,
        tokens: Vec<KeyHash>,
        aliases: Vec<String>,
    ) -> Result<Vec<(KeyHash, i64)>, DbError> {
        match self.call(Request::DeleteKeys { tokens, aliases }).await? {
            Response::Deleted { tokens } => Ok(tokens),
            other => Err(unexpected(other)),
        }
    }

    /// The change log's reads take their own, shorter deadline: a slow read of it is no
    /// evidence against the connection (the heartbeat judges that).
    pub async fn changes_since(
        &self,
        after: i64,
        recent: Duration,
        limit: i64,
        deadline: Duration,
    ) -> Result<Vec<KeyChange>, DbError> {
        let recent_ms = i64::try_from(recent.as_millis()).unwrap_or(i64::MAX);
        let request = Request::ChangesSince {
            after,
            recent_ms,
            limit,
        };
        match self.call_within(request, deadline).await? {
            Response::Changes { changes } => Ok(changes),
            other => Err(unexpected(other)),
        }
    }

    pub async fn last_change(&self, deadline: Duration) -> Result<i64, DbError> {
        match self.call_within(Request::LastChange, deadline).await? {
            Response::LastChange { seq } => Ok(seq),
            other => Err(unexpected(other)),
        }
    }

    pub async fn prune_changes(&self, keep: Duration, deadline: Duration) -> Result<u64, DbError> {
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        match self
            .call_within(Request::PruneChanges { keep_ms }, deadline)
            .await?
        {
            Response::Pruned { rows } => Ok(rows),
            other => Err(unexpected(other)),
        }
    }
}

impl Db {
    /// The drain's statement (see [`Request::InsertSpend`]).
    pub async fn insert_spend(
        &self,
        rows: Vec<LedgerEntry>,
        database: Option<String>,
    ) -> Result<SpendInserted, DbError> {
        match self.call(Request::InsertSpend { rows, database }).await? {
            Response::SpendInserted { inserted } => Ok(inserted),
            other => Err(unexpected(other)),
        }
    }

    /// Keeps records the drain cannot write (see [`Request::DeadLetterSpend`]).
    pub async fn dead_letter_spend(
        &self,
        letters: Vec<DeadLetter>,
        database: Option<String>,
    ) -> Result<u64, DbError> {
        match self
            .call(Request::DeadLetterSpend { letters, database })
            .await?
        {
            Response::DeadLettered { rows } => Ok(rows),
            other => Err(unexpected(other)),
        }
    }

    pub async fn spend_logs(&self, filter: SpendFilter) -> Result<Vec<SpendRow>, DbError> {
        match self.call(Request::SpendLogs { filter }).await? {
            Response::SpendLogs { rows } => Ok(rows),
            other => Err(unexpected(other)),
        }
    }

    pub async fn spend_summary(&self, filter: SpendFilter) -> Result<Vec<SpendGroup>, DbError> {
        match self.call(Request::SpendSummary { filter }).await? {
            Response::SpendSummary { groups } => Ok(groups),
            other => Err(unexpected(other)),
        }
    }

    /// Resets the budgets due at `now` (see [`Request::ResetBudgets`]).
    pub async fn reset_budgets(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<BudgetsReset, DbError> {
        match self.call(Request::ResetBudgets { now }).await? {
            Response::BudgetsReset { reset } => Ok(reset),
            other => Err(unexpected(other)),
        }
    }

    /// One compare and swap of a rate-limit window (see [`Request::SwapRateWindow`]), with
    /// the auth check's deadline.
    pub async fn swap_rate_window(
        &self,
        scope: &str,
        expected: i64,
        window: livegate_contract::WindowLog,
        deadline: Duration,
    ) -> Result<WindowSwap, DbError> {
        let request = Request::SwapRateWindow {
            scope: scope.to_owned(),
            expected,
            window,
        };
        match self.call_within(request, deadline).await? {
            Response::RateWindowSwapped { version } => Ok(WindowSwap::Swapped { version }),
            Response::RateWindowCurrent { window, version } => {
                Ok(WindowSwap::Current { window, version })
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn global_spend(&self) -> Result<f64, DbError> {
        match self.call(Request::GlobalSpend).await? {
            Response::GlobalSpend { spend } => Ok(spend),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(r: Response) -> DbError {
    DbError::Failed(format!("engine answered with an unexpected {r:?}"))
}
