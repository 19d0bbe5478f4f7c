//! The one error type of the HTTP API, rendered into the contract's one JSON shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use livegate_contract::{DenyReason, ErrorBody, ErrorObject, ErrorType};

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
    /// An internal endpoint called without the filter's shared token.
    #[error("internal endpoint: send the shared token in x-livegate-internal-token")]
    InternalUnauthorized,
    #[error("this credential may not call admin endpoints")]
    Forbidden,
    /// A key reading what is not its own (LiteLLM's 403 with its message).
    #[error("{0}")]
    NotAllowed(String),
    /// An API key refused for what it is (unknown, blocked, expired).
    #[error("{}", .0.error().message)]
    Denied(DenyReason),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Sent with `retry-after`, which the router stamps on every 503 (`http/mod.rs`).
    #[error("database unavailable, retry later")]
    DbUnavailable,
    /// Something other than the database is away or full (the spend spool): 503.
    #[error("{0}")]
    Unavailable(String),
    /// The detail is logged, never returned.
    #[error("internal error")]
    Internal(String),
}

/// The one place a database failure becomes an HTTP error, so handlers use `?`.
impl From<crate::budget::BudgetFieldError> for ApiError {
    fn from(e: crate::budget::BudgetFieldError) -> Self {
        ApiError::bad(e.param, e.message)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable => ApiError::DbUnavailable,
            DbError::Conflict(field) => {
                ApiError::bad(&field, format!("this {field} is already in use"))
            }
            DbError::NoSuchReference(field) => ApiError::bad(
                &field,
                format!("{field} names no team: create it with /team/new first"),
            ),
            DbError::Failed(detail) | DbError::Refused(detail) => ApiError::Internal(detail),
        }
    }
}

impl ApiError {
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized | ApiError::InternalUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::NotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::Denied(reason) => {
                StatusCode::from_u16(reason.status()).unwrap_or(StatusCode::FORBIDDEN)
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::DbUnavailable | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> ErrorType {
        match self {
            ApiError::BadRequest { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::MethodNotAllowed => ErrorType::BadRequestError,
            ApiError::Unauthorized
            | ApiError::InternalUnauthorized
            | ApiError::Forbidden
            | ApiError::NotAllowed(_) => ErrorType::AuthError,
            ApiError::Denied(reason) => reason.error_type(),
            ApiError::NotFound(_) => ErrorType::NotFoundError,
            ApiError::DbUnavailable => ErrorType::NoDbConnection,
            ApiError::Unavailable(_) => ErrorType::ServiceUnavailable,
            ApiError::Internal(_) => ErrorType::InternalServerError,
        }
    }

    /// The `{"error": {...}}` body.
    pub fn body(&self) -> ErrorBody {
        if let ApiError::Denied(reason) = self {
            return reason.error().into_body();
        }
        let mut error = ErrorObject::new(self.status().as_u16(), self.kind(), self.to_string());
        if let ApiError::BadRequest { param, .. } = self {
            error.param = param.clone();
        }
        error.into_body()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        (self.status(), Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(e: ApiError) -> ErrorObject {
        e.body().error
    }

    #[test]
    fn every_error_has_the_openai_shape_with_the_status_as_code() {
        let b = error(ApiError::bad("duration", "bad duration"));
        assert_eq!(b.param.as_deref(), Some("duration"));
        assert_eq!(b.code, "400");
        assert_eq!(b.kind, ErrorType::BadRequestError);
        assert_eq!(error(ApiError::Unauthorized).code, "401");
        assert_eq!(error(ApiError::Forbidden).param, None);
    }

    #[test]
    fn internal_details_stay_out_of_the_body() {
        let b = error(ApiError::Internal("password=hunter2".into()));
        assert_eq!(b.message, "internal error");
    }

    #[test]
    fn database_errors_map_to_their_statuses() {
        assert_eq!(
            ApiError::from(DbError::Unavailable).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let conflict = error(ApiError::from(DbError::Conflict("key_alias".into())));
        assert_eq!(
            (conflict.code.as_str(), conflict.param.as_deref()),
            ("400", Some("key_alias"))
        );
        let failed = ApiError::from(DbError::Failed("boom".into()));
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
