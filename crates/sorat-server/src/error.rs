//! Errors as the API answers them: `{ "error": { "code", "message", "field"? } }` with the
//! status code that says whose fault it was.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sorat_agent::protocol::{ErrorBody, ErrorDetail};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// A stable code.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// The field or header at fault.
    pub field: Option<String>,
}

impl ApiError {
    /// 400: the request is malformed.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// 400 about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.into()),
            ..ApiError::invalid(message)
        }
    }

    /// 401: no usable credentials.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: known caller, not allowed.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the state does not allow it (a lost lease, a run that already ended).
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 500: our fault; the message is logged, the answer says little.
    pub fn internal(message: impl Into<String>) -> ApiError {
        let message = message.into();
        tracing::error!(%message, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
}

impl From<sorat_state::StateError> for ApiError {
    fn from(error: sorat_state::StateError) -> ApiError {
        match error {
            sorat_state::StateError::NotFound { what } => {
                ApiError::not_found(format!("{what} not found"))
            }
            sorat_state::StateError::Conflict { what } => {
                ApiError::conflict("exists", format!("{what} already exists"))
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Shorthand for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
