//! Bad input on every route built in this version: a typed 4xx with a stable code, and nothing
//! recorded (no rows, no receipts, no idempotency keys, no ledger movement). Auth refusals per
//! route: no token is 401, a token without the route's scope is 403.

use std::time::Duration;

use http::StatusCode;
use oa_invoice::Network;
use serde_json::{Value, json};

use crate::{
    credit::{code, issued},
    harness::Hydra,
};

const HOUR: Duration = Duration::from_secs(3600);

/// What must not change when a request is refused.
async fn footprint(h: &Hydra) -> [i64; 10] {
    [
        h.count("hydra_envelopes").await,
        h.count("hydra_quotes").await,
        h.count("hydra_fx_quotes").await,
        h.count("hydra_routing_decisions").await,
        h.count("hydra_channel_bounds").await,
        h.count("receipts").await,
        h.count("idempotency_keys").await,
        h.count("ledger_transfers").await,
        h.count("ledger_accounts").await,
        h.count("events").await,
    ]
}

/// Posts each body to `path` and checks its status class and code.
async fn refused(h: &Hydra, path: &str, cases: &[(String, StatusCode, &str)]) {
    for (body, status, want) in cases {
        let (got, err) = h
            .call("POST", path, Some(&h.token.clone()), Some(body))
            .await;
        assert!(got.is_client_error(), "{path} {body}: {got} {err}");
        assert_eq!((got, code(&err)), (*status, *want), "{path} {body}: {err}");
    }
}

fn bad(body: Value, code: &'static str) -> (String, StatusCode, &'static str) {
    (body.to_string(), StatusCode::BAD_REQUEST, code)
}

#[tokio::test]
async fn bad_credit_requests_get_typed_4xx_and_change_nothing() {
    let h = Hydra::start().await;
    let envelope = issued(&h, "e", "agent-1", 1_000_000, 500_000).await;
    let before = footprint(&h).await;
    let now = h.clock_ms();
    let later = (now + 3_600_000).to_string();
    let inv = h.fake.invoice(500_000, Network::Regtest, HOUR);
    let intent = |over: Value| {
        let mut b = json!({"idempotency_key": "k", "agent_id": "agent-1",
                           "provider": {"provider_id": "p"}, "scope": "job", "cap_msat": "1000",
                           "expires_at_ms": later});
        for (k, v) in over.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = vec![
        bad(
            intent(json!({"idempotency_key": ""})),
            "INVALID_IDEMPOTENCY_KEY",
        ),
        bad(
            intent(json!({"idempotency_key": "a b"})),
            "INVALID_IDEMPOTENCY_KEY",
        ),
        bad(intent(json!({"agent_id": ""})), "INVALID_AGENT_ID"),
        bad(intent(json!({"agent_id": "agent 1"})), "INVALID_AGENT_ID"),
        bad(
            intent(json!({"agent_id": "a".repeat(65)})),
            "INVALID_AGENT_ID",
        ),
        bad(intent(json!({"provider": null})), "INVALID_PROVIDER"),
        bad(
            intent(json!({"provider": {"provider_id": ""}})),
            "INVALID_PROVIDER",
        ),
        bad(
            intent(json!({"provider": {"provider_id": "p", "node_pubkey": "02ab"}})),
            "INVALID_PROVIDER",
        ),
        bad(intent(json!({"scope": ""})), "INVALID_SCOPE"),
        bad(intent(json!({"scope": "two\nlines"})), "INVALID_SCOPE"),
        bad(intent(json!({"scope": "s".repeat(257)})), "INVALID_SCOPE"),
        bad(intent(json!({"cap_msat": "0"})), "INVALID_CAP"),
        bad(intent(json!({"cap_msat": "10000000001"})), "INVALID_CAP"),
        bad(
            intent(json!({"cap_msat": "2100000000000000001"})),
            "INVALID_CAP",
        ),
        bad(intent(json!({"cap_msat": "-1"})), "INVALID_REQUEST"),
        bad(intent(json!({"cap_msat": 1.5})), "INVALID_REQUEST"),
        bad(intent(json!({"expires_at_ms": "0"})), "INVALID_EXPIRY"),
        bad(
            intent(json!({"expires_at_ms": (now + 59_999).to_string()})),
            "INVALID_EXPIRY",
        ),
        bad(
            intent(json!({"expires_at_ms": (now + 8 * 86_400_000).to_string()})),
            "INVALID_EXPIRY",
        ),
        bad(
            intent(json!({"provider": {"provider_id": "p", "invoice": "lnbc1nope"}})),
            "INVALID_INVOICE",
        ),
        bad(
            intent(
                json!({"provider": {"provider_id": "p", "invoice": h.fake.invoice(500, Network::Bitcoin, HOUR)}}),
            ),
            "WRONG_NETWORK",
        ),
        bad(
            intent(
                json!({"provider": {"provider_id": "p", "invoice": h.fake.invoice(500, Network::Regtest, Duration::from_secs(30))}}),
            ),
            "INVOICE_EXPIRED",
        ),
        bad(
            intent(json!({"provider": {"provider_id": "p", "invoice": inv}})),
            "CAP_EXCEEDED",
        ),
        bad(
            intent(
                json!({"cap_msat": "1000000", "provider": {"provider_id": "p", "invoice": inv,
                          "node_pubkey": format!("02{}", "ab".repeat(32))}}),
            ),
            "PAYEE_MISMATCH",
        ),
        bad(intent(json!({"surprise": true})), "INVALID_REQUEST"),
        (
            "{\"idempotency_key\": ".to_owned(),
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        ),
        ("[]".to_owned(), StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
    ];
    refused(&h, "/v1/credit/intent", &cases).await;

    let cases = vec![
        bad(
            json!({"idempotency_key": "", "envelope_id": envelope}),
            "INVALID_IDEMPOTENCY_KEY",
        ),
        bad(
            json!({"idempotency_key": "k", "envelope_id": ""}),
            "INVALID_ENVELOPE_ID",
        ),
        bad(
            json!({"idempotency_key": "k", "envelope_id": "env 1"}),
            "INVALID_ENVELOPE_ID",
        ),
        bad(
            json!({"idempotency_key": "k", "envelope_id": 5}),
            "INVALID_REQUEST",
        ),
        (
            json!({"idempotency_key": "k", "envelope_id": "env_missing"}).to_string(),
            StatusCode::NOT_FOUND,
            "ENVELOPE_NOT_FOUND",
        ),
        (
            json!({"idempotency_key": "k", "envelope_id": envelope}).to_string(),
            StatusCode::CONFLICT,
            "INVALID_ENVELOPE_STATE",
        ),
    ];
    refused(&h, "/v1/credit/offer", &cases).await;

    let cases = vec![
        bad(
            json!({"idempotency_key": "k", "offer_id": ""}),
            "INVALID_OFFER_ID",
        ),
        bad(
            json!({"idempotency_key": "k", "offer_id": "x/y"}),
            "INVALID_OFFER_ID",
        ),
        bad(
            json!({"idempotency_key": "k", "offer_id": "o", "extra": 1}),
            "INVALID_REQUEST",
        ),
        (
            json!({"idempotency_key": "k", "offer_id": "ofr_missing"}).to_string(),
            StatusCode::NOT_FOUND,
            "OFFER_NOT_FOUND",
        ),
    ];
    refused(&h, "/v1/credit/envelope", &cases).await;

    let hash = format!("sha256:{}", "ab".repeat(32));
    let settle = |over: Value| {
        let mut b = json!({"idempotency_key": "k", "envelope_id": envelope, "verification_id": "v",
                           "verification_receipt_hash": hash});
        for (k, v) in over.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = vec![
        bad(
            settle(json!({"idempotency_key": ""})),
            "INVALID_IDEMPOTENCY_KEY",
        ),
        bad(settle(json!({"envelope_id": ""})), "INVALID_ENVELOPE_ID"),
        bad(
            settle(json!({"verification_id": ""})),
            "INVALID_VERIFICATION_ID",
        ),
        bad(
            settle(json!({"verification_id": "v?"})),
            "INVALID_VERIFICATION_ID",
        ),
        bad(
            settle(json!({"verification_receipt_hash": "abc"})),
            "INVALID_HASH",
        ),
        bad(
            settle(json!({"verification_receipt_hash": format!("sha256:{}", "AB".repeat(32))})),
            "INVALID_HASH",
        ),
        bad(
            settle(json!({"amount_msat": "2100000000000000001"})),
            "INVALID_REQUEST",
        ),
        bad(settle(json!({"amount_msat": "-5"})), "INVALID_REQUEST"),
        bad(
            settle(json!({"invoice": "lnbcrt1garbage"})),
            "INVALID_INVOICE",
        ),
        (
            settle(json!({"envelope_id": "env_missing"})).to_string(),
            StatusCode::NOT_FOUND,
            "ENVELOPE_NOT_FOUND",
        ),
        (
            settle(json!({})).to_string(),
            StatusCode::NOT_FOUND,
            "VERIFICATION_NOT_FOUND",
        ),
    ];
    refused(&h, "/v1/credit/settle", &cases).await;
    assert_eq!(footprint(&h).await, before);
    h.ledger_conserved().await;
}

#[tokio::test]
async fn bad_routing_and_fx_requests_get_typed_4xx_and_change_nothing() {
    let h = Hydra::start_with(&crate::fx::FX_ARGS).await;
    let before = footprint(&h).await;
    let hop = |chan: &str, cap: &str| json!({"chan_id": chan, "capacity_msat": cap});
    let r = |id: &str, hops: Value| json!({"candidate_id": id, "fee_msat": "1", "hops": hops});
    let score = |over: Value| {
        let mut b = json!({"idempotency_key": "k", "policy": "balanced", "amount_msat": "1000",
                           "routes": [r("a", json!([hop("1", "5000")]))]});
        for (k, v) in over.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let many: Vec<Value> = (0..65)
        .map(|i| r(&format!("c{i}"), json!([hop("1", "5000")])))
        .collect();
    let long: Vec<Value> = (0..28).map(|i| hop(&i.to_string(), "5000")).collect();
    let cases = vec![
        bad(
            score(json!({"idempotency_key": ""})),
            "INVALID_IDEMPOTENCY_KEY",
        ),
        bad(score(json!({"amount_msat": "0"})), "INVALID_AMOUNT"),
        bad(
            score(json!({"amount_msat": "2100000000000000001"})),
            "INVALID_AMOUNT",
        ),
        bad(score(json!({"amount_msat": "-1"})), "INVALID_REQUEST"),
        bad(score(json!({"policy": "cheapest"})), "INVALID_POLICY"),
        bad(score(json!({"policy": ""})), "INVALID_POLICY"),
        bad(score(json!({"routes": []})), "INVALID_CANDIDATES"),
        bad(score(json!({"routes": many})), "INVALID_CANDIDATES"),
        bad(
            score(
                json!({"routes": [r("a", json!([hop("1", "5")])), r("a", json!([hop("2", "5")]))]}),
            ),
            "INVALID_CANDIDATES",
        ),
        bad(
            score(json!({"routes": [r("a b", json!([hop("1", "5")]))]})),
            "INVALID_CANDIDATES",
        ),
        bad(
            score(json!({"routes": [r("a", json!([]))]})),
            "INVALID_ROUTE",
        ),
        bad(
            score(json!({"routes": [r("a", json!(long))]})),
            "INVALID_ROUTE",
        ),
        bad(
            score(json!({"routes": [r("a", json!([hop("1", "0")]))]})),
            "INVALID_ROUTE",
        ),
        bad(
            score(
                json!({"routes": [{"candidate_id": "a", "fee_msat": "2100000000000000001", "hops": [hop("1", "5")]}]}),
            ),
            "INVALID_ROUTE",
        ),
        bad(
            score(json!({"routes": [r("a", json!([hop("-1", "5")]))]})),
            "INVALID_REQUEST",
        ),
        bad(
            score(json!({"envelope_rail": {"candidate_id": "a", "fee_msat": "0"}})),
            "INVALID_CANDIDATES",
        ),
        bad(
            score(
                json!({"envelope_rail": {"candidate_id": "e", "fee_msat": "0", "agent_id": "x y"}}),
            ),
            "INVALID_AGENT_ID",
        ),
        bad(
            score(json!({"payment_hash": "abc"})),
            "INVALID_PAYMENT_HASH",
        ),
        bad(
            score(json!({"payment_hash": "AB".repeat(32)})),
            "INVALID_PAYMENT_HASH",
        ),
        bad(score(json!({"surprise": 1})), "INVALID_REQUEST"),
    ];
    refused(&h, "/v1/routing/score", &cases).await;
    refused(&h, "/internal/v1/hydra/routing/score", &cases[..3]).await;

    let rfq = |over: Value| {
        let mut b = json!({"idempotency_key": "k", "agent_id": "agent-1", "sell_currency": "USD",
                           "sell_amount": "10.00", "buy_currency": "BTC"});
        for (k, v) in over.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = vec![
        bad(
            rfq(json!({"idempotency_key": ""})),
            "INVALID_IDEMPOTENCY_KEY",
        ),
        bad(rfq(json!({"agent_id": ""})), "INVALID_AGENT_ID"),
        bad(rfq(json!({"sell_currency": ""})), "UNKNOWN_CURRENCY"),
        bad(rfq(json!({"sell_currency": "XAU"})), "UNKNOWN_CURRENCY"),
        bad(rfq(json!({"sell_currency": "usd"})), "UNKNOWN_CURRENCY"),
        bad(rfq(json!({"buy_currency": "XAU"})), "UNKNOWN_CURRENCY"),
        bad(rfq(json!({"buy_currency": "EUR"})), "UNSUPPORTED_PAIR"),
        bad(rfq(json!({"buy_currency": "USD"})), "UNSUPPORTED_PAIR"),
        bad(
            rfq(json!({"sell_currency": "BTC", "sell_amount": "1000", "buy_currency": "BTC"})),
            "UNSUPPORTED_PAIR",
        ),
        bad(rfq(json!({"sell_amount": "1.001"})), "INVALID_AMOUNT"),
        bad(rfq(json!({"sell_amount": "-1"})), "INVALID_AMOUNT"),
        bad(rfq(json!({"sell_amount": "0.00"})), "INVALID_AMOUNT"),
        bad(rfq(json!({"sell_amount": "1e3"})), "INVALID_AMOUNT"),
        bad(rfq(json!({"sell_amount": ""})), "INVALID_AMOUNT"),
        bad(
            rfq(json!({"sell_currency": "BTC", "sell_amount": "1.5", "buy_currency": "USD"})),
            "INVALID_AMOUNT",
        ),
        bad(
            rfq(json!({"sell_currency": "BTC", "sell_amount": "1", "buy_currency": "USD"})),
            "AMOUNT_TOO_SMALL",
        ),
        bad(rfq(json!({"sell_currency": "GBP"})), "NO_RATE"),
        bad(rfq(json!({"sell_amount": 10})), "INVALID_REQUEST"),
    ];
    refused(&h, "/v1/fx/rfq", &cases).await;
    let cases = vec![
        bad(
            json!({"idempotency_key": "k", "fx_quote_id": ""}),
            "INVALID_QUOTE_ID",
        ),
        bad(
            json!({"idempotency_key": "k", "fx_quote_id": "a b"}),
            "INVALID_QUOTE_ID",
        ),
        bad(
            json!({"idempotency_key": "", "fx_quote_id": "fxq_1"}),
            "INVALID_IDEMPOTENCY_KEY",
        ),
        (
            json!({"idempotency_key": "k", "fx_quote_id": "fxq_missing"}).to_string(),
            StatusCode::NOT_FOUND,
            "QUOTE_NOT_FOUND",
        ),
    ];
    refused(&h, "/v1/fx/settle", &cases).await;
    assert_eq!(footprint(&h).await, before);
    h.ledger_conserved().await;
}

#[tokio::test]
async fn every_route_refuses_a_missing_token_and_a_missing_scope() {
    let h = Hydra::start().await;
    let routes: [(&str, &str, &str); 13] = [
        ("POST", "/v1/liquidity/quote_pay", "hydra:liquidity"),
        ("POST", "/v1/liquidity/pay", "hydra:liquidity"),
        ("GET", "/v1/liquidity/status", "hydra:read"),
        ("POST", "/v1/credit/intent", "hydra:credit"),
        ("POST", "/v1/credit/offer", "hydra:credit"),
        ("POST", "/v1/credit/envelope", "hydra:credit"),
        ("POST", "/v1/credit/settle", "hydra:credit"),
        ("POST", "/v1/routing/score", "hydra:routing"),
        ("POST", "/internal/v1/hydra/routing/score", "hydra:routing"),
        ("POST", "/v1/fx/rfq", "hydra:fx"),
        ("POST", "/v1/fx/settle", "hydra:fx"),
        ("GET", "/internal/v1/hydra/risk/health", "hydra:read"),
        (
            "GET",
            "/v1/ledger/statement?from_ms=0&to_ms=1",
            "ledger:read",
        ),
    ];
    let before = footprint(&h).await;
    for (method, path, scope) in routes {
        // Every other scope of Hydra's, but not this route's.
        let others: Vec<&str> = crate::harness::ALL_SCOPES
            .iter()
            .copied()
            .filter(|s| *s != scope && !(path.ends_with("/status") && *s == "hydra:liquidity"))
            .collect();
        let wrong = h.token_with(&others);
        let body = (method == "POST").then(|| json!({"idempotency_key": "k"}).to_string());
        for (token, want, want_code) in [
            (None, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            (Some(wrong.as_str()), StatusCode::FORBIDDEN, "FORBIDDEN"),
        ] {
            let (status, err) = h.call(method, path, token, body.as_deref()).await;
            assert_eq!(
                (status, code(&err)),
                (want, want_code),
                "{method} {path}: {err}"
            );
        }
    }
    assert_eq!(footprint(&h).await, before);
}
