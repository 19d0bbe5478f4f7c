//! A non-streamed JSON body: copied chunk by chunk up to a bound, parsed once at its end;
//! past the bound, walked for its `usage` and `model` instead of held ([`super::members`]).

use super::members::{Members, WalkError};
use super::{conclude, inspect, Reading};

/// The most a walk past the bound keeps of a body's usage and model values: a usage
/// object is well under 1 KiB.
pub const MAX_KEPT_BYTES: usize = 64 * 1024;

/// Why a body yielded no reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Past the bound, and its usage could not be kept (larger than its own bound) or
    /// the body is not an object.
    #[error("the body is larger than {limit} bytes and its usage could not be read")]
    TooLarge { limit: usize },
    #[error("the body is not JSON")]
    Malformed,
}

/// Collects a body up to `limit` bytes; past it, forgets what it held and walks the rest
/// (what it held first) for the members that state usage.
#[derive(Debug, Clone)]
pub struct JsonMeter {
    limit: usize,
    body: Vec<u8>,
    walk: Option<Box<Members>>,
    /// Every byte fed, past the bound too (what an estimate counts).
    seen: u64,
}

impl JsonMeter {
    pub fn new(limit: usize) -> JsonMeter {
        JsonMeter {
            limit,
            body: Vec::new(),
            walk: None,
            seen: 0,
        }
    }

    /// The bytes fed so far.
    pub fn seen_bytes(&self) -> u64 {
        self.seen
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.seen = self.seen.saturating_add(super::len(chunk));
        if let Some(walk) = &mut self.walk {
            walk.feed(chunk);
            return;
        }
        if self.body.len().saturating_add(chunk.len()) > self.limit {
            let mut walk = Box::new(Members::new(MAX_KEPT_BYTES));
            walk.feed(&std::mem::take(&mut self.body));
            walk.feed(chunk);
            self.walk = Some(walk);
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    pub fn finish(self) -> Result<Reading, JsonError> {
        let Some(walk) = self.walk else {
            return read(&self.body);
        };
        match walk.finish() {
            Ok(members) => {
                let found = inspect(&members);
                Ok(conclude(found.tokens, found.model))
            }
            Err(WalkError::TooLarge) => Err(JsonError::TooLarge { limit: self.limit }),
            Err(WalkError::Malformed) => Err(JsonError::Malformed),
        }
    }
}

/// Reads a whole body: usage absent when it is JSON without usage, an error when it is
/// not JSON at all.
pub fn read(body: &[u8]) -> Result<Reading, JsonError> {
    let document: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| JsonError::Malformed)?;
    let found = inspect(&document);
    Ok(conclude(found.tokens, found.model))
}
