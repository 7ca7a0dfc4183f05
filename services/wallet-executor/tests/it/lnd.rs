//! The `lnd` backend against the fake LND server, over TLS with a certificate made here: the
//! node-trait conformance suite, TLS (the node's own certificate connects; another CA's, a
//! wrong name or a plaintext client are refused with typed errors), every node-trait method
//! with LND's messages, a wrong macaroon on each of them, streams that break mid-way (payments
//! and invoice subscriptions), and on-chain sends that happen once per label.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use oa_invoice::PaymentHash;
use oa_money::Msat;
use wallet_executor::node::{
    ChannelPolicy, CloseType, InvoiceRequest, InvoiceStatus, LightningNode, NodeError, NodeInvoice,
    OpenChannelRequest, PayState, RebalanceRequest, SendCoinsRequest, SendRequest,
    lnd::{LndConfig, LndConfigError, LndConnectError, LndNode},
};

use crate::{
    conformance::{ConformanceHooks, node_conformance, node_conformance_extended},
    fake_lnd::{
        CONFIRMATIONS, FEE_SUMS_SAT, FakeLnd, Faults, INITIAL_WALLET_SAT, ONCHAIN_FEE_SAT,
        ROUTED_BASE_FEE_MSAT, ROUTED_FEE_PPM, TestCert, ca_issued_cert, lnd_like_cert,
    },
};

const MACAROON: &str = "0201036c6e6402f801030a10";
/// Bound on waiting for one message of a stream.
const STREAM_WAIT: Duration = Duration::from_secs(5);

fn msat(v: u64) -> Msat {
    Msat::new(v).unwrap()
}

/// A fake LND serving TLS with a certificate shaped like LND's own.
async fn start() -> (FakeLnd, String, TestCert) {
    let fake = FakeLnd::new(MACAROON);
    let cert = lnd_like_cert();
    let url = fake.serve_tls(&cert).await;
    (fake, url, cert)
}

fn config(url: &str, cert_pem: &str, macaroon: &str) -> LndConfig {
    LndConfig {
        url: url.to_owned(),
        macaroon_hex: macaroon.to_owned(),
        tls_cert_pem: Some(cert_pem.as_bytes().to_vec()),
        tls_domain: None,
        insecure_plaintext: false,
    }
}

fn node(url: &str, cert: &TestCert, macaroon: &str) -> LndNode {
    LndNode::connect(&config(url, &cert.cert_pem, macaroon)).unwrap()
}

fn send(bolt11: &str, timeout: Duration) -> SendRequest {
    let d = oa_invoice::decode(bolt11).unwrap();
    SendRequest {
        bolt11: bolt11.to_owned(),
        payment_hash: d.payment_hash,
        amount: d.amount.unwrap(),
        fee_limit: msat(10_000),
        timeout,
    }
}

async fn track_until_terminal(node: &LndNode, hash: &PaymentHash) -> PayState {
    for _ in 0..200 {
        let state = node.track(hash).await.unwrap();
        if state.is_terminal() {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("payment never reached a terminal state");
}

fn invoice_req(amount_msat: u64, description: &str) -> InvoiceRequest {
    InvoiceRequest {
        amount: msat(amount_msat),
        description: description.to_owned(),
        expiry_secs: 3600,
    }
}

async fn next_invoice(
    stream: &mut futures::stream::BoxStream<'static, Result<NodeInvoice, NodeError>>,
) -> Option<Result<NodeInvoice, NodeError>> {
    tokio::time::timeout(STREAM_WAIT, stream.next())
        .await
        .expect("the subscription answers in time")
}

#[tokio::test]
async fn lnd_backend_passes_the_node_conformance_suite() {
    let (fake, url, cert) = start().await;
    let factory = {
        let fake = fake.clone();
        move |direct: bool, amount_msat: u64| fake.issue(direct, amount_msat)
    };
    node_conformance(Arc::new(node(&url, &cert, MACAROON)), &factory).await;
    assert_eq!(fake.max_sends(), 1, "no hash sent twice");
}

/// The fake's hooks: a payer settles our invoices, the chain is the fake's, the merchant is the
/// node we have no channel with (and reach through the network).
struct FakeLndHooks(FakeLnd);

#[async_trait::async_trait]
impl ConformanceHooks for FakeLndHooks {
    async fn pay_our_invoice(&self, bolt11: &str) {
        let hash = oa_invoice::decode(bolt11).unwrap().payment_hash;
        self.0.settle(&hash, 0);
    }
    async fn mine_blocks(&self, blocks: u32) {
        self.0.mine(blocks);
    }
    async fn fund_wallet(&self, amount_msat: u64) {
        assert_eq!(amount_msat % 1000, 0, "whole satoshis");
        self.0.deposit((amount_msat / 1000) as i64);
    }
    fn channel_peer(&self) -> String {
        self.0.merchant_id()
    }
    fn route_destination(&self) -> String {
        self.0.merchant_id()
    }
}

#[tokio::test]
async fn lnd_backend_passes_the_extended_node_conformance_suite() {
    let (fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    node_conformance_extended(&lnd, &FakeLndHooks(fake.clone())).await;
    assert_eq!(
        fake.label_sends("conformance-send"),
        1,
        "sent once per label"
    );
    assert!(fake.max_sends() <= 1, "no hash sent twice");
}

#[tokio::test]
async fn lnd_tls_connects_with_the_nodes_own_self_signed_ca_flagged_certificate() {
    // LND's tls.cert has the CA flag set, which rustls' WebPKI verifier refuses as a server
    // certificate: the backend pins it instead.
    let (_fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    lnd.check().await.unwrap();
    assert_eq!(lnd.info().await.unwrap().network, "regtest");
}

#[tokio::test]
async fn plain_webpki_verification_cannot_connect_to_lnds_certificate_which_is_why_we_pin_it() {
    use oa_proto::lnrpc::lightning_client::LightningClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    let (fake, url, cert) = start().await;
    let channel = Endpoint::from_shared(url)
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&cert.cert_pem)))
        .unwrap()
        .connect_lazy();
    let err = LightningClient::new(channel)
        .get_info(oa_proto::lnrpc::GetInfoRequest {})
        .await
        .unwrap_err();
    let mut chain = format!("{err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!(" / {e:?}"));
        source = e.source();
    }
    assert!(chain.contains("CaUsedAsEndEntity"), "{chain}");
    assert_eq!(fake.calls("GetInfo"), 0);
}

#[tokio::test]
async fn lnd_tls_refuses_a_certificate_of_another_ca_with_a_typed_error() {
    let (fake, url, _cert) = start().await;
    let other = lnd_like_cert();
    let lnd = node(&url, &other, MACAROON);
    assert_eq!(
        lnd.check().await,
        Err(LndConnectError::UntrustedCertificate)
    );
    match lnd.info().await {
        Err(NodeError::Unavailable(m)) => assert!(m.contains("certificate"), "{m}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    let req = send(&fake.issue(true, 5_000), Duration::from_secs(2));
    assert!(matches!(
        lnd.pay(&req).await,
        Err(NodeError::Unavailable(_))
    ));
    // Nothing reached the node: no call got past TLS, no payment was sent.
    assert_eq!(fake.calls("GetInfo"), 0);
    assert_eq!(fake.calls("TrackPaymentV2"), 0);
    assert_eq!(fake.sends(&req.payment_hash), 0);
}

#[tokio::test]
async fn lnd_plaintext_client_to_a_tls_server_fails_with_a_typed_error() {
    let (fake, url, _cert) = start().await;
    let plain_url = url.replacen("https://", "http://", 1);
    let lnd = LndNode::connect(&LndConfig {
        url: plain_url,
        macaroon_hex: MACAROON.into(),
        tls_cert_pem: None,
        tls_domain: None,
        insecure_plaintext: true,
    })
    .unwrap();
    assert_eq!(lnd.check().await, Err(LndConnectError::NotPlaintext));
    assert!(matches!(
        lnd.list_channels().await,
        Err(NodeError::Unavailable(_))
    ));
    assert_eq!(fake.calls("GetInfo"), 0);
}

#[tokio::test]
async fn lnd_tls_with_a_ca_issued_certificate_checks_the_name_and_honours_the_domain_option() {
    let fake = FakeLnd::new(MACAROON);
    let (ca_pem, leaf) = ca_issued_cert(&["lnd.internal"]);
    let url = fake.serve_tls(&leaf).await;
    // The url's host (127.0.0.1) is not in the certificate.
    let by_ip = LndNode::connect(&config(&url, &ca_pem, MACAROON)).unwrap();
    assert_eq!(
        by_ip.check().await,
        Err(LndConnectError::CertificateNameMismatch)
    );
    let named = LndNode::connect(&LndConfig {
        tls_domain: Some("lnd.internal".into()),
        ..config(&url, &ca_pem, MACAROON)
    })
    .unwrap();
    named.check().await.unwrap();
    assert!(named.info().await.is_ok());
    // Another CA does not do.
    let (other_ca, _) = ca_issued_cert(&["lnd.internal"]);
    let stranger = LndNode::connect(&LndConfig {
        tls_domain: Some("lnd.internal".into()),
        ..config(&url, &other_ca, MACAROON)
    })
    .unwrap();
    assert_eq!(
        stranger.check().await,
        Err(LndConnectError::UntrustedCertificate)
    );
}

#[tokio::test]
async fn lnd_wrong_macaroon_is_a_typed_auth_error_on_every_method() {
    let (fake, url, cert) = start().await;
    let wrong = node(&url, &cert, "deadbeef");
    assert_eq!(wrong.check().await, Err(LndConnectError::Auth));
    assert!(matches!(wrong.info().await, Err(NodeError::Auth)));
    assert!(matches!(wrong.list_channels().await, Err(NodeError::Auth)));
    let req = send(&fake.issue(true, 5_000), Duration::from_secs(5));
    assert!(matches!(wrong.pay(&req).await, Err(NodeError::Auth)));
    assert!(matches!(
        wrong.track(&req.payment_hash).await,
        Err(NodeError::Auth)
    ));
    assert_eq!(fake.sends(&req.payment_hash), 0);

    let policy = ChannelPolicy {
        base_fee: msat(1_000),
        fee_ppm: 1,
        min_htlc: msat(1_000),
        max_htlc: msat(1_000_000),
        time_lock_delta: 40,
        inbound_base_fee_msat: 0,
        inbound_fee_ppm: 0,
    };
    let auth = |r: Result<(), NodeError>, what: &str| {
        assert!(matches!(r, Err(NodeError::Auth)), "{what}: {r:?}");
    };
    auth(
        wrong.update_channel_policy(None, &policy).await.map(drop),
        "update_channel_policy",
    );
    auth(
        wrong.forwarding_history(0, 10).await.map(drop),
        "forwarding_history",
    );
    auth(
        wrong.add_invoice(&invoice_req(1_000, "x")).await.map(drop),
        "add_invoice",
    );
    auth(
        wrong.lookup_invoice(&PaymentHash([1; 32])).await.map(drop),
        "lookup_invoice",
    );
    auth(
        wrong.subscribe_settled_invoices(0).await.map(drop),
        "subscribe_settled_invoices(0)",
    );
    auth(
        wrong.subscribe_settled_invoices(5).await.map(drop),
        "subscribe_settled_invoices(5)",
    );
    auth(
        wrong
            .estimate_route_fee(&fake.peer_id(), msat(1_000))
            .await
            .map(drop),
        "estimate_route_fee",
    );
    auth(wrong.closed_channels().await.map(drop), "closed_channels");
    auth(wrong.fee_report().await.map(drop), "fee_report");
    auth(
        wrong
            .open_channel(&OpenChannelRequest {
                remote_pubkey: fake.merchant_id(),
                local_funding: msat(100_000_000),
                push: Msat::ZERO,
                private: false,
            })
            .await
            .map(drop),
        "open_channel",
    );
    auth(
        wrong
            .close_channel(0x0001_0000_0100_0000, false)
            .await
            .map(drop),
        "close_channel",
    );
    auth(wrong.wallet_balance().await.map(drop), "wallet_balance");
    auth(wrong.new_address().await.map(drop), "new_address");
    auth(
        wrong
            .send_coins(&SendCoinsRequest {
                address: "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".into(),
                amount: msat(10_000_000),
                sat_per_vbyte: 0,
                label: "l".into(),
            })
            .await
            .map(drop),
        "send_coins",
    );
    auth(
        wrong
            .rebalance(&RebalanceRequest {
                out_chan_id: 0x0002_0000_0200_0001,
                in_chan_id: 0x0001_0000_0100_0000,
                amount: msat(10_000),
                fee_limit: msat(5_000),
                timeout: Duration::from_secs(5),
            })
            .await
            .map(drop),
        "rebalance",
    );
    // The wrong macaroon changed nothing at the node.
    assert_eq!(fake.coin_sends(), 0);
    assert_eq!(fake.calls("AddInvoice"), 0);
    assert_eq!(fake.calls("SendCoins"), 0);

    // The right macaroon, revoked at the node: also Auth, never NotFound.
    let right = node(&url, &cert, MACAROON);
    assert!(right.info().await.is_ok());
    fake.set_faults(Faults {
        reject_macaroon: true,
        ..Faults::default()
    });
    assert!(matches!(
        right.track(&req.payment_hash).await,
        Err(NodeError::Auth)
    ));
    assert!(matches!(right.pay(&req).await, Err(NodeError::Auth)));
    assert!(matches!(
        right.lookup_invoice(&PaymentHash([1; 32])).await,
        Err(NodeError::Auth)
    ));
    assert_eq!(fake.sends(&req.payment_hash), 0);
}

#[tokio::test]
async fn lnd_stream_dropped_mid_payment_is_tracked_to_its_result_never_paid_twice() {
    let (fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    fake.set_faults(Faults {
        drop_stream: true,
        ..Faults::default()
    });
    let req = send(&fake.issue(true, 21_000), Duration::from_secs(5));
    let first = lnd.pay(&req).await;
    assert!(
        matches!(
            first,
            Ok(PayState::InFlight) | Err(NodeError::Unavailable(_))
        ),
        "a broken stream is never a failure: {first:?}"
    );
    // Paying again while it is in flight does not send it again.
    let again = lnd.pay(&req).await.unwrap();
    assert!(!matches!(again, PayState::Failed { .. }), "{again:?}");
    let done = track_until_terminal(&lnd, &req.payment_hash).await;
    let PayState::Succeeded { preimage, .. } = &done else {
        panic!("expected success, got {done:?}");
    };
    assert_eq!(preimage.payment_hash(), req.payment_hash);
    fake.set_faults(Faults::default());
    assert_eq!(lnd.pay(&req).await.unwrap(), done);
    assert_eq!(fake.sends(&req.payment_hash), 1, "paid exactly once");
}

#[tokio::test]
async fn lnd_payment_hanging_in_flight_stays_in_flight_until_it_resolves() {
    let (fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    fake.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let req = send(&fake.issue(false, 30_000), Duration::from_millis(300));
    assert_eq!(lnd.pay(&req).await.unwrap(), PayState::InFlight);
    assert_eq!(
        lnd.track(&req.payment_hash).await.unwrap(),
        PayState::InFlight
    );
    assert_eq!(lnd.pay(&req).await.unwrap(), PayState::InFlight);
    fake.release();
    let done = track_until_terminal(&lnd, &req.payment_hash).await;
    assert!(matches!(done, PayState::Succeeded { .. }), "{done:?}");
    assert_eq!(fake.sends(&req.payment_hash), 1);
}

#[tokio::test]
async fn lnd_send_with_unknown_fate_is_never_called_not_found() {
    let (fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    fake.set_faults(Faults {
        drop_before_update: true,
        ..Faults::default()
    });
    let req = send(&fake.issue(true, 22_000), Duration::from_secs(5));
    assert!(matches!(
        lnd.pay(&req).await,
        Err(NodeError::Unavailable(_))
    ));
    // LND does not know it yet, but our request may still start it: not NotFound, and paying
    // again does not send it again.
    assert!(matches!(
        lnd.track(&req.payment_hash).await,
        Err(NodeError::Unavailable(_))
    ));
    assert!(matches!(
        lnd.pay(&req).await,
        Err(NodeError::Unavailable(_))
    ));
    let done = oa_testkit::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let lnd = lnd.clone();
        let hash = req.payment_hash;
        async move {
            match lnd.track(&hash).await {
                Ok(s) if s.is_terminal() => Some(s),
                _ => None,
            }
        }
    })
    .await
    .expect("the payment LND took in the end is tracked to its result");
    assert!(matches!(done, PayState::Succeeded { .. }), "{done:?}");
    assert_eq!(fake.sends(&req.payment_hash), 1);
}

#[tokio::test]
async fn lnd_credentials_and_tls_material_never_show_in_debug_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mac = dir.path().join("admin.macaroon");
    std::fs::write(&mac, [0x02u8, 0x01, 0x03, 0xff, 0x5a, 0x5a]).unwrap();
    let cert = lnd_like_cert();
    let cert_file = dir.path().join("tls.cert");
    std::fs::write(&cert_file, &cert.cert_pem).unwrap();
    let config = LndConfig::from_files("https://127.0.0.1:1", &mac, Some(&cert_file)).unwrap();
    assert_eq!(config.macaroon_hex, "020103ff5a5a");
    // A line of the certificate's base64 body: it must not show anywhere.
    let cert_body = cert.cert_pem.lines().nth(1).unwrap().to_owned();
    let leaks = |text: &str| text.contains("020103ff5a5a") || text.contains(&cert_body);

    let lnd = LndNode::connect(&config).unwrap();
    for text in [format!("{config:?}"), format!("{lnd:?}")] {
        assert!(!leaks(&text), "{text}");
    }
    // Unreachable node: unavailable (never NotFound), and the errors carry no secret.
    let err = lnd.track(&PaymentHash([1; 32])).await.unwrap_err();
    assert!(matches!(err, NodeError::Unavailable(_)), "{err:?}");
    let connect = lnd.check().await.unwrap_err();
    assert!(
        matches!(connect, LndConnectError::Unreachable(_)),
        "{connect:?}"
    );
    for text in [
        format!("{err:?}"),
        err.to_string(),
        format!("{connect:?}"),
        connect.to_string(),
    ] {
        assert!(!leaks(&text), "{text}");
    }
    // Configuration errors carry no secret either.
    let no_cert = LndConfig {
        tls_cert_pem: None,
        ..config.clone()
    };
    let plaintext = LndConfig {
        url: "http://127.0.0.1:1".into(),
        ..config.clone()
    };
    for bad in [no_cert, plaintext] {
        let e = LndNode::connect(&bad).unwrap_err();
        assert!(!leaks(&format!("{e:?} {e}")), "{e:?}");
        assert!(!leaks(&format!("{bad:?}")));
    }
    assert!(matches!(
        LndNode::connect(&LndConfig {
            tls_cert_pem: None,
            ..config.clone()
        }),
        Err(LndConfigError::MissingTlsCert)
    ));
}

/// The executor itself, started with `--backend lnd` against the fake over TLS: a payment
/// succeeds with a receipt, a payment whose stream drops mid-way is tracked to its real result,
/// sent once, and a rebalance that answers after the caller's wait still reports its payment hash
/// (the rebalance answer grace) and is tracked to its receipt.
#[tokio::test]
async fn the_executor_pays_through_the_lnd_backend_and_tracks_a_dropped_stream() {
    use oa_proto::wallet::{self, PaymentStatus, wallet_executor_client::WalletExecutorClient};

    let (fake, url, cert) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let ring = oa_testkit::DevKeyring::ensure(dir.path()).unwrap();
    let mac = dir.path().join("admin.macaroon");
    std::fs::write(&mac, hex::decode(MACAROON).unwrap()).unwrap();
    let cert_file = dir.path().join("tls.cert");
    std::fs::write(&cert_file, &cert.cert_pem).unwrap();
    let config = crate::harness::config_on(
        dir.path(),
        &ring,
        None,
        &[
            "--backend=lnd",
            &format!("--lnd-url={url}"),
            &format!("--lnd-macaroon-file={}", mac.display()),
            &format!("--lnd-tls-cert-file={}", cert_file.display()),
        ],
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains(MACAROON), "{debug}");
    let app = wallet_executor::build(&config, Arc::new(oa_service::SystemClock))
        .await
        .unwrap();
    assert!(app.sim.is_none());
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(wallet_executor::serve(app, http, grpc, async move {
        let _ = rx.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = oa_auth::grpc::BearerInterceptor::new(
        ring.identity("hydra").unwrap(),
        "wallet-executor",
        ["wallet:pay"],
        Duration::from_secs(300),
    )
    .unwrap();
    let mut c = WalletExecutorClient::with_interceptor(channel, bearer);

    let info = c
        .get_info(wallet::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.backend, "lnd");

    let inv = fake.issue(true, 40_000);
    let resp = c
        .pay_invoice(crate::harness::pay_req("lnd-1", &inv, 0))
        .await
        .unwrap()
        .into_inner();
    let p = resp.payment.unwrap();
    assert_eq!(p.status(), PaymentStatus::Succeeded);
    assert!(resp.receipt.is_some());

    fake.set_faults(Faults {
        drop_stream: true,
        ..Faults::default()
    });
    let inv = fake.issue(true, 41_000);
    let hash = oa_invoice::decode(&inv).unwrap().payment_hash;
    let resp = c
        .pay_invoice(crate::harness::pay_req("lnd-2", &inv, 0))
        .await
        .unwrap()
        .into_inner();
    let mut status = resp.payment.unwrap().status();
    for _ in 0..250 {
        if status == PaymentStatus::Succeeded {
            break;
        }
        assert_ne!(
            status,
            PaymentStatus::Failed,
            "a dropped stream is never a failure"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = c
            .get_payment(wallet::GetPaymentRequest {
                payment_hash: hash.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .payment
            .unwrap()
            .status();
    }
    assert_eq!(status, PaymentStatus::Succeeded);
    assert_eq!(fake.sends(&hash), 1, "paid exactly once");

    // A rebalance still in flight when the caller's wait ends. The backend prepares first (lists
    // channels, issues the invoice to ourselves) and then waits the whole `timeout_ms` for the
    // payment, so its answer comes after that wait: the executor's answer grace lets it arrive,
    // and the caller learns the payment hash instead of an in-doubt NODE_UNAVAILABLE. The tracker
    // records the end once the payment completes.
    let chans = node(&url, &cert, MACAROON).list_channels().await.unwrap();
    fake.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let ops_bearer = oa_auth::grpc::BearerInterceptor::new(
        ring.identity("lightning-ops").unwrap(),
        "wallet-executor",
        ["wallet:channels"],
        Duration::from_secs(300),
    )
    .unwrap();
    let mut ops = WalletExecutorClient::with_interceptor(channel, ops_bearer);
    let req = wallet::RebalanceRequest {
        idempotency_key: "rb-late".into(),
        out_chan_id: chans[1].chan_id,
        in_chan_id: chans[0].chan_id,
        amount_msat: 40_000_000,
        fee_limit_msat: 10_000,
        timeout_ms: 50,
    };
    let first = ops.rebalance(req.clone()).await.unwrap().into_inner();
    assert_eq!(first.status(), PaymentStatus::InFlight);
    assert_eq!(first.payment_hash.len(), 64, "{first:?}");
    assert!(first.receipt.is_none());
    fake.release();
    let mut done = first.clone();
    for _ in 0..250 {
        if done.status() != PaymentStatus::InFlight {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        done = ops.rebalance(req.clone()).await.unwrap().into_inner();
    }
    assert_eq!(done.status(), PaymentStatus::Succeeded, "{done:?}");
    assert_eq!(done.payment_hash, first.payment_hash);
    assert!(done.receipt.is_some());

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// Builds the executor with `--backend lnd` and `flags`; returns the start-up error.
async fn build_error(flags: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ring = oa_testkit::DevKeyring::ensure(dir.path()).unwrap();
    let mac = dir.path().join("admin.macaroon");
    std::fs::write(&mac, hex::decode(MACAROON).unwrap()).unwrap();
    let mut args = vec![
        "--backend=lnd".to_owned(),
        format!("--lnd-macaroon-file={}", mac.display()),
    ];
    args.extend(flags.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = crate::harness::config_on(dir.path(), &ring, None, &args);
    let err = wallet_executor::build(&config, Arc::new(oa_service::SystemClock))
        .await
        .err()
        .expect("the executor refuses to start");
    let text = format!("{err:#}");
    assert!(!text.contains(MACAROON), "{text}");
    text
}

#[tokio::test]
async fn the_executor_refuses_https_without_a_certificate_plaintext_without_the_flag_and_a_foreign_certificate()
 {
    let err = build_error(&["--lnd-url=https://127.0.0.1:10009".into()]).await;
    assert!(err.contains("--lnd-tls-cert-file"), "{err}");
    let err = build_error(&["--lnd-url=http://127.0.0.1:10009".into()]).await;
    assert!(err.contains("--lnd-insecure-plaintext"), "{err}");

    // LND answers, but with a certificate that is not the configured one.
    let (_fake, url, cert) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.cert");
    std::fs::write(&other, lnd_like_cert().cert_pem).unwrap();
    let err = build_error(&[
        format!("--lnd-url={url}"),
        format!("--lnd-tls-cert-file={}", other.display()),
    ])
    .await;
    assert!(
        err.contains("TLS certificate is not the configured one"),
        "{err}"
    );
    assert!(
        !err.contains(cert.cert_pem.lines().nth(1).unwrap()),
        "{err}"
    );
}

#[tokio::test]
async fn the_executor_starts_against_plaintext_lnd_only_with_the_explicit_flag() {
    let fake = FakeLnd::new(MACAROON);
    let url = fake.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let ring = oa_testkit::DevKeyring::ensure(dir.path()).unwrap();
    let mac = dir.path().join("admin.macaroon");
    std::fs::write(&mac, hex::decode(MACAROON).unwrap()).unwrap();
    let config = crate::harness::config_on(
        dir.path(),
        &ring,
        None,
        &[
            "--backend=lnd",
            &format!("--lnd-url={url}"),
            &format!("--lnd-macaroon-file={}", mac.display()),
            "--lnd-insecure-plaintext",
        ],
    );
    let app = wallet_executor::build(&config, Arc::new(oa_service::SystemClock))
        .await
        .unwrap();
    assert!(app.sim.is_none());
}

#[tokio::test]
async fn lnd_invoices_are_added_looked_up_and_settled_with_their_indexes() {
    let (fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    let a = lnd
        .add_invoice(&invoice_req(25_000, "coffee"))
        .await
        .unwrap();
    assert_eq!(a.status, InvoiceStatus::Open);
    assert_eq!((a.amount, a.amount_paid), (msat(25_000), Msat::ZERO));
    assert_eq!((a.add_index, a.settle_index, a.settled_at_ms), (1, 0, 0));
    assert!(a.created_at_ms > 0);
    let decoded = oa_invoice::decode(&a.bolt11).unwrap();
    assert_eq!(decoded.payment_hash, a.payment_hash);
    assert_eq!(decoded.payee_pubkey, fake.node_id());
    assert_eq!(decoded.amount, Some(msat(25_000)));
    assert_eq!(lnd.lookup_invoice(&a.payment_hash).await.unwrap(), a);

    // Amountless, then settled by a payer who chose the amount.
    let b = lnd.add_invoice(&invoice_req(0, "tip")).await.unwrap();
    assert_eq!((b.amount, b.add_index), (Msat::ZERO, 2));
    assert_eq!(fake.settle(&b.payment_hash, 7_000), 1);
    let b = lnd.lookup_invoice(&b.payment_hash).await.unwrap();
    assert_eq!(b.status, InvoiceStatus::Settled);
    assert_eq!((b.amount_paid, b.settle_index), (msat(7_000), 1));
    assert!(b.settled_at_ms >= b.created_at_ms);

    assert!(matches!(
        lnd.lookup_invoice(&PaymentHash([7; 32])).await,
        Err(NodeError::NotFound)
    ));

    // An open invoice past its expiry reads as expired.
    let short = lnd
        .add_invoice(&InvoiceRequest {
            expiry_secs: 1,
            ..invoice_req(1_000, "short")
        })
        .await
        .unwrap();
    let expired =
        oa_testkit::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            let lnd = lnd.clone();
            let hash = short.payment_hash;
            async move {
                let inv = lnd.lookup_invoice(&hash).await.ok()?;
                (inv.status == InvoiceStatus::Expired).then_some(inv)
            }
        })
        .await
        .expect("the invoice expires");
    assert_eq!(expired.add_index, 3);
}

#[tokio::test]
async fn lnd_invoice_subscription_from_zero_replays_every_settlement_then_follows_live() {
    let (fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    // Nothing settled yet: the live subscription alone sees the first settlement.
    let mut from_zero = lnd.subscribe_settled_invoices(0).await.unwrap();
    let a = lnd.add_invoice(&invoice_req(1_000, "a")).await.unwrap();
    let _open = lnd.add_invoice(&invoice_req(2_000, "open")).await.unwrap();
    fake.settle(&a.payment_hash, 0);
    let got = next_invoice(&mut from_zero).await.unwrap().unwrap();
    assert_eq!((got.payment_hash, got.settle_index), (a.payment_hash, 1));
    assert_eq!(got.status, InvoiceStatus::Settled);
    drop(from_zero);

    // Settlements exist: from 0 they are all replayed (LND itself replays nothing from 0).
    let b = lnd.add_invoice(&invoice_req(3_000, "b")).await.unwrap();
    fake.settle(&b.payment_hash, 0);
    let mut again = lnd.subscribe_settled_invoices(0).await.unwrap();
    let first = next_invoice(&mut again).await.unwrap().unwrap();
    let second = next_invoice(&mut again).await.unwrap().unwrap();
    assert_eq!(
        [first.settle_index, second.settle_index],
        [1, 2],
        "in settle order"
    );
    assert_eq!(second.payment_hash, b.payment_hash);
    let c = lnd.add_invoice(&invoice_req(4_000, "c")).await.unwrap();
    fake.settle(&c.payment_hash, 0);
    let third = next_invoice(&mut again).await.unwrap().unwrap();
    assert_eq!(
        (third.payment_hash, third.settle_index),
        (c.payment_hash, 3)
    );
}

#[tokio::test]
async fn lnd_invoice_subscription_dropped_mid_way_is_unavailable_and_resuming_misses_nothing() {
    let (fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    let mut invoices = Vec::new();
    for i in 0..6u64 {
        let inv = lnd
            .add_invoice(&invoice_req(1_000 * (i + 1), &format!("n{i}")))
            .await
            .unwrap();
        invoices.push(inv.payment_hash);
    }
    fake.settle(&invoices[0], 0);
    fake.settle(&invoices[1], 0);
    // The server breaks each subscription after three messages of its own.
    fake.set_faults(Faults {
        drop_invoice_stream_after: Some(3),
        ..Faults::default()
    });
    let mut seen: Vec<(u64, PaymentHash)> = Vec::new();
    let mut stream = lnd.subscribe_settled_invoices(0).await.unwrap();
    let mut last = 0;
    // 1 (found by listing) and 2 (replayed), then 3 live; an add (not a settlement) is the
    // third message, and the server breaks the stream.
    for _ in 0..2 {
        let inv = next_invoice(&mut stream).await.unwrap().unwrap();
        last = inv.settle_index;
        seen.push((inv.settle_index, inv.payment_hash));
    }
    fake.settle(&invoices[2], 0);
    let inv = next_invoice(&mut stream).await.unwrap().unwrap();
    last = inv.settle_index.max(last);
    seen.push((inv.settle_index, inv.payment_hash));
    let _unsettled = lnd.add_invoice(&invoice_req(9_000, "late")).await.unwrap();
    let broken = next_invoice(&mut stream).await.unwrap();
    assert!(
        matches!(broken, Err(NodeError::Unavailable(_))),
        "a dropped subscription is unavailable: {broken:?}"
    );
    assert!(next_invoice(&mut stream).await.is_none(), "then it ends");

    // Settled while nobody listened.
    fake.settle(&invoices[3], 0);
    fake.settle(&invoices[4], 0);
    fake.set_faults(Faults::default());
    let mut resumed = lnd.subscribe_settled_invoices(last).await.unwrap();
    for _ in 0..2 {
        let inv = next_invoice(&mut resumed).await.unwrap().unwrap();
        seen.push((inv.settle_index, inv.payment_hash));
    }
    fake.settle(&invoices[5], 0);
    let inv = next_invoice(&mut resumed).await.unwrap().unwrap();
    seen.push((inv.settle_index, inv.payment_hash));

    let expected: Vec<(u64, PaymentHash)> = (1..=6u64)
        .map(|i| (i, invoices[(i - 1) as usize]))
        .collect();
    assert_eq!(
        seen, expected,
        "every settlement once, in order, none missed"
    );
}

#[tokio::test]
async fn lnd_estimates_route_fees_from_the_graph() {
    let (fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    let direct = lnd
        .estimate_route_fee(&fake.peer_id(), msat(50_000))
        .await
        .unwrap();
    assert_eq!(direct.fee, Msat::ZERO);
    assert_eq!(direct.time_lock_delay, 40);
    // 50_500 msat asks LND about 51 sat (rounded up).
    let routed = lnd
        .estimate_route_fee(&fake.merchant_id(), msat(50_500))
        .await
        .unwrap();
    assert_eq!(
        routed.fee,
        msat(ROUTED_BASE_FEE_MSAT + 51_000 * ROUTED_FEE_PPM / 1_000_000)
    );
    assert_eq!(routed.time_lock_delay, 80);
    let nowhere = bitcoin::secp256k1::SecretKey::from_slice(&[0x77; 32])
        .unwrap()
        .public_key(&bitcoin::secp256k1::Secp256k1::new())
        .to_string();
    assert!(matches!(
        lnd.estimate_route_fee(&nowhere, msat(1_000)).await,
        Err(NodeError::Refused(_))
    ));
    let calls = fake.calls("EstimateRouteFee");
    assert!(matches!(
        lnd.estimate_route_fee("not-a-key", msat(1_000)).await,
        Err(NodeError::Refused(_))
    ));
    assert_eq!(
        fake.calls("EstimateRouteFee"),
        calls,
        "refused before asking LND"
    );
}

#[tokio::test]
async fn lnd_channels_open_confirm_close_once_and_show_as_closed() {
    let (fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    let before = lnd.list_channels().await.unwrap();
    let open = OpenChannelRequest {
        remote_pubkey: fake.merchant_id(),
        local_funding: msat(100_000_000),
        push: msat(10_000_000),
        private: true,
    };
    let point = lnd.open_channel(&open).await.unwrap();
    assert_eq!(point.funding_txid.len(), 64);
    // Pending until its funding transaction confirms.
    assert_eq!(lnd.list_channels().await.unwrap().len(), before.len());
    fake.mine(CONFIRMATIONS);
    let after = lnd.list_channels().await.unwrap();
    assert_eq!(after.len(), before.len() + 1);
    let new = after
        .iter()
        .find(|c| c.remote_pubkey == fake.merchant_id())
        .unwrap();
    assert_eq!(new.capacity, msat(100_000_000));
    assert_eq!(new.local_balance, msat(90_000_000));
    // The funding outpoint we reported is the one LND funded (txid bytes reversed to hex).
    assert_eq!(point.output_index, 0);
    assert!(
        fake.tx_label(&point.funding_txid).is_some(),
        "{} is the funding transaction",
        point.funding_txid
    );
    let wallet = lnd.wallet_balance().await.unwrap();
    assert_eq!(
        wallet.confirmed,
        msat(((INITIAL_WALLET_SAT - 100_000 - ONCHAIN_FEE_SAT) * 1000) as u64)
    );

    // A cooperative close, asked twice: one close, one closing transaction.
    let closing = lnd.close_channel(new.chan_id, false).await.unwrap();
    assert_eq!(closing.closing_txid.len(), 64);
    assert_eq!(
        lnd.close_channel(new.chan_id, false).await.unwrap(),
        closing
    );
    assert_eq!(fake.calls("CloseChannel"), 1);
    fake.mine(CONFIRMATIONS);
    let closed = lnd.closed_channels().await.unwrap();
    let summary = closed.iter().find(|c| c.chan_id == new.chan_id).unwrap();
    assert_eq!(summary.close_type, CloseType::Cooperative);
    assert_eq!(summary.closing_txid, closing.closing_txid);
    assert_eq!(summary.capacity, msat(100_000_000));
    assert_eq!(summary.settled_balance, msat(90_000_000));
    assert_eq!(summary.remote_pubkey, fake.merchant_id());
    assert!(summary.close_height > 0);
    // Closed: asking again still names the same closing transaction.
    assert_eq!(
        lnd.close_channel(new.chan_id, false).await.unwrap(),
        closing
    );
    assert_eq!(fake.calls("CloseChannel"), 1);

    // A force close.
    let forced = lnd.close_channel(before[0].chan_id, true).await.unwrap();
    assert_eq!(
        lnd.close_channel(before[0].chan_id, true).await.unwrap(),
        forced
    );
    fake.mine(CONFIRMATIONS);
    let closed = lnd.closed_channels().await.unwrap();
    let summary = closed
        .iter()
        .find(|c| c.chan_id == before[0].chan_id)
        .unwrap();
    assert_eq!(summary.close_type, CloseType::LocalForce);
    assert_eq!(summary.closing_txid, forced.closing_txid);

    assert!(matches!(
        lnd.close_channel(42, false).await,
        Err(NodeError::UnknownChannel(42))
    ));
    // Refusals: too small (LND's minimum), not whole satoshis, a bad key, not enough funds.
    let refused = |r: Result<_, NodeError>| matches!(r, Err(NodeError::Refused(_)));
    assert!(refused(
        lnd.open_channel(&OpenChannelRequest {
            local_funding: msat(1_000_000),
            ..open.clone()
        })
        .await
    ));
    assert!(refused(
        lnd.open_channel(&OpenChannelRequest {
            local_funding: msat(100_000_001),
            ..open.clone()
        })
        .await
    ));
    assert!(refused(
        lnd.open_channel(&OpenChannelRequest {
            remote_pubkey: "02abcd".into(),
            ..open.clone()
        })
        .await
    ));
    let too_much = lnd
        .open_channel(&OpenChannelRequest {
            local_funding: msat(10_000_000_000),
            push: Msat::ZERO,
            ..open.clone()
        })
        .await;
    assert!(
        matches!(too_much, Err(NodeError::InsufficientFunds)),
        "{too_much:?}"
    );
}

#[tokio::test]
async fn lnd_fee_report_and_inbound_fees_round_trip() {
    let (_fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    let channels = lnd.list_channels().await.unwrap();
    let target = channels[1].chan_id;
    let policy = ChannelPolicy {
        base_fee: msat(2_000),
        fee_ppm: 250,
        min_htlc: msat(1_000),
        max_htlc: msat(500_000_000),
        time_lock_delta: 80,
        inbound_base_fee_msat: -500,
        inbound_fee_ppm: -20,
    };
    assert_eq!(
        lnd.update_channel_policy(Some(target), &policy)
            .await
            .unwrap(),
        1
    );
    let listed = lnd.list_channels().await.unwrap();
    let updated = listed.iter().find(|c| c.chan_id == target).unwrap();
    assert_eq!(updated.local_policy, policy);
    let other = listed.iter().find(|c| c.chan_id != target).unwrap();
    assert_eq!(
        (
            other.local_policy.inbound_base_fee_msat,
            other.local_policy.inbound_fee_ppm
        ),
        (0, 0)
    );

    let report = lnd.fee_report().await.unwrap();
    assert_eq!(report.channels.len(), channels.len());
    let (_, reported) = report
        .channels
        .iter()
        .find(|(id, _)| *id == target)
        .unwrap();
    assert_eq!(*reported, policy);
    assert_eq!(
        (
            report.day_fee_sum,
            report.week_fee_sum,
            report.month_fee_sum
        ),
        (
            msat(FEE_SUMS_SAT.0 * 1000),
            msat(FEE_SUMS_SAT.1 * 1000),
            msat(FEE_SUMS_SAT.2 * 1000)
        )
    );

    // LND (by default) accepts inbound discounts only: a positive inbound fee is refused.
    let positive = ChannelPolicy {
        inbound_base_fee_msat: 100,
        ..policy
    };
    let r = lnd.update_channel_policy(Some(target), &positive).await;
    assert!(matches!(r, Err(NodeError::Refused(_))), "{r:?}");
    let out_of_range = ChannelPolicy {
        inbound_base_fee_msat: i64::from(i32::MIN) - 1,
        ..policy
    };
    assert!(matches!(
        lnd.update_channel_policy(Some(target), &out_of_range).await,
        Err(NodeError::Refused(_))
    ));
}

#[tokio::test]
async fn lnd_wallet_balance_addresses_and_send_coins_once_per_label() {
    let (fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    let bal = lnd.wallet_balance().await.unwrap();
    assert_eq!(bal.confirmed, msat(INITIAL_WALLET_SAT as u64 * 1000));
    assert_eq!(bal.unconfirmed, Msat::ZERO);
    fake.receive_onchain(70_000);
    assert_eq!(
        lnd.wallet_balance().await.unwrap().unconfirmed,
        msat(70_000_000)
    );
    fake.mine(1);
    let bal = lnd.wallet_balance().await.unwrap();
    assert_eq!(
        (bal.confirmed, bal.unconfirmed),
        (
            msat((INITIAL_WALLET_SAT as u64 + 70_000) * 1000),
            Msat::ZERO
        )
    );

    let address = lnd.new_address().await.unwrap();
    let parsed = address
        .parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
        .unwrap()
        .require_network(bitcoin::Network::Regtest)
        .unwrap();
    assert_eq!(parsed.address_type(), Some(bitcoin::AddressType::P2wpkh));
    assert_ne!(lnd.new_address().await.unwrap(), address, "fresh each time");

    let send = SendCoinsRequest {
        address: address.clone(),
        amount: msat(25_000_000),
        sat_per_vbyte: 2,
        label: "withdrawal-7".into(),
    };
    let txid = lnd.send_coins(&send).await.unwrap();
    assert_eq!(fake.tx_label(&txid).as_deref(), Some("withdrawal-7"));
    assert_eq!(
        lnd.send_coins(&send).await.unwrap(),
        txid,
        "same label, same tx"
    );
    assert_eq!(fake.coin_sends(), 1, "sent once");
    assert_eq!(fake.calls("SendCoins"), 1);

    // The node sends but the answer is lost: the retry finds the send by its label.
    fake.set_faults(Faults {
        lose_send_coins_answer: true,
        ..Faults::default()
    });
    let lost = SendCoinsRequest {
        label: "withdrawal-8".into(),
        ..send.clone()
    };
    assert!(matches!(
        lnd.send_coins(&lost).await,
        Err(NodeError::Unavailable(_))
    ));
    let found = lnd.send_coins(&lost).await.unwrap();
    assert_eq!(fake.tx_label(&found).as_deref(), Some("withdrawal-8"));
    assert_eq!(fake.coin_sends(), 2, "the lost send was not repeated");

    // Concurrent sends with one label from this process: one transaction.
    let concurrent = SendCoinsRequest {
        label: "withdrawal-9".into(),
        ..send.clone()
    };
    let (x, y) = tokio::join!(lnd.send_coins(&concurrent), lnd.send_coins(&concurrent));
    assert_eq!(x.unwrap(), y.unwrap());
    assert_eq!(fake.coin_sends(), 3);

    // Without a label there is nothing to find a send by: it is sent (and never mistaken for
    // another unlabelled transaction, such as the wallet's first deposit).
    let unlabelled = lnd
        .send_coins(&SendCoinsRequest {
            label: String::new(),
            ..send.clone()
        })
        .await
        .unwrap();
    assert_eq!(fake.tx_label(&unlabelled).as_deref(), Some(""));
    assert_eq!(fake.coin_sends(), 4);
    assert!(![txid.as_str(), found.as_str()].contains(&unlabelled.as_str()));

    let refused = |r: Result<String, NodeError>| matches!(r, Err(NodeError::Refused(_)));
    assert!(refused(
        lnd.send_coins(&SendCoinsRequest {
            label: "odd".into(),
            amount: msat(25_000_001),
            ..send.clone()
        })
        .await
    ));
    assert!(refused(
        lnd.send_coins(&SendCoinsRequest {
            label: "bad-address".into(),
            address: "not-an-address".into(),
            ..send.clone()
        })
        .await
    ));
    let broke = lnd
        .send_coins(&SendCoinsRequest {
            label: "too-much".into(),
            amount: msat(100_000_000_000),
            ..send.clone()
        })
        .await;
    assert!(
        matches!(broke, Err(NodeError::InsufficientFunds)),
        "{broke:?}"
    );
    assert_eq!(fake.coin_sends(), 4);
}

#[tokio::test]
async fn lnd_rebalance_pays_ourselves_out_one_channel_and_back_in_the_other() {
    let (fake, url, cert) = start().await;
    let lnd = node(&url, &cert, MACAROON);
    let before = lnd.list_channels().await.unwrap();
    let (out, inc) = (&before[1], &before[0]);
    let amount = 40_000_000u64;
    let outcome = lnd
        .rebalance(&RebalanceRequest {
            out_chan_id: out.chan_id,
            in_chan_id: inc.chan_id,
            amount: msat(amount),
            fee_limit: msat(10_000),
            timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
    let PayState::Succeeded { preimage, fee } = &outcome.state else {
        panic!("expected success, got {:?}", outcome.state);
    };
    assert_eq!(preimage.payment_hash(), outcome.payment_hash);
    let expected_fee = ROUTED_BASE_FEE_MSAT + amount * ROUTED_FEE_PPM / 1_000_000;
    assert_eq!(*fee, msat(expected_fee));
    // Out over the out channel, back in from the in channel's peer, to ourselves.
    assert_eq!(
        fake.rebalances(),
        vec![(vec![out.chan_id], hex::decode(&inc.remote_pubkey).unwrap())]
    );
    let after = lnd.list_channels().await.unwrap();
    let balance = |id: u64| {
        after
            .iter()
            .find(|c| c.chan_id == id)
            .unwrap()
            .local_balance
            .as_u64()
    };
    assert_eq!(
        balance(out.chan_id),
        (out.local_balance.as_u64() - amount - expected_fee) / 1000 * 1000
    );
    assert_eq!(balance(inc.chan_id), inc.local_balance.as_u64() + amount);
    // The invoice we paid ourselves is settled, and the payment is tracked like any other.
    let inv = lnd.lookup_invoice(&outcome.payment_hash).await.unwrap();
    assert_eq!(inv.status, InvoiceStatus::Settled);
    assert_eq!(
        lnd.track(&outcome.payment_hash).await.unwrap(),
        outcome.state
    );

    let req = |out_chan_id, in_chan_id| RebalanceRequest {
        out_chan_id,
        in_chan_id,
        amount: msat(1_000_000),
        fee_limit: msat(10_000),
        timeout: Duration::from_secs(5),
    };
    assert!(matches!(
        lnd.rebalance(&req(99, inc.chan_id)).await,
        Err(NodeError::UnknownChannel(99))
    ));
    assert!(matches!(
        lnd.rebalance(&req(out.chan_id, 98)).await,
        Err(NodeError::UnknownChannel(98))
    ));
    assert!(matches!(
        lnd.rebalance(&req(out.chan_id, out.chan_id)).await,
        Err(NodeError::Refused(_))
    ));
    // A fee limit below the route's fee: the circular payment fails, with its hash.
    let tight = lnd
        .rebalance(&RebalanceRequest {
            fee_limit: msat(1),
            ..req(out.chan_id, inc.chan_id)
        })
        .await
        .unwrap();
    assert!(
        matches!(tight.state, PayState::Failed { .. }),
        "{:?}",
        tight.state
    );
    assert_eq!(fake.rebalances().len(), 1);
}
