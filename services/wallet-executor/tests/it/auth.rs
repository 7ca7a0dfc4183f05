use std::time::Duration;

use oa_proto::wallet::{self, wallet_executor_client::WalletExecutorClient};
use tonic::{Request, transport::Channel};

use crate::harness::{Harness, pay_req};

#[tokio::test]
async fn each_new_rpc_accepts_exactly_its_scopes() {
    let h = Harness::start(&[]).await;
    let mut c = raw(&h).await;
    for (rpc, allowed) in SCOPE_TABLE {
        for scope in WALLET_SCOPES {
            let token = h
                .ring
                .operator_token("wallet-executor", &[scope], Duration::from_secs(60))
                .unwrap();
            let r = call(&mut c, rpc, Some(&token)).await;
            let refused = matches!(&r, Err(e) if e.code() == tonic::Code::PermissionDenied);
            assert_eq!(
                refused,
                !allowed.contains(&scope),
                "{rpc} with {scope}: {r:?}"
            );
            assert!(
                !matches!(&r, Err(e) if e.code() == tonic::Code::Unauthenticated),
                "{rpc} with {scope}: {r:?}"
            );
        }
    }
    // No service key may grant the on-chain send scope; lightning-ops' may not grant receive.
    for (who, scope) in [
        ("hydra", "wallet:send_onchain"),
        ("lightning-ops", "wallet:send_onchain"),
        ("lightning-ops", "wallet:receive"),
    ] {
        let token = h
            .ring
            .identity(who)
            .unwrap()
            .mint("wallet-executor", &[scope], Duration::from_secs(60))
            .unwrap();
        let rpc = if scope == "wallet:receive" {
            "NewAddress"
        } else {
            "SendCoins"
        };
        let e = call(&mut c, rpc, Some(&token)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{who} {scope}");
    }
    // Refused calls changed nothing: no receipts, no channel, no send.
    assert!(h.receipts().await.is_empty());
    assert!(h.sim.pending_channels().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn the_sim_mine_and_fund_routes_need_their_scope_and_valid_input() {
    let h = Harness::start(&[]).await;
    let sim = h
        .ring
        .operator_token("wallet-executor", &["wallet:sim"], Duration::from_secs(60))
        .unwrap();
    let read = h
        .ring
        .operator_token("wallet-executor", &["wallet:read"], Duration::from_secs(60))
        .unwrap();
    for path in ["/v1/sim/mine", "/v1/sim/fund"] {
        assert_eq!(h.post_json(path, None, "{}").await.0, 401);
        assert_eq!(h.post_json(path, Some(&read), "{}").await.0, 403);
    }
    let (status, v) = h
        .post_json("/v1/sim/fund", Some(&sim), r#"{"amount_msat":"50000000"}"#)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["txid"].as_str().unwrap().len(), 64);
    let start = wallet_executor::node::sim::STARTING_BALANCE_SAT;
    assert_eq!(
        v["confirmed_balance_msat"],
        ((start + 50_000) * 1_000).to_string()
    );
    let (status, v) = h
        .post_json("/v1/sim/mine", Some(&sim), r#"{"blocks":3}"#)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["height"], wallet_executor::node::sim::START_HEIGHT + 3);
    for (path, body, code) in [
        ("/v1/sim/mine", r#"{"blocks":0}"#, "INVALID_BLOCKS"),
        ("/v1/sim/mine", r#"{"blocks":10001}"#, "INVALID_BLOCKS"),
        (
            "/v1/sim/mine",
            r#"{"blocks":1,"extra":1}"#,
            "INVALID_REQUEST",
        ),
        (
            "/v1/sim/fund",
            r#"{"amount_msat":"1500"}"#,
            "INVALID_AMOUNT",
        ),
        (
            "/v1/sim/fund",
            r#"{"amount_msat":"100000"}"#,
            "INVALID_AMOUNT",
        ),
        (
            "/v1/sim/fund",
            r#"{"amount_msat":"99999999999999999999"}"#,
            "INVALID_REQUEST",
        ),
    ] {
        let (status, v) = h.post_json(path, Some(&sim), body).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{path} {body}"
        );
    }
    assert_eq!(h.sim.height(), wallet_executor::node::sim::START_HEIGHT + 3);
    h.stop().await;
}

async fn raw(h: &Harness) -> WalletExecutorClient<Channel> {
    WalletExecutorClient::connect(format!("http://{}", h.grpc_addr))
        .await
        .unwrap()
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// Every RPC, with a token of the given kind, must be refused with `code`.
async fn refused_everywhere(h: &Harness, token: Option<&str>, code: tonic::Code) {
    let mut c = raw(h).await;
    let inv = h.invoice("carol", 1_000);
    let e = c
        .pay_invoice(with_token(pay_req("k", &inv, 0), token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), code, "pay_invoice: {e:?}");
    let e = c
        .get_payment(with_token(
            wallet::GetPaymentRequest {
                payment_hash: "00".repeat(32),
            },
            token,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), code, "get_payment: {e:?}");
    let e = c
        .get_info(with_token(wallet::GetInfoRequest {}, token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), code, "get_info: {e:?}");
    let e = c
        .list_channels(with_token(wallet::ListChannelsRequest {}, token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), code, "list_channels: {e:?}");
    let e = c
        .update_channel_policy(with_token(crate::channels::policy_req("k", 0), token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), code, "update_channel_policy: {e:?}");
    let e = c
        .forwarding_history(with_token(
            wallet::ForwardingHistoryRequest::default(),
            token,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), code, "forwarding_history: {e:?}");
    for rpc in NEW_RPCS {
        let e = call(&mut c, rpc, token).await.unwrap_err();
        assert_eq!(e.code(), code, "{rpc}: {e:?}");
    }
}

/// The RPCs of the receive, on-chain and channel-action surface.
const NEW_RPCS: [&str; 12] = [
    "CreateInvoice",
    "LookupInvoice",
    "SubscribeInvoiceSettlements",
    "EstimateRouteFee",
    "ListClosedChannels",
    "FeeReport",
    "WalletBalance",
    "NewAddress",
    "SendCoins",
    "OpenChannel",
    "CloseChannel",
    "Rebalance",
];

/// Calls `rpc` with a minimal valid-looking request and `token`; only the status matters.
async fn call(
    c: &mut WalletExecutorClient<Channel>,
    rpc: &str,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    let hash = "00".repeat(32);
    let pubkey = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798".to_owned();
    match rpc {
        "CreateInvoice" => c
            .create_invoice(with_token(crate::receive::invoice_req("k", 1_000), token))
            .await
            .map(drop),
        "LookupInvoice" => c
            .lookup_invoice(with_token(
                wallet::LookupInvoiceRequest { payment_hash: hash },
                token,
            ))
            .await
            .map(drop),
        "SubscribeInvoiceSettlements" => c
            .subscribe_invoice_settlements(with_token(
                wallet::SubscribeInvoiceSettlementsRequest {
                    after_settle_index: 0,
                },
                token,
            ))
            .await
            .map(drop),
        "EstimateRouteFee" => c
            .estimate_route_fee(with_token(
                wallet::EstimateRouteFeeRequest {
                    dest_pubkey: pubkey,
                    amount_msat: 1_000,
                },
                token,
            ))
            .await
            .map(drop),
        "ListClosedChannels" => c
            .list_closed_channels(with_token(wallet::ListClosedChannelsRequest {}, token))
            .await
            .map(drop),
        "FeeReport" => c
            .fee_report(with_token(wallet::FeeReportRequest {}, token))
            .await
            .map(drop),
        "WalletBalance" => c
            .wallet_balance(with_token(wallet::WalletBalanceRequest {}, token))
            .await
            .map(drop),
        "NewAddress" => c
            .new_address(with_token(wallet::NewAddressRequest {}, token))
            .await
            .map(drop),
        "SendCoins" => c
            .send_coins(with_token(
                wallet::SendCoinsRequest {
                    idempotency_key: "k".into(),
                    address: crate::onchain::external_address(bitcoin::Network::Regtest),
                    // Past the scope check it is refused as bad input: nothing is sent.
                    amount_msat: 0,
                    sat_per_vbyte: 1,
                },
                token,
            ))
            .await
            .map(drop),
        "OpenChannel" => c
            .open_channel(with_token(
                wallet::OpenChannelRequest {
                    idempotency_key: "k".into(),
                    remote_pubkey: pubkey,
                    local_funding_msat: 100_000_000,
                    push_msat: 0,
                    private: false,
                },
                token,
            ))
            .await
            .map(drop),
        "CloseChannel" => c
            .close_channel(with_token(
                wallet::CloseChannelRequest {
                    idempotency_key: "k".into(),
                    chan_id: 1,
                    force: false,
                },
                token,
            ))
            .await
            .map(drop),
        "Rebalance" => c
            .rebalance(with_token(
                wallet::RebalanceRequest {
                    idempotency_key: "k".into(),
                    out_chan_id: 1,
                    in_chan_id: 2,
                    amount_msat: 1_000,
                    fee_limit_msat: 0,
                    timeout_ms: 0,
                },
                token,
            ))
            .await
            .map(drop),
        other => panic!("unknown rpc {other}"),
    }
}

/// Per RPC: the scopes that may call it. Every other wallet scope is refused.
const SCOPE_TABLE: [(&str, &[&str]); 12] = [
    ("CreateInvoice", &["wallet:receive"]),
    ("LookupInvoice", &["wallet:receive", "wallet:read"]),
    (
        "SubscribeInvoiceSettlements",
        &["wallet:read", "wallet:receive"],
    ),
    ("EstimateRouteFee", &["wallet:read", "wallet:pay"]),
    ("ListClosedChannels", &["wallet:read"]),
    ("FeeReport", &["wallet:read"]),
    ("WalletBalance", &["wallet:read"]),
    ("NewAddress", &["wallet:receive"]),
    ("SendCoins", &["wallet:send_onchain"]),
    ("OpenChannel", &["wallet:channels"]),
    ("CloseChannel", &["wallet:channels"]),
    ("Rebalance", &["wallet:channels"]),
];

const WALLET_SCOPES: [&str; 6] = [
    "wallet:pay",
    "wallet:read",
    "wallet:receive",
    "wallet:channels",
    "wallet:send_onchain",
    "wallet:sim",
];

#[tokio::test]
async fn refuses_callers_without_a_valid_token_on_every_rpc() {
    let h = Harness::start(&[]).await;
    let ops = h.ring.identity("lightning-ops").unwrap();
    let hydra = h.ring.identity("hydra").unwrap();
    refused_everywhere(&h, None, tonic::Code::Unauthenticated).await;
    refused_everywhere(&h, Some("not.a.token"), tonic::Code::Unauthenticated).await;
    let wrong_aud = hydra
        .mint("hydra", &["wallet:pay"], Duration::from_secs(60))
        .unwrap();
    refused_everywhere(&h, Some(&wrong_aud), tonic::Code::Unauthenticated).await;
    let expired = hydra
        .mint_at(
            "wallet-executor",
            &["wallet:pay"],
            Duration::from_secs(60),
            oa_auth::unix_now_secs() - 3_600,
        )
        .unwrap();
    refused_everywhere(&h, Some(&expired), tonic::Code::Unauthenticated).await;
    // lightning-ops' key may not grant wallet:pay at all.
    let overreach = ops
        .mint("wallet-executor", &["wallet:pay"], Duration::from_secs(60))
        .unwrap();
    refused_everywhere(&h, Some(&overreach), tonic::Code::PermissionDenied).await;
    // A valid token with an unrelated scope.
    let other = h
        .ring
        .operator_token(
            "wallet-executor",
            &["treasury:pay"],
            Duration::from_secs(60),
        )
        .unwrap();
    refused_everywhere(&h, Some(&other), tonic::Code::PermissionDenied).await;
    h.stop().await;
}

#[tokio::test]
async fn a_read_scope_can_read_but_not_pay() {
    let h = Harness::start(&[]).await;
    let mut c = h
        .client_as("lightning-ops", "wallet-executor", &["wallet:read"])
        .await;
    c.get_info(wallet::GetInfoRequest {}).await.unwrap();
    let e = c
        .pay_invoice(pay_req("k", &h.invoice("carol", 1_000), 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    h.stop().await;
}

#[tokio::test]
async fn only_the_channels_scope_may_change_channel_policy() {
    let h = Harness::start(&[]).await;
    // Reading is fine with wallet:read, and hydra's wallet:pay also reads.
    for (who, scopes) in [
        ("lightning-ops", &["wallet:read"][..]),
        ("hydra", &["wallet:pay"][..]),
    ] {
        let mut c = h.client_as(who, "wallet-executor", scopes).await;
        c.list_channels(wallet::ListChannelsRequest {})
            .await
            .unwrap();
        c.forwarding_history(wallet::ForwardingHistoryRequest::default())
            .await
            .unwrap();
        let e = c
            .update_channel_policy(crate::channels::policy_req("k", 0))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{who}");
    }
    // hydra's key may not grant wallet:channels at all.
    let hydra = h.ring.identity("hydra").unwrap();
    let overreach = hydra
        .mint(
            "wallet-executor",
            &["wallet:channels"],
            Duration::from_secs(60),
        )
        .unwrap();
    let mut c = raw(&h).await;
    let e = c
        .update_channel_policy(with_token(
            crate::channels::policy_req("k", 0),
            Some(&overreach),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    // Nothing changed, no receipt was issued.
    let mut ops = h
        .client_as("lightning-ops", "wallet-executor", &["wallet:read"])
        .await;
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
    h.stop().await;
}

#[tokio::test]
async fn the_sim_invoice_route_needs_its_scope_and_valid_input() {
    let h = Harness::start(&[]).await;
    let url = format!("http://{}/v1/sim/invoices", h.http_addr);
    let post = |token: Option<String>, body: &'static str| {
        let mut req = reqwest::Client::new()
            .post(url.clone())
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (
                status,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let sim = h
        .ring
        .operator_token("wallet-executor", &["wallet:sim"], Duration::from_secs(60))
        .ok();
    let read = h
        .ring
        .operator_token("wallet-executor", &["wallet:read"], Duration::from_secs(60))
        .ok();
    assert_eq!(post(None, "{}").await.0, 401);
    assert_eq!(post(read, "{}").await.0, 403);
    let (status, v) = post(sim.clone(), r#"{"node":"merchant","amount_msat":"1000"}"#).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["invoice"].as_str().unwrap().starts_with("lnbcrt"));
    for (body, code) in [
        (r#"{"node":"nobody","amount_msat":"1000"}"#, "UNKNOWN_NODE"),
        (
            r#"{"node":"merchant","expiry_secs":99999999}"#,
            "INVALID_EXPIRY",
        ),
        (
            r#"{"node":"merchant","amount_msat":"99999999999999999999"}"#,
            "INVALID_REQUEST",
        ),
        (r#"{"node":"merchant","surprise":1}"#, "INVALID_REQUEST"),
    ] {
        let (status, v) = post(sim.clone(), body).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    h.stop().await;
}
