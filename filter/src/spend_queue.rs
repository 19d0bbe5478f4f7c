//! The per-worker queue of spend records owed to the control plane.
//!
//! Bounded: when it is full a **new** record is dropped (and counted by the glue); the
//! records already queued are owed first. At most one batch is in flight: its records
//! stay at the head of the queue until the control plane acknowledges them, so a batch
//! that failed is sent again, whole and in order, on a later tick. The control plane
//! keeps a request id once, so a batch sent twice (an ack lost to a timeout) counts once.

use livegate_contract::spend::{SpendAck, SpendBatch, SpendRecord};
use std::collections::VecDeque;

/// The largest batch body sent: half the control plane's default body limit (64 KiB). A
/// batch of records with long labels is cut shorter, so that no batch can be refused
/// for its size and retried for ever; one record (at most a few KiB) always fits.
pub const MAX_BATCH_BYTES: usize = 32 * 1024;

/// Whether a record found room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue was full: the record is lost (counted).
    Dropped,
}

/// What became of the batch in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Acknowledged: these records left the queue.
    Acknowledged(usize),
    /// Anything else: these records stay at the head and go again later.
    Retry(usize),
    /// No batch was in flight (a stray answer): nothing changes.
    Stray,
}

#[derive(Debug)]
pub struct SpendQueue {
    records: VecDeque<SpendRecord>,
    max_records: usize,
    batch_records: usize,
    /// How many records at the head are in the batch in flight.
    in_flight: Option<usize>,
}

impl SpendQueue {
    pub fn new(max_records: usize, batch_records: usize) -> SpendQueue {
        SpendQueue {
            records: VecDeque::new(),
            max_records: max_records.max(1),
            batch_records: batch_records.max(1),
            in_flight: None,
        }
    }

    /// Records held, the batch in flight included.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    pub fn push(&mut self, record: SpendRecord) -> Pushed {
        if self.records.len() >= self.max_records {
            return Pushed::Dropped;
        }
        self.records.push_back(record);
        Pushed::Queued
    }

    /// The next batch to send, as its JSON body, and marks it in flight: on a tick
    /// (`whole_only: false`) whatever is queued; after an acknowledgement
    /// (`whole_only: true`) only a full batch, so a busy worker drains without waiting for
    /// ticks. `None` while a batch is in flight or when there is nothing (enough) to send.
    pub fn next_batch(&mut self, whole_only: bool) -> Option<(Vec<u8>, usize)> {
        if self.in_flight.is_some() || self.records.is_empty() {
            return None;
        }
        let mut count = self.records.len().min(self.batch_records);
        if whole_only && count < self.batch_records {
            return None;
        }
        loop {
            let batch = SpendBatch {
                records: self.records.iter().take(count).cloned().collect(),
            };
            let body = serde_json::to_vec(&batch).ok()?;
            if body.len() <= MAX_BATCH_BYTES || count == 1 {
                self.in_flight = Some(count);
                return Some((body, count));
            }
            count = count.div_ceil(2);
        }
    }

    /// The dispatch of the batch in flight was refused by the host: it stays, for later.
    pub fn not_sent(&mut self) {
        self.in_flight = None;
    }

    /// The control plane's answer to the batch in flight: only a 200 whose body is the
    /// contract's `SpendAck` for every record of the batch lets the records go.
    pub fn on_answer(&mut self, status: Option<&[u8]>, body: Option<&[u8]>) -> Delivery {
        let Some(count) = self.in_flight.take() else {
            return Delivery::Stray;
        };
        let ack = body.and_then(|b| serde_json::from_slice::<SpendAck>(b).ok());
        let whole =
            ack.is_some_and(|a| u64::from(a.accepted) + u64::from(a.duplicates) == count as u64);
        if status == Some(b"200".as_slice()) && whole {
            self.records.drain(..count.min(self.records.len()));
            Delivery::Acknowledged(count)
        } else {
            Delivery::Retry(count)
        }
    }
}

#[cfg(test)]
mod tests;
