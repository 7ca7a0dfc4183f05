//! The offline auditor ([`verify_export`]) on arbitrary bytes: anyone can hand it a file, so it
//! must not panic, and a clean report must mean the file really is a valid export.
//!
//! For any input:
//! - the report does not depend on the number of threads (the auditor checks lines in parallel);
//! - it counts the input's lines, and every failure names one of them;
//! - a report without failures is re-derived from the input with the per-receipt public checks,
//!   independently of the auditor's batching and fast paths: every line is a record in its
//!   canonical encoding, every key record names the supported algorithm, every receipt verifies
//!   on its own ([`Receipt::verify`]) under a key the export publishes, each issuer's receipts
//!   form an unbroken chain ([`verify_chain`]), every link resolves to a receipt of the export,
//!   and every checkpoint is signed by a published key and matches the Merkle root of that many
//!   of its issuer's receipts. (The cross-service link rules are not re-derived.)

use std::collections::{HashMap, HashSet};

use oa_receipts::{
    Checkpoint, ExportRecord, Hash, Issuer, KEY_ALGORITHM, Receipt, VerifyReport, merkle,
    verify_chain, verify_export, verify_export_with_threads,
};

/// Checks the properties above for `data`.
pub fn check(data: &[u8]) {
    let report = verify_export(data);
    let single = verify_export_with_threads(data, 1);
    assert_eq!(
        report, single,
        "the report depends on the number of threads"
    );
    let lines = count_lines(data);
    assert_eq!(report.lines, lines, "the report miscounts the lines");
    for failure in &report.failures {
        assert!(
            (1..=lines).contains(&failure.line),
            "a failure names line {} of {lines}: {failure}",
            failure.line
        );
    }
    assert!(report.verified() <= report.receipts());
    if report.is_ok() {
        assert_valid_export(data, &report);
    }
}

/// Lines as the auditor reads them: split at `\n`, the last one counting without a newline too.
fn count_lines(data: &[u8]) -> usize {
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    newlines + usize::from(data.last().is_some_and(|&b| b != b'\n'))
}

/// Panics unless `data` passes every check the module docs list.
fn assert_valid_export(data: &[u8], report: &VerifyReport) {
    let text = std::str::from_utf8(data).expect("a clean export is UTF-8");
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut published = HashSet::new();
    let mut receipts: Vec<Receipt> = Vec::new();
    let mut checkpoints = Vec::new();
    for (i, line) in body.split('\n').enumerate().filter(|_| !text.is_empty()) {
        let record: ExportRecord = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("clean report, but line {} is not a record: {e}", i + 1));
        let again = serde_json::to_string(&record).expect("a record always serializes");
        assert_eq!(
            again,
            line,
            "clean report, but line {} is not canonical",
            i + 1
        );
        match record {
            ExportRecord::Key {
                service,
                key_id,
                algorithm,
            } => {
                assert_eq!(algorithm, KEY_ALGORITHM, "line {}", i + 1);
                published.insert(Issuer { service, key_id });
            }
            ExportRecord::Receipt { receipt } => {
                receipt.verify().unwrap_or_else(|e| {
                    panic!("clean report, but the receipt on line {} fails: {e}", i + 1)
                });
                receipts.push(*receipt);
            }
            ExportRecord::Checkpoint {
                service,
                key_id,
                note,
            } => checkpoints.push((i + 1, Issuer { service, key_id }, note)),
        }
    }

    let mut logs: HashMap<&Issuer, Vec<Receipt>> = HashMap::new();
    for receipt in &receipts {
        assert!(
            published.contains(&receipt.issuer),
            "clean report, but no key record publishes {:?}",
            receipt.issuer
        );
        logs.entry(&receipt.issuer)
            .or_default()
            .push(receipt.clone());
    }
    for (issuer, log) in &logs {
        let failures = verify_chain(log);
        assert!(
            failures.is_empty(),
            "clean report, but {issuer:?}'s chain is broken: {failures:?}"
        );
    }
    let hashes: HashSet<Hash> = receipts.iter().map(|r| r.hash).collect();
    for receipt in &receipts {
        for link in &receipt.links {
            assert!(
                hashes.contains(link),
                "clean report, but link {link} of {} resolves to nothing",
                receipt.receipt_id
            );
        }
    }
    for (line, issuer, note) in &checkpoints {
        assert!(
            published.contains(issuer),
            "clean report, but the checkpoint on line {line} names an unpublished key"
        );
        let cp = Checkpoint::verify(note, &issuer.service, &issuer.key_id).unwrap_or_else(|e| {
            panic!("clean report, but the checkpoint on line {line} does not verify: {e}")
        });
        let log = logs.get(issuer).map_or(&[][..], Vec::as_slice);
        let size = usize::try_from(cp.tree_size).unwrap_or(usize::MAX);
        assert!(
            size <= log.len(),
            "clean report, but the checkpoint on line {line} covers {size} of {} receipts",
            log.len()
        );
        let leaves: Vec<merkle::Digest> = log[..size]
            .iter()
            .map(|r| merkle::leaf_hash(r.hash.as_bytes()))
            .collect();
        assert_eq!(
            merkle::root(&leaves),
            cp.root,
            "clean report, but the checkpoint on line {line} has another root"
        );
    }
    assert_eq!(report.receipts(), receipts.len());
    assert_eq!(report.verified(), receipts.len());
}
