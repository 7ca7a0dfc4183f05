//! Payments per second through the gRPC custody channel on the simulated network.
//!
//! Starts the executor in-process (SQLite file in a temp dir, real gRPC over loopback, JWT auth
//! on every call), pre-creates the invoices on the sim (invoice signing is the payee's work, not
//! the executor's), then `OA_BENCH_CALLERS` callers (default 32), each on its own connection,
//! pay `OA_BENCH_PAYMENTS` invoices (default 20,000) as fast as they can. Prints throughput and
//! p50/p99 latency of `PayInvoice`.
//!
//! ```sh
//! cargo bench -p wallet-executor --bench pay
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
use oa_proto::wallet::{self, PaymentStatus, wallet_executor_client::WalletExecutorClient};
use oa_service::{Clock, SystemClock};
use oa_testkit::DevKeyring;
use tonic::transport::Channel;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let payments = env_usize("OA_BENCH_PAYMENTS", 20_000);
    let callers = env_usize("OA_BENCH_CALLERS", 32);
    let warmup = 1_000.min(payments);
    let dir = tempfile::tempdir().unwrap();
    let ring = DevKeyring::ensure(dir.path()).unwrap();
    let db = format!("sqlite://{}", dir.path().join("wallet.db").display());
    let config = wallet_executor::Config::parse_from([
        "wallet-executor".to_owned(),
        "--listen=127.0.0.1:0".into(),
        "--grpc-listen=127.0.0.1:0".into(),
        format!("--database-url={db}"),
        format!(
            "--receipt-key-file={}",
            ring.receipt_key_file("wallet-executor").display()
        ),
        format!("--trust-file={}", ring.trust_file().display()),
        "--window-max-msat=1000000000000".into(),
    ]);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let app = wallet_executor::build_with(&config, clock, None)
        .await
        .unwrap();
    let sim = app.sim.clone().unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(wallet_executor::serve(app, http, grpc, async move {
        let _ = stop_rx.await;
    }));

    let total = warmup + payments;
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

    let mut clients = Vec::new();
    for _ in 0..callers {
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let bearer = oa_auth::grpc::BearerInterceptor::new(
            ring.identity("hydra").unwrap(),
            "wallet-executor",
            ["wallet:pay"],
            Duration::from_secs(3_600),
        )
        .unwrap();
        clients.push(WalletExecutorClient::with_interceptor(channel, bearer));
    }

    let run = |from: usize, to: usize| {
        let next = Arc::new(AtomicUsize::new(from));
        let tasks: Vec<_> = clients
            .iter()
            .cloned()
            .map(|mut c| {
                let (next, invoices) = (next.clone(), invoices.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= to {
                            return latencies;
                        }
                        let t = Instant::now();
                        let r = c
                            .pay_invoice(wallet::PayInvoiceRequest {
                                idempotency_key: format!("bench-{i}"),
                                invoice: invoices[i].clone(),
                                amount_msat: 0,
                                fee_limit_msat: 0,
                                timeout_ms: 5_000,
                            })
                            .await
                            .expect("pay")
                            .into_inner();
                        latencies.push(t.elapsed());
                        assert_eq!(
                            r.payment.expect("payment").status(),
                            PaymentStatus::Succeeded
                        );
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
    // Integer arithmetic only (the workspace lints forbid floats): rates per second from
    // microseconds, latencies printed as milliseconds with two decimals.
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let ms = |d: Duration| format!("{}.{:02}", micros(d) / 1_000, micros(d) % 1_000 / 10);
    let rate = payments as u64 * 1_000_000 / micros(elapsed).max(1);
    println!(
        "wallet-executor pay bench: {payments} payments, {callers} callers, sqlite: \
         {rate} payments/s, p50 {} ms, p99 {} ms, wall {} ms",
        ms(pct(50)),
        ms(pct(99)),
        elapsed.as_millis()
    );
    let (sends, twice) = sim.send_stats();
    assert_eq!((sends, twice), (total as u64, 0));
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
