//! `GET /internal/v1/hydra/observability`: route mix, confidence buckets, breaker transitions,
//! the withdrawal throttle, deposits and withdrawals per state.

use std::time::Duration;

use http::StatusCode;
use oa_invoice::Network;
use serde_json::{Value, json};

use crate::{
    breakers::PAYMENT_BREAKER_ARGS,
    deposits::fund,
    fake::Mode,
    harness::Hydra,
    routing::{route, score},
};

const HOUR: Duration = Duration::from_secs(3600);

fn count(list: &Value, label: &str) -> u64 {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == label)
        .map_or(0, |c| c["count"].as_str().unwrap().parse().unwrap())
}

async fn report(h: &Hydra) -> Value {
    let (status, b) = h
        .call(
            "GET",
            "/internal/v1/hydra/observability",
            Some(&h.token.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    b
}

#[tokio::test]
async fn observability_reports_route_mix_confidence_breaker_transitions_and_throttle() {
    let h = Hydra::start_with(&PAYMENT_BREAKER_ARGS).await;
    let empty = report(&h).await;
    assert_eq!(empty["decisions"], "0");
    assert_eq!(count(&empty["confidence"], "95_100"), 0);
    assert_eq!(empty["withdraw_throttle"]["state"], "normal");
    assert!(empty["breaker_transitions"].as_array().unwrap().is_empty());

    // Two decisions choosing a route (success 900 000 and 360 000 ppm), one choosing the
    // envelope rail (500 000 ppm: 0 settled, 0 lost).
    let routes = json!([
        route("a-thin", 100, &[(1, 1_000_000), (2, 1_000_000)]),
        route("b-deep", 2_000, &[(3, 4_000_000)])
    ]);
    let rail = json!({"envelope_rail": {"candidate_id": "c-envelope", "fee_msat": "1", "agent_id": "agent-r"}});
    score(
        &h,
        "k1",
        "reliability_first",
        400_000,
        routes.clone(),
        json!({}),
    )
    .await;
    score(&h, "k2", "lowest_cost", 400_000, routes.clone(), json!({})).await;
    score(
        &h,
        "k3",
        "lowest_cost",
        400_000,
        json!([route("a-thin", 100, &[(1, 1_000_000), (2, 1_000_000)])]),
        rail,
    )
    .await;

    // Four failed payments open the payment breaker (4 samples, 10 000 bps >= 5 000).
    h.fake.set_mode(Mode::Fail);
    for i in 0..4 {
        let inv = h.fake.invoice(1_000, Network::Regtest, HOUR);
        let (_, q) = h
            .post(
                "/v1/liquidity/quote_pay",
                json!({"idempotency_key": format!("q{i}"), "invoice": inv}),
            )
            .await;
        let (_, p) = h
            .post(
                "/v1/liquidity/pay",
                json!({"idempotency_key": format!("p{i}"), "quote_id": q["quote"]["quote_id"]}),
            )
            .await;
        assert_eq!(p["quote"]["state"], "QUOTE_STATE_FAILED");
    }
    h.fake.set_mode(Mode::Pay);
    fund(&h, "d1", "agent-1", 5_000).await;

    let r = report(&h).await;
    assert_eq!(r["decisions"], "3");
    assert_eq!(r["window_ms"], "600000");
    assert_eq!(count(&r["selected_rail"], "route"), 2, "{r}");
    assert_eq!(count(&r["selected_rail"], "envelope"), 1, "{r}");
    assert_eq!(count(&r["policy"], "lowest_cost"), 2);
    assert_eq!(count(&r["policy"], "reliability_first"), 1);
    assert_eq!(count(&r["confidence"], "80_95"), 1, "{r}");
    assert_eq!(count(&r["confidence"], "50_80"), 1, "{r}");
    assert_eq!(count(&r["confidence"], "lt_50"), 1, "{r}");
    let transitions = r["breaker_transitions"].as_array().unwrap();
    assert_eq!(transitions.len(), 1, "{r}");
    assert_eq!(transitions[0]["breaker"], "payment_failure_rate");
    assert_eq!(transitions[0]["to"], "open");
    assert_eq!(count(&r["deposits"], "credited"), 1);
    assert_eq!(r["deposit_settle_index"], "1");
    let t = &r["withdraw_throttle"];
    assert_eq!(t["agent_balances_msat"], "5000");
    assert_eq!(t["state"], "normal");
    assert_eq!(t["delay_bps"], 8_000);
    assert_eq!(t["halt_bps"], 9_500);
}
