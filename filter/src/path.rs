//! The request path the filter decides on: escapes that cannot change a path's meaning
//! decoded, `%2F` and `\` taken as the `/` a Python upstream reads them as, dot segments
//! and duplicate slashes removed. The filter normalises on its own, so its decisions hold
//! in an Envoy configured by someone else (a mesh) as in ours.

/// A path in normal form, and the query (or fragment) that followed it, untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    pub path: String,
    /// `?…` or `#…` as sent, or empty.
    pub rest: String,
    /// The path as sent was not already in normal form.
    pub changed: bool,
}

impl NormalPath {
    /// The `:path` to send on: the normal path and the query as sent.
    pub fn full(&self) -> String {
        format!("{}{}", self.path, self.rest)
    }
}

/// Why a path cannot be normalised safely (answered 400, never guessed at).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with '/'")]
    NotAbsolute,
    #[error("the request path has a '%' not followed by two hex digits")]
    BadEscape,
    #[error("the request path encodes a control character")]
    ControlCharacter,
    #[error("the request path has a character outside printable ASCII")]
    NotAscii,
    /// A control-plane path (no key needed) whose spelling is not normal: the filter would
    /// let it through unchecked while a router that does not normalise may send it
    /// elsewhere, so it is refused rather than guessed at.
    #[error("a path that needs no key must be sent in normal form (no escapes, dot segments or duplicate slashes)")]
    NotNormal,
}

/// Normalises a `:path` value (see the module's opening line). Escapes of reserved or
/// non-ASCII bytes stay escaped, in upper-case hex; `%25` stays `%25`, so nothing is
/// decoded twice.
pub fn normalize(raw: &str) -> Result<NormalPath, PathError> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let (path, rest) = raw.split_at(end);
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode(path)?;
    let normal = remove_dot_segments(&decoded);
    Ok(NormalPath {
        changed: normal != path,
        path: normal,
        rest: rest.to_string(),
    })
}

/// Percent-decodes what is safe to decode; `\` and `%5C` become `/` (Envoy's own path
/// normalisation does the same with `\`).
fn decode(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        if b != b'%' {
            if !b.is_ascii() {
                return Err(PathError::NotAscii);
            }
            if b.is_ascii_control() || b == b' ' {
                return Err(PathError::ControlCharacter);
            }
            out.push(if b == b'\\' { '/' } else { char::from(b) });
            continue;
        }
        let hi = bytes.get(i).and_then(|h| hex(*h));
        let lo = bytes.get(i + 1).and_then(|l| hex(*l));
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(PathError::BadEscape);
        };
        i += 2;
        let value = hi * 16 + lo;
        if value.is_ascii_control() {
            return Err(PathError::ControlCharacter);
        }
        match value {
            b'/' | b'\\' => out.push('/'),
            v if is_unreserved(v) => out.push(char::from(v)),
            v => out.push_str(&format!("%{v:02X}")),
        }
    }
    Ok(out)
}

/// RFC 3986's remove_dot_segments, with empty segments (duplicate slashes) dropped too.
/// `..` at the root stays at the root. A path that ended in `/`, `/.` or `/..` keeps a
/// trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in path.split('/').skip(1) {
        trailing = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing || kept.is_empty() {
        out.push('/');
    }
    out
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Decodes every escape of a normal path's segment (a model name in an Azure path);
/// `None` if the bytes are not UTF-8.
pub fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
            .flatten();
        match escaped {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A model name as one path segment: every byte but the unreserved ones escaped.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
