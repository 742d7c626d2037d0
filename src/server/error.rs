//! Errors as HTTP answers: `{"error": {"code": "…", "message": "…"}}` with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::Error;

/// An error answer of the HTTP API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (the library's [`Error::code`] where it comes from one).
    pub code: &'static str,
    /// For humans.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the body is not the JSON the route expects.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 500 for a failure that is the server's, not the request's.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// The HTTP status of a library error.
fn status_of(error: &Error) -> StatusCode {
    match error {
        // Values JSON can carry but a vector cannot hold (e.g. 1e39 overflows f32).
        Error::InvalidVector(_) => StatusCode::BAD_REQUEST,
        Error::InvalidArgument(_)
        | Error::InvalidName { .. }
        | Error::InvalidConfig(_)
        | Error::DimensionMismatch { .. }
        | Error::InvalidMetadata(_)
        | Error::InvalidFilter { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::CollectionNotFound(_) | Error::DocumentNotFound(_) => StatusCode::NOT_FOUND,
        Error::CollectionExists(_) | Error::DocumentExists(_) => StatusCode::CONFLICT,
        Error::DatabaseLocked(_) | Error::IndexUnavailable { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError::new(status_of(&error), error.code(), error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        }
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_map_to_statuses() {
        let cases = [
            (
                Error::DimensionMismatch {
                    expected: 3,
                    got: 2,
                },
                422,
            ),
            (Error::InvalidVector("NaN".into()), 400),
            (Error::CollectionNotFound("x".into()), 404),
            (Error::DocumentNotFound(uuid::Uuid::nil()), 404),
            (Error::CollectionExists("x".into()), 409),
            (Error::BatchTooLarge { detail: "x".into() }, 413),
            (Error::Internal("x".into()), 500),
        ];
        for (error, status) in cases {
            let code = error.code();
            let api = ApiError::from(error);
            assert_eq!(api.status.as_u16(), status, "{code}");
            assert_eq!(api.code, code);
        }
    }
}
