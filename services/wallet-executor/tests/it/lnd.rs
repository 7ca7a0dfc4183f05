//! The `lnd` backend against the fake LND server: the node-trait conformance suite, a wrong
//! macaroon, a stream dropped mid-payment and a payment hanging in flight.

use std::{sync::Arc, time::Duration};

use oa_money::Msat;
use wallet_executor::node::{
    LightningNode, NodeError, PayState, SendRequest,
    lnd::{LndConfig, LndConfigError, LndNode},
};

use crate::{
    conformance::node_conformance,
    fake_lnd::{FakeLnd, Faults},
};

const MACAROON: &str = "0201036c6e6402f801030a10";

async fn start() -> (FakeLnd, String) {
    let fake = FakeLnd::new(MACAROON);
    let url = fake.serve().await;
    (fake, url)
}

fn node(url: &str, macaroon: &str) -> LndNode {
    LndNode::connect(&LndConfig {
        url: url.to_owned(),
        macaroon_hex: macaroon.to_owned(),
        tls_cert_pem: None,
    })
    .unwrap()
}

fn send(bolt11: &str, timeout: Duration) -> SendRequest {
    let d = oa_invoice::decode(bolt11).unwrap();
    SendRequest {
        bolt11: bolt11.to_owned(),
        payment_hash: d.payment_hash,
        amount: d.amount.unwrap(),
        fee_limit: Msat::new(10_000).unwrap(),
        timeout,
    }
}

async fn track_until_terminal(node: &LndNode, req: &SendRequest) -> PayState {
    for _ in 0..200 {
        let state = node.track(&req.payment_hash).await.unwrap();
        if state.is_terminal() {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("payment never reached a terminal state");
}

#[tokio::test]
async fn lnd_backend_passes_the_node_conformance_suite() {
    let (fake, url) = start().await;
    let factory = {
        let fake = fake.clone();
        move |direct: bool, amount_msat: u64| fake.issue(direct, amount_msat)
    };
    node_conformance(Arc::new(node(&url, MACAROON)), &factory).await;
    assert_eq!(fake.max_sends(), 1, "no hash sent twice");
}

#[tokio::test]
async fn lnd_wrong_macaroon_is_a_typed_auth_error() {
    let (fake, url) = start().await;
    let wrong = node(&url, "deadbeef");
    assert!(matches!(wrong.info().await, Err(NodeError::Auth)));
    assert!(matches!(wrong.list_channels().await, Err(NodeError::Auth)));
    let req = send(&fake.issue(true, 5_000), Duration::from_secs(5));
    assert!(matches!(wrong.pay(&req).await, Err(NodeError::Auth)));
    assert!(matches!(
        wrong.track(&req.payment_hash).await,
        Err(NodeError::Auth)
    ));
    assert_eq!(fake.sends(&req.payment_hash), 0);

    // The right macaroon, revoked at the node: also Auth, never NotFound.
    let right = node(&url, MACAROON);
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
    assert_eq!(fake.sends(&req.payment_hash), 0);
}

#[tokio::test]
async fn lnd_stream_dropped_mid_payment_is_tracked_to_its_result_never_paid_twice() {
    let (fake, url) = start().await;
    let lnd = node(&url, MACAROON);
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
    let done = track_until_terminal(&lnd, &req).await;
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
    let (fake, url) = start().await;
    let lnd = node(&url, MACAROON);
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
    let done = track_until_terminal(&lnd, &req).await;
    assert!(matches!(done, PayState::Succeeded { .. }), "{done:?}");
    assert_eq!(fake.sends(&req.payment_hash), 1);
}

#[tokio::test]
async fn lnd_credentials_are_redacted_and_tls_is_a_typed_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let mac = dir.path().join("admin.macaroon");
    std::fs::write(&mac, [0x02u8, 0x01, 0x03, 0xff]).unwrap();
    let config = LndConfig::from_files("http://127.0.0.1:1", &mac, None).unwrap();
    assert_eq!(config.macaroon_hex, "020103ff");
    let debug = format!("{config:?}");
    assert!(!debug.contains("020103ff"), "{debug}");
    let lnd = LndNode::connect(&config).unwrap();
    assert!(!format!("{lnd:?}").contains("020103ff"));
    // Unreachable node: unavailable, never NotFound.
    assert!(matches!(
        lnd.track(&oa_invoice::PaymentHash([1; 32])).await,
        Err(NodeError::Unavailable(_))
    ));
    let https = LndConfig {
        url: "https://127.0.0.1:10009".into(),
        ..config
    };
    assert!(matches!(
        LndNode::connect(&https),
        Err(LndConfigError::TlsNotSupported)
    ));
}

/// The executor itself, started with `--backend lnd` against the fake: a payment succeeds with a
/// receipt, and a payment whose stream drops mid-way is tracked to its real result, sent once.
#[tokio::test]
async fn the_executor_pays_through_the_lnd_backend_and_tracks_a_dropped_stream() {
    use oa_proto::wallet::{self, PaymentStatus, wallet_executor_client::WalletExecutorClient};

    let (fake, url) = start().await;
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
        ],
    );
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

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn lnd_send_with_unknown_fate_is_never_called_not_found() {
    let (fake, url) = start().await;
    let lnd = node(&url, MACAROON);
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done = track_until_terminal(&lnd, &req).await;
    assert!(matches!(done, PayState::Succeeded { .. }), "{done:?}");
    assert_eq!(fake.sends(&req.payment_hash), 1);
}

#[tokio::test]
async fn the_executor_refuses_an_https_lnd_url_at_start_up() {
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
            "--lnd-url=https://127.0.0.1:10009",
            &format!("--lnd-macaroon-file={}", mac.display()),
        ],
    );
    let err = wallet_executor::build(&config, Arc::new(oa_service::SystemClock))
        .await
        .err()
        .expect("https is refused in this version");
    assert!(err.to_string().contains("TLS to LND is not built"), "{err}");
    assert!(!format!("{err:?}").contains(MACAROON));
}
