//! `oa load`: drives treasury payments through a running suite (`oa up`) with concurrent callers
//! and reports throughput and latency percentiles.
//!
//! The invoices are created on the simulated network first (the payee's work, not timed); then
//! `--callers` tasks, each with its own keep-alive connection and agent, pay them through
//! `POST /v1/treasury/payments` as fast as they can. Every payment is the whole path: treasury's
//! budget reservation and policy, Hydra's quote and pay from the pool, the wallet-executor and
//! the sim, a receipt at each hop. Latency is per payment request as the caller sees it.

use std::{
    collections::BTreeMap,
    future::Future,
    path::PathBuf,
    pin::Pin,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::{Value, json};

use crate::suite::Suite;

#[derive(clap::Args)]
pub struct LoadArgs {
    #[arg(long, default_value = ".oa")]
    pub data_dir: PathBuf,
    /// Concurrent callers, each with its own connection and agent id.
    #[arg(long, default_value_t = 32)]
    pub callers: usize,
    /// Payments to make (after the warm-up).
    #[arg(long, default_value_t = 2_000)]
    pub payments: usize,
    /// Payments made first and not counted.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Amount of each invoice.
    #[arg(long, default_value_t = 1_000)]
    pub amount_msat: u64,
    /// Most routing fee each payment may pay (the simulated network's routes charge about
    /// 1 sat, so the default leaves room).
    #[arg(long, default_value_t = 5_000)]
    pub max_fee_msat: u64,
    /// Compare with LNbits: the JSON line `../shared/peers/lnbits-up.sh` prints, in a file. Both
    /// then run the same workload (create an invoice, pay it), and the ratio is printed.
    #[arg(long)]
    pub lnbits: Option<PathBuf>,
}

/// Most callers and payments one run accepts.
const MAX_CALLERS: usize = 1_024;
const MAX_PAYMENTS: usize = 1_000_000;

/// One payment's result as a caller saw it.
struct Sample {
    latency: Duration,
    /// `None` on success, else the error code (or the HTTP status).
    error: Option<String>,
}

/// One operation of a workload: `(index, caller, the caller's client)` to `None` on success,
/// else an error code.
type Op = Arc<
    dyn Fn(usize, usize, reqwest::Client) -> Pin<Box<dyn Future<Output = Option<String>> + Send>>
        + Send
        + Sync,
>;

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (1..=MAX_CALLERS).contains(&args.callers),
        "--callers must be 1 to {MAX_CALLERS}"
    );
    anyhow::ensure!(
        (1..=MAX_PAYMENTS).contains(&args.payments) && args.warmup <= MAX_PAYMENTS,
        "--payments must be 1 to {MAX_PAYMENTS}, --warmup at most {MAX_PAYMENTS}"
    );
    let lnbits = args.lnbits.as_deref().map(Lnbits::load).transpose()?;
    anyhow::ensure!(
        lnbits.is_none() || (args.amount_msat.is_multiple_of(1_000) && args.amount_msat > 0),
        "--amount-msat must be whole satoshis with --lnbits (LNbits invoices are in sat)"
    );
    let suite = Suite::load(&args.data_dir)?;
    let executor = suite.service("wallet-executor")?.clone();
    let treasury = suite.service("treasury")?.clone();
    let total = args.warmup + args.payments;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    // Callers are spread over treasury's replicas (`oa up --replicas`), caller i on replica
    // i mod n.
    let urls: Arc<Vec<String>> = Arc::new(if treasury.replicas.is_empty() {
        vec![treasury.url.clone()]
    } else {
        treasury.replicas.iter().map(|r| r.url.clone()).collect()
    });
    let token = Arc::new(treasury.token.clone());
    let max_fee = args.max_fee_msat.to_string();
    let pay = move |invoice: String, i: usize, caller: usize, client: reqwest::Client| {
        let (urls, token, max_fee) = (urls.clone(), token.clone(), max_fee.clone());
        async move {
            let body = json!({
                "idempotency_key": format!("load-{run_id}-{i}"),
                "agent_id": format!("load-agent-{caller}"),
                "invoice": invoice,
                "max_fee_msat": max_fee,
                "purpose": "oa load",
            });
            let url = format!("{}/v1/treasury/payments", urls[caller % urls.len()]);
            let resp = client
                .post(url)
                .bearer_auth(token.as_str())
                .json(&body)
                .send()
                .await;
            paid(resp).await
        }
    };

    let Some(lnbits) = lnbits else {
        // The suite alone: invoices are made first (the payee's work, not timed), then paid.
        eprintln!("creating {total} invoices on the simulated network...");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let invoices = Arc::new(
            create_invoices(&client, &executor, total, args.amount_msat, args.callers).await?,
        );
        let op: Op = Arc::new(move |i, caller, client| {
            Box::pin(pay(invoices[i].clone(), i, caller, client))
        });
        let report = measure(&args, "payments", op).await?;
        println!("{}", report.line(args.callers));
        return Ok(report.exit_code());
    };

    // Against LNbits: the same create-invoice-and-pay workload on both, in this one run.
    let amount = args.amount_msat;
    let executor = Arc::new(executor);
    let suite_op: Op = Arc::new(move |i, caller, client| {
        let (executor, pay) = (executor.clone(), pay.clone());
        Box::pin(async move {
            let body = json!({"node": "merchant", "amount_msat": amount.to_string(), "description": format!("oa load {i}")});
            let resp = client
                .post(format!("{}/v1/sim/invoices", executor.url))
                .bearer_auth(&executor.token)
                .json(&body)
                .send()
                .await;
            match invoice_of(resp, "invoice").await {
                Ok(invoice) => pay(invoice, i, caller, client).await,
                Err(code) => Some(code),
            }
        })
    });
    eprintln!("the suite: create an invoice and pay it through treasury...");
    let ours = measure(&args, "invoice+pay", suite_op).await?;
    eprintln!("LNbits at {}: create an invoice and pay it...", lnbits.url);
    let sats = args.amount_msat / 1_000;
    let lnbits = Arc::new(lnbits);
    let peer_op: Op = Arc::new(move |i, _caller, client| {
        let lnbits = lnbits.clone();
        Box::pin(async move {
            let url = format!("{}/api/v1/payments", lnbits.url);
            let resp = client
                .post(&url)
                .header("X-Api-Key", &lnbits.payee_invoice_key)
                .json(&json!({"out": false, "amount": sats, "memo": format!("oa load {i}")}))
                .send()
                .await;
            let invoice = match invoice_of(resp, "bolt11").await {
                Ok(invoice) => invoice,
                Err(code) => return Some(code),
            };
            let resp = client
                .post(&url)
                .header("X-Api-Key", &lnbits.payer_admin_key)
                .json(&json!({"out": true, "bolt11": invoice}))
                .send()
                .await;
            lnbits_paid(resp).await
        })
    });
    let theirs = measure(&args, "invoice+pay", peer_op).await?;
    println!("suite:  {}", ours.line(args.callers));
    println!("LNbits: {}", theirs.line(args.callers));
    println!("{}", ratio_line(&ours, &theirs));
    Ok(if ours.errors.is_empty() && theirs.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// "ratio: the suite made N.NN times LNbits' rate" (integer arithmetic).
fn ratio_line(ours: &Report, theirs: &Report) -> String {
    if theirs.per_second == 0 {
        return "ratio: LNbits completed nothing".to_owned();
    }
    let hundredths = ours.per_second.saturating_mul(100) / theirs.per_second;
    format!(
        "ratio: the suite made {}.{:02} times LNbits' rate",
        hundredths / 100,
        hundredths % 100
    )
}

/// The warm-up, then the measured operations, with `--callers` callers.
async fn measure(args: &LoadArgs, what: &'static str, op: Op) -> anyhow::Result<Report> {
    let clients: Vec<reqwest::Client> = (0..args.callers)
        .map(|_| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .pool_max_idle_per_host(1)
                .build()
        })
        .collect::<Result<_, _>>()?;
    let total = args.warmup + args.payments;
    if args.warmup > 0 {
        eprintln!("warm-up: {} {what}...", args.warmup);
        drive(&clients, 0, args.warmup, &op).await?;
    }
    eprintln!("{} {what} with {} callers...", args.payments, args.callers);
    let (elapsed, samples) = drive(&clients, args.warmup, total, &op).await?;
    let report = Report::of(&samples, elapsed);
    for (code, n) in &report.errors {
        eprintln!("  {n} x {code}");
    }
    Ok(report)
}

/// Operations `from..to`, taken in turn by one task per client; their samples and the time.
async fn drive(
    clients: &[reqwest::Client],
    from: usize,
    to: usize,
    op: &Op,
) -> anyhow::Result<(Duration, Vec<Sample>)> {
    let next = Arc::new(AtomicUsize::new(from));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .cloned()
        .enumerate()
        .map(|(caller, client)| {
            let (next, op) = (next.clone(), op.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        return samples;
                    }
                    let started = Instant::now();
                    let error = op(i, caller, client.clone()).await;
                    samples.push(Sample {
                        latency: started.elapsed(),
                        error,
                    });
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    Ok((started.elapsed(), all))
}

/// `None` when the answer has the expected status, else its error code (or the status).
async fn outcome(resp: reqwest::Result<reqwest::Response>, expected: u16) -> Option<String> {
    match resp {
        Ok(r) if r.status().as_u16() == expected => None,
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            Some(
                v["error"]["code"]
                    .as_str()
                    .map_or_else(|| format!("HTTP {status}"), str::to_owned),
            )
        }
        Err(e) => Some(format!("transport: {e}")),
    }
}

/// `None` when treasury answers that the payment succeeded; else the error code, the failed
/// payment's failure code, or the state it is in (an attempt that ended `FAILED` is answered
/// 201 too, so the status alone does not say the payment was made).
async fn paid(resp: reqwest::Result<reqwest::Response>) -> Option<String> {
    let r = match resp {
        Ok(r) if r.status().as_u16() == 201 => r,
        other => return outcome(other, 201).await,
    };
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let p = &v["payment"];
    if p["state"] == "PAYMENT_STATE_SUCCEEDED" {
        return None;
    }
    Some(
        p["failure_code"]
            .as_str()
            .filter(|c| !c.is_empty())
            .or(p["state"].as_str())
            .unwrap_or("201 without a payment")
            .to_owned(),
    )
}

/// `None` when LNbits answers that the payment succeeded (201 with `"status": "success"`), else
/// the error code or the status it gave.
async fn lnbits_paid(resp: reqwest::Result<reqwest::Response>) -> Option<String> {
    let r = match resp {
        Ok(r) if r.status().as_u16() == 201 => r,
        other => return outcome(other, 201).await,
    };
    let v: Value = r.json().await.unwrap_or(Value::Null);
    match v["status"].as_str() {
        Some("success") => None,
        other => Some(format!("LNbits status {}", other.unwrap_or("missing"))),
    }
}

/// The invoice in a successful answer's `field`, else an error code.
async fn invoice_of(
    resp: reqwest::Result<reqwest::Response>,
    field: &str,
) -> Result<String, String> {
    let r = resp.map_err(|e| format!("transport: {e}"))?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    match v[field].as_str() {
        Some(invoice) if status.is_success() => Ok(invoice.to_owned()),
        _ => Err(format!("creating an invoice: HTTP {}", status.as_u16())),
    }
}

/// The peer as `../shared/peers/lnbits-up.sh` prints it.
#[derive(serde::Deserialize)]
struct Lnbits {
    url: String,
    payer_admin_key: String,
    payee_invoice_key: String,
}

impl Lnbits {
    fn load(path: &std::path::Path) -> anyhow::Result<Lnbits> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--lnbits {}", path.display()))?;
        serde_json::from_str(text.trim()).with_context(|| {
            format!(
                "--lnbits {}: expected lnbits-up.sh's JSON line (url, payer_admin_key, payee_invoice_key)",
                path.display()
            )
        })
    }
}

async fn create_invoices(
    client: &reqwest::Client,
    executor: &crate::suite::ServiceEntry,
    n: usize,
    amount_msat: u64,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let url = format!("{}/v1/sim/invoices", executor.url);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let end = (start + concurrency).min(n);
        let batch = (start..end).map(|i| {
            let body = json!({"node": "merchant", "amount_msat": amount_msat.to_string(), "description": format!("oa load {i}")});
            let req = client.post(&url).bearer_auth(&executor.token).json(&body).send();
            async move {
                let resp = req.await.context("creating an invoice")?;
                let status = resp.status().as_u16();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                anyhow::ensure!(status == 200, "creating an invoice failed ({status}): {v}");
                v["invoice"].as_str().map(str::to_owned).context("no invoice in the answer")
            }
        });
        let handles: Vec<_> = batch.map(tokio::spawn).collect();
        for h in handles {
            out.push(h.await??);
        }
        start = end;
    }
    Ok(out)
}

/// Throughput and latency of a run (integer arithmetic only).
pub struct Report {
    pub payments: usize,
    pub succeeded: usize,
    pub per_second: u64,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub errors: BTreeMap<String, usize>,
}

impl Report {
    fn of(samples: &[Sample], elapsed: Duration) -> Report {
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        latencies.sort_unstable();
        let pct = |p: usize| {
            latencies
                .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        let mut errors = BTreeMap::new();
        for e in samples.iter().filter_map(|s| s.error.clone()) {
            *errors.entry(e).or_insert(0) += 1;
        }
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let succeeded = samples.iter().filter(|s| s.error.is_none()).count();
        Report {
            payments: samples.len(),
            succeeded,
            per_second: (succeeded as u64).saturating_mul(1_000_000) / micros,
            p50: pct(50),
            p95: pct(95),
            p99: pct(99),
            errors,
        }
    }

    fn exit_code(&self) -> ExitCode {
        if self.errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    fn line(&self, callers: usize) -> String {
        let ms = |d: Duration| {
            let us = d.as_micros();
            format!("{}.{:02}", us / 1_000, us % 1_000 / 10)
        };
        format!(
            "oa load: {} payments, {} succeeded, {} callers: {} payments/s, p50 {} ms, p95 {} ms, p99 {} ms",
            self.payments,
            self.succeeded,
            callers,
            self.per_second,
            ms(self.p50),
            ms(self.p95),
            ms(self.p99)
        )
    }
}
