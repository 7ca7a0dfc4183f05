//! `oa receipts export|verify|trace` and `oa proof verify`: the offline auditor.
//!
//! - `export`: every service's public keys, signed checkpoints and receipts as JSON Lines;
//!   `--resume` appends only what an existing export lacks (by log index and tree size).
//! - `verify`: checks an export offline: hashes, signatures, chains, links, checkpoints (Merkle
//!   roots and consistency between them) and the cross-service rules; exits non-zero naming
//!   each failure.
//! - `trace`: what happened to one payment, by walking the links.
//! - `proof verify`: one inclusion or consistency proof in the layout of the shared Merkle
//!   vectors (`leafIdx`, `treeSize`, `root`, `leafHash`, `proof` or `size1`, `size2`, `root1`,
//!   `root2`, `proof`; base64 hashes), so anyone's proofs can be checked.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use base64::Engine as _;
use oa_proto::common;
use oa_receipts::{CheckpointRecord, ExportRecord, Issuer, Receipt, links, merkle};
use oa_service::audit::CheckpointsResponse;
use serde::Deserialize;

use crate::suite::Suite;

/// Page size when reading a service's receipt log or checkpoints.
const PAGE: u32 = 1_000;
/// Largest proof file `oa proof verify` reads; a proof of a 2^64 tree is ~64 hashes.
const MAX_PROOF_FILE_BYTES: u64 = 64 * 1024;

#[derive(clap::Subcommand)]
pub enum ReceiptsCommand {
    /// Export every service's keys, checkpoints and receipts from a running suite.
    Export {
        #[arg(long, default_value = ".oa")]
        data_dir: PathBuf,
        /// Output file (JSON Lines).
        #[arg(long)]
        out: PathBuf,
        /// Append only what `out` lacks (receipts after its last log index per service, newer
        /// checkpoints, missing keys) instead of rewriting it.
        #[arg(long)]
        resume: bool,
    },
    /// Verify an export offline; exits non-zero naming each failure.
    Verify {
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What happened to a payment: every receipt linked to the one naming this payment hash,
    /// payment id, quote id, receipt id or receipt hash, top-down.
    Trace {
        /// A payment hash, payment id, quote id, receipt id or receipt hash.
        needle: String,
        /// The export to read.
        #[arg(long, default_value = ".oa/receipts.jsonl")]
        file: PathBuf,
    },
}

#[derive(clap::Subcommand)]
pub enum ProofCommand {
    /// Verify one inclusion or consistency proof given as JSON (the Merkle vectors' layout).
    Verify { file: PathBuf },
}

pub async fn run(cmd: ReceiptsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReceiptsCommand::Export {
            data_dir,
            out,
            resume,
        } => {
            let suite = Suite::load(&data_dir)?;
            let n = if resume {
                export_resume(&suite, &out).await?
            } else {
                export(&suite, &out).await?
            };
            println!("exported {n} receipts to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        ReceiptsCommand::Verify { file, json } => verify(&file, json),
        ReceiptsCommand::Trace { needle, file } => trace(&file, &needle),
    }
}

/// What an existing export already holds, so a resumed export appends only the rest.
#[derive(Default)]
struct Held {
    keys: BTreeSet<(String, String)>,
    /// Next log index per service.
    next_index: BTreeMap<String, u64>,
    /// Largest checkpoint tree size per service.
    checkpointed: BTreeMap<String, u64>,
}

fn scan(path: &Path) -> anyhow::Result<Held> {
    let mut held = Held::default();
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    for line in BufReader::new(f).lines() {
        let line = line?;
        match serde_json::from_str::<ExportRecord>(&line) {
            Ok(ExportRecord::Key {
                service, key_id, ..
            }) => {
                held.keys.insert((service, key_id));
            }
            Ok(ExportRecord::Receipt { receipt }) => {
                let next = held
                    .next_index
                    .entry(receipt.issuer.service.clone())
                    .or_default();
                *next = (*next).max(receipt.log_index + 1);
            }
            Ok(ExportRecord::Checkpoint { service, note, .. }) => {
                let size = note
                    .lines()
                    .nth(1)
                    .and_then(oa_receipts::u64_string::parse)
                    .unwrap_or(0);
                let c = held.checkpointed.entry(service).or_default();
                *c = (*c).max(size);
            }
            Err(e) => anyhow::bail!("{} is not an export to resume: {e}", path.display()),
        }
    }
    Ok(held)
}

/// Writes every service's keys, checkpoints and receipts to `out`; returns the number of
/// receipts.
pub async fn export(suite: &Suite, out: &Path) -> anyhow::Result<usize> {
    let file = std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
    write_new(suite, &Held::default(), file).await
}

/// Appends to `out` what it lacks (or writes it afresh if it does not exist).
pub async fn export_resume(suite: &Suite, out: &Path) -> anyhow::Result<usize> {
    if !out.exists() {
        return export(suite, out).await;
    }
    let held = scan(out)?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(out)
        .with_context(|| format!("open {}", out.display()))?;
    write_new(suite, &held, file).await
}

async fn write_new(suite: &Suite, held: &Held, file: std::fs::File) -> anyhow::Result<usize> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut keys = Vec::new();
    let mut checkpoints: Vec<CheckpointRecord> = Vec::new();
    let mut receipts: Vec<Receipt> = Vec::new();
    for (name, svc) in &suite.services {
        let k: common::ReceiptKeysResponse = client
            .get(format!("{}/v1/receipts/keys", svc.url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        keys.extend(
            k.keys
                .into_iter()
                .filter(|k| !held.keys.contains(&(k.service.clone(), k.key_id.clone())))
                .map(|k| Issuer {
                    service: k.service,
                    key_id: k.key_id,
                }),
        );
        // Checkpoints first: every checkpoint read then covers only receipts read after it,
        // so the export never holds a checkpoint beyond its receipts.
        let mut after = held.checkpointed.get(name).copied().unwrap_or(0);
        loop {
            let page: CheckpointsResponse = client
                .get(format!(
                    "{}/v1/receipts/checkpoints?after_size={after}&limit={PAGE}",
                    svc.url
                ))
                .send()
                .await?
                .error_for_status()
                .with_context(|| format!("reading {name}'s checkpoints"))?
                .json()
                .await?;
            if page.checkpoints.is_empty() {
                break;
            }
            checkpoints.extend(page.checkpoints.into_iter().map(|c| CheckpointRecord {
                service: c.service,
                key_id: c.key_id,
                note: c.note,
            }));
            after = page.next_after_size;
        }
        let mut from = held.next_index.get(name).copied().unwrap_or(0);
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
    let mut w = std::io::BufWriter::new(file);
    oa_receipts::write_export_with_checkpoints(&mut w, &keys, &checkpoints, &receipts)?;
    w.flush()?;
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

fn trace(file: &Path, needle: &str) -> anyhow::Result<ExitCode> {
    let f = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    let mut receipts = Vec::new();
    for line in BufReader::new(f).lines() {
        if let Ok(ExportRecord::Receipt { receipt }) = serde_json::from_str(&line?) {
            receipts.push(*receipt);
        }
    }
    let steps = links::trace(&receipts, needle);
    if steps.is_empty() {
        println!("no receipt in {} names {needle:?}", file.display());
        return Ok(ExitCode::FAILURE);
    }
    for s in &steps {
        let r = s.receipt;
        let state = ["status", "state"]
            .iter()
            .find_map(|f| r.body.get(*f).and_then(|v| v.as_str()))
            .unwrap_or("-");
        let field = |f: &str| r.body.get(f).and_then(|v| v.as_str()).unwrap_or("-");
        println!(
            "{}{} #{} {} {state} amount_msat={} fee_msat={} payment_hash={}\n{}  receipt {} hash {} at {} ms",
            "  ".repeat(s.depth),
            r.issuer.service,
            r.log_index,
            r.schema,
            field("amount_msat"),
            field("fee_msat"),
            field("payment_hash"),
            "  ".repeat(s.depth),
            r.receipt_id,
            r.hash,
            r.issued_at_ms,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A proof file: either layout of the shared Merkle vectors. `desc` and `wantErr` (present in
/// vector files) are accepted and ignored: the command says whether the proof verifies.
#[derive(Deserialize)]
#[serde(untagged)]
enum ProofFile {
    #[serde(rename_all = "camelCase")]
    Inclusion {
        leaf_idx: u64,
        tree_size: u64,
        root: String,
        leaf_hash: String,
        proof: Option<Vec<String>>,
    },
    Consistency {
        size1: u64,
        size2: u64,
        root1: String,
        root2: String,
        proof: Option<Vec<String>>,
    },
}

fn digest(s: &str) -> anyhow::Result<merkle::Digest> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .with_context(|| format!("{s:?} is not base64"))?;
    merkle::Digest::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("{s:?} is {} bytes, not a 32-byte hash", bytes.len()))
}

fn digests(v: Option<&Vec<String>>) -> anyhow::Result<Vec<merkle::Digest>> {
    v.map_or(Ok(Vec::new()), |v| v.iter().map(|s| digest(s)).collect())
}

pub fn proof(cmd: ProofCommand) -> anyhow::Result<ExitCode> {
    let ProofCommand::Verify { file } = cmd;
    let f = std::fs::File::open(&file).with_context(|| format!("open {}", file.display()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_PROOF_FILE_BYTES), &mut text)?;
    let parsed: ProofFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is neither an inclusion proof (leafIdx, treeSize, root, leafHash, proof) nor a consistency proof (size1, size2, root1, root2, proof)",
            file.display()
        )
    })?;
    let result = match &parsed {
        ProofFile::Inclusion {
            leaf_idx,
            tree_size,
            root,
            leaf_hash,
            proof,
        } => (|| {
            merkle::verify_inclusion(
                *leaf_idx,
                *tree_size,
                &digest(leaf_hash)?,
                &digests(proof.as_ref())?,
                &digest(root)?,
            )?;
            anyhow::Ok(format!(
                "inclusion proof OK: leaf {leaf_idx} is in the tree of size {tree_size} with root {root}"
            ))
        })(),
        ProofFile::Consistency {
            size1,
            size2,
            root1,
            root2,
            proof,
        } => (|| {
            merkle::verify_consistency(
                *size1,
                *size2,
                &digests(proof.as_ref())?,
                &digest(root1)?,
                &digest(root2)?,
            )?;
            anyhow::Ok(format!(
                "consistency proof OK: the tree of size {size2} (root {root2}) extends the tree of size {size1} (root {root1})"
            ))
        })(),
    };
    match result {
        Ok(msg) => {
            println!("{msg}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("proof does not verify: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
