//! Aegis's errors and their single mapping to HTTP.

use http::StatusCode;
use oa_service::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum AegisError {
    /// The request is wrong in a way with its own stable code (`INVALID_WORK_UNIT`, ...).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error(transparent)]
    IdempotencyKey(#[from] oa_store::idempotency::KeyError),
    #[error("this idempotency key was used for a different request")]
    IdempotencyConflict,
    #[error("the same request is being processed; retry it")]
    RequestInProgress,
    #[error("no such verification")]
    VerificationNotFound,
    #[error("no such verifier")]
    VerifierNotFound,
    #[error("no such ground-truth case")]
    CaseNotFound,
    #[error("the verification is {state} already")]
    VerificationDecided { state: String },
    /// The step needs another tier than the verification's.
    #[error("{0}")]
    WrongTier(String),
    #[error("this verifier has already given its verdict on this verification")]
    VerdictAlreadySubmitted,
    #[error("the verdict's signature does not verify under the verifier's registered key")]
    BadSignature,
    #[error("a verifier with this id is registered already")]
    VerifierExists,
    #[error("the verifier is disabled")]
    VerifierDisabled,
    #[error("the verifier has no simulation profile")]
    VerifierNotSimulated,
    #[error("{0}")]
    CaseContradictsChecks(String),
    #[error("{0}")]
    NothingToSimulate(String),
    /// The caller may not decide this verification (it asked for it, or lacks the tier's scope).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// An unknown warranty, bond, claim or dispute (`WARRANTY_NOT_FOUND`, ...).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// The record is not in a state that allows the step (`CLAIM_NOT_OPEN`, `COVERAGE_EXCEEDED`,
    /// ...); the code is also the denial's reason code.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A service Aegis depends on (Hydra) could not answer; retry later.
    #[error("{message}")]
    Unavailable { code: String, message: String },
    #[error(transparent)]
    Store(#[from] oa_store::StoreError),
}

impl From<sqlx::Error> for AegisError {
    fn from(e: sqlx::Error) -> Self {
        AegisError::Store(e.into())
    }
}

impl From<oa_receipts::ReceiptError> for AegisError {
    fn from(e: oa_receipts::ReceiptError) -> Self {
        AegisError::Store(e.into())
    }
}

/// A `400` with a stable code.
pub fn invalid(code: &'static str, message: impl Into<String>) -> AegisError {
    AegisError::Invalid {
        code,
        message: message.into(),
    }
}

/// A `404` with a stable code.
pub fn not_found(code: &'static str, message: impl Into<String>) -> AegisError {
    AegisError::NotFound {
        code,
        message: message.into(),
    }
}

/// A `409` with a stable code (also the reason code).
pub fn conflict(code: &'static str, message: impl Into<String>) -> AegisError {
    AegisError::Conflict {
        code,
        message: message.into(),
    }
}

/// A store-side inconsistency (a `500`, logged once).
pub fn corrupt(what: impl Into<String>) -> AegisError {
    AegisError::Store(oa_store::StoreError::Corrupt(what.into()))
}

impl AegisError {
    pub fn to_api(&self) -> ApiError {
        let msg = self.to_string();
        match self {
            AegisError::Invalid { code, message } => ApiError::bad_request(*code, message.clone()),
            AegisError::IdempotencyKey(e) => {
                ApiError::bad_request("INVALID_IDEMPOTENCY_KEY", e.to_string())
            }
            AegisError::IdempotencyConflict => ApiError::conflict("IDEMPOTENCY_CONFLICT", msg),
            AegisError::RequestInProgress => {
                ApiError::conflict("REQUEST_IN_PROGRESS", msg).retryable()
            }
            AegisError::VerificationNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "VERIFICATION_NOT_FOUND", msg)
            }
            AegisError::VerifierNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "VERIFIER_NOT_FOUND", msg)
            }
            AegisError::CaseNotFound => ApiError::new(StatusCode::NOT_FOUND, "CASE_NOT_FOUND", msg),
            AegisError::VerificationDecided { state } => {
                ApiError::conflict("VERIFICATION_DECIDED", msg).with_detail("state", state.clone())
            }
            AegisError::WrongTier(_) => ApiError::conflict("WRONG_TIER", msg),
            AegisError::VerdictAlreadySubmitted => {
                ApiError::conflict("VERDICT_ALREADY_SUBMITTED", msg)
            }
            AegisError::BadSignature => ApiError::bad_request("INVALID_VERDICT_SIGNATURE", msg),
            AegisError::VerifierExists => ApiError::conflict("VERIFIER_EXISTS", msg),
            AegisError::VerifierDisabled => {
                ApiError::conflict("VERIFIER_DISABLED", msg).with_reason("VERIFIER_DISABLED")
            }
            AegisError::VerifierNotSimulated => ApiError::conflict("VERIFIER_NOT_SIMULATED", msg),
            AegisError::CaseContradictsChecks(_) => {
                ApiError::conflict("CASE_CONTRADICTS_CHECKS", msg)
            }
            AegisError::NothingToSimulate(_) => ApiError::conflict("NOTHING_TO_SIMULATE", msg),
            AegisError::Forbidden { code, message } => {
                ApiError::new(StatusCode::FORBIDDEN, *code, message.clone()).with_reason(*code)
            }
            AegisError::NotFound { code, message } => {
                ApiError::new(StatusCode::NOT_FOUND, *code, message.clone())
            }
            AegisError::Conflict { code, message } => {
                ApiError::conflict(*code, message.clone()).with_reason(*code)
            }
            AegisError::Unavailable { code, message } => {
                ApiError::unavailable(code.clone(), message.clone())
            }
            AegisError::Store(e) => ApiError::internal(e),
        }
    }
}

impl axum::response::IntoResponse for AegisError {
    fn into_response(self) -> axum::response::Response {
        self.to_api().into_response()
    }
}
