//! `oa demo`: one budgeted payment through the running suite (treasury -> hydra ->
//! wallet-executor -> the simulated network), then an export and offline verification of every
//! receipt it produced.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use serde_json::{Value, json};

use crate::{receipts, suite::Suite};

#[derive(clap::Args)]
pub struct DemoArgs {
    #[arg(long, default_value = ".oa")]
    pub data_dir: PathBuf,
    /// Where to write the receipt export (default: <data-dir>/receipts.jsonl).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Amount of the demo invoice.
    #[arg(long, default_value_t = 250_000)]
    pub amount_msat: u64,
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let resp = client
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let suite = Suite::load(&args.data_dir)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let executor = suite.service("wallet-executor")?;
    let treasury = suite.service("treasury")?;

    let (status, invoice) = post(
        &client,
        &format!("{}/v1/sim/invoices", executor.url),
        &executor.token,
        &json!({"node": "merchant", "amount_msat": args.amount_msat.to_string(), "description": "oa demo"}),
    )
    .await?;
    anyhow::ensure!(
        status == 200,
        "creating the demo invoice failed ({status}): {invoice}"
    );
    let bolt11 = invoice["invoice"]
        .as_str()
        .context("no invoice in the answer")?;
    println!("invoice from the simulated merchant: {bolt11}");

    let key = format!(
        "demo-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    let request = json!({"idempotency_key": key, "agent_id": "demo-agent", "invoice": bolt11, "max_fee_msat": "5000", "purpose": "oa demo"});
    let (status, paid) = post(
        &client,
        &format!("{}/v1/treasury/payments", treasury.url),
        &treasury.token,
        &request,
    )
    .await?;
    anyhow::ensure!(
        status == 201,
        "the payment did not succeed ({status}): {paid}"
    );
    let p = &paid["payment"];
    println!(
        "payment {} {}: {} msat + {} msat fee, preimage {}",
        p["payment_id"].as_str().unwrap_or("?"),
        p["state"].as_str().unwrap_or("?"),
        p["amount_msat"].as_str().unwrap_or("?"),
        p["fee_msat"].as_str().unwrap_or("?"),
        p["preimage"].as_str().unwrap_or("?"),
    );

    let out = args
        .out
        .unwrap_or_else(|| args.data_dir.join("receipts.jsonl"));
    let n = receipts::export(&suite, &out).await?;
    println!("exported {n} receipts to {}\n", out.display());
    receipts::verify(&out, false)
}
