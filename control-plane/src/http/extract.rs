//! Request extractors that fail with `ApiError`: JSON bodies, query strings, the master key.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// A JSON body. An empty body reads as `{}`; errors name the offending field.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = AppState::from_ref(state).config.body_limit;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::BadRequest {
                    message: format!("could not read the body: {e}"),
                    param: None,
                }
            }
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse_json(bytes).map(JsonBody)
    }
}

/// Parses JSON, reporting the path of the field that failed as `param`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let param = (path != "." && path != "?").then_some(path);
        let inner = e.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON body: {inner}")
        } else {
            format!("invalid request body: {inner}")
        };
        ApiError::BadRequest { message, param }
    })
}

/// Proof that the caller presented the master key.
pub struct MasterKey;

impl<S> FromRequestParts<S> for MasterKey
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let presented =
            crate::auth::credential(&parts.headers).map_err(|_| ApiError::Unauthorized)?;
        if keys_match(presented.as_str(), state.config.master_key.expose()) {
            Ok(MasterKey)
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// Constant-time comparison; hashing first hides the length of the master key as well.
fn keys_match(presented: &str, master: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(master.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct T {
        models: Option<Vec<String>>,
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = parse_json::<T>(br#"{"models": "gpt-4"}"#).unwrap_err();
        assert!(
            matches!(e, ApiError::BadRequest { param: Some(ref p), .. } if p == "models"),
            "{e:?}"
        );
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        let e = parse_json::<T>(b"{not json").unwrap_err();
        assert!(e.to_string().starts_with("malformed JSON body"), "{e}");
    }

    #[test]
    fn the_master_key_must_match_exactly() {
        assert!(keys_match("sk-master", "sk-master"));
        assert!(!keys_match("sk-maste", "sk-master"));
        assert!(!keys_match("", "sk-master"));
    }
}
