//! Whose records the spool holds: it is bound to the database the engine reached, and a
//! spool bound to another database is set aside, never drained into this one.
//!
//! ```text
//! drain ─▶ bind(database reached) ─▶ spool unbound            ─▶ bound to it (adopted)
//!                                 ├─ bound to it               ─▶ drain
//!                                 ├─ bound elsewhere, empty    ─▶ bound to it
//!                                 └─ bound elsewhere, pending  ─▶ set aside (renamed,
//!                                       never deleted), fresh spool bound to it, warn,
//!                                       metric, readiness; `spool drain` takes it home
//! ```
//!
//! At start a spool with pending records bound to a database is replayed as usual, but
//! the intake refuses (503, the filter retries) until the first bind says whether the
//! database reached is that one: records acknowledged before then would otherwise land in
//! a spool that may be set aside. An unbound spool with pending records (written by a
//! version without identities) belongs to the first database it reaches, and an empty
//! one is unbound at start, so both take records at once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

use super::drain::DrainError;
use super::{Ledger, PendingSpend};
use crate::db::{Db, DbError};
use crate::spool::{self, SpoolHandle};

/// A spool file set aside for another database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetAside {
    pub file: String,
    /// The identity it carries (`None`: unreadable).
    pub database: Option<String>,
    /// Its pending records when it was set aside (or found at start).
    pub records: usize,
}

/// The ledger's binding state, shared by the intake, the drain, readiness and metrics.
#[derive(Debug, Default)]
pub struct Binding {
    /// False from a start with a bound, non-empty spool until the first bind.
    confirmed: AtomicBool,
    pub mismatches: AtomicU64,
    set_aside: Mutex<Vec<SetAside>>,
}

impl Binding {
    pub fn confirmed(&self) -> bool {
        self.confirmed.load(Relaxed)
    }

    pub fn set_aside(&self) -> Vec<SetAside> {
        self.set_aside
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn push(&self, s: SetAside) {
        self.set_aside
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(s);
    }
}

/// At start: unbinds an empty spool, and says whether the intake may take records before
/// the first bind; lists the set-aside spools next to it.
pub async fn at_start(spool: &SpoolHandle, path: &Path) -> Result<Binding, DrainError> {
    let (identity, pending) = spool.binding().await?;
    if identity.is_some() && pending == 0 {
        spool.unbind_if_empty().await?;
    }
    let binding = Binding {
        confirmed: AtomicBool::new(identity.is_none() || pending == 0),
        ..Binding::default()
    };
    let path = path.to_path_buf();
    let found = tokio::task::spawn_blocking(move || find_set_aside(&path))
        .await
        .unwrap_or_default();
    for s in found {
        tracing::warn!(
            file = %s.file,
            database = s.database.as_deref().unwrap_or("unknown"),
            records = s.records,
            "a spend spool set aside for another database is waiting: drain it with \
             `livegate-control-plane spool drain --file` against that database"
        );
        binding.push(s);
    }
    Ok(binding)
}

/// The set-aside spools next to `path` (`<name>.db-*`), read without change.
fn find_set_aside(path: &Path) -> Vec<SetAside> {
    let prefix = spool::set_aside_prefix(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let mut found: Vec<SetAside> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| {
            let pending = spool::inspect(&e.path()).ok();
            SetAside {
                file: e.path().display().to_string(),
                database: pending
                    .as_ref()
                    .and_then(|p| p.identity().map(str::to_owned)),
                records: pending.map_or(0, |p| p.len()),
            }
        })
        .collect();
    found.sort_by(|a, b| a.file.cmp(&b.file));
    found
}

/// Binds the spool to the database the engine reached (see the module), and returns its
/// identity; fails while no engine has connected.
pub async fn bind(ledger: &Ledger, db: &Db) -> Result<String, DrainError> {
    let Some(database) = db.snapshot().database else {
        return Err(DrainError::Db(DbError::Unavailable));
    };
    let (identity, pending) = ledger.spool.binding().await?;
    match identity {
        Some(id) if id == database => {}
        None => {
            if pending > 0 {
                tracing::info!(
                    %database,
                    records = pending,
                    "the spend spool carries no database identity (an older version wrote it, \
                     or it was written before the first connect): it belongs to this database"
                );
            }
            ledger.spool.set_identity(database.clone()).await?;
        }
        Some(_) if pending == 0 => ledger.spool.set_identity(database.clone()).await?,
        Some(other) => {
            let now_ms = crate::rate_limit::now_ms();
            let (file, records) = ledger.spool.set_aside(now_ms).await?;
            ledger.spool.set_identity(database.clone()).await?;
            *ledger.pending_spend() = PendingSpend::default();
            ledger.binding.mismatches.fetch_add(1, Relaxed);
            tracing::warn!(
                spool_database = %other,
                %database,
                file = %file.display(),
                records,
                "the spend spool belongs to another database: set aside, nothing of it drained \
                 here; drain it with `livegate-control-plane spool drain --file` against its own"
            );
            ledger.binding.push(SetAside {
                file: file.display().to_string(),
                database: Some(other),
                records,
            });
        }
    }
    ledger.binding.confirmed.store(true, Relaxed);
    Ok(database)
}
