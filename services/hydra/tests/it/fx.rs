//! FX through the HTTP API: quotes by the documented rule, settlement exactly once in both
//! ledgers with a receipt, expiry.

use http::StatusCode;
use serde_json::{Value, json};

use crate::{
    credit::{code, ok},
    harness::Hydra,
};

pub const FX_ARGS: [&str; 2] = [
    "--fx-rates=USD=50000,EUR=61234.57,JPY=7000000",
    "--fx-spread-bps=100",
];

async fn rfq(h: &Hydra, key: &str, sell: &str, amount: &str, buy: &str) -> Value {
    ok(
        h,
        "/v1/fx/rfq",
        json!({"idempotency_key": key, "agent_id": "agent-1", "sell_currency": sell, "sell_amount": amount, "buy_currency": buy}),
    )
    .await["quote"]
        .clone()
}

async fn fx_settle(h: &Hydra, key: &str, quote_id: &Value) -> (StatusCode, Value) {
    h.post(
        "/v1/fx/settle",
        json!({"idempotency_key": key, "fx_quote_id": quote_id}),
    )
    .await
}

/// Also run on PostgreSQL.
pub async fn quotes_and_settlement(h: &Hydra) {
    // The golden case of fx.rs: 100.00 USD at mid 50 000, spread 100 bps -> rate 50 500;
    // 100 × 1e11 / 50 500 = 198 019 801.98 -> 198 019 801 msat.
    let q = rfq(h, "r1", "USD", "100.00", "BTC").await;
    assert_eq!(
        (
            q["rate"].as_str(),
            q["mid_rate"].as_str(),
            q["buy_amount"].as_str(),
            q["sell_amount"].as_str()
        ),
        (
            Some("50500"),
            Some("50000"),
            Some("198019801"),
            Some("100.00")
        )
    );
    assert_eq!(q["spread_bps"], 100);
    assert_eq!(q["state"], "FX_QUOTE_STATE_OPEN");
    assert_eq!(
        q["expires_at_ms"].as_str().unwrap().parse::<u64>().unwrap(),
        h.clock_ms() + 30_000
    );
    let (status, settled) = fx_settle(h, "s1", &q["fx_quote_id"]).await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    assert_eq!(settled["quote"]["state"], "FX_QUOTE_STATE_SETTLED");
    let r: oa_receipts::Receipt = serde_json::from_value(settled["receipt"].clone()).unwrap();
    r.verify().unwrap();
    assert_eq!(r.schema, "oa.hydra.fx_settlement_receipt.v1");
    for (field, want) in [
        ("sell_currency", "USD"),
        ("sell_ledger", "840"),
        ("sell_units", "10000"),
        ("buy_currency", "BTC"),
        ("buy_ledger", "1"),
        ("buy_units", "198019801"),
        ("rate", "50500"),
        ("spread_bps", "100"),
    ] {
        assert_eq!(r.body[field], want, "{field}");
    }
    // Both legs, each in its own asset's ledger.
    assert_eq!(
        h.account("agent:agent-1:fx:USD").await.debits_posted_msat,
        10_000
    );
    assert_eq!(h.account("fx:USD").await.credits_posted_msat, 10_000);
    assert_eq!(h.account("fx:BTC").await.debits_posted_msat, 198_019_801);
    assert_eq!(
        h.account("agent:agent-1:fx:BTC").await.credits_posted_msat,
        198_019_801
    );
    // Replays answer the same; a new key cannot settle it again.
    let (_, again) = fx_settle(h, "s1", &q["fx_quote_id"]).await;
    assert_eq!(again, settled);
    let (status, err) = fx_settle(h, "s2", &q["fx_quote_id"]).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "QUOTE_ALREADY_USED")
    );

    // Back the other way: rate 49 500; 198 019 801 × 49 500 / 1e11 = 98.0198... -> 98.01 USD.
    let back = rfq(h, "r2", "BTC", "198019801", "USD").await;
    assert_eq!(
        (back["rate"].as_str(), back["buy_amount"].as_str()),
        (Some("49500"), Some("98.01"))
    );
    let (status, _) = fx_settle(h, "s3", &back["fx_quote_id"]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h.account("agent:agent-1:fx:USD").await.credits_posted_msat,
        9_801
    );
    // JPY has no minor unit: 1 000 000 msat at 7 000 000 × 0.99 = 6 930 000 -> 69.3 -> 69.
    let jpy = rfq(h, "r3", "BTC", "1000000", "JPY").await;
    assert_eq!(
        (jpy["rate"].as_str(), jpy["buy_amount"].as_str()),
        (Some("6930000"), Some("69"))
    );
    let (status, _) = fx_settle(h, "s4", &jpy["fx_quote_id"]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.account("fx:JPY").await.debits_posted_msat, 69);
    assert_eq!(
        h.receipts_of("oa.hydra.fx_settlement_receipt.v1")
            .await
            .len(),
        3
    );
    h.ledger_conserved().await;
}

#[tokio::test]
async fn quotes_follow_the_pricing_rule_and_settle_once_in_both_ledgers() {
    quotes_and_settlement(&Hydra::start_with(&FX_ARGS).await).await;
}

#[tokio::test]
async fn an_expired_quote_is_refused_and_settles_nothing() {
    let h = Hydra::start_with(&FX_ARGS).await;
    let q = rfq(&h, "r", "EUR", "0.01", "BTC").await;
    // 0.01 EUR at 61 234.57 × 1.01 = 61 846.9157 EUR/BTC -> 16 168.955... -> 16 168 msat.
    assert_eq!(q["buy_amount"], "16168");
    h.clock.advance(30_000);
    for _ in 0..2 {
        // The refusal records nothing, so the same key is refused the same way again.
        let (status, err) = fx_settle(&h, "s", &q["fx_quote_id"]).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::CONFLICT, "QUOTE_EXPIRED")
        );
    }
    assert_eq!(
        h.count("ledger_transfers").await,
        1,
        "only the pool's funding"
    );
    assert!(
        h.receipts_of("oa.hydra.fx_settlement_receipt.v1")
            .await
            .is_empty()
    );
    let (status, err) = fx_settle(&h, "s", &json!("fxq_missing")).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "QUOTE_NOT_FOUND")
    );
}

#[tokio::test]
async fn concurrent_settles_of_one_fx_quote_settle_it_once() {
    let h = Hydra::start_with(&FX_ARGS).await;
    let q = rfq(&h, "r", "USD", "25.00", "BTC").await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let body =
            json!({"idempotency_key": format!("s{}", i % 4), "fx_quote_id": q["fx_quote_id"]});
        let router = h.router.clone();
        let token = h.token.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::builder()
                .method("POST")
                .uri("/v1/fx/settle")
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
    assert_eq!(
        h.receipts_of("oa.hydra.fx_settlement_receipt.v1")
            .await
            .len(),
        1
    );
    assert_eq!(h.account("fx:USD").await.credits_posted_msat, 2_500);
    h.ledger_conserved().await;
}

#[tokio::test]
async fn bad_fx_configuration_is_refused_at_start() {
    for bad in [
        ["--fx-rates=USD=abc", "--fx-spread-bps=0"],
        ["--fx-rates=XAU=1", "--fx-spread-bps=0"],
        ["--fx-rates=USD=-5", "--fx-spread-bps=0"],
        ["--fx-rates=USD=1", "--fx-spread-bps=1001"],
        ["--fx-rates=USD=1", "--fx-quote-ttl-secs=601"],
    ] {
        assert!(Hydra::try_start_with(&bad).await.is_err(), "{bad:?}");
    }
}
