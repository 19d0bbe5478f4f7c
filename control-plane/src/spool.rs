//! The spend spool: a local append-only file that holds every acknowledged spend record
//! until it is drained into Postgres, so neither a database outage nor a SIGKILL of the
//! control plane loses one.
//!
//! **Shape.** [`Spool`] is a synchronous structure over one file ([`frame`] gives its
//! bytes): `append` writes a batch as one checked frame and syncs it (`fdatasync`) before
//! it returns, so a caller acknowledges only what is on disk; `mark_drained` writes a
//! watermark frame ("every entry up to seq N is in Postgres") and syncs it; `open`
//! replays the file. It never touches the runtime: [`SpoolHandle`] is the async face,
//! running every call that does file I/O on tokio's blocking pool (`spawn_blocking`)
//! behind a `std::sync::Mutex` that no runtime thread ever takes, and publishing the depth
//! through atomics that readiness and metrics read without waiting for a sync.
//!
//! **Exactly once.** Each entry has an id (the request id) and a number (`seq`). The spool
//! holds an id once: an append of an id already pending is a duplicate, acknowledged
//! without a write, so a filter's retry after a lost answer counts nothing twice. Replay
//! yields each entry above the last watermark exactly once, in order. An id that was
//! drained and is sent again is spooled again; the drain into Postgres is idempotent on
//! the request id (`ON CONFLICT DO NOTHING`), which makes the ledger exact end to end.
//!
//! **Crashes.** A batch is one frame, written by one `write_all`: a crash in the middle
//! leaves a torn last frame (short, or with a checksum that fails), which replay cuts off
//! and reports; since the batch was not synced it was not acknowledged, and none of its
//! entries is replayed. A bad frame farther than one largest frame from the end cannot be
//! a torn write: replay refuses the file ([`SpoolError::Corrupt`]) rather than drop
//! acknowledged records. A write or sync that fails leaves the spool refusing every call
//! ([`SpoolError::Failed`]) until it is opened again, because after a failed `fsync` the
//! kernel's view of the file can no longer be trusted.
//!
//! **Bounds and compaction.** `max_records` bounds the pending entries and `max_bytes` the
//! file. When every entry is drained the file is truncated to its header; when drained
//! entries take more room than pending ones (and at least a megabyte), or an append would
//! pass `max_bytes`, the pending entries are rewritten to a new file that replaces the old
//! one by `rename` (synced, then the directory synced), so a crash leaves one or the
//! other, whole. An append past the bounds is refused with [`SpoolError::Full`]; what to
//! do then is the caller's policy. Pending entries are also held in memory (for the
//! drain and for duplicate checks), so `max_bytes` bounds memory as well as disk.
//!
//! **Whose records.** The spool carries the identity of the database its entries belong
//! to (an identity frame, kept at the file's head by truncation and compaction). The
//! ledger binds it ([`Spool::set_identity`]) and, when the database reached is another,
//! sets the file aside ([`Spool::set_aside`]: renamed with its identity, never deleted)
//! and starts a fresh one.

mod files;
pub mod frame;
mod handle;
mod pending;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

pub use files::{inspect, set_aside_prefix};
use files::{remove_if_present, set_aside_path, sync_dir, temp_path, write_new};
pub use frame::Entry;
use frame::{Frame, FRAME_HEADER, MAGIC, MAX_FRAME_BYTES};
pub use handle::SpoolHandle;
pub use pending::{scan, Pending, Scan};

/// The longest id an entry may have.
pub const MAX_ID_LEN: usize = 1024;

/// Drained entries are compacted away once they take this much room and more than the
/// pending ones.
const COMPACT_MIN_DEAD_BYTES: u64 = 1 << 20;

/// Where the spool lives and how large it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub path: PathBuf,
    /// The file's largest size, drained entries not yet compacted included.
    pub max_bytes: u64,
    /// The most pending (undrained) entries.
    pub max_records: usize,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{}: {op}: {source}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{}: not a spool file (its header is not {MAGIC:?})", .path.display())]
    NotASpool { path: PathBuf },
    #[error("{}: a damaged frame at byte {offset}, too far from the end to be a torn write; move the file aside to start empty", .path.display())]
    Corrupt { path: PathBuf, offset: u64 },
    #[error("the spool is full ({records} records, {bytes} bytes)")]
    Full { records: usize, bytes: u64 },
    #[error("a batch larger than {MAX_FRAME_BYTES} bytes")]
    BatchTooLarge,
    #[error("an id must be 1 to {MAX_ID_LEN} bytes")]
    BadId,
    #[error("an earlier write failed; the spool must be opened again")]
    Failed,
    #[error("the spool's worker thread failed")]
    Worker,
    #[error("a database identity must be 1 to 1024 bytes")]
    BadIdentity,
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    /// Entries waiting to be drained.
    pub pending: usize,
    /// Bytes of a torn last write, cut off.
    pub truncated_bytes: u64,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Appended {
    pub accepted: usize,
    pub duplicates: usize,
    /// The ids of the entries accepted (the others were pending already).
    pub accepted_ids: Vec<String>,
}

/// How much waits to be drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    pub records: usize,
    pub file_bytes: u64,
}

/// The spool (see the module documentation).
#[derive(Debug)]
pub struct Spool {
    config: SpoolConfig,
    file: File,
    /// The file's length: every byte before it is a checked frame.
    len: u64,
    state: Pending,
    failed: bool,
}

impl Spool {
    /// Opens the spool, creating it if absent, and replays it.
    pub fn open(config: SpoolConfig) -> Result<(Spool, Replay), SpoolError> {
        let path = config.path.clone();
        let io = |op: &'static str| {
            let path = path.clone();
            move |source| SpoolError::Io { path, op, source }
        };
        remove_if_present(&temp_path(&config.path)).map_err(io("remove the compaction file"))?;
        let existed = config.path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&config.path)
            .map_err(io("open"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read"))?;
        let mut spool = Spool {
            config,
            file,
            len: 0,
            state: Pending {
                next_seq: 1,
                ..Pending::default()
            },
            failed: false,
        };
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(&bytes) {
            // New, or torn while its header was written: nothing was ever acknowledged.
            let truncated_bytes = bytes.len() as u64;
            spool.file.set_len(0).map_err(io("truncate"))?;
            spool.file.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
            spool.write_synced(MAGIC)?;
            if !existed {
                sync_dir(&spool.config.path).map_err(io("sync the directory"))?;
            }
            let replay = Replay {
                pending: 0,
                truncated_bytes,
            };
            return Ok((spool, replay));
        }
        let Scan { pending, good_len } = scan(&bytes, &spool.config.path)?;
        spool.state = pending;
        let truncated_bytes = (bytes.len() - good_len) as u64;
        if truncated_bytes > 0 {
            spool
                .file
                .set_len(good_len as u64)
                .map_err(io("truncate"))?;
            spool.file.sync_data().map_err(io("sync"))?;
        }
        spool.len = good_len as u64;
        spool.file.seek(SeekFrom::End(0)).map_err(io("seek"))?;
        spool.compact_if_worth_it()?;
        let replay = Replay {
            pending: spool.state.len(),
            truncated_bytes,
        };
        Ok((spool, replay))
    }

    /// Appends the entries whose id is not pending yet, synced before it returns.
    pub fn append(&mut self, entries: Vec<(String, Vec<u8>)>) -> Result<Appended, SpoolError> {
        self.usable()?;
        let mut result = Appended::default();
        let mut fresh = Vec::new();
        let mut seen = HashSet::new();
        let mut entries_bytes = 0;
        for (id, data) in entries {
            if id.is_empty() || id.len() > MAX_ID_LEN {
                return Err(SpoolError::BadId);
            }
            if self.state.contains(&id) || !seen.insert(id.clone()) {
                result.duplicates += 1;
                continue;
            }
            entries_bytes += frame::entry_bytes(&id, &data);
            fresh.push((id, data));
        }
        if fresh.is_empty() {
            return Ok(result);
        }
        let frame_bytes = frame::batch_bytes(entries_bytes);
        if frame_bytes - FRAME_HEADER > MAX_FRAME_BYTES {
            return Err(SpoolError::BatchTooLarge);
        }
        self.make_room(fresh.len(), frame_bytes as u64)?;
        let first = self.state.next_seq;
        let batch: Vec<Entry> = fresh
            .into_iter()
            .zip(first..)
            .map(|((id, data), seq)| Entry { seq, id, data })
            .collect();
        self.write_synced(&frame::encode(&Frame::Batch(batch.clone())))?;
        result.accepted = batch.len();
        result.accepted_ids = batch.iter().map(|e| e.id.clone()).collect();
        self.state.next_seq = first + batch.len() as u64;
        for entry in batch {
            self.state.hold(entry);
        }
        Ok(result)
    }

    /// The oldest pending entries, at most `limit`, in order.
    pub fn oldest(&self, limit: usize) -> Vec<Entry> {
        self.state.entries().take(limit).cloned().collect()
    }

    /// Records that every entry up to `through` is drained, synced before it returns.
    pub fn mark_drained(&mut self, through: u64) -> Result<(), SpoolError> {
        self.usable()?;
        if self.state.entries.front().is_none_or(|e| e.seq > through) {
            return Ok(());
        }
        self.write_synced(&frame::encode(&Frame::Drained { through }))?;
        self.state.forget_through(through);
        self.compact_if_worth_it()
    }

    pub fn depth(&self) -> Depth {
        Depth {
            records: self.state.len(),
            file_bytes: self.len,
        }
    }

    /// What is pending, for the drain and for tests.
    pub fn pending(&self) -> &Pending {
        &self.state
    }

    fn usable(&self) -> Result<(), SpoolError> {
        if self.failed {
            return Err(SpoolError::Failed);
        }
        Ok(())
    }

    /// Checks the bounds for `records` more entries in a frame of `bytes`, compacting
    /// first if drained entries are in the way.
    fn make_room(&mut self, records: usize, bytes: u64) -> Result<(), SpoolError> {
        if self.state.len() + records > self.config.max_records {
            return Err(self.full());
        }
        if self.len + bytes > self.config.max_bytes && self.dead_bytes() > 0 {
            self.compact()?;
        }
        if self.len + bytes > self.config.max_bytes {
            return Err(self.full());
        }
        Ok(())
    }

    fn full(&self) -> SpoolError {
        SpoolError::Full {
            records: self.state.len(),
            bytes: self.len,
        }
    }

    /// Bytes of the file that compaction would free (an estimate: frame overheads).
    fn dead_bytes(&self) -> u64 {
        self.len
            .saturating_sub(self.header().len() as u64)
            .saturating_sub(self.state.live_bytes)
    }

    fn compact_if_worth_it(&mut self) -> Result<(), SpoolError> {
        let dead = self.dead_bytes();
        if self.state.is_empty() && self.len > self.header().len() as u64 {
            return self.truncate_to_header();
        }
        if dead >= COMPACT_MIN_DEAD_BYTES && dead > self.state.live_bytes {
            return self.compact();
        }
        Ok(())
    }

    fn truncate_to_header(&mut self) -> Result<(), SpoolError> {
        let header = self.header().len() as u64;
        if self.len <= header {
            return Ok(());
        }
        let result = self
            .file
            .set_len(header)
            .and_then(|()| self.file.sync_data())
            .and_then(|()| self.file.seek(SeekFrom::End(0)).map(drop));
        self.check(result, "truncate")?;
        self.len = header;
        Ok(())
    }

    /// MAGIC, then the identity frame when the spool is bound: what truncation and
    /// compaction keep.
    fn header(&self) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        if let Some(database) = &self.state.identity {
            bytes.extend(frame::encode(&Frame::Identity {
                database: database.clone(),
            }));
        }
        bytes
    }

    /// Binds the spool to `database`, synced before it returns. The identity frame goes
    /// at the head: the file is rewritten (compacted) with it, so that truncation keeps
    /// it and a reader sees it before any entry.
    pub fn set_identity(&mut self, database: &str) -> Result<(), SpoolError> {
        self.usable()?;
        if database.is_empty() || database.len() > MAX_ID_LEN {
            return Err(SpoolError::BadIdentity);
        }
        if self.state.identity.as_deref() == Some(database) {
            return Ok(());
        }
        self.state.identity = Some(database.to_string());
        self.compact()
    }

    /// Forgets the identity of a spool that holds nothing (its next records belong to the
    /// database it reaches next).
    pub fn unbind_if_empty(&mut self) -> Result<(), SpoolError> {
        self.usable()?;
        if !self.state.is_empty() || self.state.identity.is_none() {
            return Ok(());
        }
        self.state.identity = None;
        self.compact()
    }

    /// Renames the file to `<path>.db-<identity>.<ms>` (never deleted; synced) and opens a
    /// fresh, unbound spool at the path in its place. Returns the new name and the
    /// entries it holds.
    pub fn set_aside(&mut self, now_ms: u64) -> Result<(PathBuf, usize), SpoolError> {
        let path = self.config.path.clone();
        let identity = self.state.identity.as_deref().unwrap_or("unbound");
        let aside = set_aside_path(&path, identity, now_ms);
        let records = self.state.len();
        let moved = std::fs::rename(&path, &aside).and_then(|()| sync_dir(&path));
        self.check(moved, "set aside")?;
        let (fresh, _) = Spool::open(self.config.clone())?;
        *self = fresh;
        Ok((aside, records))
    }

    /// Rewrites the pending entries to a new file and puts it in place.
    fn compact(&mut self) -> Result<(), SpoolError> {
        let temp = temp_path(&self.config.path);
        let mut bytes = self.header();
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for entry in self.state.entries() {
            let size = frame::entry_bytes(&entry.id, &entry.data);
            if !batch.is_empty() && frame::batch_bytes(batch_bytes + size) > MAX_FRAME_BYTES {
                bytes.extend(frame::encode(&Frame::Batch(std::mem::take(&mut batch))));
                batch_bytes = 0;
            }
            batch.push(entry.clone());
            batch_bytes += size;
        }
        if !batch.is_empty() {
            bytes.extend(frame::encode(&Frame::Batch(batch)));
        }
        let written = write_new(&temp, &bytes)
            .and_then(|()| std::fs::rename(&temp, &self.config.path))
            .and_then(|()| sync_dir(&self.config.path))
            .and_then(|()| OpenOptions::new().append(true).open(&self.config.path));
        let file = self.check(written, "compact")?;
        self.file = file;
        self.len = bytes.len() as u64;
        Ok(())
    }

    /// Appends bytes and syncs them; on failure, cuts the file back and stops the spool.
    fn write_synced(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let result = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        if result.is_err() {
            // Best effort: a later open cuts a torn tail anyway.
            let _ = self.file.set_len(self.len);
        }
        self.check(result, "append")?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn check<T>(&mut self, result: std::io::Result<T>, op: &'static str) -> Result<T, SpoolError> {
        result.map_err(|source| {
            self.failed = true;
            SpoolError::Io {
                path: self.config.path.clone(),
                op,
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests;
