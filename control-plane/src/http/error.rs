//! The one error type of the HTTP API and the one JSON shape it renders to.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::db::DbError;

/// Every way an HTTP call can fail. Messages are safe to show: they never carry a secret.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("missing credential: send Authorization: Bearer <master key>")]
    Unauthorized,
    #[error("this credential may not call admin endpoints")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("database unavailable, retry later")]
    DbUnavailable { retry_after: Duration },
    /// The detail is logged, never returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    pub fn from_db(e: DbError, retry_after: Duration) -> Self {
        match e {
            DbError::Unavailable => ApiError::DbUnavailable { retry_after },
            DbError::Conflict(field) => {
                ApiError::bad(&field, format!("a key with this {field} already exists"))
            }
            DbError::Failed(detail) => ApiError::Internal(detail),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::DbUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::MethodNotAllowed => "invalid_request_error",
            ApiError::Unauthorized => "authentication_error",
            ApiError::Forbidden => "permission_error",
            ApiError::NotFound(_) => "not_found_error",
            ApiError::DbUnavailable { .. } => "db_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The `{"error": {...}}` object, shared with the auth check's deny and unavailable bodies.
    pub fn body(&self) -> serde_json::Value {
        let param = match self {
            ApiError::BadRequest { param, .. } => param.clone(),
            _ => None,
        };
        json!({"error": {"message": self.to_string(), "type": self.kind(), "param": param, "code": self.status().as_u16().to_string()}})
    }
}

/// `retry-after` for a 503.
pub fn retry_after(d: Duration) -> (header::HeaderName, HeaderValue) {
    (header::RETRY_AFTER, HeaderValue::from(d.as_secs().max(1)))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let mut resp = (self.status(), Json(self.body())).into_response();
        if let ApiError::DbUnavailable { retry_after: d } = &self {
            let (k, v) = retry_after(*d);
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_openai_shape_with_the_status_as_code() {
        let b = ApiError::bad("duration", "bad duration").body();
        assert_eq!(b["error"]["param"], "duration");
        assert_eq!(b["error"]["code"], "400");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert_eq!(ApiError::Unauthorized.body()["error"]["code"], "401");
        assert!(ApiError::Forbidden.body()["error"]["param"].is_null());
    }

    #[test]
    fn internal_details_stay_out_of_the_body() {
        let b = ApiError::Internal("password=hunter2".into()).body();
        assert_eq!(b["error"]["message"], "internal error");
    }

    #[test]
    fn db_unavailable_carries_retry_after() {
        let r = ApiError::DbUnavailable {
            retry_after: Duration::from_secs(5),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
    }
}
