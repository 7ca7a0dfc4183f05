//! Hydra's errors and their single mapping to HTTP.

use http::StatusCode;
use oa_service::ApiError;
use oa_store::idempotency::{self, Claim};

#[derive(Debug, thiserror::Error)]
pub enum HydraError {
    #[error(transparent)]
    Invoice(#[from] oa_invoice::InvoiceError),
    #[error("{0}")]
    InvalidRequest(String),
    /// The request is wrong in a way with its own stable code (`INVALID_AGENT_ID`, ...).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error(transparent)]
    Fx(#[from] crate::fx::FxError),
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
    #[error("no such envelope")]
    EnvelopeNotFound,
    #[error("no such offer")]
    OfferNotFound,
    #[error("the offer has expired; ask for a new one")]
    OfferExpired,
    #[error("the envelope has a live offer already; accept it or let it lapse")]
    OfferLive,
    #[error("the offer was already accepted")]
    OfferAlreadyUsed,
    #[error("the envelope has expired")]
    EnvelopeExpired,
    /// The envelope is not in a state that allows this step; `state` says where it is.
    #[error("the envelope is {state}, which does not allow this")]
    EnvelopeState { state: String },
    #[error("the invoice amount {amount_msat} msat exceeds the envelope's cap {cap_msat} msat")]
    CapExceeded { amount_msat: u64, cap_msat: u64 },
    #[error("the invoice is payable to another node than the provider's")]
    PayeeMismatch,
    #[error("credit denied: {message}")]
    CreditDenied {
        reason_code: &'static str,
        message: String,
    },
    #[error("the agent has {max} open envelopes already")]
    TooManyOpenEnvelopes { max: u64 },
    #[error("the credit pool cannot cover this cap now")]
    PoolExhausted,
    /// A breaker is open; `reason_code` names it.
    #[error("{why}")]
    BreakerOpen {
        reason_code: &'static str,
        why: String,
    },
    /// A liquidity pay's amount + fee limit exceeds what the pool has available.
    #[error("the pool cannot cover this payment now")]
    PoolCannotPay,
    /// Part of the contract that this version does not offer; the message says why.
    #[error("{0}")]
    NotSupported(String),
    #[error("no such deposit")]
    DepositNotFound,
    #[error("no such withdrawal")]
    WithdrawalNotFound,
    #[error(
        "the agent's available balance is {available_msat} msat; this withdrawal needs {needed_msat} msat (amount + fee limit)"
    )]
    InsufficientBalance {
        available_msat: u64,
        needed_msat: u64,
    },
    #[error("this invoice has a withdrawal queued, in flight or paid already")]
    InvoiceAlreadyWithdrawn,
    /// The withdrawal throttle halts withdrawals; `reason_code` says why.
    #[error("withdrawals are halted: {why}")]
    WithdrawalsHalted {
        reason_code: &'static str,
        why: String,
    },
    #[error("aegis has no such verification")]
    VerificationNotFound,
    #[error("the verification has no verdict yet; settle once it has one")]
    VerificationPending,
    #[error("{0}")]
    VerificationMismatch(String),
    #[error("aegis answered with an invalid receipt: {0}")]
    BadAegisReceipt(String),
    #[error("hydra is not configured to ask aegis (--aegis-url)")]
    AegisNotConfigured,
    /// An error from Aegis, passed on with its stable code.
    #[error("{}", .0.message)]
    Aegis(ApiError),
    #[error("the executor answered with an invalid receipt: {0}")]
    BadExecutorReceipt(String),
    /// An error from the executor, passed on with its stable code.
    #[error("{}", .0.message)]
    Executor(ApiError),
    #[error(transparent)]
    Store(#[from] oa_store::StoreError),
}

impl From<oa_store::group::Stopped> for HydraError {
    fn from(e: oa_store::group::Stopped) -> Self {
        HydraError::Store(e.into())
    }
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
            HydraError::Invalid { code, message } => ApiError::bad_request(*code, message.clone()),
            HydraError::Fx(e) => ApiError::bad_request(e.code(), e.to_string()),
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
            HydraError::EnvelopeNotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "ENVELOPE_NOT_FOUND",
                self.to_string(),
            ),
            HydraError::OfferNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "OFFER_NOT_FOUND", self.to_string())
            }
            HydraError::OfferExpired => ApiError::conflict("OFFER_EXPIRED", self.to_string()),
            HydraError::OfferLive => ApiError::conflict("OFFER_ALREADY_LIVE", self.to_string()),
            HydraError::OfferAlreadyUsed => {
                ApiError::conflict("OFFER_ALREADY_USED", self.to_string())
            }
            HydraError::EnvelopeExpired => ApiError::conflict("ENVELOPE_EXPIRED", self.to_string()),
            HydraError::EnvelopeState { state } => {
                let e = ApiError::conflict("INVALID_ENVELOPE_STATE", self.to_string())
                    .with_detail("state", state.clone());
                // A settlement in progress ends by itself; asking again later shows the result.
                if state == "settling" {
                    e.retryable()
                } else {
                    e
                }
            }
            HydraError::CapExceeded {
                amount_msat,
                cap_msat,
            } => ApiError::conflict("CAP_EXCEEDED", self.to_string())
                .with_reason("CAP_EXCEEDED")
                .with_detail("amount_msat", amount_msat.to_string())
                .with_detail("cap_msat", cap_msat.to_string()),
            HydraError::PayeeMismatch => {
                ApiError::conflict("PAYEE_MISMATCH", self.to_string()).with_reason("PAYEE_MISMATCH")
            }
            HydraError::CreditDenied { reason_code, .. } => {
                ApiError::conflict("CREDIT_DENIED", self.to_string()).with_reason(*reason_code)
            }
            HydraError::TooManyOpenEnvelopes { max } => {
                ApiError::conflict("TOO_MANY_OPEN_ENVELOPES", self.to_string())
                    .with_reason("TOO_MANY_OPEN_ENVELOPES")
                    .with_detail("max_open_envelopes", max.to_string())
            }
            HydraError::PoolExhausted => ApiError::conflict("CREDIT_DENIED", self.to_string())
                .with_reason("POOL_EXHAUSTED")
                .retryable(),
            HydraError::BreakerOpen { reason_code, why } => {
                ApiError::unavailable("BREAKER_OPEN", why.clone()).with_reason(*reason_code)
            }
            HydraError::PoolCannotPay => {
                ApiError::conflict("INSUFFICIENT_LIQUIDITY", self.to_string())
                    .with_reason("POOL_EXHAUSTED")
                    .retryable()
            }
            HydraError::NotSupported(m) => ApiError::not_supported(m.clone()),
            HydraError::DepositNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "DEPOSIT_NOT_FOUND", self.to_string())
            }
            HydraError::WithdrawalNotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "WITHDRAWAL_NOT_FOUND",
                self.to_string(),
            ),
            HydraError::InsufficientBalance {
                available_msat,
                needed_msat,
            } => ApiError::conflict("INSUFFICIENT_BALANCE", self.to_string())
                .with_reason("INSUFFICIENT_BALANCE")
                .with_detail("available_msat", available_msat.to_string())
                .with_detail("needed_msat", needed_msat.to_string()),
            HydraError::InvoiceAlreadyWithdrawn => {
                ApiError::conflict("INVOICE_ALREADY_WITHDRAWN", self.to_string())
                    .with_reason("DUPLICATE_INVOICE")
            }
            HydraError::WithdrawalsHalted { reason_code, .. } => {
                ApiError::unavailable("WITHDRAWALS_HALTED", self.to_string())
                    .with_reason(*reason_code)
            }
            HydraError::VerificationNotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "VERIFICATION_NOT_FOUND",
                self.to_string(),
            ),
            HydraError::VerificationPending => {
                ApiError::conflict("VERIFICATION_PENDING", self.to_string()).retryable()
            }
            HydraError::VerificationMismatch(m) => {
                ApiError::conflict("VERIFICATION_MISMATCH", m.clone())
                    .with_reason("VERIFICATION_MISMATCH")
            }
            HydraError::BadAegisReceipt(m) => {
                tracing::warn!("aegis answered with an invalid receipt: {m}");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "AEGIS_BAD_RECEIPT",
                    "aegis answered with a receipt hydra cannot accept",
                )
            }
            HydraError::AegisNotConfigured => {
                ApiError::unavailable("AEGIS_NOT_CONFIGURED", self.to_string())
            }
            HydraError::Aegis(e) => e.clone(),
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

/// A stored record Hydra cannot read back.
pub(crate) fn corrupt(what: &str) -> HydraError {
    HydraError::Store(oa_store::StoreError::Corrupt(what.to_owned()))
}

/// A stored idempotent response, read back.
pub(crate) fn replay<T: serde::de::DeserializeOwned>(response: &str) -> Result<T, HydraError> {
    oa_service::parse_json(response.as_bytes()).map_err(|_| corrupt("stored response"))
}

/// Claims `key` for this request inside `tx`. `Ok(None)`: a new request, go on (the claim commits
/// or rolls back with the work). `Ok(Some(..))`: the first answer under this key, to replay.
/// The same key with another request is a conflict; one still being processed is refused.
pub(crate) async fn claim_or_replay<T: serde::de::DeserializeOwned>(
    tx: &mut sqlx::AnyConnection,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now_ms: u64,
) -> Result<Option<T>, HydraError> {
    match idempotency::claim(tx, scope, key, fingerprint, now_ms).await? {
        Claim::New => Ok(None),
        Claim::Replay { response, .. } => replay(&response).map(Some),
        Claim::Conflict => Err(HydraError::IdempotencyConflict),
        Claim::InProgress { .. } => Err(HydraError::RequestInProgress),
    }
}
