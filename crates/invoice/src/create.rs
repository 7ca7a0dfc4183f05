//! Creating real, signed BOLT11 invoices: for tests and for the simulated Lightning network,
//! whose nodes issue invoices just as LND would.

use std::fmt;
use std::time::Duration;

use bitcoin::hashes::Hash as _;
use bitcoin::hashes::sha256;
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{InvoiceBuilder, PaymentSecret};
use oa_money::Msat;

use crate::{InvoiceError, Network, PaymentHash};

/// Longest description in bytes that BOLT11 can carry in one `d` field (639 bytes = 1023 5-bit
/// words, the field length limit).
pub const MAX_DESCRIPTION_BYTES: usize = 639;

/// Largest amount `lightning-invoice` can encode: it counts in pico-bitcoin (msat x 10) in a
/// `u64`, so about 18.4 million BTC, below [`Msat::MAX`] (21 million BTC).
pub const MAX_BOLT11_AMOUNT_MSAT: u64 = u64::MAX / 10;

/// What to put in a new invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceRequest {
    pub network: Network,
    /// `None` makes an "any amount" invoice.
    pub amount: Option<Msat>,
    pub payment_hash: PaymentHash,
    /// The payee's per-invoice secret, which payers must echo (BOLT11 `s`).
    pub payment_secret: [u8; 32],
    pub description: String,
    /// Creation time since the Unix epoch (whole seconds are kept).
    pub created_at: Duration,
    /// How long after `created_at` the invoice may be paid (whole seconds are kept).
    pub expiry: Duration,
    /// The final hop's minimum CLTV delta, in blocks.
    pub min_final_cltv_expiry_delta: u64,
}

/// Signs invoices with a node's secret key.
pub struct InvoiceSigner {
    secp: Secp256k1<All>,
    node_secret: SecretKey,
}

impl InvoiceSigner {
    pub fn new(node_secret: SecretKey) -> Self {
        InvoiceSigner {
            secp: Secp256k1::new(),
            node_secret,
        }
    }

    /// The node id invoices from this signer recover to.
    pub fn node_id(&self) -> PublicKey {
        PublicKey::from_secret_key(&self.secp, &self.node_secret)
    }

    /// A signed BOLT11 invoice string.
    pub fn create_invoice(&self, req: &InvoiceRequest) -> Result<String, InvoiceError> {
        if req.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(InvoiceError::Creation(format!(
                "description is longer than {MAX_DESCRIPTION_BYTES} bytes"
            )));
        }
        if let Some(amount) = req.amount
            && amount.as_u64() > MAX_BOLT11_AMOUNT_MSAT
        {
            return Err(InvoiceError::Creation(format!(
                "amount is above the BOLT11-encodable maximum of {MAX_BOLT11_AMOUNT_MSAT} msat"
            )));
        }
        let builder = InvoiceBuilder::new(req.network.currency())
            .description(req.description.clone())
            .payment_hash(sha256::Hash::from_byte_array(req.payment_hash.0))
            .payment_secret(PaymentSecret(req.payment_secret))
            .duration_since_epoch(req.created_at)
            .expiry_time(req.expiry)
            .min_final_cltv_expiry_delta(req.min_final_cltv_expiry_delta)
            .basic_mpp();
        let builder = match req.amount {
            Some(amount) => builder.amount_milli_satoshis(amount.as_u64()),
            None => builder,
        };
        let invoice = builder
            .build_signed(|hash| self.secp.sign_ecdsa_recoverable(hash, &self.node_secret))
            .map_err(|e| InvoiceError::Creation(e.to_string()))?;
        Ok(invoice.to_string())
    }
}

impl fmt::Debug for InvoiceSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvoiceSigner")
            .field("node_id", &self.node_id().to_string())
            .field("node_secret", &"[redacted]")
            .finish()
    }
}

/// One-shot form of [`InvoiceSigner::create_invoice`].
pub fn create_invoice(
    node_secret: &SecretKey,
    req: &InvoiceRequest,
) -> Result<String, InvoiceError> {
    InvoiceSigner::new(*node_secret).create_invoice(req)
}
