//! Withdrawals: from an agent's balance to a BOLT11 invoice, exactly once, with a reservation
//! that posts or voids; the throttle at each threshold; liquidity pays drawing from the pool.

use std::time::Duration;

use http::StatusCode;
use oa_invoice::Network;
use serde_json::{Value, json};

use crate::{
    credit::{code, issued},
    deposits::{POLL, WAIT, balance, footprint, fund, receipt},
    fake::Mode,
    harness::Hydra,
};

const HOUR: Duration = Duration::from_secs(3600);

pub async fn withdraw(
    h: &Hydra,
    key: &str,
    agent: &str,
    invoice: &str,
    max_fee: u64,
) -> (StatusCode, Value) {
    h.post(
        "/v1/liquidity/withdraw",
        json!({"idempotency_key": key, "agent_id": agent, "invoice": invoice, "max_fee_msat": max_fee.to_string()}),
    )
    .await
}

/// Waits until a withdrawal is in `state`; returns its response.
pub async fn reaches(h: &Hydra, withdrawal_id: &str, state: &str) -> Value {
    oa_testkit::wait_until(WAIT, POLL, || async {
        let (status, b) = h
            .call(
                "GET",
                &format!("/v1/liquidity/withdraw/{withdrawal_id}"),
                Some(&h.token.clone()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{b}");
        (b["withdrawal"]["state"] == state).then_some(b)
    })
    .await
    .unwrap_or_else(|| panic!("withdrawal {withdrawal_id} did not reach {state}"))
}

async fn throttle(h: &Hydra) -> Value {
    let (status, b) = h
        .call("GET", "/v1/liquidity/status", Some(&h.token.clone()), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    b["withdraw_throttle"].clone()
}

#[tokio::test]
async fn a_withdrawal_pays_once_and_posts_amount_and_fee_from_the_balance() {
    pays_once(&Hydra::start().await).await;
}

pub async fn pays_once(h: &Hydra) {
    fund(h, "d1", "agent-1", 1_000_000).await;
    h.fake.set_fee(700);
    let inv = h.fake.invoice(200_000, Network::Regtest, HOUR);
    let (status, w) = withdraw(h, "w1", "agent-1", &inv, 20_000).await;
    assert_eq!(status, StatusCode::OK, "{w}");
    let wd = &w["withdrawal"];
    assert_eq!(wd["state"], "WITHDRAWAL_STATE_PAID");
    // The liquidity fee rule: max(floor 10 000, 5 000 ppm of 200 000) capped by 20 000.
    assert_eq!(wd["fee_limit_msat"], "10000");
    assert_eq!(wd["fee_msat"], "700");
    assert_eq!(wd["throttle_reason"], "");
    let mine = receipt(&w["receipt"]);
    let theirs = receipt(&w["executor_receipt"]);
    mine.verify().unwrap();
    assert_eq!(mine.schema, "oa.hydra.withdraw_receipt.v1");
    assert_eq!(mine.links, vec![theirs.hash]);
    assert_eq!(mine.body["status"], "succeeded");
    assert_eq!(mine.body["reserved_msat"], "210000");
    assert_eq!(mine.body["posted_msat"], "200700");
    assert_eq!(mine.body["released_msat"], "9300");
    assert_eq!(mine.body["payment_hash"], theirs.body["payment_hash"]);
    assert_eq!(mine.body["amount_msat"], theirs.body["amount_msat"]);
    assert_eq!(mine.body["fee_msat"], theirs.body["fee_msat"]);
    assert_eq!(balance(h, "agent-1").await, (799_300, 0, 799_300));
    assert_eq!(h.account("withdrawals").await.credits_posted_msat, 200_700);

    // Replays answer the same; the key with another body is a conflict; the invoice cannot be
    // withdrawn again under another key.
    assert_eq!(
        withdraw(h, "w1", "agent-1", &inv, 20_000).await,
        (StatusCode::OK, w.clone())
    );
    let (status, err) = withdraw(h, "w1", "agent-1", &inv, 5).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT")
    );
    let (status, err) = withdraw(h, "w2", "agent-1", &inv, 20_000).await;
    assert_eq!(
        (status, code(&err), err["error"]["reason_code"].as_str()),
        (
            StatusCode::CONFLICT,
            "INVOICE_ALREADY_WITHDRAWN",
            Some("DUPLICATE_INVOICE")
        )
    );
    assert_eq!(h.fake.total_sends(), 1);
    h.ledger_conserved().await;
}

#[tokio::test]
async fn a_withdrawal_beyond_the_balance_is_refused_and_changes_nothing() {
    let h = Hydra::start().await;
    fund(&h, "d1", "agent-1", 100_000).await;
    let before = footprint(&h).await;
    // 95 000 + the 10 000 fee floor > 100 000.
    let inv = h.fake.invoice(95_000, Network::Regtest, HOUR);
    let (status, err) = withdraw(&h, "w1", "agent-1", &inv, 10_000).await;
    assert_eq!(
        (status, code(&err), err["error"]["reason_code"].as_str()),
        (
            StatusCode::CONFLICT,
            "INSUFFICIENT_BALANCE",
            Some("INSUFFICIENT_BALANCE")
        )
    );
    assert_eq!(err["error"]["details"]["available_msat"], "100000");
    assert_eq!(err["error"]["details"]["needed_msat"], "105000");
    // An agent that never deposited has nothing.
    let (status, err) = withdraw(&h, "w2", "agent-none", &inv, 0).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "INSUFFICIENT_BALANCE")
    );
    assert_eq!(footprint(&h).await, before);
    assert_eq!(h.fake.total_sends(), 0);
    // With a lower fee cap it fits; the refused key was not used up.
    let (status, w) = withdraw(&h, "w1b", "agent-1", &inv, 5_000).await;
    assert_eq!(status, StatusCode::OK, "{w}");
    assert_eq!(balance(&h, "agent-1").await, (5_000, 0, 5_000));
}

#[tokio::test]
async fn concurrent_withdrawals_never_overdraw_the_balance() {
    concurrent(&Hydra::start().await).await;
}

pub async fn concurrent(h: &Hydra) {
    fund(h, "d1", "agent-1", 1_000_000).await;
    // Each reserves 100 000 + 10 000 (fee floor): 9 fit in 1 000 000, the 10th does not.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let inv = h.fake.invoice(100_000, Network::Regtest, HOUR);
            let body = json!({"idempotency_key": format!("w{i}"), "agent_id": "agent-1", "invoice": inv, "max_fee_msat": "10000"});
            let (router, token) = (h.router.clone(), h.token.clone());
            tokio::spawn(async move {
                let req = http::Request::builder()
                    .method("POST")
                    .uri("/v1/liquidity/withdraw")
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body.to_string()))
                    .unwrap();
                tower::ServiceExt::oneshot(router, req).await.unwrap().status()
            })
        })
        .collect();
    let statuses: Vec<StatusCode> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 9, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT)
    );
    assert_eq!(h.fake.total_sends(), 9);
    assert_eq!(balance(h, "agent-1").await, (100_000, 0, 100_000));
    assert_eq!(h.receipts_of("oa.hydra.withdraw_receipt.v1").await.len(), 9);
    h.ledger_conserved().await;
}

#[tokio::test]
async fn a_failed_withdrawal_voids_its_reservation_with_a_receipt() {
    let h = Hydra::start().await;
    fund(&h, "d1", "agent-1", 500_000).await;
    h.fake.set_mode(Mode::Fail);
    let inv = h.fake.invoice(100_000, Network::Regtest, HOUR);
    let (status, w) = withdraw(&h, "w1", "agent-1", &inv, 1_000).await;
    assert_eq!(status, StatusCode::OK, "{w}");
    assert_eq!(w["withdrawal"]["state"], "WITHDRAWAL_STATE_FAILED");
    assert_eq!(w["withdrawal"]["failure_code"], "NO_ROUTE");
    let r = receipt(&w["receipt"]);
    assert_eq!(r.body["status"], "failed");
    assert_eq!(r.body["posted_msat"], "0");
    assert_eq!(r.body["released_msat"], "101000");
    assert_eq!(r.links.len(), 1);
    assert_eq!(balance(&h, "agent-1").await, (500_000, 0, 500_000));
    // A failed withdrawal frees its invoice for another attempt.
    h.fake.set_mode(Mode::Pay);
    let inv2 = h.fake.invoice(100_000, Network::Regtest, HOUR);
    let (status, _) = withdraw(&h, "w2", "agent-1", &inv2, 1_000).await;
    assert_eq!(status, StatusCode::OK);
    h.ledger_conserved().await;
}

#[tokio::test]
async fn an_in_flight_withdrawal_is_tracked_after_a_restart_never_resent() {
    let h = Hydra::start().await;
    fund(&h, "d1", "agent-1", 500_000).await;
    h.fake.set_mode(Mode::Hang);
    let inv = h.fake.invoice(100_000, Network::Regtest, HOUR);
    let (status, w) = withdraw(&h, "w1", "agent-1", &inv, 1_000).await;
    assert_eq!(status, StatusCode::OK, "{w}");
    assert_eq!(w["withdrawal"]["state"], "WITHDRAWAL_STATE_PAYING");
    // Reserved while in flight.
    assert_eq!(balance(&h, "agent-1").await, (500_000, 101_000, 399_000));
    let id = w["withdrawal"]["withdrawal_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let h = h.restart().await;
    h.fake.set_mode(Mode::Pay);
    let done = reaches(&h, &id, "WITHDRAWAL_STATE_PAID").await;
    receipt(&done["receipt"]).verify().unwrap();
    let hash = done["withdrawal"]["payment_hash"].as_str().unwrap();
    assert_eq!(h.fake.sends(hash), 1);
    assert_eq!(balance(&h, "agent-1").await, (400_000, 0, 400_000));
    // The retried request answers with the finished withdrawal.
    let (_, again) = withdraw(&h, "w1", "agent-1", &inv, 1_000).await;
    assert_eq!(again["withdrawal"]["state"], "WITHDRAWAL_STATE_PAID");
    h.ledger_conserved().await;
}

pub const THROTTLE_ARGS: [&str; 3] = [
    "--withdraw-delay-bps=5000",
    "--withdraw-halt-bps=8000",
    "--withdraw-delay-secs=600",
];

#[tokio::test]
async fn the_throttle_pays_delays_and_halts_at_its_thresholds() {
    throttle_thresholds(&Hydra::start_with(&THROTTLE_ARGS).await).await;
}

pub async fn throttle_thresholds(h: &Hydra) {
    // Liquidity 10 000 000 msat: 6 000 000 in channels, 4 000 000 confirmed on chain.
    h.fake.set_liquidity(6_000_000, 4_000_000);
    fund(h, "d1", "agent-1", 4_999_000).await;
    let t = throttle(h).await;
    assert_eq!(
        (
            t["state"].as_str(),
            t["reason_code"].as_str(),
            t["ratio_bps"].as_u64()
        ),
        (Some("normal"), Some("LIQUIDITY_OK"), Some(4_999))
    );
    assert_eq!(t["liquidity_msat"], "10000000");
    assert_eq!(t["onchain_confirmed_msat"], "4000000");
    // Normal: paid at once.
    let inv = h.fake.invoice(10_000, Network::Regtest, HOUR);
    let (_, w) = withdraw(h, "w-normal", "agent-1", &inv, 0).await;
    assert_eq!(w["withdrawal"]["state"], "WITHDRAWAL_STATE_PAID", "{w}");

    // An open envelope's cap counts as a liability too: 4 989 000 + 11 000 = 5 000 000 bps.
    issued(h, "e", "agent-9", 11_000, 11_000).await;
    let t = throttle(h).await;
    assert_eq!(
        (
            t["state"].as_str(),
            t["reason_code"].as_str(),
            t["ratio_bps"].as_u64()
        ),
        (Some("delayed"), Some("LIQUIDITY_TIGHT"), Some(5_000)),
        "{t}"
    );
    assert_eq!(t["envelope_reservations_msat"], "11000");
    // Delayed: queued for 600 s with the amount reserved; nothing sent.
    let sends = h.fake.total_sends();
    let inv = h
        .fake
        .invoice(20_000, Network::Regtest, Duration::from_secs(7_200));
    let now = h.clock_ms();
    let (status, w) = withdraw(h, "w-delayed", "agent-1", &inv, 0).await;
    assert_eq!(status, StatusCode::OK, "{w}");
    let wd = w["withdrawal"].clone();
    assert_eq!(wd["state"], "WITHDRAWAL_STATE_QUEUED");
    assert_eq!(wd["throttle_reason"], "LIQUIDITY_TIGHT");
    assert_eq!(wd["not_before_ms"], (now + 600_000).to_string());
    assert_eq!(balance(h, "agent-1").await.1, 20_000);
    let t = throttle(h).await;
    assert_eq!(
        (t["queued_withdrawals"].as_str(), t["queued_msat"].as_str()),
        (Some("1"), Some("20000"))
    );
    // A retry of the same request answers with the queued withdrawal.
    let (_, again) = withdraw(h, "w-delayed", "agent-1", &inv, 0).await;
    assert_eq!(again["withdrawal"], wd);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.fake.total_sends(),
        sends,
        "not paid before its not-before"
    );
    // Due: the queue pays it.
    h.clock.advance(600_000);
    let id = wd["withdrawal_id"].as_str().unwrap();
    let paid = reaches(h, id, "WITHDRAWAL_STATE_PAID").await;
    assert_eq!(
        receipt(&paid["receipt"]).body["throttle_reason"],
        "LIQUIDITY_TIGHT"
    );
    assert_eq!(h.fake.total_sends(), sends + 1);

    // Halted: liquidity shrinks to 6 000 000 (liabilities 4 969 000 + 11 000: 8 300 bps).
    // Refused with the reason code, nothing recorded.
    h.fake.set_liquidity(6_000_000, 0);
    let t = throttle(h).await;
    assert_eq!(
        (t["state"].as_str(), t["reason_code"].as_str()),
        (Some("halted"), Some("LIQUIDITY_HALT"))
    );
    assert_eq!(t["ratio_bps"], 8_300, "{t}");
    let before = footprint(h).await;
    let inv = h.fake.invoice(10_000, Network::Regtest, HOUR);
    let (status, err) = withdraw(h, "w-halted", "agent-1", &inv, 0).await;
    assert_eq!(
        (status, code(&err), err["error"]["reason_code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "WITHDRAWALS_HALTED",
            Some("LIQUIDITY_HALT")
        )
    );
    assert_eq!(footprint(h).await, before);

    // A queued withdrawal (queued at 6 225 bps) that comes due while halted is pushed back, not
    // paid.
    h.fake.set_liquidity(6_000_000, 2_000_000);
    let inv = h
        .fake
        .invoice(30_000, Network::Regtest, Duration::from_secs(7_200));
    let (_, q) = withdraw(h, "w-queued", "agent-1", &inv, 0).await;
    assert_eq!(q["withdrawal"]["state"], "WITHDRAWAL_STATE_QUEUED", "{q}");
    let qid = q["withdrawal"]["withdrawal_id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.fake.set_liquidity(6_000_000, 0);
    let sends = h.fake.total_sends();
    h.clock.advance(600_000);
    let due_at = h.clock_ms();
    let pushed = oa_testkit::wait_until(WAIT, POLL, || async {
        let (_, b) = h
            .call(
                "GET",
                &format!("/v1/liquidity/withdraw/{qid}"),
                Some(&h.token.clone()),
                None,
            )
            .await;
        (b["withdrawal"]["throttle_reason"] == "LIQUIDITY_HALT").then_some(b)
    })
    .await
    .expect("pushed back while halted");
    assert_eq!(pushed["withdrawal"]["state"], "WITHDRAWAL_STATE_QUEUED");
    assert_eq!(
        pushed["withdrawal"]["not_before_ms"],
        (due_at + 600_000).to_string()
    );
    assert_eq!(h.fake.total_sends(), sends);

    // The executor cannot tell its liquidity: halted, with its own reason code.
    h.fake.set_mode(Mode::Unavailable);
    let (status, err) = withdraw(h, "w-unknown", "agent-1", &inv, 0).await;
    assert_eq!(
        (status, code(&err), err["error"]["reason_code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "WITHDRAWALS_HALTED",
            Some("LIQUIDITY_UNKNOWN")
        )
    );
    h.fake.set_mode(Mode::Pay);
    // Liquidity restored: the pushed-back withdrawal is paid when due again.
    h.fake.set_liquidity(60_000_000, 0);
    h.clock.advance(600_000);
    reaches(h, &qid, "WITHDRAWAL_STATE_PAID").await;
    h.ledger_conserved().await;
}

#[tokio::test]
async fn a_queued_withdrawal_whose_invoice_expires_fails_and_releases_its_reservation() {
    let h = Hydra::start_with(&["--withdraw-delay-bps=0"]).await;
    fund(&h, "d1", "agent-1", 100_000).await;
    // Delay 600 s (the default) but the invoice lives 300 s.
    let inv = h
        .fake
        .invoice(50_000, Network::Regtest, Duration::from_secs(300));
    let (_, w) = withdraw(&h, "w1", "agent-1", &inv, 0).await;
    assert_eq!(w["withdrawal"]["state"], "WITHDRAWAL_STATE_QUEUED", "{w}");
    assert_eq!(balance(&h, "agent-1").await.2, 50_000);
    h.clock.advance(600_000);
    let id = w["withdrawal"]["withdrawal_id"].as_str().unwrap();
    let failed = reaches(&h, id, "WITHDRAWAL_STATE_FAILED").await;
    assert_eq!(failed["withdrawal"]["failure_code"], "INVOICE_EXPIRED");
    let r = receipt(&failed["receipt"]);
    assert_eq!(
        (r.body["status"].as_str(), r.links.len()),
        (Some("failed"), 0)
    );
    assert_eq!(balance(&h, "agent-1").await, (100_000, 0, 100_000));
    assert_eq!(h.fake.total_sends(), 0);
    h.ledger_conserved().await;
}

#[tokio::test]
async fn bad_withdrawals_get_typed_4xx_and_change_nothing() {
    let h = Hydra::start().await;
    fund(&h, "d1", "agent-1", 1_000_000).await;
    let before = footprint(&h).await;
    let good = h.fake.invoice(5_000, Network::Regtest, HOUR);
    let amountless = h.fake.invoice(0, Network::Regtest, HOUR);
    let base = |over: Value| {
        let mut b = json!({"idempotency_key": "k", "agent_id": "agent-1", "invoice": good, "max_fee_msat": "0"});
        for (k, v) in over.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        (
            base(json!({"idempotency_key": ""})),
            "INVALID_IDEMPOTENCY_KEY",
        ),
        (base(json!({"agent_id": ""})), "INVALID_AGENT_ID"),
        (
            base(json!({"agent_id": "x".repeat(65)})),
            "INVALID_AGENT_ID",
        ),
        (base(json!({"invoice": "lnbcrt1nope"})), "INVALID_INVOICE"),
        (base(json!({"invoice": ""})), "INVALID_INVOICE"),
        (
            base(json!({"invoice": h.fake.invoice(5_000, Network::Bitcoin, HOUR)})),
            "WRONG_NETWORK",
        ),
        (
            base(
                json!({"invoice": h.fake.invoice(5_000, Network::Regtest, Duration::from_secs(59))}),
            ),
            "INVOICE_EXPIRED",
        ),
        (base(json!({"invoice": amountless})), "AMOUNT_REQUIRED"),
        (base(json!({"amount_msat": "4999"})), "AMOUNT_MISMATCH"),
        (
            base(json!({"invoice": h.fake.invoice(1_000_000_001, Network::Regtest, HOUR)})),
            "AMOUNT_TOO_LARGE",
        ),
        (
            base(json!({"max_fee_msat": "2100000000000000001"})),
            "INVALID_AMOUNT",
        ),
        (base(json!({"amount_msat": "-1"})), "INVALID_REQUEST"),
        (
            base(json!({"onchain_address": "bcrt1q"})),
            "INVALID_REQUEST",
        ),
        ("{\"idempotency_key\": ".to_owned(), "MALFORMED_JSON"),
        ("[]".to_owned(), "INVALID_REQUEST"),
    ];
    for (body, want) in &cases {
        let (got, err) = h
            .call(
                "POST",
                "/v1/liquidity/withdraw",
                Some(&h.token.clone()),
                Some(body),
            )
            .await;
        assert_eq!(
            (got, code(&err)),
            (StatusCode::BAD_REQUEST, *want),
            "{body}: {err}"
        );
    }
    assert_eq!(footprint(&h).await, before);
    assert_eq!(h.fake.total_sends(), 0);
    // An amountless invoice with an amount is fine.
    let (status, w) = h
        .post(
            "/v1/liquidity/withdraw",
            json!({"idempotency_key": "k2", "agent_id": "agent-1", "invoice": amountless, "amount_msat": "3000"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{w}");
    assert_eq!(w["withdrawal"]["amount_msat"], "3000");
}

#[tokio::test]
async fn liquidity_pays_draw_from_the_pool_and_post_or_void() {
    pool_pays(&Hydra::start().await).await;
}

pub async fn pool_pays(h: &Hydra) {
    let pool0 = h.account("pool").await;
    h.fake.set_fee(300);
    let quote = |key: &'static str, amount: u64| async move {
        let inv = h.fake.invoice(amount, Network::Regtest, HOUR);
        let (status, q) = h
            .post(
                "/v1/liquidity/quote_pay",
                json!({"idempotency_key": key, "invoice": inv, "max_fee_msat": "20000", "payer_ref": "agent-1"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{q}");
        q["quote"]["quote_id"].as_str().unwrap().to_owned()
    };
    let q1 = quote("q1", 200_000).await;
    let (status, paid) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p1", "quote_id": q1}),
        )
        .await;
    assert_eq!(
        (status, paid["quote"]["state"].as_str()),
        (StatusCode::OK, Some("QUOTE_STATE_PAID"))
    );
    let pool1 = h.account("pool").await;
    assert_eq!(pool1.debits_posted_msat - pool0.debits_posted_msat, 200_300);
    assert_eq!(pool1.debits_pending_msat, pool0.debits_pending_msat);
    assert_eq!(h.account("payments").await.credits_posted_msat, 200_300);
    // A failed payment gives everything back.
    h.fake.set_mode(Mode::Fail);
    let q2 = quote("q2", 100_000).await;
    let (_, failed) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p2", "quote_id": q2}),
        )
        .await;
    assert_eq!(failed["quote"]["state"], "QUOTE_STATE_FAILED");
    assert_eq!(h.account("pool").await, pool1);
    // The status shows what the pool still has.
    let (_, st) = h
        .call("GET", "/v1/liquidity/status", Some(&h.token.clone()), None)
        .await;
    assert_eq!(
        st["pool_available_msat"],
        pool1.available_msat().to_string()
    );
    h.ledger_conserved().await;
}

#[tokio::test]
async fn a_pay_the_pool_cannot_cover_is_refused_and_the_quote_stays_open() {
    let h = Hydra::start_with(&["--credit-pool-msat=150000"]).await;
    let inv = h.fake.invoice(145_000, Network::Regtest, HOUR);
    let (_, q) = h
        .post(
            "/v1/liquidity/quote_pay",
            json!({"idempotency_key": "q1", "invoice": inv, "max_fee_msat": "20000"}),
        )
        .await;
    let qid = q["quote"]["quote_id"].as_str().unwrap().to_owned();
    // 145 000 + the 10 000 fee floor > 150 000.
    let (status, err) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p1", "quote_id": qid}),
        )
        .await;
    assert_eq!(
        (status, code(&err), err["error"]["reason_code"].as_str()),
        (
            StatusCode::CONFLICT,
            "INSUFFICIENT_LIQUIDITY",
            Some("POOL_EXHAUSTED")
        )
    );
    assert_eq!(h.fake.total_sends(), 0);
    assert_eq!(h.receipt_count().await, 0);
    let state: String = sqlx::query_scalar::<sqlx::Any, String>(
        "SELECT state FROM hydra_quotes WHERE quote_id = $1",
    )
    .bind(&qid)
    .fetch_one(h.app_db.pool())
    .await
    .unwrap();
    assert_eq!(state, "open");
    h.ledger_conserved().await;
}

/// Concurrent pays share the writer's transactions on SQLite; one the pool cannot cover fails
/// its batch, whose other pays are retried alone and still start, and the refused quote stays
/// open and payable once the pool has room again.
#[tokio::test]
async fn concurrent_pays_beyond_the_pool_refuse_only_what_does_not_fit() {
    // Each pay reserves 10 000 + the 10 000 fee floor: seven fit in 150 000, the eighth does not.
    let h = Hydra::start_with(&["--credit-pool-msat=150000"]).await;
    let mut quotes = Vec::new();
    for i in 0..8 {
        let inv = h.fake.invoice(10_000, Network::Regtest, HOUR);
        let (_, q) = h
            .post(
                "/v1/liquidity/quote_pay",
                json!({"idempotency_key": format!("q{i}"), "invoice": inv, "max_fee_msat": "20000"}),
            )
            .await;
        quotes.push(q["quote"]["quote_id"].as_str().unwrap().to_owned());
    }
    // The executor does not answer: every started pay keeps its reservation.
    h.fake.set_mode(Mode::Unavailable);
    let answers = futures::future::join_all(quotes.iter().enumerate().map(|(i, qid)| {
        h.post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": format!("p{i}"), "quote_id": qid}),
        )
    }))
    .await;
    let mut refused = Vec::new();
    for (i, (status, body)) in answers.into_iter().enumerate() {
        if status == StatusCode::OK {
            assert_eq!(body["quote"]["state"], "QUOTE_STATE_PAYING", "{body}");
        } else {
            assert_eq!(
                (status, code(&body)),
                (StatusCode::CONFLICT, "INSUFFICIENT_LIQUIDITY")
            );
            refused.push(i);
        }
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    h.ledger_conserved().await;
    // The executor answers again: the trackers finish the seven, and the eighth now fits.
    h.fake.set_mode(Mode::Pay);
    let i = refused[0];
    let paid = oa_testkit::wait_until(WAIT, POLL, || async {
        let (status, body) = h
            .post(
                "/v1/liquidity/pay",
                json!({"idempotency_key": format!("p{i}"), "quote_id": quotes[i]}),
            )
            .await;
        (status == StatusCode::OK && body["quote"]["state"] == "QUOTE_STATE_PAID").then_some(())
    })
    .await;
    assert!(
        paid.is_some(),
        "the refused quote is paid once the pool has room"
    );
    // The other seven are sent as their trackers' backoffs run out.
    let all_sent = oa_testkit::wait_until(WAIT, POLL, || async {
        (h.fake.total_sends() == 8).then_some(())
    })
    .await;
    assert!(all_sent.is_some(), "sends: {}", h.fake.total_sends());
    h.ledger_conserved().await;
}
