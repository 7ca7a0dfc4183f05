//! The executor on PostgreSQL (the production store): the same exactly-once, recovery and
//! receipt behaviour as on SQLite. Runs when `OA_TEST_POSTGRES_URL` names a server.

use std::time::Duration;

use oa_proto::wallet::{self, PaymentStatus};
use oa_store::testing::TestDb;

use crate::harness::{Harness, error_code, pay_req};

#[tokio::test]
async fn pays_once_refuses_a_second_send_and_recovers_on_postgres() {
    let Some(pg) = TestDb::postgres(&[]).await.unwrap() else {
        eprintln!("OA_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run");
        return;
    };
    let url = pg.url.clone();
    let h = Harness::start_on(Some(&url), &[]).await;
    let c = h.hydra().await;

    // Many callers race to pay one invoice under different keys: one send, one winner.
    let inv = h.invoice("merchant", 30_000);
    let hash = oa_invoice::decode(&inv).unwrap().payment_hash;
    let mut racers = Vec::new();
    for i in 0..8 {
        let (mut c, inv) = (c.clone(), inv.clone());
        racers.push(tokio::spawn(async move {
            c.pay_invoice(pay_req(&format!("race-{i}"), &inv, 5_000))
                .await
        }));
    }
    let mut won = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(resp) => {
                won += 1;
                let resp = resp.into_inner();
                assert_eq!(resp.payment.unwrap().status(), PaymentStatus::Succeeded);
            }
            Err(e) => assert!(
                ["PAYMENT_IN_FLIGHT", "PAYMENT_ALREADY_SUCCEEDED"]
                    .contains(&error_code(&e).as_str()),
                "{e:?}"
            ),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(h.sim.send_count(&hash), 1);

    // A failure gives its amount back to the window and has a receipt.
    let mut c2 = c.clone();
    let failed = c2
        .pay_invoice(pay_req("fail", &h.invoice("merchant", 30_000), 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.payment.unwrap().failure_code, "NO_ROUTE");

    // In flight across a restart: tracked, not re-sent.
    let inv = h.invoice("carol", 3_000);
    let held = oa_invoice::decode(&inv).unwrap().payment_hash;
    h.sim.hang(held);
    let mut req = pay_req("held", &inv, 0);
    req.timeout_ms = 20;
    let first = c2.pay_invoice(req).await.unwrap().into_inner();
    assert_eq!(first.payment.unwrap().status(), PaymentStatus::InFlight);
    let (dir, ring, config, sim) = h.stop().await;
    sim.release(&held);
    let h = Harness::start_with(dir, ring, config, Some(sim)).await;
    let c = h.hydra().await;
    let done = oa_testkit::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        let mut c = c.clone();
        async move {
            let r = c
                .get_payment(wallet::GetPaymentRequest {
                    payment_hash: held.to_string(),
                })
                .await
                .ok()?
                .into_inner();
            (r.payment.as_ref()?.status() == PaymentStatus::Succeeded).then_some(r)
        }
    })
    .await
    .expect("recovered on PostgreSQL");
    let r = oa_service::receipts::from_proto(done.receipt.as_ref().unwrap()).unwrap();
    r.verify().unwrap();
    // Three terminal payments, three receipts in one chain.
    assert_eq!(r.log_index, 2);
    assert_eq!(h.sim.send_count(&held), 1);
    h.stop().await;
    pg.cleanup().await.unwrap();
}
