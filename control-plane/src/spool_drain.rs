//! `livegate-control-plane spool drain --file F`: drains a spend spool that was set aside
//! (or any spool file) into the database of `DATABASE_URL`, only if it is the spool's own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::db::state::DbStatus;
use crate::db::supervisor::{self, SupervisorConfig};
use crate::db::{Db, DbCounters};
use crate::ledger::drain_step;
use crate::spool::{self, SpoolConfig, SpoolHandle};

/// Records drained per statement.
const BATCH: usize = 100;

/// Why the command stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpoolDrainError {
    #[error("--file {0}: no such file")]
    NoFile(PathBuf),
    #[error("--file {file}: {error}")]
    Spool { file: PathBuf, error: String },
    #[error("the database did not connect within {0:?}: {1}")]
    NotConnected(Duration, String),
    #[error(
        "--file {file} belongs to database {spool}, but --database-url (DATABASE_URL) reached \
         {reached}: refused, nothing drained"
    )]
    OtherDatabase {
        file: PathBuf,
        spool: String,
        reached: String,
    },
    #[error("draining stopped after {drained} records: {error}")]
    Drain { drained: usize, error: String },
}

/// What was drained.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub entries: usize,
    pub inserted: u64,
    pub dead_letters: usize,
}

/// Connects through a supervised engine, checks the identity, drains everything.
pub async fn run(
    file: PathBuf,
    supervisor: SupervisorConfig,
    connect_within: Duration,
) -> Result<Drained, SpoolDrainError> {
    if !tokio::fs::try_exists(&file).await.unwrap_or(false) {
        return Err(SpoolDrainError::NoFile(file));
    }
    let stop = CancellationToken::new();
    let counters = Arc::new(DbCounters::default());
    let (db, sup) = supervisor::start(supervisor, counters, stop.clone()).map_err(|e| {
        SpoolDrainError::NotConnected(connect_within, format!("the engine cannot start: {e}"))
    })?;
    let result = drain_into(&file, &db, connect_within).await;
    stop.cancel();
    let _ = sup.task.await;
    result
}

async fn drain_into(
    file: &std::path::Path,
    db: &Db,
    connect_within: Duration,
) -> Result<Drained, SpoolDrainError> {
    let reached = connected(db, connect_within).await?;
    let spool_err = |e: spool::SpoolError| SpoolDrainError::Spool {
        file: file.to_path_buf(),
        error: e.to_string(),
    };
    let config = SpoolConfig {
        path: file.to_path_buf(),
        max_bytes: u64::MAX,
        max_records: usize::MAX,
    };
    let (spool, _) = SpoolHandle::open(config).await.map_err(spool_err)?;
    let (identity, records) = spool.binding().await.map_err(spool_err)?;
    match identity {
        Some(id) if id != reached => {
            return Err(SpoolDrainError::OtherDatabase {
                file: file.to_path_buf(),
                spool: id,
                reached,
            })
        }
        Some(_) => {}
        // Written by a version without identities: it belongs to the first database it
        // reaches, this one.
        None => spool
            .set_identity(reached.clone())
            .await
            .map_err(spool_err)?,
    }
    tracing::info!(file = %file.display(), database = %reached, records, "draining the spool");
    let mut total = Drained::default();
    loop {
        let step =
            drain_step(&spool, db, &reached, BATCH)
                .await
                .map_err(|e| SpoolDrainError::Drain {
                    drained: total.entries,
                    error: e.to_string(),
                })?;
        if step.entries == 0 {
            return Ok(total);
        }
        total.entries += step.entries;
        total.inserted += step.written.inserted;
        total.dead_letters += step.dead_letters;
    }
}

/// Waits for the engine's first connect; returns the database's identity.
async fn connected(db: &Db, within: Duration) -> Result<String, SpoolDrainError> {
    let started = Instant::now();
    loop {
        let snap = db.snapshot();
        if let (DbStatus::Connected, Some(database)) = (snap.db, snap.database.clone()) {
            return Ok(database);
        }
        if started.elapsed() >= within {
            let why = snap.last_error.unwrap_or_else(|| "no answer".into());
            return Err(SpoolDrainError::NotConnected(within, why));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
