//! Breakers over a sliding window of the (manual) clock: what opens them, what they halt, what
//! they never halt, how they close, and how the health and status routes explain them.

use std::time::Duration;

use http::StatusCode;
use oa_invoice::Network;
use serde_json::{Value, json};

use crate::{
    credit::{accept, code, intent, issued, offer, ok, settle},
    fake::Mode,
    harness::Hydra,
};

const HOUR: Duration = Duration::from_secs(3600);
const SCOPE: &str = "job-42: summarize the filings";

async fn health(h: &Hydra) -> Value {
    let (status, body) = h
        .call(
            "GET",
            "/internal/v1/hydra/risk/health",
            Some(&h.token.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn breaker<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap()
}

async fn pay(h: &Hydra, key: &str, amount: u64) {
    let inv = h.fake.invoice(amount, Network::Regtest, HOUR);
    let q = ok(
        h,
        "/v1/liquidity/quote_pay",
        json!({"idempotency_key": format!("{key}-q"), "invoice": inv, "max_fee_msat": "10000"}),
    )
    .await;
    ok(
        h,
        "/v1/liquidity/pay",
        json!({"idempotency_key": key, "quote_id": q["quote"]["quote_id"]}),
    )
    .await;
}

pub const PAYMENT_BREAKER_ARGS: [&str; 4] = [
    "--breaker-window-secs=600",
    "--breaker-min-samples=4",
    "--breaker-payment-failure-bps=5000",
    "--breaker-large-settlement-msat=500000",
];

#[tokio::test]
async fn payment_failures_in_the_window_halt_new_envelopes_and_large_settlements() {
    payment_breaker(&Hydra::start_with(&PAYMENT_BREAKER_ARGS).await).await;
}

/// Also run on PostgreSQL.
pub async fn payment_breaker(h: &Hydra) {
    let before = health(h).await;
    assert_eq!(before["state"], "ok");
    let p = breaker(&before, "payment_failure_rate");
    assert_eq!(
        (p["state"].as_str(), p["samples"].as_str()),
        (Some("closed"), Some("0"))
    );
    assert!(
        p["why"]
            .as_str()
            .unwrap()
            .contains("fewer than the 4 needed"),
        "{p}"
    );
    assert_eq!(before["pool_available_msat"], "10000000000");

    // Set up before the breaker opens: a large and a small envelope, and a live offer.
    let large = issued(h, "large", "agent-1", 1_000_000, 600_000).await;
    let small = issued(h, "small", "agent-2", 1_000_000, 100_000).await;
    let doomed = issued(h, "doomed", "agent-6", 1_000_000, 100_000).await;
    let pending = intent(h, "i-p", "agent-3", 1_000_000, "").await;
    let live = offer(h, "o-p", pending["envelope_id"].as_str().unwrap()).await;

    // Two of four payments fail: 5 000 bps, at the threshold, with enough samples.
    pay(h, "p1", 1_000).await;
    pay(h, "p2", 1_000).await;
    h.fake.set_mode(Mode::Fail);
    pay(h, "p3", 1_000).await;
    pay(h, "p4", 1_000).await;
    h.fake.set_mode(Mode::Pay);
    let open = health(h).await;
    assert_eq!(open["state"], "halted");
    assert_eq!(
        open["halted"],
        json!(["large_settlements", "new_envelopes"])
    );
    let p = breaker(&open, "payment_failure_rate");
    assert_eq!(
        (
            p["state"].as_str(),
            p["failures"].as_str(),
            p["samples"].as_str(),
            p["rate_bps"].as_u64()
        ),
        (Some("open"), Some("2"), Some("4"), Some(5_000))
    );
    assert!(
        p["why"].as_str().unwrap().contains("2 of 4 payments"),
        "{p}"
    );
    assert_eq!(breaker(&open, "envelope_loss_rate")["state"], "closed");
    assert_eq!(open["open_envelopes"], "3");
    assert_eq!(open["open_exposure_msat"], "3000000");
    assert_eq!(open["pool_reserved_msat"], "3000000");
    let (_, status) = h
        .call("GET", "/v1/liquidity/status", Some(&h.token.clone()), None)
        .await;
    assert_eq!(status["breaker_state"], "open");
    assert_eq!(status["breakers"].as_array().unwrap().len(), 2);

    // Halted, each with the breaker's reason code, and nothing recorded.
    let receipts = h.receipt_count().await;
    let fresh = intent(h, "i-f", "agent-4", 1_000_000, "").await;
    let (st, err) = h
        .post(
            "/v1/credit/offer",
            json!({"idempotency_key": "o-f", "envelope_id": fresh["envelope_id"]}),
        )
        .await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::SERVICE_UNAVAILABLE, "BREAKER_OPEN")
    );
    assert_eq!(err["error"]["reason_code"], "BREAKER_PAYMENT_FAILURE_RATE");
    assert_eq!(err["error"]["retryable"], true);
    let (st, err) = h
        .post(
            "/v1/credit/envelope",
            json!({"idempotency_key": "a-p", "offer_id": live["offer"]["offer_id"]}),
        )
        .await;
    assert_eq!(
        (st, err["error"]["reason_code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("BREAKER_PAYMENT_FAILURE_RATE")
        )
    );
    let v_large = h.aegis.decide("v-large", SCOPE, "passed").hash.to_string();
    let (st, err) = settle(h, "s-large", &large, "v-large", &v_large).await;
    assert_eq!(
        (st, err["error"]["reason_code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("BREAKER_PAYMENT_FAILURE_RATE")
        )
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("500000 msat or more"),
        "{err}"
    );
    assert_eq!(h.envelope_state(&large).await, "issued");
    assert_eq!(h.receipt_count().await, receipts);

    // Never halted: a failed verification defaults (it removes risk) ...
    let v = h.aegis.decide("v-doomed", SCOPE, "failed");
    let (st, body) = settle(h, "s-doomed", &doomed, "v-doomed", &v.hash.to_string()).await;
    assert_eq!(
        (st, body["envelope"]["state"].as_str()),
        (StatusCode::OK, Some("ENVELOPE_STATE_DEFAULTED"))
    );
    // ... and a small settlement pays. Its success makes it 2 of 5 (4 000 bps): closed again.
    let v = h.aegis.decide("v-small", SCOPE, "passed");
    let (st, body) = settle(h, "s-small", &small, "v-small", &v.hash.to_string()).await;
    assert_eq!(
        (st, body["envelope"]["state"].as_str()),
        (StatusCode::OK, Some("ENVELOPE_STATE_SETTLED"))
    );
    let closed = health(h).await;
    assert_eq!(closed["state"], "ok");
    assert_eq!(breaker(&closed, "payment_failure_rate")["rate_bps"], 4_000);
    let (st, body) = settle(h, "s-large", &large, "v-large", &v_large).await;
    assert_eq!(
        (st, body["envelope"]["state"].as_str()),
        (StatusCode::OK, Some("ENVELOPE_STATE_SETTLED"))
    );

    // Open again, then the window slides past the failures and it closes by itself.
    h.fake.set_mode(Mode::Fail);
    for k in ["p5", "p6", "p7", "p8"] {
        pay(h, k, 1_000).await;
    }
    h.fake.set_mode(Mode::Pay);
    assert_eq!(health(h).await["state"], "halted");
    h.clock.advance(600_000);
    let slid = health(h).await;
    assert_eq!(slid["state"], "ok");
    assert_eq!(breaker(&slid, "payment_failure_rate")["samples"], "0");
    let again = intent(h, "i-g", "agent-5", 1_000_000, "").await;
    offer(h, "o-g", again["envelope_id"].as_str().unwrap()).await;
    h.ledger_conserved().await;
}

#[tokio::test]
async fn envelope_losses_in_the_window_halt_new_envelopes_but_not_settlements() {
    let h = Hydra::start_with(&[
        "--breaker-window-secs=7200",
        "--breaker-min-samples=2",
        "--breaker-loss-bps=5000",
        "--breaker-large-settlement-msat=1",
    ])
    .await;
    let a = issued(&h, "a", "agent-1", 1_000_000, 200_000).await;
    let b = issued(&h, "b", "agent-2", 1_000_000, 200_000).await;
    // c lives three hours, so it is still issued when the breaker opens.
    let inv = h.fake.invoice(200_000, Network::Regtest, 3 * HOUR);
    let c = ok(
        &h,
        "/v1/credit/intent",
        json!({"idempotency_key": "i-c", "agent_id": "agent-3", "provider": {"provider_id": "p", "invoice": inv},
               "scope": SCOPE, "cap_msat": "1000000", "expires_at_ms": (h.clock_ms() + 3 * 3_600_000).to_string()}),
    )
    .await["envelope"]["envelope_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = offer(&h, "o-c", &c).await;
    accept(&h, "a-c", o["offer"]["offer_id"].as_str().unwrap()).await;
    // One loss of one ended envelope: below the two samples needed.
    let v = h.aegis.decide("va", SCOPE, "failed");
    settle(&h, "sa", &a, "va", &v.hash.to_string()).await;
    assert_eq!(health(&h).await["state"], "ok");
    // An expiry is a loss too: 2 of 2.
    h.clock.advance(3_600_000);
    oa_testkit::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { (h.envelope_state(&b).await == "expired").then_some(()) },
    )
    .await
    .expect("expired");
    let hl = health(&h).await;
    let l = breaker(&hl, "envelope_loss_rate");
    assert_eq!(
        (
            l["state"].as_str(),
            l["failures"].as_str(),
            l["samples"].as_str(),
            l["rate_bps"].as_u64()
        ),
        (Some("open"), Some("2"), Some("2"), Some(10_000))
    );
    assert_eq!(hl["halted"], json!(["new_envelopes"]));
    assert_eq!(breaker(&hl, "payment_failure_rate")["state"], "closed");
    let fresh = intent(&h, "i-f", "agent-5", 1_000_000, "").await;
    let (st, err) = h
        .post(
            "/v1/credit/offer",
            json!({"idempotency_key": "o-f", "envelope_id": fresh["envelope_id"]}),
        )
        .await;
    assert_eq!(
        (st, err["error"]["reason_code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("BREAKER_ENVELOPE_LOSS_RATE")
        )
    );
    // Settling verified work is not halted by losses, whatever its size.
    let v = h.aegis.decide("vc", SCOPE, "passed");
    let (st, body) = settle(&h, "sc", &c, "vc", &v.hash.to_string()).await;
    assert_eq!(
        (st, body["envelope"]["state"].as_str()),
        (StatusCode::OK, Some("ENVELOPE_STATE_SETTLED"))
    );
    h.ledger_conserved().await;
}
