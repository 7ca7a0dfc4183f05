//! Warranties, bonds, claims and disputes driven in-process, with a fake Hydra that records what
//! it was asked and can pay, fail or be down: every transition and refusal of each state machine,
//! the ledger's balances after each money step, exactly-once payouts under 16 concurrent
//! resolves, and ledger conservation after every test.

use oa_service::Clock as _;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use http::StatusCode;
use oa_money::Msat;
use oa_proto::hydra;
use oa_receipts::{Hash, ReceiptDraft, ReceiptKey};
use oa_service::ApiError;
use serde_json::{Value, json};

use crate::harness::{Aegis, code, objective_evidence, objective_work, verify};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Pay,
    Fail,
    Down,
}

/// Hydra's liquidity API as a fake: quotes per invoice, pays at most once per payment hash (as
/// Hydra does), signs an invoice-pay receipt with its own key.
pub struct FakeHydra {
    key: ReceiptKey,
    pub mode: Mutex<Mode>,
    quotes: Mutex<HashMap<String, (String, u64)>>,
    /// Payment hashes paid, in order (a second pay of one hash answers the first result).
    pub paid: Mutex<Vec<String>>,
    pub pay_calls: AtomicU32,
    pub delay: Duration,
}

impl FakeHydra {
    pub fn new(mode: Mode) -> Arc<FakeHydra> {
        Arc::new(FakeHydra {
            key: ReceiptKey::generate(),
            mode: Mutex::new(mode),
            quotes: Mutex::new(HashMap::new()),
            paid: Mutex::new(Vec::new()),
            pay_calls: AtomicU32::new(0),
            delay: Duration::from_millis(30),
        })
    }

    pub fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    fn down() -> ApiError {
        ApiError::unavailable("HYDRA_UNAVAILABLE", "down")
    }
}

#[async_trait]
impl aegis::payer::Payer for FakeHydra {
    async fn quote_pay(
        &self,
        req: hydra::QuotePayRequest,
    ) -> Result<hydra::QuotePayResponse, ApiError> {
        if *self.mode.lock().unwrap() == Mode::Down {
            return Err(Self::down());
        }
        let inv = oa_invoice::decode(&req.invoice).unwrap();
        let amount = inv.amount.map_or(req.amount_msat, Msat::as_u64);
        let hash = inv.payment_hash.to_hex();
        let quote_id = format!("q-{hash}");
        self.quotes
            .lock()
            .unwrap()
            .insert(quote_id.clone(), (hash.clone(), amount));
        Ok(hydra::QuotePayResponse {
            quote: Some(hydra::Quote {
                quote_id,
                payment_hash: hash,
                amount_msat: amount,
                fee_limit_msat: req.max_fee_msat,
                state: hydra::QuoteState::Open.into(),
                payer_ref: req.payer_ref,
                ..Default::default()
            }),
        })
    }

    async fn pay(&self, req: hydra::PayRequest) -> Result<hydra::PayResponse, ApiError> {
        self.pay_calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let mode = *self.mode.lock().unwrap();
        if mode == Mode::Down {
            return Err(Self::down());
        }
        let (hash, amount) = self.quotes.lock().unwrap()[&req.quote_id].clone();
        let mut quote = hydra::Quote {
            quote_id: req.quote_id.clone(),
            payment_hash: hash.clone(),
            amount_msat: amount,
            ..Default::default()
        };
        if mode == Mode::Fail {
            quote.state = hydra::QuoteState::Failed.into();
            return Ok(hydra::PayResponse {
                quote: Some(quote),
                failure_code: "NO_ROUTE".into(),
                failure_reason: "no route to the payee".into(),
                ..Default::default()
            });
        }
        let mut paid = self.paid.lock().unwrap();
        if !paid.contains(&hash) {
            paid.push(hash.clone());
        }
        let mut body = serde_json::Map::new();
        body.insert("payment_hash".into(), json!(hash));
        body.insert("status".into(), json!("succeeded"));
        body.insert("amount_msat".into(), json!(amount.to_string()));
        let receipt = ReceiptDraft {
            schema: "oa.hydra.invoice_pay_receipt.v1".into(),
            receipt_id: format!("r-{hash}"),
            idempotency_key: req.idempotency_key.clone(),
            links: vec![],
            body,
        }
        .seal(&self.key, "hydra", 0, Hash::ZERO, 1)
        .unwrap();
        quote.state = hydra::QuoteState::Paid.into();
        Ok(hydra::PayResponse {
            quote: Some(quote),
            preimage: "00".repeat(32),
            fee_msat: 7,
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
            ..Default::default()
        })
    }
}

/// A BOLT11 regtest invoice for `amount` (None: amountless), unique per `seed`.
pub fn invoice(a: &Aegis, amount: Option<u64>, seed: u8) -> String {
    let preimage = oa_invoice::Preimage([seed; 32]);
    let req = oa_invoice::InvoiceRequest {
        network: oa_invoice::Network::Regtest,
        amount: amount.map(|v| Msat::new(v).unwrap()),
        payment_hash: preimage.payment_hash(),
        payment_secret: [seed; 32],
        description: "claim payout".into(),
        created_at: Duration::from_millis(a.clock.now_ms()),
        expiry: Duration::from_secs(3600),
        min_final_cltv_expiry_delta: 18,
    };
    let node = oa_invoice::SecretKey::from_slice(&[0x42; 32]).unwrap();
    oa_invoice::create_invoice(&node, &req).unwrap()
}

pub const AMOUNT: u64 = 1_000_000;

/// A passed objective verification of `agent`'s work; returns its id.
pub async fn passed(a: &Aegis, key: &str, agent: &str) -> String {
    let v = verify(
        a,
        key,
        objective_work(agent, AMOUNT),
        objective_evidence(None),
    )
    .await;
    assert_eq!(v["verification"]["verdict"], "VERIFICATION_VERDICT_PASSED");
    v["verification"]["verification_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub fn expiry(a: &Aegis) -> String {
    (a.clock.now_ms() + 30 * 86_400_000).to_string()
}

pub async fn issue(a: &Aegis, key: &str, verification_id: &str, coverage: u64) -> Value {
    a.ok(
        "/v1/aegis/warranty/issue",
        json!({"idempotency_key": key, "verification_id": verification_id,
               "coverage_msat": coverage.to_string(), "expires_at_ms": expiry(a)}),
    )
    .await
}

pub fn s(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub fn adjuster(a: &Aegis) -> String {
    a.token_for("adjuster", &["aegis:adjust", "aegis:read"])
}

pub fn arbitrator(a: &Aegis) -> String {
    a.token_for("arbitrator", &["aegis:arbitrate"])
}

pub async fn open_claim(
    a: &Aegis,
    key: &str,
    warranty: &str,
    amount: u64,
    inv: &str,
) -> (StatusCode, Value) {
    a.post(
        "/v1/aegis/claim/open",
        json!({"idempotency_key": key, "warranty_id": warranty, "requested_msat": amount.to_string(),
               "invoice": inv, "evidence": "the output was wrong"}),
    )
    .await
}

pub async fn resolve(
    a: &Aegis,
    key: &str,
    claim: &str,
    decision: &str,
    fault: bool,
    reason_code: &str,
) -> (StatusCode, Value) {
    a.post_as(
        &adjuster(a),
        "/v1/aegis/claim/resolve",
        json!({"idempotency_key": key, "claim_id": claim, "decision": decision,
               "provider_at_fault": fault, "reason_code": reason_code, "reason": "checked"}),
    )
    .await
}

/// A warranty of `coverage` on a fresh passed verification, with a bond of `bond` (0: none).
pub async fn warranty_with_bond(
    a: &Aegis,
    tag: &str,
    coverage: u64,
    bond: u64,
) -> (String, Option<String>) {
    let v = passed(a, &format!("v-{tag}"), "agent-w").await;
    let w = issue(a, &format!("w-{tag}"), &v, coverage).await;
    let wid = s(&w, "/warranty/warranty_id");
    let bid = if bond > 0 {
        let b = a
            .ok(
                "/v1/aegis/bond/reserve",
                json!({"idempotency_key": format!("b-{tag}"), "warranty_id": wid,
                       "provider_id": "agent-w", "amount_msat": bond.to_string()}),
            )
            .await;
        Some(s(&b, "/bond/bond_id"))
    } else {
        None
    };
    (wid, bid)
}

#[tokio::test]
async fn warranty_issue_collects_the_premium_reserves_coverage_and_refuses_what_it_must() {
    warranty_issue(&Aegis::start().await).await;
}

pub async fn warranty_issue(a: &Aegis) {
    let v = passed(a, "v1", "agent-w").await;
    let quote = a
        .ok(
            "/v1/aegis/warranty/quote",
            json!({"work": objective_work("agent-w", AMOUNT), "coverage_msat": "600000"}),
        )
        .await;
    let total = s(&quote, "/quote/total_msat");
    // A quote the price no longer matches is refused; nothing is recorded.
    let body = |key: &str, quoted: &str| {
        json!({"idempotency_key": key, "verification_id": v, "coverage_msat": "600000",
               "expires_at_ms": expiry(a), "quoted_total_msat": quoted})
    };
    let (st, err) = a.post("/v1/aegis/warranty/issue", body("w0", "1")).await;
    assert_eq!((st, code(&err)), (StatusCode::CONFLICT, "QUOTE_CHANGED"));
    assert_eq!(a.count("aegis_warranties").await, 0);

    let w = a.ok("/v1/aegis/warranty/issue", body("w1", &total)).await;
    let wid = s(&w, "/warranty/warranty_id");
    assert_eq!(s(&w, "/warranty/coverage_msat"), "600000");
    assert_eq!(s(&w, "/warranty/remaining_msat"), "600000");
    assert_eq!(s(&w, "/warranty/state"), "active");
    assert_eq!(
        s(&w, "/receipt/schema"),
        "oa.aegis.warranty_issue_receipt.v1"
    );
    assert_eq!(s(&w, "/quote/total_msat"), total);
    let premium: u64 = s(&w, "/warranty/premium_msat").parse().unwrap();
    let fee: u64 = s(&w, "/warranty/verification_fee_msat").parse().unwrap();
    assert_eq!(premium + fee, total.parse::<u64>().unwrap());
    // The ledger: premium and fee collected, coverage reserved from the pool.
    assert_eq!(a.balances("premiums").await.credits_posted_msat, premium);
    assert_eq!(
        a.balances("verification_fees").await.credits_posted_msat,
        fee
    );
    assert_eq!(
        a.balances(&format!("reserve:{wid}"))
            .await
            .credits_posted_msat,
        600_000
    );
    assert_eq!(a.balances("pool").await.debits_posted_msat, 600_000);
    // The receipt links the verification's.
    let vr = a.get(&format!("/v1/aegis/verification/{v}")).await.1;
    assert_eq!(w["receipt"]["links"][0], vr["receipt"]["hash"]);

    // Replay answers the same; the same key for another body is a conflict.
    let again = a.ok("/v1/aegis/warranty/issue", body("w1", &total)).await;
    assert_eq!(again, w);
    let (st, err) = a.post("/v1/aegis/warranty/issue", body("w1", "0")).await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT")
    );
    // One warranty per verification.
    let (st, err) = a.post("/v1/aegis/warranty/issue", body("w2", "0")).await;
    assert_eq!((st, code(&err)), (StatusCode::CONFLICT, "WARRANTY_EXISTS"));
    // Not passed, unknown, too much coverage, bad expiry.
    let failed = verify(
        a,
        "vf",
        objective_work("agent-w", AMOUNT),
        objective_evidence(Some("file")),
    )
    .await;
    let fid = s(&failed, "/verification/verification_id");
    let (st, err) = a
        .post(
            "/v1/aegis/warranty/issue",
            json!({"idempotency_key": "w3", "verification_id": fid, "expires_at_ms": expiry(a)}),
        )
        .await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::CONFLICT, "VERIFICATION_NOT_PASSED")
    );
    let (st, err) = a
        .post(
            "/v1/aegis/warranty/issue",
            json!({"idempotency_key": "w4", "verification_id": "ver_nope", "expires_at_ms": expiry(a)}),
        )
        .await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::NOT_FOUND, "VERIFICATION_NOT_FOUND")
    );
    let v2 = passed(a, "v2", "agent-w").await;
    let (st, err) = a
        .post(
            "/v1/aegis/warranty/issue",
            json!({"idempotency_key": "w5", "verification_id": v2, "coverage_msat": "1000001",
                   "expires_at_ms": expiry(a)}),
        )
        .await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::BAD_REQUEST, "INVALID_COVERAGE")
    );
    let (st, err) = a
        .post(
            "/v1/aegis/warranty/issue",
            json!({"idempotency_key": "w6", "verification_id": v2, "expires_at_ms": a.clock.now_ms().to_string()}),
        )
        .await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::BAD_REQUEST, "INVALID_EXPIRY")
    );
    // Default coverage is the verified amount; the warranty reads back.
    let w2 = issue(a, "w7", &v2, 0).await;
    assert_eq!(s(&w2, "/warranty/coverage_msat"), AMOUNT.to_string());
    let read = a
        .get(&format!(
            "/v1/aegis/warranty/{}",
            s(&w2, "/warranty/warranty_id")
        ))
        .await
        .1;
    assert_eq!(read["warranty"], w2["warranty"]);
    assert_eq!(
        a.receipts_of("oa.aegis.warranty_issue_receipt.v1")
            .await
            .len(),
        2
    );
    let report = a.audit().await;
    assert!(report.is_ok(), "{report:?}");
    a.assert_ledger_ok().await;
}

#[tokio::test]
async fn bonds_reserve_release_and_refuse_what_they_must() {
    bonds(&Aegis::start().await).await;
}

pub async fn bonds(a: &Aegis) {
    let (wid, bid) = warranty_with_bond(a, "1", 0, 400_000).await;
    let bid = bid.unwrap();
    let acct = "provider:agent-w";
    let b = a.balances(acct).await;
    assert_eq!(
        (b.credits_posted_msat, b.debits_pending_msat),
        (400_000, 400_000)
    );
    assert_eq!(a.balances("pool").await.credits_pending_msat, 400_000);
    // One bond per warranty; the provider must be the warranty's.
    let (st, err) = a
        .post(
            "/v1/aegis/bond/reserve",
            json!({"idempotency_key": "b-x", "warranty_id": wid, "provider_id": "agent-w", "amount_msat": "1"}),
        )
        .await;
    assert_eq!((st, code(&err)), (StatusCode::CONFLICT, "BOND_EXISTS"));
    let (wid2, _) = warranty_with_bond(a, "2", 0, 0).await;
    let (st, err) = a
        .post(
            "/v1/aegis/bond/reserve",
            json!({"idempotency_key": "b-y", "warranty_id": wid2, "provider_id": "agent-z", "amount_msat": "1"}),
        )
        .await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::CONFLICT, "PROVIDER_MISMATCH")
    );
    let (st, err) = a
        .post(
            "/v1/aegis/bond/reserve",
            json!({"idempotency_key": "b-z", "warranty_id": "wty_nope", "provider_id": "agent-w", "amount_msat": "1"}),
        )
        .await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::NOT_FOUND, "WARRANTY_NOT_FOUND")
    );

    // reserved -> released: the reservation is voided, the stake is the provider's again.
    let r = a
        .ok(
            "/v1/aegis/bond/release",
            json!({"idempotency_key": "rel-1", "bond_id": bid}),
        )
        .await;
    assert_eq!(s(&r, "/bond/state"), "released");
    assert_eq!(s(&r, "/receipt/schema"), "oa.aegis.bond_release_receipt.v1");
    let b = a.balances(acct).await;
    assert_eq!((b.credits_posted_msat, b.debits_pending_msat), (400_000, 0));
    // Replay; and a second release is refused.
    assert_eq!(
        a.ok(
            "/v1/aegis/bond/release",
            json!({"idempotency_key": "rel-1", "bond_id": bid})
        )
        .await,
        r
    );
    let (st, err) = a
        .post(
            "/v1/aegis/bond/release",
            json!({"idempotency_key": "rel-2", "bond_id": bid}),
        )
        .await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::CONFLICT, "BOND_NOT_RESERVED")
    );
    let (st, err) = a
        .post(
            "/v1/aegis/bond/release",
            json!({"idempotency_key": "rel-3", "bond_id": "bond_nope"}),
        )
        .await;
    assert_eq!((st, code(&err)), (StatusCode::NOT_FOUND, "BOND_NOT_FOUND"));
    // A new bond reuses the released stake: nothing new is deposited.
    let b2 = a
        .ok(
            "/v1/aegis/bond/reserve",
            json!({"idempotency_key": "b-w2", "warranty_id": wid2, "provider_id": "agent-w", "amount_msat": "300000"}),
        )
        .await;
    assert_eq!(s(&b2, "/bond/state"), "reserved");
    let b = a.balances(acct).await;
    assert_eq!(
        (b.credits_posted_msat, b.debits_pending_msat),
        (400_000, 300_000)
    );
    assert_eq!(
        a.receipts_of("oa.aegis.bond_reservation_receipt.v1")
            .await
            .len(),
        2
    );
    a.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_paid_claim_pays_the_invoice_once_decrements_coverage_draws_the_bond_and_beyond_coverage_is_refused()
 {
    let hydra = FakeHydra::new(Mode::Pay);
    paid_claim(&Aegis::start_paying(hydra.clone()).await, &hydra).await;
}

pub async fn paid_claim(a: &Aegis, hydra: &FakeHydra) {
    let (wid, bid) = warranty_with_bond(a, "1", 600_000, 250_000).await;
    let inv = invoice(a, Some(400_000), 1);
    let (st, c) = open_claim(a, "c1", &wid, 400_000, &inv).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(s(&c, "/claim/state"), "open");
    assert_eq!(s(&c, "/receipt/schema"), "oa.aegis.claim_open_receipt.v1");
    let cid = s(&c, "/claim/claim_id");
    // The bond is locked while the claim is open.
    let (st, err) = a
        .post(
            "/v1/aegis/bond/release",
            json!({"idempotency_key": "rel", "bond_id": bid.clone().unwrap()}),
        )
        .await;
    assert_eq!((st, code(&err)), (StatusCode::CONFLICT, "BOND_LOCKED"));
    // The claimant may not resolve its own claim.
    let (st, err) = a
        .post_as(
            &a.token_of("treasury", &["aegis:adjust"]),
            "/v1/aegis/claim/resolve",
            json!({"idempotency_key": "r0", "claim_id": cid, "decision": "CLAIM_DECISION_PAY"}),
        )
        .await;
    assert_eq!((st, code(&err)), (StatusCode::FORBIDDEN, "NOT_INDEPENDENT"));

    let (st, r) = resolve(a, "r1", &cid, "CLAIM_DECISION_PAY", true, "").await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(s(&r, "/claim/state"), "paid");
    assert_eq!(s(&r, "/claim/payout_msat"), "400000");
    assert_eq!(s(&r, "/claim/fee_msat"), "7");
    assert_eq!(s(&r, "/bond/state"), "drawn");
    assert_eq!(s(&r, "/bond/drawn_msat"), "250000");
    let receipt = &r["receipt"];
    assert_eq!(receipt["schema"], "oa.aegis.claim_resolution_receipt.v1");
    assert_eq!(receipt["body"]["status"], "paid");
    assert_eq!(receipt["links"][0], r["hydra_receipt"]["hash"]);
    assert_eq!(receipt["body"]["hydra_receipt"], r["hydra_receipt"]["hash"]);
    assert_eq!(
        receipt["body"]["payment_hash"],
        r["hydra_receipt"]["body"]["payment_hash"]
    );
    assert_eq!(
        receipt["body"]["amount_msat"],
        r["hydra_receipt"]["body"]["amount_msat"]
    );
    assert_eq!(hydra.paid.lock().unwrap().len(), 1);
    assert_eq!(hydra.pay_calls.load(Ordering::SeqCst), 1);

    // Coverage decreased; the ledger moved the payout, the fee and the bond draw.
    let w = a.get(&format!("/v1/aegis/warranty/{wid}")).await.1;
    assert_eq!(s(&w, "/warranty/remaining_msat"), "200000");
    assert_eq!(s(&w, "/warranty/paid_out_msat"), "400000");
    assert_eq!(a.balances("claims_paid").await.credits_posted_msat, 400_000);
    assert_eq!(a.balances("routing_fees").await.credits_posted_msat, 7);
    let p = a.balances("provider:agent-w").await;
    assert_eq!((p.debits_posted_msat, p.debits_pending_msat), (250_000, 0));

    // Replays and later resolves pay nothing more.
    let (_, again) = resolve(a, "r1", &cid, "CLAIM_DECISION_PAY", true, "").await;
    assert_eq!(again["claim"], r["claim"]);
    let (st, err) = resolve(a, "r2", &cid, "CLAIM_DECISION_PAY", false, "").await;
    assert_eq!((st, code(&err)), (StatusCode::CONFLICT, "CLAIM_NOT_OPEN"));
    assert_eq!(hydra.pay_calls.load(Ordering::SeqCst), 1);

    // A second claim beyond the coverage left is refused; the same invoice cannot be claimed twice.
    let (st, err) = open_claim(a, "c2", &wid, 200_001, &invoice(a, None, 2)).await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::CONFLICT, "COVERAGE_EXCEEDED")
    );
    let (st, err) = open_claim(a, "c3", &wid, 400_000, &inv).await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::CONFLICT, "COVERAGE_EXCEEDED")
    );
    let (st, err) = open_claim(a, "c4", &wid, 100_000, &invoice(a, Some(100_000), 1)).await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::CONFLICT, "INVOICE_ALREADY_CLAIMED")
    );
    // Only the beneficiary may claim.
    let (st, err) = a
        .post_as(
            &a.token_for("stranger", &["aegis:claim"]),
            "/v1/aegis/claim/open",
            json!({"idempotency_key": "c5", "warranty_id": wid, "requested_msat": "1",
                   "invoice": invoice(a, None, 5), "evidence": "x"}),
        )
        .await;
    assert_eq!((st, code(&err)), (StatusCode::FORBIDDEN, "NOT_BENEFICIARY"));
    // An amountless invoice takes the rest of the coverage: payout = min(requested, left).
    let (_, c6) = open_claim(a, "c6", &wid, 200_000, &invoice(a, None, 6)).await;
    let (_, r6) = resolve(
        a,
        "r6",
        &s(&c6, "/claim/claim_id"),
        "CLAIM_DECISION_PAY",
        false,
        "",
    )
    .await;
    assert_eq!(s(&r6, "/claim/state"), "paid");
    assert_eq!(s(&r6, "/claim/payout_msat"), "200000");
    assert_eq!(
        a.balances(&format!("reserve:{wid}")).await.available_msat(),
        0
    );
    // Expired warranties take no claims.
    a.clock.advance(31 * 86_400_000);
    let (st, err) = open_claim(a, "c7", &wid, 1, &invoice(a, None, 7)).await;
    assert_eq!((st, code(&err)), (StatusCode::CONFLICT, "WARRANTY_EXPIRED"));
    a.assert_ledger_ok().await;
}

#[tokio::test]
async fn sixteen_concurrent_resolves_of_one_claim_pay_it_once() {
    let hydra = FakeHydra::new(Mode::Pay);
    concurrent_resolves(&Aegis::start_paying(hydra.clone()).await, &hydra).await;
}

/// The resolves run as concurrent futures of one task (as spawned tasks do on the test's
/// single-threaded runtime): each holds its own connection and transaction.
pub async fn concurrent_resolves(a: &Aegis, hydra: &FakeHydra) {
    let (wid, _) = warranty_with_bond(a, "1", 500_000, 0).await;
    let (_, c) = open_claim(a, "c1", &wid, 300_000, &invoice(a, Some(300_000), 9)).await;
    let cid = s(&c, "/claim/claim_id");
    let resolves = (0..16).map(|n| {
        // Half share one key, half have their own.
        let key = if n % 2 == 0 {
            "same".to_owned()
        } else {
            format!("k{n}")
        };
        let cid = cid.clone();
        async move { resolve(a, &key, &cid, "CLAIM_DECISION_PAY", false, "").await }
    });
    let mut ok = 0;
    for (st, v) in futures::future::join_all(resolves).await {
        match st {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => assert!(
                ["CLAIM_NOT_OPEN", "REQUEST_IN_PROGRESS"].contains(&code(&v)),
                "{v}"
            ),
            other => panic!("{other}: {v}"),
        }
    }
    assert!(ok >= 1);
    assert_eq!(hydra.pay_calls.load(Ordering::SeqCst), 1);
    assert_eq!(hydra.paid.lock().unwrap().len(), 1);
    let r = a.get(&format!("/v1/aegis/claim/{cid}")).await.1;
    assert_eq!(s(&r, "/claim/state"), "paid");
    assert_eq!(a.balances("claims_paid").await.credits_posted_msat, 300_000);
    assert_eq!(
        a.receipts_of("oa.aegis.claim_resolution_receipt.v1")
            .await
            .len(),
        1
    );
    a.assert_ledger_ok().await;
}

#[tokio::test]
async fn denied_failed_and_in_doubt_claims_move_no_money() {
    let hydra = FakeHydra::new(Mode::Fail);
    denied_failed_in_doubt(&Aegis::start_paying(hydra.clone()).await, &hydra).await;
}

pub async fn denied_failed_in_doubt(a: &Aegis, hydra: &FakeHydra) {
    hydra.set(Mode::Fail);
    let (wid, _) = warranty_with_bond(a, "1", 500_000, 0).await;
    let reserve = format!("reserve:{wid}");
    // open -> denied, with a reason code (required).
    let (_, c1) = open_claim(a, "c1", &wid, 100_000, &invoice(a, None, 1)).await;
    let c1 = s(&c1, "/claim/claim_id");
    let (st, err) = resolve(a, "r0", &c1, "CLAIM_DECISION_DENY", false, "").await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::BAD_REQUEST, "INVALID_REASON_CODE")
    );
    let (_, d) = resolve(a, "r1", &c1, "CLAIM_DECISION_DENY", false, "NOT_COVERED").await;
    assert_eq!(s(&d, "/claim/state"), "denied");
    assert_eq!(s(&d, "/claim/reason_code"), "NOT_COVERED");
    assert_eq!(d["receipt"]["body"]["status"], "denied");
    // open -> paying -> payment_failed: the reservation is voided.
    let (_, c2) = open_claim(a, "c2", &wid, 200_000, &invoice(a, None, 2)).await;
    let c2 = s(&c2, "/claim/claim_id");
    let (_, f) = resolve(a, "r2", &c2, "CLAIM_DECISION_PAY", false, "").await;
    assert_eq!(s(&f, "/claim/state"), "payment_failed");
    assert_eq!(s(&f, "/claim/reason_code"), "NO_ROUTE");
    assert_eq!(a.balances(&reserve).await.available_msat(), 500_000);
    // Hydra down: the claim stays paying (its payout held), a later resolve re-drives it.
    hydra.set(Mode::Down);
    let (_, c3) = open_claim(a, "c3", &wid, 300_000, &invoice(a, None, 3)).await;
    let c3 = s(&c3, "/claim/claim_id");
    let (_, p) = resolve(a, "r3", &c3, "CLAIM_DECISION_PAY", false, "").await;
    assert_eq!(s(&p, "/claim/state"), "paying");
    assert_eq!(a.balances(&reserve).await.available_msat(), 200_000);
    assert_eq!(a.balances(&reserve).await.debits_pending_msat, 300_000);
    hydra.set(Mode::Pay);
    let (_, paid) = resolve(a, "r4", &c3, "CLAIM_DECISION_PAY", false, "").await;
    assert_eq!(s(&paid, "/claim/state"), "paid");
    assert_eq!(hydra.paid.lock().unwrap().len(), 1);
    assert_eq!(a.balances(&reserve).await.available_msat(), 200_000);
    // A pay with no Hydra configured is refused before anything changes.
    let b = Aegis::start().await;
    let (st, err) = resolve(&b, "r", "clm_x", "CLAIM_DECISION_PAY", false, "").await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::SERVICE_UNAVAILABLE, "HYDRA_NOT_CONFIGURED")
    );
    a.assert_ledger_ok().await;
}

#[tokio::test]
async fn disputes_overturn_a_denial_through_the_claim_path_draw_bonds_and_expire_by_default() {
    let hydra = FakeHydra::new(Mode::Pay);
    disputes(&Aegis::start_paying(hydra.clone()).await, &hydra).await;
}

pub async fn disputes(a: &Aegis, hydra: &FakeHydra) {
    let (wid, _) = warranty_with_bond(a, "1", 500_000, 100_000).await;
    let (_, c1) = open_claim(a, "c1", &wid, 150_000, &invoice(a, Some(150_000), 1)).await;
    let c1 = s(&c1, "/claim/claim_id");
    // An open claim cannot be disputed.
    let dispute = |key: &str, claim: &str| json!({"idempotency_key": key, "claim_id": claim, "reason": "the denial is wrong"});
    let (st, err) = a.post("/v1/aegis/dispute/open", dispute("d0", &c1)).await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::CONFLICT, "CLAIM_NOT_DISPUTABLE")
    );
    resolve(
        a,
        "r1",
        &c1,
        "CLAIM_DECISION_DENY",
        false,
        "EVIDENCE_INSUFFICIENT",
    )
    .await;
    let d = a.ok("/v1/aegis/dispute/open", dispute("d1", &c1)).await;
    assert_eq!(s(&d, "/dispute/state"), "open");
    let did = s(&d, "/dispute/dispute_id");
    let (st, err) = a.post("/v1/aegis/dispute/open", dispute("d2", &c1)).await;
    assert_eq!((st, code(&err)), (StatusCode::CONFLICT, "DISPUTE_EXISTS"));
    let arb = |key: &str, pay: bool, fault: bool| {
        json!({"idempotency_key": key, "dispute_id": did, "pay": pay, "provider_at_fault": fault,
               "reason": "the evidence holds"})
    };
    // A party may not arbitrate.
    let (st, err) = a
        .post_as(
            &a.token_for("adjuster", &["aegis:arbitrate"]),
            "/v1/aegis/dispute/arbitrate",
            arb("x", true, true),
        )
        .await;
    assert_eq!((st, code(&err)), (StatusCode::FORBIDDEN, "NOT_INDEPENDENT"));
    // Overturned: the claim goes denied -> paying -> paid through the claim path, bond drawn.
    let (st, r) = a
        .post_as(
            &arbitrator(a),
            "/v1/aegis/dispute/arbitrate",
            arb("a1", true, true),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(s(&r, "/dispute/state"), "overturned");
    assert_eq!(
        s(&r, "/receipt/schema"),
        "oa.aegis.dispute_arbitration_receipt.v1"
    );
    assert_eq!(s(&r, "/claim/state"), "paid");
    assert_eq!(s(&r, "/claim/payout_msat"), "150000");
    assert_eq!(hydra.paid.lock().unwrap().len(), 1);
    let bond = a.get(&format!("/v1/aegis/claim/{c1}")).await.1;
    assert_eq!(s(&bond, "/bond/drawn_msat"), "100000");
    // Replaying the arbitration changes nothing; deciding again is refused.
    let (_, again) = a
        .post_as(
            &arbitrator(a),
            "/v1/aegis/dispute/arbitrate",
            arb("a1", true, true),
        )
        .await;
    assert_eq!(again["dispute"], r["dispute"]);
    let (st, err) = a
        .post_as(
            &arbitrator(a),
            "/v1/aegis/dispute/arbitrate",
            arb("a2", true, true),
        )
        .await;
    assert_eq!((st, code(&err)), (StatusCode::CONFLICT, "DISPUTE_CLOSED"));
    assert_eq!(hydra.pay_calls.load(Ordering::SeqCst), 1);

    // A paid claim disputed and left undecided: the deadline passes, the resolution stands.
    let d3 = a.ok("/v1/aegis/dispute/open", dispute("d3", &c1)).await;
    let d3 = s(&d3, "/dispute/dispute_id");
    a.clock.advance(7 * 86_400_000 + 1_000);
    let (st, err) = a
        .post_as(
            &arbitrator(a),
            "/v1/aegis/dispute/arbitrate",
            json!({"idempotency_key": "a3", "dispute_id": d3, "pay": false, "reason": "late"}),
        )
        .await;
    assert_eq!((st, code(&err)), (StatusCode::CONFLICT, "DISPUTE_CLOSED"));
    let e = a.get(&format!("/v1/aegis/dispute/{d3}")).await.1;
    assert_eq!(s(&e, "/dispute/state"), "expired");
    assert_eq!(e["receipt"]["body"]["outcome"], "expired");
    assert_eq!(s(&e, "/claim/state"), "paid");
    assert_eq!(
        a.receipts_of("oa.aegis.dispute_arbitration_receipt.v1")
            .await
            .len(),
        2
    );
    a.assert_ledger_ok().await;
}

#[tokio::test]
async fn an_upheld_denial_pays_nothing_and_fault_on_a_paid_claim_draws_the_bond_once() {
    let hydra = FakeHydra::new(Mode::Pay);
    upheld_and_fault(&Aegis::start_paying(hydra.clone()).await, &hydra).await;
}

pub async fn upheld_and_fault(a: &Aegis, hydra: &FakeHydra) {
    let (wid, _) = warranty_with_bond(a, "1", 500_000, 100_000).await;
    let (_, c1) = open_claim(a, "c1", &wid, 50_000, &invoice(a, None, 1)).await;
    let c1 = s(&c1, "/claim/claim_id");
    resolve(a, "r1", &c1, "CLAIM_DECISION_DENY", false, "NOT_COVERED").await;
    let d = a
        .ok(
            "/v1/aegis/dispute/open",
            json!({"idempotency_key": "d1", "claim_id": c1, "reason": "r"}),
        )
        .await;
    let (_, r) = a
        .post_as(
            &arbitrator(a),
            "/v1/aegis/dispute/arbitrate",
            json!({"idempotency_key": "a1", "dispute_id": s(&d, "/dispute/dispute_id"), "pay": false, "reason": "fine"}),
        )
        .await;
    assert_eq!(s(&r, "/dispute/state"), "upheld");
    assert_eq!(s(&r, "/claim/state"), "denied");
    assert_eq!(hydra.pay_calls.load(Ordering::SeqCst), 0);

    // Paid without fault, then an arbitrator finds the provider at fault: the bond is drawn.
    let (_, c2) = open_claim(a, "c2", &wid, 80_000, &invoice(a, None, 2)).await;
    let c2 = s(&c2, "/claim/claim_id");
    resolve(a, "r2", &c2, "CLAIM_DECISION_PAY", false, "").await;
    let d2 = a
        .ok(
            "/v1/aegis/dispute/open",
            json!({"idempotency_key": "d2", "claim_id": c2, "reason": "fault"}),
        )
        .await;
    let (_, r2) = a
        .post_as(
            &arbitrator(a),
            "/v1/aegis/dispute/arbitrate",
            json!({"idempotency_key": "a2", "dispute_id": s(&d2, "/dispute/dispute_id"), "pay": true,
                   "provider_at_fault": true, "reason": "the provider's fault"}),
        )
        .await;
    assert_eq!(s(&r2, "/dispute/state"), "overturned");
    assert_eq!(r2["receipt"]["body"]["bond_drawn_msat"], "80000");
    let p = a.balances("provider:agent-w").await;
    assert_eq!((p.debits_posted_msat, p.debits_pending_msat), (80_000, 0));
    assert_eq!(hydra.pay_calls.load(Ordering::SeqCst), 1);
    a.assert_ledger_ok().await;
}

#[tokio::test]
async fn the_background_sweeper_closes_an_undecided_dispute_at_its_deadline_without_any_route() {
    let hydra = FakeHydra::new(Mode::Pay);
    dispute_sweeper(&Aegis::start_paying(hydra.clone()).await, &hydra).await;
}

/// The sweeper acts on the service clock: before the deadline it leaves the dispute open, after
/// it the dispute is closed `expired` (the denial stands) with its receipt, though no dispute
/// route is called (`GET` does not sweep); a later arbitration finds it closed.
pub async fn dispute_sweeper(a: &Aegis, hydra: &FakeHydra) {
    let (wid, _) = warranty_with_bond(a, "1", 500_000, 100_000).await;
    let (_, c) = open_claim(a, "c1", &wid, 50_000, &invoice(a, None, 1)).await;
    let cid = s(&c, "/claim/claim_id");
    resolve(a, "r1", &cid, "CLAIM_DECISION_DENY", false, "NOT_COVERED").await;
    let d = a
        .ok(
            "/v1/aegis/dispute/open",
            json!({"idempotency_key": "d1", "claim_id": cid, "reason": "the denial is wrong"}),
        )
        .await;
    let did = s(&d, "/dispute/dispute_id");
    let deadline: u64 = s(&d, "/dispute/deadline_at_ms").parse().unwrap();
    let arbitrations = || a.receipts_of("oa.aegis.dispute_arbitration_receipt.v1");

    // One millisecond before the deadline: a sweep closes nothing, the dispute stays open.
    a.clock.set(deadline - 1);
    assert_eq!(a.aegis.expire_disputes().await.unwrap(), 0);
    let open = a.get(&format!("/v1/aegis/dispute/{did}")).await.1;
    assert_eq!(s(&open, "/dispute/state"), "open");
    assert!(arbitrations().await.is_empty());

    // At the deadline the background sweeper closes it on its own.
    a.clock.set(deadline);
    let closed = oa_testkit::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let v = a.get(&format!("/v1/aegis/dispute/{did}")).await.1;
            (s(&v, "/dispute/state") == "expired").then_some(v)
        },
    )
    .await
    .expect("the sweeper closes the expired dispute");
    assert_eq!(s(&closed, "/dispute/decided_by"), "deadline");
    assert_eq!(closed["receipt"]["body"]["outcome"], "expired");
    assert_eq!(closed["receipt"]["body"]["decided_by"], "deadline");
    // The arbitration receipt links the claim's resolution it leaves standing.
    let claim = a.get(&format!("/v1/aegis/claim/{cid}")).await.1;
    assert_eq!(s(&claim, "/claim/state"), "denied");
    assert_eq!(closed["receipt"]["links"][0], claim["receipt"]["hash"]);
    let receipts = arbitrations().await;
    assert_eq!(receipts.len(), 1);
    // Further sweeps and a late arbitration change nothing.
    assert_eq!(a.aegis.expire_disputes().await.unwrap(), 0);
    let (st, err) = a
        .post_as(
            &arbitrator(a),
            "/v1/aegis/dispute/arbitrate",
            json!({"idempotency_key": "a1", "dispute_id": did, "pay": true, "reason": "late"}),
        )
        .await;
    assert_eq!((st, code(&err)), (StatusCode::CONFLICT, "DISPUTE_CLOSED"));
    assert_eq!(arbitrations().await.len(), 1);
    assert_eq!(hydra.pay_calls.load(Ordering::SeqCst), 0);
    assert_eq!(a.count("aegis_disputes").await, 1);
    let report = a.audit().await;
    assert!(report.is_ok(), "{report:?}");
    a.assert_ledger_ok().await;
}
