//! BOLT11 invoices for the suite: decode, validate against a payer's policy, and create.
//!
//! Every service that accepts an invoice from outside (treasury's pay request, hydra's quote,
//! the wallet-executor's pay) runs [`validate`] first, so a wrong-network, expired, amountless
//! or oversized invoice is refused with the same stable code everywhere, before any money moves.
//! [`InvoiceSigner`] creates real signed invoices for tests and the simulated Lightning network.
//!
//! Parsing is `lightning-invoice`'s (LDK), which checks the bech32 checksum, the BOLT11 field
//! rules, the payment secret and the payee's signature.

mod create;
mod error;
mod hash;
mod network;
mod validate;

pub use create::{
    InvoiceRequest, InvoiceSigner, MAX_BOLT11_AMOUNT_MSAT, MAX_DESCRIPTION_BYTES, create_invoice,
};
pub use error::InvoiceError;
pub use hash::{InvalidHex32, PaymentHash, Preimage};
pub use network::{Network, UnknownNetwork};
pub use validate::{
    DecodedInvoice, InvoicePolicy, MAX_INVOICE_LEN, ValidInvoice, decode, validate,
};

/// Re-exported so callers of [`create_invoice`] need no direct `bitcoin` dependency.
pub use bitcoin::secp256k1::{PublicKey, SecretKey};
