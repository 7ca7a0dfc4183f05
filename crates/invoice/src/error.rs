//! Why an invoice was refused, each cause with a stable code.

use oa_money::Msat;

use crate::Network;

/// A refused invoice. Services map each variant to `400` with [`InvoiceError::code`], except
/// [`InvoiceError::Creation`], which is a local bug or bad test input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// Not a valid BOLT11 invoice: too long, bad bech32, bad fields, bad signature, ...
    #[error("invalid BOLT11 invoice: {reason}")]
    Invalid { reason: String },
    /// The invoice is for another network than the one this service pays on.
    #[error("invoice is for {found}, expected {}", expected.map_or("a supported network".to_owned(), |n| n.to_string()))]
    WrongNetwork {
        expected: Option<Network>,
        found: String,
    },
    /// The invoice has expired, or expires sooner than the policy's minimum remaining time.
    #[error(
        "invoice expires at {expires_at_ms} ms, less than {min_remaining_ms} ms after now ({now_ms} ms)"
    )]
    Expired {
        expires_at_ms: u64,
        now_ms: u64,
        min_remaining_ms: u64,
    },
    /// The invoice has no amount and the caller gave none.
    #[error("invoice has no amount; an amount must be given")]
    AmountRequired,
    /// The caller gave an amount that differs from the invoice's own.
    #[error("amount {requested_msat} msat differs from the invoice's {invoice_msat} msat")]
    AmountMismatch {
        invoice_msat: u64,
        requested_msat: u64,
    },
    /// The amount to pay is zero.
    #[error("amount is zero")]
    AmountZero,
    /// The amount to pay is above the policy's maximum (or the bitcoin supply).
    #[error("amount {amount_msat} msat is above the maximum of {max_msat} msat")]
    AmountTooLarge { amount_msat: u64, max_msat: u64 },
    /// An invoice could not be created (bad description, timestamp, ...).
    #[error("cannot create invoice: {0}")]
    Creation(String),
}

impl InvoiceError {
    /// A stable `UPPER_SNAKE` code, one per cause.
    pub fn code(&self) -> &'static str {
        match self {
            InvoiceError::Invalid { .. } => "INVALID_INVOICE",
            InvoiceError::WrongNetwork { .. } => "WRONG_NETWORK",
            InvoiceError::Expired { .. } => "INVOICE_EXPIRED",
            InvoiceError::AmountRequired => "AMOUNT_REQUIRED",
            InvoiceError::AmountMismatch { .. } => "AMOUNT_MISMATCH",
            InvoiceError::AmountZero => "AMOUNT_ZERO",
            InvoiceError::AmountTooLarge { .. } => "AMOUNT_TOO_LARGE",
            InvoiceError::Creation(_) => "INVOICE_CREATION_FAILED",
        }
    }

    pub(crate) fn too_large(amount_msat: u64, max: Msat) -> Self {
        InvoiceError::AmountTooLarge {
            amount_msat,
            max_msat: max.as_u64(),
        }
    }
}
