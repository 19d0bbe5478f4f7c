//! The spool's async face: every call that does file I/O runs on tokio's blocking pool.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Appended, Depth, Entry, Replay, Spool, SpoolConfig, SpoolError};

/// The spool for async callers: file I/O on the blocking pool, depth without waiting.
#[derive(Debug, Clone)]
pub struct SpoolHandle {
    spool: Arc<Mutex<Spool>>,
    records: Arc<AtomicU64>,
    file_bytes: Arc<AtomicU64>,
}

impl SpoolHandle {
    /// Opens and replays the spool on the blocking pool.
    pub async fn open(config: SpoolConfig) -> Result<(SpoolHandle, Replay), SpoolError> {
        let (spool, replay) = tokio::task::spawn_blocking(move || Spool::open(config))
            .await
            .map_err(|_| SpoolError::Worker)??;
        let depth = spool.depth();
        let handle = SpoolHandle {
            spool: Arc::new(Mutex::new(spool)),
            records: Arc::default(),
            file_bytes: Arc::default(),
        };
        handle.publish(depth);
        Ok((handle, replay))
    }

    /// [`Spool::append`]: returns once the new entries are synced.
    pub async fn append(&self, entries: Vec<(String, Vec<u8>)>) -> Result<Appended, SpoolError> {
        self.run(move |spool| spool.append(entries)).await
    }

    /// [`Spool::oldest`].
    pub async fn oldest(&self, limit: usize) -> Result<Vec<Entry>, SpoolError> {
        self.run(move |spool| Ok(spool.oldest(limit))).await
    }

    /// [`Spool::mark_drained`].
    pub async fn mark_drained(&self, through: u64) -> Result<(), SpoolError> {
        self.run(move |spool| spool.mark_drained(through)).await
    }

    /// The identity and the number of pending entries.
    pub async fn binding(&self) -> Result<(Option<String>, usize), SpoolError> {
        self.run(|spool| {
            let p = spool.pending();
            Ok((p.identity().map(str::to_owned), p.len()))
        })
        .await
    }

    /// [`Spool::set_identity`].
    pub async fn set_identity(&self, database: String) -> Result<(), SpoolError> {
        self.run(move |spool| spool.set_identity(&database)).await
    }

    /// [`Spool::unbind_if_empty`].
    pub async fn unbind_if_empty(&self) -> Result<(), SpoolError> {
        self.run(|spool| spool.unbind_if_empty()).await
    }

    /// [`Spool::set_aside`].
    pub async fn set_aside(&self, now_ms: u64) -> Result<(PathBuf, usize), SpoolError> {
        self.run(move |spool| spool.set_aside(now_ms)).await
    }

    /// The depth as of the last call that finished; never waits.
    pub fn depth(&self) -> Depth {
        Depth {
            records: self.records.load(Ordering::Relaxed) as usize,
            file_bytes: self.file_bytes.load(Ordering::Relaxed),
        }
    }

    fn publish(&self, depth: Depth) {
        self.records.store(depth.records as u64, Ordering::Relaxed);
        self.file_bytes.store(depth.file_bytes, Ordering::Relaxed);
    }

    async fn run<T, F>(&self, call: F) -> Result<T, SpoolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
    {
        let spool = Arc::clone(&self.spool);
        let (result, depth) = tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock().map_err(|_| SpoolError::Worker)?;
            let result = call(&mut spool);
            Ok::<_, SpoolError>((result, spool.depth()))
        })
        .await
        .map_err(|_| SpoolError::Worker)??;
        self.publish(depth);
        result
    }
}
