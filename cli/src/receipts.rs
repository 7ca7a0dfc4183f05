//! `oa receipts export|verify`: export every service's receipts with their public keys as JSON
//! Lines, and verify such an export offline (hashes, signatures, chains, links, preimages).

use std::{
    io::BufReader,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use oa_proto::common;
use oa_receipts::{Issuer, Receipt};

use crate::suite::Suite;

/// Page size when reading a service's receipt log.
const PAGE: u32 = 1_000;

#[derive(clap::Subcommand)]
pub enum ReceiptsCommand {
    /// Export every service's receipts and public keys from a running suite.
    Export {
        #[arg(long, default_value = ".oa")]
        data_dir: PathBuf,
        /// Output file (JSON Lines).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an export offline; exits non-zero naming each failure.
    Verify {
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: ReceiptsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReceiptsCommand::Export { data_dir, out } => {
            let suite = Suite::load(&data_dir)?;
            let n = export(&suite, &out).await?;
            println!("exported {n} receipts to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        ReceiptsCommand::Verify { file, json } => verify(&file, json),
    }
}

/// Writes every service's keys and receipts to `out`; returns the number of receipts.
pub async fn export(suite: &Suite, out: &Path) -> anyhow::Result<usize> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut keys = Vec::new();
    let mut receipts: Vec<Receipt> = Vec::new();
    for (name, svc) in &suite.services {
        let k: common::ReceiptKeysResponse = client
            .get(format!("{}/v1/receipts/keys", svc.url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        keys.extend(k.keys.into_iter().map(|k| Issuer {
            service: k.service,
            key_id: k.key_id,
        }));
        let mut from = 0u64;
        loop {
            let page: common::ListReceiptsResponse = client
                .get(format!(
                    "{}/v1/receipts?from_log_index={from}&limit={PAGE}",
                    svc.url
                ))
                .bearer_auth(&svc.token)
                .send()
                .await?
                .error_for_status()
                .with_context(|| format!("reading {name}'s receipts"))?
                .json()
                .await?;
            if page.receipts.is_empty() {
                break;
            }
            for r in &page.receipts {
                receipts.push(
                    oa_service::receipts::from_proto(r)
                        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?,
                );
            }
            from = page.next_log_index;
        }
    }
    let file = std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    oa_receipts::write_export(&mut w, &keys, &receipts)?;
    std::io::Write::flush(&mut w)?;
    Ok(receipts.len())
}

pub fn verify(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let f = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    let report = oa_receipts::verify_export(BufReader::new(f));
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
