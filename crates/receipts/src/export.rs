//! JSON Lines export of receipts and its offline verification.
//!
//! An export is a text file, one JSON record per line:
//!
//! ```text
//! {"record":"key","service":"hydra","key_id":"<x-only hex>","algorithm":"bip340-secp256k1"}
//! {"record":"receipt","receipt":{...}}
//! ```
//!
//! Key records publish the issuers' public keys; receipt records hold receipts, each issuer's in
//! log order (issuers may be interleaved). [`write_export`] writes key records first, but a
//! verifier accepts them anywhere in the file.
//!
//! [`verify_export`] checks everything an offline verifier can: each line parses and is in the
//! canonical encoding, each receipt is well-formed, its hash recomputes and its signature
//! verifies, its issuer key is published in the export, each issuer's chain is intact, every
//! link resolves to a receipt in the export, and `sha256(preimage) == payment_hash` where a body
//! claims both. Every failure names the line and, when the line parsed, the receipt; so changing
//! any byte of a receipt line is reported against that line.
//!
//! Verification streams: it keeps a small record per receipt (line, id, log index, hash) for the
//! chain, link and key checks that can only finish at the end, never the receipts themselves.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, BufRead, BufWriter, Read, Write};

use bitcoin::secp256k1::XOnlyPublicKey;
use serde::{Deserialize, Serialize};

use crate::chain::{ChainState, Failure, FailureKind};
use crate::error::ReceiptError;
use crate::hash::Hash;
use crate::key::{parse_key_id, verify_with_key};
use crate::receipt::{Issuer, MAX_CANONICAL_RECEIPT_BYTES, Receipt};

/// The `algorithm` of key records: BIP340 Schnorr signatures over secp256k1.
pub const KEY_ALGORITHM: &str = "bip340-secp256k1";

/// Longest line [`verify_export`] reads. A receipt line is the receipt (at most
/// [`MAX_CANONICAL_RECEIPT_BYTES`] canonically, and serde_json escapes no more than JCS does)
/// plus hash, signature and the record wrapper, so twice the canonical limit is ample; the
/// bound keeps a hostile file from making the verifier buffer unbounded input.
pub const MAX_EXPORT_LINE_BYTES: usize = 2 * MAX_CANONICAL_RECEIPT_BYTES;

/// One line of an export, tagged by its `"record"` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExportRecord {
    /// Publishes an issuer's public key.
    Key {
        /// Service name.
        service: String,
        /// Lowercase hex x-only public key.
        key_id: String,
        /// Always [`KEY_ALGORITHM`] for now.
        algorithm: String,
    },
    /// One receipt. Boxed because a receipt is much larger than a key record.
    Receipt {
        /// The receipt.
        receipt: Box<Receipt>,
    },
}

/// Borrowing twin of [`ExportRecord`] so writing does not clone receipts. It must serialize
/// byte-identically to [`ExportRecord`], which the canonical-encoding check relies on (and the
/// export round-trip tests confirm).
#[derive(Serialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum RecordRef<'a> {
    Key {
        service: &'a str,
        key_id: &'a str,
        algorithm: &'a str,
    },
    Receipt {
        receipt: &'a Receipt,
    },
}

/// Writes an export: a key record per entry of `keys`, then `receipts` in the given order (which
/// must be each issuer's log order). Receipts are not verified here; run [`verify_export`] on
/// the result to check it.
///
/// # Errors
///
/// [`ReceiptError::Io`] or [`ReceiptError::Json`] if writing fails.
pub fn write_export<W: Write>(
    writer: W,
    keys: &[Issuer],
    receipts: &[Receipt],
) -> Result<(), ReceiptError> {
    let mut out = BufWriter::new(writer);
    for issuer in keys {
        let record = RecordRef::Key {
            service: &issuer.service,
            key_id: &issuer.key_id,
            algorithm: KEY_ALGORITHM,
        };
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
    }
    for receipt in receipts {
        serde_json::to_writer(&mut out, &RecordRef::Receipt { receipt })?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Result of [`verify_export`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Lines read.
    pub lines: usize,
    /// One entry per issuer seen in a key record or a receipt, in order of first appearance.
    pub issuers: Vec<IssuerSummary>,
    /// Every problem found, ordered by line.
    pub failures: Vec<Failure>,
}

/// Per-issuer counts in a [`VerifyReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuerSummary {
    /// Service and key id.
    pub issuer: Issuer,
    /// Whether a key record publishes this key.
    pub key_published: bool,
    /// Receipt records of this issuer.
    pub receipts: usize,
    /// Of those, how many have no failure at all.
    pub verified: usize,
}

impl VerifyReport {
    /// True when no failure was found.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Receipt records across all issuers.
    #[must_use]
    pub fn receipts(&self) -> usize {
        self.issuers.iter().map(|i| i.receipts).sum()
    }

    /// Receipts without any failure across all issuers.
    #[must_use]
    pub fn verified(&self) -> usize {
        self.issuers.iter().map(|i| i.verified).sum()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.issuers {
            let published = if s.key_published {
                ""
            } else {
                " (key not published)"
            };
            writeln!(
                f,
                "{} {}: {}/{} receipts verified{published}",
                s.issuer.service, s.issuer.key_id, s.verified, s.receipts
            )?;
        }
        for failure in &self.failures {
            writeln!(f, "{failure}")?;
        }
        let verdict = if self.is_ok() { "OK" } else { "FAILED" };
        write!(
            f,
            "{verdict}: {} lines, {} failures",
            self.lines,
            self.failures.len()
        )
    }
}

/// Verifies an export read from `reader` (see the module docs for the checks).
///
/// Never stops at the first problem: the report lists them all. An I/O error ends reading and is
/// reported as a [`FailureKind::Io`] failure, so a truncated read can never look like success.
/// Receipts cut from the end of an issuer's log cannot be detected here (nothing later refers to
/// them); checkpoints exist for that.
#[must_use]
pub fn verify_export<R: BufRead>(mut reader: R) -> VerifyReport {
    let mut verifier = Verifier::default();
    let mut buf = Vec::new();
    let mut lines = 0;
    loop {
        let line = lines + 1;
        match read_line_bounded(&mut reader, &mut buf, MAX_EXPORT_LINE_BYTES) {
            Ok(None) => break,
            Ok(Some(too_long)) => {
                lines = line;
                verifier.line(line, &buf, too_long);
            }
            Err(e) => {
                verifier.failures.push(unparsed(
                    line,
                    None,
                    FailureKind::Io,
                    format!("reading failed: {e}"),
                ));
                break;
            }
        }
    }
    verifier.finish(lines)
}

/// Reads one line without its `\n` into `buf`, reading at most `max + 1` bytes of it. Returns
/// `None` at end of input and `Some(true)` for a longer line, whose rest is skipped.
fn read_line_bounded<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    if reader.by_ref().take(limit).read_until(b'\n', buf)? == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some(false));
    }
    if buf.len() <= max {
        // The last line, without a trailing newline.
        return Ok(Some(false));
    }
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            break;
        }
        let len = chunk.len();
        reader.consume(len);
    }
    Ok(Some(true))
}

fn unparsed(line: usize, receipt_id: Option<String>, kind: FailureKind, detail: String) -> Failure {
    Failure {
        receipt_id,
        issuer: None,
        log_index: None,
        line,
        kind,
        detail,
    }
}

struct IssuerState {
    issuer: Issuer,
    /// Parsed once per issuer: lifting the x coordinate to a point costs a square root.
    key: Option<XOnlyPublicKey>,
    key_published: bool,
    chain: ChainState,
}

/// What must be remembered of a receipt until the end of the file.
struct Entry {
    line: usize,
    receipt_id: String,
    issuer: usize,
    log_index: u64,
    failed: bool,
}

#[derive(Default)]
struct Verifier {
    issuers: Vec<IssuerState>,
    by_issuer: HashMap<Issuer, usize>,
    entries: Vec<Entry>,
    /// Recomputed hashes of all receipts, for link resolution. Recomputed rather than claimed,
    /// so a link never resolves to a receipt whose content was changed.
    hashes: HashSet<Hash>,
    /// (entry, link) pairs, resolved at the end because links may point forward.
    links: Vec<(usize, Hash)>,
    failures: Vec<Failure>,
}

impl Verifier {
    fn issuer_index(&mut self, issuer: &Issuer) -> usize {
        if let Some(&i) = self.by_issuer.get(issuer) {
            return i;
        }
        let i = self.issuers.len();
        self.issuers.push(IssuerState {
            issuer: issuer.clone(),
            key: parse_key_id(&issuer.key_id).ok(),
            key_published: false,
            chain: ChainState::default(),
        });
        self.by_issuer.insert(issuer.clone(), i);
        i
    }

    fn fail(&mut self, entry: usize, kind: FailureKind, detail: String) {
        let e = &mut self.entries[entry];
        e.failed = true;
        self.failures.push(Failure {
            receipt_id: Some(e.receipt_id.clone()),
            issuer: Some(self.issuers[e.issuer].issuer.clone()),
            log_index: Some(e.log_index),
            line: e.line,
            kind,
            detail,
        });
    }

    fn line(&mut self, line: usize, bytes: &[u8], too_long: bool) {
        if too_long {
            let detail = format!("line longer than {MAX_EXPORT_LINE_BYTES} bytes");
            self.failures
                .push(unparsed(line, None, FailureKind::Unparsable, detail));
            return;
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            self.failures.push(unparsed(
                line,
                None,
                FailureKind::Unparsable,
                "not valid UTF-8".to_owned(),
            ));
            return;
        };
        let record = match serde_json::from_str::<ExportRecord>(text) {
            Ok(record) => record,
            Err(e) => {
                let detail = if text.is_empty() {
                    "empty line".to_owned()
                } else {
                    json_error_detail(&e)
                };
                self.failures.push(unparsed(
                    line,
                    salvage_receipt_id(text),
                    FailureKind::Unparsable,
                    detail,
                ));
                return;
            }
        };
        // Re-encoding must give back the line exactly. JSON has several spellings of the same
        // content (escape case, whitespace, key order, duplicate keys) that the hash cannot see;
        // insisting on ours makes every byte of the line matter.
        let canonical = serde_json::to_string(&record).is_ok_and(|s| s == text);
        match record {
            ExportRecord::Key {
                service,
                key_id,
                algorithm,
            } => {
                self.key_record(line, Issuer { service, key_id }, &algorithm, canonical);
            }
            ExportRecord::Receipt { receipt } => self.receipt_record(line, &receipt, canonical),
        }
    }

    fn key_record(&mut self, line: usize, issuer: Issuer, algorithm: &str, canonical: bool) {
        let mut problems = Vec::new();
        if !canonical {
            problems.push((
                FailureKind::NonCanonical,
                "line is not in the canonical encoding".to_owned(),
            ));
        }
        if algorithm != KEY_ALGORITHM {
            problems.push((
                FailureKind::InvalidKeyRecord,
                format!("unsupported algorithm {algorithm:?}"),
            ));
        }
        if let Err(e) = parse_key_id(&issuer.key_id) {
            problems.push((FailureKind::InvalidKeyRecord, e.to_string()));
        }
        if !crate::receipt::is_name(&issuer.service) {
            problems.push((
                FailureKind::InvalidKeyRecord,
                "invalid service name".to_owned(),
            ));
        }
        // A key record that fails its checks publishes nothing.
        if problems.is_empty() {
            let i = self.issuer_index(&issuer);
            self.issuers[i].key_published = true;
        }
        for (kind, detail) in problems {
            self.failures.push(Failure {
                receipt_id: None,
                issuer: Some(issuer.clone()),
                log_index: None,
                line,
                kind,
                detail,
            });
        }
    }

    fn receipt_record(&mut self, line: usize, receipt: &Receipt, canonical: bool) {
        let issuer = self.issuer_index(&receipt.issuer);
        let entry = self.entries.len();
        self.entries.push(Entry {
            line,
            receipt_id: receipt.receipt_id.clone(),
            issuer,
            log_index: receipt.log_index,
            failed: false,
        });

        if !canonical {
            self.fail(
                entry,
                FailureKind::NonCanonical,
                "line is not in the canonical encoding".to_owned(),
            );
        }
        if let Err(e) = receipt.validate_fields() {
            let kind = match e {
                ReceiptError::PreimageMismatch(_) => FailureKind::PreimageMismatch,
                _ => FailureKind::Invalid,
            };
            self.fail(entry, kind, e.to_string());
        }
        match receipt.checked_hash() {
            Ok(computed) => {
                if computed != receipt.hash {
                    let detail = format!(
                        "content hashes to {computed}, receipt says {}",
                        receipt.hash
                    );
                    self.fail(entry, FailureKind::HashMismatch, detail);
                }
                self.hashes.insert(computed);
            }
            Err(e) => self.fail(entry, FailureKind::Invalid, e.to_string()),
        }
        // The signature is checked over the claimed hash even if the content does not match it:
        // the two results together tell whether the content or the hash field was altered.
        let signature = match &self.issuers[issuer].key {
            Some(key) => verify_with_key(
                key,
                &receipt.issuer.key_id,
                &receipt.hash,
                &receipt.signature,
            ),
            None => Err(ReceiptError::InvalidKeyId(receipt.issuer.key_id.clone())),
        };
        if let Err(e) = signature {
            self.fail(entry, FailureKind::BadSignature, e.to_string());
        }
        if let Some((kind, detail)) =
            self.issuers[issuer]
                .chain
                .push(receipt.log_index, &receipt.prev_hash, &receipt.hash)
        {
            self.fail(entry, kind, detail);
        }
        self.links
            .extend(receipt.links.iter().map(|link| (entry, *link)));
    }

    fn finish(mut self, lines: usize) -> VerifyReport {
        for entry in 0..self.entries.len() {
            let issuer = &self.issuers[self.entries[entry].issuer];
            if !issuer.key_published {
                let detail = format!(
                    "no key record publishes key {} of service {}",
                    issuer.issuer.key_id, issuer.issuer.service
                );
                self.fail(entry, FailureKind::UnknownKey, detail);
            }
        }
        for (entry, link) in std::mem::take(&mut self.links) {
            if !self.hashes.contains(&link) {
                self.fail(
                    entry,
                    FailureKind::UnresolvedLink,
                    format!("link {link} matches no receipt in the export"),
                );
            }
        }
        // Stable sort: failures of one line keep the order in which they were checked.
        self.failures.sort_by_key(|f| f.line);

        let mut counts = vec![(0usize, 0usize); self.issuers.len()];
        for e in &self.entries {
            counts[e.issuer].0 += 1;
            if !e.failed {
                counts[e.issuer].1 += 1;
            }
        }
        let issuers = self
            .issuers
            .into_iter()
            .zip(counts)
            .map(|(s, (receipts, verified))| IssuerSummary {
                issuer: s.issuer,
                key_published: s.key_published,
                receipts,
                verified,
            })
            .collect();
        VerifyReport {
            lines,
            issuers,
            failures: self.failures,
        }
    }
}

/// serde_json's message without its "at line 1 column N" suffix, which would be confusing next
/// to the export's own line number.
fn json_error_detail(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match msg.strip_suffix(&suffix) {
        Some(head) => format!("{head} (column {})", e.column()),
        None => msg,
    }
}

/// Best effort to name the receipt on a line that does not parse as a record (say, a changed
/// byte broke a field name): if it is still JSON with a string `receipt.receipt_id`, use it.
fn salvage_receipt_id(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value
        .get("receipt")?
        .get("receipt_id")?
        .as_str()
        .map(str::to_owned)
}
