//! The errors of use cases, in terms a client can act on; the edge crates map them to status
//! codes and wire formats.

use store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or breaks a rule of the model; `code` is stable and
    /// machine-readable.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// A URL could not be parsed or bound.
    #[error("{0}")]
    Query(#[from] odata::ODataError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// No credentials, or ones that did not check out: authenticate (HTTP 401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// Too many attempts: try again after `retry_after` seconds (HTTP 429).
    #[error("{message}")]
    Throttled { message: String, retry_after: u64 },
    /// The request needs more time or rows than its budget allows (`App::with_budget`).
    #[error("{0}")]
    OverBudget(String),
    /// The server is shutting down or overloaded.
    #[error("the service is unavailable, try again")]
    Unavailable,
    /// A failure of the server, not of the request; the text is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
    /// The error of the operation at this index of an atomic group.
    #[error("operation {0}: {1}")]
    InBatch(usize, Box<AppError>),
}

impl AppError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::BadRequest { code, message: message.into() }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> AppError {
        match error {
            StoreError::Conflict(message) => AppError::Conflict(message),
            StoreError::Rejected(message) => AppError::bad("rejected", message),
            StoreError::Denied(access::Decision::Unauthenticated, message) => AppError::Unauthenticated(message),
            StoreError::Denied(_, message) => AppError::Forbidden(message),
            StoreError::ShuttingDown | StoreError::Busy(_) => AppError::Unavailable,
            StoreError::OverBudget(message) => AppError::OverBudget(message),
            StoreError::Database(e) => AppError::Internal(e.to_string()),
        }
    }
}
