//! Approvals: a payment above the threshold waits with its budget reserved; an approver
//! (scope treasury:approve, not the requester) approves or denies it; it expires on the clock.

use std::time::Duration;

use http::StatusCode;
use oa_invoice::Network;
use oa_service::ManualClock;
use serde_json::{Value, json};

use crate::{
    fake::Mode,
    harness::{HOUR, Opts, Treasury, invoice, ms, payment_id},
};

fn policy(ttl_secs: u64, self_approval: bool) -> String {
    format!(
        "[approvals]\nabove_msat = 10000\nttl_secs = {ttl_secs}\nallow_self_approval = {self_approval}\n[[rules]]\nid = \"default\"\naction = \"pay\"\nrails = [\"direct_liquidity\"]\n"
    )
}

async fn treasury(clock: Option<ManualClock>) -> Treasury {
    Treasury::with(Opts {
        default_budget_msat: 100_000,
        policy: Some(policy(60, false)),
        clock,
        ..Opts::default()
    })
    .await
}

async fn waiting(t: &Treasury, key: &str, amount: u64) -> String {
    let (status, body) = t
        .pay(
            key,
            "agent-1",
            &invoice(amount, Network::Regtest, HOUR),
            100,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["payment"]["state"], "PAYMENT_STATE_PENDING_APPROVAL");
    assert_eq!(
        body["payment"]["decision"]["rule"],
        "approvals:above_threshold"
    );
    payment_id(&body)
}

async fn decide(t: &Treasury, token: &str, id: &str, verb: &str, key: &str) -> (StatusCode, Value) {
    t.post(
        &format!("/v1/treasury/approvals/{id}/{verb}"),
        token,
        &json!({"idempotency_key": key, "note": "ok by me"}),
    )
    .await
}

#[tokio::test]
async fn a_payment_above_the_threshold_waits_reserved_and_pays_once_approved() {
    let t = treasury(None).await;
    let id = waiting(&t, "k1", 20_000).await;
    // Reserved while it waits.
    assert_eq!(t.budget("agent-1").await["reserved_msat"], "20100");
    let (status, list) = t
        .call("GET", "/v1/treasury/approvals", Some(&t.approver()), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["payments"][0]["payment_id"], id.as_str());
    assert_eq!(t.hydra.quote_calls(), 0);

    let (status, done) = decide(&t, &t.approver(), &id, "approve", "a1").await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["payment"]["state"], "PAYMENT_STATE_SUCCEEDED");
    assert_eq!(done["payment"]["approver"], "alice");
    assert_eq!(done["receipt"]["body"]["approver"], "alice");
    assert_eq!(t.budget("agent-1").await["spent_msat"], "20007");
    assert_eq!(
        t.events_of(&id).await,
        [
            "payment.pending_approval",
            "payment.approved",
            "payment.in_flight",
            "payment.succeeded"
        ]
    );
    // The approval replays.
    assert_eq!(
        decide(&t, &t.approver(), &id, "approve", "a1").await,
        (status, done.clone())
    );
    let (status, again) = decide(&t, &t.approver(), &id, "approve", "a2").await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("APPROVAL_NOT_PENDING"))
    );
    let (status, again) = decide(&t, &t.approver(), &id, "deny", "d1").await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("APPROVAL_NOT_PENDING"))
    );
    assert_eq!(t.hydra.pays(), 1);
    t.ledger_conserved().await;
}

#[tokio::test]
async fn the_original_request_replays_its_end_once_decided() {
    let t = treasury(None).await;
    let inv = invoice(20_000, Network::Regtest, HOUR);
    let (status, first) = t.pay("k1", "agent-1", &inv, 100).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // While it waits, the same request answers its current state.
    assert_eq!(
        t.pay("k1", "agent-1", &inv, 100).await,
        (status, first.clone())
    );
    let id = payment_id(&first);
    let (status, _) = decide(&t, &t.approver(), &id, "approve", "a1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, replay) = t.pay("k1", "agent-1", &inv, 100).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(replay["payment"]["state"], "PAYMENT_STATE_SUCCEEDED");
    assert_eq!(replay, t.get_payment(&id).await);
}

#[tokio::test]
async fn a_denied_payment_ends_with_a_receipt_and_releases_its_reservation() {
    let t = treasury(None).await;
    let id = waiting(&t, "k1", 20_000).await;
    let (status, denied) = decide(&t, &t.approver(), &id, "deny", "d1").await;
    assert_eq!(status, StatusCode::OK, "{denied}");
    let p = &denied["payment"];
    assert_eq!(
        (
            p["state"].as_str(),
            p["failure_code"].as_str(),
            p["approver"].as_str()
        ),
        (
            Some("PAYMENT_STATE_DENIED"),
            Some("APPROVAL_DENIED"),
            Some("alice")
        )
    );
    let r = &denied["receipt"]["body"];
    assert_eq!(
        (
            r["state"].as_str(),
            r["reason_code"].as_str(),
            r["approver"].as_str()
        ),
        (Some("denied"), Some("denied_by_approver"), Some("alice"))
    );
    assert_eq!(t.budget("agent-1").await["reserved_msat"], "0");
    assert_eq!(t.budget("agent-1").await["available_msat"], "100000");
    assert_eq!(
        t.events_of(&id).await,
        ["payment.pending_approval", "payment.denied"]
    );
    assert_eq!(
        decide(&t, &t.approver(), &id, "deny", "d1").await,
        (status, denied)
    );
    assert_eq!(t.hydra.quote_calls(), 0);
    t.ledger_conserved().await;
}

#[tokio::test]
async fn approvals_expire_on_the_clock_and_a_late_approval_is_refused() {
    let clock = ManualClock::new(ms("2025-06-01T12:00:00Z"));
    let t = treasury(Some(clock.clone())).await;
    let swept = waiting(&t, "k1", 20_000).await;
    let late = waiting(&t, "k2", 20_000).await;
    assert_eq!(t.budget("agent-1").await["reserved_msat"], "40200");
    clock.advance(59_999);
    assert_eq!(t.payments.sweep().await.unwrap(), 0);
    clock.advance(1);
    // An approver who comes after the expiry, before the sweeper: refused, and the payment ends.
    let (status, err) = decide(&t, &t.approver(), &late, "approve", "a1").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("APPROVAL_EXPIRED"))
    );
    assert_eq!(t.payments.sweep().await.unwrap(), 1, "the other one");
    for id in [&swept, &late] {
        let v = t.get_payment(id).await;
        assert_eq!(
            (
                v["payment"]["state"].as_str(),
                v["payment"]["failure_code"].as_str()
            ),
            (Some("PAYMENT_STATE_DENIED"), Some("APPROVAL_EXPIRED"))
        );
        assert_eq!(v["receipt"]["body"]["reason_code"], "approval_expired");
        assert_eq!(
            t.events_of(id).await,
            ["payment.pending_approval", "payment.denied"]
        );
    }
    assert_eq!(t.budget("agent-1").await["reserved_msat"], "0");
    assert_eq!(t.payments.sweep().await.unwrap(), 0);
    t.ledger_conserved().await;
}

#[tokio::test]
async fn approvals_are_refused_to_the_requester_the_unscoped_and_for_what_is_not_waiting() {
    let t = treasury(None).await;
    let id = waiting(&t, "k1", 20_000).await;
    let before = t.snapshot().await;
    // The identity that asked may not approve its own payment, even holding the scope.
    let own = t.token_as("operator", &["treasury:approve"]);
    for verb in ["approve", "deny"] {
        let (status, err) = decide(&t, &own, &id, verb, "s1").await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("SELF_APPROVAL_FORBIDDEN"))
        );
    }
    // Pay and admin scopes are not the approver scope.
    let (status, _) = decide(&t, &t.token.clone(), &id, "approve", "s2").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, err) = decide(&t, &t.approver(), "pay_unknown", "approve", "s3").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("PAYMENT_NOT_FOUND"))
    );
    for (body, code) in [
        (json!({"note": "x"}), "INVALID_IDEMPOTENCY_KEY"),
        (
            json!({"idempotency_key": "b", "note": "x".repeat(257)}),
            "INVALID_REQUEST",
        ),
        (
            json!({"idempotency_key": "b", "why": "x"}),
            "INVALID_REQUEST",
        ),
    ] {
        let (status, err) = t
            .post(
                &format!("/v1/treasury/approvals/{id}/approve"),
                &t.approver(),
                &body,
            )
            .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}"
        );
    }
    let (status, _) = t
        .post(
            &format!("/v1/treasury/approvals/{}/approve", "x".repeat(65)),
            &t.approver(),
            &json!({"idempotency_key": "b"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(t.snapshot().await, before, "refusals change nothing");
    // A payment that never waited cannot be approved.
    let (status, paid) = t
        .pay(
            "k2",
            "agent-1",
            &invoice(1_000, Network::Regtest, HOUR),
            100,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err) = decide(&t, &t.approver(), &payment_id(&paid), "approve", "s4").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("APPROVAL_NOT_PENDING"))
    );
    // A policy may allow self-approval.
    t.set_policy("p", &policy(60, true)).await;
    let (status, done) = decide(&t, &own, &id, "approve", "s5").await;
    assert_eq!(
        (status, done["payment"]["state"].as_str()),
        (StatusCode::OK, Some("PAYMENT_STATE_SUCCEEDED")),
        "{done}"
    );
}

#[tokio::test]
async fn waiting_payments_hold_their_budget_so_approvals_cannot_overdraw_it() {
    let t = Treasury::with(Opts {
        default_budget_msat: 30_000,
        policy: Some(policy(60, false)),
        ..Opts::default()
    })
    .await;
    let _ = waiting(&t, "k1", 20_000).await;
    let (status, err) = t
        .pay(
            "k2",
            "agent-1",
            &invoice(20_000, Network::Regtest, HOUR),
            100,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["error"]["reason_code"], "agent_budget_exceeded");
}

#[tokio::test]
async fn hydra_down_after_an_approval_keeps_the_attempt_and_pays_when_it_returns() {
    let t = treasury(None).await;
    let id = waiting(&t, "k1", 20_000).await;
    t.hydra.set_mode(Mode::Down);
    let (status, v) = decide(&t, &t.approver(), &id, "approve", "a1").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["payment"]["state"], "PAYMENT_STATE_IN_FLIGHT");
    assert_eq!(t.budget("agent-1").await["reserved_msat"], "20100");
    t.hydra.set_mode(Mode::Pay);
    let done = oa_testkit::wait_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let v = t.get_payment(&id).await;
            (v["payment"]["state"] == "PAYMENT_STATE_SUCCEEDED").then_some(v)
        },
    )
    .await;
    assert!(done.is_some(), "the tracker pays it once Hydra is back");
    assert_eq!(t.hydra.pays(), 1);
    t.ledger_conserved().await;
}
