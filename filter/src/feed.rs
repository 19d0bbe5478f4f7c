//! The change feed inside Envoy: one worker at a time polls the control plane, the answer
//! is shared with every worker through proxy-wasm shared data, and each worker applies
//! to its own decision cache what it has not applied yet.
//!
//! The shared value keeps the newest `WINDOW` changes, deduplicated by number. A change
//! number may become visible after a higher one, so a worker applies, for each key, only
//! the newest change the window holds; applying one twice does nothing.

use crate::cache::{DecisionCache, Millis};
use livegate_contract::{ChangeFeed, KeyChange, KeyHash};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Shared-data key of the window of changes.
pub const SHARED_KEY: &str = "livegate.changes";
/// Shared-data key of the poll lease: the time until which one worker has the next poll.
pub const LEASE_KEY: &str = "livegate.changes.lease";
/// Changes kept in the shared window: more than any worker can fall behind in one tick.
pub const WINDOW: usize = 1024;
/// Answers larger than this are not read (a full answer of 10,000 changes is ~1.2 MB).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// What every worker of one Envoy shares: the window, the cursor for the next poll, and
/// an epoch that moves when the control plane said it could not tell what was missed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFeed {
    pub epoch: u64,
    pub cursor: Option<u64>,
    pub changes: Vec<KeyChange>,
}

impl SharedFeed {
    /// Absent or unreadable shared data is an empty feed (the next poll starts over).
    pub fn decode(bytes: Option<&[u8]>) -> SharedFeed {
        bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Folds one answer of the control plane in. The first answer is always a reset (there
    /// is no cursor yet); it starts the feed and forgets nothing: allows cached before it
    /// came from a control plane that was reading the change log already, and the answer
    /// repeats the changes of its last seconds.
    pub fn merge(&mut self, answer: ChangeFeed) {
        if answer.reset && self.cursor.is_none() {
            self.cursor = Some(answer.cursor);
        } else if answer.reset {
            self.epoch = self.epoch.wrapping_add(1);
            self.cursor = Some(answer.cursor);
        } else {
            self.cursor = Some(self.cursor.map_or(answer.cursor, |c| c.max(answer.cursor)));
        }
        let mut by_seq: BTreeMap<u64, KeyChange> = self
            .changes
            .drain(..)
            .chain(answer.changes)
            .map(|c| (c.seq, c))
            .collect();
        while by_seq.len() > WINDOW {
            by_seq.pop_first();
        }
        self.changes = by_seq.into_values().collect();
    }
}

/// One worker's progress through the shared window.
#[derive(Debug, Default)]
pub struct WorkerFeed {
    epoch: Option<u64>,
    applied: BTreeSet<u64>,
}

impl WorkerFeed {
    /// Applies the window to this worker's cache; returns how many changes took effect.
    pub fn apply(&mut self, shared: &SharedFeed, cache: &mut DecisionCache, now: Millis) -> usize {
        // A worker's first look forgets nothing: it started a tick ago.
        if self.epoch.is_some_and(|epoch| epoch != shared.epoch) {
            cache.forget_allows();
        }
        self.epoch = Some(shared.epoch);
        let newest: HashMap<&KeyHash, u64> =
            shared.changes.iter().fold(HashMap::new(), |mut m, c| {
                let seq = m.entry(&c.key_hash).or_insert(c.seq);
                *seq = (*seq).max(c.seq);
                m
            });
        let mut applied = 0;
        for change in &shared.changes {
            if !self.applied.insert(change.seq) {
                continue;
            }
            if newest.get(&change.key_hash) == Some(&change.seq) {
                cache.apply_change(change, now);
                applied += 1;
            }
        }
        let window: BTreeSet<u64> = shared.changes.iter().map(|c| c.seq).collect();
        self.applied.retain(|seq| window.contains(seq));
        applied
    }
}

/// Whether this worker may take the next poll: the lease is free or has run out.
pub fn lease_free(lease: Option<&[u8]>, now: Millis) -> bool {
    lease
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .is_none_or(|until| now >= until)
}

/// The lease value that holds the next poll until `until`.
pub fn lease_until(until: Millis) -> [u8; 8] {
    until.to_le_bytes()
}

/// The feed's path for the next poll.
pub fn poll_path(changes_path: &str, cursor: Option<u64>) -> String {
    match cursor {
        Some(c) => format!("{changes_path}?after={c}"),
        None => changes_path.to_string(),
    }
}

/// An answer to a poll, read by the host glue: only a 200 with the contract's body counts.
pub fn parse_answer(status: Option<&[u8]>, body: Option<&[u8]>) -> Option<ChangeFeed> {
    (status? == b"200").then_some(())?;
    serde_json::from_slice(body?).ok()
}

#[cfg(test)]
mod tests;
