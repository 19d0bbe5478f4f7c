//! A server-sent-event stream, read as it passes.
//!
//! Lines end in LF, CR or CRLF (a CRLF may be split across chunks); an empty line ends an
//! event; `data:` lines are joined with LF, every other field and `:` comments are
//! ignored, and so is a byte order mark opening the stream. Only the line and the event being read are held, together at most
//! `max_event_bytes`: an event that would grow past it is dropped at once and the rest of
//! it passed over until its empty line. When the line that took it past is a data line
//! (a long Responses API `response.completed`), its data is walked instead for its usage
//! and model ([`super::members`], keeping at most `max_event_bytes` of them), as long as
//! no other line of the event follows; an event neither read nor walked is counted in
//! `oversized_events`. `data: [DONE]`
//! (OpenAI's end) is noted. An event still open when the stream ends is read as if it had
//! been closed: a truncated one fails to parse and is counted, a complete one is not lost.
//!
//! Parsing costs: line ends are found with `memchr`, and a line that sits whole in its
//! chunk (the usual case) is read where it is, not copied. Every event's data is skimmed
//! once ([`super::content`]): its generated content counted (for an estimate when the
//! stream's usage never comes; an event skipped for its size, or whose data is not JSON,
//! counts whole), and whether it holds a usage object. Once the model is known, an event
//! is parsed into a document only when it does, so content chunks (and OpenAI's
//! `"usage":null`) cost that one skim; an event shaped like the last content event is
//! read against it instead ([`super::shape`]: one more event's bytes held, at most
//! [`super::shape::MAX_TEMPLATE_BYTES`]).

use super::members::Members;
use super::shape::ShapedSkimmer;
use super::{conclude, inspect, len, Counts, Reading};
use memchr::memchr2;

/// The UTF-8 byte order mark a stream may open with (the SSE standard drops it).
const BOM: &[u8] = "\u{feff}".as_bytes();

/// A stream's reader.
#[derive(Debug, Clone)]
pub struct SseMeter {
    max_event_bytes: usize,
    /// The line being read (without its terminator).
    line: Vec<u8>,
    /// Whether the line being read has any byte (kept even while the event is skipped).
    line_started: bool,
    /// The current event's data lines, joined by LF.
    data: Vec<u8>,
    has_data: bool,
    /// The current event outgrew the bound: the rest of it is passed over.
    skipping: bool,
    /// The walk of the data of an event passed over (boxed: most streams never need one).
    walk: Option<Box<Members>>,
    /// The line being read is the data line walked.
    walking_line: bool,
    /// The last chunk ended in CR: an LF opening the next one ends no other line.
    after_cr: bool,
    /// No line has ended yet: a UTF-8 byte order mark opening it is not part of it.
    first_line: bool,
    /// Boxed: the meter's variants stay alike in size.
    skimmer: Box<ShapedSkimmer>,
    tokens: Option<Counts>,
    model: Option<String>,
    done: bool,
    oversized_events: u32,
    malformed_events: u32,
    seen_bytes: u64,
    content_bytes: u64,
}

/// What a stream said, and what of it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnd {
    pub reading: Reading,
    /// Whether the stream sent OpenAI's `data: [DONE]`.
    pub done: bool,
    pub oversized_events: u32,
    pub malformed_events: u32,
    /// Every byte of the stream.
    pub seen_bytes: u64,
    /// The generated content seen (see the module's comment).
    pub content_bytes: u64,
}

impl SseMeter {
    pub fn new(max_event_bytes: usize) -> SseMeter {
        SseMeter {
            max_event_bytes,
            line: Vec::new(),
            line_started: false,
            data: Vec::new(),
            has_data: false,
            skipping: false,
            walk: None,
            walking_line: false,
            after_cr: false,
            first_line: true,
            skimmer: Box::default(),
            tokens: None,
            model: None,
            done: false,
            oversized_events: 0,
            malformed_events: 0,
            seen_bytes: 0,
            content_bytes: 0,
        }
    }

    /// Reads the next chunk; any split of a stream into chunks reads the same.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.seen_bytes = self.seen_bytes.saturating_add(len(chunk));
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some((b'\n', tail)) = rest.split_first() {
                rest = tail;
            }
        }
        // The event's one `data` line so far, whole in this chunk and not yet copied: an
        // event that ends on the next line is read where it is.
        let mut pending: Option<&[u8]> = None;
        while let Some(end) = memchr2(b'\n', b'\r', rest) {
            let (line, tail) = rest.split_at(end);
            pending = self.complete_line(line, pending);
            rest = match tail {
                [b'\r', b'\n', after @ ..] => after,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, after @ ..] => after,
                [] => &[],
            };
        }
        self.keep(pending);
        self.push(rest);
    }

    /// The stream has ended.
    pub fn finish(mut self) -> StreamEnd {
        if self.line_started {
            self.end_held_line();
        }
        self.dispatch(None);
        StreamEnd {
            reading: conclude(self.tokens, self.model),
            done: self.done,
            oversized_events: self.oversized_events,
            malformed_events: self.malformed_events,
            seen_bytes: self.seen_bytes,
            content_bytes: self.content_bytes,
        }
    }

    /// The bytes held for the event being read: never more than the bound.
    pub fn held_bytes(&self) -> usize {
        let walked = self.walk.as_ref().map_or(0, |walk| walk.held_bytes());
        self.line.len() + self.data.len() + walked
    }

    /// Bytes of the line being read, held until its end.
    fn push(&mut self, bytes: &[u8]) {
        if self.admit(bytes) {
            self.line.extend_from_slice(bytes);
        }
    }

    /// The line being read ends with `tail`; `pending` is the event's data line read from
    /// this chunk and not copied yet, and so is what this returns.
    fn complete_line<'c>(&mut self, tail: &'c [u8], pending: Option<&'c [u8]>) -> Option<&'c [u8]> {
        if pending.is_some() && tail.is_empty() {
            // The empty line right after the event's one data line.
            self.dispatch(pending);
            return None;
        }
        self.keep(pending);
        if self.line.is_empty() {
            // Whole in this chunk: read where it is.
            let kept = if self.admit(tail) { tail } else { &[] };
            return self.end_line(kept);
        }
        self.push(tail);
        self.end_held_line();
        None
    }

    /// The event's first data line, copied after all (another line of the event follows).
    fn keep(&mut self, pending: Option<&[u8]>) {
        if let Some(value) = pending {
            self.data.extend_from_slice(value);
        }
    }

    /// Ends the line held so far (its buffer kept for the next).
    fn end_held_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let first_data = self.end_line(&line);
        self.keep(first_data);
        self.line = line;
        self.line.clear();
    }

    /// Whether `bytes` of the current line are kept: not while its event is skipped, nor
    /// when they would grow the event past its bound (then it is skipped from here on).
    fn admit(&mut self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        self.line_started = true;
        if self.skipping {
            self.content_bytes = self.content_bytes.saturating_add(len(bytes));
            match (&mut self.walk, self.walking_line) {
                (Some(walk), true) => walk.feed(bytes),
                // Another line of the event: not followed.
                (walk, false) => *walk = None,
                (None, true) => {}
            }
            return false;
        }
        let held = self.line.len() + self.data.len() + bytes.len();
        if held > self.max_event_bytes {
            let dropped = u64::try_from(held).unwrap_or(u64::MAX);
            self.content_bytes = self.content_bytes.saturating_add(dropped);
            self.skipping = true;
            self.walk = self.start_walk(bytes);
            self.walking_line = self.walk.is_some();
            self.line = Vec::new();
            self.data = Vec::new();
            self.has_data = false;
            return false;
        }
        true
    }

    /// The walk of an event past the bound, when the line that took it past (held, then
    /// `bytes`) is a data line: the event's data so far, then that line's as it comes.
    fn start_walk(&self, bytes: &[u8]) -> Option<Box<Members>> {
        let mut line = Vec::with_capacity(self.line.len() + bytes.len());
        line.extend_from_slice(&self.line);
        line.extend_from_slice(bytes);
        let text = if self.first_line {
            line.strip_prefix(BOM).unwrap_or(&line)
        } else {
            &line
        };
        let colon = text.iter().position(|b| *b == b':')?;
        let (field, value) = text.split_at(colon);
        if field != b"data" {
            return None;
        }
        let value = value.get(1..).unwrap_or_default();
        let mut walk = Box::new(Members::new(self.max_event_bytes));
        if self.has_data {
            walk.feed(&self.data);
            walk.feed(b"\n");
        }
        walk.feed(value.strip_prefix(b" ").unwrap_or(value));
        Some(walk)
    }

    /// A line has ended: `line` is all of it (the held bytes and the chunk's). The value
    /// of an event's first data line is returned, for the caller to keep (see
    /// [`SseMeter::keep`]) or to read where it is.
    fn end_line<'c>(&mut self, line: &'c [u8]) -> Option<&'c [u8]> {
        let first = std::mem::replace(&mut self.first_line, false);
        if !self.line_started {
            self.dispatch(None);
            return None;
        }
        self.line_started = false;
        self.walking_line = false;
        if self.skipping {
            return None;
        }
        let text = if first {
            line.strip_prefix(BOM).unwrap_or(line)
        } else {
            line
        };
        // A field name is a few bytes: a plain search finds its colon before `memchr`
        // would have set up.
        let (field, value) = match text.iter().position(|b| *b == b':') {
            Some(colon) => {
                let (field, value) = text.split_at(colon);
                let value = value.get(1..).unwrap_or_default();
                (field, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (text, &[][..]),
        };
        if let [b'd', b'a', b't', b'a'] = field {
            if !std::mem::replace(&mut self.has_data, true) {
                return Some(value);
            }
            self.data.push(b'\n');
            self.data.extend_from_slice(value);
        }
        None
    }

    /// An empty line: the event is complete. `pending` is its one data line, when it was
    /// read from the chunk and not copied.
    fn dispatch(&mut self, pending: Option<&[u8]>) {
        if std::mem::replace(&mut self.skipping, false) {
            self.has_data = false;
            self.data.clear();
            self.end_walk();
            return;
        }
        if !std::mem::replace(&mut self.has_data, false) {
            self.data.clear();
            return;
        }
        if let Some(value) = pending {
            self.read_event(value);
            return;
        }
        let data = std::mem::take(&mut self.data);
        self.read_event(&data);
        self.data = data;
        self.data.clear();
    }

    fn read_event(&mut self, data: &[u8]) {
        if data.trim_ascii() == b"[DONE]" {
            self.done = true;
            return;
        }
        let Some(skimmed) = self.skimmer.skim(data) else {
            self.malformed_events = self.malformed_events.saturating_add(1);
            self.content_bytes = self.content_bytes.saturating_add(len(data));
            return;
        };
        self.content_bytes = self.content_bytes.saturating_add(skimmed.content);
        if self.model.is_some() && !skimmed.usage_object {
            return;
        }
        let Ok(document) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        self.take(&document);
    }

    /// The event passed over has ended: what its walk found, or it is counted.
    fn end_walk(&mut self) {
        self.walking_line = false;
        match self.walk.take().map(|walk| walk.finish()) {
            Some(Ok(found)) => self.take(&found),
            _ => self.oversized_events = self.oversized_events.saturating_add(1),
        }
    }

    /// Takes what an event's document says: later counts over earlier ones, the first model.
    fn take(&mut self, document: &serde_json::Value) {
        let found = inspect(document);
        if let Some(later) = found.tokens {
            self.tokens
                .get_or_insert_with(Counts::default)
                .update(later);
        }
        if self.model.is_none() {
            self.model = found.model;
        }
    }
}
