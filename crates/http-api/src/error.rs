//! The one place errors become HTTP responses: a status and a JSON body with a stable
//! machine-readable code. Internal details are logged, never sent.

use app::AppError;
use odata::{ErrorKind, ODataError};
use serde_json::json;

use crate::Reply;

/// A status, a stable code and a message for the client, plus where in a query it went wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub option: Option<String>,
    pub position: Option<usize>,
    /// Seconds for `Retry-After` (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), option: None, position: None, retry_after: None }
    }

    /// 429 with `Retry-After`.
    pub fn throttled(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError { retry_after: Some(retry_after), ..ApiError::new(429, "too_many_requests", message) }
    }

    pub fn reply(&self) -> Reply {
        let mut body = json!({
            "code": self.status,
            "type": "error",
            "error": self.code,
            "message": self.message,
        });
        if let Some(option) = &self.option {
            body["option"] = json!(option);
        }
        if let Some(position) = self.position {
            body["position"] = json!(position);
        }
        Reply { retry_after: self.retry_after, ..Reply::json(self.status, body.to_string().into_bytes()) }
    }
}

impl From<ODataError> for ApiError {
    fn from(e: ODataError) -> ApiError {
        let (status, code) = match e.kind {
            ErrorKind::BadPath => (404, "unknown_path"),
            ErrorKind::BadKey => (400, "invalid_key"),
            ErrorKind::Syntax => (400, "query_syntax"),
            ErrorKind::UnknownName => (400, "unknown_name"),
            ErrorKind::Type => (400, "query_type"),
            ErrorKind::Unsupported => (400, "unsupported_query"),
            ErrorKind::Limit => (400, "query_too_complex"),
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
            option: e.option.clone(),
            position: e.position,
            retry_after: None,
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        match e {
            AppError::BadRequest { code, message } => ApiError::new(400, code, message),
            AppError::Query(q) => q.into(),
            AppError::NotFound(m) => ApiError::new(404, "not_found", m),
            AppError::Conflict(m) => ApiError::new(409, "conflict", m),
            AppError::MethodNotAllowed(m) => ApiError::new(405, "method_not_allowed", m),
            AppError::Unauthenticated(m) => ApiError::new(401, "unauthenticated", m),
            AppError::Forbidden(m) => ApiError::new(403, "forbidden", m),
            AppError::Throttled { message, retry_after } => ApiError::throttled(message, retry_after),
            AppError::OverBudget(m) => ApiError::new(503, "query_budget_exceeded", m),
            AppError::Unavailable => {
                ApiError::new(503, "unavailable", "the service is shutting down or overloaded; try again")
            }
            AppError::InBatch(i, inner) => {
                let mut error = ApiError::from(*inner);
                error.message = format!("request {i} of the atomicity group: {}", error.message);
                error
            }
            AppError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                ApiError::new(500, "internal", "the server failed; the error is logged")
            }
        }
    }
}
