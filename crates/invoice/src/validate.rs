//! Decoding an invoice, and validating it against a payer's policy at a given time.

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, VerifyOnly};

use lightning_invoice::{
    Bolt11SemanticError, DEFAULT_EXPIRY_TIME, DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA, PayeePubKey,
    RawBolt11Invoice, SignedRawBolt11Invoice, TaggedField,
};
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
///
/// Parsing is lightning-invoice's (`SignedRawBolt11Invoice`); the semantic rules it applies in
/// `Bolt11Invoice::from_signed` are applied here, in [`check_semantics`], so that the signature
/// costs one secp256k1 operation with a process-wide context: `from_signed` followed by
/// `get_payee_pub_key` recovered the key twice, each time with a freshly built and randomized
/// context, which was the largest CPU cost of a payment in the wallet-executor benchmark. A test
/// checks both give the same verdict and fields on every BOLT11 vector and on mutations of them.
pub fn decode(bolt11: &str) -> Result<DecodedInvoice, InvoiceError> {
    if bolt11.len() > MAX_INVOICE_LEN {
        return Err(InvoiceError::Invalid {
            reason: format!("longer than {MAX_INVOICE_LEN} characters"),
        });
    }
    let invalid = |reason: String| InvoiceError::Invalid { reason };
    let signed = SignedRawBolt11Invoice::from_str(bolt11).map_err(|e| invalid(e.to_string()))?;
    // The signature is checked over LDK's re-encoding of the fields it parsed, not over the text
    // received: a field written non-minimally (found by fuzzing: an expiry in three characters
    // where one does) hashes differently, so the payee recovered from the signature is not the
    // node that signed. Only the canonical spelling (in either case) is accepted.
    if !signed.to_string().eq_ignore_ascii_case(bolt11) {
        return Err(invalid("not in canonical BOLT11 form".to_owned()));
    }
    let raw = signed.raw_invoice();
    check_semantics(raw).map_err(|e| invalid(e.to_string()))?;
    let payee = payee_pubkey(&signed).map_err(|e| invalid(e.to_string()))?;
    let network =
        Network::from_currency(raw.currency()).ok_or_else(|| InvoiceError::WrongNetwork {
            expected: None,
            found: "simnet".to_owned(),
        })?;
    let amount = match raw.amount_pico_btc().map(|pico| pico / 10) {
        // A stated amount too large for u64 picobitcoin reads as "no amount" in LDK (found by
        // fuzzing: 20 million BTC without a multiplier); it must not become "any amount".
        None if raw.hrp.raw_amount.is_some() => {
            return Err(InvoiceError::too_large(u64::MAX, Msat::MAX));
        }
        None => None,
        Some(msat) => Some(Msat::new(msat).map_err(|_| InvoiceError::too_large(msat, Msat::MAX))?),
    };
    // BOLT11 timestamps and expiries are whole seconds; saturate rather than wrap on absurd ones.
    let created_secs = raw.data.timestamp.as_unix_timestamp();
    let expiry_secs = raw
        .expiry_time()
        .map_or(DEFAULT_EXPIRY_TIME, |e| e.as_seconds());
    let expires_secs = created_secs.saturating_add(expiry_secs);
    // `check_semantics` required exactly one payment hash and one description or hash.
    let (description, description_hash) = match (raw.description(), raw.description_hash()) {
        (Some(d), _) => (Some(d.to_string()), None),
        (None, h) => (None, h.map(|h| h.0.to_string())),
    };
    let payment_hash = raw
        .payment_hash()
        .map(|h| PaymentHash(*h.0.as_ref()))
        .ok_or_else(|| invalid(Bolt11SemanticError::NoPaymentHash.to_string()))?;
    Ok(DecodedInvoice {
        bolt11: bolt11.to_owned(),
        payment_hash,
        amount,
        payee_pubkey: payee.to_string(),
        created_at_ms: created_secs.saturating_mul(MS_PER_SEC),
        expires_at_ms: expires_secs.saturating_mul(MS_PER_SEC),
        network,
        description,
        description_hash,
        min_final_cltv_expiry_delta: raw
            .min_final_cltv_expiry_delta()
            .map_or(DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA, |d| d.0),
    })
}

/// The rules `Bolt11Invoice::from_signed` applies besides the signature, in its order: exactly
/// one payment hash, exactly one description or description hash, exactly one payment secret,
/// features present without unknown required bits and with `payment_secret`, and an amount in
/// whole millisatoshis.
fn check_semantics(raw: &RawBolt11Invoice) -> Result<(), Bolt11SemanticError> {
    let (mut hashes, mut descriptions, mut secrets) = (0_usize, 0_usize, 0_usize);
    let mut features = None;
    for field in raw.known_tagged_fields() {
        match field {
            TaggedField::PaymentHash(_) => hashes += 1,
            TaggedField::Description(_) | TaggedField::DescriptionHash(_) => descriptions += 1,
            TaggedField::PaymentSecret(_) => secrets += 1,
            TaggedField::Features(f) if features.is_none() => features = Some(f),
            _ => {}
        }
    }
    match hashes {
        0 => return Err(Bolt11SemanticError::NoPaymentHash),
        1 => {}
        _ => return Err(Bolt11SemanticError::MultiplePaymentHashes),
    }
    match descriptions {
        0 => return Err(Bolt11SemanticError::NoDescription),
        1 => {}
        _ => return Err(Bolt11SemanticError::MultipleDescriptions),
    }
    match secrets {
        0 => return Err(Bolt11SemanticError::NoPaymentSecret),
        1 => {}
        _ => return Err(Bolt11SemanticError::MultiplePaymentSecrets),
    }
    match features {
        Some(f) if !f.requires_unknown_bits() && f.supports_payment_secret() => {}
        _ => return Err(Bolt11SemanticError::InvalidFeatures),
    }
    if raw.amount_pico_btc().is_some_and(|pico| pico % 10 != 0) {
        return Err(Bolt11SemanticError::ImpreciseAmount);
    }
    Ok(())
}

/// Checks the signature and gives the payee's node id, with one secp256k1 operation: the
/// signature must verify against the `n` field when the invoice has one (a standard, low-S
/// signature, as `from_signed` requires), and otherwise the key is recovered from it.
fn payee_pubkey(signed: &SignedRawBolt11Invoice) -> Result<PublicKey, Bolt11SemanticError> {
    static VERIFY: OnceLock<Secp256k1<VerifyOnly>> = OnceLock::new();
    let secp = VERIFY.get_or_init(Secp256k1::verification_only);
    let message = Message::from_digest(*signed.signable_hash());
    let signature = &signed.signature().0;
    match signed.raw_invoice().payee_pub_key() {
        Some(PayeePubKey(pk)) => secp
            .verify_ecdsa(&message, &signature.to_standard(), pk)
            .map(|()| *pk)
            .map_err(|_| Bolt11SemanticError::InvalidSignature),
        None => secp
            .recover_ecdsa(&message, signature)
            .map_err(|_| Bolt11SemanticError::InvalidSignature),
    }
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
