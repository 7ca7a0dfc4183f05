//! Golden vectors (`testdata/golden/`): one export holding every receipt class with fixed keys,
//! contents and times, plus checkpoints. The hashes are deterministic (signatures are not:
//! BIP340 signing uses fresh auxiliary randomness), so this test rebuilds every receipt and
//! checks the committed hashes and canonical forms; it regenerates the files when they are
//! missing or `OA_REGENERATE_GOLDEN=1`. `golden_vectors_pass_independent_python_checks` then
//! has Python (PyPI `rfc8785` and a BIP340 verifier written from the BIP) check them.

use std::path::PathBuf;
use std::process::Command;

use oa_receipts::{
    Checkpoint, Hash, Issuer, Receipt, ReceiptDraft, ReceiptKey, links, merkle, verify_export,
    write_export_with_checkpoints,
};
use serde_json::{Value, json};

use crate::support::obj;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/golden")
}

/// A fixed key per service: the secret is SHA-256 of a label (documented in docs/receipts.md).
pub fn golden_key(service: &str) -> ReceiptKey {
    let secret = Hash::of(format!("oa golden receipt key {service}").as_bytes());
    ReceiptKey::from_secret_hex(&hex::encode(secret.as_bytes())).unwrap()
}

struct Builder {
    receipts: Vec<Receipt>,
}

impl Builder {
    fn seal(
        &mut self,
        service: &str,
        schema: &str,
        id: &str,
        links: Vec<Hash>,
        body: Value,
    ) -> Hash {
        let mine: Vec<&Receipt> = self
            .receipts
            .iter()
            .filter(|r| r.issuer.service == service)
            .collect();
        let index = mine.len() as u64;
        let prev = mine.last().map_or(Hash::ZERO, |r| r.hash);
        let draft = ReceiptDraft {
            schema: schema.into(),
            receipt_id: id.into(),
            idempotency_key: format!("idem-{id}"),
            links,
            body: obj(body),
        };
        let r = draft
            .seal(
                &golden_key(service),
                service,
                index,
                prev,
                1_767_225_600_000 + 1000 * self.receipts.len() as u64,
            )
            .unwrap();
        let h = r.hash;
        self.receipts.push(r);
        h
    }
}

const SERVICES: [&str; 3] = ["wallet-executor", "hydra", "treasury"];

/// The golden receipts, in the order they appear in the export.
fn receipts() -> Vec<Receipt> {
    let mut b = Builder {
        receipts: Vec::new(),
    };
    let preimage = [0x11u8; 32];
    let payment_hash = hex::encode(Hash::of(&preimage).as_bytes());
    let w0 = b.seal(
        "wallet-executor",
        links::EXECUTOR_PAYMENT,
        "rcpt_golden_w0",
        vec![],
        json!({
            "payment_hash": payment_hash, "status": "succeeded", "amount_msat": "120000",
            "fee_msat": "1200", "fee_limit_msat": "3000", "preimage": hex::encode(preimage),
            "payee_pubkey": "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5",
            "backend": "sim", "created_at_ms": "1767225600000"
        }),
    );
    let h0 = b.seal(
        "hydra",
        links::HYDRA_INVOICE_PAY,
        "rcpt_golden_h0",
        vec![w0],
        json!({
            "quote_id": "q_golden_0", "payment_hash": payment_hash, "status": "succeeded",
            "amount_msat": "120000", "fee_msat": "1200", "fee_limit_msat": "3000",
            "payer_ref": "agent-7", "preimage": hex::encode(preimage),
            "executor_receipt": w0.to_string()
        }),
    );
    b.seal(
        "treasury",
        links::TREASURY_ATTEMPT,
        "rcpt_golden_t0",
        vec![h0],
        json!({
            "payment_id": "pay_golden_0", "agent_id": "agent-7", "state": "succeeded",
            "payment_hash": payment_hash, "amount_msat": "120000", "fee_msat": "1200",
            "max_fee_msat": "3000", "rail": "direct_liquidity", "purpose": "café ☕ \"quoted\" \u{1f}",
            "decision_rule": "agent_budget", "hydra_receipt": h0.to_string()
        }),
    );
    let failed_hash = hex::encode(Hash::of(b"golden unpayable").as_bytes());
    b.seal(
        "wallet-executor",
        links::EXECUTOR_PAYMENT,
        "rcpt_golden_w1",
        vec![],
        json!({
            "payment_hash": failed_hash, "status": "failed", "amount_msat": "5000",
            "fee_msat": "0", "fee_limit_msat": "100",
            "payee_pubkey": "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5",
            "failure_code": "NO_ROUTE", "failure_reason": "no route to the payee",
            "backend": "sim", "created_at_ms": "1767225603000"
        }),
    );
    b.seal(
        "treasury",
        links::TREASURY_ATTEMPT,
        "rcpt_golden_t1",
        vec![],
        json!({
            "payment_id": "pay_golden_1", "agent_id": "agent-7", "state": "denied",
            "payment_hash": failed_hash, "amount_msat": "900000000", "fee_msat": "0",
            "max_fee_msat": "0", "rail": "direct_liquidity", "purpose": "",
            "decision_rule": "agent_budget", "reason_code": "BUDGET_EXCEEDED"
        }),
    );
    b.receipts
}

fn export_text() -> (String, Vec<Receipt>) {
    let receipts = receipts();
    let keys: Vec<Issuer> = SERVICES
        .iter()
        .map(|s| Issuer {
            service: (*s).into(),
            key_id: golden_key(s).key_id().into(),
        })
        .collect();
    let mut cps = Vec::new();
    for s in SERVICES {
        let leaves: Vec<_> = receipts
            .iter()
            .filter(|r| r.issuer.service == s)
            .map(|r| merkle::leaf_hash(r.hash.as_bytes()))
            .collect();
        let key = golden_key(s);
        cps.push(
            Checkpoint::sign(&key, s, leaves.len() as u64, merkle::root(&leaves))
                .record(key.key_id()),
        );
    }
    let mut out = Vec::new();
    write_export_with_checkpoints(&mut out, &keys, &cps, &receipts).unwrap();
    (String::from_utf8(out).unwrap(), receipts)
}

/// `hashes.json`: per receipt id, the canonical JSON that is hashed and its hash; per service,
/// the key id, tree size and Merkle root.
fn expected(receipts: &[Receipt]) -> Value {
    let mut per_receipt = serde_json::Map::new();
    for r in receipts {
        per_receipt.insert(
            r.receipt_id.clone(),
            json!({
                "canonical": String::from_utf8(r.canonical_unsigned().unwrap()).unwrap(),
                "hash": r.hash.to_string(),
            }),
        );
    }
    let mut logs = serde_json::Map::new();
    for s in SERVICES {
        let leaves: Vec<_> = receipts
            .iter()
            .filter(|r| r.issuer.service == s)
            .map(|r| merkle::leaf_hash(r.hash.as_bytes()))
            .collect();
        logs.insert(
            s.into(),
            json!({
                "key_id": golden_key(s).key_id(),
                "tree_size": leaves.len().to_string(),
                "root": Hash::from_bytes(merkle::root(&leaves)).to_string(),
            }),
        );
    }
    json!({"receipts": per_receipt, "logs": logs})
}

#[test]
fn golden_vectors_are_current_and_verify() {
    let (text, receipts) = export_text();
    let expected = serde_json::to_string_pretty(&expected(&receipts)).unwrap() + "\n";
    let export_path = dir().join("export.jsonl");
    let hashes_path = dir().join("hashes.json");
    let regenerate = std::env::var("OA_REGENERATE_GOLDEN").is_ok_and(|v| v == "1");
    if regenerate || !export_path.exists() || !hashes_path.exists() {
        std::fs::write(&export_path, &text).unwrap();
        std::fs::write(&hashes_path, &expected).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&hashes_path).unwrap(),
        expected,
        "receipt hashes changed; if intended, rerun with OA_REGENERATE_GOLDEN=1 and update docs/receipts.md"
    );
    let committed = std::fs::read_to_string(&export_path).unwrap();
    let report = verify_export(committed.as_bytes());
    assert!(report.is_ok(), "{report}");
    let hashes: Vec<String> = committed
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["receipt"]["hash"].as_str().map(str::to_owned))
        .collect();
    let want: Vec<String> = receipts.iter().map(|r| r.hash.to_string()).collect();
    assert_eq!(hashes, want);
}

#[test]
fn golden_vectors_pass_independent_python_checks() {
    if !crate::py_rfc8785::python_with_rfc8785() {
        return;
    }
    let out = Command::new("python3")
        .arg(dir().join("verify_golden.py"))
        .arg(dir().join("export.jsonl"))
        .arg(dir().join("hashes.json"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK: 5 receipts, 3 checkpoints"), "{text}");
}
