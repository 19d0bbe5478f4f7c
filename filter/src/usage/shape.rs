//! A stream's events repeat one shape: the last skimmed event that carried content is kept
//! as a template whose string values are slots, and the next event is first read against
//! it, comparing the bytes between slots and crossing the strings in them.
//!
//! Why it is exact: an event that equals the template outside its string values, and
//! holds a well-formed string in each slot, is the template with some strings replaced.
//! Its tokens are the template's (a string's body cannot end it early: its first
//! unescaped quote is where the template's next bytes must start), so it is JSON, holds
//! no usage object (a template never does), and its content is what its slots that
//! count decode to. Anything else (numbers, names, nesting changed; a bad escape) does
//! not match and is skimmed whole. Member names are never slots: they decide what counts.
//!
//! Why it pays: OpenAI's chunks and Anthropic's deltas differ only in strings (the
//! content, OpenAI's `obfuscation` padding), and comparing bytes a word at a time costs a
//! fraction of reading their structure, in V8 most of all.

use super::content::{skim, skim_with_slots, string_body, Skim, Slot};

/// Events longer than this are not kept as templates (the memory a stream holds for it).
pub const MAX_TEMPLATE_BYTES: usize = 2048;

/// Nor events with more strings than this: a stream holds at most two lists of slots
/// this long (the template's and the last event's), whatever its upstream sends.
pub const MAX_TEMPLATE_SLOTS: usize = 64;

/// Skims a stream's events, reading those of the last content event's shape against it.
#[derive(Debug, Clone, Default)]
pub struct ShapedSkimmer {
    /// The template's bytes; empty: none yet.
    template: Vec<u8>,
    /// Its string values, in order.
    slots: Vec<Slot>,
    /// The slots of the event being skimmed whole.
    scratch: Vec<Slot>,
}

impl ShapedSkimmer {
    /// What [`super::content::skim`] says of `data`.
    pub fn skim(&mut self, data: &[u8]) -> Option<Skim> {
        if let Some(content) = self.read_as_template(data) {
            return Some(Skim {
                content,
                usage_object: false,
            });
        }
        if data.len() > MAX_TEMPLATE_BYTES {
            return skim(data);
        }
        let skimmed = skim_with_slots(data, &mut self.scratch);
        if self.scratch.len() > MAX_TEMPLATE_SLOTS {
            // Not a template: its slots are not kept either.
            self.scratch = Vec::new();
            return skimmed;
        }
        let skimmed = skimmed?;
        let carries_content = self.scratch.iter().any(|slot| slot.content);
        if carries_content && !skimmed.usage_object {
            self.template.clear();
            self.template.extend_from_slice(data);
            std::mem::swap(&mut self.slots, &mut self.scratch);
        }
        Some(skimmed)
    }

    /// What it holds between events: the template's bytes and the slots of two events
    /// (bounded by [`MAX_TEMPLATE_BYTES`] and [`MAX_TEMPLATE_SLOTS`]).
    pub fn held(&self) -> (usize, usize) {
        (
            self.template.capacity(),
            self.slots.capacity().max(self.scratch.capacity()),
        )
    }

    /// The content of `data` if it is the template with other strings in its slots.
    fn read_as_template(&self, data: &[u8]) -> Option<u64> {
        if self.template.is_empty() {
            return None;
        }
        let mut content: u64 = 0;
        let (mut at, mut from) = (0, 0);
        for slot in &self.slots {
            let fixed = self.template.get(from..slot.start)?;
            if !same(data.get(at..at + fixed.len())?, fixed) {
                return None;
            }
            let (end, decoded) = slot_body(data, at + fixed.len(), &self.template, slot)?;
            if slot.content {
                content = content.saturating_add(decoded);
            }
            (at, from) = (end, slot.end);
        }
        let rest = self.template.get(from..)?;
        same(data.get(at..)?, rest).then_some(content)
    }
}

/// The string in `slot` of `data` from `start`: its closing quote and decoded length. Most
/// strings of a stream's events repeat (ids, names, the model): the template's own string
/// followed by its quote is compared before the string is crossed.
fn slot_body(data: &[u8], start: usize, template: &[u8], slot: &Slot) -> Option<(usize, u64)> {
    let repeated = template.get(slot.start..=slot.end)?;
    let end = start + repeated.len() - 1;
    match data.get(start..=end) {
        Some(here) if same(here, repeated) => Some((end, slot.decoded)),
        _ => string_body(data, start),
    }
}

/// Whether two byte strings are equal, compared eight bytes at a time (a slice's `==` is a
/// byte loop in the VM).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |w: &[u8]| <[u8; 8]>::try_from(w).ok().map(u64::from_ne_bytes);
    let (mut left, mut right) = (a.chunks_exact(8), b.chunks_exact(8));
    let words_equal = left
        .by_ref()
        .zip(right.by_ref())
        .all(|(x, y)| word(x) == word(y));
    // The tail byte by byte: a slice's `==` would call the VM's `memcmp`.
    let tail_equal = || (left.remainder().iter()).eq(right.remainder());
    words_equal && tail_equal()
}

#[cfg(test)]
mod tests;
