//! The spool's pending entries as its frames say: what replay rebuilds from the file's bytes.

use std::collections::{HashSet, VecDeque};
use std::path::Path;

use super::frame::{self, Decoded, Entry, Frame, FRAME_HEADER, MAGIC, MAX_FRAME_BYTES};
use super::SpoolError;

/// The pending entries, in order, as the frames so far say: what replay rebuilds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pending {
    pub(super) entries: VecDeque<Entry>,
    pub(super) ids: HashSet<String>,
    /// Framed bytes of the pending entries (what a compaction would keep).
    pub(super) live_bytes: u64,
    /// The number the next entry gets (numbers never go back within a file).
    pub(super) next_seq: u64,
    /// The database the entries belong to; `None`: never bound (new, or written by a
    /// version without identities), so it belongs to the first database it reaches.
    pub(super) identity: Option<String>,
}

/// The result of reading a spool file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub pending: Pending,
    /// The length of the prefix made of checked frames; what follows is a torn write.
    pub good_len: usize,
}

/// Reads a spool file's bytes (from its header on): pure, for `open` and for tests.
pub fn scan(bytes: &[u8], path: &Path) -> Result<Scan, SpoolError> {
    if !bytes.starts_with(MAGIC) {
        return Err(SpoolError::NotASpool {
            path: path.to_path_buf(),
        });
    }
    let mut pending = Pending {
        next_seq: 1,
        ..Pending::default()
    };
    let mut at = MAGIC.len();
    while let Some(rest) = bytes.get(at..).filter(|rest| !rest.is_empty()) {
        match frame::decode(rest) {
            Decoded::Frame(Frame::Batch(entries), used) => {
                for entry in entries {
                    pending.next_seq = pending.next_seq.max(entry.seq.saturating_add(1));
                    pending.hold(entry);
                }
                at += used;
            }
            Decoded::Frame(Frame::Drained { through }, used) => {
                pending.forget_through(through);
                at += used;
            }
            Decoded::Frame(Frame::Identity { database }, used) => {
                pending.identity = Some(database);
                at += used;
            }
            Decoded::Torn if rest.len() <= FRAME_HEADER + MAX_FRAME_BYTES => break,
            Decoded::Torn => {
                return Err(SpoolError::Corrupt {
                    path: path.to_path_buf(),
                    offset: at as u64,
                })
            }
        }
    }
    Ok(Scan {
        pending,
        good_len: at,
    })
}

impl Pending {
    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The database the entries belong to (see the module documentation).
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    pub(super) fn hold(&mut self, entry: Entry) {
        if !self.ids.insert(entry.id.clone()) {
            return; // an id is held once: replayed once
        }
        self.live_bytes += frame::entry_bytes(&entry.id, &entry.data) as u64;
        self.entries.push_back(entry);
    }

    pub(super) fn forget_through(&mut self, through: u64) {
        while self.entries.front().is_some_and(|e| e.seq <= through) {
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            self.ids.remove(&entry.id);
            self.live_bytes -= frame::entry_bytes(&entry.id, &entry.data) as u64;
        }
    }
}
