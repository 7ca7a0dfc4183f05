//! Unit tests of the simulated network.

#![allow(clippy::unwrap_used)]

use std::io::Write;

use bitcoin::CompressedPublicKey;
use futures::StreamExt;
use oa_service::ManualClock;

use super::*;
use crate::node::{CloseType, InvoiceStatus};

const T0: u64 = 1_700_000_000_000;

fn sim() -> (SimNetwork, ManualClock) {
    let clock = ManualClock::new(T0);
    let sim = SimNetwork::default_topology(7, Network::Regtest, Arc::new(clock.clone()));
    (sim, clock)
}

fn invoice(sim: &SimNetwork, alias: &str, amount_msat: u64) -> CreatedInvoice {
    sim.create_invoice(
        alias,
        Some(Msat::new(amount_msat).unwrap()),
        "t",
        Duration::from_secs(600),
    )
    .unwrap()
}

fn send(inv: &CreatedInvoice, amount_msat: u64, fee_limit_msat: u64) -> SendRequest {
    SendRequest {
        bolt11: inv.bolt11.clone(),
        payment_hash: inv.payment_hash,
        amount: Msat::new(amount_msat).unwrap(),
        fee_limit: Msat::new(fee_limit_msat).unwrap(),
        timeout: Duration::from_secs(1),
    }
}

fn code(state: &PayState) -> Option<FailureCode> {
    match state {
        PayState::Failed { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn invoices_move_from_open_to_settled_expired_or_cancelled() {
    let (sim, clock) = sim();
    let paid = invoice(&sim, "carol", 1_000);
    let cancelled = invoice(&sim, "carol", 1_000);
    let expired = invoice(&sim, "carol", 1_000);
    for i in [&paid, &cancelled, &expired] {
        assert_eq!(sim.invoice_state(&i.payment_hash), Some(InvoiceState::Open));
    }
    assert!(matches!(
        sim.pay(&send(&paid, 1_000, 0)).await.unwrap(),
        PayState::Succeeded { .. }
    ));
    assert_eq!(
        sim.invoice_state(&paid.payment_hash),
        Some(InvoiceState::Settled)
    );
    assert!(sim.cancel_invoice(&cancelled.payment_hash));
    assert!(!sim.cancel_invoice(&cancelled.payment_hash));
    assert_eq!(
        sim.invoice_state(&cancelled.payment_hash),
        Some(InvoiceState::Cancelled)
    );
    let st = sim.pay(&send(&cancelled, 1_000, 0)).await.unwrap();
    assert_eq!(
        st,
        failed(
            FailureCode::IncorrectPaymentDetails,
            "the invoice was cancelled"
        )
    );
    clock.advance(601_000);
    assert_eq!(
        sim.invoice_state(&expired.payment_hash),
        Some(InvoiceState::Expired)
    );
    let st = sim.pay(&send(&expired, 1_000, 0)).await.unwrap();
    assert_eq!(
        st,
        failed(
            FailureCode::IncorrectPaymentDetails,
            "the invoice has expired"
        )
    );
    // A settled invoice stays settled whatever the clock says.
    assert_eq!(
        sim.invoice_state(&paid.payment_hash),
        Some(InvoiceState::Settled)
    );
}

#[tokio::test]
async fn routes_take_the_cheapest_path_with_liquidity_and_fall_back() {
    let (sim, _) = sim();
    // Through router: 1 sat + 100 ppm of 50_000 msat (rounded up) = 1_005 msat.
    let a = invoice(&sim, "merchant", 50_000);
    assert_eq!(
        sim.pay(&send(&a, 50_000, 5_000)).await.unwrap(),
        PayState::Succeeded {
            preimage: match sim.track(&a.payment_hash).await.unwrap() {
                PayState::Succeeded { preimage, .. } => preimage,
                other => panic!("{other:?}"),
            },
            fee: Msat::new(1_005).unwrap(),
        }
    );
    // Drain router's side towards merchant: the sim falls back to hub (2 sat + 500 ppm).
    sim.shift_liquidity("router", "merchant", Msat::MAX)
        .unwrap();
    let b = invoice(&sim, "merchant", 50_000);
    match sim.pay(&send(&b, 50_000, 5_000)).await.unwrap() {
        PayState::Succeeded { fee, .. } => assert_eq!(fee, Msat::new(2_025).unwrap()),
        other => panic!("{other:?}"),
    }
    // Neither route fits a 10 msat fee limit.
    let c = invoice(&sim, "merchant", 50_000);
    let st = sim.pay(&send(&c, 50_000, 10)).await.unwrap();
    assert_eq!(code(&st), Some(FailureCode::NoRoute), "{st:?}");
}

#[tokio::test]
async fn htlc_limits_liquidity_and_offline_nodes_fail_with_their_reason() {
    let (sim, _) = sim();
    let small = invoice(&sim, "dave", 5_000); // below router's 10 sat minimum HTLC
    let big = invoice(&sim, "dave", 25_000_000); // above its 20k sat maximum
    let huge = invoice(&sim, "dave", 35_000_000); // above router's 30k sat balance
    for (inv, want) in [
        (
            &small,
            "no usable route: the amount is outside a channel's HTLC limits",
        ),
        (
            &big,
            "no usable route: the amount is outside a channel's HTLC limits",
        ),
        (
            &huge,
            "no usable route: a channel on the route lacks the liquidity",
        ),
    ] {
        let amount = oa_invoice::decode(&inv.bolt11).unwrap().amount.unwrap();
        let st = sim
            .pay(&send(inv, amount.as_u64(), 1_000_000))
            .await
            .unwrap();
        assert_eq!(st, failed(FailureCode::NoRoute, want));
    }
    sim.set_online("router", false).unwrap();
    let inv = invoice(&sim, "dave", 20_000);
    let st = sim.pay(&send(&inv, 20_000, 10_000)).await.unwrap();
    assert_eq!(
        st,
        failed(
            FailureCode::PeerOffline,
            "no usable route: a node on the route is offline"
        )
    );
    sim.set_online("carol", false).unwrap();
    let inv = invoice(&sim, "carol", 1_000);
    let st = sim.pay(&send(&inv, 1_000, 0)).await.unwrap();
    assert_eq!(code(&st), Some(FailureCode::PeerOffline));
    assert_eq!(
        sim.history(&inv.payment_hash),
        vec![PayState::InFlight, st.clone()]
    );
    let channels = sim.list_channels().await.unwrap();
    assert_eq!(channels.iter().filter(|c| !c.active).count(), 2);
}

#[tokio::test]
async fn a_long_time_lock_is_refused() {
    let (sim, _) = sim();
    let slow = ChannelPolicy {
        time_lock_delta: 2_000,
        ..default_policy(sat(100_000_000))
    };
    // Our node's delta counts when it forwards: hub -> wallet -> carol.
    sim.update_channel_policy(None, &slow).await.unwrap();
    let inv = invoice(&sim, "carol", 1_000);
    let st = sim.pay_from("hub", &inv.bolt11, sat(1_000)).unwrap();
    assert_eq!(code(&st), Some(FailureCode::NoRoute));
    match st {
        PayState::Failed { reason, .. } => {
            assert!(
                reason.contains("the route's time lock is too long"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn payments_through_our_node_leave_forwarding_events() {
    let (sim, _) = sim();
    for n in 0..3u64 {
        let inv = invoice(&sim, "carol", 10_000 + n);
        let st = sim.pay_from("hub", &inv.bolt11, sat(10)).unwrap();
        assert!(matches!(st, PayState::Succeeded { .. }), "{st:?}");
    }
    let page = sim.forwarding_history(1, 10).await.unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.last_offset_index, 3);
    let e = &page.events[0];
    assert_eq!(e.index, 1);
    assert_eq!(e.amt_out, Msat::new(10_001).unwrap());
    // Our default policy: 1 sat + 1 ppm of 10_001 msat (rounded up).
    assert_eq!(e.fee, Msat::new(1_001).unwrap());
    assert_eq!(e.amt_in, Msat::new(11_002).unwrap());
    let empty = sim.forwarding_history(3, 10).await.unwrap();
    assert!(empty.events.is_empty());
    assert_eq!(empty.last_offset_index, 3);
}

#[tokio::test]
async fn a_crash_after_send_hides_the_result_until_reconnect_and_never_resends() {
    let (sim, _) = sim();
    let inv = invoice(&sim, "carol", 2_000);
    sim.crash_after_send(inv.payment_hash);
    assert!(matches!(
        sim.pay(&send(&inv, 2_000, 0)).await,
        Err(NodeError::Unavailable(_))
    ));
    assert!(matches!(
        sim.track(&inv.payment_hash).await,
        Err(NodeError::Unavailable(_))
    ));
    assert_eq!(
        sim.invoice_state(&inv.payment_hash),
        Some(InvoiceState::Settled)
    );
    sim.reconnect();
    assert!(matches!(
        sim.pay(&send(&inv, 2_000, 0)).await.unwrap(),
        PayState::Succeeded { .. }
    ));
    assert_eq!(sim.send_count(&inv.payment_hash), 1);
}

#[tokio::test]
async fn a_journal_replays_sends_invoices_and_policies_and_drops_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.jsonl");
    let clock = ManualClock::new(T0);
    let open =
        || SimNetwork::open_journaled(7, Network::Regtest, Arc::new(clock.clone()), &path).unwrap();
    let sim = open();
    let paid = invoice(&sim, "merchant", 50_000);
    let open_inv = invoice(&sim, "carol", 3_000);
    sim.pay(&send(&paid, 50_000, 5_000)).await.unwrap();
    let policy = ChannelPolicy {
        fee_ppm: 42,
        ..default_policy(sat(1_000))
    };
    sim.update_channel_policy(None, &policy).await.unwrap();
    let before = sim.info().await.unwrap();
    drop(sim);
    // A kill in the middle of a write leaves a torn line.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"t\":\"send\",\"fr")
        .unwrap();

    let sim = open();
    assert_eq!(sim.send_count(&paid.payment_hash), 1);
    assert!(matches!(
        sim.track(&paid.payment_hash).await.unwrap(),
        PayState::Succeeded { .. }
    ));
    assert_eq!(
        sim.invoice_state(&open_inv.payment_hash),
        Some(InvoiceState::Open)
    );
    let after = sim.info().await.unwrap();
    assert_eq!(
        (after.local_balance, after.remote_balance),
        (before.local_balance, before.remote_balance)
    );
    assert!(
        sim.list_channels()
            .await
            .unwrap()
            .iter()
            .all(|c| c.local_policy.fee_ppm == 42)
    );
    // The torn line is gone, and the next entry starts a line of its own.
    sim.pay(&send(&open_inv, 3_000, 0)).await.unwrap();
    drop(sim);
    let sim = open();
    assert_eq!(sim.send_count(&open_inv.payment_hash), 1);
    assert_eq!(sim.send_stats(), (2, 0));
}

fn msat(v: u64) -> Msat {
    Msat::new(v).unwrap()
}

fn our_invoice_req(amount_msat: u64) -> InvoiceRequest {
    InvoiceRequest {
        amount: msat(amount_msat),
        description: "ours".into(),
        expiry_secs: 600,
    }
}

/// A regtest address that is not ours (a key no node of the sim holds).
fn external_address(network: bitcoin::Network) -> String {
    let secret = SecretKey::from_slice(&[0x42; 32]).unwrap();
    let pk = PublicKey::from_secret_key(&Secp256k1::signing_only(), &secret);
    bitcoin::Address::p2wpkh(&CompressedPublicKey(pk), network).to_string()
}

fn chan_between(channels: &[ChannelInfo], sim: &SimNetwork, alias: &str) -> u64 {
    let pk = sim.pubkey_of(alias).unwrap();
    channels
        .iter()
        .find(|c| c.remote_pubkey == pk)
        .unwrap()
        .chan_id
}

#[tokio::test]
async fn our_invoices_settle_in_order_and_the_settlement_stream_is_gapless() {
    let (sim, clock) = sim();
    let a = sim.add_invoice(&our_invoice_req(5_000)).await.unwrap();
    let b = sim.add_invoice(&our_invoice_req(6_000)).await.unwrap();
    let c = sim.add_invoice(&our_invoice_req(7_000)).await.unwrap();
    assert_eq!((a.add_index, b.add_index, c.add_index), (1, 2, 3));
    assert_eq!(a.status, InvoiceStatus::Open);
    assert_eq!(a.settle_index, 0);
    let decoded = oa_invoice::decode(&a.bolt11).unwrap();
    assert_eq!(decoded.payee_pubkey, sim.info().await.unwrap().pubkey);
    assert_eq!(decoded.amount, Some(msat(5_000)));

    // hub pays b then a (our peer with balance on its side): settle indexes follow the order.
    clock.advance(1_000);
    for inv in [&b, &a] {
        let st = sim.pay_from("hub", &inv.bolt11, sat(10)).unwrap();
        assert!(matches!(st, PayState::Succeeded { .. }), "{st:?}");
    }
    let b_now = sim.lookup_invoice(&b.payment_hash).await.unwrap();
    assert_eq!(
        (b_now.status, b_now.settle_index, b_now.amount_paid),
        (InvoiceStatus::Settled, 1, msat(6_000))
    );
    assert_eq!(b_now.settled_at_ms, T0 + 1_000);
    assert!(matches!(
        sim.lookup_invoice(&PaymentHash([9; 32])).await,
        Err(NodeError::NotFound)
    ));

    // Replay from 0, then follow live; from 1, only what comes after.
    let mut all = sim.subscribe_settled_invoices(0).await.unwrap();
    let mut later = sim.subscribe_settled_invoices(1).await.unwrap();
    let first = all.next().await.unwrap().unwrap();
    let second = all.next().await.unwrap().unwrap();
    assert_eq!(
        (first.payment_hash, first.settle_index),
        (b.payment_hash, 1)
    );
    assert_eq!(
        (second.payment_hash, second.settle_index),
        (a.payment_hash, 2)
    );
    assert_eq!(later.next().await.unwrap().unwrap().settle_index, 2);
    let st = sim.pay_from("hub", &c.bolt11, sat(10)).unwrap();
    assert!(matches!(st, PayState::Succeeded { .. }));
    let live = all.next().await.unwrap().unwrap();
    assert_eq!((live.payment_hash, live.settle_index), (c.payment_hash, 3));
    assert_eq!(later.next().await.unwrap().unwrap().settle_index, 3);

    // A dropped subscription ends with an error; resubscribing from the last index misses
    // nothing.
    sim.drop_invoice_subscriptions();
    assert!(matches!(
        all.next().await,
        Some(Err(NodeError::Unavailable(_)))
    ));
    assert!(all.next().await.is_none());
    let mut again = sim.subscribe_settled_invoices(2).await.unwrap();
    assert_eq!(again.next().await.unwrap().unwrap().settle_index, 3);
}

#[test]
fn inbound_fees_add_to_the_outbound_fee_and_never_go_below_zero() {
    let out = default_policy(sat(1_000_000)); // 1 sat + 1 ppm
    let with = |base: i64, ppm: i32| ChannelPolicy {
        inbound_base_fee_msat: base,
        inbound_fee_ppm: ppm,
        ..default_policy(sat(1_000_000))
    };
    let amt = msat(10_000);
    // Outbound: 1_000 + ceil(10_000 * 1 / 1e6) = 1_001.
    assert_eq!(forwarding_fee(&out, &with(0, 0), amt), msat(1_001));
    assert_eq!(forwarding_fee(&out, &with(-500, 0), amt), msat(501));
    assert_eq!(forwarding_fee(&out, &with(250, 0), amt), msat(1_251));
    // Inbound ppm is on amount + outbound fee: 11_001 * 10% = 1_100.1, rounded up to 1_101.
    assert_eq!(forwarding_fee(&out, &with(0, 100_000), amt), msat(2_102));
    // A discount rounds towards the higher fee: -1_100.1 -> -1_100.
    assert_eq!(
        forwarding_fee(&out, &with(0, -10_000), amt),
        msat(1_001 - 110)
    );
    // Never below zero.
    assert_eq!(forwarding_fee(&out, &with(-5_000, 0), amt), Msat::ZERO);
    assert_eq!(forwarding_fee(&out, &with(0, -1_000_000), amt), Msat::ZERO);
}

#[tokio::test]
async fn inbound_fees_count_in_routing_forwarding_and_estimates() {
    let (sim, _) = sim();
    let channels = sim.list_channels().await.unwrap();
    let hub_chan = chan_between(&channels, &sim, "hub");
    // Our node discounts HTLCs arriving from hub by 500 msat: hub -> wallet -> carol costs
    // 1_001 - 500 = 501.
    let policy = ChannelPolicy {
        inbound_base_fee_msat: -500,
        ..default_policy(sat(50_000_000))
    };
    sim.update_channel_policy(Some(hub_chan), &policy)
        .await
        .unwrap();
    let inv = invoice(&sim, "carol", 10_000);
    match sim.pay_from("hub", &inv.bolt11, sat(10)).unwrap() {
        PayState::Succeeded { fee, .. } => assert_eq!(fee, msat(501)),
        other => panic!("{other:?}"),
    }
    let fwd = sim.forwards_at(OUR_NODE).unwrap();
    assert_eq!(fwd.last().unwrap().fee, msat(501));
    assert_eq!(fwd.last().unwrap().chan_id_in, hub_chan);
    // A discount larger than the fee: the hop is free, not negative.
    let policy = ChannelPolicy {
        inbound_base_fee_msat: -5_000,
        ..default_policy(sat(50_000_000))
    };
    sim.update_channel_policy(Some(hub_chan), &policy)
        .await
        .unwrap();
    let inv = invoice(&sim, "carol", 10_000);
    match sim.pay_from("hub", &inv.bolt11, Msat::ZERO).unwrap() {
        PayState::Succeeded { fee, .. } => assert_eq!(fee, Msat::ZERO),
        other => panic!("{other:?}"),
    }

    // router charges 300 msat inbound on HTLCs from us: our estimate and payment to merchant
    // (1 sat + 100 ppm of 50_000 = 1_005 outbound) cost 1_305.
    let merchant = sim.pubkey_of("merchant").unwrap();
    let before = sim
        .estimate_route_fee(&merchant, msat(50_000))
        .await
        .unwrap();
    assert_eq!(before.fee, msat(1_005));
    assert_eq!(before.time_lock_delay, FINAL_CLTV_DELTA + 40);
    sim.set_peer_policy(
        "router",
        OUR_NODE,
        &ChannelPolicy {
            inbound_base_fee_msat: 300,
            ..default_policy(sat(100_000_000))
        },
    )
    .unwrap();
    let est = sim
        .estimate_route_fee(&merchant, msat(50_000))
        .await
        .unwrap();
    assert_eq!(est.fee, msat(1_305));
    let inv = invoice(&sim, "merchant", 50_000);
    match sim.pay(&send(&inv, 50_000, 5_000)).await.unwrap() {
        PayState::Succeeded { fee, .. } => assert_eq!(fee, est.fee),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn route_fee_estimates_use_the_pathfinding_and_refuse_unknown_destinations() {
    let (sim, _) = sim();
    let carol = sim.pubkey_of("carol").unwrap();
    let direct = sim.estimate_route_fee(&carol, msat(1_000)).await.unwrap();
    assert_eq!(
        (direct.fee, direct.time_lock_delay),
        (Msat::ZERO, FINAL_CLTV_DELTA)
    );
    let ours = sim.info().await.unwrap().pubkey;
    for dest in [ours.as_str(), &"02".repeat(33)] {
        assert!(matches!(
            sim.estimate_route_fee(dest, msat(1_000)).await,
            Err(NodeError::Refused(_))
        ));
    }
    // Above every route's liquidity: no route.
    assert!(matches!(
        sim.estimate_route_fee(&carol, sat(200_000_000)).await,
        Err(NodeError::Refused(m)) if m.contains("no route")
    ));
}

#[tokio::test]
async fn the_wallet_has_regtest_addresses_deposits_sends_and_confirmations() {
    let (sim, _) = sim();
    assert_eq!(sim.height(), START_HEIGHT);
    let start = sim.wallet_balance().await.unwrap();
    assert_eq!(
        (start.confirmed, start.unconfirmed),
        (sat(STARTING_BALANCE_SAT), Msat::ZERO)
    );
    let a1 = sim.new_address().await.unwrap();
    let a2 = sim.new_address().await.unwrap();
    assert_ne!(a1, a2);
    for a in [&a1, &a2] {
        assert!(a.starts_with("bcrt1q"), "{a}");
        a.parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
            .unwrap()
            .require_network(bitcoin::Network::Regtest)
            .unwrap();
    }

    let deposit = sim.fund_wallet(sat(50_000)).unwrap();
    assert_eq!(deposit.len(), 64);
    assert_eq!(
        sim.wallet_balance().await.unwrap().confirmed,
        sat(STARTING_BALANCE_SAT + 50_000)
    );
    assert!(matches!(
        sim.fund_wallet(msat(1_500)),
        Err(SimError::BadAmount(_))
    ));

    // A send: spends the oldest confirmed output (the starting deposit), change unconfirmed
    // until the next block. Fee: (11 + 68 + 2 * 31) vbytes at 2 sat/vbyte = 282 sat.
    let to = external_address(bitcoin::Network::Regtest);
    let req = SendCoinsRequest {
        address: to.clone(),
        amount: sat(100_000),
        sat_per_vbyte: 0,
        label: "send-1".into(),
    };
    let txid = sim.send_coins(&req).await.unwrap();
    assert_eq!(txid.len(), 64);
    let fee = vsize(1, 2) * DEFAULT_SAT_PER_VBYTE;
    assert_eq!(fee, 282);
    let mid = sim.wallet_balance().await.unwrap();
    assert_eq!(mid.confirmed, sat(50_000));
    assert_eq!(mid.unconfirmed, sat(STARTING_BALANCE_SAT - 100_000 - fee));
    // The same label finds the same transaction and sends nothing.
    assert_eq!(sim.send_coins(&req).await.unwrap(), txid);
    assert_eq!(sim.send_coins_count("send-1"), 1);
    assert_eq!(sim.mine_blocks(1).unwrap(), START_HEIGHT + 1);
    let after = sim.wallet_balance().await.unwrap();
    assert_eq!(
        (after.confirmed, after.unconfirmed),
        (
            sat(STARTING_BALANCE_SAT + 50_000 - 100_000 - fee),
            Msat::ZERO
        )
    );

    // Refusals: too much, a mainnet address, garbage, dust, part of a satoshi.
    let refuse = |address: String, amount: Msat| SendCoinsRequest {
        address,
        amount,
        sat_per_vbyte: 1,
        label: String::new(),
    };
    assert!(matches!(
        sim.send_coins(&refuse(to.clone(), sat(STARTING_BALANCE_SAT * 2)))
            .await,
        Err(NodeError::InsufficientFunds)
    ));
    for (address, amount) in [
        (external_address(bitcoin::Network::Bitcoin), sat(1_000)),
        ("not-an-address".to_owned(), sat(1_000)),
        (to.clone(), sat(100)),
        (to.clone(), msat(1_000_500)),
    ] {
        assert!(
            matches!(
                sim.send_coins(&refuse(address.clone(), amount)).await,
                Err(NodeError::Refused(_))
            ),
            "{address} {amount}"
        );
    }
    assert_eq!(sim.wallet_balance().await.unwrap(), after);

    // Sending to an address of ours comes back to the wallet (minus the fee).
    let own = sim.new_address().await.unwrap();
    sim.send_coins(&SendCoinsRequest {
        address: own,
        amount: sat(10_000),
        sat_per_vbyte: 1,
        label: String::new(),
    })
    .await
    .unwrap();
    sim.mine_blocks(1).unwrap();
    assert_eq!(
        sim.wallet_balance().await.unwrap().confirmed,
        after.confirmed.checked_sub(sat(vsize(1, 2))).unwrap()
    );
    assert!(matches!(sim.mine_blocks(0), Err(SimError::BadBlocks)));
}

#[tokio::test]
async fn interrupted_sends_fail_before_or_after_sending_and_labels_find_them() {
    let (sim, _) = sim();
    let req = |label: &str| SendCoinsRequest {
        address: external_address(bitcoin::Network::Regtest),
        amount: sat(20_000),
        sat_per_vbyte: 1,
        label: label.into(),
    };
    sim.interrupt_next_send_coins(Interrupt::BeforeSend);
    assert!(matches!(
        sim.send_coins(&req("a")).await,
        Err(NodeError::Unavailable(_))
    ));
    assert_eq!(sim.send_coins_count("a"), 0);
    let a = sim.send_coins(&req("a")).await.unwrap();
    // The change of "a" confirms, so "b" has an output to spend.
    sim.mine_blocks(1).unwrap();
    sim.interrupt_next_send_coins(Interrupt::AfterSend);
    assert!(matches!(
        sim.send_coins(&req("b")).await,
        Err(NodeError::Unavailable(_))
    ));
    assert_eq!(sim.send_coins_count("b"), 1);
    let b = sim.send_coins(&req("b")).await.unwrap();
    assert_ne!(a, b);
    assert_eq!(
        (sim.send_coins_count("a"), sim.send_coins_count("b")),
        (1, 1)
    );
}

#[tokio::test]
async fn a_channel_opens_after_three_confirmations_and_closes_back_to_the_wallet() {
    let (sim, _) = sim();
    let merchant = sim.pubkey_of("merchant").unwrap();
    let before = sim.list_channels().await.unwrap().len();
    let open = OpenChannelRequest {
        remote_pubkey: merchant.clone(),
        local_funding: sat(1_000_000),
        push: sat(100_000),
        private: false,
    };
    let point = sim.open_channel(&open).await.unwrap();
    assert_eq!((point.funding_txid.len(), point.output_index), (64, 0));
    // Funding plus fee left the wallet; the change waits for a block.
    let fee = vsize(1, 2) * DEFAULT_SAT_PER_VBYTE;
    let bal = sim.wallet_balance().await.unwrap();
    assert_eq!(
        (bal.confirmed, bal.unconfirmed),
        (Msat::ZERO, sat(STARTING_BALANCE_SAT - 1_000_000 - fee))
    );
    let pending = sim.pending_channels();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].funding_txid.as_str(), pending[0].confirmations),
        (point.funding_txid.as_str(), 0)
    );
    for confirmations in 1..FUNDING_CONFIRMATIONS {
        sim.mine_blocks(1).unwrap();
        assert_eq!(sim.pending_channels()[0].confirmations, confirmations);
        assert_eq!(sim.list_channels().await.unwrap().len(), before);
    }
    sim.mine_blocks(1).unwrap();
    assert!(sim.pending_channels().is_empty());
    let channels = sim.list_channels().await.unwrap();
    assert_eq!(channels.len(), before + 1);
    let new = channels.last().unwrap();
    // Short channel id: confirmed in block START_HEIGHT + 1, first transaction, output 0.
    let scid = (u64::from(START_HEIGHT + 1) << 40) | (1 << 16);
    assert_eq!(new.chan_id, scid);
    assert_eq!(new.remote_pubkey, merchant);
    assert_eq!(
        (new.capacity, new.local_balance, new.remote_balance),
        (sat(1_000_000), sat(900_000), sat(100_000))
    );
    // It routes: merchant is now our direct peer.
    let inv = invoice(&sim, "merchant", 5_000);
    match sim.pay(&send(&inv, 5_000, 0)).await.unwrap() {
        PayState::Succeeded { fee, .. } => assert_eq!(fee, Msat::ZERO),
        other => panic!("{other:?}"),
    }

    // Cooperative close: same txid when asked again; closed once confirmed; our balance (the
    // whole satoshis of it: 900_000 sat less the 5 sat just paid) is back in the wallet.
    let confirmed_before = sim.wallet_balance().await.unwrap().confirmed;
    let closing = sim.close_channel(scid, false).await.unwrap();
    assert_eq!(sim.close_channel(scid, false).await.unwrap(), closing);
    assert_eq!(sim.close_channel(scid, true).await.unwrap(), closing);
    assert_eq!(sim.list_channels().await.unwrap().len(), before);
    assert!(sim.closed_channels().await.unwrap().is_empty());
    let height = sim.mine_blocks(1).unwrap();
    let closed = sim.closed_channels().await.unwrap();
    assert_eq!(closed.len(), 1);
    assert_eq!(
        closed[0],
        ClosedChannel {
            chan_id: scid,
            remote_pubkey: merchant.clone(),
            capacity: sat(1_000_000),
            settled_balance: sat(899_995),
            close_type: CloseType::Cooperative,
            closing_txid: closing.closing_txid.clone(),
            close_height: height,
        }
    );
    assert_eq!(
        sim.wallet_balance().await.unwrap().confirmed,
        confirmed_before.checked_add(sat(899_995)).unwrap()
    );

    // Force close of the channel with carol (all 1 BTC ours): closed once the closing
    // transaction confirms, our output locked for FORCE_CLOSE_CSV confirmations.
    let carol = chan_between(&sim.list_channels().await.unwrap(), &sim, "carol");
    let confirmed = sim.wallet_balance().await.unwrap().confirmed;
    sim.close_channel(carol, true).await.unwrap();
    sim.mine_blocks(1).unwrap();
    let closed = sim.closed_channels().await.unwrap();
    assert_eq!(closed[1].close_type, CloseType::LocalForce);
    assert_eq!(closed[1].settled_balance, sat(100_000_000));
    sim.mine_blocks(FORCE_CLOSE_CSV - 2).unwrap();
    assert_eq!(sim.wallet_balance().await.unwrap().confirmed, confirmed);
    sim.mine_blocks(1).unwrap();
    assert_eq!(
        sim.wallet_balance().await.unwrap().confirmed,
        confirmed.checked_add(sat(100_000_000)).unwrap()
    );

    // Refusals: unknown peer, ourselves, offline peer, bad sizes, no funds; unknown channel;
    // a cooperative close with an offline peer.
    let with = |remote_pubkey: String, local_funding: Msat| OpenChannelRequest {
        remote_pubkey,
        local_funding,
        push: Msat::ZERO,
        private: false,
    };
    let ours = sim.info().await.unwrap().pubkey;
    sim.set_online("dave", false).unwrap();
    let dave = sim.pubkey_of("dave").unwrap();
    for req in [
        with("02".repeat(33), sat(100_000)),
        with(ours, sat(100_000)),
        with(dave, sat(100_000)),
        with(merchant.clone(), sat(MIN_CHANNEL_SAT - 1)),
        with(merchant.clone(), sat(MAX_CHANNEL_SAT + 1)),
        with(merchant.clone(), msat(100_000_500)),
    ] {
        assert!(
            matches!(sim.open_channel(&req).await, Err(NodeError::Refused(_))),
            "{req:?}"
        );
    }
    let all = sim.wallet_balance().await.unwrap().confirmed;
    assert!(matches!(
        sim.open_channel(&with(merchant, all)).await,
        Err(NodeError::InsufficientFunds) | Err(NodeError::Refused(_))
    ));
    assert!(matches!(
        sim.close_channel(42, false).await,
        Err(NodeError::UnknownChannel(42))
    ));
    sim.set_online("hub", false).unwrap();
    let hub = chan_between(&sim.list_channels().await.unwrap(), &sim, "hub");
    assert!(matches!(
        sim.close_channel(hub, false).await,
        Err(NodeError::Refused(_))
    ));
}

#[tokio::test]
async fn a_rebalance_moves_liquidity_around_a_circle_and_charges_the_fee() {
    let (sim, _) = sim();
    // merchant needs liquidity towards hub for the circle wallet -> router -> merchant -> hub
    // -> wallet.
    sim.shift_liquidity("hub", "merchant", sat(1_000_000))
        .unwrap();
    let channels = sim.list_channels().await.unwrap();
    let (router, hub, carol) = (
        chan_between(&channels, &sim, "router"),
        chan_between(&channels, &sim, "hub"),
        chan_between(&channels, &sim, "carol"),
    );
    let local =
        |chs: &[ChannelInfo], id: u64| chs.iter().find(|c| c.chan_id == id).unwrap().local_balance;
    let req = |out_chan_id: u64, in_chan_id: u64, fee_limit: u64| RebalanceRequest {
        out_chan_id,
        in_chan_id,
        amount: msat(100_000),
        fee_limit: msat(fee_limit),
        timeout: Duration::from_secs(1),
    };
    // Fees, from the end: hub 1_000 + 1 ppm of 100_000 = 1_001; merchant 1_000 + 1 ppm of
    // 101_001 = 1_001; router 1_000 + 100 ppm of 102_002 = 1_011. Total 3_013.
    let short = sim.rebalance(&req(router, hub, 3_012)).await.unwrap();
    assert!(matches!(
        short.state,
        PayState::Failed {
            code: FailureCode::NoRoute,
            ..
        }
    ));
    let done = sim.rebalance(&req(router, hub, 3_013)).await.unwrap();
    let PayState::Succeeded { fee, preimage } = &done.state else {
        panic!("{done:?}");
    };
    assert_eq!(*fee, msat(3_013));
    assert_eq!(preimage.payment_hash(), done.payment_hash);
    let after = sim.list_channels().await.unwrap();
    assert_eq!(
        local(&channels, router).checked_sub(local(&after, router)),
        Ok(msat(103_013))
    );
    assert_eq!(
        local(&after, hub).checked_sub(local(&channels, hub)),
        Ok(msat(100_000))
    );
    // The invoice we paid ourselves is settled (and so in our settlement log).
    let inv = sim.lookup_invoice(&done.payment_hash).await.unwrap();
    assert_eq!((inv.status, inv.settle_index), (InvoiceStatus::Settled, 1));
    assert_eq!(sim.track(&done.payment_hash).await.unwrap(), done.state);
    assert_eq!(sim.send_count(&done.payment_hash), 1);

    // carol has no other channel: no circle through her.
    let none = sim.rebalance(&req(router, carol, 1_000_000)).await.unwrap();
    match none.state {
        PayState::Failed { code, reason } => {
            assert_eq!(code, FailureCode::NoRoute);
            assert!(reason.contains("no circular route"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        sim.rebalance(&req(router, router, 10)).await,
        Err(NodeError::Refused(_))
    ));
    assert!(matches!(
        sim.rebalance(&req(router, 7, 10)).await,
        Err(NodeError::UnknownChannel(7))
    ));
}

#[tokio::test]
async fn fee_report_sums_our_forwarding_fees_by_day_week_and_month() {
    let (sim, clock) = sim();
    let pay_through_us = |amount: u64| {
        let inv = invoice(&sim, "carol", amount);
        assert!(matches!(
            sim.pay_from("hub", &inv.bolt11, sat(10)).unwrap(),
            PayState::Succeeded { .. }
        ));
    };
    pay_through_us(10_000); // fee 1_001, 40 days before the report
    clock.advance(20 * 24 * 3600 * 1000);
    pay_through_us(20_000); // fee 1_001 (1 ppm of 20_000 rounds up to 1), 20 days before
    clock.advance(17 * 24 * 3600 * 1000);
    pay_through_us(2_000_000); // fee 1_002, 3 days before
    clock.advance(2 * 24 * 3600 * 1000);
    pay_through_us(3_000_000); // fee 1_003, 1 day before (on the edge: counted)
    clock.advance(24 * 3600 * 1000);
    let report = sim.fee_report().await.unwrap();
    assert_eq!(report.channels.len(), 3);
    assert!(report.channels.iter().all(|(_, p)| p.fee_ppm == 1));
    assert_eq!(report.day_fee_sum, msat(1_003));
    assert_eq!(report.week_fee_sum, msat(1_003 + 1_002));
    assert_eq!(report.month_fee_sum, msat(1_003 + 1_002 + 1_001));
}

#[tokio::test]
async fn a_journal_replays_the_chain_the_wallet_channels_invoices_and_rebalances() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.jsonl");
    let clock = ManualClock::new(T0);
    let open =
        || SimNetwork::open_journaled(7, Network::Regtest, Arc::new(clock.clone()), &path).unwrap();
    let sim = open();
    sim.fund_wallet(sat(30_000)).unwrap();
    let issued = [
        sim.new_address().await.unwrap(),
        sim.new_address().await.unwrap(),
    ];
    let txid = sim
        .send_coins(&SendCoinsRequest {
            address: external_address(bitcoin::Network::Regtest),
            amount: sat(40_000),
            sat_per_vbyte: 3,
            label: "journaled".into(),
        })
        .await
        .unwrap();
    // The send spent the oldest output; its change confirms in the next block.
    sim.mine_blocks(1).unwrap();
    let point = sim
        .open_channel(&OpenChannelRequest {
            remote_pubkey: sim.pubkey_of("dave").unwrap(),
            local_funding: sat(500_000),
            push: Msat::ZERO,
            private: true,
        })
        .await
        .unwrap();
    sim.mine_blocks(FUNDING_CONFIRMATIONS).unwrap();
    let carol = chan_between(&sim.list_channels().await.unwrap(), &sim, "carol");
    sim.close_channel(carol, false).await.unwrap();
    sim.mine_blocks(1).unwrap();
    let ours = sim.add_invoice(&our_invoice_req(9_000)).await.unwrap();
    clock.advance(5_000);
    sim.pay_from("hub", &ours.bolt11, sat(10)).unwrap();
    // hub pays merchant directly, giving merchant liquidity towards hub for the circle below.
    let to_merchant = invoice(&sim, "merchant", 1_000_000_000);
    sim.pay_from("hub", &to_merchant.bolt11, Msat::ZERO)
        .unwrap();
    let channels = sim.list_channels().await.unwrap();
    let rebalance = RebalanceRequest {
        out_chan_id: chan_between(&channels, &sim, "router"),
        in_chan_id: chan_between(&channels, &sim, "hub"),
        amount: msat(50_000),
        fee_limit: msat(10_000),
        timeout: Duration::from_secs(1),
    };
    let rb = sim.rebalance(&rebalance).await.unwrap();
    assert!(matches!(rb.state, PayState::Succeeded { .. }));
    let snapshot = |sim: SimNetwork| async move {
        (
            sim.height(),
            sim.wallet_balance().await.unwrap(),
            sim.list_channels().await.unwrap(),
            sim.closed_channels().await.unwrap(),
            sim.lookup_invoice(&ours.payment_hash).await.unwrap(),
            sim.track(&rb.payment_hash).await.unwrap(),
            sim.pending_channels(),
        )
    };
    let before = snapshot(sim.clone()).await;
    drop(sim);

    let sim = open();
    assert_eq!(snapshot(sim.clone()).await, before);
    assert_eq!(sim.send_coins_count("journaled"), 1);
    let again = sim
        .send_coins(&SendCoinsRequest {
            address: external_address(bitcoin::Network::Regtest),
            amount: sat(40_000),
            sat_per_vbyte: 3,
            label: "journaled".into(),
        })
        .await
        .unwrap();
    assert_eq!(again, txid);
    let next = sim.new_address().await.unwrap();
    assert!(!issued.contains(&next));
    let mut settled = sim.subscribe_settled_invoices(0).await.unwrap();
    assert_eq!(
        settled.next().await.unwrap().unwrap().payment_hash,
        ours.payment_hash
    );
    assert!(
        sim.list_channels()
            .await
            .unwrap()
            .iter()
            .any(|c| c.chan_id >> 40 == u64::from(START_HEIGHT + 2))
    );
    assert_eq!(point.output_index, 0);
}
