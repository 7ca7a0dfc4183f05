//! The offline auditor on a realistic three-service export (treasury -> hydra ->
//! wallet-executor, with checkpoints): a clean export passes; deleting, reordering, modifying
//! or inserting a receipt, a forking checkpoint, and a broken cross-service rule are each
//! caught and named.

use oa_receipts::{
    Checkpoint, CheckpointRecord, FailureKind, Hash, Issuer, Receipt, ReceiptDraft, ReceiptKey,
    VerifyReport, links, merkle, verify_export, write_export_with_checkpoints,
};
use serde_json::{Value, json};

use crate::support::obj;

pub struct Log {
    pub service: &'static str,
    pub key: ReceiptKey,
    pub receipts: Vec<Receipt>,
}

impl Log {
    fn new(service: &'static str) -> Log {
        Log {
            service,
            key: ReceiptKey::generate(),
            receipts: Vec::new(),
        }
    }

    fn append(&mut self, schema: &str, id: &str, links: Vec<Hash>, body: Value) -> Hash {
        let draft = ReceiptDraft {
            schema: schema.into(),
            receipt_id: id.into(),
            idempotency_key: format!("k-{id}"),
            links,
            body: obj(body),
        };
        let n = self.receipts.len() as u64;
        let prev = self.receipts.last().map_or(Hash::ZERO, |r| r.hash);
        let r = draft
            .seal(&self.key, self.service, n, prev, 1_700_000_000_000 + n)
            .unwrap();
        let h = r.hash;
        self.receipts.push(r);
        h
    }

    fn checkpoint(&self, size: usize) -> CheckpointRecord {
        let leaves: Vec<_> = self.receipts[..size]
            .iter()
            .map(|r| merkle::leaf_hash(r.hash.as_bytes()))
            .collect();
        Checkpoint::sign(&self.key, self.service, size as u64, merkle::root(&leaves))
            .record(self.key.key_id())
    }

    fn issuer(&self) -> Issuer {
        Issuer {
            service: self.service.into(),
            key_id: self.key.key_id().into(),
        }
    }
}

pub struct Suite {
    pub treasury: Log,
    pub hydra: Log,
    pub executor: Log,
}

fn payment_hash(i: usize) -> String {
    hex::encode(Hash::of(format!("preimage-{i}").as_bytes()).as_bytes())
}

/// `n` successful payments of (1000 * (i + 1)) msat with fee 10, each leaving the three
/// linked receipts.
pub fn suite(n: usize) -> Suite {
    let mut s = Suite {
        treasury: Log::new("treasury"),
        hydra: Log::new("hydra"),
        executor: Log::new("wallet-executor"),
    };
    for i in 0..n {
        let amount = (1000 * (i + 1)).to_string();
        let ph = payment_hash(i);
        let w = s.executor.append(
            links::EXECUTOR_PAYMENT,
            &format!("w{i}"),
            vec![],
            json!({"payment_hash": ph, "status": "succeeded", "amount_msat": amount, "fee_msat": "10",
                   "fee_limit_msat": "50", "payee_pubkey": "02ab", "backend": "sim", "created_at_ms": "1"}),
        );
        let h = s.hydra.append(
            links::HYDRA_INVOICE_PAY,
            &format!("h{i}"),
            vec![w],
            json!({"quote_id": format!("q{i}"), "payment_hash": ph, "status": "succeeded", "amount_msat": amount,
                   "fee_msat": "10", "fee_limit_msat": "50", "payer_ref": "agent-1", "executor_receipt": w.to_string()}),
        );
        s.treasury.append(
            links::TREASURY_ATTEMPT,
            &format!("t{i}"),
            vec![h],
            json!({"payment_id": format!("pay-{i}"), "agent_id": "agent-1", "state": "succeeded", "payment_hash": ph,
                   "amount_msat": amount, "fee_msat": "10", "max_fee_msat": "50", "rail": "direct", "purpose": "x",
                   "decision_rule": "agent_budget", "hydra_receipt": h.to_string()}),
        );
    }
    s
}

impl Suite {
    pub fn logs(&self) -> [&Log; 3] {
        [&self.executor, &self.hydra, &self.treasury]
    }

    /// Keys, a checkpoint of every log at 2 and at its full size, then the receipts.
    pub fn export(&self) -> Vec<String> {
        let keys: Vec<_> = self.logs().iter().map(|l| l.issuer()).collect();
        let mut cps = Vec::new();
        for l in self.logs() {
            let n = l.receipts.len();
            if n > 0 {
                cps.push(l.checkpoint(n.min(2)));
                cps.push(l.checkpoint(n));
            }
        }
        let receipts: Vec<Receipt> = self
            .logs()
            .iter()
            .flat_map(|l| l.receipts.iter().cloned())
            .collect();
        let mut out = Vec::new();
        write_export_with_checkpoints(&mut out, &keys, &cps, &receipts).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

pub fn verify(lines: &[String]) -> VerifyReport {
    verify_export(format!("{}\n", lines.join("\n")).as_bytes())
}

fn kinds(r: &VerifyReport) -> Vec<FailureKind> {
    let mut k: Vec<_> = r.failures.iter().map(|f| f.kind).collect();
    k.dedup();
    k
}

/// Index of the line holding the receipt with `id`.
fn line_of(lines: &[String], id: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(&format!("\"receipt_id\":\"{id}\"")))
        .unwrap()
}

#[test]
fn a_clean_export_verifies_with_every_checkpoint_and_link_rule() {
    let s = suite(4);
    let report = verify(&s.export());
    assert!(report.is_ok(), "{report}");
    for i in &report.issuers {
        assert_eq!(
            (i.receipts, i.verified, i.checkpoints, i.checkpointed_size),
            (4, 4, 2, 4)
        );
    }
    assert!(
        report
            .to_string()
            .contains("2 checkpoints verified (covering 4 receipts)")
    );
}

#[test]
fn a_deleted_receipt_is_caught_as_a_gap_and_by_the_checkpoint() {
    let s = suite(4);
    let mut lines = s.export();
    lines.remove(line_of(&lines, "h1"));
    let r = verify(&lines);
    let k = kinds(&r);
    assert!(k.contains(&FailureKind::Gap), "{r}");
    assert!(k.contains(&FailureKind::MissingReceipts), "{r}");
    assert!(k.contains(&FailureKind::UnresolvedLink), "{r}");
    // The last receipt has nothing after it to show a gap: only the checkpoint catches it.
    let mut lines = s.export();
    lines.remove(line_of(&lines, "t3"));
    let r = verify(&lines);
    assert_eq!(kinds(&r), vec![FailureKind::MissingReceipts], "{r}");
    assert!(r.to_string().contains("treasury"), "{r}");
}

#[test]
fn reordered_receipts_are_caught() {
    let s = suite(4);
    let mut lines = s.export();
    let (a, b) = (line_of(&lines, "w1"), line_of(&lines, "w2"));
    lines.swap(a, b);
    let r = verify(&lines);
    assert!(kinds(&r).contains(&FailureKind::OutOfOrder), "{r}");
    assert!(
        r.failures
            .iter()
            .any(|f| f.receipt_id.as_deref() == Some("w1")),
        "{r}"
    );
}

#[test]
fn a_modified_receipt_is_caught_and_named() {
    let s = suite(4);
    let mut lines = s.export();
    let i = line_of(&lines, "w2");
    lines[i] = lines[i].replace("\"amount_msat\":\"3000\"", "\"amount_msat\":\"3001\"");
    let r = verify(&lines);
    assert!(
        r.failures
            .iter()
            .any(|f| f.kind == FailureKind::HashMismatch && f.receipt_id.as_deref() == Some("w2")),
        "{r}"
    );
}

#[test]
fn a_receipt_inserted_into_history_is_caught_by_the_checkpoints() {
    // The issuer itself rewrites its log with an extra receipt at index 1 and re-signs
    // everything after it: each receipt verifies alone, the chain is intact, but the
    // checkpoints it signed earlier no longer match.
    let s = suite(4);
    let old = s.export();
    let mut forged = Log {
        service: "hydra",
        key: ReceiptKey::from_secret_hex(&s.hydra.key.secret_hex()).unwrap(),
        receipts: Vec::new(),
    };
    for (n, r) in s.hydra.receipts.iter().enumerate() {
        if n == 1 {
            forged.append(
                r.schema.as_str(),
                "inserted",
                vec![],
                json!({"status": "failed"}),
            );
        }
        forged.append(
            &r.schema,
            &r.receipt_id,
            r.links.clone(),
            Value::Object(r.body.clone()),
        );
    }
    let mut lines: Vec<String> = old
        .iter()
        .filter(|l| {
            !l.contains("\"service\":\"hydra\"") || !l.starts_with("{\"record\":\"receipt\"")
        })
        .cloned()
        .collect();
    for r in &forged.receipts {
        lines.push(
            serde_json::to_string(&oa_receipts::ExportRecord::Receipt {
                receipt: Box::new(r.clone()),
            })
            .unwrap(),
        );
    }
    let r = verify(&lines);
    assert!(kinds(&r).contains(&FailureKind::CheckpointMismatch), "{r}");
    assert!(
        r.failures
            .iter()
            .all(|f| f.issuer.as_ref().is_some_and(|i| i.service == "hydra")
                || matches!(
                    f.kind,
                    FailureKind::UnresolvedLink | FailureKind::LinkMissing
                )),
        "{r}"
    );
}

#[test]
fn a_checkpoint_that_forks_history_is_caught() {
    // The issuer shows someone else a different history of size 3 (a split view).
    let s = suite(4);
    let mut lines = s.export();
    let mut other = suite(4).hydra;
    other.key = ReceiptKey::from_secret_hex(&s.hydra.key.secret_hex()).unwrap();
    let leaves: Vec<_> = other.receipts[..3]
        .iter()
        .map(|r| merkle::leaf_hash(r.hash.as_bytes()))
        .collect();
    let fork =
        Checkpoint::sign(&other.key, "hydra", 3, merkle::root(&leaves)).record(other.key.key_id());
    lines.insert(
        3,
        serde_json::to_string(&oa_receipts::ExportRecord::Checkpoint {
            service: fork.service,
            key_id: fork.key_id,
            note: fork.note,
        })
        .unwrap(),
    );
    let r = verify(&lines);
    let k = kinds(&r);
    assert!(k.contains(&FailureKind::CheckpointFork), "{r}");
    assert!(k.contains(&FailureKind::CheckpointMismatch), "{r}");
    assert!(r.to_string().contains("signed two histories"), "{r}");
}

#[test]
fn a_checkpoint_with_a_bad_signature_or_unknown_key_is_caught() {
    let s = suite(2);
    let mut lines = s.export();
    let i = lines
        .iter()
        .position(|l| l.starts_with("{\"record\":\"checkpoint\""))
        .unwrap();
    lines[i] = lines[i].replacen("\\n2\\n", "\\n1\\n", 1);
    let r = verify(&lines);
    assert!(kinds(&r).contains(&FailureKind::CheckpointInvalid), "{r}");
    let mut lines = s.export();
    lines.retain(|l| !(l.starts_with("{\"record\":\"key\"") && l.contains("treasury")));
    let r = verify(&lines);
    assert!(
        r.failures
            .iter()
            .any(|f| f.kind == FailureKind::UnknownKey && f.receipt_id.is_none()),
        "{r}"
    );
}

#[test]
fn cross_service_amounts_and_links_must_agree() {
    // Hydra claims a different amount than the executor paid, properly signed by Hydra.
    let mut s = suite(1);
    s.hydra.receipts.clear();
    let w = s.executor.receipts[0].hash;
    let ph = payment_hash(0);
    s.hydra.append(
        links::HYDRA_INVOICE_PAY,
        "h0",
        vec![w],
        json!({"quote_id": "q0", "payment_hash": ph, "status": "succeeded", "amount_msat": "999",
               "fee_msat": "10", "fee_limit_msat": "50", "payer_ref": "a", "executor_receipt": w.to_string()}),
    );
    // And one succeeded pay with no executor receipt at all.
    s.hydra.append(
        links::HYDRA_INVOICE_PAY,
        "h1",
        vec![],
        json!({"quote_id": "q1", "payment_hash": ph, "status": "succeeded", "amount_msat": "1",
               "fee_msat": "0", "fee_limit_msat": "0", "payer_ref": "a", "executor_receipt": ""}),
    );
    s.treasury.receipts.clear();
    let mut lines: Vec<String> = s
        .export()
        .into_iter()
        .filter(|l| !l.contains("\"service\":\"treasury\""))
        .collect();
    lines.retain(|l| !l.contains("oa-receipts/treasury"));
    let r = verify(&lines);
    let named: Vec<_> = r
        .failures
        .iter()
        .map(|f| (f.receipt_id.as_deref(), f.kind))
        .collect();
    assert!(
        named.contains(&(Some("h0"), FailureKind::LinkMismatch)),
        "{r}"
    );
    assert!(
        named.contains(&(Some("h1"), FailureKind::LinkMissing)),
        "{r}"
    );
    assert!(
        r.to_string().contains("amount_msat + fee_msat = 1009"),
        "{r}"
    );
}

#[test]
fn trace_walks_a_payment_from_treasury_to_the_executor() {
    let s = suite(3);
    let all: Vec<Receipt> = s.logs().iter().flat_map(|l| l.receipts.clone()).collect();
    for needle in [payment_hash(1), "pay-1".to_owned()] {
        let steps = links::trace(&all, &needle);
        let got: Vec<_> = steps
            .iter()
            .map(|s| (s.depth, s.receipt.receipt_id.as_str()))
            .collect();
        assert_eq!(got, vec![(0, "t1"), (1, "h1"), (2, "w1")], "{needle}");
    }
    assert!(links::trace(&all, "nothing").is_empty());
}

#[test]
fn parallel_and_sequential_verification_agree() {
    let s = suite(6);
    let mut lines = s.export();
    lines.remove(line_of(&lines, "h2"));
    let text = format!("{}\n", lines.join("\n"));
    let one = oa_receipts::verify_export_with_threads(text.as_bytes(), 1);
    let four = oa_receipts::verify_export_with_threads(text.as_bytes(), 4);
    assert_eq!(one, four);
    assert!(!one.is_ok());
}
