//! lightning-ops's errors and their single mapping to HTTP.

use http::StatusCode;
use oa_service::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The request is malformed (a bad query parameter, an empty window, ...).
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    IdempotencyKey(#[from] oa_store::idempotency::KeyError),
    #[error("this idempotency key was used for a different request")]
    IdempotencyConflict,
    /// Something this route needs was not configured at start-up (a policy file, an executor).
    #[error("this needs {0}")]
    NotConfigured(&'static str),
    /// The wallet-executor answered with an error (its stable code is kept) or could not be
    /// reached.
    #[error("wallet-executor: {}", .0.message)]
    Executor(ApiError),
    /// The executor's receipt for a change is missing, badly signed, untrusted or about
    /// something else.
    #[error("the executor's receipt is not acceptable: {0}")]
    BadExecutorReceipt(String),
    /// The executor's forwarding history skipped or repeated an index.
    #[error("the forwarding history is not contiguous: {0}")]
    ForwardingGap(String),
    #[error(transparent)]
    Money(#[from] oa_money::MoneyError),
    #[error(transparent)]
    Store(#[from] oa_store::StoreError),
}

impl From<sqlx::Error> for OpsError {
    fn from(e: sqlx::Error) -> Self {
        OpsError::Store(e.into())
    }
}

impl From<oa_receipts::ReceiptError> for OpsError {
    fn from(e: oa_receipts::ReceiptError) -> Self {
        OpsError::Store(e.into())
    }
}

impl OpsError {
    pub fn invalid(message: impl Into<String>) -> Self {
        OpsError::InvalidRequest(message.into())
    }

    /// The stable code a caller sees (also what an action result's `reason` starts with).
    pub fn to_api(&self) -> ApiError {
        match self {
            OpsError::InvalidRequest(m) => ApiError::bad_request("INVALID_REQUEST", m.clone()),
            OpsError::IdempotencyKey(e) => {
                ApiError::bad_request("INVALID_IDEMPOTENCY_KEY", e.to_string())
            }
            OpsError::IdempotencyConflict => {
                ApiError::conflict("IDEMPOTENCY_CONFLICT", self.to_string())
            }
            OpsError::NotConfigured(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "NOT_CONFIGURED", self.to_string())
            }
            OpsError::Executor(e) => e.clone(),
            OpsError::BadExecutorReceipt(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "BAD_EXECUTOR_RECEIPT",
                self.to_string(),
            ),
            OpsError::ForwardingGap(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "FORWARDING_GAP", self.to_string())
            }
            OpsError::Money(e) => ApiError::internal(e),
            OpsError::Store(e) => ApiError::internal(e),
        }
    }
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        e.to_api()
    }
}

impl axum::response::IntoResponse for OpsError {
    fn into_response(self) -> axum::response::Response {
        self.to_api().into_response()
    }
}
