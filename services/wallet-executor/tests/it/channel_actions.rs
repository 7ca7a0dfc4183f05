//! Channel actions through the custody channel: open -> pending -> confirmations -> active ->
//! close -> closed with the balance back on chain; rebalances; the fee report and route fee
//! estimates; one receipt per action; typed refusals that change nothing.

use oa_money::Msat;
use oa_proto::wallet;
use wallet_executor::{
    node::{
        PayState,
        sim::{FORCE_CLOSE_CSV, FUNDING_CONFIRMATIONS, START_HEIGHT, STARTING_BALANCE_SAT, vsize},
    },
    receipt::{CHANNEL_ACTION_SCHEMA, REBALANCE_SCHEMA},
};

use crate::harness::{Client, Harness, error_code};

const SAT: u64 = 1_000;

fn open_req(key: &str, remote_pubkey: &str, funding_sat: u64) -> wallet::OpenChannelRequest {
    wallet::OpenChannelRequest {
        idempotency_key: key.into(),
        remote_pubkey: remote_pubkey.into(),
        local_funding_msat: funding_sat * SAT,
        push_msat: 0,
        private: false,
    }
}

fn close_req(key: &str, chan_id: u64, force: bool) -> wallet::CloseChannelRequest {
    wallet::CloseChannelRequest {
        idempotency_key: key.into(),
        chan_id,
        force,
    }
}

fn rebalance_req(
    key: &str,
    out_chan_id: u64,
    in_chan_id: u64,
    fee_limit_msat: u64,
) -> wallet::RebalanceRequest {
    wallet::RebalanceRequest {
        idempotency_key: key.into(),
        out_chan_id,
        in_chan_id,
        amount_msat: 100_000,
        fee_limit_msat,
        timeout_ms: 5_000,
    }
}

async fn channels(c: &mut Client) -> Vec<wallet::Channel> {
    c.list_channels(wallet::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels
}

async fn confirmed(c: &mut Client) -> u64 {
    c.wallet_balance(wallet::WalletBalanceRequest {})
        .await
        .unwrap()
        .into_inner()
        .confirmed_balance_msat
}

fn chan_to(list: &[wallet::Channel], pubkey: &str) -> wallet::Channel {
    list.iter()
        .find(|c| c.remote_pubkey == pubkey)
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_channel_opens_confirms_closes_and_its_balance_returns_on_chain() {
    let h = Harness::start(&[]).await;
    let mut ops = h.ops().await;
    let merchant = h.sim.pubkey_of("merchant").unwrap();
    let start = channels(&mut ops).await;
    assert_eq!(start.len(), 3);

    let opened = ops
        .open_channel(open_req("open-1", &merchant, 1_000_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((opened.funding_txid.len(), opened.output_index), (64, 0));
    let r = oa_service::receipts::from_proto(opened.receipt.as_ref().unwrap()).unwrap();
    r.verify().unwrap();
    assert_eq!(r.schema, CHANNEL_ACTION_SCHEMA);
    assert_eq!(r.body["action"], "open");
    assert_eq!(r.body["remote_pubkey"], merchant);
    assert_eq!(r.body["local_funding_msat"], "1000000000");
    assert_eq!(r.body["funding_txid"], opened.funding_txid);
    assert_eq!(r.body["funding_output_index"], "0");
    assert_eq!(r.body["requested_by"], "lightning-ops");
    // Replayed by key; another request under the key is a conflict.
    let again = ops
        .open_channel(open_req("open-1", &merchant, 1_000_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, opened);
    let e = ops
        .open_channel(open_req("open-1", &merchant, 2_000_000))
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "IDEMPOTENCY_CONFLICT");

    // Pending until FUNDING_CONFIRMATIONS, then listed with the short channel id of its block.
    assert_eq!(h.sim.pending_channels().len(), 1);
    for n in 1..FUNDING_CONFIRMATIONS {
        h.sim.mine_blocks(1).unwrap();
        assert_eq!(h.sim.pending_channels()[0].confirmations, n);
        assert_eq!(channels(&mut ops).await.len(), 3, "pending, not listed");
    }
    h.sim.mine_blocks(1).unwrap();
    let list = channels(&mut ops).await;
    assert_eq!(list.len(), 4);
    let new = chan_to(&list, &merchant);
    assert_eq!(new.chan_id >> 40, u64::from(START_HEIGHT + 1));
    assert_eq!(
        (new.capacity_msat, new.local_balance_msat, new.active),
        (1_000_000 * SAT, 1_000_000 * SAT, true)
    );

    // Cooperative close: receipted once, even when asked again under another key.
    let before_close = confirmed(&mut ops).await;
    let closing = ops
        .close_channel(close_req("close-1", new.chan_id, false))
        .await
        .unwrap()
        .into_inner();
    let r = oa_service::receipts::from_proto(closing.receipt.as_ref().unwrap()).unwrap();
    r.verify().unwrap();
    assert_eq!(r.body["action"], "close");
    assert_eq!(r.body["chan_id"], new.chan_id.to_string());
    assert_eq!(r.body["closing_txid"], closing.closing_txid);
    assert_eq!(r.body["local_balance_msat"], "1000000000");
    assert_eq!(r.body["force"], false);
    let twice = ops
        .close_channel(close_req("close-1b", new.chan_id, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(twice.closing_txid, closing.closing_txid);
    assert_eq!(twice.receipt, closing.receipt);
    assert_eq!(channels(&mut ops).await.len(), 3);
    let closed = ops
        .list_closed_channels(wallet::ListClosedChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    assert!(
        closed.is_empty(),
        "closed once the closing transaction confirms"
    );
    let height = h.sim.mine_blocks(1).unwrap();
    let closed = ops
        .list_closed_channels(wallet::ListClosedChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    assert_eq!(
        closed,
        vec![wallet::ClosedChannel {
            chan_id: new.chan_id,
            remote_pubkey: merchant.clone(),
            capacity_msat: 1_000_000 * SAT,
            settled_balance_msat: 1_000_000 * SAT,
            close_type: "COOPERATIVE".into(),
            closing_txid: closing.closing_txid.clone(),
            close_height: height,
        }]
    );
    assert_eq!(confirmed(&mut ops).await, before_close + 1_000_000 * SAT);

    // Force close of the channel with carol (1 BTC ours): back on chain only after the CSV
    // delay of FORCE_CLOSE_CSV confirmations.
    let carol = chan_to(
        &channels(&mut ops).await,
        &h.sim.pubkey_of("carol").unwrap(),
    );
    let before_force = confirmed(&mut ops).await;
    let forced = ops
        .close_channel(close_req("close-2", carol.chan_id, true))
        .await
        .unwrap()
        .into_inner();
    h.sim.mine_blocks(1).unwrap();
    let closed = ops
        .list_closed_channels(wallet::ListClosedChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    assert_eq!(closed[1].close_type, "LOCAL_FORCE");
    assert_eq!(closed[1].closing_txid, forced.closing_txid);
    h.sim.mine_blocks(FORCE_CLOSE_CSV - 2).unwrap();
    assert_eq!(confirmed(&mut ops).await, before_force);
    h.sim.mine_blocks(1).unwrap();
    assert_eq!(
        confirmed(&mut ops).await,
        before_force + carol.local_balance_msat
    );

    // One receipt per state change: open, close, force close.
    let receipts = h.receipts().await;
    assert!(oa_receipts::verify_chain(&receipts).is_empty());
    assert_eq!(
        receipts
            .iter()
            .filter(|r| r.schema == CHANNEL_ACTION_SCHEMA)
            .count(),
        3
    );
    // The funding came out of the on-chain wallet: 1_000_000 sat plus a 141 vbyte fee.
    let fee = vsize(1, 2) * 2;
    assert_eq!(before_close, (STARTING_BALANCE_SAT - 1_000_000 - fee) * SAT);
    h.stop().await;
}

#[tokio::test]
async fn bad_channel_actions_are_typed_and_change_nothing() {
    let h = Harness::start(&[]).await;
    let mut ops = h.ops().await;
    let merchant = h.sim.pubkey_of("merchant").unwrap();
    let before = (channels(&mut ops).await, confirmed(&mut ops).await);
    let router = chan_to(&before.0, &h.sim.pubkey_of("router").unwrap()).chan_id;
    let opens: Vec<(wallet::OpenChannelRequest, &str)> = vec![
        (open_req("", &merchant, 100_000), "INVALID_IDEMPOTENCY_KEY"),
        (open_req("k", "zz", 100_000), "INVALID_PUBKEY"),
        (open_req("k", &"04".repeat(33), 100_000), "INVALID_PUBKEY"),
        (open_req("k", &merchant, 0), "INVALID_AMOUNT"),
        (
            wallet::OpenChannelRequest {
                local_funding_msat: 100_000_500,
                ..open_req("k", &merchant, 0)
            },
            "INVALID_AMOUNT",
        ),
        (
            wallet::OpenChannelRequest {
                push_msat: 100_000 * SAT,
                ..open_req("k", &merchant, 100_000)
            },
            "INVALID_AMOUNT",
        ),
        // Refused by the node: a key of no node here, too small, more than the wallet holds.
        (
            open_req(
                "k",
                "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
                100_000,
            ),
            "NODE_REFUSED",
        ),
        (open_req("k", &merchant, 1_000), "NODE_REFUSED"),
        (open_req("k", &merchant, 15_000_000), "INSUFFICIENT_FUNDS"),
    ];
    for (req, code) in opens {
        let e = ops.open_channel(req.clone()).await.unwrap_err();
        assert_eq!(error_code(&e), code, "{req:?}");
    }
    let closes = [
        (close_req("k", 0, false), "INVALID_CHANNEL_ID"),
        (close_req("k", 4_242, false), "CHANNEL_NOT_FOUND"),
    ];
    for (req, code) in closes {
        let e = ops.close_channel(req).await.unwrap_err();
        assert_eq!(error_code(&e), code);
    }
    let rebalances = [
        (rebalance_req("k", router, router, 10), "INVALID_CHANNEL_ID"),
        (rebalance_req("k", 0, router, 10), "INVALID_CHANNEL_ID"),
        (
            wallet::RebalanceRequest {
                amount_msat: 0,
                ..rebalance_req("k", router, 7, 10)
            },
            "INVALID_AMOUNT",
        ),
        (rebalance_req("k", router, 7, 10), "CHANNEL_NOT_FOUND"),
    ];
    for (req, code) in rebalances {
        let e = ops.rebalance(req).await.unwrap_err();
        assert_eq!(error_code(&e), code);
    }
    // Nothing changed, nothing was receipted, and the key is free.
    assert_eq!(
        (channels(&mut ops).await, confirmed(&mut ops).await),
        before
    );
    assert!(h.receipts().await.is_empty());
    assert!(h.sim.pending_channels().is_empty());
    ops.open_channel(open_req("k", &merchant, 100_000))
        .await
        .unwrap();
    h.stop().await;
}

#[tokio::test]
async fn a_rebalance_moves_liquidity_charges_the_fee_and_has_a_receipt() {
    let h = Harness::start(&[]).await;
    // merchant needs liquidity towards hub for the circle wallet -> router -> merchant -> hub ->
    // wallet.
    h.sim
        .shift_liquidity("hub", "merchant", Msat::from_sat(1_000_000).unwrap())
        .unwrap();
    let mut ops = h.ops().await;
    let before = channels(&mut ops).await;
    let router = chan_to(&before, &h.sim.pubkey_of("router").unwrap());
    let hub = chan_to(&before, &h.sim.pubkey_of("hub").unwrap());
    let carol = chan_to(&before, &h.sim.pubkey_of("carol").unwrap());

    // Fees on the circle (see the sim's unit test): 1_001 + 1_001 + 1_011 = 3_013.
    let done = ops
        .rebalance(rebalance_req("rb-1", router.chan_id, hub.chan_id, 3_013))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status(), wallet::PaymentStatus::Succeeded);
    assert_eq!((done.amount_msat, done.fee_msat), (100_000, 3_013));
    let r = oa_service::receipts::from_proto(done.receipt.as_ref().unwrap()).unwrap();
    r.verify().unwrap();
    assert_eq!(r.schema, REBALANCE_SCHEMA);
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(r.body["fee_msat"], "3013");
    assert_eq!(r.body["out_chan_id"], router.chan_id.to_string());
    assert_eq!(r.body["in_chan_id"], hub.chan_id.to_string());
    assert_eq!(r.body["payment_hash"], done.payment_hash);
    let preimage: oa_invoice::Preimage = r.body["preimage"].as_str().unwrap().parse().unwrap();
    assert_eq!(preimage.payment_hash().to_string(), done.payment_hash);
    let after = channels(&mut ops).await;
    assert_eq!(
        router.local_balance_msat - chan_to(&after, &router.remote_pubkey).local_balance_msat,
        103_013
    );
    assert_eq!(
        chan_to(&after, &hub.remote_pubkey).local_balance_msat - hub.local_balance_msat,
        100_000
    );
    // Replayed by key, not paid again.
    let again = ops
        .rebalance(rebalance_req("rb-1", router.chan_id, hub.chan_id, 3_013))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, done);

    // A fee limit one short, and a channel with no way back: failed, with a receipt, nothing
    // moved.
    for (key, inbound, limit, reason) in [
        ("rb-2", hub.chan_id, 3_012, "fee limit"),
        ("rb-3", carol.chan_id, 1_000_000, "no circular route"),
    ] {
        let failed = ops
            .rebalance(rebalance_req(key, router.chan_id, inbound, limit))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(failed.status(), wallet::PaymentStatus::Failed);
        assert_eq!(failed.failure_code, "NO_ROUTE");
        assert!(failed.failure_reason.contains(reason), "{failed:?}");
        let r = oa_service::receipts::from_proto(failed.receipt.as_ref().unwrap()).unwrap();
        assert_eq!(r.body["status"], "failed");
        assert_eq!(r.body["fee_msat"], "0");
    }
    assert_eq!(channels(&mut ops).await, after);
    assert_eq!(h.receipts_of(REBALANCE_SCHEMA).await.len(), 3);
    h.stop().await;
}

#[tokio::test]
async fn fee_report_route_estimates_and_inbound_fees_through_the_custody_channel() {
    let h = Harness::start(&[]).await;
    let mut ops = h.ops().await;
    let list = channels(&mut ops).await;
    let hub = chan_to(&list, &h.sim.pubkey_of("hub").unwrap());

    // Our node discounts HTLCs arriving from hub by 500 msat: forwards to carol earn 501.
    let policy = wallet::ChannelPolicy {
        base_fee_msat: 1_000,
        fee_rate_ppm: 1,
        min_htlc_msat: 1,
        max_htlc_msat: hub.capacity_msat,
        time_lock_delta: 80,
        inbound_base_fee_msat: -500,
        inbound_fee_ppm: 0,
    };
    let changed = ops
        .update_channel_policy(wallet::UpdateChannelPolicyRequest {
            idempotency_key: "inbound".into(),
            chan_id: hub.chan_id,
            policy: Some(policy),
        })
        .await
        .unwrap()
        .into_inner();
    let r = oa_service::receipts::from_proto(changed.receipt.as_ref().unwrap()).unwrap();
    assert_eq!(r.body["inbound_base_fee_msat"], "-500");
    assert_eq!(r.body["inbound_fee_rate_ppm"], "0");
    let bad = wallet::ChannelPolicy {
        inbound_fee_ppm: -1_000_001,
        ..policy
    };
    let e = ops
        .update_channel_policy(wallet::UpdateChannelPolicyRequest {
            idempotency_key: "bad-inbound".into(),
            chan_id: hub.chan_id,
            policy: Some(bad),
        })
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "INVALID_REQUEST");
    for n in 0..3u64 {
        let inv = h.invoice("carol", 10_000 + n);
        let st = h
            .sim
            .pay_from("hub", &inv, Msat::new(10_000).unwrap())
            .unwrap();
        assert!(matches!(st, PayState::Succeeded { .. }), "{st:?}");
    }
    let report = ops
        .fee_report(wallet::FeeReportRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.channels.len(), 3);
    let hub_policy = report
        .channels
        .iter()
        .find(|c| c.chan_id == hub.chan_id)
        .unwrap()
        .policy
        .unwrap();
    assert_eq!(hub_policy.inbound_base_fee_msat, -500);
    assert_eq!(
        (
            report.day_fee_sum_msat,
            report.week_fee_sum_msat,
            report.month_fee_sum_msat
        ),
        (3 * 501, 3 * 501, 3 * 501)
    );

    // Route fee estimates: merchant through router (1 sat + 100 ppm), carol direct.
    let mut hydra = h.hydra().await;
    let est = hydra
        .estimate_route_fee(wallet::EstimateRouteFeeRequest {
            dest_pubkey: h.sim.pubkey_of("merchant").unwrap(),
            amount_msat: 50_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((est.fee_msat, est.time_lock_delay), (1_005, 58));
    for (req, code) in [
        (
            wallet::EstimateRouteFeeRequest {
                dest_pubkey: "nope".into(),
                amount_msat: 1,
            },
            "INVALID_PUBKEY",
        ),
        (
            wallet::EstimateRouteFeeRequest {
                dest_pubkey: h.sim.pubkey_of("carol").unwrap(),
                amount_msat: 0,
            },
            "INVALID_AMOUNT",
        ),
        (
            wallet::EstimateRouteFeeRequest {
                dest_pubkey: "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
                    .into(),
                amount_msat: 1_000,
            },
            "NODE_REFUSED",
        ),
    ] {
        let e = hydra.estimate_route_fee(req).await.unwrap_err();
        assert_eq!(error_code(&e), code);
    }
    h.stop().await;
}
