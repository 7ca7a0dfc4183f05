//! Hydra against the real wallet-executor on the simulated network, in-process over gRPC on
//! loopback: a deposit paid by another node of the sim is credited from the executor's
//! settlement stream, a withdrawal pays a merchant, a liquidity pay draws from the pool, and the
//! status shows the node's real liquidity. Every receipt link is checked against the executor's
//! own receipts.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, body::Body};
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use oa_money::Msat;
use oa_service::{Clock, SystemClock};
use oa_testkit::DevKeyring;
use serde_json::{Value, json};
use tower::ServiceExt;
use wallet_executor::node::sim::SimNetwork;

use crate::{deposits::receipt, harness::ALL_SCOPES};

/// A wallet-executor on the simulated network, serving gRPC and HTTP on loopback.
pub struct RealExecutor {
    pub sim: SimNetwork,
    pub grpc_addr: SocketAddr,
    /// Its receipt key id, which Hydra is told to trust.
    pub key_id: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl RealExecutor {
    pub async fn start(dir: &std::path::Path, ring: &DevKeyring, extra: &[&str]) -> RealExecutor {
        let mut args = vec![
            "wallet-executor".to_owned(),
            "--listen=127.0.0.1:0".into(),
            "--grpc-listen=127.0.0.1:0".into(),
            format!(
                "--database-url=sqlite://{}",
                dir.join("wallet.db").display()
            ),
            format!(
                "--receipt-key-file={}",
                ring.receipt_key_file("wallet-executor").display()
            ),
            format!("--trust-file={}", ring.trust_file().display()),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let config = wallet_executor::Config::parse_from(args);
        let app = wallet_executor::build_with(&config, Arc::new(SystemClock), None)
            .await
            .unwrap();
        let sim = app.sim.clone().unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(wallet_executor::serve(app, http, grpc, async move {
            let _ = rx.await;
        }));
        let secret = std::fs::read_to_string(ring.receipt_key_file("wallet-executor")).unwrap();
        let key_id = oa_receipts::ReceiptKey::from_secret_hex(secret.trim())
            .unwrap()
            .key_id()
            .to_owned();
        RealExecutor {
            sim,
            grpc_addr,
            key_id,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// Hydra's flags to run against `exec` with its own identity, on SQLite in `dir`.
pub fn hydra_flags(dir: &std::path::Path, ring: &DevKeyring, exec: &RealExecutor) -> Vec<String> {
    vec![
        "hydra".to_owned(),
        "--listen=127.0.0.1:0".into(),
        format!("--database-url=sqlite://{}", dir.join("hydra.db").display()),
        format!(
            "--receipt-key-file={}",
            ring.receipt_key_file("hydra").display()
        ),
        format!("--trust-file={}", ring.trust_file().display()),
        format!(
            "--identity-key-file={}",
            ring.identity_file("hydra").display()
        ),
        format!("--identity-kid={}", ring.kid("hydra")),
        format!("--executor-url=http://{}", exec.grpc_addr),
        format!("--executor-receipt-keys={}", exec.key_id),
    ]
}

async fn call(
    router: &Router,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn n(v: &Value) -> u64 {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn deposit_withdraw_and_pay_through_the_real_executor_on_the_sim() {
    let dir = tempfile::tempdir().unwrap();
    let ring = DevKeyring::ensure(dir.path()).unwrap();
    let exec = RealExecutor::start(dir.path(), &ring, &[]).await;
    let config = hydra::Config::try_parse_from(hydra_flags(dir.path(), &ring, &exec)).unwrap();
    let app = hydra::build(
        &config,
        Arc::new(SystemClock) as Arc<dyn Clock>,
        hydra::Deps::default(),
    )
    .await
    .unwrap();
    let token = ring
        .identity("treasury")
        .unwrap()
        .mint("hydra", &ALL_SCOPES, Duration::from_secs(600))
        .unwrap();
    let r = &app.http;

    // Deposit: Hydra asks the executor for an invoice; `hub` pays it over the sim.
    let (status, d) = call(
        r,
        &token,
        "POST",
        "/v1/liquidity/deposit",
        Some(json!({"idempotency_key": "d1", "agent_id": "agent-1", "amount_msat": "50000000", "method": "invoice"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    let deposit_id = d["deposit"]["deposit_id"].as_str().unwrap().to_owned();
    let paid = exec
        .sim
        .pay_from(
            "hub",
            d["deposit"]["invoice"].as_str().unwrap(),
            Msat::new(1_000_000).unwrap(),
        )
        .unwrap();
    assert!(
        matches!(paid, wallet_executor::node::PayState::Succeeded { .. }),
        "{paid:?}"
    );
    let done = oa_testkit::wait_until(
        Duration::from_secs(15),
        Duration::from_millis(25),
        || async {
            let (_, b) = call(
                r,
                &token,
                "GET",
                &format!("/v1/liquidity/deposit/{deposit_id}"),
                None,
            )
            .await;
            (b["deposit"]["state"] == "DEPOSIT_STATE_CREDITED").then_some(b)
        },
    )
    .await
    .expect("the deposit is credited from the executor's settlement stream");
    let mine = receipt(&done["receipt"]);
    let theirs = receipt(&done["executor_receipt"]);
    mine.verify().unwrap();
    theirs.verify().unwrap();
    assert_eq!(
        theirs.schema,
        "oa.wallet_executor.invoice_settlement_receipt.v1"
    );
    assert_eq!(theirs.issuer.key_id, exec.key_id);
    assert_eq!(mine.links, vec![theirs.hash]);
    assert_eq!(mine.body["amount_paid_msat"], "50000000");
    // What the requested link rule checks (docs/receipts.md, 12.7).
    for field in [
        "payment_hash",
        "amount_msat",
        "amount_paid_msat",
        "settle_index",
    ] {
        assert_eq!(mine.body[field], theirs.body[field], "{field}");
    }
    assert_eq!(mine.body["executor_receipt"], theirs.hash.to_string());

    // Withdraw to a merchant invoice (routed through `router`, which charges a fee).
    let merchant = exec
        .sim
        .create_invoice(
            "merchant",
            Some(Msat::new(10_000_000).unwrap()),
            "w",
            Duration::from_secs(3_600),
        )
        .unwrap();
    let (status, w) = call(
        r,
        &token,
        "POST",
        "/v1/liquidity/withdraw",
        Some(json!({"idempotency_key": "w1", "agent_id": "agent-1", "invoice": merchant.bolt11, "max_fee_msat": "100000"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{w}");
    assert_eq!(w["withdrawal"]["state"], "WITHDRAWAL_STATE_PAID", "{w}");
    let fee = n(&w["withdrawal"]["fee_msat"]);
    assert!(fee > 0, "{w}");
    let wr = receipt(&w["receipt"]);
    let er = receipt(&w["executor_receipt"]);
    er.verify().unwrap();
    assert_eq!(er.schema, "oa.wallet_executor.payment_receipt.v1");
    assert_eq!(wr.links, vec![er.hash]);
    for field in ["payment_hash", "amount_msat", "fee_msat"] {
        assert_eq!(wr.body[field], er.body[field], "{field}");
    }
    assert_eq!(wr.body["executor_receipt"], er.hash.to_string());
    assert_eq!(exec.sim.send_count(&merchant.payment_hash), 1);
    let (_, bal) = call(r, &token, "GET", "/v1/liquidity/balance/agent-1", None).await;
    assert_eq!(n(&bal["balance_msat"]), 50_000_000 - 10_000_000 - fee);
    assert_eq!(n(&bal["reserved_msat"]), 0);

    // A liquidity pay draws from the pool.
    let carol = exec
        .sim
        .create_invoice(
            "carol",
            Some(Msat::new(1_000_000).unwrap()),
            "p",
            Duration::from_secs(3_600),
        )
        .unwrap();
    let (_, q) = call(
        r,
        &token,
        "POST",
        "/v1/liquidity/quote_pay",
        Some(json!({"idempotency_key": "q1", "invoice": carol.bolt11, "max_fee_msat": "10000", "payer_ref": "agent-2"})),
    )
    .await;
    let (_, p) = call(
        r,
        &token,
        "POST",
        "/v1/liquidity/pay",
        Some(json!({"idempotency_key": "p1", "quote_id": q["quote"]["quote_id"]})),
    )
    .await;
    assert_eq!(p["quote"]["state"], "QUOTE_STATE_PAID", "{p}");
    let mut conn = app.db.pool().acquire().await.unwrap();
    let payments = oa_ledger::get_account(&mut conn, "payments")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        payments.balances.credits_posted_msat,
        1_000_000 + n(&p["fee_msat"])
    );
    assert!(
        oa_ledger::check_invariants(&mut conn)
            .await
            .unwrap()
            .is_empty()
    );
    drop(conn);

    // The status reads the node's real liquidity.
    let (_, st) = call(r, &token, "GET", "/v1/liquidity/status", None).await;
    assert_eq!(st["executor_reachable"], true);
    let t = &st["withdraw_throttle"];
    assert_eq!(t["state"], "normal", "{st}");
    assert_eq!(n(&t["agent_balances_msat"]), 50_000_000 - 10_000_000 - fee);
    assert!(n(&t["channel_local_msat"]) > 100_000_000_000, "{t}");
    assert_eq!(n(&t["onchain_confirmed_msat"]), 10_000_000_000, "{t}");
    assert_eq!(st["onchain_confirmed_msat"], t["onchain_confirmed_msat"]);

    app.stop();
    app.db.close().await;
    exec.stop().await;
}
