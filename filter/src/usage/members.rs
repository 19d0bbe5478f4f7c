//! The `usage` and `model` of a JSON document too large to hold, read as it passes: one
//! walk over its bytes that keeps only those members' values, at the top level and in a
//! top-level `response` or `message` object (where the Responses API's and Anthropic's
//! stream events put them), so a large embedding batch or a long `response.completed` is
//! charged what its upstream stated. What it finds is what [`super::inspect`] would find
//! in the whole document.

use memchr::memchr2;
use serde_json::{Map, Value};

/// The members kept, by name.
const KEPT: [&str; 2] = ["usage", "model"];
/// The top-level members walked into when they are objects.
const WRAPPERS: [&str; 2] = ["response", "message"];
/// Where kept values are found: the document (0), or one of its wrappers (1 + index).
const PLACES: usize = 1 + WRAPPERS.len();

/// A member's name longer than this (escapes included) is none of the names above.
const MAX_NAME_BYTES: usize = 64;

/// Why a walk yielded nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// A usage was larger than the bound, or the document is not an object (the walk
    /// reads an object's members only).
    TooLarge,
    /// The bytes were not one whole JSON document.
    Malformed,
}

/// Where the walk is in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Document {
    Before,
    /// In the top-level object (and perhaps a wrapper in it).
    Walking,
    /// After the top-level object: only whitespace may follow.
    After,
    /// The document is not an object: passed over.
    NotObject,
}

/// Where the walk is in one object it walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Where a member's name (or the object's end) comes next.
    Name,
    InName,
    /// After a name, before its `:`.
    Colon,
    /// Reading a member's value.
    Value,
}

/// What the member being read is to the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Kept(usize),
    /// A wrapper, not yet known to be an object.
    Wrapper(usize),
    Other,
}

/// An object the walk is in: the top level, or a wrapper in it.
#[derive(Debug, Clone)]
struct Frame {
    place: Place,
    /// The name being read, raw; `None` once it is too long to be one of ours.
    name: Option<Vec<u8>>,
    member: Member,
    /// Which of [`PLACES`] its kept values go to.
    at: usize,
}

impl Frame {
    fn new(at: usize) -> Frame {
        Frame {
            place: Place::Name,
            name: None,
            member: Member::Other,
            at,
        }
    }
}

/// The walk over one document's bytes.
#[derive(Debug, Clone)]
pub struct Members {
    /// Bytes kept in all, at most.
    bound: usize,
    document: Document,
    /// The objects walked, outermost first (at most two).
    frames: Vec<Frame>,
    /// Containers open inside the member value being read, outside strings.
    nest: u32,
    in_string: bool,
    escaped: bool,
    /// The value being kept: its place, which of [`KEPT`], its bytes so far.
    value: Option<(usize, usize, Vec<u8>)>,
    /// The last value of each kept member at each place: a later duplicate replaces an
    /// earlier one, as serde's and Python's readers take it.
    kept: [[Option<Vec<u8>>; 2]; PLACES],
    /// Whether each one's last value was passed over for its size.
    too_large: [[bool; 2]; PLACES],
    malformed: bool,
}

impl Members {
    /// A walk that keeps at most `bound` bytes of values in all.
    pub fn new(bound: usize) -> Members {
        Members {
            bound,
            document: Document::Before,
            frames: Vec::new(),
            nest: 0,
            in_string: false,
            escaped: false,
            value: None,
            kept: Default::default(),
            too_large: Default::default(),
            malformed: false,
        }
    }

    /// The bytes held: the values kept and the one being kept.
    pub fn held_bytes(&self) -> usize {
        let kept: usize = self.kept.iter().flatten().flatten().map(Vec::len).sum();
        kept + self.value.as_ref().map_or(0, |(_, _, bytes)| bytes.len())
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !self.malformed && self.document != Document::NotObject {
            rest = rest.get(self.inert(rest)..).unwrap_or_default();
            let Some((&byte, tail)) = rest.split_first() else {
                return;
            };
            self.step(byte);
            rest = tail;
        }
    }

    /// How many of the leading bytes change nothing: in a value not kept (the bulk of a
    /// large document), those before the next that opens or ends a string or a container
    /// (or, outside any, ends the member). Found by `memchr` in strings and by a table
    /// elsewhere, rather than one step per byte.
    fn inert(&self, rest: &[u8]) -> usize {
        let reading = self.frames.last().is_some_and(|f| f.place == Place::Value);
        if !reading || self.value.is_some() || self.escaped {
            return 0;
        }
        if self.in_string {
            return memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
        }
        let table = if self.nest > 0 { &NESTED } else { &OUTER };
        rest.iter()
            .position(|b| table[usize::from(*b)])
            .unwrap_or(rest.len())
    }

    fn step(&mut self, byte: u8) {
        if self.in_string {
            self.in_string_step(byte);
            return;
        }
        let blank = matches!(byte, b' ' | b'\t' | b'\n' | b'\r');
        match self.document {
            Document::Before if blank => {}
            Document::Before if byte == b'{' => {
                self.document = Document::Walking;
                self.frames.push(Frame::new(0));
            }
            Document::Before => self.document = Document::NotObject,
            Document::After if blank => {}
            Document::After | Document::NotObject => self.malformed = true,
            Document::Walking => self.object_step(byte, blank),
        }
    }

    /// A byte in the innermost object walked, outside strings.
    fn object_step(&mut self, byte: u8, blank: bool) {
        let Some(frame) = self.frames.last_mut() else {
            self.malformed = true;
            return;
        };
        match (frame.place, byte) {
            (Place::Value, _) if self.nest > 0 => self.nested_step(byte),
            (Place::Name | Place::Colon, _) if blank => {}
            (Place::Name, b'"') => {
                frame.place = Place::InName;
                frame.name = Some(Vec::new());
                self.in_string = true;
            }
            (Place::Colon, b':') => self.begin_value(),
            (Place::Value, b',') => {
                self.end_value();
                if let Some(frame) = self.frames.last_mut() {
                    frame.place = Place::Name;
                }
            }
            (Place::Value | Place::Name, b'}') => {
                self.end_value();
                self.frames.pop();
                if self.frames.is_empty() {
                    self.document = Document::After;
                }
            }
            (Place::Value, b'{') if matches!(frame.member, Member::Wrapper(_)) => {
                let Member::Wrapper(w) = frame.member else {
                    return;
                };
                frame.member = Member::Other;
                self.frames.push(Frame::new(1 + w));
            }
            (Place::Value, b']') => self.malformed = true,
            (Place::Value, _) => {
                // Any other value: a wrapper that is not an object is none.
                frame.member = match frame.member {
                    Member::Wrapper(_) if !blank => Member::Other,
                    member => member,
                };
                self.nested_step(byte);
            }
            _ => self.malformed = true,
        }
    }

    /// A byte of a member's value, outside strings.
    fn nested_step(&mut self, byte: u8) {
        match byte {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.nest = self.nest.saturating_add(1),
            b'}' | b']' => self.nest = self.nest.saturating_sub(1),
            _ => {}
        }
        self.keep(byte);
    }

    fn in_string_step(&mut self, byte: u8) {
        let closes = !self.escaped && byte == b'"';
        self.escaped = !self.escaped && byte == b'\\';
        if closes {
            self.in_string = false;
        }
        let Some(frame) = self.frames.last_mut() else {
            return;
        };
        match frame.place {
            Place::InName if closes => frame.place = Place::Colon,
            Place::InName => {
                if let Some(name) = &mut frame.name {
                    name.push(byte);
                    if name.len() > MAX_NAME_BYTES {
                        frame.name = None;
                    }
                }
            }
            _ => self.keep(byte),
        }
    }

    fn begin_value(&mut self) {
        let Some(frame) = self.frames.last_mut() else {
            return;
        };
        frame.place = Place::Value;
        let name = frame.name.take().and_then(|raw| decoded_name(&raw));
        let name = name.as_deref();
        let top = frame.at == 0;
        frame.member = match (KEPT.iter().position(|k| Some(*k) == name), top) {
            (Some(k), _) => Member::Kept(k),
            (None, true) => match WRAPPERS.iter().position(|w| Some(*w) == name) {
                Some(w) => Member::Wrapper(w),
                None => Member::Other,
            },
            (None, false) => Member::Other,
        };
        let at = frame.at;
        match frame.member {
            Member::Kept(k) => self.value = Some((at, k, Vec::new())),
            // A later duplicate of a wrapper replaces all it said, as a later member does.
            Member::Wrapper(w) => {
                for k in 0..KEPT.len() {
                    self.forget(1 + w, k);
                }
            }
            Member::Other => {}
        }
    }

    fn keep(&mut self, byte: u8) {
        let full = self.held_bytes() >= self.bound;
        let Some((at, k, bytes)) = &mut self.value else {
            return;
        };
        if full {
            let (at, k) = (*at, *k);
            self.value = None;
            self.forget(at, k);
            self.too_large[at][k] = true;
            return;
        }
        bytes.push(byte);
    }

    /// Drops what was kept of member `k` at place `at`.
    fn forget(&mut self, at: usize, k: usize) {
        self.kept[at][k] = None;
        self.too_large[at][k] = false;
    }

    fn end_value(&mut self) {
        if let Some((at, k, bytes)) = self.value.take() {
            self.kept[at][k] = Some(bytes);
            self.too_large[at][k] = false;
        }
    }

    /// The document has ended: what it said at each place, as a document of its own (only
    /// what was found), for [`super::inspect`].
    pub fn finish(self) -> Result<Value, WalkError> {
        let usage_lost = self.too_large.iter().any(|at| at[0]);
        if self.document == Document::NotObject || usage_lost {
            return Err(WalkError::TooLarge);
        }
        if self.malformed || self.in_string || self.document != Document::After {
            return Err(WalkError::Malformed);
        }
        let mut places = self.kept.into_iter().map(|kept| {
            let mut members = Map::new();
            for (name, bytes) in KEPT.iter().zip(kept) {
                if let Some(bytes) = bytes {
                    let value = serde_json::from_slice(&bytes).map_err(|_| WalkError::Malformed)?;
                    members.insert((*name).to_string(), value);
                }
            }
            Ok(members)
        });
        let mut document = places.next().unwrap_or(Ok(Map::new()))?;
        for (wrapper, members) in WRAPPERS.iter().zip(places) {
            let members = members?;
            if !members.is_empty() {
                document.insert((*wrapper).to_string(), Value::Object(members));
            }
        }
        Ok(Value::Object(document))
    }
}

/// The bytes that matter outside strings in a value not kept: inside a container, and
/// outside any (where `,` ends the member).
const NESTED: [bool; 256] = structural(b"\"{}[]");
const OUTER: [bool; 256] = structural(b"\"{}[],");

const fn structural(bytes: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
}

/// A member's name as JSON means it (`"mod\u0065l"` is `model`); `None` if it is not a
/// valid JSON string.
fn decoded_name(raw: &[u8]) -> Option<String> {
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).ok()
}

#[cfg(test)]
mod tests;
