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
    path::PathBuf,
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

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (1..=MAX_CALLERS).contains(&args.callers),
        "--callers must be 1 to {MAX_CALLERS}"
    );
    anyhow::ensure!(
        (1..=MAX_PAYMENTS).contains(&args.payments) && args.warmup <= MAX_PAYMENTS,
        "--payments must be 1 to {MAX_PAYMENTS}, --warmup at most {MAX_PAYMENTS}"
    );
    let suite = Suite::load(&args.data_dir)?;
    let executor = suite.service("wallet-executor")?.clone();
    let treasury = suite.service("treasury")?.clone();
    let total = args.warmup + args.payments;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();

    eprintln!("creating {total} invoices on the simulated network...");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let invoices =
        Arc::new(create_invoices(&client, &executor, total, args.amount_msat, args.callers).await?);

    let clients: Vec<reqwest::Client> = (0..args.callers)
        .map(|_| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .pool_max_idle_per_host(1)
                .build()
        })
        .collect::<Result<_, _>>()?;
    // Callers are spread over treasury's replicas (`oa up --replicas`), caller i on replica
    // i mod n.
    let urls: Vec<String> = if treasury.replicas.is_empty() {
        vec![treasury.url.clone()]
    } else {
        treasury.replicas.iter().map(|r| r.url.clone()).collect()
    };
    let token = Arc::new(treasury.token.clone());
    let pay_range = |from: usize, to: usize| {
        let next = Arc::new(AtomicUsize::new(from));
        let tasks: Vec<_> = clients
            .iter()
            .cloned()
            .enumerate()
            .map(|(caller, client)| {
                let url = format!("{}/v1/treasury/payments", urls[caller % urls.len()]);
                let (next, invoices, token) = (next.clone(), invoices.clone(), token.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(invoice) = invoices.get(i).filter(|_| i < to) else {
                            return samples;
                        };
                        let body = json!({
                            "idempotency_key": format!("load-{run_id}-{i}"),
                            "agent_id": format!("load-agent-{caller}"),
                            "invoice": invoice,
                            "max_fee_msat": "1000",
                            "purpose": "oa load",
                        });
                        let started = Instant::now();
                        let error = match client
                            .post(url.as_str())
                            .bearer_auth(token.as_str())
                            .json(&body)
                            .send()
                            .await
                        {
                            Ok(r) if r.status().as_u16() == 201 => None,
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
                        };
                        samples.push(Sample {
                            latency: started.elapsed(),
                            error,
                        });
                    }
                })
            })
            .collect();
        async move {
            let started = Instant::now();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await?);
            }
            anyhow::Ok((started.elapsed(), all))
        }
    };

    if args.warmup > 0 {
        eprintln!("warm-up: {} payments...", args.warmup);
        pay_range(0, args.warmup).await?;
    }
    eprintln!(
        "{} payments with {} callers...",
        args.payments, args.callers
    );
    let (elapsed, samples) = pay_range(args.warmup, total).await?;
    let report = Report::of(&samples, elapsed);
    println!("{}", report.line(args.callers));
    for (code, n) in &report.errors {
        println!("  {n} x {code}");
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
