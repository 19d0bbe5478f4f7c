//! One stream event's data, skimmed in one pass that builds nothing: the bytes of generated
//! content it carries, and whether it holds a usage object worth parsing.
//!
//! Every event of a stream passes here, so this is the meter's hot loop: a hand-written
//! scanner rather than a serde walk, which cost about three times as much (and most of
//! the meter's time). Strings are crossed eight bytes at a time by hand: they are short in
//! stream events (a token, a name), too short for `memchr`'s setup to pay. It checks JSON's structure (brackets, commas, colons, literals, numbers, the
//! escapes of strings, nesting at most [`MAX_DEPTH`]); the bytes inside a string are not
//! checked (an invalid UTF-8 byte is content like any other).
//!
//! Counted as content: the string leaves of the event's `delta` (Anthropic's
//! `content_block_delta`, the Responses API's `*.delta` events) and of each choice's
//! `delta` and `text` (OpenAI's chat and completions chunks), each string as many bytes as
//! it decodes to. Role and type names inside a delta count too: a few bytes, on the side of
//! the client paying. Any other shape counts 0; only data that is not JSON is an error.
//!
//! A usage object is a `usage` member holding an object in the event itself, or in the
//! `message` (Anthropic's `message_start`) or `response` (the Responses API's stream
//! events) it wraps: the places [`super::inspect`] reads. A member name spelled with
//! escapes is read as another name.

/// The deepest nesting read (serde_json's own limit): deeper data is not JSON here.
pub const MAX_DEPTH: usize = 128;

/// What one event's data holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skim {
    /// Bytes of generated content.
    pub content: u64,
    /// A usage object sits where usage is read.
    pub usage_object: bool,
}

/// The content bytes of one event's data; `None` when it is not JSON.
pub fn content_bytes(data: &[u8]) -> Option<u64> {
    skim(data).map(|s| s.content)
}

/// One event's data skimmed; `None` when it is not JSON.
pub fn skim(data: &[u8]) -> Option<Skim> {
    scan(data, None)
}

/// A string value of a skimmed document: the bytes between its quotes, and whether they
/// count as content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The first byte after the opening quote.
    pub start: usize,
    /// The closing quote.
    pub end: usize,
    /// The bytes it decodes to.
    pub decoded: u64,
    pub content: bool,
}

/// [`skim`], noting where every string value sits in `slots` (emptied first; member names
/// are not slots).
pub fn skim_with_slots(data: &[u8], slots: &mut Vec<Slot>) -> Option<Skim> {
    slots.clear();
    scan(data, Some(slots))
}

fn scan(data: &[u8], slots: Option<&mut Vec<Slot>>) -> Option<Skim> {
    let mut scanner = Scanner {
        bytes: data,
        at: 0,
        depth: 0,
        skim: Skim::default(),
        slots,
    };
    scanner.value(Part::Event)?;
    scanner.whitespace();
    (scanner.at == data.len()).then_some(scanner.skim)
}

/// Where in the event the value being read sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The event itself: its `choices`, `delta`, `usage`, `message` and `response` are read.
    Event,
    /// `message` or `response`: its `usage` is looked at.
    Wrapper,
    /// `choices`: each element is a choice.
    Choices,
    /// One choice: its `text` and `delta` are read.
    Choice,
    /// Content: every string inside counts.
    Leaves,
    /// Anything else: read for its structure only.
    Other,
}

impl Part {
    /// The part of a member's value, by the member's raw name.
    fn member(self, name: &[u8]) -> Part {
        match self {
            Part::Leaves => Part::Leaves,
            Part::Event => match name {
                b"choices" => Part::Choices,
                b"delta" => Part::Leaves,
                b"message" | b"response" => Part::Wrapper,
                _ => Part::Other,
            },
            Part::Choice => match name {
                b"delta" | b"text" => Part::Leaves,
                _ => Part::Other,
            },
            Part::Wrapper | Part::Choices | Part::Other => Part::Other,
        }
    }

    /// Whether a member of this name holding an object is a usage object.
    fn usage_at(self, name: &[u8]) -> bool {
        matches!(self, Part::Event | Part::Wrapper) && name == b"usage"
    }

    fn element(self) -> Part {
        match self {
            Part::Choices => Part::Choice,
            Part::Leaves => Part::Leaves,
            _ => Part::Other,
        }
    }
}

struct Scanner<'a, 's> {
    bytes: &'a [u8],
    at: usize,
    depth: usize,
    skim: Skim,
    slots: Option<&'s mut Vec<Slot>>,
}

impl<'a> Scanner<'a, '_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Whitespace, then `byte`.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.whitespace();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn value(&mut self, part: Part) -> Option<()> {
        self.whitespace();
        self.value_here(part)
    }

    /// A value starting at the next byte.
    fn value_here(&mut self, part: Part) -> Option<()> {
        match self.peek()? {
            b'{' => self.nested(|s| s.object(part)),
            b'[' => self.nested(|s| s.array(part)),
            b'"' => {
                let start = self.at + 1;
                let (_, decoded) = self.string()?;
                let content = part == Part::Leaves;
                if content {
                    self.skim.content = self.skim.content.saturating_add(decoded);
                }
                if let Some(slots) = &mut self.slots {
                    let end = self.at - 1;
                    slots.push(Slot {
                        start,
                        end,
                        decoded,
                        content,
                    });
                }
                Some(())
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    fn nested(&mut self, read: impl FnOnce(&mut Self) -> Option<()>) -> Option<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        read(self)?;
        self.depth -= 1;
        Some(())
    }

    /// After `{`.
    fn object(&mut self, part: Part) -> Option<()> {
        self.whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            self.whitespace();
            if self.peek()? != b'"' {
                return None;
            }
            let (name, _) = self.string()?;
            self.expect(b':')?;
            self.whitespace();
            if part.usage_at(name) && self.peek() == Some(b'{') {
                self.skim.usage_object = true;
            }
            self.value_here(part.member(name))?;
            self.whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// After `[`.
    fn array(&mut self, part: Part) -> Option<()> {
        self.whitespace();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(());
        }
        loop {
            self.value(part.element())?;
            self.whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string at `"`: its raw bytes (between the quotes, escapes as written) and the
    /// number of bytes it decodes to.
    fn string(&mut self) -> Option<(&'a [u8], u64)> {
        let bytes = self.bytes;
        let start = self.at + 1;
        let (end, decoded) = string_body(bytes, start)?;
        self.at = end + 1;
        Some((bytes.get(start..end)?, decoded))
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `-? int frac? exp?`, as JSON writes numbers.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.one_or_more_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.one_or_more_digits()?;
        }
        Some(())
    }

    fn one_or_more_digits(&mut self) -> Option<()> {
        self.peek().filter(u8::is_ascii_digit)?;
        self.digits();
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }
}

/// A string's body from `start` (after its opening quote): where its closing quote is,
/// and the number of bytes it decodes to; `None` if it does not end or an escape is bad.
pub fn string_body(bytes: &[u8], start: usize) -> Option<(usize, u64)> {
    let mut at = start;
    let mut decoded: u64 = 0;
    loop {
        let found = quote_or_backslash(bytes.get(at..)?)?;
        decoded = decoded.saturating_add(found as u64);
        at += found;
        if bytes.get(at) == Some(&b'"') {
            return Some((at, decoded));
        }
        let (length, width) = escape(bytes.get(at + 1..)?)?;
        decoded = decoded.saturating_add(width);
        at += 1 + length;
    }
}

/// The first `"` or `\\` in `bytes`, eight bytes at a time (a byte equal to either makes
/// its lane of `x ^ pattern` zero; the lowest zero lane is found exactly).
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_le_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_le_bytes([b'\\'; 8]);
    let zero_lanes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut at = 0;
    while let Some(Ok(word)) = bytes.get(at..at + 8).map(<[u8; 8]>::try_from) {
        let word = u64::from_le_bytes(word);
        let hits = zero_lanes(word ^ QUOTES) | zero_lanes(word ^ BACKSLASHES);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = bytes.get(at..)?;
    tail.iter()
        .position(|b| *b == b'"' || *b == b'\\')
        .map(|i| at + i)
}

/// An escape after its backslash: the bytes it spans and the bytes it decodes to. A
/// `\u` surrogate counts 2 (a pair decodes to 4); the pairing itself is not checked.
fn escape(after: &[u8]) -> Option<(usize, u64)> {
    match after.first()? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some((1, 1)),
        b'u' => {
            let hex = after.get(1..5)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let point = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            let width = match point {
                0..=0x7f => 1,
                0x80..=0x7ff | 0xd800..=0xdfff => 2,
                _ => 3,
            };
            Some((5, width))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
