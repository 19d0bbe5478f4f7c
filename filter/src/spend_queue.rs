//! The per-worker queue of spend records owed to the control plane.
//!
//! Bounded: when it is full a **new** record is dropped (and counted by the glue); the
//! records already queued are owed first. At most one batch is in flight: its records
//! stay at the head of the queue until the control plane acknowledges them, so a batch
//! that failed is sent again, whole and in order, on a later tick. The control plane
//! keeps a request id once, so a batch sent twice (an ack lost to a timeout) counts once.
//! A record is serialized once, when it is queued, and a batch is its records' JSON
//! joined: a record waiting through retries, or left for the next batch by the byte
//! bound, is never serialized (or cloned) again.

use livegate_contract::spend::{SpendAck, SpendRecord};
use std::collections::VecDeque;

/// The largest batch body sent: half the control plane's default body limit (64 KiB). A
/// batch of records with long labels is cut shorter, so that no batch can be refused
/// for its size and retried for ever; one record (at most a few KiB) always fits.
pub const MAX_BATCH_BYTES: usize = 32 * 1024;

/// A batch's JSON around its records: `SpendBatch { records }` as serde writes it.
const BATCH_OPEN: &[u8] = b"{\"records\":[";
const BATCH_CLOSE: &[u8] = b"]}";

/// Whether a record found room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue was full (or the record would not serialize): it is lost (counted).
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
    /// Each record's JSON, as it will stand in a batch.
    records: VecDeque<Box<[u8]>>,
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
        match serde_json::to_vec(&record) {
            Ok(json) => {
                self.records.push_back(json.into_boxed_slice());
                Pushed::Queued
            }
            Err(_) => Pushed::Dropped,
        }
    }

    /// The next batch to send, as its JSON body (the contract's `SpendBatch`), and marks
    /// it in flight: on a tick (`whole_only: false`) whatever is queued; after an
    /// acknowledgement (`whole_only: true`) only a whole batch (`batch_records` records, or
    /// as many as fit in `MAX_BATCH_BYTES`), so a busy worker drains without waiting for
    /// ticks. `None` while a batch is in flight or when there is nothing (enough) to send.
    pub fn next_batch(&mut self, whole_only: bool) -> Option<(Vec<u8>, usize)> {
        if self.in_flight.is_some() || self.records.is_empty() {
            return None;
        }
        let (count, bytes) = self.batch_extent();
        let whole = count == self.batch_records || count < self.records.len();
        if whole_only && !whole {
            return None;
        }
        let mut body = Vec::with_capacity(bytes);
        body.extend_from_slice(BATCH_OPEN);
        for (i, record) in self.records.iter().take(count).enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(record);
        }
        body.extend_from_slice(BATCH_CLOSE);
        self.in_flight = Some(count);
        Some((body, count))
    }

    /// How many records from the head make the next batch, and its body's length: at most
    /// `batch_records`, within `MAX_BATCH_BYTES` (one record always goes, whatever its size).
    fn batch_extent(&self) -> (usize, usize) {
        let mut bytes = BATCH_OPEN.len() + BATCH_CLOSE.len();
        let mut count = 0;
        for record in self.records.iter().take(self.batch_records) {
            let grown = bytes + record.len() + usize::from(count > 0);
            if count > 0 && grown > MAX_BATCH_BYTES {
                break;
            }
            bytes = grown;
            count += 1;
        }
        (count, bytes)
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
