use std::time::Duration;

use http::StatusCode;
use oa_invoice::Network;
use serde_json::json;

use crate::{
    fake::Mode,
    harness::{Treasury, invoice},
};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn pays_within_budget_and_settles_to_the_actual_amount() {
    let t = Treasury::start(100_000).await;
    let inv = invoice(50_000, Network::Regtest, HOUR);
    let (status, body) = t.pay("k1", "agent-1", &inv, 1_000).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let p = &body["payment"];
    assert_eq!(p["state"], "PAYMENT_STATE_SUCCEEDED");
    assert_eq!(p["fee_msat"], "7");
    let receipt: oa_receipts::Receipt = serde_json::from_value(body["receipt"].clone()).unwrap();
    receipt.verify().unwrap();
    assert_eq!(receipt.schema, "oa.treasury.payment_attempt_receipt.v1");
    assert_eq!(receipt.links.len(), 1, "links hydra's receipt");
    assert_eq!(receipt.body["hydra_receipt"], receipt.links[0].to_string());
    assert_eq!(receipt.body["decision_rule"], "agent_budget");
    // Reserved 51_000, spent 50_007, released the rest.
    let b = t.budget("agent-1").await;
    assert_eq!(
        (
            b["spent_msat"].as_str(),
            b["reserved_msat"].as_str(),
            b["available_msat"].as_str()
        ),
        (Some("50007"), Some("0"), Some("49993"))
    );

    let (status2, again) = t.pay("k1", "agent-1", &inv, 1_000).await;
    assert_eq!((status2, &again), (status, &body));
    let (status, err) = t.pay("k1", "agent-1", &inv, 2_000).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("IDEMPOTENCY_CONFLICT"))
    );
    assert_eq!(t.hydra.pays(), 1);
    let id = p["payment_id"].as_str().unwrap();
    let (status, got) = t
        .call(
            "GET",
            &format!("/v1/treasury/payments/{id}"),
            Some(&t.token.clone()),
            None,
        )
        .await;
    assert_eq!((status, &got), (StatusCode::OK, &body));
}

#[tokio::test]
async fn a_payment_over_budget_is_denied_with_a_receipt_and_replayed() {
    let t = Treasury::start(10_000).await;
    let inv = invoice(9_500, Network::Regtest, HOUR);
    let (status, err) = t.pay("k1", "agent-1", &inv, 1_000).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["code"], "BUDGET_EXCEEDED");
    assert_eq!(err["error"]["reason_code"], "agent_budget_exceeded");
    let id = err["error"]["details"]["payment_id"].as_str().unwrap();
    let (_, got) = t
        .call(
            "GET",
            &format!("/v1/treasury/payments/{id}"),
            Some(&t.token.clone()),
            None,
        )
        .await;
    assert_eq!(got["payment"]["state"], "PAYMENT_STATE_DENIED");
    let receipt: oa_receipts::Receipt = serde_json::from_value(got["receipt"].clone()).unwrap();
    receipt.verify().unwrap();
    assert_eq!(receipt.body["state"], "denied");
    assert_eq!(t.pay("k1", "agent-1", &inv, 1_000).await, (status, err));
    assert_eq!(t.hydra.pays(), 0);
    assert_eq!(t.budget("agent-1").await["reserved_msat"], "0");

    // No budget at all: denied with its own reason.
    let t = Treasury::start(0).await;
    let (_, err) = t
        .pay("k1", "nobody", &invoice(1_000, Network::Regtest, HOUR), 0)
        .await;
    assert_eq!(err["error"]["reason_code"], "no_budget");
}

#[tokio::test]
async fn a_failed_payment_releases_its_reservation() {
    let t = Treasury::start(100_000).await;
    t.hydra.set_mode(Mode::FailPayment);
    let (status, body) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(20_000, Network::Regtest, HOUR),
            500,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["payment"]["state"], "PAYMENT_STATE_FAILED");
    assert_eq!(body["payment"]["failure_code"], "NO_ROUTE");
    let b = t.budget("agent-1").await;
    assert_eq!(
        (b["spent_msat"].as_str(), b["reserved_msat"].as_str()),
        (Some("0"), Some("0"))
    );
}

#[tokio::test]
async fn hydra_down_is_retryable_and_reserves_nothing() {
    let t = Treasury::start(100_000).await;
    t.hydra.set_mode(Mode::Down);
    let inv = invoice(20_000, Network::Regtest, HOUR);
    let (status, err) = t.pay("k1", "agent-1", &inv, 500).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err["error"]["code"], "HYDRA_UNAVAILABLE");
    assert_eq!(err["error"]["retryable"], true);
    assert_eq!(t.budget("agent-1").await["reserved_msat"], "0");
    assert_eq!(t.count("treasury_payments").await, 0);
    assert_eq!(t.count("receipts").await, 0);
    // The same key works once Hydra is back.
    t.hydra.set_mode(Mode::Pay);
    let (status, body) = t.pay("k1", "agent-1", &inv, 500).await;
    assert_eq!(
        (status, body["payment"]["state"].as_str()),
        (StatusCode::CREATED, Some("PAYMENT_STATE_SUCCEEDED"))
    );
}

#[tokio::test]
async fn concurrent_payments_never_exceed_the_budget() {
    let t = Treasury::start(100_000).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let inv = invoice(9_000, Network::Regtest, HOUR);
        let (router, token) = (t.router.clone(), t.token.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"idempotency_key": format!("k{i}"), "agent_id": "agent-1", "invoice": inv, "max_fee_msat": "100"});
            let req = http::Request::builder()
                .method("POST")
                .uri("/v1/treasury/payments")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            tower::ServiceExt::oneshot(router, req).await.unwrap().status()
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::CREATED => ok += 1,
            StatusCode::FORBIDDEN => {}
            other => panic!("unexpected {other}"),
        }
    }
    // 9_100 reserved each: 10 fit in 100_000 (91_000), the 11th would not.
    assert_eq!(ok, 10);
    let b = t.budget("agent-1").await;
    let spent: u64 = b["spent_msat"].as_str().unwrap().parse().unwrap();
    assert_eq!(spent, 10 * 9_007);
    assert_eq!(b["reserved_msat"], "0");
    assert_eq!(t.hydra.pays(), 10);
    t.ledger_conserved().await;
}

#[tokio::test]
async fn bad_input_is_a_typed_4xx_and_changes_nothing() {
    let t = Treasury::start(100_000).await;
    let good = invoice(1_000, Network::Regtest, HOUR);
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(vectors().join("bolt11/invalid.json")).unwrap(),
    )
    .unwrap();
    let mut cases: Vec<(String, &str)> = vectors["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                json!({"idempotency_key": "k", "agent_id": "a", "invoice": c["invoice"]})
                    .to_string(),
                "INVALID_INVOICE",
            )
        })
        .collect();
    cases.extend([
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": invoice(1_000, Network::Regtest, Duration::from_secs(5))}).to_string(), "INVOICE_EXPIRED"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": invoice(1_000, Network::Testnet, HOUR)}).to_string(), "WRONG_NETWORK"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": invoice(0, Network::Regtest, HOUR)}).to_string(), "AMOUNT_REQUIRED"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": good, "amount_msat": "-5"}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": good, "max_fee_msat": "99999999999999999999"}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": good, "max_fee_msat": "18000000000000000000"}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": good, "tip": "1"}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "agent_id": "", "invoice": good}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "agent_id": "a b", "invoice": good}).to_string(), "INVALID_REQUEST"),
        (json!({"agent_id": "a", "invoice": good}).to_string(), "INVALID_IDEMPOTENCY_KEY"),
        ("not json".to_owned(), "MALFORMED_JSON"),
    ]);
    for (body, code) in &cases {
        let (status, err) = t
            .call(
                "POST",
                "/v1/treasury/payments",
                Some(&t.token.clone()),
                Some(body),
            )
            .await;
        assert!(status.is_client_error(), "{body}: {status}");
        assert_eq!(err["error"]["code"], *code, "{body}");
    }
    for table in [
        "treasury_payments",
        "receipts",
        "treasury_budgets",
        "idempotency_keys",
    ] {
        assert_eq!(t.count(table).await, 0, "{table}");
    }
    assert_eq!(t.hydra.pays(), 0);
}

#[tokio::test]
async fn every_mutation_route_refuses_bad_tokens() {
    let t = Treasury::start(100_000).await;
    let op = t.ring.identity("operator").unwrap();
    let expired = op
        .mint_at(
            "treasury",
            &["treasury:pay", "treasury:admin"],
            Duration::from_secs(60),
            oa_auth::unix_now_secs() - 3_600,
        )
        .unwrap();
    let wrong_aud = op
        .mint(
            "hydra",
            &["treasury:pay", "treasury:admin"],
            Duration::from_secs(60),
        )
        .unwrap();
    let read_only = op
        .mint("treasury", &["treasury:read"], Duration::from_secs(60))
        .unwrap();
    // Hydra's key may not grant treasury scopes at all.
    let overreach = t
        .ring
        .identity("hydra")
        .unwrap()
        .mint("treasury", &["treasury:pay"], Duration::from_secs(60))
        .unwrap();
    for (method, path, body) in [
        (
            "POST",
            "/v1/treasury/payments",
            json!({"idempotency_key": "k"}),
        ),
        (
            "PUT",
            "/v1/treasury/budgets/agent-1",
            json!({"idempotency_key": "k", "limit_msat": "5"}),
        ),
    ] {
        for (token, want) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some(expired.as_str()), StatusCode::UNAUTHORIZED),
            (Some(wrong_aud.as_str()), StatusCode::UNAUTHORIZED),
            (Some(read_only.as_str()), StatusCode::FORBIDDEN),
            (Some(overreach.as_str()), StatusCode::FORBIDDEN),
        ] {
            let (status, err) = t.call(method, path, token, Some(&body.to_string())).await;
            assert_eq!(status, want, "{method} {path}: {err}");
        }
    }
    assert_eq!(t.count("treasury_budgets").await, 0);
}

#[tokio::test]
async fn budgets_are_set_idempotently() {
    let t = Treasury::start(0).await;
    let body = json!({"idempotency_key": "b1", "limit_msat": "5000"}).to_string();
    let (status, b) = t
        .call(
            "PUT",
            "/v1/treasury/budgets/agent-9",
            Some(&t.token.clone()),
            Some(&body),
        )
        .await;
    assert_eq!(
        (status, b["available_msat"].as_str()),
        (StatusCode::OK, Some("5000"))
    );
    let other = json!({"idempotency_key": "b1", "limit_msat": "6000"}).to_string();
    let (status, _) = t
        .call(
            "PUT",
            "/v1/treasury/budgets/agent-9",
            Some(&t.token.clone()),
            Some(&other),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = t
        .call(
            "POST",
            "/v1/treasury/policy/evaluate",
            Some(&t.token.clone()),
            Some("{}"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn a_limit_cannot_go_below_what_is_spent() {
    let t = Treasury::start(0).await;
    let put =
        |key: &str, limit: &str| json!({"idempotency_key": key, "limit_msat": limit}).to_string();
    let url = "/v1/treasury/budgets/agent-1";
    let (status, _) = t
        .call(
            "PUT",
            url,
            Some(&t.token.clone()),
            Some(&put("b1", "100000")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(60_000, Network::Regtest, HOUR),
            1_000,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // 60_007 spent: a 50_000 limit is refused, 70_000 is fine, and the figures stay consistent.
    let (status, err) = t
        .call(
            "PUT",
            url,
            Some(&t.token.clone()),
            Some(&put("b2", "50000")),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("BUDGET_IN_USE"))
    );
    let (status, b) = t
        .call(
            "PUT",
            url,
            Some(&t.token.clone()),
            Some(&put("b3", "70000")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let figures = (
        b["limit_msat"].as_str(),
        b["spent_msat"].as_str(),
        b["available_msat"].as_str(),
    );
    assert_eq!(figures, (Some("70000"), Some("60007"), Some("9993")));
    t.ledger_conserved().await;
}

#[tokio::test]
async fn the_ledger_statement_shows_budgets_and_spending_and_balances_to_zero() {
    let t = Treasury::start(100_000).await;
    let (status, _) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(40_000, Network::Regtest, HOUR),
            1_000,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let url = format!("/v1/ledger/statement?from_ms=0&to_ms={}", u64::MAX / 4);
    let token = t
        .ring
        .operator_token("treasury", &["ledger:read"], Duration::from_secs(60))
        .unwrap();
    let req = http::Request::get(&url)
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(t.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let csv = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        csv.contains("\"budget:agent-1\",1,1,0,40007,100000,59993"),
        "{csv}"
    );
    assert!(
        csv.contains("\"spent:agent-1\",1,2,0,0,40007,40007"),
        "{csv}"
    );
    let closing: i128 = csv
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<i128>().unwrap())
        .sum();
    assert_eq!(closing, 0, "double entry");
    // Scope and parameters.
    let (status, _) = t.call("GET", &url, Some(&t.token.clone()), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, err) = t
        .call(
            "GET",
            "/v1/ledger/statement?from_ms=5&to_ms=1",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_PERIOD"))
    );
    let (status, err) = t
        .call("GET", "/v1/ledger/statement?from_ms=x", Some(&token), None)
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_QUERY"))
    );
}

fn vectors() -> std::path::PathBuf {
    oa_testkit::vectors_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
}
