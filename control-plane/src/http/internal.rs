//! The internal API's guard: the filter's calls carry the shared token, nobody else's do.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use livegate_contract::headers::INTERNAL_TOKEN;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// Lets a request through only with `x-livegate-internal-token` equal to the configured
/// token; anything else is a 401 in the JSON error shape, before any handler runs.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if carries_token(req.headers(), state.config.internal_token.expose()) {
        next.run(req).await
    } else {
        state
            .metrics
            .internal_token_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ApiError::InternalUnauthorized.into_response()
    }
}

/// Whether the headers hold exactly one token equal to `expected`, compared in constant time
/// (the comparison's time depends on the lengths only).
pub fn carries_token(headers: &HeaderMap, expected: &str) -> bool {
    let mut values = headers.get_all(INTERNAL_TOKEN).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    bool::from(value.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "internal-test-0123456789abcdef0123456789abcdef";

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(INTERNAL_TOKEN, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_the_exact_token_once_passes() {
        assert!(carries_token(&headers(&[TOKEN]), TOKEN));
        assert!(!carries_token(&headers(&[]), TOKEN));
        assert!(!carries_token(&headers(&["wrong"]), TOKEN));
        assert!(!carries_token(
            &headers(&[&TOKEN[..TOKEN.len() - 1]]),
            TOKEN
        ));
        assert!(!carries_token(&headers(&[&format!("{TOKEN}x")]), TOKEN));
        assert!(!carries_token(&headers(&[TOKEN, "wrong"]), TOKEN));
        assert!(!carries_token(&headers(&["", TOKEN]), TOKEN));
    }
}
