//! Quote + pay per second through Hydra's HTTP API and the real wallet-executor on the sim.
//!
//! Starts, in this process: the wallet-executor on the embedded simulated network (SQLite in a
//! temp dir, gRPC on loopback, JWT on every call) and Hydra (SQLite, its own identity, talking to
//! the executor over gRPC, serving HTTP on loopback with TCP_NODELAY). The invoices are created on
//! the sim beforehand (signing them is the payee's work). Then `OA_BENCH_CALLERS` callers (default
//! 32), each with its own HTTP connection and a real EdDSA JWT, each do `POST
//! /v1/liquidity/quote_pay` then `POST /v1/liquidity/pay` for `OA_BENCH_PAYMENTS` invoices
//! (default 10,000; 1,000 warm-up payments first, not counted). Prints payments/s and the
//! p50/p99 latency of one quote + pay as the caller sees it, and checks every payment succeeded,
//! the sim sent each hash once, and Hydra's ledger balances.
//!
//! ```sh
//! cargo bench -p hydra --bench quote_pay
//! # knobs: OA_BENCH_PAYMENTS (default 10000), OA_BENCH_CALLERS (default 32)
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use oa_service::{Clock, SystemClock};
use oa_testkit::DevKeyring;
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Milliseconds with two decimals, from integer microseconds (no floats in this workspace).
fn ms(d: Duration) -> String {
    format!("{}.{:02}", micros(d) / 1_000, micros(d) % 1_000 / 10)
}

async fn post(client: &reqwest::Client, url: &str, token: &str, body: &Value) -> Value {
    let resp = client
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("send");
    let status = resp.status();
    let v: Value = resp.json().await.expect("json");
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

#[tokio::main]
async fn main() {
    let payments = env_usize("OA_BENCH_PAYMENTS", 10_000);
    let callers = env_usize("OA_BENCH_CALLERS", 32);
    let warmup = 1_000.min(payments);
    let total = warmup + payments;
    let dir = tempfile::tempdir().unwrap();
    let ring = DevKeyring::ensure(dir.path()).unwrap();

    // The executor, as its own bench runs it.
    let exec_config = wallet_executor::Config::parse_from([
        "wallet-executor".to_owned(),
        "--listen=127.0.0.1:0".into(),
        "--grpc-listen=127.0.0.1:0".into(),
        format!(
            "--database-url=sqlite://{}",
            dir.path().join("wallet.db").display()
        ),
        format!(
            "--receipt-key-file={}",
            ring.receipt_key_file("wallet-executor").display()
        ),
        format!("--trust-file={}", ring.trust_file().display()),
        "--window-max-msat=1000000000000".into(),
    ]);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let exec = wallet_executor::build_with(&exec_config, clock.clone(), None)
        .await
        .unwrap();
    let sim = exec.sim.clone().unwrap();
    let exec_http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let exec_grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = exec_grpc.local_addr().unwrap();
    let (exec_stop, exec_stopped) = tokio::sync::oneshot::channel::<()>();
    let exec_task = tokio::spawn(wallet_executor::serve(
        exec,
        exec_http,
        exec_grpc,
        async move {
            let _ = exec_stopped.await;
        },
    ));
    let exec_key = oa_receipts::ReceiptKey::from_secret_hex(
        std::fs::read_to_string(ring.receipt_key_file("wallet-executor"))
            .unwrap()
            .trim(),
    )
    .unwrap();

    // Hydra, with its own identity, over gRPC to the executor.
    let hydra_config = hydra::Config::parse_from([
        "hydra".to_owned(),
        "--listen=127.0.0.1:0".into(),
        format!(
            "--database-url=sqlite://{}",
            dir.path().join("hydra.db").display()
        ),
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
        format!("--executor-url=http://{grpc_addr}"),
        format!("--executor-receipt-keys={}", exec_key.key_id()),
    ]);
    let app = hydra::build(&hydra_config, clock, hydra::Deps::default())
        .await
        .unwrap();
    let db = app.db.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (hydra_stop, hydra_stopped) = tokio::sync::oneshot::channel::<()>();
    let hydra_task = tokio::spawn(hydra::serve(app, listener, async move {
        let _ = hydra_stopped.await;
    }));

    let invoices: Arc<Vec<String>> = Arc::new(
        (0..total)
            .map(|i| {
                sim.create_invoice(
                    "carol",
                    Some(oa_money::Msat::new(1_000 + (i as u64 % 1_000)).unwrap()),
                    "bench",
                    Duration::from_secs(3_600),
                )
                .unwrap()
                .bolt11
            })
            .collect(),
    );
    let token = ring
        .identity("treasury")
        .unwrap()
        .mint("hydra", &["hydra:liquidity"], Duration::from_secs(3_600))
        .unwrap();
    // One client (so one keep-alive connection) per caller.
    let clients: Vec<reqwest::Client> = (0..callers)
        .map(|_| {
            reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(1)
                .build()
                .unwrap()
        })
        .collect();

    let run = |from: usize, to: usize| {
        let next = Arc::new(AtomicUsize::new(from));
        let tasks: Vec<_> = clients
            .iter()
            .cloned()
            .map(|client| {
                let (next, invoices, token) = (next.clone(), invoices.clone(), token.clone());
                let quote_url = format!("{base}/v1/liquidity/quote_pay");
                let pay_url = format!("{base}/v1/liquidity/pay");
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= to {
                            return latencies;
                        }
                        let t = Instant::now();
                        let q = post(
                            &client,
                            &quote_url,
                            &token,
                            &json!({"idempotency_key": format!("q-{i}"), "invoice": invoices[i],
                                    "max_fee_msat": "1000", "payer_ref": format!("agent-{}", i % 100)}),
                        )
                        .await;
                        let p = post(
                            &client,
                            &pay_url,
                            &token,
                            &json!({"idempotency_key": format!("p-{i}"), "quote_id": q["quote"]["quote_id"]}),
                        )
                        .await;
                        latencies.push(t.elapsed());
                        assert_eq!(p["quote"]["state"], "QUOTE_STATE_PAID", "{p}");
                    }
                })
            })
            .collect();
        async move {
            let started = Instant::now();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            (started.elapsed(), all)
        }
    };

    run(0, warmup).await;
    let (elapsed, mut lat) = run(warmup, total).await;
    lat.sort_unstable();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    let rate = payments as u64 * 1_000_000 / micros(elapsed).max(1);
    println!(
        "hydra quote_pay bench: {payments} quote+pay, {callers} callers, sqlite: \
         {rate} payments/s, p50 {} ms, p99 {} ms (quote + pay), wall {} ms",
        ms(pct(50)),
        ms(pct(99)),
        elapsed.as_millis()
    );
    let (sends, twice) = sim.send_stats();
    assert_eq!((sends, twice), (total as u64, 0));
    {
        let mut conn = db.pool().acquire().await.unwrap();
        let violations = oa_ledger::check_invariants(&mut conn).await.unwrap();
        assert!(violations.is_empty(), "{violations:?}");
    }
    let _ = hydra_stop.send(());
    hydra_task.await.unwrap().unwrap();
    let _ = exec_stop.send(());
    exec_task.await.unwrap().unwrap();
}
