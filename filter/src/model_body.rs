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

/// The route a normal path names: one trailing slash dropped, as the Python frameworks
/// upstream route `/v1/chat/completions/` to the same handler (or redirect to it), so the
/// policy and the meter must not take it for a route without a model.
pub fn route(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => path,
    }
}

/// The prefixes of the routes that carry the model in the path (Azure OpenAI's, and the
/// older `engines` spelling LiteLLM serves too): `{prefix}{model}/{operation}`.
pub const PATH_MODEL_PREFIXES: [&str; 2] = ["/openai/deployments/", "/engines/"];

/// The operations after a path's model that the filter knows (their body is OpenAI's).
/// Any other operation under a path-model prefix names no model the filter can vouch for.
pub const PATH_MODEL_OPERATIONS: [&str; 3] = ["/chat/completions", "/completions", "/embeddings"];

/// Where a protected request names its model, decided from its normal path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// OpenAI's and Anthropic's routes: the JSON body's `model`.
    Body,
    /// Azure's routes: one path segment (and the body's `model` too, if it names one).
    Path(PathModel),
    /// No model the filter can read: files, batches, images, audio, assistants…
    None,
}

/// The model of an Azure-style path, and the path around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathModel {
    pub name: String,
    before: String,
    after: String,
}

impl PathModel {
    /// The path with `model` in place of this one (an alias resolved), as one segment.
    pub fn with_model(&self, model: &str) -> String {
        format!(
            "{}{}{}",
            self.before,
            crate::path::encode_segment(model),
            self.after
        )
    }

    /// The operation after the model (`/chat/completions`).
    pub fn operation(&self) -> &str {
        &self.after
    }
}

/// Where the request on a normal path (query excluded) names its model. A path-model
/// route must be exactly `{prefix}{one segment}{known operation}`: anything else under
/// those prefixes (a model spelled over two segments, an unknown operation) is `None`,
/// so that a restricted key is refused there rather than checked against a guess.
pub fn model_source(path: &str) -> ModelSource {
    let path = route(path);
    if is_model_route(path) {
        return ModelSource::Body;
    }
    for prefix in PATH_MODEL_PREFIXES {
        let Some(tail) = path.strip_prefix(prefix) else {
            continue;
        };
        let Some(slash) = tail.find('/') else {
            return ModelSource::None;
        };
        let (segment, after) = tail.split_at(slash);
        if segment.is_empty() || !PATH_MODEL_OPERATIONS.contains(&after) {
            return ModelSource::None;
        }
        return match crate::path::decode_segment(segment) {
            Some(name) => ModelSource::Path(PathModel {
                name,
                before: prefix.to_string(),
                after: after.to_string(),
            }),
            None => ModelSource::None,
        };
    }
    ModelSource::None
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

    #[test]
    fn azure_paths_carry_their_model_in_one_segment() {
        let ModelSource::Path(m) = model_source("/openai/deployments/gpt-4o/chat/completions")
        else {
            panic!("not a path model");
        };
        assert_eq!(m.name, "gpt-4o");
        assert_eq!(m.operation(), "/chat/completions");
        assert_eq!(
            m.with_model("openai/o1"),
            "/openai/deployments/openai%2Fo1/chat/completions"
        );
        let ModelSource::Path(m) = model_source("/engines/my%20model/embeddings") else {
            panic!("not a path model");
        };
        assert_eq!(m.name, "my model");
        assert_eq!(model_source("/v1/chat/completions"), ModelSource::Body);
    }

    #[test]
    fn a_trailing_slash_names_the_same_route() {
        assert_eq!(model_source("/v1/chat/completions/"), ModelSource::Body);
        assert_eq!(model_source("/v1/messages/"), ModelSource::Body);
        let ModelSource::Path(m) = model_source("/openai/deployments/gpt-4o/chat/completions/")
        else {
            panic!("not a path model");
        };
        assert_eq!(m.name, "gpt-4o");
        assert_eq!(route("/"), "/");
        assert_eq!(route("/v1/files"), "/v1/files");
    }

    #[test]
    fn paths_without_a_readable_model_have_none() {
        for path in [
            "/v1/files",
            "/v1/batches",
            "/v1/images/generations",
            "/v1/audio/transcriptions",
            "/v1/assistants",
            "/v1/realtime",
            "/v1/fine_tuning/jobs",
            "/openai/deployments",
            "/openai/deployments/",
            "/openai/deployments/gpt-4o",
            "/openai/deployments/gpt-4o/",
            "/openai/deployments//chat/completions",
            "/openai/deployments/a/b/chat/completions",
            "/openai/deployments/gpt-4o/audio/speech",
            "/openai/deployments/%FF/chat/completions",
            "/v1/models",
        ] {
            assert_eq!(model_source(path), ModelSource::None, "{path}");
        }
    }

    proptest! {
        #[test]
        fn any_path_is_classified_without_panic(path in "\\PC{0,60}") {
            let _ = model_source(&path);
        }

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
