//! Treasury's errors and their single mapping to HTTP.

use http::StatusCode;
use oa_service::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum TreasuryError {
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
    #[error("no such payment")]
    PaymentNotFound,
    #[error("no budget for this agent")]
    BudgetNotFound,
    /// Hydra could not be reached before anything was reserved or sent: retry later.
    #[error("{}", .0.message)]
    Hydra(ApiError),
    #[error(transparent)]
    Store(#[from] oa_store::StoreError),
}

impl From<sqlx::Error> for TreasuryError {
    fn from(e: sqlx::Error) -> Self {
        TreasuryError::Store(e.into())
    }
}

impl From<oa_receipts::ReceiptError> for TreasuryError {
    fn from(e: oa_receipts::ReceiptError) -> Self {
        TreasuryError::Store(e.into())
    }
}

impl TreasuryError {
    pub fn to_api(&self) -> ApiError {
        match self {
            TreasuryError::Invoice(e) => ApiError::bad_request(e.code(), e.to_string()),
            TreasuryError::InvalidRequest(m) => ApiError::bad_request("INVALID_REQUEST", m.clone()),
            TreasuryError::IdempotencyKey(e) => {
                ApiError::bad_request("INVALID_IDEMPOTENCY_KEY", e.to_string())
            }
            TreasuryError::IdempotencyConflict => {
                ApiError::conflict("IDEMPOTENCY_CONFLICT", self.to_string())
            }
            TreasuryError::RequestInProgress => {
                ApiError::conflict("REQUEST_IN_PROGRESS", self.to_string()).retryable()
            }
            TreasuryError::PaymentNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "PAYMENT_NOT_FOUND", self.to_string())
            }
            TreasuryError::BudgetNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "BUDGET_NOT_FOUND", self.to_string())
            }
            TreasuryError::Hydra(e) => e.clone(),
            TreasuryError::Store(e) => ApiError::internal(e),
        }
    }
}
