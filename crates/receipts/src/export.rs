//! JSON Lines export of receipts and its offline verification: the auditor.
//!
//! An export is a text file, one JSON record per line:
//!
//! ```text
//! {"record":"key","service":"hydra","key_id":"<x-only hex>","algorithm":"bip340-secp256k1"}
//! {"record":"checkpoint","service":"hydra","key_id":"<x-only hex>","note":"<signed note>"}
//! {"record":"receipt","receipt":{...}}
//! ```
//!
//! Key records publish the issuers' public keys; checkpoint records carry the issuers' signed
//! Merkle tree heads ([`crate::Checkpoint`]); receipt records hold receipts, each issuer's in log
//! order (issuers may be interleaved). [`write_export`] writes key records first, but a verifier
//! accepts every record anywhere in the file.
//!
//! [`verify_export`] checks everything an offline verifier can: each line parses and is in the
//! canonical encoding, each receipt is well-formed, its hash recomputes and its signature
//! verifies, its issuer key is published in the export, each issuer's chain is intact, every
//! link resolves to a receipt in the export, `sha256(preimage) == payment_hash` where a body
//! claims both, the cross-service rules of [`crate::links::LINK_RULES`] hold, and every
//! checkpoint is signed by its issuer, matches the Merkle root of that many exported receipts,
//! and is consistent with the issuer's other checkpoints. Every failure names the line and, when
//! the line parsed, the receipt; so changing any byte of a receipt line is reported against that
//! line.
//!
//! The per-line work (parsing, hashing, signatures) runs on every core in batches; what must see
//! the whole file (chains, links, keys, checkpoints) keeps a small record per receipt, plus the
//! bodies of receipts the link rules apply to.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, BufRead, BufWriter, Read, Write};

use bitcoin::secp256k1::XOnlyPublicKey;
use serde::{Deserialize, Serialize};

use crate::chain::{ChainState, Failure, FailureKind};
use crate::checkpoint::{Checkpoint, CheckpointRecord};
use crate::error::ReceiptError;
use crate::hash::Hash;
use crate::key::{parse_key_id, verify_with_key};
use crate::merkle;
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
    /// A signed checkpoint of an issuer's log (see [`crate::Checkpoint`]).
    Checkpoint {
        /// Service name.
        service: String,
        /// The x-only key (hex) that signed the note.
        key_id: String,
        /// The signed checkpoint note.
        note: String,
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
    Checkpoint {
        service: &'a str,
        key_id: &'a str,
        note: &'a str,
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
    write_export_with_checkpoints(writer, keys, &[], receipts)
}

/// Like [`write_export`], with checkpoint records between the key records and the receipts.
///
/// # Errors
///
/// [`ReceiptError::Io`] or [`ReceiptError::Json`] if writing fails.
pub fn write_export_with_checkpoints<W: Write>(
    writer: W,
    keys: &[Issuer],
    checkpoints: &[CheckpointRecord],
    receipts: &[Receipt],
) -> Result<(), ReceiptError> {
    let mut out = BufWriter::new(writer);
    for issuer in keys {
        write_key_record(&mut out, issuer)?;
    }
    for c in checkpoints {
        write_checkpoint_record(&mut out, c)?;
    }
    for receipt in receipts {
        write_receipt_record(&mut out, receipt)?;
    }
    out.flush()?;
    Ok(())
}

/// Writes one key record line (for exports written incrementally).
///
/// # Errors
///
/// [`ReceiptError::Io`] or [`ReceiptError::Json`] if writing fails.
pub fn write_key_record<W: Write>(mut out: W, issuer: &Issuer) -> Result<(), ReceiptError> {
    let record = RecordRef::Key {
        service: &issuer.service,
        key_id: &issuer.key_id,
        algorithm: KEY_ALGORITHM,
    };
    serde_json::to_writer(&mut out, &record)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes one checkpoint record line.
///
/// # Errors
///
/// [`ReceiptError::Io`] or [`ReceiptError::Json`] if writing fails.
pub fn write_checkpoint_record<W: Write>(
    mut out: W,
    c: &CheckpointRecord,
) -> Result<(), ReceiptError> {
    let record = RecordRef::Checkpoint {
        service: &c.service,
        key_id: &c.key_id,
        note: &c.note,
    };
    serde_json::to_writer(&mut out, &record)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes one receipt record line.
///
/// # Errors
///
/// [`ReceiptError::Io`] or [`ReceiptError::Json`] if writing fails.
pub fn write_receipt_record<W: Write>(mut out: W, receipt: &Receipt) -> Result<(), ReceiptError> {
    serde_json::to_writer(&mut out, &RecordRef::Receipt { receipt })?;
    out.write_all(b"\n")?;
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
    /// Signed checkpoints that match the exported log.
    pub checkpoints: usize,
    /// The largest tree size a matching checkpoint covers: receipts beyond it are not yet
    /// committed to by the issuer (their removal from the end could not be detected).
    #[serde(with = "crate::u64_string")]
    pub checkpointed_size: u64,
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
                "{} {}: {}/{} receipts verified{published}, {} checkpoints verified (covering {} receipts)",
                s.issuer.service,
                s.issuer.key_id,
                s.verified,
                s.receipts,
                s.checkpoints,
                s.checkpointed_size
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
/// Receipts cut from the end of an issuer's log are detected only up to the largest checkpoint in
/// the export (nothing else refers to them); the report says how far checkpoints cover each log.
#[must_use]
pub fn verify_export<R: BufRead>(reader: R) -> VerifyReport {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    verify_export_with_threads(reader, threads)
}

/// How every canonical receipt line starts.
const RECEIPT_LINE_PREFIX: &str = "{\"record\":\"receipt\",\"receipt\":";

/// Lines checked per parallel batch: enough to amortize starting the threads (microseconds)
/// against verifying signatures (tens of microseconds each).
const BATCH_LINES: usize = 4096;
/// Bytes read per batch at most, so memory stays bounded whatever the line lengths.
const BATCH_BYTES: usize = 16 * 1024 * 1024;

/// [`verify_export`] with the per-line checks (parsing, hashing, signatures) spread over
/// `threads` threads. The result does not depend on `threads`.
#[must_use]
pub fn verify_export_with_threads<R: BufRead>(mut reader: R, threads: usize) -> VerifyReport {
    let threads = threads.max(1);
    let mut verifier = Verifier::default();
    let mut lines = 0;
    let mut batch: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut pending: Vec<Prepared> = Vec::new();
    let mut io_error = None;
    loop {
        batch.clear();
        let mut bytes = 0;
        while batch.len() < BATCH_LINES && bytes < BATCH_BYTES {
            let mut buf = Vec::new();
            match read_line_bounded(&mut reader, &mut buf, MAX_EXPORT_LINE_BYTES) {
                Ok(None) => break,
                Ok(Some(too_long)) => {
                    bytes += buf.len();
                    batch.push((buf, too_long));
                }
                Err(e) => {
                    io_error = Some(e);
                    break;
                }
            }
        }
        // The previous batch is applied (sequential: chains, links) on this thread while the
        // workers check this one, so the cores stay busy.
        let previous = std::mem::take(&mut pending);
        pending = prepare_all(&batch, threads, || {
            for p in previous {
                lines += 1;
                verifier.apply(lines, p);
            }
        });
        if let Some(e) = io_error.take() {
            for p in std::mem::take(&mut pending) {
                lines += 1;
                verifier.apply(lines, p);
            }
            verifier.failures.push(unparsed(
                lines + 1,
                None,
                FailureKind::Io,
                format!("reading failed: {e}"),
            ));
            break;
        }
        if batch.len() < BATCH_LINES && bytes < BATCH_BYTES {
            break;
        }
    }
    for p in pending {
        lines += 1;
        verifier.apply(lines, p);
    }
    verifier.finish(lines)
}

/// Runs [`prepare`] over `batch` on up to `threads` threads, keeping the order, and runs
/// `during` on the calling thread meanwhile.
fn prepare_all(batch: &[(Vec<u8>, bool)], threads: usize, during: impl FnOnce()) -> Vec<Prepared> {
    let chunk = batch.len().div_ceil(threads).max(1);
    if threads == 1 || batch.len() < 2 * chunk.min(64) {
        during();
        let mut keys = KeyCache::default();
        return batch
            .iter()
            .map(|(b, long)| prepare(b, *long, &mut keys))
            .collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .chunks(chunk)
            .map(|part| {
                let handle = scope.spawn(move || {
                    let mut keys = KeyCache::default();
                    part.iter()
                        .map(|(b, long)| prepare(b, *long, &mut keys))
                        .collect::<Vec<_>>()
                });
                (part.len(), handle)
            })
            .collect();
        during();
        handles
            .into_iter()
            .flat_map(|(len, h)| {
                // A panic would be a bug; the lines it was checking are then reported failed
                // rather than silently passed.
                h.join().unwrap_or_else(|_| {
                    (0..len)
                        .map(|_| Prepared::Failed {
                            receipt_id: None,
                            kind: FailureKind::Io,
                            detail: "the verification thread for this line panicked".to_owned(),
                        })
                        .collect()
                })
            })
            .collect()
    })
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

/// Parsed issuer keys of one thread, so a key id is lifted to a curve point once per thread
/// (lifting costs a square root) rather than once per receipt.
#[derive(Default)]
struct KeyCache(HashMap<String, Option<XOnlyPublicKey>>);

impl KeyCache {
    fn get(&mut self, key_id: &str) -> Option<XOnlyPublicKey> {
        if let Some(k) = self.0.get(key_id) {
            return *k;
        }
        let k = parse_key_id(key_id).ok();
        // Bounded: an export names few keys, but a hostile one could name a new key per line.
        if self.0.len() < 1024 {
            self.0.insert(key_id.to_owned(), k);
        }
        k
    }
}

/// What one line is, with every check that needs only the line itself already done. Computed
/// in parallel, applied to the [`Verifier`] in line order.
enum Prepared {
    Failed {
        receipt_id: Option<String>,
        kind: FailureKind,
        detail: String,
    },
    Key {
        issuer: Issuer,
        algorithm: String,
        canonical: bool,
    },
    Checkpoint {
        record: CheckpointRecord,
        canonical: bool,
    },
    Receipt {
        receipt: Box<Receipt>,
        canonical: bool,
        /// Format-rule failure, if any.
        invalid: Option<(FailureKind, String)>,
        /// The recomputed hash, or why it could not be computed.
        computed: Result<Hash, String>,
        /// Signature over the claimed hash.
        signature: Result<(), String>,
    },
}

fn prepare(bytes: &[u8], too_long: bool, keys: &mut KeyCache) -> Prepared {
    let failed = |receipt_id, kind, detail| Prepared::Failed {
        receipt_id,
        kind,
        detail,
    };
    if too_long {
        let detail = format!("line longer than {MAX_EXPORT_LINE_BYTES} bytes");
        return failed(None, FailureKind::Unparsable, detail);
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return failed(None, FailureKind::Unparsable, "not valid UTF-8".to_owned());
    };
    // Fast path for the common line, a receipt record in our exact encoding: parse the receipt
    // straight from its slice. Going through the internally tagged enum makes serde buffer the
    // whole record first, which costs as much as a third of a signature verification.
    let fast = text
        .strip_prefix(RECEIPT_LINE_PREFIX)
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|inner| {
            serde_json::from_str::<Receipt>(inner)
                .ok()
                .map(|r| (inner, r))
        });
    let (record, canonical) = if let Some((inner, receipt)) = fast {
        // The record encodes as the prefix, the receipt, and `}`: the line is canonical exactly
        // when the receipt part is.
        let canonical = serde_json::to_string(&receipt).is_ok_and(|s| s == inner);
        (
            ExportRecord::Receipt {
                receipt: Box::new(receipt),
            },
            canonical,
        )
    } else {
        let record = match serde_json::from_str::<ExportRecord>(text) {
            Ok(record) => record,
            Err(e) => {
                let detail = if text.is_empty() {
                    "empty line".to_owned()
                } else {
                    json_error_detail(&e)
                };
                return failed(salvage_receipt_id(text), FailureKind::Unparsable, detail);
            }
        };
        // Re-encoding must give back the line exactly. JSON has several spellings of the same
        // content (escape case, whitespace, key order, duplicate keys) that the hash cannot
        // see; insisting on ours makes every byte of the line matter.
        let canonical = serde_json::to_string(&record).is_ok_and(|s| s == text);
        (record, canonical)
    };
    match record {
        ExportRecord::Key {
            service,
            key_id,
            algorithm,
        } => Prepared::Key {
            issuer: Issuer { service, key_id },
            algorithm,
            canonical,
        },
        ExportRecord::Checkpoint {
            service,
            key_id,
            note,
        } => Prepared::Checkpoint {
            record: CheckpointRecord {
                service,
                key_id,
                note,
            },
            canonical,
        },
        ExportRecord::Receipt { receipt } => {
            let invalid = receipt.validate_fields().err().map(|e| {
                let kind = match e {
                    ReceiptError::PreimageMismatch(_) => FailureKind::PreimageMismatch,
                    _ => FailureKind::Invalid,
                };
                (kind, e.to_string())
            });
            let computed = receipt.checked_hash().map_err(|e| e.to_string());
            // The signature is checked over the claimed hash even if the content does not match
            // it: the two results together tell whether the content or the hash field changed.
            let signature = match keys.get(&receipt.issuer.key_id) {
                Some(key) => verify_with_key(
                    &key,
                    &receipt.issuer.key_id,
                    &receipt.hash,
                    &receipt.signature,
                )
                .map_err(|e| e.to_string()),
                None => Err(ReceiptError::InvalidKeyId(receipt.issuer.key_id.clone()).to_string()),
            };
            Prepared::Receipt {
                receipt,
                canonical,
                invalid,
                computed,
                signature,
            }
        }
    }
}

struct IssuerState {
    issuer: Issuer,
    key_published: bool,
    chain: ChainState,
    /// Checkpoint records naming this issuer: (line, note).
    checkpoints: Vec<(usize, String)>,
    /// Largest tree size whose checkpoint matched the exported log.
    checkpointed_size: u64,
    checkpoints_ok: usize,
}

/// What must be remembered of a receipt until the end of the file.
struct Entry {
    line: usize,
    receipt_id: String,
    issuer: usize,
    log_index: u64,
    failed: bool,
}

/// A receipt of a class some [`LINK_RULES`](crate::links::LINK_RULES) entry names, kept for the
/// cross-service checks at the end.
struct RuleSubject {
    entry: usize,
    schema: String,
    body: serde_json::Map<String, serde_json::Value>,
    links: Vec<Hash>,
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
    /// Receipts the link rules apply to, by recomputed hash.
    subjects: HashMap<Hash, RuleSubject>,
    /// Checkpoint records whose service and key match no issuer yet: (line, record).
    checkpoint_records: Vec<(usize, CheckpointRecord)>,
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
            key_published: false,
            chain: ChainState::default(),
            checkpoints: Vec::new(),
            checkpointed_size: 0,
            checkpoints_ok: 0,
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

    fn apply(&mut self, line: usize, prepared: Prepared) {
        match prepared {
            Prepared::Failed {
                receipt_id,
                kind,
                detail,
            } => self.failures.push(unparsed(line, receipt_id, kind, detail)),
            Prepared::Key {
                issuer,
                algorithm,
                canonical,
            } => self.key_record(line, issuer, &algorithm, canonical),
            Prepared::Checkpoint { record, canonical } => {
                if !canonical {
                    self.failures.push(Failure {
                        receipt_id: None,
                        issuer: Some(Issuer {
                            service: record.service.clone(),
                            key_id: record.key_id.clone(),
                        }),
                        log_index: None,
                        line,
                        kind: FailureKind::NonCanonical,
                        detail: "line is not in the canonical encoding".to_owned(),
                    });
                }
                self.checkpoint_records.push((line, record));
            }
            Prepared::Receipt {
                receipt,
                canonical,
                invalid,
                computed,
                signature,
            } => self.receipt_record(line, *receipt, canonical, invalid, computed, signature),
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

    fn receipt_record(
        &mut self,
        line: usize,
        receipt: Receipt,
        canonical: bool,
        invalid: Option<(FailureKind, String)>,
        computed: Result<Hash, String>,
        signature: Result<(), String>,
    ) {
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
        if let Some((kind, detail)) = invalid {
            self.fail(entry, kind, detail);
        }
        let mut recomputed = None;
        match computed {
            Ok(computed) => {
                if computed != receipt.hash {
                    let detail = format!(
                        "content hashes to {computed}, receipt says {}",
                        receipt.hash
                    );
                    self.fail(entry, FailureKind::HashMismatch, detail);
                }
                self.hashes.insert(computed);
                recomputed = Some(computed);
            }
            Err(e) => self.fail(entry, FailureKind::Invalid, e),
        }
        if let Err(e) = signature {
            self.fail(entry, FailureKind::BadSignature, e);
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
        if let Some(hash) = recomputed
            && crate::links::has_rules(&receipt.schema)
        {
            self.subjects.insert(
                hash,
                RuleSubject {
                    entry,
                    schema: receipt.schema,
                    body: receipt.body,
                    links: receipt.links,
                },
            );
        }
    }

    /// Checks every checkpoint record: signed by the issuer's published key, and its root is the
    /// root of the first `tree_size` exported receipts of that issuer; consecutive checkpoints
    /// of an issuer must be consistent (else they fork history).
    fn check_checkpoints(&mut self) {
        for (line, record) in std::mem::take(&mut self.checkpoint_records) {
            let issuer = Issuer {
                service: record.service.clone(),
                key_id: record.key_id.clone(),
            };
            let fail = |kind, detail| Failure {
                receipt_id: None,
                issuer: Some(issuer.clone()),
                log_index: None,
                line,
                kind,
                detail,
            };
            let published = self
                .by_issuer
                .get(&issuer)
                .is_some_and(|&i| self.issuers[i].key_published);
            if !published {
                self.failures.push(fail(
                    FailureKind::UnknownKey,
                    format!(
                        "no key record publishes key {} of service {}",
                        record.key_id, record.service
                    ),
                ));
                continue;
            }
            let i = self.issuer_index(&issuer);
            self.issuers[i].checkpoints.push((line, record.note));
        }
        for i in 0..self.issuers.len() {
            let notes = std::mem::take(&mut self.issuers[i].checkpoints);
            if notes.is_empty() {
                continue;
            }
            let issuer = self.issuers[i].issuer.clone();
            let fail = |line, kind, detail| Failure {
                receipt_id: None,
                issuer: Some(issuer.clone()),
                log_index: None,
                line,
                kind,
                detail,
            };
            let mut valid: Vec<(usize, Checkpoint)> = Vec::new();
            for (line, note) in notes {
                match Checkpoint::verify(&note, &issuer.service, &issuer.key_id) {
                    Ok(cp) => valid.push((line, cp)),
                    Err(e) => {
                        self.failures.push(fail(
                            line,
                            FailureKind::CheckpointInvalid,
                            e.to_string(),
                        ));
                    }
                }
            }
            valid.sort_by_key(|(line, cp)| (cp.tree_size, *line));
            // The exported log's leaves, as far as it has no gap from index 0.
            let leaves = self.issuers[i].chain.leaves();
            let mut acc = merkle::Accumulator::default();
            let mut good = 0;
            let mut covered = 0;
            // Whether each valid checkpoint matched the exported log.
            let mut matched = vec![false; valid.len()];
            for (k, (line, cp)) in valid.iter().enumerate() {
                let Ok(size) = usize::try_from(cp.tree_size) else {
                    continue;
                };
                if size > leaves.len() {
                    self.failures.push(fail(
                        *line,
                        FailureKind::MissingReceipts,
                        format!(
                            "checkpoint covers {} receipts but the export holds an unbroken log of only {} (receipts deleted or cut off)",
                            cp.tree_size,
                            leaves.len()
                        ),
                    ));
                    continue;
                }
                while acc.size() < cp.tree_size {
                    let next = usize::try_from(acc.size()).unwrap_or(usize::MAX);
                    acc.push(leaves[next]);
                }
                let root = acc.root();
                if root == cp.root {
                    matched[k] = true;
                    good += 1;
                    covered = covered.max(cp.tree_size);
                } else {
                    self.failures.push(fail(
                        *line,
                        FailureKind::CheckpointMismatch,
                        format!(
                            "checkpoint of size {} has root {} but the exported log's first {} receipts have root {}",
                            cp.tree_size,
                            Hash::from_bytes(cp.root),
                            cp.tree_size,
                            Hash::from_bytes(root)
                        ),
                    ));
                }
            }
            // Consecutive signed checkpoints must describe one history. When one of them
            // matches the exported log, a consistency proof between them is built from the
            // exported leaves and checked against both signed roots. When neither matches
            // (both already reported), the export cannot tell whether they agree with each
            // other, except that equal sizes must have equal roots.
            for (k, pair) in valid.windows(2).enumerate() {
                let ((l1, a), (l2, b)) = (&pair[0], &pair[1]);
                let consistent = match usize::try_from(b.tree_size) {
                    Ok(n) if n <= leaves.len() && (matched[k] || matched[k + 1]) => {
                        merkle::consistency_proof(&leaves, a.tree_size, b.tree_size)
                            .and_then(|proof| {
                                merkle::verify_consistency(
                                    a.tree_size,
                                    b.tree_size,
                                    &proof,
                                    &a.root,
                                    &b.root,
                                )
                            })
                            .is_ok()
                    }
                    _ => a.tree_size != b.tree_size || a.root == b.root,
                };
                if !consistent {
                    self.failures.push(fail(
                        *l2,
                        FailureKind::CheckpointFork,
                        format!(
                            "checkpoint of size {} (line {l2}) is not consistent with the checkpoint of size {} (line {l1}): the issuer signed two histories",
                            b.tree_size, a.tree_size
                        ),
                    ));
                }
            }
            self.issuers[i].checkpoints_ok = good;
            self.issuers[i].checkpointed_size = covered;
        }
    }

    /// Applies [`crate::links::LINK_RULES`] to every receipt they name.
    fn check_link_rules(&mut self) {
        let mut problems = Vec::new();
        for subject in self.subjects.values() {
            let from = crate::links::Linked {
                schema: &subject.schema,
                body: &subject.body,
            };
            let found = crate::links::check(&from, &subject.links, |h| {
                self.subjects.get(h).map(|s| crate::links::Linked {
                    schema: &s.schema,
                    body: &s.body,
                })
            });
            for (missing, detail) in found {
                let kind = if missing {
                    FailureKind::LinkMissing
                } else {
                    FailureKind::LinkMismatch
                };
                problems.push((subject.entry, kind, detail));
            }
        }
        problems.sort_by_key(|(entry, _, _)| *entry);
        for (entry, kind, detail) in problems {
            self.fail(entry, kind, detail);
        }
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
        self.check_link_rules();
        self.check_checkpoints();
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
                checkpoints: s.checkpoints_ok,
                checkpointed_size: s.checkpointed_size,
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
