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
//! * **logged** in an RFC 6962 Merkle tree per issuer ([`merkle`]) whose heads the issuer signs
//!   as C2SP-style checkpoint notes ([`Checkpoint`]);
//! * **linked** across services under the rules of [`links::LINK_RULES`] (a paid Hydra invoice
//!   links the executor's payment with the same payment hash and amounts, and so on);
//! * **exportable** as JSON Lines and verifiable offline ([`write_export`], [`verify_export`]):
//!   the auditor checks hashes, signatures, chains, links, checkpoints (roots and consistency)
//!   and the cross-service rules, in parallel across cores.
//!
//! The wire formats are specified in `docs/receipts.md`, with golden vectors in
//! `testdata/golden/`.
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
mod checkpoint;
mod error;
mod export;
mod hash;
mod jcs;
mod key;
pub mod links;
pub mod merkle;
mod receipt;
pub mod u64_string;

pub use chain::{Failure, FailureKind, verify_chain};
pub use checkpoint::{
    Checkpoint, CheckpointError, CheckpointRecord, MAX_NOTE_BYTES, ORIGIN_PREFIX, origin,
};
pub use error::ReceiptError;
pub use export::{
    ExportRecord, IssuerSummary, KEY_ALGORITHM, MAX_EXPORT_LINE_BYTES, VerifyReport, verify_export,
    verify_export_with_threads, write_checkpoint_record, write_export,
    write_export_with_checkpoints, write_key_record, write_receipt_record,
};
pub use hash::Hash;
pub use jcs::canonical_json;
pub use key::{ReceiptKey, verify_signature};
pub use receipt::{
    Issuer, MAX_BODY_DEPTH, MAX_CANONICAL_RECEIPT_BYTES, MAX_IDEMPOTENCY_KEY_LEN, MAX_LINKS,
    MAX_RECEIPT_ID_LEN, MAX_SCHEMA_LEN, MAX_SERVICE_LEN, Receipt, ReceiptDraft, body_from,
};
