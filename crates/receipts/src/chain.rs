//! Per-issuer log chain checks and the failure type shared with export verification.
//!
//! Each issuer's receipts form an append-only log: `log_index` counts up from 0 without gaps and
//! each `prev_hash` is the `hash` of the receipt before it (the first one's is [`Hash::ZERO`]).
//! Checking that turns "these receipts are each authentic" into "this is the issuer's history, in
//! order, with nothing removed from the middle or rewritten". What it cannot see is receipts
//! removed from the *end*; signed checkpoints (Merkle tree heads) close that gap.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::hash::Hash;
use crate::receipt::{Issuer, Receipt};

/// What kind of problem a [`Failure`] is. Serialized as the snake_case name, a stable code for
/// the CLI's JSON output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The line is not valid UTF-8 JSON of an export record, or is too long.
    Unparsable,
    /// The line parses but is not byte-identical to how [`crate::write_export`] encodes the record
    /// it parses to (e.g. `\u001F` for `\u001f`, extra whitespace, a carriage return). Such
    /// spellings do not change the hashed content, so without this check a changed byte could go
    /// unnoticed.
    NonCanonical,
    /// Reading the export failed; nothing after this line was checked.
    Io,
    /// A key record has an unsupported algorithm, a malformed key id or service name.
    InvalidKeyRecord,
    /// The receipt breaks a format rule (schema, field limits, a JSON number, ...).
    Invalid,
    /// The receipt's content does not hash to its `hash` field.
    HashMismatch,
    /// The signature does not verify under `issuer.key_id`.
    BadSignature,
    /// No key record in the export publishes the receipt's issuer key.
    UnknownKey,
    /// [`verify_chain`] was given receipts of more than one issuer.
    IssuerMismatch,
    /// Receipts are missing before this one (or the log does not start at 0).
    Gap,
    /// The receipt comes after one with a higher `log_index`.
    OutOfOrder,
    /// Another receipt of the issuer has the same `log_index`.
    Duplicate,
    /// `prev_hash` is not the hash of the issuer's previous receipt (or not zero for index 0).
    PrevHashMismatch,
    /// A link names a hash that no receipt in the export has.
    UnresolvedLink,
    /// The body's `preimage` does not hash to its `payment_hash`.
    PreimageMismatch,
    /// A checkpoint note is malformed or its signature does not verify.
    CheckpointInvalid,
    /// A checkpoint's root is not the Merkle root of the exported log at its size: receipts
    /// were deleted, inserted, reordered or modified.
    CheckpointMismatch,
    /// Two checkpoints of one issuer are not consistent: the issuer signed two histories.
    CheckpointFork,
    /// A checkpoint covers more receipts than the export holds (receipts removed).
    MissingReceipts,
    /// A receipt lacks a link a cross-service rule requires.
    LinkMissing,
    /// A linked receipt disagrees with this one (payment hash, amounts) under a rule.
    LinkMismatch,
}

impl FailureKind {
    /// The stable snake_case code, e.g. `hash_mismatch`.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            FailureKind::Unparsable => "unparsable",
            FailureKind::NonCanonical => "non_canonical",
            FailureKind::Io => "io",
            FailureKind::InvalidKeyRecord => "invalid_key_record",
            FailureKind::Invalid => "invalid",
            FailureKind::HashMismatch => "hash_mismatch",
            FailureKind::BadSignature => "bad_signature",
            FailureKind::UnknownKey => "unknown_key",
            FailureKind::IssuerMismatch => "issuer_mismatch",
            FailureKind::Gap => "gap",
            FailureKind::OutOfOrder => "out_of_order",
            FailureKind::Duplicate => "duplicate",
            FailureKind::PrevHashMismatch => "prev_hash_mismatch",
            FailureKind::UnresolvedLink => "unresolved_link",
            FailureKind::PreimageMismatch => "preimage_mismatch",
            FailureKind::CheckpointInvalid => "checkpoint_invalid",
            FailureKind::CheckpointMismatch => "checkpoint_mismatch",
            FailureKind::CheckpointFork => "checkpoint_fork",
            FailureKind::MissingReceipts => "missing_receipts",
            FailureKind::LinkMissing => "link_missing",
            FailureKind::LinkMismatch => "link_mismatch",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One problem found by [`verify_chain`] or [`crate::verify_export`], naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The receipt's id, when the line parsed far enough to have one.
    pub receipt_id: Option<String>,
    /// The receipt's issuer (or the key record's), when known.
    pub issuer: Option<Issuer>,
    /// The receipt's log index, when known. A decimal string in JSON, like in receipts.
    #[serde(with = "crate::u64_string::option")]
    pub log_index: Option<u64>,
    /// 1-based line number in the export; for [`verify_chain`], 1-based position in the slice.
    pub line: usize,
    /// What went wrong.
    pub kind: FailureKind,
    /// Human-readable specifics.
    pub detail: String,
}

impl Failure {
    pub(crate) fn for_receipt(
        receipt: &Receipt,
        line: usize,
        kind: FailureKind,
        detail: String,
    ) -> Failure {
        Failure {
            receipt_id: Some(receipt.receipt_id.clone()),
            issuer: Some(receipt.issuer.clone()),
            log_index: Some(receipt.log_index),
            line,
            kind,
            detail,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(id) = &self.receipt_id {
            // Debug formatting quotes the id and escapes anything odd in a tampered one.
            write!(f, ": receipt {id:?}")?;
        }
        match (&self.issuer, self.log_index) {
            (Some(issuer), Some(index)) => write!(f, " ({} #{index})", issuer.service)?,
            (Some(issuer), None) => write!(f, " ({})", issuer.service)?,
            _ => {}
        }
        write!(f, ": {}: {}", self.kind, self.detail)
    }
}

/// Checks that `receipts` are one issuer's log in order: all share the first receipt's issuer,
/// `log_index` runs 0, 1, 2, ... and each `prev_hash` is the previous receipt's `hash` (the
/// first's is [`Hash::ZERO`]).
///
/// This checks linkage only, using each receipt's `hash` field as given; call
/// [`Receipt::verify`] on each receipt to check that the hashes and signatures are authentic.
/// Returns every problem found, in order; empty means the chain is intact.
#[must_use]
pub fn verify_chain(receipts: &[Receipt]) -> Vec<Failure> {
    let mut failures = Vec::new();
    let Some(first) = receipts.first() else {
        return failures;
    };
    let mut chain = ChainState::default();
    for (i, receipt) in receipts.iter().enumerate() {
        let problem = if receipt.issuer == first.issuer {
            chain.push(receipt.log_index, &receipt.prev_hash, &receipt.hash)
        } else {
            Some((
                FailureKind::IssuerMismatch,
                format!(
                    "issuer {}/{} differs from the first receipt's {}/{}",
                    receipt.issuer.service,
                    receipt.issuer.key_id,
                    first.issuer.service,
                    first.issuer.key_id
                ),
            ))
        };
        if let Some((kind, detail)) = problem {
            failures.push(Failure::for_receipt(receipt, i + 1, kind, detail));
        }
    }
    failures
}

/// Incremental chain check for one issuer, fed receipts in log order.
///
/// After a gap it resynchronizes on the receipt after the gap, so one missing receipt produces
/// one failure rather than failures for every later receipt.
#[derive(Debug)]
pub(crate) struct ChainState {
    next_index: u64,
    head: Hash,
    /// Hash per log index seen, to tell duplicates (and forks) from reordering.
    seen: HashMap<u64, Hash>,
}

impl Default for ChainState {
    fn default() -> Self {
        ChainState {
            next_index: 0,
            head: Hash::ZERO,
            seen: HashMap::new(),
        }
    }
}

impl ChainState {
    /// Merkle leaf hashes of the receipts seen at log indexes 0, 1, 2, ... up to the first
    /// missing index (using each receipt's `hash` field as given).
    pub(crate) fn leaves(&self) -> Vec<crate::merkle::Digest> {
        (0u64..)
            .map_while(|i| self.seen.get(&i))
            .map(|h| crate::merkle::leaf_hash(h.as_bytes()))
            .collect()
    }

    /// Feeds the next receipt; returns what is wrong with its place in the chain, if anything.
    pub(crate) fn push(
        &mut self,
        log_index: u64,
        prev_hash: &Hash,
        hash: &Hash,
    ) -> Option<(FailureKind, String)> {
        if let Some(existing) = self.seen.get(&log_index) {
            let detail = if existing == hash {
                format!("log_index {log_index} appears more than once")
            } else {
                format!(
                    "two different receipts at log_index {log_index} (a fork): {existing} and {hash}"
                )
            };
            return Some((FailureKind::Duplicate, detail));
        }
        self.seen.insert(log_index, *hash);
        if log_index < self.next_index {
            return Some((
                FailureKind::OutOfOrder,
                format!(
                    "log_index {log_index} comes after log_index {}",
                    self.next_index - 1
                ),
            ));
        }
        let problem = if log_index > self.next_index {
            let detail = if self.next_index == 0 {
                format!("the log starts at log_index {log_index}, not 0")
            } else {
                format!(
                    "log_index {}..={} missing before it",
                    self.next_index,
                    log_index - 1
                )
            };
            Some((FailureKind::Gap, detail))
        } else if *prev_hash != self.head {
            let detail = if log_index == 0 {
                format!(
                    "log_index 0 must have prev_hash {}, has {prev_hash}",
                    Hash::ZERO
                )
            } else {
                format!(
                    "prev_hash {prev_hash} is not the hash {} of log_index {}",
                    self.head,
                    log_index - 1
                )
            };
            Some((FailureKind::PrevHashMismatch, detail))
        } else {
            None
        };
        self.next_index = log_index.saturating_add(1);
        self.head = *hash;
        problem
    }
}
