//! The node-trait conformance suite: what every `LightningNode` backend must do, checked through
//! the trait alone. The sim runs it here; another backend (LND against the test kit's fake
//! server) runs the same function with its own invoice factory.

use std::{sync::Arc, time::Duration};

use oa_invoice::PaymentHash;
use oa_money::Msat;
use wallet_executor::node::{
    ChannelPolicy, FailureCode, LightningNode, NodeError, PayState, SendRequest, sim::SimNetwork,
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
