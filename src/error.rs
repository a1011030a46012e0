//! `ApiError`: every error the HTTP API returns, mapped in one place to a
//! status code and the JSON error shape of API.md:
//! `{"error": {"code", "message", "details"}}`. 4xx for the caller's
//! mistakes, 5xx only for the server's own faults.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use baton_actors::workflow::Problem;
use baton_actors::{EngineError, StoreError};
use serde::Serialize;
use serde_json::json;
use thiserror::Error;

/// An error answered over HTTP.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The request is malformed; `details` lists each problem with its path.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// Human-readable summary.
        message: String,
        /// Each problem, with its path.
        details: Vec<Problem>,
    },
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The credentials do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The method is not allowed on this path.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` names a stale version.
    #[error("{0}")]
    PreconditionFailed(String),
    /// `If-Match` is required.
    #[error("{0}")]
    PreconditionRequired(String),
    /// The body is over the limit.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body's content type is not supported.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// This node cannot serve the request now.
    #[error("{message}")]
    Unavailable {
        /// Machine-readable code.
        code: &'static str,
        /// Human-readable summary.
        message: String,
    },
    /// The server's own fault.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with one problem.
    pub fn bad_request(code: &'static str, path: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::BadRequest {
            code,
            message: if path.is_empty() {
                message.clone()
            } else {
                format!("{path}: {message}")
            },
            details: vec![Problem::new(path, message)],
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::Unavailable { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PreconditionFailed(_) => "precondition_failed",
            ApiError::PreconditionRequired(_) => "precondition_required",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, such as `invalid_definition`.
    pub code: String,
    /// Human-readable summary.
    pub message: String,
    /// Each problem, with its path.
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<Problem>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let details = match self {
            ApiError::BadRequest { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        if let ApiError::Internal(m) = self {
            tracing::error!(error = %m, "internal error answered with 500");
        }
        let mut resp = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unavailable { .. }) {
            resp.insert_header(("Retry-After", "1"));
        }
        resp.json(json!({ "error": { "code": self.code(), "message": self.to_string(), "details": details } }))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            StoreError::AlreadyExists { .. } | StoreError::Conflict(_) => {
                ApiError::Conflict(e.to_string())
            }
            StoreError::VersionMismatch { .. } => ApiError::PreconditionFailed(e.to_string()),
            StoreError::OwnershipLost { .. } => ApiError::Conflict(e.to_string()),
            StoreError::Db(_) | StoreError::Corrupt { .. } | StoreError::RuntimeGone => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Store(s) => s.into(),
            EngineError::WorkflowNotFound(id) => {
                ApiError::NotFound(format!("workflow {id} not found"))
            }
            EngineError::ExecutionNotFound(id) => {
                ApiError::NotFound(format!("execution {id} not found"))
            }
            EngineError::InvalidInputs(details) => ApiError::BadRequest {
                code: "invalid_inputs",
                message: details
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
                details,
            },
            EngineError::NotAccepting(m) => ApiError::Unavailable {
                code: "not_running",
                message: m,
            },
            EngineError::Conflict(m) => ApiError::Conflict(m),
            EngineError::Mailbox(m) => ApiError::Unavailable {
                code: "not_running",
                message: format!("the node is shutting down: {m}"),
            },
        }
    }
}
