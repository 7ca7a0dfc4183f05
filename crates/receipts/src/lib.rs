//! Signed, hash-chained receipts for the payments suite.
//!
//! Every service that moves money or makes a decision another party relies on issues a
//! *receipt*: a small JSON object naming what happened (`schema`, `body`), who says so
//! (`issuer`), where it sits in the issuer's append-only log (`log_index`, `prev_hash`) and
//! which other receipts it depends on (`links`). A receipt is
//!
//! * **hashed** with SHA-256 over its RFC 8785 (JCS) canonical JSON without `hash` and
//!   `signature` ([`canonical_json`], [`Receipt::compute_hash`]), so any JCS implementation in
//!   any language reproduces the hash;
//! * **signed** with BIP340 Schnorr over the 32 hash bytes by the issuer's secp256k1 key
//!   ([`ReceiptKey`], [`verify_signature`]);
//! * **chained**: `prev_hash` links each receipt to the previous one of the same issuer, so a
//!   verifier notices gaps, reorderings and rewritten history ([`verify_chain`]);
//! * **exportable** as JSON Lines and verifiable offline ([`write_export`], [`verify_export`]).
//!
//! # No JSON numbers
//!
//! A receipt contains no JSON numbers at all: 64-bit integers (`log_index`, `issued_at_ms`,
//! amounts in bodies) are decimal strings (see [`u64_string`]). RFC 8785 formats numbers as
//! IEEE 754 doubles, which silently loses precision above 2^53 and is the part of JCS that
//! independent implementations most often get subtly wrong. Without numbers, a verifier in any
//! language needs only string escaping and key sorting to reproduce a hash.
//!
//! # Usage
//!
//! A service builds a [`ReceiptDraft`], then [`ReceiptDraft::seal`]s it with its key at the next
//! position of its log; the sealed [`Receipt`] is stored in the same transaction as the state
//! change it attests. Verifiers call [`Receipt::verify`] for one receipt, [`verify_chain`] for a
//! log, or [`verify_export`] for a whole export file.

mod chain;
mod error;
mod export;
mod hash;
mod jcs;
mod key;
mod receipt;
pub mod u64_string;

pub use chain::{Failure, FailureKind, verify_chain};
pub use error::ReceiptError;
pub use export::{
    ExportRecord, IssuerSummary, KEY_ALGORITHM, MAX_EXPORT_LINE_BYTES, VerifyReport, verify_export,
    write_export,
};
pub use hash::Hash;
pub use jcs::canonical_json;
pub use key::{ReceiptKey, verify_signature};
pub use receipt::{
    Issuer, MAX_BODY_DEPTH, MAX_CANONICAL_RECEIPT_BYTES, MAX_IDEMPOTENCY_KEY_LEN, MAX_LINKS,
    MAX_RECEIPT_ID_LEN, MAX_SCHEMA_LEN, MAX_SERVICE_LEN, Receipt, ReceiptDraft, body_from,
};
