//! Decoding an invoice, and validating it against a payer's policy at a given time.

use std::str::FromStr;
use std::time::Duration;

use lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescriptionRef};
use oa_money::Msat;
use serde::{Deserialize, Serialize};

use crate::{InvoiceError, Network, PaymentHash};

/// Longest invoice accepted, in characters: the 7089-character capacity of a QR code, the limit
/// LND and LDK use. Checked before parsing, so a huge input costs nothing.
pub const MAX_INVOICE_LEN: usize = 7089;

const MS_PER_SEC: u64 = 1000;

/// What a payer accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvoicePolicy {
    /// The network this service pays on.
    pub network: Network,
    /// The largest amount one invoice may make it pay.
    pub max_amount: Msat,
    /// How long the invoice must still be valid at `now`, so a payment started now can complete
    /// (route finding, HTLC setup) before the payee stops accepting it.
    pub min_expiry_remaining: Duration,
}

/// A decoded, signature-checked invoice, before any policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodedInvoice {
    pub bolt11: String,
    pub payment_hash: PaymentHash,
    /// The invoice's own amount; `None` for an "any amount" invoice.
    pub amount: Option<Msat>,
    /// The payee's node id: compressed secp256k1 key as hex.
    pub payee_pubkey: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub network: Network,
    /// The description, with control and line-separator characters replaced by U+FFFD (it is
    /// chosen by the payee and ends up in logs and UIs).
    pub description: Option<String>,
    /// Hex SHA-256 of a description given out of band, when the invoice has that instead.
    pub description_hash: Option<String>,
    pub min_final_cltv_expiry_delta: u64,
}

/// An invoice that passed [`validate`]: right network, not expiring soon, with the amount to pay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidInvoice {
    pub bolt11: String,
    pub payment_hash: PaymentHash,
    /// The amount to pay: the invoice's own, or the caller's for an amountless invoice.
    pub amount: Msat,
    pub payee_pubkey: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub network: Network,
    pub description: Option<String>,
    pub description_hash: Option<String>,
    pub min_final_cltv_expiry_delta: u64,
}

/// Parses and signature-checks an invoice, without any policy or clock.
pub fn decode(bolt11: &str) -> Result<DecodedInvoice, InvoiceError> {
    if bolt11.len() > MAX_INVOICE_LEN {
        return Err(InvoiceError::Invalid {
            reason: format!("longer than {MAX_INVOICE_LEN} characters"),
        });
    }
    let invoice = Bolt11Invoice::from_str(bolt11).map_err(|e| InvoiceError::Invalid {
        reason: e.to_string(),
    })?;
    let network =
        Network::from_currency(invoice.currency()).ok_or_else(|| InvoiceError::WrongNetwork {
            expected: None,
            found: "simnet".to_owned(),
        })?;
    let amount = match invoice.amount_milli_satoshis() {
        None => None,
        Some(msat) => Some(Msat::new(msat).map_err(|_| InvoiceError::too_large(msat, Msat::MAX))?),
    };
    // BOLT11 timestamps and expiries are whole seconds; saturate rather than wrap on absurd ones.
    let created_secs = invoice.duration_since_epoch().as_secs();
    let expires_secs = created_secs.saturating_add(invoice.expiry_time().as_secs());
    let (description, description_hash) = match invoice.description() {
        Bolt11InvoiceDescriptionRef::Direct(d) => (Some(d.to_string()), None),
        Bolt11InvoiceDescriptionRef::Hash(h) => (None, Some(h.0.to_string())),
    };
    Ok(DecodedInvoice {
        bolt11: bolt11.to_owned(),
        payment_hash: PaymentHash(*invoice.payment_hash().as_ref()),
        amount,
        payee_pubkey: invoice.get_payee_pub_key().to_string(),
        created_at_ms: created_secs.saturating_mul(MS_PER_SEC),
        expires_at_ms: expires_secs.saturating_mul(MS_PER_SEC),
        network,
        description,
        description_hash,
        min_final_cltv_expiry_delta: invoice.min_final_cltv_expiry_delta(),
    })
}

/// Validates an invoice for payment at `now_ms` (milliseconds since the Unix epoch).
///
/// Checks, in order: length and BOLT11 validity (`INVALID_INVOICE`), network (`WRONG_NETWORK`),
/// expiry including `min_expiry_remaining` (`INVOICE_EXPIRED`), then the amount:
/// an amountless invoice needs `amount_override` (`AMOUNT_REQUIRED`); an invoice with an amount
/// accepts only an equal override (`AMOUNT_MISMATCH`); the amount must be non-zero
/// (`AMOUNT_ZERO`) and at most the policy's maximum (`AMOUNT_TOO_LARGE`).
pub fn validate(
    bolt11: &str,
    policy: &InvoicePolicy,
    now_ms: u64,
    amount_override: Option<Msat>,
) -> Result<ValidInvoice, InvoiceError> {
    let d = decode(bolt11)?;
    if d.network != policy.network {
        return Err(InvoiceError::WrongNetwork {
            expected: Some(policy.network),
            found: d.network.to_string(),
        });
    }
    let min_remaining_ms =
        u64::try_from(policy.min_expiry_remaining.as_millis()).unwrap_or(u64::MAX);
    // Expired at `now` (valid strictly before `expires_at`), or expiring within the margin.
    let remaining_ms = d.expires_at_ms.saturating_sub(now_ms);
    if remaining_ms == 0 || remaining_ms < min_remaining_ms {
        return Err(InvoiceError::Expired {
            expires_at_ms: d.expires_at_ms,
            now_ms,
            min_remaining_ms,
        });
    }
    let amount = match (d.amount, amount_override) {
        (None, None) => return Err(InvoiceError::AmountRequired),
        (None, Some(requested)) => requested,
        (Some(own), None) => own,
        (Some(own), Some(requested)) if own == requested => own,
        (Some(own), Some(requested)) => {
            return Err(InvoiceError::AmountMismatch {
                invoice_msat: own.as_u64(),
                requested_msat: requested.as_u64(),
            });
        }
    };
    if amount.is_zero() {
        return Err(InvoiceError::AmountZero);
    }
    if amount > policy.max_amount {
        return Err(InvoiceError::too_large(amount.as_u64(), policy.max_amount));
    }
    Ok(ValidInvoice {
        bolt11: d.bolt11,
        payment_hash: d.payment_hash,
        amount,
        payee_pubkey: d.payee_pubkey,
        created_at_ms: d.created_at_ms,
        expires_at_ms: d.expires_at_ms,
        network: d.network,
        description: d.description,
        description_hash: d.description_hash,
        min_final_cltv_expiry_delta: d.min_final_cltv_expiry_delta,
    })
}
