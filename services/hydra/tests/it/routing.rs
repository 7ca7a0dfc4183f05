//! The routing score through the HTTP API: policies, the envelope rail's estimate, deterministic
//! ties, the decision receipt, and learning from Hydra's own payments.

use std::time::Duration;

use http::StatusCode;
use oa_invoice::Network;
use serde_json::{Value, json};

use crate::{
    credit::{code, issued, ok, settle},
    fake::Mode,
    harness::Hydra,
};

const HOUR: Duration = Duration::from_secs(3600);

pub fn route(id: &str, fee: u64, hops: &[(u64, u64)]) -> Value {
    json!({"candidate_id": id, "fee_msat": fee.to_string(),
           "hops": hops.iter().map(|(c, cap)| json!({"chan_id": c.to_string(), "capacity_msat": cap.to_string()})).collect::<Vec<_>>()})
}

pub async fn score(
    h: &Hydra,
    key: &str,
    policy: &str,
    amount: u64,
    routes: Value,
    extra: Value,
) -> Value {
    let mut body = json!({"idempotency_key": key, "policy": policy, "amount_msat": amount.to_string(), "routes": routes});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    ok(h, "/v1/routing/score", body).await
}

/// `(candidate_id, success_ppm, cost_msat)` in rank order.
fn ranking(resp: &Value) -> Vec<(String, u64, u64)> {
    resp["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["candidate_id"].as_str().unwrap().to_owned(),
                r["success_ppm"].as_u64().unwrap(),
                r["cost_msat"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn ids(resp: &Value) -> Vec<String> {
    ranking(resp).into_iter().map(|r| r.0).collect()
}

#[tokio::test]
async fn candidates_are_ranked_under_each_policy_with_a_decision_receipt() {
    let h = Hydra::start().await;
    // The golden case of scoring.rs, with the envelope rail's estimate from (empty) history:
    // (0 + 1) / (0 + 0 + 2) = 500 000 ppm.
    let routes = json!([
        route("a-thin", 100, &[(1, 1_000_000), (2, 1_000_000)]),
        route("b-deep", 2_000, &[(3, 4_000_000)])
    ]);
    let rail = json!({"envelope_rail": {"candidate_id": "c-envelope", "fee_msat": "4000", "agent_id": "agent-r"}});
    let low = score(
        &h,
        "k1",
        "lowest_cost",
        400_000,
        routes.clone(),
        rail.clone(),
    )
    .await;
    assert_eq!(
        ranking(&low),
        [
            ("a-thin".into(), 360_000, 100),
            ("b-deep".into(), 900_000, 2_000),
            ("c-envelope".into(), 500_000, 4_000)
        ]
    );
    assert_eq!(low["ranking"][2]["rail"], "envelope");
    assert_eq!(
        low["envelope_estimate"],
        json!({"settled": "0", "defaulted": "0", "success_ppm": 500_000})
    );
    let rel = score(
        &h,
        "k2",
        "reliability_first",
        400_000,
        routes.clone(),
        rail.clone(),
    )
    .await;
    assert_eq!(ids(&rel), ["b-deep", "c-envelope", "a-thin"]);
    // balanced: a = 100 + 400 000 × 0.64 = 256 100; b = 2 000 + 40 000; c = 4 000 + 200 000.
    let bal = score(&h, "k3", "balanced", 400_000, routes.clone(), rail.clone()).await;
    assert_eq!(
        ranking(&bal),
        [
            ("b-deep".into(), 900_000, 42_000),
            ("c-envelope".into(), 500_000, 204_000),
            ("a-thin".into(), 360_000, 256_100)
        ]
    );

    let r: oa_receipts::Receipt = serde_json::from_value(bal["receipt"].clone()).unwrap();
    r.verify().unwrap();
    assert_eq!(r.schema, "oa.hydra.routing_decision_receipt.v1");
    assert_eq!(r.body["decision_id"], bal["decision_id"]);
    assert_eq!(r.body["chosen"], "b-deep");
    assert_eq!(r.body["policy"], "balanced");
    assert_eq!(r.body["ranking"][0]["cost_msat"], "42000");
    assert_eq!(r.body["ranking"][2]["success_ppm"], "360000");
    // The receipt commits to the stored inputs: anyone can recompute the decision from them.
    let inputs: String = sqlx::query_scalar::<sqlx::Any, String>(
        "SELECT inputs FROM hydra_routing_decisions WHERE decision_id = $1",
    )
    .bind(bal["decision_id"].as_str().unwrap())
    .fetch_one(h.app_db.pool())
    .await
    .unwrap();
    let inputs: Value = serde_json::from_str(&inputs).unwrap();
    assert_eq!(
        r.body["inputs_sha256"],
        oa_store::idempotency::fingerprint(&inputs).unwrap()
    );
    assert_eq!(inputs["candidates"][2]["estimate_ppm"], "500000");

    // Replays answer the same; the same key with another request is a conflict.
    let again = score(&h, "k3", "balanced", 400_000, routes.clone(), rail.clone()).await;
    assert_eq!(again, bal);
    let (status, err) = h
        .post(
            "/v1/routing/score",
            json!({"idempotency_key": "k3", "policy": "lowest_cost", "amount_msat": "400000", "routes": routes}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT")
    );
    // The internal path is the same route.
    let (status, internal) = h
        .post(
            "/internal/v1/hydra/routing/score",
            json!({"idempotency_key": "k4", "policy": "lowest_cost", "amount_msat": "400000", "routes": routes}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&internal), ["a-thin", "b-deep"]);
    assert_eq!(
        h.receipts_of("oa.hydra.routing_decision_receipt.v1")
            .await
            .len(),
        4
    );
}

#[tokio::test]
async fn ties_break_by_candidate_id_and_the_same_inputs_give_the_same_decision() {
    let h = Hydra::start().await;
    let routes = json!([
        route("z", 10, &[(1, 1_000)]),
        route("y", 10, &[(2, 1_000)]),
        route("x-too-small", 1, &[(3, 10)])
    ]);
    let first = score(&h, "k1", "lowest_cost", 100, routes.clone(), json!({})).await;
    let second = score(&h, "k2", "lowest_cost", 100, routes, json!({})).await;
    assert_eq!(ids(&first), ["y", "z", "x-too-small"]);
    assert_eq!(first["ranking"][2]["reachable"], false);
    assert_eq!(first["ranking"], second["ranking"]);
    let body = |v: &Value| -> oa_receipts::Receipt {
        serde_json::from_value(v["receipt"].clone()).unwrap()
    };
    assert_eq!(
        body(&first).body["inputs_sha256"],
        body(&second).body["inputs_sha256"]
    );
    assert_ne!(first["decision_id"], second["decision_id"]);
}

#[tokio::test]
async fn the_envelope_rail_estimate_is_laplace_smoothed_envelope_history() {
    let h = Hydra::start().await;
    let scope = "job-42: summarize the filings";
    // agent-a: one settled, one defaulted. agent-b: two settled.
    for (n, (agent, verdict)) in [
        ("agent-a", "passed"),
        ("agent-a", "failed"),
        ("agent-b", "passed"),
        ("agent-b", "passed"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = issued(&h, &format!("e{n}"), agent, 100_000, 1_000).await;
        let v = h.aegis.decide(&format!("v{n}"), scope, verdict);
        let (s, _) = settle(
            &h,
            &format!("s{n}"),
            &id,
            &format!("v{n}"),
            &v.hash.to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    let estimate = |agent: &'static str, key: &'static str| {
        let h = &h;
        async move {
            let rail = json!({"envelope_rail": {"candidate_id": "env", "fee_msat": "0", "agent_id": agent}});
            score(h, key, "reliability_first", 1_000, json!([]), rail).await["envelope_estimate"]
                .clone()
        }
    };
    // (1 + 1) / (1 + 1 + 2); (2 + 1) / (2 + 0 + 2); over all agents (3 + 1) / (3 + 1 + 2).
    assert_eq!(
        estimate("agent-a", "k1").await,
        json!({"settled": "1", "defaulted": "1", "success_ppm": 500_000})
    );
    assert_eq!(estimate("agent-b", "k2").await["success_ppm"], 750_000);
    assert_eq!(estimate("", "k3").await["success_ppm"], 666_666);
    assert_eq!(estimate("agent-none", "k4").await["success_ppm"], 500_000);
}

/// Also run on PostgreSQL.
pub async fn learning(h: &Hydra) {
    let amount = 300_000;
    let two_hops = json!([route("r-two", 10, &[(7, 1_000_000), (8, 1_000_000)])]);
    // Before any payment: each hop (1 000 001 - 300 000) / 1 000 001 -> 700 000 ppm; 490 000.
    let inv = h.fake.invoice(amount, Network::Regtest, HOUR);
    let hash = oa_invoice::decode(&inv).unwrap().payment_hash.to_string();
    let before = score(
        h,
        "k1",
        "reliability_first",
        amount,
        two_hops.clone(),
        json!({"payment_hash": hash}),
    )
    .await;
    assert_eq!(ranking(&before), [("r-two".into(), 490_000, 10)]);
    // Hydra pays that invoice: the hops carried 300 000, so now it is certain.
    pay(h, "p1", &inv).await;
    let after = score(
        h,
        "k2",
        "reliability_first",
        amount,
        two_hops.clone(),
        json!({}),
    )
    .await;
    assert_eq!(ranking(&after)[0].1, 1_000_000);

    // A failure over a single-hop route rules the amount out on that channel.
    let one_hop = json!([
        route("r-one", 5, &[(9, 1_000_000)]),
        route("r-two", 10, &[(7, 1_000_000), (8, 1_000_000)])
    ]);
    let inv = h.fake.invoice(amount, Network::Regtest, HOUR);
    let hash = oa_invoice::decode(&inv).unwrap().payment_hash.to_string();
    let chose = score(
        h,
        "k3",
        "lowest_cost",
        amount,
        json!([route("r-one", 5, &[(9, 1_000_000)])]),
        json!({"payment_hash": hash}),
    )
    .await;
    assert_eq!(ids(&chose), ["r-one"]);
    h.fake.set_mode(Mode::Fail);
    pay(h, "p2", &inv).await;
    let ruled_out = score(h, "k4", "lowest_cost", amount, one_hop.clone(), json!({})).await;
    assert_eq!(
        ranking(&ruled_out),
        [("r-two".into(), 1_000_000, 10), ("r-one".into(), 0, 5)]
    );
    assert_eq!(ruled_out["ranking"][1]["reachable"], false);

    // A failure over a longer route blames no channel (the failing hop is unknown).
    let inv = h.fake.invoice(amount, Network::Regtest, HOUR);
    let hash = oa_invoice::decode(&inv).unwrap().payment_hash.to_string();
    score(
        h,
        "k5",
        "lowest_cost",
        amount,
        json!([route("r-ab", 1, &[(11, 1_000_000), (12, 1_000_000)])]),
        json!({"payment_hash": hash}),
    )
    .await;
    pay(h, "p3", &inv).await;
    h.fake.set_mode(Mode::Pay);
    let stored: Vec<String> = sqlx::query_scalar::<sqlx::Any, String>(
        "SELECT chan_id FROM hydra_channel_bounds ORDER BY chan_id",
    )
    .fetch_all(h.app_db.pool())
    .await
    .unwrap();
    assert_eq!(stored, ["7", "8", "9"]);

    // One half-life later the lesson is half as strong: min 150 000 on both hops ->
    // (1 000 001 - 300 000) / (1 000 001 - 150 000) = 823 529 ppm each; 678 200 for the route.
    h.clock.advance(3_600_000);
    let faded = score(h, "k6", "reliability_first", amount, two_hops, json!({})).await;
    assert_eq!(ranking(&faded)[0].1, 678_200);
}

async fn pay(h: &Hydra, key: &str, invoice: &str) {
    let q = ok(
        h,
        "/v1/liquidity/quote_pay",
        json!({"idempotency_key": format!("{key}-q"), "invoice": invoice, "max_fee_msat": "10000"}),
    )
    .await;
    let paid = ok(
        h,
        "/v1/liquidity/pay",
        json!({"idempotency_key": key, "quote_id": q["quote"]["quote_id"]}),
    )
    .await;
    assert!(
        ["QUOTE_STATE_PAID", "QUOTE_STATE_FAILED"]
            .contains(&paid["quote"]["state"].as_str().unwrap()),
        "{paid}"
    );
}

#[tokio::test]
async fn payment_outcomes_teach_the_scorer_and_the_lesson_fades() {
    learning(&Hydra::start_with(&["--routing-half-life-secs=3600"]).await).await;
}

#[tokio::test]
async fn envelope_settlements_teach_the_scorer_too() {
    let h = Hydra::start().await;
    let inv = h.fake.invoice(250_000, Network::Regtest, HOUR);
    let hash = oa_invoice::decode(&inv).unwrap().payment_hash.to_string();
    score(
        &h,
        "k1",
        "lowest_cost",
        250_000,
        json!([route("r", 1, &[(21, 1_000_000)])]),
        json!({"payment_hash": hash}),
    )
    .await;
    let id = issued(&h, "e", "agent-1", 1_000_000, 1).await;
    let v = h
        .aegis
        .decide("v", "job-42: summarize the filings", "passed");
    let (status, body) = h
        .post(
            "/v1/credit/settle",
            json!({"idempotency_key": "s", "envelope_id": id, "verification_id": "v",
                   "verification_receipt_hash": v.hash.to_string(), "invoice": inv}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = score(
        &h,
        "k2",
        "lowest_cost",
        250_000,
        json!([route("r", 1, &[(21, 1_000_000)])]),
        json!({}),
    )
    .await;
    assert_eq!(ranking(&after)[0].1, 1_000_000);
}
