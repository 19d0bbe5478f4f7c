//! The bytes of generated content in one stream event, counted in one pass without
//! building a document: serde visitors that sum string lengths and skip everything else.
//!
//! Counted: the string leaves of the event's `delta` (Anthropic's `content_block_delta`,
//! the Responses API's `*.delta` events) and of each choice's `delta` and `text` (OpenAI's
//! chat and completions chunks). Role and type names inside a delta count too: a few bytes,
//! on the side of the client paying. Any other shape counts 0; only data that is not JSON
//! is an error.

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// The content bytes of one event's data; `None` when it is not JSON.
pub fn content_bytes(data: &[u8]) -> Option<u64> {
    let mut de = serde_json::Deserializer::from_slice(data);
    let n = de.deserialize_any(Count(Part::Event)).ok()?;
    de.end().ok()?;
    Some(n)
}

/// Where in the event the value being read sits.
#[derive(Clone, Copy)]
enum Part {
    /// The event itself: its `choices` and `delta` are read.
    Event,
    /// `choices`: each element is a choice.
    Choices,
    /// One choice: its `text` and `delta` are read.
    Choice,
    /// Content: every string inside counts.
    Leaves,
}

/// Counts the content bytes of a value at `Part`; values of any other type count 0.
struct Count(Part);

impl<'de> serde::de::DeserializeSeed<'de> for Count {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Count {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, s: &str) -> Result<u64, E> {
        Ok(match self.0 {
            Part::Leaves => u64::try_from(s.len()).unwrap_or(u64::MAX),
            _ => 0,
        })
    }

    fn visit_bool<E>(self, _: bool) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_i64<E>(self, _: i64) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_u64<E>(self, _: u64) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_f64<E>(self, _: f64) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_unit<E>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_none<E>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let element = match self.0 {
            Part::Choices => Part::Choice,
            Part::Leaves => Part::Leaves,
            Part::Event | Part::Choice => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(0);
            }
        };
        let mut n: u64 = 0;
        while let Some(more) = seq.next_element_seed(Count(element))? {
            n = n.saturating_add(more);
        }
        Ok(n)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut n: u64 = 0;
        while let Some(key) = map.next_key::<Key>()? {
            let part = match (self.0, key) {
                (Part::Leaves, _) => Some(Part::Leaves),
                (Part::Event, Key::Choices) => Some(Part::Choices),
                (Part::Event | Part::Choice, Key::Delta) | (Part::Choice, Key::Text) => {
                    Some(Part::Leaves)
                }
                _ => None,
            };
            let more = match part {
                Some(part) => map.next_value_seed(Count(part))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                    0
                }
            };
            n = n.saturating_add(more);
        }
        Ok(n)
    }
}

/// A member's name, read without copying it.
#[derive(Clone, Copy)]
enum Key {
    Choices,
    Delta,
    Text,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, name: &str) -> Result<Key, E> {
        Ok(match name {
            "choices" => Key::Choices,
            "delta" => Key::Delta,
            "text" => Key::Text,
            _ => Key::Other,
        })
    }
}
