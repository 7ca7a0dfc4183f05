//! Hydra's errors and their single mapping to HTTP.

use http::StatusCode;
use oa_service::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum HydraError {
    #[error(transparent)]
    Invoice(#[from] oa_invoice::InvoiceError),
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    IdempotencyKey(#[from] oa_store::idempotency::KeyError),
    #[error("this idempotency key was used for a different request")]
    IdempotencyConflict,
    #[error("the same request is being processed; retry it")]
    RequestInProgress,
    #[error("no such quote")]
    QuoteNotFound,
    #[error("the quote has expired; request a new one")]
    QuoteExpired,
    #[error("the quote was already used for a payment")]
    QuoteAlreadyUsed,
    #[error("the executor answered with an invalid receipt: {0}")]
    BadExecutorReceipt(String),
    /// An error from the executor, passed on with its stable code.
    #[error("{}", .0.message)]
    Executor(ApiError),
    #[error(transparent)]
    Store(#[from] oa_store::StoreError),
}

impl From<sqlx::Error> for HydraError {
    fn from(e: sqlx::Error) -> Self {
        HydraError::Store(e.into())
    }
}

impl From<oa_receipts::ReceiptError> for HydraError {
    fn from(e: oa_receipts::ReceiptError) -> Self {
        HydraError::Store(e.into())
    }
}

impl HydraError {
    pub fn to_api(&self) -> ApiError {
        match self {
            HydraError::Invoice(e) => ApiError::bad_request(e.code(), e.to_string()),
            HydraError::InvalidRequest(m) => ApiError::bad_request("INVALID_REQUEST", m.clone()),
            HydraError::IdempotencyKey(e) => {
                ApiError::bad_request("INVALID_IDEMPOTENCY_KEY", e.to_string())
            }
            HydraError::IdempotencyConflict => {
                ApiError::conflict("IDEMPOTENCY_CONFLICT", self.to_string())
            }
            HydraError::RequestInProgress => {
                ApiError::conflict("REQUEST_IN_PROGRESS", self.to_string()).retryable()
            }
            HydraError::QuoteNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "QUOTE_NOT_FOUND", self.to_string())
            }
            HydraError::QuoteExpired => ApiError::conflict("QUOTE_EXPIRED", self.to_string()),
            HydraError::QuoteAlreadyUsed => {
                ApiError::conflict("QUOTE_ALREADY_USED", self.to_string())
            }
            HydraError::BadExecutorReceipt(m) => {
                ApiError::internal(format!("bad executor receipt: {m}"))
            }
            HydraError::Executor(e) => e.clone(),
            HydraError::Store(e) => ApiError::internal(e),
        }
    }
}

impl axum::response::IntoResponse for HydraError {
    fn into_response(self) -> axum::response::Response {
        self.to_api().into_response()
    }
}
