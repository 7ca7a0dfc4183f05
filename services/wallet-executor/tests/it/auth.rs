use std::time::Duration;

use oa_proto::wallet::{self, wallet_executor_client::WalletExecutorClient};
use tonic::{Request, transport::Channel};

use crate::harness::{Harness, pay_req};

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
}

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
