//! Request extractors that fail with `ApiError`: JSON bodies, query strings, the master key.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use futures_util::StreamExt;
use livegate_contract::headers::{AUTHORIZATION, X_API_KEY};
use livegate_contract::{ApiKey, CredentialError};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::model::keys::KeyHash;

/// The credential, by the contract's one rule (the filter applies the same one): the
/// `Authorization: Bearer` key, else `x-api-key`; a malformed `authorization` is refused.
pub fn credential(headers: &HeaderMap) -> Result<ApiKey, CredentialError> {
    let raw = |name: &str| headers.get(name).map(|v| v.as_bytes());
    ApiKey::from_headers(raw(AUTHORIZATION), raw(X_API_KEY))
}

/// Which fields a request body (or query string) may carry. Anything else is refused by
/// name, never stored and ignored: a field livegate would not enforce must not look set.
pub trait Fields: Default + serde::Serialize {
    /// LiteLLM's fields for the same call that livegate does not implement: refused as
    /// "not supported" rather than "unknown", unless they ask for nothing (null, [], {}).
    const NOT_SUPPORTED: &'static [&'static str] = &[];
}

/// Refuses the first field that is neither accepted nor an empty not-supported one.
pub fn check_fields<'a>(
    fields: impl IntoIterator<Item = (&'a str, bool)>,
    accepted: &[&str],
    not_supported: &[&str],
) -> Result<(), ApiError> {
    for (name, asks_nothing) in fields {
        if accepted.contains(&name) {
            continue;
        }
        if not_supported.contains(&name) {
            if asks_nothing {
                continue;
            }
            return Err(ApiError::bad(
                name,
                format!("{name} is not supported by livegate: it would not be enforced, so it is refused (docs/operations.md lists what is)"),
            ));
        }
        return Err(ApiError::bad(
            name,
            format!("unknown field {name}; accepted: {}", accepted.join(", ")),
        ));
    }
    Ok(())
}

fn asks_nothing(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A JSON object body whose fields `T` accepts. An empty body reads as `{}`; errors name
/// the offending field.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Fields,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = AppState::from_ref(state).config.body_limit;
        let bytes = read_body(req.into_body(), limit).await?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse_fields(bytes).map(JsonBody)
    }
}

/// How much of a body past the limit is read and thrown away before the 413. A server that
/// answers and closes with the body unread makes the kernel reset the connection, and a
/// client still sending then gets a broken pipe instead of the answer.
const DRAIN_PAST_LIMIT: usize = 1024 * 1024;

/// The body, up to `limit` bytes; beyond it, 413 once the rest (up to
/// [`DRAIN_PAST_LIMIT`]) has been read.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest {
            message: format!("could not read the body: {e}"),
            param: None,
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            kept.extend_from_slice(&chunk);
        } else if seen > limit.saturating_add(DRAIN_PAST_LIMIT) {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(Bytes::from(kept))
}

/// The fields livegate implements for `T`: the names its type gives them (read off its
/// default, so a field added to the type is accepted, and only then).
pub fn accepted<T: Fields>() -> Vec<String> {
    match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Parses a JSON object, refusing fields `T` does not accept, then reads it as `T`.
pub fn parse_fields<T: DeserializeOwned + Fields>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = parse_json(bytes)?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::BadRequest {
            message: "the body must be a JSON object".into(),
            param: None,
        });
    };
    let accepted = accepted::<T>();
    let accepted: Vec<&str> = accepted.iter().map(String::as_str).collect();
    check_fields(
        object.iter().map(|(k, v)| (k.as_str(), asks_nothing(v))),
        &accepted,
        T::NOT_SUPPORTED,
    )?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let param = (path != "." && path != "?").then_some(path);
        ApiError::BadRequest {
            message: format!("invalid request body: {}", e.into_inner()),
            param,
        }
    })
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
        match Caller::from_request_parts(parts, state).await? {
            Caller::Master => Ok(MasterKey),
            Caller::Key(_) => Err(ApiError::Forbidden),
        }
    }
}

/// Who is calling: the master key, or an API key (its hash; whether it is any good is
/// the handler's to decide). No credential is 401.
pub enum Caller {
    Master,
    Key(KeyHash),
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let presented = credential(&parts.headers).map_err(|_| ApiError::Unauthorized)?;
        if keys_match(presented.as_str(), state.config.master_key.expose()) {
            Ok(Caller::Master)
        } else {
            Ok(Caller::Key(presented.hash()))
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

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn key(pairs: &[(&'static str, &str)]) -> Result<String, CredentialError> {
        credential(&headers(pairs)).map(|k| k.as_str().to_string())
    }

    #[test]
    fn the_credential_follows_the_contract_rule() {
        assert_eq!(
            key(&[("authorization", "Bearer sk-1")]).as_deref(),
            Ok("sk-1")
        );
        assert_eq!(
            key(&[("authorization", "bearer  sk-1 ")]).as_deref(),
            Ok("sk-1")
        );
        assert_eq!(key(&[("x-api-key", "sk-2")]).as_deref(), Ok("sk-2"));
        assert_eq!(key(&[]), Err(CredentialError::Missing));
        assert_eq!(
            key(&[("authorization", "Bearer ")]),
            Err(CredentialError::Empty)
        );
        // A malformed authorization is refused, not skipped for x-api-key.
        assert_eq!(
            key(&[("authorization", "Basic abc"), ("x-api-key", "sk-2")]),
            Err(CredentialError::NotBearer)
        );
        let long = format!("Bearer {}", "k".repeat(livegate_contract::MAX_KEY_LEN + 1));
        assert_eq!(
            key(&[("authorization", &long)]),
            Err(CredentialError::TooLong)
        );
    }

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

    #[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
    #[allow(dead_code)]
    struct Strict {
        models: Option<Vec<String>>,
    }

    impl Fields for Strict {
        const NOT_SUPPORTED: &'static [&'static str] = &["rpm_limit"];
    }

    #[test]
    fn the_accepted_fields_are_the_types_own() {
        assert_eq!(accepted::<Strict>(), ["models"]);
    }

    fn refused(body: &str) -> (String, String) {
        match parse_fields::<Strict>(body.as_bytes()) {
            Err(ApiError::BadRequest {
                message,
                param: Some(p),
            }) => (p, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_and_unsupported_fields_are_refused_by_name() {
        let (param, message) = refused(r#"{"models": [], "rpm_limt": 2}"#);
        assert_eq!(param, "rpm_limt");
        assert!(message.starts_with("unknown field rpm_limt"), "{message}");
        let (param, message) = refused(r#"{"rpm_limit": 2}"#);
        assert_eq!(param, "rpm_limit");
        assert!(message.contains("not supported"), "{message}");
        let (param, _) = refused(r#"{"models": "gpt-4"}"#);
        assert_eq!(param, "models");
    }

    #[test]
    fn an_unsupported_field_asking_for_nothing_passes() {
        assert!(parse_fields::<Strict>(br#"{"rpm_limit": null, "models": ["a"]}"#).is_ok());
        assert!(parse_fields::<Strict>(b"[1]").is_err());
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
