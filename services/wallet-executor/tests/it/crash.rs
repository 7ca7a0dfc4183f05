//! The crash test: the real `wallet-executor` binary, 1,000 payments from concurrent callers,
//! SIGKILL at seeded random moments, a restart on the same SQLite file each time. Afterwards:
//! every payment is in exactly one terminal state with exactly one receipt, no payment hash was
//! sent twice (counted in the simulated node's journal, which survives the kills), and the
//! receipt chain verifies.
//!
//! The simulated network lives inside the executor's process, so the test runs it with
//! `--sim-state-file`: the sim appends each invoice and send to that file (one `write` before
//! `pay` returns) and replays it at start-up, so the node "outlives" the process as a real LND
//! would, and the file is an independent count of sends.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use oa_proto::{
    common,
    wallet::{self, PaymentStatus, wallet_executor_client::WalletExecutorClient},
};
use oa_testkit::DevKeyring;
use tonic::transport::Channel;

use crate::harness::Client;

const PAYMENTS: usize = 1_000;
const CALLERS: usize = 16;
const KILLS: usize = 4;
const SEED: u64 = 0x5eed_c4a5;

/// splitmix64: a seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// The running executor process; killed on drop so a failing test leaves nothing behind.
struct Proc {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, ring: &DevKeyring, run: usize) -> Proc {
    let http = oa_testkit::free_addr().unwrap();
    let grpc = oa_testkit::free_addr().unwrap();
    let log = std::fs::File::create(dir.join(format!("run-{run}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wallet-executor"))
        .arg(format!("--listen={http}"))
        .arg(format!("--grpc-listen={grpc}"))
        .arg(format!(
            "--database-url=sqlite://{}",
            dir.join("wallet.db").display()
        ))
        .arg(format!(
            "--receipt-key-file={}",
            ring.receipt_key_file("wallet-executor").display()
        ))
        .arg(format!("--trust-file={}", ring.trust_file().display()))
        .arg(format!(
            "--sim-state-file={}",
            dir.join("sim.jsonl").display()
        ))
        .arg("--sim-seed=9")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc { child, http, grpc }
}

async fn ready(p: &Proc) {
    let url = format!("http://{}/readyz", p.http);
    oa_testkit::wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
        let url = url.clone();
        async move {
            let ok = reqwest::get(&url).await.ok()?.status().is_success();
            ok.then_some(())
        }
    })
    .await
    .expect("the executor becomes ready");
}

async fn client(ring: &DevKeyring, grpc: SocketAddr) -> Option<Client> {
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .ok()?;
    let bearer = oa_auth::grpc::BearerInterceptor::new(
        ring.identity("hydra").ok()?,
        "wallet-executor",
        ["wallet:pay"],
        Duration::from_secs(600),
    )
    .ok()?;
    Some(WalletExecutorClient::with_interceptor(channel, bearer))
}

/// Pays invoice `i` until its payment is terminal, retrying with the same key through kills.
async fn pay_until_terminal(
    ring: &DevKeyring,
    addr: &Mutex<SocketAddr>,
    cached: &mut Option<(SocketAddr, Client)>,
    i: usize,
    invoice: &str,
) -> wallet::PaymentResponse {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "payment {i} never finished");
        let current = *addr.lock().unwrap();
        if cached.as_ref().is_none_or(|(a, _)| *a != current) {
            *cached = client(ring, current).await.map(|c| (current, c));
        }
        if let Some((_, c)) = cached.as_mut() {
            let req = wallet::PayInvoiceRequest {
                idempotency_key: format!("crash-{i}"),
                invoice: invoice.to_owned(),
                amount_msat: 0,
                fee_limit_msat: 5_000,
                timeout_ms: 2_000,
            };
            match c.pay_invoice(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if r.payment.as_ref().unwrap().status() != PaymentStatus::InFlight {
                        return r;
                    }
                }
                Err(s) => {
                    // Only a lost connection is expected; any other refusal is a bug.
                    assert!(
                        matches!(
                            s.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Unknown
                                | tonic::Code::Cancelled
                        ),
                        "payment {i}: {s:?}"
                    );
                    *cached = None;
                }
            }
        }
        // Bounded retry interval: the process may be restarting.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn create_invoices(http: SocketAddr, ring: &DevKeyring) -> Vec<String> {
    let token = ring
        .operator_token("wallet-executor", &["wallet:sim"], Duration::from_secs(600))
        .unwrap();
    let http_client = reqwest::Client::new();
    let mut out = Vec::with_capacity(PAYMENTS);
    for i in 0..PAYMENTS {
        // Every fourth payment routes through `router` (and pays a fee); the rest go direct.
        let node = if i % 4 == 0 { "merchant" } else { "carol" };
        let body = format!(r#"{{"node":"{node}","amount_msat":"{}"}}"#, 1_000 + i);
        let v: serde_json::Value = http_client
            .post(format!("http://{http}/v1/sim/invoices"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.push(v["invoice"].as_str().unwrap().to_owned());
    }
    out
}

async fn all_receipts(http: SocketAddr, ring: &DevKeyring) -> Vec<oa_receipts::Receipt> {
    let token = ring
        .operator_token(
            "wallet-executor",
            &["receipts:read"],
            Duration::from_secs(600),
        )
        .unwrap();
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        let page: common::ListReceiptsResponse = reqwest::Client::new()
            .get(format!(
                "http://{http}/v1/receipts?from_log_index={from}&limit=1000"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page.receipts.is_empty() {
            return out;
        }
        for r in &page.receipts {
            out.push(oa_service::receipts::from_proto(r).unwrap());
        }
        from = page.next_log_index;
    }
}

/// Log lines without terminal colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn sends_in_journal(path: &PathBuf) -> HashMap<String, u32> {
    let mut sends = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["t"] == "send" {
            *sends
                .entry(v["payment_hash"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    sends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pays_every_invoice_exactly_once_across_sigkills_of_the_real_binary() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let ring = DevKeyring::ensure(dir.path()).unwrap();
    let mut rng = Rng(SEED);
    let mut run = 0;
    let mut proc = spawn(dir.path(), &ring, run);
    ready(&proc).await;
    let invoices = Arc::new(create_invoices(proc.http, &ring).await);

    let addr = Arc::new(Mutex::new(proc.grpc));
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<HashMap<usize, wallet::PaymentResponse>>> = Arc::default();
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (ring, addr, next, results, invoices) = (
            ring.clone(),
            addr.clone(),
            next.clone(),
            results.clone(),
            invoices.clone(),
        );
        callers.push(tokio::spawn(async move {
            let mut cached = None;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= PAYMENTS {
                    return;
                }
                let r = pay_until_terminal(&ring, &addr, &mut cached, i, &invoices[i]).await;
                results.lock().unwrap().insert(i, r);
            }
        }));
    }

    // Kill at seeded random moments while payments are under way, restarting each time.
    let mut kills = 0;
    while kills < KILLS && next.load(Ordering::SeqCst) < PAYMENTS {
        tokio::time::sleep(Duration::from_millis(rng.between(30, 250))).await;
        proc.child.kill().unwrap(); // SIGKILL
        proc.child.wait().unwrap();
        kills += 1;
        run += 1;
        proc = spawn(dir.path(), &ring, run);
        ready(&proc).await;
        *addr.lock().unwrap() = proc.grpc;
    }
    for c in callers {
        c.await.unwrap();
    }
    assert!(
        kills >= 3,
        "only {kills} kills happened before the payments ended"
    );

    // Every payment ended in exactly one terminal state, the same one the server reports now.
    let results = results.lock().unwrap().clone();
    assert_eq!(results.len(), PAYMENTS);
    let mut c = client(&ring, proc.grpc).await.unwrap();
    let mut by_hash = HashMap::new();
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for (i, r) in &results {
        let p = r.payment.as_ref().unwrap();
        let now = c
            .get_payment(wallet::GetPaymentRequest {
                payment_hash: p.payment_hash.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&now, r, "payment {i} changed after it was terminal");
        *statuses
            .entry(format!("{:?}/{}", p.status(), p.failure_code))
            .or_default() += 1;
        by_hash.insert(p.payment_hash.clone(), p.status());
    }
    assert_eq!(by_hash.len(), PAYMENTS);

    // No hash was sent twice; every success was sent exactly once; a failure was sent at most
    // once (NOT_SENT: the kill came before the node got it).
    let sends = sends_in_journal(&dir.path().join("sim.jsonl"));
    assert!(
        sends.values().all(|n| *n == 1),
        "a payment hash was sent twice"
    );
    for (hash, status) in &by_hash {
        let sent = sends.get(hash).copied().unwrap_or(0);
        match status {
            PaymentStatus::Succeeded => assert_eq!(sent, 1, "{hash}"),
            _ => assert!(sent <= 1, "{hash}"),
        }
    }

    // Exactly one payment receipt per payment, and the whole chain verifies.
    let receipts = all_receipts(proc.http, &ring).await;
    let mut per_hash: HashMap<String, usize> = HashMap::new();
    for r in &receipts {
        r.verify().unwrap();
        *per_hash
            .entry(r.body["payment_hash"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(receipts.len(), PAYMENTS);
    assert!(per_hash.values().all(|n| *n == 1));
    assert!(oa_receipts::verify_chain(&receipts).is_empty());
    let succeeded = statuses
        .iter()
        .filter(|(k, _)| k.starts_with("Succeeded"))
        .map(|(_, v)| *v)
        .sum::<usize>();
    assert!(succeeded > PAYMENTS / 2, "{statuses:?}");
    // How many payments the restarts found in flight and tracked (from the start-up logs).
    let mut recovered = 0u64;
    for r in 0..=run {
        let log =
            strip_ansi(&std::fs::read_to_string(dir.path().join(format!("run-{r}.log"))).unwrap());
        for line in log
            .lines()
            .filter(|l| l.contains("tracking payments that were in flight"))
        {
            if let Some(n) = line
                .split("recovered=")
                .nth(1)
                .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                recovered += n;
            }
        }
    }
    // The kills did catch payments between intent and result (else the test proved little).
    assert!(recovered > 0, "no kill caught a payment in flight");
    eprintln!(
        "crash test: {kills} kills, {recovered} payments re-tracked after restarts, outcomes \
         {statuses:?}, {} ms",
        started.elapsed().as_millis()
    );
}
