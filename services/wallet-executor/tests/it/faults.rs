//! Each fault of the simulated network, driven through the custody channel. Every test holds the
//! payment in flight first (so the in-flight state is observed, not assumed), injects the fault,
//! lets the payment go, and asserts the whole sequence: what the caller saw, what the node went
//! through, the receipt, and that the hash was sent exactly once.

use std::time::Duration;

use oa_invoice::PaymentHash;
use oa_money::Msat;
use oa_proto::wallet::{self, PaymentStatus};
use wallet_executor::node::{FailureCode, PayState};

use crate::harness::{Client, Harness, pay_req};

async fn status_of(c: &mut Client, hash: &PaymentHash) -> wallet::PaymentResponse {
    c.get_payment(wallet::GetPaymentRequest {
        payment_hash: hash.to_string(),
    })
    .await
    .unwrap()
    .into_inner()
}

async fn wait_terminal(c: &Client, hash: &PaymentHash) -> wallet::PaymentResponse {
    oa_testkit::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        let mut c = c.clone();
        async move {
            let r = status_of(&mut c, hash).await;
            (r.payment.as_ref()?.status() != PaymentStatus::InFlight).then_some(r)
        }
    })
    .await
    .expect("the payment reaches a terminal state")
}

/// Starts a payment held in flight, applies `fault`, releases it, and returns the statuses the
/// caller observed (first answer, a read while held, the terminal read) and the terminal
/// response.
async fn drive(
    h: &Harness,
    invoice: &str,
    fee_limit_msat: u64,
    fault: impl FnOnce(&Harness),
) -> (Vec<PaymentStatus>, wallet::PaymentResponse, PaymentHash) {
    let mut c = h.hydra().await;
    let hash = oa_invoice::decode(invoice).unwrap().payment_hash;
    h.sim.hang(hash);
    let mut req = pay_req(&format!("k-{hash}"), invoice, fee_limit_msat);
    req.timeout_ms = 50;
    let first = c.pay_invoice(req).await.unwrap().into_inner();
    assert!(first.receipt.is_none(), "no receipt while in flight");
    let held = status_of(&mut c, &hash).await;
    fault(h);
    h.sim.release(&hash);
    let done = wait_terminal(&c, &hash).await;
    let seen = [&first, &held, &done]
        .iter()
        .map(|r| r.payment.as_ref().unwrap().status())
        .collect();
    (seen, done, hash)
}

fn failed_with(
    h: &Harness,
    seen: &[PaymentStatus],
    done: &wallet::PaymentResponse,
    hash: &PaymentHash,
    code: FailureCode,
    reason: &str,
) {
    assert_eq!(
        seen,
        [
            PaymentStatus::InFlight,
            PaymentStatus::InFlight,
            PaymentStatus::Failed
        ]
    );
    let p = done.payment.as_ref().unwrap();
    assert_eq!(
        (p.failure_code.as_str(), p.failure_reason.as_str()),
        (code.as_str(), reason)
    );
    assert_eq!(p.fee_msat, 0);
    assert!(p.preimage.is_empty());
    let r = oa_service::receipts::from_proto(done.receipt.as_ref().unwrap()).unwrap();
    r.verify().unwrap();
    assert_eq!(r.body["status"], "failed");
    assert_eq!(r.body["failure_code"], code.as_str());
    assert_eq!(
        h.sim.history(hash),
        vec![
            PayState::InFlight,
            PayState::Failed {
                code,
                reason: reason.into()
            }
        ]
    );
    assert_eq!(h.sim.send_count(hash), 1);
}

#[tokio::test]
async fn a_payee_going_offline_fails_the_payment_in_flight_then_failed() {
    let h = Harness::start(&[]).await;
    let inv = h.invoice("carol", 4_000);
    let (seen, done, hash) =
        drive(&h, &inv, 0, |h| h.sim.set_online("carol", false).unwrap()).await;
    failed_with(
        &h,
        &seen,
        &done,
        &hash,
        FailureCode::PeerOffline,
        "the payee's node is offline",
    );
    h.stop().await;
}

#[tokio::test]
async fn a_routing_peer_offline_fails_with_peer_offline() {
    let h = Harness::start(&[]).await;
    let inv = h.invoice("dave", 20_000);
    let (seen, done, hash) = drive(&h, &inv, 5_000, |h| {
        h.sim.set_online("router", false).unwrap()
    })
    .await;
    failed_with(
        &h,
        &seen,
        &done,
        &hash,
        FailureCode::PeerOffline,
        "no usable route: a node on the route is offline",
    );
    h.stop().await;
}

#[tokio::test]
async fn no_route_within_the_htlc_limits_fails_with_no_route() {
    let h = Harness::start(&[]).await;
    // 25k sat to dave: above router's 20k sat maximum HTLC towards dave.
    let inv = h.invoice("dave", 25_000_000);
    let (seen, done, hash) = drive(&h, &inv, 100_000, |_| {}).await;
    failed_with(
        &h,
        &seen,
        &done,
        &hash,
        FailureCode::NoRoute,
        "no usable route: the amount is outside a channel's HTLC limits",
    );
    h.stop().await;
}

#[tokio::test]
async fn liquidity_drained_while_in_flight_fails_with_insufficient_balance() {
    let h = Harness::start(&[]).await;
    let inv = h.invoice("carol", 9_000);
    let (seen, done, hash) = drive(&h, &inv, 0, |h| {
        h.sim.shift_liquidity("wallet", "carol", Msat::MAX).unwrap();
    })
    .await;
    failed_with(
        &h,
        &seen,
        &done,
        &hash,
        FailureCode::InsufficientBalance,
        "no usable route: our channel lacks the outbound liquidity",
    );
    h.stop().await;
}

#[tokio::test]
async fn a_remote_channel_without_liquidity_fails_with_no_route() {
    let h = Harness::start(&[]).await;
    let inv = h.invoice("dave", 15_000_000);
    let (seen, done, hash) = drive(&h, &inv, 100_000, |h| {
        h.sim.shift_liquidity("router", "dave", Msat::MAX).unwrap();
    })
    .await;
    failed_with(
        &h,
        &seen,
        &done,
        &hash,
        FailureCode::NoRoute,
        "no usable route: a channel on the route lacks the liquidity",
    );
    h.stop().await;
}

#[tokio::test]
async fn an_invoice_cancelled_while_in_flight_is_rejected_by_the_payee() {
    let h = Harness::start(&[]).await;
    let inv = h.invoice("carol", 2_500);
    let (seen, done, hash) = drive(&h, &inv, 0, |h| {
        let hash = oa_invoice::decode(&h.invoice("carol", 1))
            .unwrap()
            .payment_hash;
        assert!(h.sim.cancel_invoice(&hash));
    })
    .await;
    // That cancelled another invoice; this one is still payable.
    assert_eq!(seen.last(), Some(&PaymentStatus::Succeeded));
    assert_eq!(h.sim.send_count(&hash), 1);

    let inv = h.invoice("carol", 2_500);
    let (seen, done2, hash) = drive(&h, &inv, 0, |h| {
        let hash = oa_invoice::decode(&inv).unwrap().payment_hash;
        assert!(h.sim.cancel_invoice(&hash));
    })
    .await;
    failed_with(
        &h,
        &seen,
        &done2,
        &hash,
        FailureCode::IncorrectPaymentDetails,
        "the invoice was cancelled",
    );
    assert_eq!(
        h.sim.invoice_state(&hash),
        Some(wallet_executor::node::sim::InvoiceState::Cancelled)
    );
    drop(done);
    h.stop().await;
}

#[tokio::test]
async fn a_crash_between_send_and_result_is_tracked_after_restart_never_resent() {
    let h = Harness::start(&[]).await;
    let mut c = h.hydra().await;
    let inv = h.invoice("merchant", 40_000);
    let hash = oa_invoice::decode(&inv).unwrap().payment_hash;
    h.sim.crash_after_send(hash);
    let mut req = pay_req("k-crash", &inv, 5_000);
    req.timeout_ms = 50;
    let first = c.pay_invoice(req.clone()).await.unwrap().into_inner();
    assert_eq!(first.payment.unwrap().status(), PaymentStatus::InFlight);
    // The node paid; the executor does not know yet.
    assert_eq!(
        h.sim.invoice_state(&hash),
        Some(wallet_executor::node::sim::InvoiceState::Settled)
    );
    assert_eq!(
        status_of(&mut c, &hash).await.payment.unwrap().status(),
        PaymentStatus::InFlight
    );
    let (dir, ring, config, sim) = h.stop().await;

    sim.reconnect();
    let h = Harness::start_with(dir, ring, config, Some(sim)).await;
    let c = h.hydra().await;
    let done = wait_terminal(&c, &hash).await;
    let p = done.payment.as_ref().unwrap();
    assert_eq!(p.status(), PaymentStatus::Succeeded);
    assert_eq!(p.fee_msat, 1_004);
    oa_service::receipts::from_proto(done.receipt.as_ref().unwrap())
        .unwrap()
        .verify()
        .unwrap();
    assert!(matches!(
        h.sim.history(&hash).as_slice(),
        [PayState::InFlight, PayState::Succeeded { .. }]
    ));
    assert_eq!(h.sim.send_count(&hash), 1);
    // The caller's retry replays the terminal answer.
    let mut c = c;
    let replay = c.pay_invoice(req).await.unwrap().into_inner();
    assert_eq!(replay, done);
    assert_eq!(h.sim.send_count(&hash), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_payment_the_node_never_got_is_recorded_as_not_sent() {
    let h = Harness::start(&[]).await;
    let mut c = h.hydra().await;
    let inv = h.invoice("carol", 6_000);
    let hash = oa_invoice::decode(&inv).unwrap().payment_hash;
    h.sim.hang(hash);
    let mut req = pay_req("k-lost", &inv, 0);
    req.timeout_ms = 20;
    let first = c.pay_invoice(req).await.unwrap().into_inner();
    assert_eq!(first.payment.unwrap().status(), PaymentStatus::InFlight);
    let (dir, ring, config, _old) = h.stop().await;

    // The node comes back without any memory of the payment (a wiped node, same keys).
    let fresh = wallet_executor::node::sim::SimNetwork::default_topology(
        config.sim_seed,
        config.network,
        std::sync::Arc::new(oa_service::SystemClock),
    );
    let h = Harness::start_with(dir, ring, config, Some(fresh)).await;
    let c = h.hydra().await;
    let done = wait_terminal(&c, &hash).await;
    let p = done.payment.as_ref().unwrap();
    assert_eq!(p.status(), PaymentStatus::Failed);
    assert_eq!(p.failure_code, "NOT_SENT");
    assert_eq!(h.sim.send_count(&hash), 0);
    h.stop().await;
}

#[tokio::test]
async fn an_invoice_expiring_while_in_flight_is_rejected_by_the_payee() {
    let clock = oa_service::ManualClock::new(oa_auth::unix_now_secs() * 1_000);
    let dir = tempfile::tempdir().unwrap();
    let ring = oa_testkit::DevKeyring::ensure(dir.path()).unwrap();
    let config = crate::harness::config_on(dir.path(), &ring, None, &[]);
    let h =
        Harness::start_clocked(dir, ring, config, None, std::sync::Arc::new(clock.clone())).await;
    let inv = h
        .sim
        .create_invoice(
            "carol",
            Some(Msat::new(5_000).unwrap()),
            "expires soon",
            Duration::from_secs(60),
        )
        .unwrap();
    let (seen, done, hash) = drive(&h, &inv.bolt11, 0, |_| clock.advance(61_000)).await;
    failed_with(
        &h,
        &seen,
        &done,
        &hash,
        FailureCode::IncorrectPaymentDetails,
        "the invoice has expired",
    );
    assert_eq!(
        h.sim.invoice_state(&hash),
        Some(wallet_executor::node::sim::InvoiceState::Expired)
    );
    h.stop().await;
}
