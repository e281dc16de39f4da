//! JSON errors for the REST API: `{"error": {"code": "not_found", "message": "…"}}` with the matching
//! HTTP status. Hub errors are classified (and logged, and sanitised) by `HubError::public`.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ErrorKind, HubError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `invalid_argument`, `unauthenticated`, `forbidden`, `not_found`, `already_exists`,
    /// `failed_precondition`, `timeout`, `unavailable`, `internal`, `method_not_allowed`.
    pub code: String,
    /// One line for a person.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "invalid or missing admin token (send `Authorization: Bearer <token>`)",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

/// The HTTP status of a kind of hub error (the API's and the dashboard's).
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition => StatusCode::CONFLICT,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<HubError> for ApiError {
    fn from(err: HubError) -> Self {
        let (kind, message) = err.public();
        Self::new(status_of(kind), kind.as_str(), message)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        HubError::from(err).into()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        // axum knows which status fits (415 without a JSON content type, 413 past the body limit,
        // 400/422 for bad JSON); serde's text names the field and position.
        if let JsonRejection::BytesRejection(inner) = &rejection {
            return Self::from_body_error(inner);
        }
        let status = match rejection.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        Self::new(status, "invalid_argument", rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        Self::from_body_error(&rejection)
    }
}

impl ApiError {
    /// A body that could not be read: too slow (408, from `body_deadline`), too large (413), broken.
    fn from_body_error(rejection: &BytesRejection) -> Self {
        if super::body_deadline::is_deadline(rejection) {
            return Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                super::body_deadline::BodyDeadline.to_string(),
            );
        }
        Self::new(
            rejection.status(),
            "invalid_argument",
            rejection.body_text(),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_errors_keep_their_class_and_hide_internals() {
        let e = ApiError::from(HubError::AgentNotFound("x".into()));
        assert_eq!((e.status, e.code), (StatusCode::NOT_FOUND, "not_found"));
        let e = ApiError::from(HubError::Internal("/secret/path".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message.contains("/secret"));
        let e = ApiError::from(HubError::AgentExists("x".into()));
        assert_eq!(e.status, StatusCode::CONFLICT);
    }
}
