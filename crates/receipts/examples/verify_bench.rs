//! Auditor throughput next to raw BIP340 verification, measured in the same run.
//!
//! `cargo run --release -p oa-receipts --example verify_bench [RECEIPTS]`
//!
//! Builds an export of RECEIPTS (default 20 000) realistic receipts across three issuers, then
//! times: raw `secp256k1` Schnorr verifications of the same hashes and signatures on one thread
//! and on every core, and `verify_export` (parse, canonical check, JCS hash, signature, chain,
//! links, cross-service rules) on every core. Prints one Markdown table row per measurement.

// A benchmark harness, not library code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used)]
// Rates for display only; no money is computed here.
#![allow(clippy::float_arithmetic)]

use std::time::Instant;

use bitcoin::secp256k1::{Message, Secp256k1, XOnlyPublicKey, schnorr};
use oa_receipts::{Hash, Issuer, Receipt, ReceiptDraft, ReceiptKey, links, verify_export};
use serde_json::json;

/// Rounds of each measurement; the best of each is reported.
const ROUNDS: usize = 5;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(20_000, |s| s.parse().unwrap());
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let services = ["wallet-executor", "hydra", "treasury"];
    let keys: Vec<ReceiptKey> = services.iter().map(|_| ReceiptKey::generate()).collect();
    let mut logs: Vec<Vec<Receipt>> = vec![Vec::new(), Vec::new(), Vec::new()];
    let mut all = Vec::with_capacity(n);
    for i in 0..n {
        let s = i % 3;
        let ph = hex::encode(Hash::of(&i.to_le_bytes()).as_bytes());
        let (schema, body) = match s {
            0 => (
                links::EXECUTOR_PAYMENT,
                json!({"payment_hash": ph, "status": "failed", "amount_msat": "120000", "fee_msat": "0", "fee_limit_msat": "3000", "payee_pubkey": "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5", "failure_code": "NO_ROUTE", "backend": "sim", "created_at_ms": "1767225600000"}),
            ),
            1 => (
                links::HYDRA_INVOICE_PAY,
                json!({"quote_id": format!("q{i}"), "payment_hash": ph, "status": "failed", "amount_msat": "120000", "fee_msat": "0", "fee_limit_msat": "3000", "payer_ref": "agent-7", "failure_code": "NO_ROUTE", "executor_receipt": ""}),
            ),
            _ => (
                links::TREASURY_ATTEMPT,
                json!({"payment_id": format!("pay{i}"), "agent_id": "agent-7", "state": "failed", "payment_hash": ph, "amount_msat": "120000", "fee_msat": "0", "max_fee_msat": "3000", "rail": "direct_liquidity", "purpose": "bench", "decision_rule": "agent_budget", "failure_code": "NO_ROUTE"}),
            ),
        };
        let log = &mut logs[s];
        let draft = ReceiptDraft {
            schema: schema.into(),
            receipt_id: format!("rcpt_{i}"),
            idempotency_key: format!("k{i}"),
            links: vec![],
            body: match body {
                serde_json::Value::Object(m) => m,
                _ => unreachable!("bodies are objects"),
            },
        };
        let r = draft
            .seal(
                &keys[s],
                services[s],
                log.len() as u64,
                log.last().map_or(Hash::ZERO, |r| r.hash),
                1_767_225_600_000 + i as u64,
            )
            .unwrap();
        log.push(r.clone());
        all.push(r);
    }
    let issuers: Vec<Issuer> = services
        .iter()
        .zip(&keys)
        .map(|(s, k)| Issuer {
            service: (*s).into(),
            key_id: k.key_id().into(),
        })
        .collect();
    let mut export = Vec::new();
    oa_receipts::write_export(&mut export, &issuers, &all).unwrap();

    // Raw verification inputs, parsed up front so only verification is timed.
    let secp = Secp256k1::verification_only();
    let raw: Vec<(schnorr::Signature, Message, XOnlyPublicKey)> = all
        .iter()
        .map(|r| {
            let sig = schnorr::Signature::from_slice(&hex::decode(&r.signature).unwrap()).unwrap();
            let pk = XOnlyPublicKey::from_slice(&hex::decode(&r.issuer.key_id).unwrap()).unwrap();
            (sig, Message::from_digest(*r.hash.as_bytes()), pk)
        })
        .collect();

    // The machine is shared: alternate the measurements and keep each one's best round, so a
    // burst of someone else's work does not decide the comparison.
    let (mut raw_one, mut raw_all, mut audit, mut audit_one) = (0f64, 0f64, 0f64, 0f64);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for (sig, msg, pk) in &raw {
            secp.verify_schnorr(sig, msg, pk).unwrap();
        }
        raw_one = raw_one.max(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        std::thread::scope(|scope| {
            for part in raw.chunks(n.div_ceil(cores)) {
                let secp = &secp;
                scope.spawn(move || {
                    for (sig, msg, pk) in part {
                        secp.verify_schnorr(sig, msg, pk).unwrap();
                    }
                });
            }
        });
        raw_all = raw_all.max(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let report = verify_export(export.as_slice());
        audit = audit.max(n as f64 / t.elapsed().as_secs_f64());
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.verified(), n);

        let t = Instant::now();
        let report = oa_receipts::verify_export_with_threads(export.as_slice(), 1);
        audit_one = audit_one.max(n as f64 / t.elapsed().as_secs_f64());
        assert!(report.is_ok(), "{report}");
    }

    println!("| measurement ({n} receipts, {cores} cores) | per second |");
    println!("|---|---|");
    println!("| raw BIP340 verify, 1 thread | {raw_one:.0} |");
    println!("| raw BIP340 verify, {cores} threads | {raw_all:.0} |");
    println!("| auditor `verify_export`, 1 thread | {audit_one:.0} |");
    println!(
        "| auditor `verify_export` (hash + signature + chain + rules), {cores} threads | {audit:.0} |"
    );
    println!(
        "| auditor / raw ({cores} threads) | {:.2} |",
        audit / raw_all
    );
}
