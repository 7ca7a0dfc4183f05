//! Credit envelopes through the HTTP API: every transition, every refusal, the ledger and the
//! receipts, with a fake executor and a fake Aegis.

use std::time::Duration;

use http::StatusCode;
use oa_invoice::Network;
use serde_json::{Value, json};

use crate::{fake::Mode, harness::Hydra};

const HOUR: Duration = Duration::from_secs(3600);
const HOUR_MS: u64 = 3_600_000;
const SCOPE: &str = "job-42: summarize the filings";

pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn receipt(v: &Value) -> oa_receipts::Receipt {
    serde_json::from_value(v.clone()).unwrap()
}

/// Posts and expects 200; returns the body.
pub async fn ok(h: &Hydra, path: &str, body: Value) -> Value {
    let (status, resp) = h.post(path, body).await;
    assert_eq!(status, StatusCode::OK, "{path}: {resp}");
    resp
}

pub async fn intent(h: &Hydra, key: &str, agent: &str, cap: u64, invoice: &str) -> Value {
    let expires = h.clock_ms() + HOUR_MS;
    ok(
        h,
        "/v1/credit/intent",
        json!({"idempotency_key": key, "agent_id": agent, "provider": {"provider_id": "prov-1", "invoice": invoice},
               "scope": SCOPE, "cap_msat": cap.to_string(), "expires_at_ms": expires.to_string()}),
    )
    .await["envelope"]
        .clone()
}

pub async fn offer(h: &Hydra, key: &str, envelope_id: &str) -> Value {
    ok(
        h,
        "/v1/credit/offer",
        json!({"idempotency_key": key, "envelope_id": envelope_id}),
    )
    .await["envelope"]
        .clone()
}

pub async fn accept(h: &Hydra, key: &str, offer_id: &str) -> Value {
    ok(
        h,
        "/v1/credit/envelope",
        json!({"idempotency_key": key, "offer_id": offer_id}),
    )
    .await
}

/// An issued envelope of `agent` with cap `cap`, whose intent names an invoice of `amount`.
/// Returns the envelope id.
pub async fn issued(h: &Hydra, tag: &str, agent: &str, cap: u64, amount: u64) -> String {
    let inv = h.fake.invoice(amount, Network::Regtest, HOUR);
    let e = intent(h, &format!("{tag}-i"), agent, cap, &inv).await;
    let id = e["envelope_id"].as_str().unwrap().to_owned();
    let o = offer(h, &format!("{tag}-o"), &id).await;
    let acc = accept(
        h,
        &format!("{tag}-a"),
        o["offer"]["offer_id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(acc["envelope"]["state"], "ENVELOPE_STATE_ISSUED");
    id
}

pub async fn settle(
    h: &Hydra,
    key: &str,
    envelope_id: &str,
    vid: &str,
    vhash: &str,
) -> (StatusCode, Value) {
    h.post(
        "/v1/credit/settle",
        json!({"idempotency_key": key, "envelope_id": envelope_id, "verification_id": vid, "verification_receipt_hash": vhash}),
    )
    .await
}

async fn open_envelopes(h: &Hydra, agent: &str) -> i64 {
    sqlx::query_scalar::<sqlx::Any, i64>(
        "SELECT open_envelopes FROM hydra_credit_agents WHERE agent_id = $1",
    )
    .bind(agent)
    .fetch_one(h.app_db.pool())
    .await
    .unwrap()
}

async fn events(h: &Hydra) -> Vec<String> {
    sqlx::query_scalar::<sqlx::Any, String>(
        "SELECT kind FROM events WHERE topic = 'hydra.credit' ORDER BY seq",
    )
    .fetch_all(h.app_db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn an_envelope_goes_from_intent_to_settled_once_with_linked_receipts_and_ledger_moves() {
    lifecycle(&Hydra::start_with(&[]).await).await;
}

pub async fn lifecycle(h: &Hydra) {
    h.fake.set_fee(1_000);
    let inv = h.fake.invoice(40_000_000, Network::Regtest, HOUR);
    let e = intent(h, "i1", "agent-1", 50_000_000, &inv).await;
    assert_eq!(e["state"], "ENVELOPE_STATE_INTENT");
    assert!(e.get("offer").is_none_or(Value::is_null));
    let id = e["envelope_id"].as_str().unwrap().to_owned();

    // A new agent: limit = the starter 100 000 000; fee 100 bps of the cap, rounded up.
    let o = offer(h, "o1", &id).await;
    assert_eq!(o["state"], "ENVELOPE_STATE_OFFERED");
    let offer_v = &o["offer"];
    assert_eq!(
        (
            offer_v["cap_msat"].as_str(),
            offer_v["limit_msat"].as_str(),
            offer_v["fee_bps"].as_u64(),
            offer_v["fee_msat"].as_str()
        ),
        (
            Some("50000000"),
            Some("100000000"),
            Some(100),
            Some("500000")
        )
    );
    assert_eq!(
        offer_v["expires_at_ms"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        h.clock_ms() + 300_000
    );

    let acc = accept(h, "a1", offer_v["offer_id"].as_str().unwrap()).await;
    assert_eq!(acc["envelope"]["state"], "ENVELOPE_STATE_ISSUED");
    let issue = receipt(&acc["receipt"]);
    issue.verify().unwrap();
    assert_eq!(issue.schema, "oa.hydra.envelope_issue_receipt.v1");
    assert_eq!(issue.body["cap_msat"], "50000000");
    assert_eq!(issue.body["fee_msat"], "500000");
    assert_eq!(h.account("pool").await.debits_pending_msat, 50_000_000);
    assert_eq!(
        h.account("agent:agent-1:credit").await.credits_pending_msat,
        50_000_000
    );
    assert_eq!(open_envelopes(h, "agent-1").await, 1);

    let verification = h.aegis.decide("ver-1", SCOPE, "passed");
    let (status, settled) = settle(h, "s1", &id, "ver-1", &verification.hash.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    let env = &settled["envelope"];
    assert_eq!(env["state"], "ENVELOPE_STATE_SETTLED");
    assert_eq!(env["paid_amount_msat"], "40000000");
    assert_eq!(env["routing_fee_msat"], "1000");
    assert_eq!(env["verification_id"], "ver-1");
    let preimage: oa_invoice::Preimage = env["preimage"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        preimage.payment_hash().to_string(),
        env["payment_hash"].as_str().unwrap()
    );

    let mine = receipt(&settled["receipt"]);
    let exec = receipt(&settled["executor_receipt"]);
    let ver = receipt(&settled["verification_receipt"]);
    mine.verify().unwrap();
    assert_eq!(mine.schema, "oa.hydra.envelope_settlement_receipt.v1");
    assert_eq!(mine.links, vec![issue.hash, verification.hash, exec.hash]);
    assert_eq!(ver.hash, verification.hash);
    for (field, want) in [
        ("status", "settled"),
        ("amount_msat", "40000000"),
        ("fee_msat", "1000"),
        ("credit_fee_msat", "500000"),
        ("cap_msat", "50000000"),
        ("posted_msat", "40001000"),
        ("released_msat", "9999000"),
        ("verification_verdict", "passed"),
    ] {
        assert_eq!(mine.body[field], want, "{field}");
    }
    assert_eq!(mine.body["executor_receipt"], exec.hash.to_string());
    assert_eq!(mine.body["payment_hash"], exec.body["payment_hash"]);

    // The ledger: the pool paid amount + fee, the rest came back; the agent owes that plus the
    // credit fee.
    let pool = h.account("pool").await;
    assert_eq!(
        (pool.debits_pending_msat, pool.debits_posted_msat),
        (0, 40_001_000)
    );
    let agent = h.account("agent:agent-1:credit").await;
    assert_eq!(
        (agent.credits_pending_msat, agent.credits_posted_msat),
        (0, 40_501_000)
    );
    assert_eq!(h.account("credit_fees").await.debits_posted_msat, 500_000);
    assert_eq!(open_envelopes(h, "agent-1").await, 0);
    h.ledger_conserved().await;

    // Replays answer the same (without asking Aegis again); nothing is paid twice; a settled
    // envelope refuses a new settle.
    let asked = h.aegis.calls();
    let (_, again) = settle(h, "s1", &id, "ver-1", &verification.hash.to_string()).await;
    assert_eq!(again, settled);
    assert_eq!(h.aegis.calls(), asked);
    let (status, err) = settle(h, "s2", &id, "ver-1", &verification.hash.to_string()).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "INVALID_ENVELOPE_STATE")
    );
    assert_eq!(err["error"]["details"]["state"], "settled");
    assert_eq!(h.fake.total_sends(), 1);
    assert_eq!(
        events(h).await,
        ["envelope_issued", "envelope_settling", "envelope_settled"]
    );
    // One receipt per money transition: issue and settlement.
    assert_eq!(h.receipt_count().await, 2);
}

#[tokio::test]
async fn offers_are_underwritten_from_settled_volume_losses_and_open_exposure() {
    underwriting(&Hydra::start_with(&[]).await).await;
}

pub async fn underwriting(h: &Hydra) {
    // Settled: 8 000 000 paid (no routing fee).
    let e1 = issued(h, "e1", "agent-h", 10_000_000, 8_000_000).await;
    let v = h.aegis.decide("v1", SCOPE, "passed");
    let (s, _) = settle(h, "s1", &e1, "v1", &v.hash.to_string()).await;
    assert_eq!(s, StatusCode::OK);
    // Lost: a failed verification of a 20 000 000 envelope (age 0 days).
    let e2 = issued(h, "e2", "agent-h", 20_000_000, 1_000).await;
    let v = h.aegis.decide("v2", SCOPE, "failed");
    let (s, _) = settle(h, "s2", &e2, "v2", &v.hash.to_string()).await;
    assert_eq!(s, StatusCode::OK);
    // Open: 5 000 000.
    issued(h, "e3", "agent-h", 5_000_000, 1_000).await;

    let e4 = intent(h, "i4", "agent-h", 100_000_000, "").await;
    let o = offer(h, "o4", e4["envelope_id"].as_str().unwrap()).await["offer"].clone();
    // weighted losses 20 000 000; limit = 100 000 000 + 10 % of 8 000 000 - 2 × 20 000 000
    // - 5 000 000 = 55 800 000; loss_pct = 100 × 20 000 000 / 100 000 000 = 20 -> 100 + 50 × 20
    // = 1 100 bps; fee = ceil(55 800 000 × 1 100 / 10 000) = 6 138 000.
    assert_eq!(o["weighted_losses_msat"], "20000000");
    assert_eq!(o["limit_msat"], "55800000");
    assert_eq!(o["cap_msat"], "55800000");
    assert_eq!(o["fee_bps"], 1100);
    assert_eq!(o["fee_msat"], "6138000");
    assert_eq!(
        o["inputs"],
        json!({"settled_volume_msat": "8000000", "settled_count": "1", "losses_count": "1", "open_exposure_msat": "5000000"})
    );
    // Another agent's history is its own.
    let other = intent(h, "i5", "agent-new", 100_000_000, "").await;
    let o = offer(h, "o5", other["envelope_id"].as_str().unwrap()).await["offer"].clone();
    assert_eq!(
        (o["limit_msat"].as_str(), o["fee_bps"].as_u64()),
        (Some("100000000"), Some(100))
    );
    h.ledger_conserved().await;
}

#[tokio::test]
async fn a_failed_verification_defaults_the_envelope_with_its_own_receipt() {
    failed_verification(&Hydra::start_with(&[]).await).await;
}

pub async fn failed_verification(h: &Hydra) {
    let id = issued(h, "e", "agent-1", 10_000_000, 9_000_000).await;
    let v = h.aegis.decide("ver-x", SCOPE, "failed");
    let (status, body) = settle(h, "s1", &id, "ver-x", &v.hash.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["envelope"]["state"], "ENVELOPE_STATE_DEFAULTED");
    assert_eq!(body["envelope"]["default_reason"], "verification_failed");
    let r = receipt(&body["receipt"]);
    r.verify().unwrap();
    assert_eq!(r.schema, "oa.hydra.envelope_default_receipt.v1");
    let issue = &h.receipts_of("oa.hydra.envelope_issue_receipt.v1").await[0];
    assert_eq!(r.links, vec![issue.hash, v.hash]);
    assert_eq!(
        (
            r.body["status"].as_str(),
            r.body["reason"].as_str(),
            r.body["verification_verdict"].as_str()
        ),
        (
            Some("defaulted"),
            Some("verification_failed"),
            Some("failed")
        )
    );
    assert_eq!(r.body["loss_msat"], "10000000");
    // Nothing was paid; the reservation is released and the agent's slot is free.
    assert_eq!(h.fake.total_sends(), 0);
    let pool = h.account("pool").await;
    assert_eq!((pool.debits_pending_msat, pool.debits_posted_msat), (0, 0));
    assert_eq!(open_envelopes(h, "agent-1").await, 0);
    let (_, again) = settle(h, "s1", &id, "ver-x", &v.hash.to_string()).await;
    assert_eq!(again, body);
    let pass = h.aegis.decide("ver-y", SCOPE, "passed");
    let (status, err) = settle(h, "s2", &id, "ver-y", &pass.hash.to_string()).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "INVALID_ENVELOPE_STATE")
    );
    h.ledger_conserved().await;
}

#[tokio::test]
async fn an_unsettled_envelope_expires_by_the_clock_with_a_default_receipt() {
    expiry(&Hydra::start_with(&[]).await).await;
}

pub async fn expiry(h: &Hydra) {
    let inv = h.fake.invoice(1_000_000, Network::Regtest, HOUR);
    let expires = h.clock_ms() + 120_000;
    let e = ok(
        h,
        "/v1/credit/intent",
        json!({"idempotency_key": "i", "agent_id": "agent-1", "provider": {"provider_id": "p", "invoice": inv},
               "scope": SCOPE, "cap_msat": "2000000", "expires_at_ms": expires.to_string()}),
    )
    .await;
    let id = e["envelope"]["envelope_id"].as_str().unwrap().to_owned();
    let o = offer(h, "o", &id).await;
    // The offer cannot outlive the envelope.
    assert_eq!(o["offer"]["expires_at_ms"], expires.to_string());
    accept(h, "a", o["offer"]["offer_id"].as_str().unwrap()).await;
    // Still issued a millisecond before its expiry.
    h.clock.advance(119_999);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(h.envelope_state(&id).await, "issued");
    h.clock.advance(1);
    let v = h.aegis.decide("v", SCOPE, "passed");
    let (status, err) = settle(h, "s", &id, "v", &v.hash.to_string()).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "ENVELOPE_EXPIRED")
    );
    oa_testkit::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { (h.envelope_state(&id).await == "expired").then_some(()) },
    )
    .await
    .expect("the sweeper expires the envelope");
    let defaults = h.receipts_of("oa.hydra.envelope_default_receipt.v1").await;
    assert_eq!(defaults.len(), 1);
    assert_eq!(
        (
            defaults[0].body["status"].as_str(),
            defaults[0].body["reason"].as_str()
        ),
        (Some("expired"), Some("expired"))
    );
    assert_eq!(h.account("pool").await.debits_pending_msat, 0);
    assert_eq!(open_envelopes(h, "agent-1").await, 0);
    let (status, err) = settle(h, "s", &id, "v", &v.hash.to_string()).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "ENVELOPE_EXPIRED")
    );
    assert_eq!(h.fake.total_sends(), 0);
    // The sweeper never expires twice.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        h.receipts_of("oa.hydra.envelope_default_receipt.v1")
            .await
            .len(),
        1
    );
    assert_eq!(events(h).await, ["envelope_issued", "envelope_expired"]);
    h.ledger_conserved().await;
}

#[tokio::test]
async fn offers_expire_are_renewed_and_are_accepted_once() {
    let h = Hydra::start().await;
    let e = intent(&h, "i", "agent-1", 1_000_000, "").await;
    let id = e["envelope_id"].as_str().unwrap();
    let first = offer(&h, "o1", id).await["offer"].clone();
    // A live offer is not replaced.
    let (status, err) = h
        .post(
            "/v1/credit/offer",
            json!({"idempotency_key": "o2", "envelope_id": id}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "OFFER_ALREADY_LIVE")
    );
    h.clock.advance(300_000);
    let (status, err) = h
        .post(
            "/v1/credit/envelope",
            json!({"idempotency_key": "a1", "offer_id": first["offer_id"]}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "OFFER_EXPIRED")
    );
    assert_eq!(h.account("pool").await.debits_pending_msat, 0);
    // A lapsed offer is renewed under a new key.
    let second = offer(&h, "o3", id).await["offer"].clone();
    assert_ne!(second["offer_id"], first["offer_id"]);
    let acc = accept(&h, "a1", second["offer_id"].as_str().unwrap()).await;
    assert_eq!(acc["envelope"]["state"], "ENVELOPE_STATE_ISSUED");
    let (status, err) = h
        .post(
            "/v1/credit/envelope",
            json!({"idempotency_key": "a2", "offer_id": second["offer_id"]}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "OFFER_ALREADY_USED")
    );
    let (status, err) = h
        .post(
            "/v1/credit/offer",
            json!({"idempotency_key": "o4", "envelope_id": id}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "INVALID_ENVELOPE_STATE")
    );
    let (status, err) = h
        .post(
            "/v1/credit/envelope",
            json!({"idempotency_key": "a3", "offer_id": first["offer_id"]}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "OFFER_NOT_FOUND")
    );
    assert_eq!(
        h.receipts_of("oa.hydra.envelope_issue_receipt.v1")
            .await
            .len(),
        1
    );
    // Another caller does not see this caller's envelopes.
    let aegis_token = h
        .ring
        .identity("aegis")
        .unwrap()
        .mint("hydra", &["hydra:credit"], Duration::from_secs(60))
        .unwrap();
    let (status, err) = h
        .call(
            "POST",
            "/v1/credit/offer",
            Some(&aegis_token),
            Some(&json!({"idempotency_key": "x", "envelope_id": id}).to_string()),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "ENVELOPE_NOT_FOUND")
    );
}

#[tokio::test]
async fn an_agent_has_at_most_the_configured_open_envelopes() {
    open_limit(&Hydra::start_with(&["--max-open-envelopes=2"]).await).await;
}

pub async fn open_limit(h: &Hydra) {
    let e1 = issued(h, "e1", "agent-1", 1_000_000, 1_000).await;
    issued(h, "e2", "agent-1", 1_000_000, 1_000).await;
    let e3 = intent(h, "i3", "agent-1", 1_000_000, "").await;
    let o3 = offer(h, "o3", e3["envelope_id"].as_str().unwrap()).await["offer"].clone();
    let body = json!({"idempotency_key": "a3", "offer_id": o3["offer_id"]});
    let (status, err) = h.post("/v1/credit/envelope", body.clone()).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "TOO_MANY_OPEN_ENVELOPES")
    );
    assert_eq!(err["error"]["reason_code"], "TOO_MANY_OPEN_ENVELOPES");
    assert_eq!(h.account("pool").await.debits_pending_msat, 2_000_000);
    // Another agent is not limited by this one.
    issued(h, "e4", "agent-2", 1_000_000, 1_000).await;
    // Once one ends, the refused acceptance (same key: nothing was recorded) goes through.
    let v = h.aegis.decide("v", SCOPE, "passed");
    let (s, _) = settle(h, "s", &e1, "v", &v.hash.to_string()).await;
    assert_eq!(s, StatusCode::OK);
    let (status, acc) = h.post("/v1/credit/envelope", body).await;
    assert_eq!(
        (status, acc["envelope"]["state"].as_str()),
        (StatusCode::OK, Some("ENVELOPE_STATE_ISSUED"))
    );
    assert_eq!(open_envelopes(h, "agent-1").await, 2);
    h.ledger_conserved().await;
}

#[tokio::test]
async fn the_pool_never_promises_more_than_it_holds() {
    pool_limit(&Hydra::start_with(&["--credit-pool-msat=15000000"]).await).await;
}

pub async fn pool_limit(h: &Hydra) {
    issued(h, "e1", "agent-1", 10_000_000, 1_000).await;
    let e = intent(h, "i2", "agent-2", 10_000_000, "").await;
    let o = offer(h, "o2", e["envelope_id"].as_str().unwrap()).await["offer"].clone();
    let (status, err) = h
        .post(
            "/v1/credit/envelope",
            json!({"idempotency_key": "a2", "offer_id": o["offer_id"]}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "CREDIT_DENIED")
    );
    assert_eq!(err["error"]["reason_code"], "POOL_EXHAUSTED");
    let pool = h.account("pool").await;
    assert_eq!(
        (pool.credits_posted_msat, pool.debits_pending_msat),
        (15_000_000, 10_000_000)
    );
    assert_eq!(
        h.receipts_of("oa.hydra.envelope_issue_receipt.v1")
            .await
            .len(),
        1
    );
    assert_eq!(
        h.envelope_state(e["envelope_id"].as_str().unwrap()).await,
        "offered"
    );
    h.ledger_conserved().await;
}

#[tokio::test]
async fn concurrent_settles_of_one_envelope_make_one_settlement() {
    concurrent_settles(&Hydra::start_with(&[]).await).await;
}

pub async fn concurrent_settles(h: &Hydra) {
    let id = issued(h, "e", "agent-1", 10_000_000, 7_000_000).await;
    let v = h.aegis.decide("ver", SCOPE, "passed");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let body = json!({"idempotency_key": format!("s{}", i % 8), "envelope_id": id,
                          "verification_id": "ver", "verification_receipt_hash": v.hash.to_string()});
        let router = h.router.clone();
        let token = h.token.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::builder()
                .method("POST")
                .uri("/v1/credit/settle")
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
    assert!(statuses.contains(&StatusCode::OK));
    assert_eq!(h.fake.total_sends(), 1);
    assert_eq!(h.envelope_state(&id).await, "settled");
    assert_eq!(
        h.receipts_of("oa.hydra.envelope_settlement_receipt.v1")
            .await
            .len(),
        1
    );
    assert_eq!(h.account("pool").await.debits_posted_msat, 7_000_000);
    h.ledger_conserved().await;
}

#[tokio::test]
async fn verification_problems_are_refused_and_change_nothing() {
    let h = Hydra::start().await;
    let id = issued(&h, "e", "agent-1", 10_000_000, 5_000_000).await;
    let good = h.aegis.decide("ver-ok", SCOPE, "passed");
    h.aegis.pending("ver-pending", SCOPE);
    let other_scope = h.aegis.decide("ver-scope", "another job", "passed");
    let rogue = h.aegis.decide_with(
        "ver-rogue",
        SCOPE,
        "passed",
        &oa_receipts::ReceiptKey::generate(),
    );
    let good_hash = good.hash.to_string();
    let cases = [
        (
            "ver-missing",
            good_hash.clone(),
            StatusCode::NOT_FOUND,
            "VERIFICATION_NOT_FOUND",
        ),
        (
            "ver-pending",
            good_hash.clone(),
            StatusCode::CONFLICT,
            "VERIFICATION_PENDING",
        ),
        (
            "ver-ok",
            other_scope.hash.to_string(),
            StatusCode::CONFLICT,
            "VERIFICATION_MISMATCH",
        ),
        (
            "ver-scope",
            other_scope.hash.to_string(),
            StatusCode::CONFLICT,
            "VERIFICATION_MISMATCH",
        ),
        (
            "ver-rogue",
            rogue.hash.to_string(),
            StatusCode::BAD_GATEWAY,
            "AEGIS_BAD_RECEIPT",
        ),
    ];
    for (vid, hash, want_status, want_code) in &cases {
        let (status, err) = settle(&h, "s", &id, vid, hash).await;
        assert_eq!(
            (status, code(&err)),
            (*want_status, *want_code),
            "{vid}: {err}"
        );
    }
    h.aegis.set_down(true);
    let (status, err) = settle(&h, "s", &id, "ver-ok", &good_hash).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::SERVICE_UNAVAILABLE, "AEGIS_UNAVAILABLE")
    );
    assert_eq!(err["error"]["retryable"], true);
    // Nothing changed: the envelope is issued, nothing was sent or receipted, and the key is free.
    assert_eq!(h.envelope_state(&id).await, "issued");
    assert_eq!(h.fake.total_sends(), 0);
    assert_eq!(h.receipt_count().await, 1);
    h.aegis.set_down(false);
    let (status, body) = settle(&h, "s", &id, "ver-ok", &good_hash).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["envelope"]["state"], "ENVELOPE_STATE_SETTLED");
}

#[tokio::test]
async fn the_cap_and_the_payee_bound_what_a_settlement_pays() {
    let h = Hydra::start().await;
    let v = h.aegis.decide("v", SCOPE, "passed");
    let vhash = v.hash.to_string();
    // The intent named no invoice: settle must bring one, within the cap.
    let e = intent(&h, "i1", "agent-1", 1_000_000, "").await;
    let id = e["envelope_id"].as_str().unwrap().to_owned();
    let o = offer(&h, "o1", &id).await;
    accept(&h, "a1", o["offer"]["offer_id"].as_str().unwrap()).await;
    let (status, err) = settle(&h, "s1", &id, "v", &vhash).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "INVOICE_REQUIRED")
    );
    let too_big = h.fake.invoice(1_000_001, Network::Regtest, HOUR);
    let (status, err) = h
        .post(
            "/v1/credit/settle",
            json!({"idempotency_key": "s1", "envelope_id": id, "verification_id": "v", "verification_receipt_hash": vhash, "invoice": too_big}),
        )
        .await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "CAP_EXCEEDED"));
    assert_eq!(err["error"]["reason_code"], "CAP_EXCEEDED");
    // An amountless invoice needs the amount.
    let any = h.fake.invoice(0, Network::Regtest, HOUR);
    let (status, err) = h
        .post(
            "/v1/credit/settle",
            json!({"idempotency_key": "s1", "envelope_id": id, "verification_id": "v", "verification_receipt_hash": vhash, "invoice": any}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "AMOUNT_REQUIRED")
    );
    let (status, body) = h
        .post(
            "/v1/credit/settle",
            json!({"idempotency_key": "s1", "envelope_id": id, "verification_id": "v", "verification_receipt_hash": vhash, "invoice": any, "amount_msat": "600000"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["envelope"]["paid_amount_msat"], "600000");

    // The intent named an invoice: a replacement must pay the same node.
    let id2 = issued(&h, "e2", "agent-1", 1_000_000, 500_000).await;
    let elsewhere = h.fake.invoice_of_other_node(500_000);
    let (status, err) = h
        .post(
            "/v1/credit/settle",
            json!({"idempotency_key": "s2", "envelope_id": id2, "verification_id": "v", "verification_receipt_hash": vhash, "invoice": elsewhere}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "PAYEE_MISMATCH")
    );
    assert_eq!(h.envelope_state(&id2).await, "issued");
    assert_eq!(h.fake.total_sends(), 1);
    h.ledger_conserved().await;
}

#[tokio::test]
async fn a_failed_provider_payment_returns_the_envelope_to_issued_for_a_new_invoice() {
    let h = Hydra::start().await;
    let id = issued(&h, "e", "agent-1", 1_000_000, 400_000).await;
    let v = h.aegis.decide("v", SCOPE, "passed");
    let vhash = v.hash.to_string();
    h.fake.set_mode(Mode::Fail);
    let (status, failed) = settle(&h, "s1", &id, "v", &vhash).await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!(failed["envelope"]["state"], "ENVELOPE_STATE_ISSUED");
    assert_eq!(failed["envelope"]["failure_code"], "NO_ROUTE");
    assert!(failed.get("receipt").is_none_or(Value::is_null));
    assert_eq!(h.account("pool").await.debits_pending_msat, 1_000_000);
    let (_, again) = settle(&h, "s1", &id, "v", &vhash).await;
    assert_eq!(again, failed);
    h.fake.set_mode(Mode::Pay);
    let fresh = h.fake.invoice(400_000, Network::Regtest, HOUR);
    let (status, done) = h
        .post(
            "/v1/credit/settle",
            json!({"idempotency_key": "s2", "envelope_id": id, "verification_id": "v", "verification_receipt_hash": vhash, "invoice": fresh}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["envelope"]["state"], "ENVELOPE_STATE_SETTLED");
    assert_eq!(h.fake.total_sends(), 2);
    assert_eq!(
        events(&h).await,
        [
            "envelope_issued",
            "envelope_settling",
            "envelope_payment_failed",
            "envelope_settling",
            "envelope_settled"
        ]
    );
    h.ledger_conserved().await;
}

#[tokio::test]
async fn a_settlement_in_flight_is_tracked_until_the_executor_answers() {
    let h = Hydra::start().await;
    let id = issued(&h, "e", "agent-1", 1_000_000, 300_000).await;
    let v = h.aegis.decide("v", SCOPE, "passed");
    h.fake.set_mode(Mode::Hang);
    let (status, body) = settle(&h, "s", &id, "v", &v.hash.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["envelope"]["state"], "ENVELOPE_STATE_SETTLING");
    // A second settle while it is in flight is refused, retryably.
    let (status, err) = settle(&h, "s-other", &id, "v", &v.hash.to_string()).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "INVALID_ENVELOPE_STATE")
    );
    assert_eq!(err["error"]["retryable"], true);
    // Past the expiry, a settling envelope is not expired.
    h.clock.advance(2 * HOUR_MS);
    h.fake.set_mode(Mode::Pay);
    let done = oa_testkit::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(25),
        || async {
            let (_, b) = settle(&h, "s", &id, "v", &v.hash.to_string()).await;
            (b["envelope"]["state"] == "ENVELOPE_STATE_SETTLED").then_some(b)
        },
    )
    .await
    .expect("the tracker completes the settlement");
    receipt(&done["receipt"]).verify().unwrap();
    assert_eq!(h.fake.total_sends(), 1);
    assert!(
        h.receipts_of("oa.hydra.envelope_default_receipt.v1")
            .await
            .is_empty()
    );
    h.ledger_conserved().await;
}

#[tokio::test]
async fn a_settlement_left_settling_by_a_crash_is_recovered() {
    let h = Hydra::start().await;
    let id = issued(&h, "e", "agent-1", 1_000_000, 300_000).await;
    let v = h.aegis.decide("v", SCOPE, "passed");
    h.fake.set_mode(Mode::Unavailable);
    let (status, body) = settle(&h, "s", &id, "v", &v.hash.to_string()).await;
    assert_eq!(
        (status, body["envelope"]["state"].as_str()),
        (StatusCode::OK, Some("ENVELOPE_STATE_SETTLING"))
    );
    h.fake.set_mode(Mode::Pay);
    // `recover` is what start-up runs; its tracker and the one already running ask the executor
    // under the same key, so the payment is made once.
    assert_eq!(h.app.recover().await.unwrap(), 1);
    oa_testkit::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(25),
        || async { (h.envelope_state(&id).await == "settled").then_some(()) },
    )
    .await
    .expect("recovered");
    assert_eq!(h.fake.total_sends(), 1);
    assert_eq!(
        h.receipts_of("oa.hydra.envelope_settlement_receipt.v1")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn envelope_receipts_pass_the_offline_audit_with_the_cross_service_rules() {
    audit(&Hydra::start_with(&[]).await).await;
}

pub async fn audit(h: &Hydra) {
    h.fake.set_fee(250);
    // Settled, defaulted on a failed verification, and expired.
    let settled = issued(h, "e1", "agent-1", 1_000_000, 600_000).await;
    let v = h.aegis.decide("v1", SCOPE, "passed");
    assert_eq!(
        settle(h, "s1", &settled, "v1", &v.hash.to_string()).await.0,
        StatusCode::OK
    );
    let failed = issued(h, "e2", "agent-1", 1_000_000, 600_000).await;
    let v = h.aegis.decide("v2", SCOPE, "failed");
    assert_eq!(
        settle(h, "s2", &failed, "v2", &v.hash.to_string()).await.0,
        StatusCode::OK
    );
    let lapsed = issued(h, "e3", "agent-1", 1_000_000, 600_000).await;
    h.clock.advance(HOUR_MS);
    oa_testkit::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { (h.envelope_state(&lapsed).await == "expired").then_some(()) },
    )
    .await
    .expect("expired");
    let report = h.audit(None).await;
    assert!(report.is_ok(), "{:?}", report.failures);
    assert_eq!(report.receipts(), 3 + 3 + 1 + 2);
    // Without Aegis's receipts, the settlement and the default lack links the rules require.
    let report = h.audit(Some("aegis")).await;
    let missing: Vec<&str> = report
        .failures
        .iter()
        .filter(|f| f.kind == oa_receipts::FailureKind::LinkMissing)
        .map(|f| f.receipt_id.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(missing.len(), 2, "{:?}", report.failures);
}
