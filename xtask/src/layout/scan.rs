//! Reads one Rust source file as far as the layout check needs: the `crate::` paths of its
//! non-test code, the test modules it declares, and its opening `//!` block.
//!
//! A scanner, not a parser: comments and literals are blanked first (so a `{` in a
//! format string or `crate::x` in a doc comment count for nothing), then `#[cfg(test)]`
//! items are blanked by bracket matching. Total: any input gives an answer, never a panic.

/// What the check takes from one file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Every `crate::ident` of the non-test code, in order.
    pub refs: Vec<Ref>,
    /// Modules declared `#[cfg(test)] mod name;`: their files are test code.
    pub test_mods: Vec<String>,
    /// The whole file is `#![cfg(test)]`.
    pub test_only: bool,
}

/// One `crate::target` path: the top-level name it goes through, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub target: String,
    /// 1-based.
    pub line: usize,
}

/// Scans one file's source.
pub fn file(source: &str) -> Scan {
    let mut code: Vec<char> = blank_comments_and_literals(source);
    let test_only = inner_attributes(&code)
        .iter()
        .any(|attribute| is_cfg_test(attribute));
    let test_mods = blank_test_items(&mut code);
    Scan {
        refs: crate_refs(&code),
        test_mods,
        test_only,
    }
}

/// The opening `//!` lines (after blank lines), which say what the file is for.
pub fn opening_doc(source: &str) -> String {
    source
        .lines()
        .map(str::trim)
        .skip_while(|line| line.is_empty())
        .take_while(|line| line.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The source with comments, string and char literals replaced by spaces, newlines kept
/// (so line numbers hold).
fn blank_comments_and_literals(source: &str) -> Vec<char> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = chars.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in out.iter_mut().take(to).skip(from) {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && at(i + 1) == '/' {
            let end = (i..chars.len())
                .find(|&j| chars[j] == '\n')
                .unwrap_or(chars.len());
            blank(&mut out, i, end);
            i = end;
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0usize;
            let mut j = i;
            while j < chars.len() {
                if chars[j] == '/' && at(j + 1) == '*' {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && at(j + 1) == '/' {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            let end = j.min(chars.len());
            blank(&mut out, i, end);
            i = end;
        } else if is_ident(c) {
            // Whole identifiers at a time, so `b'x'`, `b"…"` and `r#ident` are seen from
            // their start, and a raw string r"…", r#"…"#, br"…" by its prefix.
            match raw_string_end(&chars, i) {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => {
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                }
            }
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(chars.len());
            blank(&mut out, i, end);
            i = end;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F600}'), else a lifetime or label ('a).
            let end = if at(i + 1) == '\\' {
                // The escaped character itself may be a quote: '\''.
                (i + 3..chars.len())
                    .find(|&j| chars[j] == '\'')
                    .map(|j| j + 1)
            } else if at(i + 2) == '\'' {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    let end = end.min(chars.len());
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The end of the raw string starting at `i` (`r"…"`, `r#"…"#`, `br"…"`), if one does.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let at = |j: usize| chars.get(j).copied().unwrap_or('\0');
    let r = if at(i) == 'b' { i + 1 } else { i };
    if at(r) != 'r' {
        return None;
    }
    let hashes = (r + 1..chars.len())
        .take_while(|&j| chars[j] == '#')
        .count();
    if at(r + 1 + hashes) != '"' {
        return None;
    }
    let body = r + 2 + hashes;
    let close =
        (body..chars.len()).find(|&j| chars[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#'));
    Some(close.map_or(chars.len(), |j| j + 1 + hashes))
}

/// The text of every inner attribute `#![…]`, whitespace removed.
fn inner_attributes(code: &[char]) -> Vec<String> {
    let mut attributes = Vec::new();
    let mut i = 0;
    while let Some(start) = find(code, i, "#![") {
        let end = matching_close(code, start + 2).unwrap_or(code.len());
        attributes.push(squeeze(&code[start..end]));
        i = end.max(start + 1);
    }
    attributes
}

/// Whether an attribute (whitespace removed) limits its item to test builds.
fn is_cfg_test(attribute: &str) -> bool {
    let inner = attribute
        .trim_start_matches("#!")
        .trim_start_matches('#')
        .trim_start_matches('[');
    inner == "cfg(test)]" || inner.starts_with("cfg(all(test,")
}

/// Blanks every `#[cfg(test)]` item (an inline `mod tests { … }`, a helper, a `use`) and
/// returns the modules it declares in files of their own (`#[cfg(test)] mod mock;`).
fn blank_test_items(code: &mut [char]) -> Vec<String> {
    let mut test_mods = Vec::new();
    let mut i = 0;
    while let Some(start) = find(code, i, "#[") {
        let Some(attribute_end) = matching_close(code, start + 1) else {
            break;
        };
        if !is_cfg_test(&squeeze(&code[start..attribute_end])) {
            i = attribute_end;
            continue;
        }
        // Further attributes of the same item, then the item itself.
        let mut item = skip_whitespace(code, attribute_end);
        while starts(code, item, "#[") {
            item = skip_whitespace(code, matching_close(code, item + 1).unwrap_or(code.len()));
        }
        let end = item_end(code, item);
        if let Some(name) = declared_mod(&code[item..end]) {
            test_mods.push(name);
        }
        for c in code.iter_mut().take(end).skip(start) {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = end.max(start + 1);
    }
    test_mods
}

/// `name` when the item is `[pub…] mod name;`.
fn declared_mod(item: &[char]) -> Option<String> {
    let text: String = item.iter().collect();
    let text = text.trim().strip_suffix(';')?;
    let mut words = text.split_whitespace().skip_while(|word| *word != "mod");
    words.next()?;
    let name = words.next()?;
    (words.next().is_none() && name.chars().all(is_ident)).then(|| name.to_string())
}

/// Every `crate::x` and `crate::{x::…, y}` of the code: `x` and `y`, with their lines.
fn crate_refs(code: &[char]) -> Vec<Ref> {
    let mut lines = Vec::with_capacity(code.len());
    let mut line = 1;
    for c in code {
        lines.push(line);
        if *c == '\n' {
            line += 1;
        }
    }
    let line_at = |i: usize| lines.get(i).copied().unwrap_or(line);
    let mut refs = Vec::new();
    let mut i = 0;
    while let Some(start) = find(code, i, "crate") {
        i = start + "crate".len();
        let before = start.checked_sub(1).map(|j| code[j]);
        if before.is_some_and(|c| is_ident(c) || c == '$')
            || code.get(i).is_some_and(|c| is_ident(*c))
        {
            continue;
        }
        let after = skip_whitespace(code, i);
        if !starts(code, after, "::") {
            continue;
        }
        let next = skip_whitespace(code, after + 2);
        match code.get(next) {
            Some('{') => refs.extend(group_heads(code, next).into_iter().map(|(target, at)| Ref {
                target,
                line: line_at(at),
            })),
            Some(c) if is_ident(*c) => {
                let target = ident_at(code, next);
                if target != "self" {
                    refs.push(Ref {
                        target,
                        line: line_at(next),
                    });
                }
            }
            _ => {}
        }
    }
    refs
}

/// The first name of each path of a `{…}` use group (not `self`), with its position.
fn group_heads(code: &[char], open: usize) -> Vec<(String, usize)> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut expecting = true;
    let mut i = open;
    while i < code.len() {
        let c = code[i];
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expecting = true,
            c if is_ident(c) => {
                let name = ident_at(code, i);
                if expecting && depth == 1 && name != "self" {
                    heads.push((name.clone(), i));
                }
                expecting = false;
                i += name.chars().count();
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    heads
}

fn ident_at(code: &[char], i: usize) -> String {
    code[i.min(code.len())..]
        .iter()
        .take_while(|c| is_ident(**c))
        .collect()
}

/// The end (exclusive) of the item starting at `i`: its `;` or its closing `}` (with a
/// `;` right after, as in `use a::{b};`), brackets matched.
fn item_end(code: &[char], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < code.len() {
        match code[j] {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                if depth == 0 {
                    // The enclosing block closes: the item was a field or an arm.
                    return j;
                }
                depth -= 1;
                if depth == 0 && code[j] == '}' {
                    let next = skip_whitespace(code, j + 1);
                    return if code.get(next) == Some(&';') {
                        next + 1
                    } else {
                        j + 1
                    };
                }
            }
            ';' if depth == 0 => return j + 1,
            _ => {}
        }
        j += 1;
    }
    code.len()
}

/// The index just past the bracket closing the one at `open`, if it closes.
fn matching_close(code: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, c) in code.iter().enumerate().skip(open) {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(j + 1);
                }
            }
            _ => {}
        }
    }
    None
}

fn find(code: &[char], from: usize, needle: &str) -> Option<usize> {
    let needle: Vec<char> = needle.chars().collect();
    (from..code.len()).find(|&i| code[i..].starts_with(&needle))
}

fn starts(code: &[char], i: usize, needle: &str) -> bool {
    let mut rest = code.iter().skip(i);
    needle.chars().all(|c| rest.next() == Some(&c))
}

fn skip_whitespace(code: &[char], mut i: usize) -> usize {
    while code.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

fn squeeze(code: &[char]) -> String {
    code.iter().filter(|c| !c.is_whitespace()).collect()
}
