//! On-chain: balance, addresses, and sends that happen exactly once (replay, conflict, caps,
//! typed refusals, an interruption before and after the node sent).

use std::time::Duration;

use bitcoin::{
    CompressedPublicKey,
    secp256k1::{PublicKey, Secp256k1, SecretKey},
};
use oa_money::Msat;
use oa_proto::wallet;
use wallet_executor::{
    node::sim::{DEFAULT_SAT_PER_VBYTE, Interrupt, START_HEIGHT, STARTING_BALANCE_SAT, vsize},
    receipt::ONCHAIN_SEND_SCHEMA,
};

use crate::harness::{Client, Harness, error_code};

/// A P2WPKH address of `network` that no node of the sim holds.
pub fn external_address(network: bitcoin::Network) -> String {
    let secret = SecretKey::from_slice(&[0x42; 32]).unwrap();
    let pk = PublicKey::from_secret_key(&Secp256k1::signing_only(), &secret);
    bitcoin::Address::p2wpkh(&CompressedPublicKey(pk), network).to_string()
}

fn send_req(key: &str, amount_msat: u64, sat_per_vbyte: u64) -> wallet::SendCoinsRequest {
    wallet::SendCoinsRequest {
        idempotency_key: key.into(),
        address: external_address(bitcoin::Network::Regtest),
        amount_msat,
        sat_per_vbyte,
    }
}

async fn balance(c: &mut Client) -> (u64, u64) {
    let b = c
        .wallet_balance(wallet::WalletBalanceRequest {})
        .await
        .unwrap()
        .into_inner();
    (b.confirmed_balance_msat, b.unconfirmed_balance_msat)
}

const SAT: u64 = 1_000;
/// Caps roomy enough for these sends: 1 BTC a send, 2 BTC a window.
const ROOMY: [&str; 2] = [
    "--max-payment-msat=100000000000",
    "--window-max-msat=200000000000",
];

#[tokio::test]
async fn sends_on_chain_once_per_key_with_a_receipt() {
    let h = Harness::start(&ROOMY).await;
    let mut t = h.treasurer().await;
    assert_eq!(balance(&mut t).await, (STARTING_BALANCE_SAT * SAT, 0));
    let address = t
        .new_address(wallet::NewAddressRequest {})
        .await
        .unwrap()
        .into_inner()
        .address;
    address
        .parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
        .unwrap()
        .require_network(bitcoin::Network::Regtest)
        .unwrap();

    let resp = t
        .send_coins(send_req("send-1", 100_000 * SAT, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.txid.len(), 64);
    let r = oa_service::receipts::from_proto(resp.receipt.as_ref().unwrap()).unwrap();
    r.verify().unwrap();
    assert_eq!(r.schema, ONCHAIN_SEND_SCHEMA);
    assert_eq!(r.idempotency_key, "send-1");
    assert_eq!(r.body["txid"], resp.txid);
    assert_eq!(r.body["amount_msat"], "100000000");
    assert_eq!(r.body["sat_per_vbyte"], "2");
    assert_eq!(
        r.body["address"],
        external_address(bitcoin::Network::Regtest)
    );
    assert_eq!(r.body["requested_by"], "operator");
    let label = r.body["label"].as_str().unwrap().to_owned();
    assert_eq!(h.sim.send_coins_count(&label), 1);

    // Same key, same request: the same answer, nothing sent. Another request: a conflict.
    let again = t
        .send_coins(send_req("send-1", 100_000 * SAT, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, resp);
    let e = t
        .send_coins(send_req("send-1", 100_001 * SAT, 2))
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "IDEMPOTENCY_CONFLICT");
    assert_eq!(h.sim.send_coins_count(&label), 1);

    // The change confirms with the next block: 100_000 sat and a 141 vbyte fee at 2 sat/vbyte
    // left the wallet.
    let fee = vsize(1, 2) * 2;
    assert_eq!(
        balance(&mut t).await,
        (0, (STARTING_BALANCE_SAT - 100_000 - fee) * SAT)
    );
    h.sim.mine_blocks(1).unwrap();
    assert_eq!(
        balance(&mut t).await,
        ((STARTING_BALANCE_SAT - 100_000 - fee) * SAT, 0)
    );
    assert_eq!(h.receipts_of(ONCHAIN_SEND_SCHEMA).await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn on_chain_sends_count_against_the_hard_caps() {
    // 150k sat a send, 250k sat a window; a send commits its amount plus a fee reserve of
    // 1_000 vbytes at its rate (2 sat/vbyte: 2_000 sat).
    let h = Harness::start(&[
        "--max-payment-msat=150000000",
        "--window-max-msat=250000000",
    ])
    .await;
    let mut t = h.treasurer().await;
    let e = t
        .send_coins(send_req("big", 149_000 * SAT, 2))
        .await
        .unwrap_err();
    assert_eq!(
        (error_code(&e).as_str(), e.code()),
        ("CAP_EXCEEDED", tonic::Code::PermissionDenied)
    );
    assert_eq!(
        e.metadata().get("oa-reason-code").unwrap(),
        "per_payment_max"
    );
    t.send_coins(send_req("w1", 100_000 * SAT, 2))
        .await
        .unwrap();
    h.sim.mine_blocks(1).unwrap();
    t.send_coins(send_req("w2", 100_000 * SAT, 2))
        .await
        .unwrap();
    h.sim.mine_blocks(1).unwrap();
    let e = t
        .send_coins(send_req("w3", 45_000 * SAT, 2))
        .await
        .unwrap_err();
    assert_eq!(
        e.metadata().get("oa-reason-code").unwrap(),
        "rolling_window_max"
    );
    // 204k sat is committed: 45k + 2k more would pass 250k. Lightning payments share the
    // window: 50k sat is refused too.
    let mut hydra = h.hydra().await;
    let e = hydra
        .pay_invoice(crate::harness::pay_req(
            "pay",
            &h.invoice("carol", 50_000 * SAT),
            0,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        e.metadata().get("oa-reason-code").unwrap(),
        "rolling_window_max"
    );
    assert_eq!(h.receipts_of(ONCHAIN_SEND_SCHEMA).await.len(), 2);
    h.stop().await;
}

#[tokio::test]
async fn bad_sends_are_typed_and_change_nothing() {
    let h = Harness::start(&ROOMY).await;
    let mut t = h.treasurer().await;
    let start = balance(&mut t).await;
    let with = |f: &dyn Fn(&mut wallet::SendCoinsRequest)| {
        let mut r = send_req("k", 10_000 * SAT, 1);
        f(&mut r);
        r
    };
    let cases: Vec<(wallet::SendCoinsRequest, &str, tonic::Code)> = vec![
        (
            with(&|r| r.idempotency_key.clear()),
            "INVALID_IDEMPOTENCY_KEY",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|r| r.amount_msat = 0),
            "INVALID_AMOUNT",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|r| r.amount_msat = 10_000_500),
            "INVALID_AMOUNT",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|r| r.amount_msat = u64::MAX),
            "INVALID_AMOUNT",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|r| r.address = "bcrt1-not-an-address".into()),
            "INVALID_ADDRESS",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|r| r.address = external_address(bitcoin::Network::Bitcoin)),
            "INVALID_ADDRESS",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|r| r.sat_per_vbyte = 1_001),
            "INVALID_FEE_RATE",
            tonic::Code::InvalidArgument,
        ),
        // Refused by the node: below the dust limit; more than the wallet holds.
        (
            with(&|r| r.amount_msat = 100 * SAT),
            "NODE_REFUSED",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|r| r.amount_msat = (STARTING_BALANCE_SAT + 1) * SAT),
            "INSUFFICIENT_FUNDS",
            tonic::Code::InvalidArgument,
        ),
    ];
    for (req, code, grpc) in cases {
        let e = t.send_coins(req.clone()).await.unwrap_err();
        assert_eq!(
            (error_code(&e).as_str(), e.code()),
            (code, grpc),
            "{req:?}: {e:?}"
        );
    }
    // Nothing moved, nothing was receipted, and the key is free: after a deposit, the refused
    // large send goes through under the same key.
    assert_eq!(balance(&mut t).await, start);
    assert!(h.receipts_of(ONCHAIN_SEND_SCHEMA).await.is_empty());
    h.sim
        .fund_wallet(Msat::from_sat(1_000_000).unwrap())
        .unwrap();
    let ok = t
        .send_coins(with(&|r| r.amount_msat = (STARTING_BALANCE_SAT + 1) * SAT))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.txid.len(), 64);
    h.stop().await;
}

#[tokio::test]
async fn a_send_whose_node_never_got_it_is_sent_once_after_a_restart() {
    let h = Harness::start(&ROOMY).await;
    let mut t = h.treasurer().await;
    let start = balance(&mut t).await;
    // The intent is recorded, then the node is unreachable before it sends.
    h.sim.interrupt_next_send_coins(Interrupt::BeforeSend);
    let e = t
        .send_coins(send_req("s", 30_000 * SAT, 0))
        .await
        .unwrap_err();
    assert_eq!(
        (error_code(&e).as_str(), e.code()),
        ("NODE_UNAVAILABLE", tonic::Code::Unavailable)
    );
    assert_eq!(balance(&mut t).await, start);
    // The process restarts: recovery asks the node again under the send's label.
    let (dir, ring, config, sim) = h.stop().await;
    let h = Harness::start_with(dir, ring, config, Some(sim)).await;
    let mut t = h.treasurer().await;
    let fee = vsize(1, 2) * DEFAULT_SAT_PER_VBYTE;
    let sent = oa_testkit::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
        let mut t = t.clone();
        async move { (balance(&mut t).await.1 > 0).then_some(()) }
    })
    .await;
    assert!(sent.is_some(), "the pending send was re-driven");
    assert_eq!(
        balance(&mut t).await,
        (0, (STARTING_BALANCE_SAT - 30_000 - fee) * SAT)
    );
    // The caller's retry gets the recorded send; one transaction, one receipt.
    let resp = oa_testkit::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
        let mut t = t.clone();
        async move {
            t.send_coins(send_req("s", 30_000 * SAT, 0))
                .await
                .ok()
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .unwrap();
    let r = oa_service::receipts::from_proto(resp.receipt.as_ref().unwrap()).unwrap();
    assert_eq!(h.sim.send_coins_count(r.body["label"].as_str().unwrap()), 1);
    assert_eq!(h.receipts_of(ONCHAIN_SEND_SCHEMA).await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_send_whose_answer_was_lost_is_found_by_its_label_not_sent_again() {
    let h = Harness::start(&ROOMY).await;
    let mut t = h.treasurer().await;
    // The node sends, then the executor never hears the txid.
    h.sim.interrupt_next_send_coins(Interrupt::AfterSend);
    let e = t
        .send_coins(send_req("s", 30_000 * SAT, 3))
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "NODE_UNAVAILABLE");
    let after_send = balance(&mut t).await;
    assert_eq!(after_send.0, 0, "the send happened at the node");
    // A retry under the same key asks under the same label: the node finds the transaction.
    let resp = t
        .send_coins(send_req("s", 30_000 * SAT, 3))
        .await
        .unwrap()
        .into_inner();
    let r = oa_service::receipts::from_proto(resp.receipt.as_ref().unwrap()).unwrap();
    r.verify().unwrap();
    assert_eq!(h.sim.send_coins_count(r.body["label"].as_str().unwrap()), 1);
    assert_eq!(balance(&mut t).await, after_send);
    let replay = t
        .send_coins(send_req("s", 30_000 * SAT, 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay, resp);
    assert_eq!(h.receipts_of(ONCHAIN_SEND_SCHEMA).await.len(), 1);
    assert_eq!(h.sim.height(), START_HEIGHT);
    h.stop().await;
}
