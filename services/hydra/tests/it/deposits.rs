//! Deposits: an invoice from the executor, credited once from the settlement stream, with a
//! receipt linking the executor's; the stream resumes from Hydra's cursor across dropped streams,
//! restarts and replicas.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use crate::{credit::code, fake::Mode, harness::Hydra};

pub const WAIT: Duration = Duration::from_secs(10);
pub const POLL: Duration = Duration::from_millis(20);

pub fn receipt(v: &Value) -> oa_receipts::Receipt {
    serde_json::from_value(v.clone()).unwrap()
}

/// Opens a deposit and returns its response.
pub async fn deposit(h: &Hydra, key: &str, agent: &str, amount: u64) -> Value {
    let (status, body) = h
        .post(
            "/v1/liquidity/deposit",
            json!({"idempotency_key": key, "agent_id": agent, "amount_msat": amount.to_string(), "method": "invoice"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until a deposit is credited; returns its response.
pub async fn credited(h: &Hydra, deposit_id: &str) -> Value {
    oa_testkit::wait_until(WAIT, POLL, || async {
        let (status, b) = h
            .call(
                "GET",
                &format!("/v1/liquidity/deposit/{deposit_id}"),
                Some(&h.token.clone()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{b}");
        (b["deposit"]["state"] == "DEPOSIT_STATE_CREDITED").then_some(b)
    })
    .await
    .unwrap_or_else(|| panic!("deposit {deposit_id} was not credited"))
}

/// Deposits `amount` for `agent` and waits for the credit.
pub async fn fund(h: &Hydra, key: &str, agent: &str, amount: u64) -> Value {
    let d = deposit(h, key, agent, amount).await;
    h.fake
        .settle(d["deposit"]["payment_hash"].as_str().unwrap(), amount);
    credited(h, d["deposit"]["deposit_id"].as_str().unwrap()).await
}

/// `GET /v1/liquidity/balance/{agent}`: (balance, reserved, available).
pub async fn balance(h: &Hydra, agent: &str) -> (u64, u64, u64) {
    let (status, b) = h
        .call(
            "GET",
            &format!("/v1/liquidity/balance/{agent}"),
            Some(&h.token.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let n = |k: &str| b[k].as_str().unwrap().parse::<u64>().unwrap();
    (n("balance_msat"), n("reserved_msat"), n("available_msat"))
}

/// What must not change when a deposit or withdrawal is refused.
pub async fn footprint(h: &Hydra) -> [i64; 7] {
    [
        h.count("hydra_deposits").await,
        h.count("hydra_withdrawals").await,
        h.count("receipts").await,
        h.count("idempotency_keys").await,
        h.count("ledger_transfers").await,
        h.count("ledger_accounts").await,
        h.count("events").await,
    ]
}

#[tokio::test]
async fn a_deposit_is_credited_once_with_a_receipt_linking_the_executors() {
    credit_once(&Hydra::start().await).await;
}

pub async fn credit_once(h: &Hydra) {
    let d = deposit(h, "d1", "agent-1", 250_000).await;
    let dep = &d["deposit"];
    assert_eq!(dep["state"], "DEPOSIT_STATE_OPEN");
    assert_eq!(dep["amount_msat"], "250000");
    assert_eq!(dep["method"], "invoice");
    let decoded = oa_invoice::decode(dep["invoice"].as_str().unwrap()).unwrap();
    assert_eq!(decoded.payment_hash.to_string(), dep["payment_hash"]);
    assert_eq!(decoded.amount.unwrap().as_u64(), 250_000);
    assert!(d["receipt"].is_null(), "{d}");
    // Replays: the same invoice, and the executor is not asked again.
    let asked = h.fake.create_invoice_calls();
    assert_eq!(deposit(h, "d1", "agent-1", 250_000).await, d);
    assert_eq!(h.fake.create_invoice_calls(), asked);
    // The same key for another request is a conflict, and asks the executor nothing.
    let (status, err) = h
        .post(
            "/v1/liquidity/deposit",
            json!({"idempotency_key": "d1", "agent_id": "agent-1", "amount_msat": "1", "method": "invoice"}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT")
    );
    assert_eq!(h.fake.create_invoice_calls(), asked);
    assert_eq!(balance(h, "agent-1").await, (0, 0, 0));

    // A payer overpays a little: what the node received is credited.
    let index = h
        .fake
        .settle(dep["payment_hash"].as_str().unwrap(), 250_001);
    let done = credited(h, dep["deposit_id"].as_str().unwrap()).await;
    assert_eq!(done["deposit"]["credited_msat"], "250001");
    assert_eq!(done["deposit"]["settle_index"], index.to_string());
    let mine = receipt(&done["receipt"]);
    let theirs = receipt(&done["executor_receipt"]);
    mine.verify().unwrap();
    theirs.verify().unwrap();
    assert_eq!(mine.schema, "oa.hydra.deposit_receipt.v1");
    assert_eq!(mine.links, vec![theirs.hash]);
    assert_eq!(mine.body["executor_receipt"], theirs.hash.to_string());
    assert_eq!(mine.body["status"], "credited");
    assert_eq!(mine.body["agent_id"], "agent-1");
    for field in ["payment_hash", "amount_paid_msat", "settle_index"] {
        assert_eq!(mine.body[field], theirs.body[field], "{field}");
    }
    assert_eq!(mine.idempotency_key, "d1");
    assert_eq!(balance(h, "agent-1").await, (250_001, 0, 250_001));

    // The stream is cut and replayed from the start by a confused executor: nothing is
    // credited twice (the cursor and the guarded state both hold).
    h.fake.cut_streams();
    h.fake.settle_foreign(5_000);
    let want = (index + 1).to_string();
    oa_testkit::wait_until(WAIT, POLL, || async {
        let (_, o) = h
            .call(
                "GET",
                "/internal/v1/hydra/observability",
                Some(&h.token.clone()),
                None,
            )
            .await;
        (o["deposit_settle_index"] == want.as_str()).then_some(())
    })
    .await
    .expect("the follower resubscribed and moved past the foreign settlement");
    assert_eq!(h.receipts_of("oa.hydra.deposit_receipt.v1").await.len(), 1);
    assert_eq!(balance(h, "agent-1").await.0, 250_001);
    assert_eq!(h.account("deposits").await.debits_posted_msat, 250_001);
    h.ledger_conserved().await;
    let report = h.audit(None).await;
    assert!(report.is_ok(), "{:?}", report.failures);
}

#[tokio::test]
async fn the_follower_resumes_from_its_cursor_after_a_restart() {
    let h = Hydra::start().await;
    let a = deposit(&h, "a", "agent-1", 10_000).await;
    let b = deposit(&h, "b", "agent-2", 20_000).await;
    h.fake
        .settle(a["deposit"]["payment_hash"].as_str().unwrap(), 10_000);
    credited(&h, a["deposit"]["deposit_id"].as_str().unwrap()).await;
    // Hydra goes down; meanwhile a foreign invoice and deposit b settle.
    let h = {
        h.hydra.stop();
        h
    };
    h.fake.settle_foreign(1_000);
    h.fake
        .settle(b["deposit"]["payment_hash"].as_str().unwrap(), 20_000);
    let h = h.restart().await;
    credited(&h, b["deposit"]["deposit_id"].as_str().unwrap()).await;
    // The restarted follower asked for what came after the stored cursor, not from the start:
    // index 1, or later if the stopping follower saw more before it ended (`stop` signals it and
    // does not wait, so under load it may store the foreign settlement's index 2 first).
    let from = *h.fake.subscribed_from().last().unwrap();
    assert!(from >= 1, "resubscribed from {from}");
    assert_eq!(balance(&h, "agent-1").await.0, 10_000);
    assert_eq!(balance(&h, "agent-2").await.0, 20_000);
    assert_eq!(h.receipts_of("oa.hydra.deposit_receipt.v1").await.len(), 2);
    h.ledger_conserved().await;
}

#[tokio::test]
async fn two_replicas_credit_each_settlement_exactly_once() {
    replicas(&Hydra::start().await).await;
}

pub async fn replicas(h: &Hydra) {
    let other = h.replica().await;
    let mut ids = Vec::new();
    for i in 0..12u64 {
        let who = if i % 2 == 0 { h } else { &other };
        let d = deposit(
            who,
            &format!("d{i}"),
            &format!("agent-{}", i % 3),
            1_000 + i,
        )
        .await;
        ids.push(d["deposit"]["deposit_id"].as_str().unwrap().to_owned());
        h.fake
            .settle(d["deposit"]["payment_hash"].as_str().unwrap(), 1_000 + i);
        if i % 4 == 0 {
            h.fake.settle_foreign(7);
            h.fake.cut_streams();
        }
    }
    for id in &ids {
        credited(h, id).await;
    }
    let total: u64 = (0..12u64).map(|i| 1_000 + i).sum();
    assert_eq!(h.receipts_of("oa.hydra.deposit_receipt.v1").await.len(), 12);
    assert_eq!(h.account("deposits").await.debits_posted_msat, total);
    let balances: u64 = [
        balance(h, "agent-0").await.0,
        balance(h, "agent-1").await.0,
        balance(h, "agent-2").await.0,
    ]
    .iter()
    .sum();
    assert_eq!(balances, total);
    other.hydra.stop();
    h.ledger_conserved().await;
}

#[tokio::test]
async fn a_settlement_with_a_forged_receipt_is_never_credited() {
    let h = Hydra::start().await;
    let d = deposit(&h, "d1", "agent-1", 10_000).await;
    h.fake.set_mode(Mode::Forge);
    h.fake
        .settle(d["deposit"]["payment_hash"].as_str().unwrap(), 10_000);
    // The follower keeps failing on it (and retrying); it never credits nor skips it.
    let credited_anyway = oa_testkit::wait_until(Duration::from_millis(500), POLL, || async {
        let (_, b) = h
            .call(
                "GET",
                &format!(
                    "/v1/liquidity/deposit/{}",
                    d["deposit"]["deposit_id"].as_str().unwrap()
                ),
                Some(&h.token.clone()),
                None,
            )
            .await;
        (b["deposit"]["state"] != "DEPOSIT_STATE_OPEN").then_some(b)
    })
    .await;
    assert!(credited_anyway.is_none(), "{credited_anyway:?}");
    assert!(h.fake.subscribed_from().len() >= 2, "the follower retries");
    assert!(h.fake.subscribed_from().iter().all(|from| *from == 0));
    assert_eq!(balance(&h, "agent-1").await, (0, 0, 0));
    assert_eq!(h.receipt_count().await, 0);
}

#[tokio::test]
async fn onchain_deposits_are_not_supported_and_bad_deposits_change_nothing() {
    let h = Hydra::start().await;
    fund(&h, "seed", "agent-1", 1_000).await;
    let before = footprint(&h).await;
    let base = |over: Value| {
        let mut b = json!({"idempotency_key": "k", "agent_id": "agent-1", "amount_msat": "1000", "method": "invoice"});
        for (k, v) in over.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            base(json!({"method": "onchain"})),
            StatusCode::NOT_IMPLEMENTED,
            "NOT_SUPPORTED",
        ),
        (
            base(json!({"method": "cash"})),
            StatusCode::BAD_REQUEST,
            "INVALID_METHOD",
        ),
        (
            base(json!({"method": ""})),
            StatusCode::BAD_REQUEST,
            "INVALID_METHOD",
        ),
        (
            base(json!({"idempotency_key": ""})),
            StatusCode::BAD_REQUEST,
            "INVALID_IDEMPOTENCY_KEY",
        ),
        (
            base(json!({"idempotency_key": "a b"})),
            StatusCode::BAD_REQUEST,
            "INVALID_IDEMPOTENCY_KEY",
        ),
        (
            base(json!({"agent_id": ""})),
            StatusCode::BAD_REQUEST,
            "INVALID_AGENT_ID",
        ),
        (
            base(json!({"agent_id": "a/b"})),
            StatusCode::BAD_REQUEST,
            "INVALID_AGENT_ID",
        ),
        (
            base(json!({"amount_msat": "0"})),
            StatusCode::BAD_REQUEST,
            "INVALID_AMOUNT",
        ),
        (
            base(json!({"amount_msat": "1000000001"})),
            StatusCode::BAD_REQUEST,
            "INVALID_AMOUNT",
        ),
        (
            base(json!({"amount_msat": "2100000000000000001"})),
            StatusCode::BAD_REQUEST,
            "INVALID_AMOUNT",
        ),
        (
            base(json!({"amount_msat": "-5"})),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            base(json!({"amount_msat": 1.5})),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            base(json!({"expiry_secs": 86_401})),
            StatusCode::BAD_REQUEST,
            "INVALID_EXPIRY",
        ),
        (
            base(json!({"surprise": 1})),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "{\"idempotency_key\": ".to_owned(),
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        ),
        ("[]".to_owned(), StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
    ];
    let asked = h.fake.create_invoice_calls();
    for (body, status, want) in &cases {
        let (got, err) = h
            .call(
                "POST",
                "/v1/liquidity/deposit",
                Some(&h.token.clone()),
                Some(body),
            )
            .await;
        assert_eq!((got, code(&err)), (*status, *want), "{body}: {err}");
    }
    assert_eq!(h.fake.create_invoice_calls(), asked);
    // The executor down: a typed 503, nothing recorded, and the key is still free.
    h.fake.set_mode(Mode::Unavailable);
    let (got, err) = h
        .call(
            "POST",
            "/v1/liquidity/deposit",
            Some(&h.token.clone()),
            Some(&base(json!({}))),
        )
        .await;
    assert_eq!(
        (got, code(&err)),
        (StatusCode::SERVICE_UNAVAILABLE, "EXECUTOR_UNAVAILABLE")
    );
    assert_eq!(footprint(&h).await, before);
    h.fake.set_mode(Mode::Pay);
    deposit(&h, "k", "agent-1", 1_000).await;
    // Reads of unknown records.
    for path in [
        "/v1/liquidity/deposit/dep_missing",
        "/v1/liquidity/withdraw/wd_missing",
    ] {
        let (got, err) = h.call("GET", path, Some(&h.token.clone()), None).await;
        assert_eq!(got, StatusCode::NOT_FOUND, "{path}: {err}");
    }
    let (got, err) = h
        .call(
            "GET",
            "/v1/liquidity/balance/a%20b",
            Some(&h.token.clone()),
            None,
        )
        .await;
    assert_eq!(
        (got, code(&err)),
        (StatusCode::BAD_REQUEST, "INVALID_AGENT_ID")
    );
}

#[tokio::test]
async fn deposit_and_withdraw_routes_refuse_bad_tokens() {
    let h = Hydra::start().await;
    let treasury = h.ring.identity("treasury").unwrap();
    let expired = treasury
        .mint_at(
            "hydra",
            &["hydra:liquidity"],
            Duration::from_secs(60),
            oa_auth::unix_now_secs() - 3_600,
        )
        .unwrap();
    let wrong_aud = treasury
        .mint("treasury", &["hydra:liquidity"], Duration::from_secs(60))
        .unwrap();
    let read_only = h.token_with(&["hydra:read"]);
    let no_scope = h
        .ring
        .operator_token("hydra", &["receipts:read"], Duration::from_secs(60))
        .unwrap();
    let body = json!({"idempotency_key": "k", "agent_id": "agent-1"}).to_string();
    for (method, path, read_ok) in [
        ("POST", "/v1/liquidity/deposit", false),
        ("POST", "/v1/liquidity/withdraw", false),
        ("GET", "/v1/liquidity/deposit/dep_x", true),
        ("GET", "/v1/liquidity/withdraw/wd_x", true),
        ("GET", "/v1/liquidity/balance/agent-1", true),
        ("GET", "/internal/v1/hydra/observability", true),
    ] {
        let b = (method == "POST").then_some(body.as_str());
        for (token, want) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some(expired.as_str()), StatusCode::UNAUTHORIZED),
            (Some(wrong_aud.as_str()), StatusCode::UNAUTHORIZED),
            (Some(no_scope.as_str()), StatusCode::FORBIDDEN),
        ] {
            let (status, err) = h.call(method, path, token, b).await;
            assert_eq!(status, want, "{method} {path} {token:?}: {err}");
            assert!(err["error"]["code"].is_string());
        }
        let (status, _) = h.call(method, path, Some(&read_only), b).await;
        if read_ok {
            assert_ne!(status, StatusCode::FORBIDDEN, "{path}");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        }
    }
    assert_eq!(footprint(&h).await[..4], [0, 0, 0, 0]);
}
