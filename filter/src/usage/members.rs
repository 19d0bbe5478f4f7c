//! The top-level `usage` and `model` of a JSON body too large to hold, read as it passes:
//! one walk over the bytes that keeps only those two members' values (each within a
//! bound), so a large embedding batch is charged what its upstream stated.

use memchr::memchr2;
use serde_json::{Map, Value};

/// The members kept, by name: where a non-streamed body of every shape understood states
/// its usage and model.
const KEPT: [&str; 2] = ["usage", "model"];

/// A member's name longer than this (escapes included) is none of [`KEPT`].
const MAX_NAME_BYTES: usize = 64;

/// A kept value larger than this is passed over: a usage object is well under 1 KiB, and
/// a model name past the spend record's bound is not recorded anyway.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Why a walk yielded no members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// The usage was larger than its bound, or the document is not an object (the walk
    /// reads an object's members only).
    TooLarge,
    /// The bytes were not one whole JSON document.
    Malformed,
}

impl Default for TopMembers {
    fn default() -> Self {
        TopMembers::new()
    }
}

/// The bytes that matter outside strings in a value not kept, nested and at the top level.
const NESTED: [bool; 256] = structural(b"\"{}[]");
const TOP: [bool; 256] = structural(b"\"{}[],");

const fn structural(bytes: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
}

/// Where the walk is in the top-level object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Before the document's first byte.
    Before,
    /// In the top-level object, where a member's name (or its end) comes next.
    Name,
    /// Reading a member's name.
    InName,
    /// After a name, before its `:`.
    Colon,
    /// Reading a member's value.
    Value,
    /// After the top-level value: only whitespace may follow.
    After,
    /// The document is not an object: passed over.
    NotObject,
}

/// The walk over one body's bytes.
#[derive(Debug, Clone)]
pub struct TopMembers {
    place: Place,
    /// Containers open around the walk, outside strings (the top-level object is one).
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The name being read, raw; `None` once it is too long to be kept.
    name: Option<Vec<u8>>,
    /// The value being kept (the index of its name in [`KEPT`], its bytes so far).
    value: Option<(usize, Vec<u8>)>,
    /// The last value of each kept member: a later duplicate replaces an earlier one, as
    /// serde's and Python's readers take it.
    kept: [Option<Vec<u8>>; 2],
    /// Whether each kept member's last value was passed over for its size.
    too_large: [bool; 2],
    malformed: bool,
}

impl TopMembers {
    pub fn new() -> TopMembers {
        TopMembers {
            place: Place::Before,
            depth: 0,
            in_string: false,
            escaped: false,
            name: None,
            value: None,
            kept: [None, None],
            too_large: [false, false],
            malformed: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !self.malformed && self.place != Place::NotObject {
            rest = rest.get(self.inert(rest)..).unwrap_or_default();
            let Some((&byte, tail)) = rest.split_first() else {
                return;
            };
            self.step(byte);
            rest = tail;
        }
    }

    /// How many of the leading bytes change nothing: in a value not kept (the bulk of a
    /// large body), those before the next that opens or ends a string or a container
    /// (or, at the top level, ends the member). Found by `memchr` in strings and by a
    /// table elsewhere, rather than one step per byte.
    fn inert(&self, rest: &[u8]) -> usize {
        if self.place != Place::Value || self.value.is_some() || self.escaped {
            return 0;
        }
        if self.in_string {
            return memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
        }
        let table = if self.depth > 1 { &NESTED } else { &TOP };
        rest.iter()
            .position(|b| table[usize::from(*b)])
            .unwrap_or(rest.len())
    }

    fn step(&mut self, byte: u8) {
        if self.in_string {
            self.in_string_step(byte);
            return;
        }
        let top = self.depth == 1;
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' if self.place != Place::Value => {}
            b'"' if self.place == Place::Name && top => {
                self.in_string = true;
                self.place = Place::InName;
                self.name = Some(Vec::new());
            }
            b':' if self.place == Place::Colon => self.begin_value(),
            b',' if self.place == Place::Value && top => {
                self.end_value();
                self.place = Place::Name;
            }
            b'}' if top && matches!(self.place, Place::Value | Place::Name) => {
                self.end_value();
                self.depth = 0;
                self.place = Place::After;
            }
            b'{' if self.place == Place::Before => {
                self.depth = 1;
                self.place = Place::Name;
            }
            _ if self.place == Place::Before => self.place = Place::NotObject,
            _ if self.place == Place::Value => self.value_step(byte),
            // Anything else where a name, a colon or the end was due.
            _ => self.malformed = true,
        }
    }

    fn in_string_step(&mut self, byte: u8) {
        let closes = !self.escaped && byte == b'"';
        self.escaped = !self.escaped && byte == b'\\';
        if closes {
            self.in_string = false;
        }
        match self.place {
            Place::InName if closes => self.place = Place::Colon,
            Place::InName => {
                if let Some(name) = &mut self.name {
                    name.push(byte);
                    if name.len() > MAX_NAME_BYTES {
                        self.name = None;
                    }
                }
            }
            _ => self.keep(byte),
        }
    }

    /// A byte of a member's value, outside strings.
    fn value_step(&mut self, byte: u8) {
        match byte {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth = self.depth.saturating_add(1),
            b'}' | b']' if self.depth > 1 => self.depth -= 1,
            b'}' | b']' => {
                self.malformed = true;
                return;
            }
            _ => {}
        }
        self.keep(byte);
    }

    fn begin_value(&mut self) {
        self.place = Place::Value;
        let name = self.name.take().and_then(|raw| decoded_name(&raw));
        self.value = name
            .and_then(|name| KEPT.iter().position(|kept| *kept == name))
            .map(|at| (at, Vec::new()));
    }

    fn keep(&mut self, byte: u8) {
        let Some((at, bytes)) = &mut self.value else {
            return;
        };
        if bytes.len() >= MAX_VALUE_BYTES {
            self.too_large[*at] = true;
            self.kept[*at] = None;
            self.value = None;
            return;
        }
        bytes.push(byte);
    }

    fn end_value(&mut self) {
        if let Some((at, bytes)) = self.value.take() {
            self.kept[at] = Some(bytes);
            self.too_large[at] = false;
        }
    }

    /// The body has ended: its kept members as one object (only those present), ready
    /// for the shapes' reader.
    pub fn finish(self) -> Result<Value, WalkError> {
        // The usage is the point of the walk; a model too large is not recorded anyway.
        if self.place == Place::NotObject || self.too_large[0] {
            return Err(WalkError::TooLarge);
        }
        if self.malformed || self.in_string || self.place != Place::After {
            return Err(WalkError::Malformed);
        }
        let mut members = Map::new();
        for (name, bytes) in KEPT.iter().zip(self.kept) {
            if let Some(bytes) = bytes {
                let value = serde_json::from_slice(&bytes).map_err(|_| WalkError::Malformed)?;
                members.insert((*name).to_string(), value);
            }
        }
        Ok(Value::Object(members))
    }
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
