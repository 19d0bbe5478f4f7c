//! Key changes across the fleet: a task reads the change log in Postgres on a short tick,
//! so this replica's cache holds what its peers wrote within a second, and keeps the
//! recent changes for the filters' change feed (`GET /v1/auth/changes`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use livegate_contract::{ChangeFeed, KeyChange as FeedChange, KeyStatus};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::key_cache::{KeyCache, KeyState};
use crate::model::KeyChange;

/// How the change log is read. Defaults are documented in docs/operations.md.
#[derive(Debug, Clone, Copy)]
pub struct FeedConfig {
    /// How often the change log is read: the bulk of the fleet-wide delay of a revocation.
    pub poll_interval: Duration,
    /// Changes this recent are read (and served to filters) again: a change number is
    /// taken before its statement commits, so a lower number can become visible after a
    /// higher one. Above the statement timeout, so no commit can be later than this.
    pub recent: Duration,
    /// Changes kept in memory for the filters' feed; a filter further behind is reset.
    pub ring_capacity: usize,
    /// Rows read per poll.
    pub batch: i64,
    /// Deadline of each read: shorter than the engine's, so a slow read is not trouble.
    pub deadline: Duration,
    /// Change-log rows older than this are deleted, about once per `prune_every`.
    pub keep: Duration,
    pub prune_every: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            poll_interval: Duration::from_millis(250),
            recent: Duration::from_secs(10),
            ring_capacity: 10_000,
            batch: 1_000,
            deadline: Duration::from_secs(1),
            keep: Duration::from_secs(24 * 3600),
            prune_every: Duration::from_secs(600),
        }
    }
}

/// The changes this replica has applied, by number, for the filters' feed.
#[derive(Default)]
pub struct ChangeRing {
    inner: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    changes: BTreeMap<u64, (FeedChange, Instant)>,
    /// Every change numbered above this has been seen; `None` until the log was first read.
    complete_above: Option<u64>,
    cursor: u64,
}

impl ChangeRing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log's last number when this replica first read it: its history starts there.
    pub fn start_at(&self, seq: u64) {
        let mut ring = self.lock();
        if ring.complete_above.is_none() {
            ring.complete_above = Some(seq);
            ring.cursor = ring.cursor.max(seq);
        }
    }

    /// Keeps one change (again is harmless); the oldest go beyond `capacity`.
    pub fn record(&self, change: FeedChange, now: Instant, capacity: usize) {
        let mut ring = self.lock();
        ring.cursor = ring.cursor.max(change.seq);
        ring.changes.entry(change.seq).or_insert((change, now));
        while ring.changes.len() > capacity.max(1) {
            if let Some((seq, _)) = ring.changes.pop_first() {
                ring.complete_above = ring.complete_above.map(|c| c.max(seq));
            }
        }
    }

    /// The feed after `after`: the changes numbered above it and those applied within
    /// `recent`. `None` until this replica has read the log once (it cannot answer yet).
    pub fn since(&self, after: Option<u64>, recent: Duration, now: Instant) -> Option<ChangeFeed> {
        let ring = self.lock();
        let complete_above = ring.complete_above?;
        let reset = after.is_none_or(|a| a < complete_above);
        let floor = if reset { u64::MAX } else { after.unwrap_or(0) };
        let changes = ring
            .changes
            .iter()
            .filter(|(seq, (_, at))| **seq > floor || now.saturating_duration_since(*at) < recent)
            .map(|(_, (change, _))| change.clone())
            .collect();
        Some(ChangeFeed {
            cursor: ring.cursor,
            reset,
            changes,
        })
    }
}

/// What a change-log row means for the filters.
pub fn feed_change(change: &KeyChange) -> Option<FeedChange> {
    let status = match &change.record {
        None => KeyStatus::Deleted,
        Some(r) if r.blocked => KeyStatus::Blocked,
        Some(r) if r.team.blocked => KeyStatus::TeamBlocked,
        Some(_) => KeyStatus::Active,
    };
    Some(FeedChange {
        seq: u64::try_from(change.seq).ok()?,
        key_hash: change.token.clone(),
        status,
    })
}

/// Applies one change to the cache (versioned: never over a newer state) and the ring.
pub fn apply(cache: &KeyCache, ring: &ChangeRing, change: KeyChange, cfg: &FeedConfig) {
    let now = Instant::now();
    if let Some(feed) = feed_change(&change) {
        ring.record(feed, now, cfg.ring_capacity);
    }
    let state = match change.record {
        Some(record) => KeyState::Present(record),
        None => KeyState::Deleted,
    };
    cache.put_change(&change.token, state, change.seq, now);
}

/// How often a replica logs the tombstones of old secrets whose grace has ended.
const GRACE_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Reads the change log until `stop`. While the database is away it reads nothing and
/// the cache serves what it holds; it catches up from its last number when it returns.
pub async fn run(
    db: Db,
    cache: Arc<KeyCache>,
    ring: Arc<ChangeRing>,
    cfg: FeedConfig,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.poll_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Option<i64> = None;
    let mut pruned_at = Instant::now();
    let mut graces_at = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let after = match last {
            Some(seq) => seq,
            None => match db.last_change(cfg.deadline).await {
                Ok(seq) => {
                    ring.start_at(u64::try_from(seq).unwrap_or(0));
                    last = Some(seq);
                    seq
                }
                Err(_) => continue,
            },
        };
        // Taken before the read: what it returns is complete as of no later than this.
        let asked_at = Instant::now();
        if let Ok(changes) = db
            .changes_since(after, cfg.recent, cfg.batch, cfg.deadline)
            .await
        {
            // New changes come first, then the recent ones read again.
            let new = changes.iter().filter(|c| c.seq > after).count();
            let caught_up = i64::try_from(new).is_ok_and(|n| n < cfg.batch);
            for change in changes {
                last = last.max(Some(change.seq));
                apply(&cache, &ring, change, &cfg);
            }
            // A full batch may have left changes unread: the log vouches once it is read
            // to its end.
            if caught_up {
                cache.heard_change_log(asked_at);
            }
        }
        // A rotated key's old secret whose grace has ended: its tombstone, logged once by
        // whichever replica gets there first, reaches every cache and filter like a delete
        // (each already refuses it by its expiry, which its record carries).
        if graces_at.elapsed() >= GRACE_SWEEP_EVERY {
            graces_at = Instant::now();
            if let Ok(ended) = db.end_graces(cfg.deadline).await {
                if ended > 0 {
                    tracing::info!(ended, "old secrets of rotated keys revoked");
                }
            }
        }
        if pruned_at.elapsed() >= cfg.prune_every {
            pruned_at = Instant::now();
            if let Ok(rows) = db.prune_changes(cfg.keep, cfg.deadline).await {
                tracing::debug!(rows, "old key changes pruned");
            }
        }
    }
}

#[cfg(test)]
mod tests;
