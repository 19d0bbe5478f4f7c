//! The database room: a handle the HTTP layer calls, backed by a supervised engine subprocess.

mod counters;
pub mod ipc;
pub mod process;
mod rotation;
mod spawner;
pub mod state;
pub mod supervisor;
/// The messages between supervisor and engine live at the crate root, shared by both sides.
pub use crate::protocol;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::model::keys::KeyHash;
use crate::model::LedgerEntry;
use crate::model::{
    KeyChange, KeyFilter, KeyPage, KeyPatch, KeyRecord, TeamPatch, TeamRecord, TeamWrite,
    TeamsDeleted,
};
pub use crate::protocol::{
    BudgetsReset, DeadLetter, SpendFilter, SpendGroup, SpendInserted, WindowSwap,
};
use crate::protocol::{
    ChangesSince, DeadLetterSpend, DeleteKeys, DeleteTeams, EngineError, GetKey, GetTeam,
    GlobalSpend, InsertKey, InsertSpend, InsertTeam, KeyModelSpend, LastChange, ListKeys,
    ListTeams, Op, PruneChanges, ResetBudgets, SpendLogs, SpendSummary, SwapRateWindow, UpdateKey,
    UpdateTeam,
};
pub use counters::DbCounters;
use ipc::{CallError, EngineLink};
pub use rotation::Regenerate;
pub use supervisor::Snapshot;

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

    /// Runs one operation with the default deadline: the call and the typed decode of its
    /// reply, for every operation (see `protocol::ops`).
    pub async fn run<O: Op>(&self, op: O) -> Result<O::Reply, DbError> {
        self.run_within(op, self.deadline).await
    }

    /// An operation with its own deadline. A deadline shorter than the default is the
    /// caller's impatience, not evidence against the connection, so it does not report
    /// trouble.
    pub async fn run_within<O: Op>(&self, op: O, deadline: Duration) -> Result<O::Reply, DbError> {
        let current = self.link.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some((generation, link)) = current else {
            return Err(DbError::Unavailable);
        };
        match link.run(op, deadline).await {
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
}

/// The operations by name, for callers: each is `run` with its request built.
impl Db {
    pub async fn get_key(&self, token: &KeyHash) -> Result<Option<KeyRecord>, DbError> {
        self.get_key_within(token, self.deadline).await
    }

    /// The auth check's lookup: bounded below the filter's own timeout.
    pub async fn get_key_within(
        &self,
        token: &KeyHash,
        deadline: Duration,
    ) -> Result<Option<KeyRecord>, DbError> {
        let token = token.clone();
        self.run_within(GetKey { token }, deadline).await
    }

    /// Inserts the key; returns it as stored (its version, its team's policy).
    pub async fn insert_key(&self, record: KeyRecord) -> Result<KeyRecord, DbError> {
        self.run(InsertKey { record }).await
    }

    pub async fn insert_team(&self, team: TeamRecord) -> Result<TeamRecord, DbError> {
        self.run(InsertTeam { team }).await
    }

    /// The team, and its keys when `with_keys`.
    pub async fn get_team(
        &self,
        team_id: &str,
        with_keys: bool,
    ) -> Result<Option<(TeamRecord, Vec<KeyRecord>)>, DbError> {
        let team_id = team_id.to_owned();
        let found = self.run(GetTeam { team_id, with_keys }).await?;
        Ok(found.map(|t| (t.team, t.keys)))
    }

    pub async fn list_teams(
        &self,
        page: u32,
        size: u32,
    ) -> Result<(Vec<TeamRecord>, u64), DbError> {
        let list = self.run(ListTeams { page, size }).await?;
        Ok((list.teams, list.total))
    }

    pub async fn update_team(
        &self,
        team_id: &str,
        patch: TeamPatch,
    ) -> Result<Option<TeamWrite>, DbError> {
        let team_id = team_id.to_owned();
        self.run(UpdateTeam { team_id, patch }).await
    }

    pub async fn delete_teams(&self, team_ids: Vec<String>) -> Result<TeamsDeleted, DbError> {
        self.run(DeleteTeams { team_ids }).await
    }

    pub async fn list_keys(&self, filter: KeyFilter) -> Result<KeyPage, DbError> {
        self.run(ListKeys { filter }).await
    }

    pub async fn update_key(
        &self,
        token: &KeyHash,
        patch: KeyPatch,
    ) -> Result<Option<KeyRecord>, DbError> {
        let token = token.clone();
        self.run(UpdateKey { token, patch }).await
    }

    pub async fn delete_keys(
        &self,
        tokens: Vec<KeyHash>,
        aliases: Vec<String>,
    ) -> Result<Vec<(KeyHash, i64)>, DbError> {
        self.run(DeleteKeys { tokens, aliases }).await
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
        let op = ChangesSince {
            after,
            recent_ms,
            limit,
        };
        self.run_within(op, deadline).await
    }

    pub async fn last_change(&self, deadline: Duration) -> Result<i64, DbError> {
        self.run_within(LastChange {}, deadline).await
    }

    pub async fn prune_changes(&self, keep: Duration, deadline: Duration) -> Result<u64, DbError> {
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        self.run_within(PruneChanges { keep_ms }, deadline).await
    }

    /// The drain's statement (see [`InsertSpend`]).
    pub async fn insert_spend(
        &self,
        rows: Vec<LedgerEntry>,
        database: Option<String>,
    ) -> Result<SpendInserted, DbError> {
        self.run(InsertSpend { rows, database }).await
    }

    /// Keeps records the drain cannot write (see [`DeadLetterSpend`]).
    pub async fn dead_letter_spend(
        &self,
        letters: Vec<DeadLetter>,
        database: Option<String>,
    ) -> Result<u64, DbError> {
        self.run(DeadLetterSpend { letters, database }).await
    }

    pub async fn spend_logs(&self, filter: SpendFilter) -> Result<Vec<LedgerEntry>, DbError> {
        self.run(SpendLogs { filter }).await
    }

    pub async fn spend_summary(&self, filter: SpendFilter) -> Result<Vec<SpendGroup>, DbError> {
        self.run(SpendSummary { filter }).await
    }

    /// Resets the budgets due at `now` (see [`ResetBudgets`]).
    pub async fn reset_budgets(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<BudgetsReset, DbError> {
        self.run(ResetBudgets { now }).await
    }

    /// One compare and swap of a rate-limit window (see [`SwapRateWindow`]), with the auth
    /// check's deadline.
    pub async fn swap_rate_window(
        &self,
        scope: &str,
        expected: i64,
        window: livegate_contract::WindowLog,
        deadline: Duration,
    ) -> Result<WindowSwap, DbError> {
        let scope = scope.to_owned();
        let op = SwapRateWindow {
            scope,
            expected,
            window,
        };
        self.run_within(op, deadline).await
    }

    pub async fn global_spend(&self) -> Result<f64, DbError> {
        self.run(GlobalSpend {}).await
    }

    /// A key's drained spend for one model since `since`, within `deadline`.
    pub async fn key_model_spend_within(
        &self,
        token: &KeyHash,
        model: &str,
        since: chrono::DateTime<chrono::Utc>,
        deadline: Duration,
    ) -> Result<f64, DbError> {
        let op = KeyModelSpend {
            token: token.clone(),
            model: model.to_owned(),
            since,
        };
        self.run_within(op, deadline).await
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio_util::codec::{FramedRead, FramedWrite};

    use super::*;
    use crate::protocol::{codec, encode, Answer, RequestFrame, ResponseFrame};

    /// A `Db` over an engine that answers every request with `answer(request)`.
    fn db_answering(answer: fn(&RequestFrame) -> Result<Answer, EngineError>) -> Db {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let (r, w) = tokio::io::split(theirs);
            let (mut rd, mut wr) = (FramedRead::new(r, codec()), FramedWrite::new(w, codec()));
            while let Some(Ok(b)) = rd.next().await {
                let f: RequestFrame = serde_json::from_slice(&b).unwrap();
                let out = ResponseFrame {
                    id: f.id,
                    result: answer(&f),
                };
                wr.send(encode(&out).unwrap()).await.unwrap();
            }
        });
        let (r, w) = tokio::io::split(ours);
        let link = EngineLink::start(r, w, 8);
        Db::fixed(Some(link), Snapshot::default(), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_reply_to_another_operation_fails_the_call_and_is_not_unavailability() {
        let db = db_answering(|_| LastChange {}.answer(&7));
        let got = db.get_key(&KeyHash::of_raw("sk-x")).await;
        match got {
            Err(DbError::Failed(m)) => assert!(m.contains("GetKey"), "{m}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        // The same engine's right answers still come through.
        assert_eq!(db.last_change(Duration::from_secs(5)).await, Ok(7));
    }

    #[tokio::test]
    async fn engine_errors_keep_their_mapping() {
        let db = db_answering(|f| match f.request.name() {
            "InsertTeam" => Err(EngineError::Conflict("team_id".into())),
            "DeleteTeams" => Err(EngineError::NoSuchReference("team_id".into())),
            "GlobalSpend" => Err(EngineError::Data("bad".into())),
            "LastChange" => Err(EngineError::Timeout),
            _ => Err(EngineError::Query("boom".into())),
        });
        let team: TeamRecord = serde_json::from_value(serde_json::json!({
            "team_id": "t", "models": [], "metadata": {}, "blocked": false, "spend": 0.0,
            "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-01-02T03:04:05Z"
        }))
        .unwrap();
        assert_eq!(
            db.insert_team(team).await.unwrap_err(),
            DbError::Conflict("team_id".into())
        );
        assert_eq!(
            db.delete_teams(vec!["t".into()]).await.unwrap_err(),
            DbError::NoSuchReference("team_id".into())
        );
        assert_eq!(
            db.global_spend().await.unwrap_err(),
            DbError::Refused("bad".into())
        );
        assert_eq!(
            db.last_change(Duration::from_secs(5)).await.unwrap_err(),
            DbError::Unavailable
        );
        assert!(matches!(
            db.list_teams(1, 10).await.unwrap_err(),
            DbError::Failed(_)
        ));
    }
}
