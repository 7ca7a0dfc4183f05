//! Channel custody for lightning-ops: list channels, change policy with a receipt, read the
//! forwarding history, and GetInfo balances.

use oa_money::Msat;
use oa_proto::wallet;
use wallet_executor::node::PayState;

use crate::harness::{Harness, error_code, pay_req};

pub fn policy_req(key: &str, chan_id: u64) -> wallet::UpdateChannelPolicyRequest {
    wallet::UpdateChannelPolicyRequest {
        idempotency_key: key.into(),
        chan_id,
        policy: Some(wallet::ChannelPolicy {
            base_fee_msat: 2_000,
            fee_rate_ppm: 250,
            min_htlc_msat: 1,
            max_htlc_msat: 50_000_000,
            time_lock_delta: 40,
            inbound_base_fee_msat: 0,
            inbound_fee_ppm: 0,
        }),
    }
}

#[tokio::test]
async fn lists_channels_with_both_balances_and_policies() {
    let h = Harness::start(&[]).await;
    let mut c = h
        .client_as("lightning-ops", "wallet-executor", &["wallet:read"])
        .await;
    let channels = c
        .list_channels(wallet::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    assert_eq!(channels.len(), 3);
    for ch in &channels {
        assert_eq!(
            ch.local_balance_msat + ch.remote_balance_msat,
            ch.capacity_msat
        );
        assert!(ch.active);
        let p = ch.local_policy.as_ref().unwrap();
        assert_eq!(
            (p.base_fee_msat, p.fee_rate_ppm, p.time_lock_delta),
            (1_000, 1, 80)
        );
    }
    // GetInfo sums the same balances; a payment moves amount + fee from local to remote.
    let info = c
        .get_info(wallet::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let local: u64 = channels.iter().map(|c| c.local_balance_msat).sum();
    assert_eq!(info.local_balance_msat, local);
    assert_eq!(info.channel_count, 3);
    let mut hydra = h.hydra().await;
    hydra
        .pay_invoice(pay_req("k1", &h.invoice("merchant", 50_000), 5_000))
        .await
        .unwrap();
    let after = c
        .get_info(wallet::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.local_balance_msat - after.local_balance_msat, 51_005);
    assert_eq!(after.remote_balance_msat - info.remote_balance_msat, 51_005);
    h.stop().await;
}

#[tokio::test]
async fn a_policy_change_is_idempotent_has_a_receipt_and_changes_forwarding_fees() {
    let h = Harness::start(&[]).await;
    let mut ops = h
        .client_as(
            "lightning-ops",
            "wallet-executor",
            &["wallet:read", "wallet:channels"],
        )
        .await;
    let channels = ops
        .list_channels(wallet::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    let carol = h
        .sim
        .create_invoice("carol", None, "pk", std::time::Duration::from_secs(60));
    let carol_pk = carol.unwrap().node_pubkey;
    let to_carol = channels
        .iter()
        .find(|c| c.remote_pubkey == carol_pk)
        .unwrap()
        .chan_id;

    let resp = ops
        .update_channel_policy(policy_req("pol-1", to_carol))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.updated_channels, 1);
    let r = oa_service::receipts::from_proto(resp.receipt.as_ref().unwrap()).unwrap();
    r.verify().unwrap();
    assert_eq!(r.schema, "oa.wallet_executor.channel_policy_receipt.v1");
    assert_eq!(r.body["chan_id"], to_carol.to_string());
    assert_eq!(r.body["base_fee_msat"], "2000");
    assert_eq!(r.body["fee_rate_ppm"], "250");
    assert_eq!(r.body["requested_by"], "lightning-ops");
    // Same key, same request: the same answer, no second receipt.
    let again = ops
        .update_channel_policy(policy_req("pol-1", to_carol))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, resp);
    // Same key, different request: a conflict.
    let e = ops
        .update_channel_policy(policy_req("pol-1", 0))
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "IDEMPOTENCY_CONFLICT");
    let listed = ops
        .list_channels(wallet::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    let p = listed
        .iter()
        .find(|c| c.chan_id == to_carol)
        .unwrap()
        .local_policy
        .unwrap();
    assert_eq!((p.base_fee_msat, p.fee_rate_ppm), (2_000, 250));

    // hub pays carol through our node: we forward and earn 2_000 + 250 ppm of 20_000 = 2_005.
    for n in 0..3u64 {
        let inv = h.invoice("carol", 20_000 + n);
        let st = h
            .sim
            .pay_from("hub", &inv, Msat::new(10_000).unwrap())
            .unwrap();
        assert!(matches!(st, PayState::Succeeded { .. }), "{st:?}");
    }
    let page = ops
        .forwarding_history(wallet::ForwardingHistoryRequest {
            index_offset: 0,
            max_events: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.last_offset_index, 2);
    let e = &page.events[0];
    assert_eq!((e.index, e.amt_out_msat, e.fee_msat), (0, 20_000, 2_005));
    assert_eq!(e.chan_id_out, to_carol);
    assert_eq!(e.amt_in_msat, 22_005);
    let rest = ops
        .forwarding_history(wallet::ForwardingHistoryRequest {
            index_offset: page.last_offset_index,
            max_events: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.events.len(), 1);
    assert_eq!(rest.events[0].index, 2);
    assert_eq!(rest.last_offset_index, 3);

    // Every channel at once.
    let all = ops
        .update_channel_policy(policy_req("pol-2", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.updated_channels, 3);
    let r2 = oa_service::receipts::from_proto(all.receipt.as_ref().unwrap()).unwrap();
    assert_eq!(r2.body["chan_id"], "all");
    assert_eq!(r2.prev_hash, r.hash);
    h.stop().await;
}

#[tokio::test]
async fn bad_policy_requests_are_typed_and_change_nothing() {
    let h = Harness::start(&[]).await;
    let mut ops = h
        .client_as(
            "lightning-ops",
            "wallet-executor",
            &["wallet:read", "wallet:channels"],
        )
        .await;
    let with = |f: &dyn Fn(&mut wallet::ChannelPolicy)| {
        let mut r = policy_req("k", 0);
        f(r.policy.as_mut().unwrap());
        r
    };
    let cases: Vec<(wallet::UpdateChannelPolicyRequest, &str, tonic::Code)> = vec![
        (
            policy_req("", 0),
            "INVALID_IDEMPOTENCY_KEY",
            tonic::Code::InvalidArgument,
        ),
        (
            wallet::UpdateChannelPolicyRequest {
                policy: None,
                ..policy_req("k", 0)
            },
            "INVALID_REQUEST",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|p| p.fee_rate_ppm = 1_000_001),
            "INVALID_REQUEST",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|p| p.min_htlc_msat = p.max_htlc_msat + 1),
            "INVALID_REQUEST",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|p| p.max_htlc_msat = 0),
            "INVALID_REQUEST",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|p| p.time_lock_delta = 5),
            "INVALID_REQUEST",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|p| p.time_lock_delta = 5_000),
            "INVALID_REQUEST",
            tonic::Code::InvalidArgument,
        ),
        (
            with(&|p| p.base_fee_msat = u64::MAX),
            "INVALID_REQUEST",
            tonic::Code::InvalidArgument,
        ),
        (
            policy_req("k", 12_345),
            "CHANNEL_NOT_FOUND",
            tonic::Code::NotFound,
        ),
    ];
    for (req, code, grpc) in cases {
        let e = ops.update_channel_policy(req).await.unwrap_err();
        assert_eq!((error_code(&e).as_str(), e.code()), (code, grpc), "{e:?}");
    }
    let e = ops
        .forwarding_history(wallet::ForwardingHistoryRequest {
            index_offset: 0,
            max_events: 1_001,
        })
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "INVALID_REQUEST");
    // Nothing changed: every policy is still the default, the key is still free.
    let channels = ops
        .list_channels(wallet::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    assert!(
        channels
            .iter()
            .all(|c| c.local_policy.as_ref().unwrap().fee_rate_ppm == 1)
    );
    let ok = ops.update_channel_policy(policy_req("k", 0)).await.unwrap();
    assert_eq!(ok.into_inner().updated_channels, 3);
    h.stop().await;
}
