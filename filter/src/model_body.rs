//! The `model` a request names on the model routes, read from its JSON body, and the
//! body with that model replaced (a key's alias): one splice, every other byte as sent.

use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// The paths whose JSON body names a `model` (OpenAI's and Anthropic's, with and without
/// `/v1`, as LiteLLM serves them).
pub const MODEL_PATHS: [&str; 10] = [
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/completions",
    "/completions",
    "/v1/embeddings",
    "/embeddings",
    "/v1/responses",
    "/responses",
    "/v1/messages",
    "/messages",
];

/// Whether a request path (query excluded) is a model route.
pub fn is_model_route(path: &str) -> bool {
    MODEL_PATHS.contains(&path)
}

/// The model a body names, and where its JSON string sits in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedModel {
    pub name: String,
    at: usize,
    len: usize,
}

/// Why a model route's body names no model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// No body at all.
    Empty,
    /// Not a JSON object.
    NotJson,
    /// A JSON object without a string `model`.
    NoModel,
}

impl BodyError {
    pub fn message(self) -> &'static str {
        match self {
            BodyError::Empty => "this route needs a JSON body naming a model",
            BodyError::NotJson => "the request body is not a JSON object",
            BodyError::NoModel => "the request body has no \"model\" (a string)",
        }
    }
}

/// Reads the top-level `model` (the last one, if a client sent it twice, as Python's and
/// serde's JSON readers do upstream).
pub fn requested_model(body: &[u8]) -> Result<RequestedModel, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|_| BodyError::NotJson)?;
    let members: BTreeMap<String, &RawValue> =
        serde_json::from_str(text).map_err(|_| BodyError::NotJson)?;
    let raw = members.get("model").ok_or(BodyError::NoModel)?;
    let name: String = serde_json::from_str(raw.get()).map_err(|_| BodyError::NoModel)?;
    let at = offset(text, raw.get()).ok_or(BodyError::NoModel)?;
    Ok(RequestedModel {
        name,
        at,
        len: raw.get().len(),
    })
}

impl RequestedModel {
    /// The body with this model's string replaced by `model`; `None` if `body` is not the
    /// body this was read from.
    pub fn replaced(&self, body: &[u8], model: &str) -> Option<Vec<u8>> {
        let head = body.get(..self.at)?;
        let tail = body.get(self.at.checked_add(self.len)?..)?;
        let quoted = serde_json::to_string(model).ok()?;
        let mut out = Vec::with_capacity(head.len() + quoted.len() + tail.len());
        out.extend_from_slice(head);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(tail);
        Some(out)
    }
}

/// Where `part`, a slice borrowed from `whole`, starts in it.
fn offset(whole: &str, part: &str) -> Option<usize> {
    let at = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (whole.get(at..at + part.len()) == Some(part)).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_model_is_read_from_a_chat_body() {
        let body = br#"{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"}"#;
        assert_eq!(requested_model(body).unwrap().name, "gpt-4o");
        let escaped = br#"{"model": "a\"b\u0041"}"#;
        assert_eq!(requested_model(escaped).unwrap().name, "a\"bA");
    }

    #[test]
    fn bodies_without_a_model_are_errors() {
        assert_eq!(requested_model(b""), Err(BodyError::Empty));
        assert_eq!(requested_model(b"  \n"), Err(BodyError::Empty));
        assert_eq!(requested_model(b"not json"), Err(BodyError::NotJson));
        assert_eq!(requested_model(b"[1, 2]"), Err(BodyError::NotJson));
        assert_eq!(requested_model(b"{\"model\": 4}"), Err(BodyError::NoModel));
        assert_eq!(
            requested_model(b"{\"input\": \"x\"}"),
            Err(BodyError::NoModel)
        );
        // A nested `model` is not the request's.
        assert_eq!(
            requested_model(br#"{"metadata": {"model": "x"}}"#),
            Err(BodyError::NoModel)
        );
    }

    #[test]
    fn an_alias_is_replaced_and_nothing_else_moves() {
        let body = br#"{ "model" : "fast",  "stream":true, "n": 1.50 }"#;
        let found = requested_model(body).unwrap();
        let out = found.replaced(body, "gpt-4o").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "model" : "gpt-4o",  "stream":true, "n": 1.50 }"#
        );
    }

    #[test]
    fn model_routes_are_exact_paths() {
        assert!(is_model_route("/v1/chat/completions"));
        assert!(is_model_route("/messages"));
        assert!(!is_model_route("/v1/models"));
        assert!(!is_model_route("/v1/chat/completions/x"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = requested_model(&bytes);
        }

        #[test]
        fn a_replaced_model_reads_back(model in "\\PC{0,20}", alias in "\\PC{0,20}") {
            let body = serde_json::json!({"model": alias, "messages": []}).to_string();
            let found = requested_model(body.as_bytes()).unwrap();
            let out = found.replaced(body.as_bytes(), &model).unwrap();
            prop_assert_eq!(requested_model(&out).unwrap().name, model);
        }
    }
}
