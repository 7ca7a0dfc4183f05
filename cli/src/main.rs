//! `oa`: the suite's command line.
//!
//! - `oa up`: runs the whole suite on loopback (each service its own process, SQLite under a data
//!   folder, the simulated Lightning network, development keys made on first start).
//! - `oa demo`: pays an invoice through the running suite and exports and verifies its receipts.
//! - `oa receipts export|verify|trace`, `oa proof verify`: the offline auditor.
//! - `oa ops validate|plan|apply|report|channels|aperture`: lightning-ops for operators.
//! - `oa serve <service>`: runs one service in this process (what `oa up` spawns).
//! - `oa token`: mints a development token.

mod demo;
mod load;
mod receipts;
mod suite;
mod up;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: oa_service::runtime::Allocator = oa_service::runtime::Allocator;

#[derive(Parser)]
#[command(
    name = "oa",
    version,
    about = "Lightning payments and underwriting suite for software agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole suite on loopback until interrupted.
    Up(up::UpArgs),
    /// Pay an invoice through a running suite, then export and verify the receipts.
    Demo(demo::DemoArgs),
    /// Drive treasury payments through a running suite with concurrent callers; report throughput
    /// and latency percentiles.
    Load(load::LoadArgs),
    /// Export, verify (audit) or trace receipts.
    #[command(subcommand)]
    Receipts(receipts::ReceiptsCommand),
    /// Verify a Merkle inclusion or consistency proof.
    #[command(subcommand)]
    Proof(receipts::ProofCommand),
    /// Operators' policy: validate it, plan and apply it, report channel P&L and health, compile
    /// the L402 gateway configuration.
    #[command(subcommand)]
    Ops(OpsCommand),
    /// Ledger statements of the services that keep their money in the ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Run one service in this process.
    #[command(subcommand)]
    Serve(Box<Serve>),
    /// Mint a development token signed by the operator key of a data folder.
    Token {
        #[arg(long, default_value = ".oa")]
        data_dir: PathBuf,
        /// The service the token is for (its audience).
        #[arg(long)]
        audience: String,
        /// Scopes, e.g. `--scope treasury:pay`.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
}

#[derive(Subcommand)]
enum OpsCommand {
    /// Check a policy file; lists every problem with its code and exits non-zero if any.
    Validate { file: PathBuf },
    /// Ask a running lightning-ops what it would change to bring the node to its policy.
    Plan {
        #[arg(long, default_value = ".oa")]
        data_dir: PathBuf,
        /// Print the plan as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running lightning-ops to execute its plan (policy changes, rate-limited per channel;
    /// rebalances within the daily budget; channel opens and closes; what is deferred, pending or
    /// skipped is listed with its reason). Needs the ops:apply scope.
    Apply {
        #[arg(long, default_value = ".oa")]
        data_dir: PathBuf,
        /// Only say what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Retrying with the same key replays the first answer; default: a fresh key.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Print the results as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Forwarding P&L per channel from a running lightning-ops, as a table or CSV.
    Report {
        #[arg(long, default_value = ".oa")]
        data_dir: PathBuf,
        /// RFC 4180 CSV with a header row instead of a table.
        #[arg(long)]
        csv: bool,
        /// Window start (Unix ms); default: the service's report window before --to-ms.
        #[arg(long)]
        from_ms: Option<u64>,
        /// Window end, exclusive (Unix ms); default: now.
        #[arg(long)]
        to_ms: Option<u64>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The node's channels with health flags (inactive, depleted_local, depleted_remote,
    /// losing_money).
    Channels {
        #[arg(long, default_value = ".oa")]
        data_dir: PathBuf,
        #[arg(long)]
        from_ms: Option<u64>,
        #[arg(long)]
        to_ms: Option<u64>,
        /// Print the response as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compile a policy's paywalled routes into Aperture's YAML configuration.
    Aperture {
        file: PathBuf,
        /// Write the YAML here (the hash goes to standard error); default: standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// The CSV statement of a service's ledger for [from-ms, to-ms): opening balance, period
    /// debits and credits, closing balance per account.
    Statement {
        #[arg(long, default_value = ".oa")]
        data_dir: PathBuf,
        #[arg(long, default_value = "treasury")]
        service: String,
        #[arg(long, default_value_t = 0)]
        from_ms: u64,
        /// Defaults to now.
        #[arg(long)]
        to_ms: Option<u64>,
        /// Write the CSV here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Serve {
    Treasury(treasury::Config),
    Hydra(hydra::Config),
    Aegis(aegis::Config),
    WalletExecutor(wallet_executor::Config),
    LightningOps(lightning_ops::Config),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `oa serve` runs a service on the runtime its `--worker-threads` asks for; the rest of the
    // command line on tokio's default.
    let worker_threads = match &cli.command {
        Command::Serve(svc) => match svc.as_ref() {
            Serve::Treasury(c) => c.common.worker_threads,
            Serve::Hydra(c) => c.common.worker_threads,
            Serve::Aegis(c) => c.common.worker_threads,
            Serve::WalletExecutor(c) => c.common.worker_threads,
            Serve::LightningOps(c) => c.common.worker_threads,
        },
        _ => None,
    };
    match oa_service::runtime::build(worker_threads) {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Load(args) => load::run(args).await,
        Command::Receipts(cmd) => receipts::run(cmd).await,
        Command::Proof(cmd) => receipts::proof(cmd),
        Command::Ops(cmd) => ops(cmd).await,
        Command::Ledger(LedgerCommand::Statement {
            data_dir,
            service,
            from_ms,
            to_ms,
            out,
        }) => ledger_statement(&data_dir, &service, from_ms, to_ms, out.as_deref()).await,
        Command::Serve(svc) => match *svc {
            Serve::Treasury(c) => treasury::run(c).await,
            Serve::Hydra(c) => hydra::run(c).await,
            Serve::Aegis(c) => aegis::run(c).await,
            Serve::WalletExecutor(c) => wallet_executor::run(c).await,
            Serve::LightningOps(c) => lightning_ops::run(c).await,
        }
        .map(|()| ExitCode::SUCCESS),
        Command::Token {
            data_dir,
            audience,
            scopes,
            ttl_secs,
        } => token(&data_dir, &audience, &scopes, ttl_secs),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One call to the running lightning-ops with its token from `suite.json`; a refusal is an error
/// naming the status and the service's error body.
async fn ops_call(
    data_dir: &std::path::Path,
    method: reqwest::Method,
    path_and_query: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let suite = suite::Suite::load(data_dir)?;
    let svc = suite.service("lightning-ops")?;
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path_and_query}", svc.url))
        .bearer_auth(&svc.token)
        .timeout(Duration::from_secs(60));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "lightning-ops refused {path_and_query} ({status}): {body}"
    );
    Ok(body)
}

fn window_query(from_ms: Option<u64>, to_ms: Option<u64>) -> String {
    let mut q = Vec::new();
    if let Some(f) = from_ms {
        q.push(format!("from_ms={f}"));
    }
    if let Some(t) = to_ms {
        q.push(format!("to_ms={t}"));
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

async fn ops_plan(data_dir: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let body = ops_call(
        data_dir,
        reqwest::Method::POST,
        "/v1/ops/plan",
        Some(serde_json::json!({})),
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        let actions = body["actions"].as_array().cloned().unwrap_or_default();
        if actions.is_empty() {
            println!("nothing to change: the node matches the policy");
        }
        for a in actions {
            println!("{}", a["description"].as_str().unwrap_or("?"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `oa ops apply`: exits non-zero if any action failed.
async fn ops_apply(
    data_dir: &std::path::Path,
    dry_run: bool,
    idempotency_key: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let key = idempotency_key.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("oa-cli-{nanos}-{}", std::process::id())
    });
    let body = ops_call(
        data_dir,
        reqwest::Method::POST,
        "/v1/ops/apply",
        Some(serde_json::json!({"idempotency_key": key, "dry_run": dry_run})),
    )
    .await?;
    let resp: oa_proto::ops::ApplyResponse = serde_json::from_value(body.clone())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        if resp.results.is_empty() {
            println!("nothing to change: the node matches the policy");
        }
        for r in &resp.results {
            let mut line = format!("{:<13} {}", r.status, r.description);
            if r.status == "deferred" {
                line.push_str(&format!(" (not before {} ms)", r.not_before_ms));
            }
            // A policy change's deferral is the rate limit, said by its time; any other (a
            // rebalance over budget, a retry after a failure) needs its reason.
            if !r.reason.is_empty() && (r.status != "deferred" || r.action != "set_policy") {
                line.push_str(&format!(" [{}]", r.reason));
            }
            if !r.receipt_hash.is_empty() {
                line.push_str(&format!(" receipt {}", r.receipt_hash));
            }
            println!("{line}");
        }
        if !dry_run {
            eprintln!("idempotency key: {key}");
        }
    }
    Ok(if resp.results.iter().any(|r| r.status == "failed") {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn ops_report(
    data_dir: &std::path::Path,
    csv: bool,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    out: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let body = ops_call(
        data_dir,
        reqwest::Method::GET,
        &format!("/v1/ops/report{}", window_query(from_ms, to_ms)),
        None,
    )
    .await?;
    let report: oa_proto::ops::ReportResponse = serde_json::from_value(body)?;
    let text = if csv {
        lightning_ops::report::to_csv(&report)
    } else {
        lightning_ops::report::to_table(&report)
    };
    match out {
        Some(path) => std::fs::write(path, text)?,
        None => print!("{text}"),
    }
    if csv && !report.sync_error.is_empty() {
        eprintln!("warning: not up to date: {}", report.sync_error);
    }
    Ok(ExitCode::SUCCESS)
}

async fn ops_channels(
    data_dir: &std::path::Path,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let body = ops_call(
        data_dir,
        reqwest::Method::GET,
        &format!("/v1/ops/channels{}", window_query(from_ms, to_ms)),
        None,
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let resp: oa_proto::ops::ChannelsResponse = serde_json::from_value(body)?;
    for c in &resp.channels {
        let local = format!("{}.{}%", c.balance_permille / 10, c.balance_permille % 10);
        println!(
            "{:<16} {} local {local:>6}  pnl {:>12} msat  {}",
            c.channel_id,
            if c.active { "active  " } else { "INACTIVE" },
            c.pnl_msat,
            if c.flags.is_empty() {
                "ok".to_owned()
            } else {
                c.flags.join(",")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn ops(cmd: OpsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        OpsCommand::Validate { file } => match lightning_ops::load_policy(&file) {
            Ok(_) => {
                println!("{}: valid", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        OpsCommand::Plan { data_dir, json } => ops_plan(&data_dir, json).await,
        OpsCommand::Apply {
            data_dir,
            dry_run,
            idempotency_key,
            json,
        } => ops_apply(&data_dir, dry_run, idempotency_key, json).await,
        OpsCommand::Report {
            data_dir,
            csv,
            from_ms,
            to_ms,
            out,
        } => ops_report(&data_dir, csv, from_ms, to_ms, out.as_deref()).await,
        OpsCommand::Channels {
            data_dir,
            from_ms,
            to_ms,
            json,
        } => ops_channels(&data_dir, from_ms, to_ms, json).await,
        OpsCommand::Aperture { file, out } => {
            let policy = lightning_ops::load_policy(&file)?;
            let gateway = policy
                .aperture
                .ok_or_else(|| anyhow::anyhow!("{} has no [aperture] section", file.display()))?;
            let compiled = lightning_ops::aperture::compile(&gateway)
                .map_err(|p| anyhow::anyhow!("invalid aperture routes: {p:?}"))?;
            match out {
                Some(path) => {
                    std::fs::write(&path, &compiled.config_yaml)?;
                    eprintln!("wrote {} ({})", path.display(), compiled.config_hash);
                }
                None => {
                    print!("{}", compiled.config_yaml);
                    eprintln!("{}", compiled.config_hash);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn ledger_statement(
    data_dir: &std::path::Path,
    service: &str,
    from_ms: u64,
    to_ms: Option<u64>,
    out: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let suite = suite::Suite::load(data_dir)?;
    let svc = suite.service(service)?;
    let to_ms = match to_ms {
        Some(t) => t,
        None => u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis(),
        )?,
    };
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/v1/ledger/statement?from_ms={from_ms}&to_ms={to_ms}",
            svc.url
        ))
        .bearer_auth(&svc.token)
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    let status = resp.status();
    let body = resp.text().await?;
    anyhow::ensure!(
        status.is_success(),
        "{service} refused the statement ({status}): {body}"
    );
    match out {
        Some(path) => std::fs::write(path, body)?,
        None => print!("{body}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn token(
    data_dir: &std::path::Path,
    audience: &str,
    scopes: &[String],
    ttl_secs: u64,
) -> anyhow::Result<ExitCode> {
    let ring = oa_testkit::DevKeyring::ensure(data_dir)?;
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    println!(
        "{}",
        ring.operator_token(audience, &scopes, Duration::from_secs(ttl_secs))?
    );
    Ok(ExitCode::SUCCESS)
}
