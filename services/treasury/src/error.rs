//! Treasury's errors and their single mapping to HTTP.

use http::StatusCode;
use oa_service::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum TreasuryError {
    #[error(transparent)]
    Invoice(#[from] oa_invoice::InvoiceError),
    #[error("{0}")]
    InvalidRequest(String),
    /// Bad input with its own stable code (`INVALID_L402_CHALLENGE`, `INVALID_POLICY`, ...).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error(transparent)]
    IdempotencyKey(#[from] oa_store::idempotency::KeyError),
    #[error("this idempotency key was used for a different request")]
    IdempotencyConflict,
    #[error("the same request is being processed; retry it")]
    RequestInProgress,
    #[error("no such payment")]
    PaymentNotFound,
    #[error("no such budget")]
    BudgetNotFound,
    #[error("the limit cannot go below what this window has reserved or spent")]
    BudgetInUse,
    /// The payment is not waiting for approval (it was decided, or never needed one).
    #[error("the payment is {state}, not pending approval")]
    NotPendingApproval { state: String },
    #[error("the approval expired")]
    ApprovalExpired,
    #[error("an identity may not approve or deny its own payment")]
    SelfApproval,
    /// Only an attempt whose credit envelope is issued can be settled.
    #[error("the payment has no issued credit envelope to settle (state {state}, stage {stage})")]
    NotSettleable { state: String, stage: String },
    /// Hydra could not be reached (or refused) before anything was reserved or sent.
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

impl From<oa_store::group::Stopped> for TreasuryError {
    fn from(e: oa_store::group::Stopped) -> Self {
        TreasuryError::Store(e.into())
    }
}

impl From<oa_receipts::ReceiptError> for TreasuryError {
    fn from(e: oa_receipts::ReceiptError) -> Self {
        TreasuryError::Store(e.into())
    }
}

impl TreasuryError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        TreasuryError::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn to_api(&self) -> ApiError {
        match self {
            TreasuryError::Invoice(e) => ApiError::bad_request(e.code(), e.to_string()),
            TreasuryError::InvalidRequest(m) => ApiError::bad_request("INVALID_REQUEST", m.clone()),
            TreasuryError::Invalid { code, message } => {
                ApiError::bad_request(*code, message.clone())
            }
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
            TreasuryError::BudgetInUse => ApiError::conflict("BUDGET_IN_USE", self.to_string()),
            TreasuryError::NotPendingApproval { .. } => {
                ApiError::conflict("APPROVAL_NOT_PENDING", self.to_string())
            }
            TreasuryError::ApprovalExpired => {
                ApiError::conflict("APPROVAL_EXPIRED", self.to_string())
            }
            TreasuryError::SelfApproval => ApiError::new(
                StatusCode::FORBIDDEN,
                "SELF_APPROVAL_FORBIDDEN",
                self.to_string(),
            ),
            TreasuryError::NotSettleable { .. } => {
                ApiError::conflict("PAYMENT_NOT_SETTLEABLE", self.to_string())
            }
            TreasuryError::Hydra(e) => e.clone(),
            TreasuryError::Store(e) => ApiError::internal(e),
        }
    }
}

/// A stored row or answer that cannot be what it is.
pub fn corrupt(what: &str) -> TreasuryError {
    TreasuryError::Store(oa_store::StoreError::Corrupt(what.to_owned()))
}
