//! A non-streamed JSON body: copied chunk by chunk up to a bound, parsed once at its end.

use super::{conclude, inspect, Reading};

/// Why a body yielded no reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body is not JSON")]
    Malformed,
}

/// Collects a body up to `limit` bytes; past it, forgets what it held and only remembers
/// that the body was too large.
#[derive(Debug, Clone)]
pub struct JsonMeter {
    limit: usize,
    body: Vec<u8>,
    too_large: bool,
    /// Every byte fed, past the bound too (what an estimate counts).
    seen: u64,
}

impl JsonMeter {
    pub fn new(limit: usize) -> JsonMeter {
        JsonMeter {
            limit,
            body: Vec::new(),
            too_large: false,
            seen: 0,
        }
    }

    /// The bytes fed so far.
    pub fn seen_bytes(&self) -> u64 {
        self.seen
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.seen = self.seen.saturating_add(super::len(chunk));
        if self.too_large {
            return;
        }
        if self.body.len().saturating_add(chunk.len()) > self.limit {
            self.too_large = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    pub fn finish(self) -> Result<Reading, JsonError> {
        if self.too_large {
            return Err(JsonError::TooLarge { limit: self.limit });
        }
        read(&self.body)
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
