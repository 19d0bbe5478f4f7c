//! Asking OpenAI for a stream's usage: `stream_options.include_usage: true`.
//!
//! OpenAI's chat and text completions report usage in a stream only when the request
//! asks for it; the answer then ends with one more chunk whose `choices` is empty and
//! whose `usage` is set. [`include_usage`] edits a request body so that it asks, by
//! splicing bytes into it: every other byte of the body stays as the client sent it (key
//! order, spacing, number spellings). An explicit `include_usage: false` is turned to
//! `true` as well, and said so: the gateway charges keys from this count, and a client
//! must not be able to opt out of it. The Responses API and Anthropic always report usage
//! in their streams; the glue applies this only to the completions paths.

use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// The body's `stream` is present and neither `true`, `false` nor `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotBoolean;

/// The body's top-level `stream` (the last one, as upstreams read duplicates): `Ok(true)`
/// only for JSON `true`. A string `"true"` or a number would be read as true by lax
/// upstreams (Python's pydantic) while the filter did not ask for the stream's usage: the
/// flow refuses it with a 400 naming `stream`. A body that is not a JSON object says
/// nothing here (`Ok(false)`): the model check refuses it on its own terms.
pub fn stream_flag(body: &[u8]) -> Result<bool, NotBoolean> {
    let Ok(top) = serde_json::from_slice::<Members<'_>>(body) else {
        return Ok(false);
    };
    match top.get("stream").map(|v| v.get()) {
        None | Some("false" | "null") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(NotBoolean),
    }
}

/// The result of [`include_usage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// The new body; `overrode` when the client had set `include_usage` to something other
    /// than `true` (counted by the glue).
    Rewritten {
        body: Vec<u8>,
        overrode: bool,
    },
    Unchanged(Unchanged),
}

/// Why the body is left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchanged {
    /// `stream` is not `true`: usage comes in the body.
    NotStreamed,
    /// It asks already.
    AlreadyIncluded,
    /// Larger than the bound the glue buffers.
    TooLarge,
    /// Not a JSON object, or `stream_options` is neither an object nor `null`: the upstream will refuse
    /// it on its own terms, with its own message.
    NotEditable,
}

/// Returns the body with `stream_options.include_usage: true` when it streams without it.
pub fn include_usage(body: &[u8], max_bytes: usize) -> Rewrite {
    if body.len() > max_bytes {
        return Rewrite::Unchanged(Unchanged::TooLarge);
    }
    match plan(body) {
        Ok(edit) => edit.apply(body),
        Err(why) => Rewrite::Unchanged(why),
    }
}

/// One splice: replace `range` of the body by `text`.
struct Edit {
    at: usize,
    remove: usize,
    text: &'static str,
    overrode: bool,
}

impl Edit {
    fn apply(self, body: &[u8]) -> Rewrite {
        let (Some(head), Some(tail)) = (body.get(..self.at), body.get(self.at + self.remove..))
        else {
            return Rewrite::Unchanged(Unchanged::NotEditable);
        };
        let mut out = Vec::with_capacity(body.len() + self.text.len());
        out.extend_from_slice(head);
        out.extend_from_slice(self.text.as_bytes());
        out.extend_from_slice(tail);
        Rewrite::Rewritten {
            body: out,
            overrode: self.overrode,
        }
    }
}

type Members<'a> = BTreeMap<String, &'a RawValue>;

fn plan(body: &[u8]) -> Result<Edit, Unchanged> {
    let text = std::str::from_utf8(body).map_err(|_| Unchanged::NotEditable)?;
    let top: Members<'_> = serde_json::from_str(text).map_err(|_| Unchanged::NotEditable)?;
    if top.get("stream").map(|v| v.get()) != Some("true") {
        return Err(Unchanged::NotStreamed);
    }
    let Some(options) = top.get("stream_options") else {
        // `stream` is a member, so the object is not empty: a comma goes first.
        let close = text.trim_end().len().checked_sub(1);
        return match close {
            Some(at) if text.as_bytes().get(at) == Some(&b'}') => Ok(Edit {
                at,
                remove: 0,
                text: ",\"stream_options\":{\"include_usage\":true}",
                overrode: false,
            }),
            _ => Err(Unchanged::NotEditable),
        };
    };
    if options.get() == "null" {
        return Ok(Edit {
            at: offset(text, options.get()).ok_or(Unchanged::NotEditable)?,
            remove: options.get().len(),
            text: "{\"include_usage\":true}",
            overrode: false,
        });
    }
    let inner: Members<'_> =
        serde_json::from_str(options.get()).map_err(|_| Unchanged::NotEditable)?;
    match inner.get("include_usage") {
        Some(value) if value.get() == "true" => Err(Unchanged::AlreadyIncluded),
        Some(value) => Ok(Edit {
            at: offset(text, value.get()).ok_or(Unchanged::NotEditable)?,
            remove: value.get().len(),
            text: "true",
            overrode: true,
        }),
        None => {
            let open = offset(text, options.get()).ok_or(Unchanged::NotEditable)?;
            Ok(Edit {
                at: open + 1,
                remove: 0,
                text: if inner.is_empty() {
                    "\"include_usage\":true"
                } else {
                    "\"include_usage\":true,"
                },
                overrode: false,
            })
        }
    }
}

/// Where `part`, a slice borrowed from `whole`, starts in it.
fn offset(whole: &str, part: &str) -> Option<usize> {
    let at = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (whole.get(at..at + part.len()) == Some(part)).then_some(at)
}
