//! The drain: the spool into Postgres, a batch at a time, into the spool's own database
//! only (see [`super::bind`]); also what `livegate-control-plane spool drain` runs.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::bind::bind;
use super::isolate::{write_isolating, SpendWriter, Written};
use super::{drain_batch, DrainBatch, Ledger, LedgerEntry};
use crate::db::{Db, DbError, DeadLetter, SpendInserted};
use crate::key_cache::KeyCache;
use crate::model::keys::KeyHash;
use crate::spool::{SpoolError, SpoolHandle};

/// How the drain paces itself.
#[derive(Debug, Clone, Copy)]
pub struct DrainPace {
    /// The most records per statement.
    pub batch: usize,
    /// The wait after a failure.
    pub retry: Duration,
    /// The wait after new records woke an idle drain, so that the records of the next
    /// intakes join them in one statement (zero: drain at once).
    pub linger: Duration,
}

/// Drains the spool into Postgres until `stop`: a batch at a time; when the spool is
/// drained, waits for new records, then `linger` for more to join them; `retry` after a
/// failure. Never blocks the runtime: the spool's calls run on the blocking pool and the
/// database's are IPC to the engine.
pub async fn drain(
    ledger: Ledger,
    db: Db,
    cache: Arc<KeyCache>,
    pace: DrainPace,
    stop: CancellationToken,
) {
    // The reason of the failure in progress: logged at warn when it starts or changes,
    // at debug while it repeats, so an outage says so once per reason, not per retry.
    let mut failing: Option<String> = None;
    // A connect wakes the drain at once: the spool is bound (or set aside) before budget
    // checks of the database reached can count its pending spend for long.
    let mut connects = db.watch();
    loop {
        if stop.is_cancelled() {
            return;
        }
        let result = drain_once(&ledger, &db, &cache, pace.batch).await;
        let waited = match result {
            Ok(n) => {
                if failing.take().is_some() {
                    tracing::info!("spend drain resumed");
                }
                // A short batch emptied the spool (records since then have left a wake-up).
                if n < pace.batch {
                    Wait::ForRecords
                } else {
                    Wait::No
                }
            }
            Err(e) => {
                ledger.counters.drain_failures.fetch_add(1, Relaxed);
                let reason = e.to_string();
                if failing.as_deref() == Some(reason.as_str()) {
                    tracing::debug!(error = %reason, "spend drain deferred");
                } else {
                    tracing::warn!(
                        error = %reason,
                        pending = ledger.spool.depth().records,
                        "spend drain failed; the records stay in the spool and are retried"
                    );
                    failing = Some(reason);
                }
                Wait::Retry
            }
        };
        let sleep = match waited {
            Wait::No => continue,
            Wait::ForRecords => tokio::time::sleep(pace.retry.max(Duration::from_secs(5))),
            Wait::Retry => tokio::time::sleep(pace.retry),
        };
        let woken = tokio::select! {
            _ = stop.cancelled() => return,
            _ = ledger.wake.notified(), if matches!(waited, Wait::ForRecords) => true,
            Ok(()) = connects.changed() => false,
            _ = sleep => false,
        };
        if woken && !pace.linger.is_zero() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pace.linger) => {}
            }
        }
    }
}

enum Wait {
    No,
    ForRecords,
    Retry,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// The database, for the rows of a spool bound to `database`.
struct IntoDatabase<'a> {
    db: &'a Db,
    database: &'a str,
}

impl SpendWriter for IntoDatabase<'_> {
    async fn insert(&self, rows: Vec<LedgerEntry>) -> Result<SpendInserted, DbError> {
        self.db
            .insert_spend(rows, Some(self.database.to_owned()))
            .await
    }
}

/// What one [`drain_step`] did.
#[derive(Debug, Default)]
pub struct Step {
    /// Spool entries done (written, already there, or dead letters).
    pub entries: usize,
    pub written: Written,
    pub dead_letters: usize,
}

/// One batch of `spool` into `database` (which the caller has checked is the spool's):
/// read, insert (isolating what Postgres refuses), keep the refused and the unreadable as
/// dead letters, then mark drained.
pub async fn drain_step(
    spool: &SpoolHandle,
    db: &Db,
    database: &str,
    batch: usize,
) -> Result<Step, DrainError> {
    let entries = spool.oldest(batch).await?;
    let DrainBatch {
        rows,
        through,
        unreadable,
    } = drain_batch(&entries);
    let Some(through) = through else {
        return Ok(Step::default());
    };
    let written = write_isolating(&IntoDatabase { db, database }, rows).await?;
    let mut letters: Vec<DeadLetter> = unreadable
        .into_iter()
        .map(|(request_id, data)| DeadLetter {
            request_id,
            data,
            reason: "not a spend record this control plane can read".into(),
        })
        .collect();
    for (row, reason) in &written.refused {
        let id = &row.record.request_id;
        let spooled = entries.iter().find(|e| &e.id == id).map(|e| e.data.clone());
        letters.push(DeadLetter {
            request_id: id.clone(),
            data: spooled.unwrap_or_default(),
            reason: reason.clone(),
        });
    }
    if !letters.is_empty() {
        db.dead_letter_spend(letters.clone(), Some(database.to_owned()))
            .await?;
        for letter in &letters {
            tracing::warn!(
                request_id = %letter.request_id.escape_debug(),
                reason = %letter.reason,
                "a spooled spend record cannot be written: kept in livegate_spend_dead_letters, \
                 the rest of its batch drained"
            );
        }
    }
    spool.mark_drained(through).await?;
    Ok(Step {
        entries: entries.len(),
        written,
        dead_letters: letters.len(),
    })
}

/// One batch of the ledger's spool, once it is bound to the database reached; then the
/// counters, the key cache's spend and the pending spend. Returns the entries done.
async fn drain_once(
    ledger: &Ledger,
    db: &Db,
    cache: &KeyCache,
    batch: usize,
) -> Result<usize, DrainError> {
    let database = bind(ledger, db).await?;
    let Step {
        entries,
        written,
        dead_letters,
    } = drain_step(&ledger.spool, db, &database, batch).await?;
    if entries == 0 {
        return Ok(0);
    }
    let Written {
        rows,
        inserted,
        unpriced,
        duplicates,
        refused,
    } = written;
    let by = spend_by_key_and_team(&rows, &duplicates);
    let c = &ledger.counters;
    c.dead_letters.fetch_add(dead_letters as u64, Relaxed);
    c.count_inserted(&rows, &duplicates);
    c.drained.fetch_add(inserted, Relaxed);
    c.duplicates
        .fetch_add((rows.len() as u64).saturating_sub(inserted), Relaxed);
    c.unpriced.fetch_add(unpriced, Relaxed);
    cache.add_spend(&by.0, &by.1);
    let mut pending = ledger.pending_spend();
    for row in rows.iter().chain(refused.iter().map(|(row, _)| row)) {
        pending.remove(row);
    }
    drop(pending);
    ledger.counters.at_bound.store(false, Relaxed);
    Ok(entries)
}

/// The cost of the rows a drain inserted (not those Postgres held already), by key and team.
fn spend_by_key_and_team(
    rows: &[LedgerEntry],
    duplicates: &[String],
) -> (HashMap<KeyHash, f64>, HashMap<String, f64>) {
    let mut keys: HashMap<KeyHash, f64> = HashMap::new();
    let mut teams: HashMap<String, f64> = HashMap::new();
    for row in rows
        .iter()
        .filter(|r| !duplicates.contains(&r.record.request_id))
    {
        *keys.entry(row.record.key_hash.clone()).or_default() += row.cost;
        if let Some(team) = &row.record.team_id {
            *teams.entry(team.clone()).or_default() += row.cost;
        }
    }
    (keys, teams)
}
