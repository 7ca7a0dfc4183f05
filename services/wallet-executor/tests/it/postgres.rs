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

#[tokio::test]
async fn receives_sends_on_chain_and_acts_on_channels_on_postgres() {
    let Some(pg) = TestDb::postgres(&[]).await.unwrap() else {
        eprintln!("OA_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run");
        return;
    };
    let url = pg.url.clone();
    let h = Harness::start_on(Some(&url), &["--max-payment-msat=100000000000"]).await;
    let fee = oa_money::Msat::new(10_000).unwrap();

    // An invoice settled while the executor runs and one while it is stopped: two receipts,
    // gapless, after the restart.
    let mut c = h.receiver().await;
    let a = c
        .create_invoice(crate::receive::invoice_req("pg-inv-a", 4_000))
        .await
        .unwrap()
        .into_inner()
        .invoice
        .unwrap();
    let b = c
        .create_invoice(crate::receive::invoice_req("pg-inv-b", 5_000))
        .await
        .unwrap()
        .into_inner()
        .invoice
        .unwrap();
    h.sim.pay_from("hub", &a.bolt11, fee).unwrap();
    crate::receive::settled(&c, &a.payment_hash).await;
    let (dir, ring, config, sim) = h.stop().await;
    sim.pay_from("hub", &b.bolt11, fee).unwrap();
    let h = Harness::start_with(dir, ring, config, Some(sim)).await;
    let c = h.receiver().await;
    let done = crate::receive::settled(&c, &b.payment_hash).await;
    assert_eq!(done.invoice.unwrap().settle_index, 2);

    // An on-chain send, replayed by key.
    let mut t = h.treasurer().await;
    let send = wallet::SendCoinsRequest {
        idempotency_key: "pg-send".into(),
        address: crate::onchain::external_address(bitcoin::Network::Regtest),
        amount_msat: 20_000_000,
        sat_per_vbyte: 1,
    };
    let sent = t.send_coins(send.clone()).await.unwrap().into_inner();
    assert_eq!(t.send_coins(send).await.unwrap().into_inner(), sent);
    h.sim.mine_blocks(1).unwrap();

    // Open, confirm, close twice under two keys (one receipt), rebalance.
    let mut ops = h.ops().await;
    let merchant = h.sim.pubkey_of("merchant").unwrap();
    ops.open_channel(wallet::OpenChannelRequest {
        idempotency_key: "pg-open".into(),
        remote_pubkey: merchant.clone(),
        local_funding_msat: 200_000_000,
        push_msat: 0,
        private: false,
    })
    .await
    .unwrap();
    h.sim.mine_blocks(3).unwrap();
    let channels = ops
        .list_channels(wallet::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    let new = channels
        .iter()
        .find(|c| c.remote_pubkey == merchant)
        .unwrap()
        .chan_id;
    let close = |key: &str| wallet::CloseChannelRequest {
        idempotency_key: key.into(),
        chan_id: new,
        force: false,
    };
    let first = ops
        .close_channel(close("pg-close-1"))
        .await
        .unwrap()
        .into_inner();
    let second = ops
        .close_channel(close("pg-close-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);
    let hub = channels
        .iter()
        .find(|c| c.remote_pubkey == h.sim.pubkey_of("hub").unwrap())
        .unwrap()
        .chan_id;
    let rb = ops
        .rebalance(wallet::RebalanceRequest {
            idempotency_key: "pg-rebalance".into(),
            out_chan_id: hub,
            in_chan_id: channels
                .iter()
                .find(|c| c.remote_pubkey == h.sim.pubkey_of("router").unwrap())
                .unwrap()
                .chan_id,
            amount_msat: 10_000,
            fee_limit_msat: 100_000,
            timeout_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rb.receipt.is_some());

    let receipts = h.receipts().await;
    assert!(oa_receipts::verify_chain(&receipts).is_empty());
    let count = |schema: &str| receipts.iter().filter(|r| r.schema == schema).count();
    use wallet_executor::receipt::*;
    assert_eq!(count(ONCHAIN_SEND_SCHEMA), 1);
    assert_eq!(count(CHANNEL_ACTION_SCHEMA), 2);
    assert_eq!(count(REBALANCE_SCHEMA), 1);
    assert!(count(INVOICE_SETTLEMENT_SCHEMA) >= 2);
    h.stop().await;
    pg.cleanup().await.unwrap();
}
