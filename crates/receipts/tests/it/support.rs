//! Shared fixtures: keys, drafts, sealed chains, and locating the shared vectors.

use std::path::PathBuf;

use oa_receipts::{Hash, Receipt, ReceiptDraft, ReceiptKey};
use serde_json::{Map, Value};

/// `shared/vectors`, found by walking up from this crate (CI checks the repo out with `shared/`
/// beside it), or `OA_VECTORS_DIR` if set. Panics if neither exists: a silently skipped
/// conformance test is worse than a failing one.
pub fn vectors_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OA_VECTORS_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.is_dir(),
            "OA_VECTORS_DIR={} is not a directory",
            dir.display()
        );
        return dir;
    }
    let start = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for dir in start.ancestors() {
        let candidate = dir.join("shared").join("vectors");
        if candidate.is_dir() {
            return candidate;
        }
    }
    panic!(
        "no shared/vectors directory above {}; set OA_VECTORS_DIR to the vectors directory",
        start.display()
    );
}

pub fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected a JSON object, got {other}"),
    }
}

pub fn draft(receipt_id: &str, links: Vec<Hash>, body: Value) -> ReceiptDraft {
    ReceiptDraft {
        schema: "oa.hydra.invoice_pay_receipt.v1".to_owned(),
        receipt_id: receipt_id.to_owned(),
        idempotency_key: format!("idem-{receipt_id}"),
        links,
        body: obj(body),
    }
}

/// Appends `draft` to the log `chain` of `key`/`service`, like a service would.
pub fn append(
    chain: &mut Vec<Receipt>,
    key: &ReceiptKey,
    service: &str,
    draft: ReceiptDraft,
) -> Hash {
    let log_index = chain.len() as u64;
    let prev_hash = chain.last().map_or(Hash::ZERO, |r| r.hash);
    let receipt = draft
        .seal(
            key,
            service,
            log_index,
            prev_hash,
            1_700_000_000_000 + log_index,
        )
        .expect("test drafts are valid");
    let hash = receipt.hash;
    chain.push(receipt);
    hash
}

/// A valid chain of `n` simple receipts.
pub fn chain_of(key: &ReceiptKey, service: &str, n: usize) -> Vec<Receipt> {
    let mut chain = Vec::new();
    for i in 0..n {
        let body =
            serde_json::json!({"amount_msat": (1000 * i).to_string(), "note": format!("r{i}")});
        append(
            &mut chain,
            key,
            service,
            draft(&format!("{service}-{i}"), vec![], body),
        );
    }
    chain
}

/// Re-signs a receipt after a test changed it on purpose, so that only the property under test
/// (chain linkage, a body rule) is wrong and hash and signature are fine.
pub fn resign(receipt: &mut Receipt, key: &ReceiptKey) {
    receipt.hash = receipt.compute_hash().unwrap();
    receipt.signature = key.sign(&receipt.hash);
}
