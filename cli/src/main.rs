//! `oa`: the suite's command line.
//!
//! - `oa up`: runs the whole suite on loopback (each service its own process, SQLite under a data
//!   folder, the simulated Lightning network, development keys made on first start).
//! - `oa demo`: pays an invoice through the running suite and exports and verifies its receipts.
//! - `oa receipts export|verify|trace`, `oa proof verify`: the offline auditor.
//! - `oa serve <service>`: runs one service in this process (what `oa up` spawns).
//! - `oa token`: mints a development token.

mod demo;
mod receipts;
mod suite;
mod up;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

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
    /// Export, verify (audit) or trace receipts.
    #[command(subcommand)]
    Receipts(receipts::ReceiptsCommand),
    /// Verify a Merkle inclusion or consistency proof.
    #[command(subcommand)]
    Proof(receipts::ProofCommand),
    /// Operators' policy: validate it, compile the L402 gateway configuration.
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Demo(args) => demo::run(args).await,
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

async fn ops_plan(data_dir: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let suite = suite::Suite::load(data_dir)?;
    let svc = suite.service("lightning-ops")?;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/ops/plan", svc.url))
        .bearer_auth(&svc.token)
        .json(&serde_json::json!({}))
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "lightning-ops refused to plan ({status}): {body}"
    );
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
