//! The change feed inside Envoy: one worker at a time polls the control plane, the answer
//! is shared with every worker through proxy-wasm shared data, and each worker applies
//! to its own decision cache what it has not applied yet.
//!
//! The shared value keeps the newest `WINDOW` changes, deduplicated by number. A change
//! number may become visible after a higher one, so a worker applies, for each key, only
//! the newest change the window holds; applying one twice does nothing.
//!
//! A change can leave the window before a worker saw it (more changes in one answer, or
//! between two of a slow worker's looks, than the window holds). Every change is tagged
//! with the merge that brought it in, and the window remembers the newest merge whose
//! changes it dropped: a worker that last looked before that merge has missed changes it
//! cannot name, so it forgets its allows, as at a reset. Merge numbers, not change
//! numbers, tell this: change numbers come from a database sequence, with holes and out
//! of order, so a hole in them proves nothing and a late one can drop out unseen.
//! The control plane repeats its recent changes in every answer (for the late ones): the
//! numbers already dropped are remembered as ranges, so a repeat is not news and one
//! burst costs every worker one reset, not one per answer.

use crate::cache::DecisionCache;
use crate::time::Millis;
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
    /// Answers merged so far: the window's clock.
    #[serde(default)]
    pub merges: u64,
    /// The newest merge that brought a change the window has since dropped (0: none).
    #[serde(default)]
    pub dropped_from: u64,
    /// Change numbers dropped from the window, as ascending disjoint inclusive ranges
    /// (the newest `MAX_DROPPED_RANGES`).
    #[serde(default)]
    pub dropped: Vec<(u64, u64)>,
    pub changes: Vec<WindowChange>,
}

/// Ranges of dropped change numbers remembered; a change numbered below them all that is
/// not in the window is taken as news (and so, once dropped, as a gap): the safe side.
pub const MAX_DROPPED_RANGES: usize = 64;

/// A change in the window, with the merge that brought it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowChange {
    pub merge: u64,
    #[serde(flatten)]
    pub change: KeyChange,
}

/// What one look at the window did to a worker's cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Changes that took effect.
    pub changes: usize,
    /// The worker had missed changes that left the window: it forgot its allows.
    pub gap: bool,
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
        self.merges = self.merges.wrapping_add(1).max(1);
        let merge = self.merges;
        let mut by_seq: BTreeMap<u64, WindowChange> =
            self.changes.drain(..).map(|c| (c.change.seq, c)).collect();
        for change in answer.changes {
            if self.was_dropped(change.seq) {
                continue;
            }
            // A change already held keeps the merge it came with: workers may have seen it.
            by_seq
                .entry(change.seq)
                .or_insert(WindowChange { merge, change });
        }
        while by_seq.len() > WINDOW {
            if let Some((seq, dropped)) = by_seq.pop_first() {
                self.dropped_from = self.dropped_from.max(dropped.merge);
                self.note_dropped(seq);
            }
        }
        self.changes = by_seq.into_values().collect();
    }

    fn was_dropped(&self, seq: u64) -> bool {
        self.dropped
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&seq))
    }

    fn note_dropped(&mut self, seq: u64) {
        let at = self.dropped.partition_point(|(_, high)| *high < seq);
        self.dropped.insert(at, (seq, seq));
        // Join neighbours that now touch (`high + 1 == low`), around the insertion.
        let mut joined: Vec<(u64, u64)> = Vec::with_capacity(self.dropped.len());
        for (low, high) in self.dropped.drain(..) {
            match joined.last_mut() {
                Some(last) if last.1.saturating_add(1) >= low => last.1 = last.1.max(high),
                _ => joined.push((low, high)),
            }
        }
        let excess = joined.len().saturating_sub(MAX_DROPPED_RANGES);
        joined.drain(..excess);
        self.dropped = joined;
    }
}

/// One worker's progress through the shared window.
#[derive(Debug, Default)]
pub struct WorkerFeed {
    epoch: Option<u64>,
    /// The window's merge count at this worker's last look.
    looked: Option<u64>,
    applied: BTreeSet<u64>,
}

impl WorkerFeed {
    /// Applies the window to this worker's cache.
    pub fn apply(
        &mut self,
        shared: &SharedFeed,
        cache: &mut DecisionCache,
        now: Millis,
    ) -> Applied {
        // A worker's first look forgets nothing: it started a tick ago.
        let reset = self.epoch.is_some_and(|epoch| epoch != shared.epoch);
        // Changes brought after this worker's last look have left the window unseen.
        // (A window older than the last look, which cannot happen, counts as a gap too.)
        let gap = self
            .looked
            .is_some_and(|looked| shared.dropped_from > looked || shared.merges < looked);
        if reset || gap {
            cache.forget_allows();
        }
        self.epoch = Some(shared.epoch);
        self.looked = Some(shared.merges);
        let newest: HashMap<&KeyHash, u64> =
            shared.changes.iter().fold(HashMap::new(), |mut m, c| {
                let seq = m.entry(&c.change.key_hash).or_insert(c.change.seq);
                *seq = (*seq).max(c.change.seq);
                m
            });
        let mut changes = 0;
        for WindowChange { change, .. } in &shared.changes {
            if !self.applied.insert(change.seq) {
                continue;
            }
            if newest.get(&change.key_hash) == Some(&change.seq) {
                cache.apply_change(change, now);
                changes += 1;
            }
        }
        let window: BTreeSet<u64> = shared.changes.iter().map(|c| c.change.seq).collect();
        self.applied.retain(|seq| window.contains(seq));
        Applied { changes, gap }
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
