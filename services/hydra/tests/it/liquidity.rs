use std::time::Duration;

use http::StatusCode;
use oa_invoice::Network;
use serde_json::{Value, json};

use crate::{fake::Mode, harness::Hydra};

const HOUR: Duration = Duration::from_secs(3600);

async fn quote(h: &Hydra, key: &str, invoice: &str, max_fee: u64) -> Value {
    let (status, body) = h.post("/v1/liquidity/quote_pay", json!({"idempotency_key": key, "invoice": invoice, "max_fee_msat": max_fee.to_string(), "payer_ref": "agent-1"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["quote"].clone()
}

fn receipt(v: &Value) -> oa_receipts::Receipt {
    serde_json::from_value(v.clone()).unwrap()
}

#[tokio::test]
async fn quotes_and_pays_once_with_linked_receipts() {
    quote_and_pay(&Hydra::start().await).await;
}

pub async fn quote_and_pay(h: &Hydra) {
    let inv = h.fake.invoice(200_000, Network::Regtest, HOUR);
    let q = quote(h, "q1", &inv, 20_000).await;
    assert_eq!(q["state"], "QUOTE_STATE_OPEN");
    assert_eq!(q["amount_msat"], "200000");
    // max(floor 10_000, 5000 ppm of 200_000 = 1_000) = 10_000, under the caller's max fee.
    assert_eq!(q["fee_limit_msat"], "10000");
    // The caller's max fee caps it.
    let capped = quote(
        h,
        "q2",
        &h.fake.invoice(200_000, Network::Regtest, HOUR),
        700,
    )
    .await;
    assert_eq!(capped["fee_limit_msat"], "700");
    let qid = q["quote_id"].as_str().unwrap();

    let (status, paid) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p1", "quote_id": qid}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["quote"]["state"], "QUOTE_STATE_PAID");
    let mine = receipt(&paid["receipt"]);
    let theirs = receipt(&paid["executor_receipt"]);
    mine.verify().unwrap();
    theirs.verify().unwrap();
    assert_eq!(mine.schema, "oa.hydra.invoice_pay_receipt.v1");
    assert_eq!(mine.links, vec![theirs.hash]);
    assert_eq!(mine.body["payment_hash"], theirs.body["payment_hash"]);
    assert_eq!(mine.body["amount_msat"], "200000");
    let preimage: oa_invoice::Preimage = paid["preimage"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        preimage.payment_hash().to_string(),
        q["payment_hash"].as_str().unwrap()
    );

    // Replays: same response, no second send.
    let (_, again) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p1", "quote_id": qid}),
        )
        .await;
    assert_eq!(again, paid);
    // The quote is replayed as it was issued (open), though it is paid now.
    let (_, q_again) = h.post("/v1/liquidity/quote_pay", json!({"idempotency_key": "q1", "invoice": inv, "max_fee_msat": "20000", "payer_ref": "agent-1"})).await;
    assert_eq!(q_again["quote"], q);
    let (status, err) = h.post("/v1/liquidity/quote_pay", json!({"idempotency_key": "q1", "invoice": inv, "max_fee_msat": "20001", "payer_ref": "agent-1"})).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("IDEMPOTENCY_CONFLICT"))
    );
    // A new key for a used quote is refused.
    let (status, err) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p2", "quote_id": qid}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("QUOTE_ALREADY_USED"))
    );
    // The same key with a different body is a conflict.
    let (status, err) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p1", "quote_id": "q_other"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("IDEMPOTENCY_CONFLICT"))
    );
    // ... also when that other quote exists and is open: it stays open and payable.
    let (status, err) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p1", "quote_id": capped["quote_id"]}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("IDEMPOTENCY_CONFLICT"))
    );
    assert_eq!(h.fake.total_sends(), 1);
    let (status, other) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p3", "quote_id": capped["quote_id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{other}");
    assert_eq!(other["quote"]["state"], "QUOTE_STATE_PAID");
    assert_eq!(h.fake.total_sends(), 2);
}

#[tokio::test]
async fn an_expired_quote_is_refused_and_nothing_is_sent() {
    let h = Hydra::start().await;
    let inv = h.fake.invoice(1_000, Network::Regtest, HOUR);
    let q = quote(&h, "q1", &inv, 0).await;
    assert_eq!(q["fee_limit_msat"], "0");
    h.clock.advance(61_000);
    let (status, err) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p1", "quote_id": q["quote_id"]}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("QUOTE_EXPIRED"))
    );
    assert_eq!(h.fake.total_sends(), 0);
    // The refusal recorded nothing: the key is still free.
    let (status, err) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p1", "quote_id": "q_missing"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("QUOTE_NOT_FOUND"))
    );
}

#[tokio::test]
async fn concurrent_pays_of_one_quote_make_one_payment() {
    concurrent_pays(&Hydra::start().await).await;
}

pub async fn concurrent_pays(h: &Hydra) {
    let inv = h.fake.invoice(5_000, Network::Regtest, HOUR);
    let q = quote(h, "q1", &inv, 1_000).await;
    let qid = q["quote_id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let body = json!({"idempotency_key": format!("p{}", i % 8), "quote_id": qid});
        let router = h.router.clone();
        let token = h.token.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::builder()
                .method("POST")
                .uri("/v1/liquidity/pay")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            tower::ServiceExt::oneshot(router, req)
                .await
                .unwrap()
                .status()
        }));
    }
    let statuses: Vec<StatusCode> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    assert_eq!(h.fake.total_sends(), 1);
    // Exactly one key won the quote (which one depends on scheduling: on PostgreSQL any may);
    // it replays the payment, and every other key is told the quote was used.
    let mut winners = 0;
    for k in 0..8 {
        let (_, paid) = h
            .post(
                "/v1/liquidity/pay",
                json!({"idempotency_key": format!("p{k}"), "quote_id": qid}),
            )
            .await;
        if paid["quote"]["state"] == "QUOTE_STATE_PAID" {
            winners += 1;
        } else {
            assert_eq!(paid["error"]["code"], "QUOTE_ALREADY_USED", "{paid}");
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(h.receipt_count().await, 1);
}

#[tokio::test]
async fn an_unreachable_executor_leaves_the_quote_paying_until_it_answers() {
    let h = Hydra::start().await;
    let inv = h.fake.invoice(5_000, Network::Regtest, HOUR);
    let q = quote(&h, "q1", &inv, 1_000).await;
    h.fake.set_mode(Mode::Unavailable);
    let (status, body) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p1", "quote_id": q["quote_id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["quote"]["state"], "QUOTE_STATE_PAYING");
    assert!(body.get("receipt").is_none());
    let (_, status_body) = h
        .call("GET", "/v1/liquidity/status", Some(&h.token.clone()), None)
        .await;
    assert_eq!(status_body["executor_reachable"], false);
    h.fake.set_mode(Mode::Pay);
    let done = oa_testkit::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(25),
        || async {
            let (_, b) = h
                .post(
                    "/v1/liquidity/pay",
                    json!({"idempotency_key": "p1", "quote_id": q["quote_id"]}),
                )
                .await;
            (b["quote"]["state"] == "QUOTE_STATE_PAID").then_some(b)
        },
    )
    .await
    .expect("tracker completes the payment");
    receipt(&done["receipt"]).verify().unwrap();
    assert_eq!(h.fake.sends(q["payment_hash"].as_str().unwrap()), 1);
}

#[tokio::test]
async fn a_forged_executor_receipt_is_never_recorded_as_paid() {
    let h = Hydra::start().await;
    let inv = h.fake.invoice(5_000, Network::Regtest, HOUR);
    let q = quote(&h, "q1", &inv, 1_000).await;
    h.fake.set_mode(Mode::Forge);
    let (status, _) = h
        .post(
            "/v1/liquidity/pay",
            json!({"idempotency_key": "p1", "quote_id": q["quote_id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(h.receipt_count().await, 0);
}

#[tokio::test]
async fn bad_input_is_a_typed_4xx_and_records_nothing() {
    let h = Hydra::start().await;
    let good = h.fake.invoice(5_000, Network::Regtest, HOUR);
    let invalid: Value = serde_json::from_str(
        &std::fs::read_to_string(vectors().join("bolt11/invalid.json")).unwrap(),
    )
    .unwrap();
    let mut cases: Vec<(String, &str)> = invalid["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                json!({"idempotency_key": "k", "invoice": c["invoice"]}).to_string(),
                "INVALID_INVOICE",
            )
        })
        .collect();
    let mainnet = h.fake.invoice(5_000, Network::Bitcoin, HOUR);
    let short_lived = h
        .fake
        .invoice(5_000, Network::Regtest, Duration::from_secs(30));
    let amountless = h.fake.invoice(0, Network::Regtest, HOUR);
    cases.extend([
        (json!({"idempotency_key": "k", "invoice": mainnet}).to_string(), "WRONG_NETWORK"),
        (json!({"idempotency_key": "k", "invoice": short_lived}).to_string(), "INVOICE_EXPIRED"),
        (json!({"idempotency_key": "k", "invoice": amountless}).to_string(), "AMOUNT_REQUIRED"),
        (json!({"idempotency_key": "k", "invoice": good, "amount_msat": "-1"}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "invoice": good, "max_fee_msat": "18446744073709551616"}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "invoice": good, "max_fee_msat": "18446744073709551615"}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "invoice": good, "surprise": true}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "", "invoice": good}).to_string(), "INVALID_IDEMPOTENCY_KEY"),
        ("{\"idempotency_key\": ".to_owned(), "MALFORMED_JSON"),
        ("[]".to_owned(), "INVALID_REQUEST"),
    ]);
    for (body, code) in &cases {
        let (status, err) = h
            .call(
                "POST",
                "/v1/liquidity/quote_pay",
                Some(&h.token.clone()),
                Some(body),
            )
            .await;
        assert!(status.is_client_error(), "{body}: {status}");
        assert_eq!(err["error"]["code"], *code, "{body}");
    }
    let (status, err) = h
        .call(
            "POST",
            "/v1/liquidity/pay",
            Some(&h.token.clone()),
            Some("{\"quote_id\": 5}"),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST"))
    );
    assert_eq!(h.quote_count().await, 0);
    assert_eq!(h.receipt_count().await, 0);
}

#[tokio::test]
async fn every_mutation_route_refuses_bad_tokens() {
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
    let no_scope = h
        .ring
        .operator_token("hydra", &["receipts:read"], Duration::from_secs(60))
        .unwrap();
    let body = json!({"idempotency_key": "k", "invoice": "x"}).to_string();
    for path in ["/v1/liquidity/quote_pay", "/v1/liquidity/pay"] {
        for (token, want) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some(expired.as_str()), StatusCode::UNAUTHORIZED),
            (Some(wrong_aud.as_str()), StatusCode::UNAUTHORIZED),
            (Some(no_scope.as_str()), StatusCode::FORBIDDEN),
        ] {
            let (status, err) = h.call("POST", path, token, Some(&body)).await;
            assert_eq!(status, want, "{path} {token:?}: {err}");
            assert!(err["error"]["code"].is_string());
        }
    }
}

#[tokio::test]
async fn unbuilt_routes_answer_not_supported_and_standard_routes_exist() {
    let h = Hydra::start().await;
    // On-chain deposits are part of the contract but not offered (see deposits.rs).
    let (status, err) = h
        .post(
            "/v1/liquidity/deposit",
            json!({"idempotency_key": "k", "agent_id": "a", "amount_msat": "1000", "method": "onchain"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_IMPLEMENTED, Some("NOT_SUPPORTED"))
    );
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/stats",
        "/openapi.json",
        "/v1/receipts/keys",
    ] {
        let (status, _) = h.call("GET", path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let (_, doc) = h.call("GET", "/openapi.json", None, None).await;
    assert!(doc["paths"]["/v1/liquidity/quote_pay"]["post"].is_object());
    for (path, method, schema) in [
        (
            "/v1/credit/intent",
            "post",
            "openagents.hydra.v1.CreditIntentRequest",
        ),
        (
            "/v1/credit/settle",
            "post",
            "openagents.hydra.v1.CreditSettleRequest",
        ),
        (
            "/v1/routing/score",
            "post",
            "openagents.hydra.v1.RoutingScoreRequest",
        ),
        (
            "/v1/fx/settle",
            "post",
            "openagents.hydra.v1.FxSettleRequest",
        ),
        (
            "/internal/v1/hydra/risk/health",
            "get",
            "openagents.hydra.v1.RiskHealthResponse",
        ),
        (
            "/v1/liquidity/deposit",
            "post",
            "openagents.hydra.v1.DepositRequest",
        ),
        (
            "/v1/liquidity/withdraw",
            "post",
            "openagents.hydra.v1.WithdrawRequest",
        ),
        (
            "/v1/liquidity/withdraw/{withdrawal_id}",
            "get",
            "openagents.hydra.v1.WithdrawResponse",
        ),
        (
            "/internal/v1/hydra/observability",
            "get",
            "openagents.hydra.v1.ObservabilityResponse",
        ),
    ] {
        assert!(
            doc["paths"][path][method]["responses"]["200"].is_object(),
            "{path}"
        );
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    let (status, err) = h.call("GET", "/v1/nope", None, None).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
}

fn vectors() -> std::path::PathBuf {
    oa_testkit::vectors_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
}
