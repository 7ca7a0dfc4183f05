//! The executor's errors and their single mapping to HTTP and gRPC.

use http::StatusCode;
use oa_service::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error(transparent)]
    Invoice(#[from] oa_invoice::InvoiceError),
    #[error("{0}")]
    InvalidRequest(String),
    /// Bad input with its own stable code (`INVALID_AMOUNT`, `INVALID_ADDRESS`, ...).
    #[error("{message}")]
    BadInput { code: &'static str, message: String },
    #[error(transparent)]
    IdempotencyKey(#[from] oa_store::idempotency::KeyError),
    #[error("this idempotency key was used for a different request")]
    IdempotencyConflict,
    #[error("a payment for this payment hash already {0}")]
    HashAlreadyUsed(&'static str),
    #[error("{message}")]
    CapExceeded {
        reason_code: &'static str,
        message: String,
    },
    #[error("no such payment")]
    NotFound,
    #[error("no such invoice at our node")]
    InvoiceNotFound,
    #[error("no channel {0} at our node")]
    ChannelNotFound(u64),
    #[error("this idempotency key's first request is still being processed")]
    IdempotencyInProgress,
    #[error("the Lightning node is unavailable: {0}")]
    NodeUnavailable(String),
    #[error("{0} is not supported by this backend")]
    NotSupported(&'static str),
    #[error("the node refused the request: {0}")]
    NodeRefused(String),
    #[error("insufficient confirmed on-chain funds")]
    InsufficientFunds,
    #[error(transparent)]
    Store(#[from] oa_store::StoreError),
}

impl From<sqlx::Error> for WalletError {
    fn from(e: sqlx::Error) -> Self {
        WalletError::Store(e.into())
    }
}

impl From<crate::node::NodeError> for WalletError {
    fn from(e: crate::node::NodeError) -> Self {
        match e {
            crate::node::NodeError::UnknownChannel(id) => WalletError::ChannelNotFound(id),
            crate::node::NodeError::NotSupported(what) => WalletError::NotSupported(what),
            crate::node::NodeError::Refused(m) => WalletError::NodeRefused(m),
            crate::node::NodeError::InsufficientFunds => WalletError::InsufficientFunds,
            other => WalletError::NodeUnavailable(other.to_string()),
        }
    }
}

impl From<oa_store::group::Stopped> for WalletError {
    fn from(e: oa_store::group::Stopped) -> Self {
        WalletError::Store(e.into())
    }
}

impl From<oa_receipts::ReceiptError> for WalletError {
    fn from(e: oa_receipts::ReceiptError) -> Self {
        WalletError::Store(e.into())
    }
}

impl WalletError {
    /// Bad input under a stable code.
    pub fn bad_input(code: &'static str, message: impl Into<String>) -> Self {
        WalletError::BadInput {
            code,
            message: message.into(),
        }
    }

    /// Whether this error is a definite answer from the node (it refused, or cannot do it):
    /// nothing happened there, so the request may be undone and retried.
    pub fn is_definite_node_refusal(&self) -> bool {
        matches!(
            self,
            WalletError::ChannelNotFound(_)
                | WalletError::NotSupported(_)
                | WalletError::NodeRefused(_)
                | WalletError::InsufficientFunds
        )
    }

    pub fn to_api(&self) -> ApiError {
        match self {
            WalletError::Invoice(e) => ApiError::bad_request(e.code(), e.to_string()),
            WalletError::InvalidRequest(m) => ApiError::bad_request("INVALID_REQUEST", m.clone()),
            WalletError::BadInput { code, message } => {
                ApiError::bad_request(*code, message.clone())
            }
            WalletError::IdempotencyKey(e) => {
                ApiError::bad_request("INVALID_IDEMPOTENCY_KEY", e.to_string())
            }
            WalletError::IdempotencyConflict => {
                ApiError::conflict("IDEMPOTENCY_CONFLICT", self.to_string())
            }
            WalletError::HashAlreadyUsed(state) => ApiError::conflict(
                match *state {
                    "succeeded" => "PAYMENT_ALREADY_SUCCEEDED",
                    "failed" => "PAYMENT_ALREADY_FAILED",
                    _ => "PAYMENT_IN_FLIGHT",
                },
                self.to_string(),
            ),
            WalletError::CapExceeded {
                reason_code,
                message,
            } => ApiError::new(StatusCode::FORBIDDEN, "CAP_EXCEEDED", message.clone())
                .with_reason(*reason_code),
            WalletError::InvoiceNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "INVOICE_NOT_FOUND", self.to_string())
            }
            WalletError::ChannelNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND", self.to_string())
            }
            WalletError::IdempotencyInProgress => {
                ApiError::conflict("IDEMPOTENCY_IN_PROGRESS", self.to_string())
            }
            WalletError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "PAYMENT_NOT_FOUND", self.to_string())
            }
            WalletError::NodeUnavailable(_) => {
                ApiError::unavailable("NODE_UNAVAILABLE", "the Lightning node is unavailable")
            }
            WalletError::NotSupported(what) => {
                ApiError::not_supported(format!("{what} is not supported by this backend"))
            }
            WalletError::NodeRefused(m) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "NODE_REFUSED",
                format!("the node refused the request: {m}"),
            ),
            WalletError::InsufficientFunds => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INSUFFICIENT_FUNDS",
                self.to_string(),
            ),
            WalletError::Store(e) => ApiError::internal(e),
        }
    }
}

impl From<WalletError> for tonic::Status {
    fn from(e: WalletError) -> Self {
        e.to_api().to_grpc_status()
    }
}

impl axum::response::IntoResponse for WalletError {
    fn into_response(self) -> axum::response::Response {
        self.to_api().into_response()
    }
}
