//! The node-trait conformance suite: what every `LightningNode` backend must do, checked through
//! the trait alone. The sim runs it here; another backend (LND against the test kit's fake
//! server) runs the same functions with its own invoice factory ([`node_conformance`]) and its
//! own [`ConformanceHooks`] ([`node_conformance_extended`]: invoices and settlements, route fee
//! estimates, the on-chain wallet, channel open and close, the fee report, rebalance refusals).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::StreamExt;
use oa_invoice::PaymentHash;
use oa_money::Msat;
use wallet_executor::node::{
    ChannelPolicy, CloseType, FailureCode, InvoiceRequest, InvoiceStatus, LightningNode, NodeError,
    OpenChannelRequest, PayState, RebalanceRequest, SendCoinsRequest, SendRequest, sim::SimNetwork,
};

/// Issues a BOLT11 invoice for `amount_msat` at a payee: `direct` is a peer of ours (no routing
/// fee), otherwise a payee behind at least one routing node (a fee is due).
pub type InvoiceFactory = dyn Fn(bool, u64) -> String + Send + Sync;

fn send(bolt11: &str, fee_limit_msat: u64) -> SendRequest {
    let d = oa_invoice::decode(bolt11).unwrap();
    SendRequest {
        bolt11: bolt11.to_owned(),
        payment_hash: d.payment_hash,
        amount: d.amount.unwrap(),
        fee_limit: Msat::new(fee_limit_msat).unwrap(),
        timeout: Duration::from_secs(5),
    }
}

pub async fn node_conformance(node: Arc<dyn LightningNode>, invoice: &InvoiceFactory) {
    // Identity and balances.
    let info = node.info().await.unwrap();
    assert_eq!(info.pubkey.len(), 66);
    assert!(info.channel_count >= 1);
    let channels = node.list_channels().await.unwrap();
    assert_eq!(channels.len(), info.channel_count as usize);
    for c in &channels {
        assert_eq!(
            c.local_balance.checked_add(c.remote_balance).unwrap(),
            c.capacity
        );
    }

    // A payment succeeds with a preimage that hashes to its hash; pay again and track report
    // the same state (idempotent per hash).
    let inv = invoice(true, 12_000);
    let req = send(&inv, 0);
    let first = node.pay(&req).await.unwrap();
    let PayState::Succeeded { preimage, .. } = &first else {
        panic!("expected success, got {first:?}");
    };
    assert_eq!(preimage.payment_hash(), req.payment_hash);
    assert_eq!(node.pay(&req).await.unwrap(), first);
    assert_eq!(node.track(&req.payment_hash).await.unwrap(), first);

    // A routed payment whose fee cannot fit its limit fails, and stays failed.
    let routed = send(&invoice(false, 50_000), 1);
    let failed = node.pay(&routed).await.unwrap();
    assert!(
        matches!(
            failed,
            PayState::Failed {
                code: FailureCode::NoRoute,
                ..
            }
        ),
        "{failed:?}"
    );
    assert_eq!(node.track(&routed.payment_hash).await.unwrap(), failed);
    assert_eq!(node.pay(&routed).await.unwrap(), failed);

    // An unknown hash is NotFound, never sent by tracking it.
    let unknown = PaymentHash([7u8; 32]);
    assert!(matches!(
        node.track(&unknown).await,
        Err(NodeError::NotFound)
    ));

    // Policy: an unknown channel is refused; "all" changes every channel of ours.
    let policy = ChannelPolicy {
        base_fee: Msat::new(1_500).unwrap(),
        fee_ppm: 10,
        min_htlc: Msat::new(1).unwrap(),
        max_htlc: Msat::new(10_000_000).unwrap(),
        time_lock_delta: 40,
        inbound_base_fee_msat: 0,
        inbound_fee_ppm: 0,
    };
    assert!(matches!(
        node.update_channel_policy(Some(u64::MAX), &policy).await,
        Err(NodeError::UnknownChannel(_))
    ));
    let n = node.update_channel_policy(None, &policy).await.unwrap();
    assert_eq!(n as usize, channels.len());
    assert!(
        node.list_channels()
            .await
            .unwrap()
            .iter()
            .all(|c| c.local_policy == policy)
    );

    // Forwarding history past the end is empty and keeps the offset.
    let page = node.forwarding_history(1_000_000, 10).await.unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.last_offset_index, 1_000_000);
}

/// What the extended suite needs from a backend's test network beyond the node trait.
#[async_trait]
pub trait ConformanceHooks: Send + Sync {
    /// Another node of the network pays `bolt11`, an invoice our node issued, in full.
    async fn pay_our_invoice(&self, bolt11: &str);
    /// Mines `blocks` blocks.
    async fn mine_blocks(&self, blocks: u32);
    /// Deposits `amount_msat` (whole satoshis) into our on-chain wallet, confirmed.
    async fn fund_wallet(&self, amount_msat: u64);
    /// An online node (hex public key) we have no channel with, to open one to.
    fn channel_peer(&self) -> String;
    /// A node reachable from ours through the network, for route fee estimates.
    fn route_destination(&self) -> String;
}

/// Blocks the suite mines to see a channel open or a close confirm: above what any backend
/// needs (the sim needs 3 for an open and 1 for a close; LND's regtest default is 3 and 1).
const CONFIRM_BLOCKS: u32 = 6;
/// Bound on each wait for a settlement on a subscription.
const STREAM_WAIT: Duration = Duration::from_secs(10);

fn whole_sat(sat: u64) -> Msat {
    Msat::from_sat(sat).unwrap()
}

/// A regtest P2WPKH address no node of a test network holds.
fn foreign_address(network: bitcoin::Network) -> String {
    crate::onchain::external_address(network)
}

async fn next_settled(
    stream: &mut futures::stream::BoxStream<
        'static,
        Result<wallet_executor::node::NodeInvoice, NodeError>,
    >,
) -> wallet_executor::node::NodeInvoice {
    tokio::time::timeout(STREAM_WAIT, stream.next())
        .await
        .expect("a settlement within the bound")
        .expect("the subscription is open")
        .expect("a settled invoice")
}

/// The node-trait methods of receiving, on-chain and channel actions, through the trait alone.
pub async fn node_conformance_extended(node: &dyn LightningNode, hooks: &dyn ConformanceHooks) {
    let info = node.info().await.unwrap();

    // Invoices: issued by our node, looked up by hash, numbered as they are added.
    let ask = |amount_msat: u64| InvoiceRequest {
        amount: Msat::new(amount_msat).unwrap(),
        description: "conformance".into(),
        expiry_secs: 600,
    };
    let first = node.add_invoice(&ask(21_000)).await.unwrap();
    let second = node.add_invoice(&ask(22_000)).await.unwrap();
    assert_eq!(first.status, InvoiceStatus::Open);
    assert_eq!(second.add_index, first.add_index + 1);
    assert_eq!(
        (first.settle_index, first.amount),
        (0, Msat::new(21_000).unwrap())
    );
    let decoded = oa_invoice::decode(&first.bolt11).unwrap();
    assert_eq!(decoded.payee_pubkey, info.pubkey);
    assert_eq!(decoded.payment_hash, first.payment_hash);
    assert_eq!(decoded.amount, Some(first.amount));
    assert_eq!(
        node.lookup_invoice(&first.payment_hash).await.unwrap(),
        first
    );
    assert!(matches!(
        node.lookup_invoice(&PaymentHash([3u8; 32])).await,
        Err(NodeError::NotFound)
    ));

    // Settlement: looked up as settled; a subscription from just before it replays it, then
    // follows the next settlement live, gaplessly.
    hooks.pay_our_invoice(&first.bolt11).await;
    let paid = node.lookup_invoice(&first.payment_hash).await.unwrap();
    assert_eq!(paid.status, InvoiceStatus::Settled);
    assert_eq!(paid.amount_paid, first.amount);
    assert!(paid.settle_index >= 1);
    let mut stream = node
        .subscribe_settled_invoices(paid.settle_index - 1)
        .await
        .unwrap();
    let replayed = next_settled(&mut stream).await;
    assert_eq!(
        (replayed.payment_hash, replayed.settle_index),
        (first.payment_hash, paid.settle_index)
    );
    hooks.pay_our_invoice(&second.bolt11).await;
    let live = next_settled(&mut stream).await;
    assert_eq!(
        (live.payment_hash, live.settle_index, live.status),
        (
            second.payment_hash,
            paid.settle_index + 1,
            InvoiceStatus::Settled
        )
    );
    drop(stream);

    // Route fee estimates reach a node through the network.
    node.estimate_route_fee(&hooks.route_destination(), Msat::new(10_000).unwrap())
        .await
        .unwrap();

    // The on-chain wallet: fresh addresses of the network, a confirmed deposit.
    let a1 = node.new_address().await.unwrap();
    let a2 = node.new_address().await.unwrap();
    assert_ne!(a1, a2);
    for a in [&a1, &a2] {
        a.parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
            .unwrap()
            .require_network(bitcoin::Network::Regtest)
            .unwrap();
    }
    let before = node.wallet_balance().await.unwrap();
    hooks.fund_wallet(whole_sat(2_000_000).as_u64()).await;
    let funded = node.wallet_balance().await.unwrap();
    assert_eq!(
        funded.confirmed.checked_sub(before.confirmed).unwrap(),
        whole_sat(2_000_000)
    );

    // Sends: once per label; refused for a bad address or more than the wallet holds.
    let send = |address: String, amount: Msat, label: &str| SendCoinsRequest {
        address,
        amount,
        sat_per_vbyte: 2,
        label: label.into(),
    };
    let to = foreign_address(bitcoin::Network::Regtest);
    let txid = node
        .send_coins(&send(to.clone(), whole_sat(50_000), "conformance-send"))
        .await
        .unwrap();
    assert_eq!(txid.len(), 64);
    assert_eq!(
        node.send_coins(&send(to.clone(), whole_sat(50_000), "conformance-send"))
            .await
            .unwrap(),
        txid
    );
    for address in [
        "not-an-address".to_owned(),
        foreign_address(bitcoin::Network::Bitcoin),
    ] {
        assert!(
            matches!(
                node.send_coins(&send(address.clone(), whole_sat(1_000), ""))
                    .await,
                Err(NodeError::Refused(_))
            ),
            "{address}"
        );
    }
    assert!(matches!(
        node.send_coins(&send(to, whole_sat(2_000_000_000_000), ""))
            .await,
        Err(NodeError::InsufficientFunds)
    ));
    hooks.mine_blocks(1).await;

    // A channel: not listed while its funding confirms, then listed; closed cooperatively (the
    // same closing transaction when asked again), then listed as closed.
    let peer = hooks.channel_peer();
    let to_peer = |list: &[wallet_executor::node::ChannelInfo]| {
        list.iter()
            .filter(|c| c.remote_pubkey == peer)
            .cloned()
            .collect::<Vec<_>>()
    };
    let before = to_peer(&node.list_channels().await.unwrap());
    let point = node
        .open_channel(&OpenChannelRequest {
            remote_pubkey: peer.clone(),
            local_funding: whole_sat(500_000),
            push: Msat::ZERO,
            private: false,
        })
        .await
        .unwrap();
    assert_eq!(point.funding_txid.len(), 64);
    assert_eq!(
        to_peer(&node.list_channels().await.unwrap()).len(),
        before.len()
    );
    hooks.mine_blocks(CONFIRM_BLOCKS).await;
    let after = to_peer(&node.list_channels().await.unwrap());
    assert_eq!(after.len(), before.len() + 1);
    let new = after
        .iter()
        .find(|c| !before.iter().any(|b| b.chan_id == c.chan_id))
        .unwrap();
    assert_eq!(new.capacity, whole_sat(500_000));
    let closing = node.close_channel(new.chan_id, false).await.unwrap();
    assert_eq!(
        node.close_channel(new.chan_id, false).await.unwrap(),
        closing
    );
    hooks.mine_blocks(CONFIRM_BLOCKS).await;
    let closed = node.closed_channels().await.unwrap();
    let c = closed.iter().find(|c| c.chan_id == new.chan_id).unwrap();
    assert_eq!(
        (
            c.close_type,
            c.closing_txid.as_str(),
            c.remote_pubkey.as_str()
        ),
        (
            CloseType::Cooperative,
            closing.closing_txid.as_str(),
            peer.as_str()
        )
    );
    assert!(matches!(
        node.close_channel(u64::MAX, false).await,
        Err(NodeError::UnknownChannel(_))
    ));

    // The fee report covers every channel of ours; the sums nest.
    let report = node.fee_report().await.unwrap();
    assert_eq!(
        report.channels.len(),
        node.list_channels().await.unwrap().len()
    );
    assert!(report.day_fee_sum <= report.week_fee_sum);
    assert!(report.week_fee_sum <= report.month_fee_sum);

    // A rebalance over a channel we do not have is refused.
    let any = node.list_channels().await.unwrap()[0].chan_id;
    assert!(matches!(
        node.rebalance(&RebalanceRequest {
            out_chan_id: any,
            in_chan_id: u64::MAX,
            amount: Msat::new(1_000).unwrap(),
            fee_limit: Msat::new(1_000).unwrap(),
            timeout: Duration::from_secs(5),
        })
        .await,
        Err(NodeError::UnknownChannel(_)) | Err(NodeError::Refused(_))
    ));
}

/// The sim's hooks: hub pays our invoices (it holds balance towards us), merchant is the peer
/// we open a channel to, and the chain is the sim's own.
struct SimHooks(SimNetwork);

#[async_trait]
impl ConformanceHooks for SimHooks {
    async fn pay_our_invoice(&self, bolt11: &str) {
        let st = self.0.pay_from("hub", bolt11, whole_sat(10)).unwrap();
        assert!(matches!(st, PayState::Succeeded { .. }), "{st:?}");
    }
    async fn mine_blocks(&self, blocks: u32) {
        self.0.mine_blocks(blocks).unwrap();
    }
    async fn fund_wallet(&self, amount_msat: u64) {
        self.0.fund_wallet(Msat::new(amount_msat).unwrap()).unwrap();
    }
    fn channel_peer(&self) -> String {
        self.0.pubkey_of("merchant").unwrap()
    }
    fn route_destination(&self) -> String {
        self.0.pubkey_of("merchant").unwrap()
    }
}

#[tokio::test]
async fn the_sim_passes_the_extended_node_conformance_suite() {
    let sim = SimNetwork::default_topology(
        4,
        oa_invoice::Network::Regtest,
        Arc::new(oa_service::SystemClock),
    );
    node_conformance_extended(&sim, &SimHooks(sim.clone())).await;
    assert_eq!(sim.send_stats().1, 0, "no hash sent twice");
    assert_eq!(sim.send_coins_count("conformance-send"), 1);
}

#[tokio::test]
async fn the_sim_passes_the_node_conformance_suite() {
    let sim = SimNetwork::default_topology(
        3,
        oa_invoice::Network::Regtest,
        Arc::new(oa_service::SystemClock),
    );
    let factory = {
        let sim = sim.clone();
        move |direct: bool, amount_msat: u64| {
            sim.create_invoice(
                if direct { "carol" } else { "merchant" },
                Some(Msat::new(amount_msat).unwrap()),
                "conformance",
                Duration::from_secs(600),
            )
            .unwrap()
            .bolt11
        }
    };
    node_conformance(Arc::new(sim.clone()), &factory).await;
    assert_eq!(sim.send_stats().1, 0, "no hash sent twice");
}
