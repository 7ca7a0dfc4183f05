//! `oa up`: the whole suite on loopback, one process per service.
//!
//! Each service runs as `oa serve <service>` in its own process (the custody boundary is a real
//! process boundary even in development), with its SQLite file under the data folder and the keys
//! of the development keyring. `oa up` waits until every service is ready, writes `suite.json`,
//! prints the URLs and a token, and on SIGINT/SIGTERM stops the services gracefully. If a service
//! exits on its own, `oa up` stops the others and fails; with `--restart` it starts the service
//! again instead (for fault drills: kill any service's pid from `suite.json` and watch the suite
//! recover), giving up if one service exits more than `MAX_RESTARTS` times in a minute.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context;
use oa_receipts::ReceiptKey;
use oa_testkit::DevKeyring;
use tokio::process::{Child, Command};

use crate::suite::{FILE, ServiceEntry, Suite};

/// How long every service has to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a service has to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the tokens written to `suite.json` (the longest the auth crate allows).
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Budget each agent gets on first use in the development suite: 1,000,000 sat.
const DEV_AGENT_BUDGET_MSAT: u64 = 1_000_000_000;
/// With `--restart`: most restarts of one service within `RESTART_WINDOW` before `oa up` gives up.
const MAX_RESTARTS: usize = 20;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where keys, databases, logs and suite.json live.
    #[arg(long, default_value = ".oa")]
    pub data_dir: PathBuf,
    /// First of six consecutive ports (treasury, hydra, aegis, wallet-executor, lightning-ops, and
    /// the executor's gRPC); 0 picks free ports.
    #[arg(long, default_value_t = 8081)]
    pub base_port: u16,
    /// Restart a service that exits on its own (killed, crashed) instead of stopping the suite;
    /// `suite.json` is rewritten with its new pid.
    #[arg(long)]
    pub restart: bool,
}

/// The operator scopes written into each service's token in `suite.json`.
fn scopes(service: &str) -> &'static [&'static str] {
    match service {
        "treasury" => &[
            "treasury:pay",
            "treasury:read",
            "treasury:admin",
            "receipts:read",
            "events:read",
            "ledger:read",
        ],
        "hydra" => &[
            "hydra:liquidity",
            "hydra:read",
            "receipts:read",
            "events:read",
            "ledger:read",
        ],
        "aegis" => &["aegis:read", "receipts:read", "events:read"],
        "wallet-executor" => &["wallet:read", "wallet:sim", "receipts:read", "events:read"],
        "lightning-ops" => &["ops:read", "ops:apply", "receipts:read", "events:read"],
        _ => &["receipts:read", "events:read"],
    }
}

struct Running {
    name: &'static str,
    flags: Vec<String>,
    child: Child,
    /// When `--restart` last restarted it, newest last (at most `MAX_RESTARTS`).
    restarts: Vec<Instant>,
}

impl Running {
    /// Starts (or restarts) the service, its output appended to its log.
    fn spawn(&mut self, data_dir: &Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(data_dir, self.name))?;
        self.child = spawn_service(self.name, &self.flags, log)?;
        Ok(())
    }
}

fn spawn_service(name: &str, flags: &[String], log: std::fs::File) -> anyhow::Result<Child> {
    Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg(name)
        .args(flags)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {name}"))
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    std::fs::create_dir_all(args.data_dir.join("db"))?;
    std::fs::create_dir_all(args.data_dir.join("logs"))?;
    let data_dir = std::path::absolute(&args.data_dir)?;
    let ring = DevKeyring::ensure(&data_dir)?;
    let _ = std::fs::remove_file(data_dir.join(FILE));

    let ports: Vec<u16> = if args.base_port == 0 {
        (0..6)
            .map(|_| oa_testkit::free_port())
            .collect::<Result<_, _>>()?
    } else {
        (0..6)
            .map(|i| {
                args.base_port
                    .checked_add(i)
                    .context("--base-port too high")
            })
            .collect::<Result<_, _>>()?
    };
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let names = [
        "treasury",
        "hydra",
        "aegis",
        "wallet-executor",
        "lightning-ops",
    ];
    let url = |i: usize| format!("http://{}", addr(i));
    let receipt_key_id = |service: &str| -> anyhow::Result<String> {
        let secret = std::fs::read_to_string(ring.receipt_key_file(service))?;
        Ok(ReceiptKey::from_secret_hex(secret.trim())?
            .key_id()
            .to_owned())
    };
    let executor_key = receipt_key_id("wallet-executor")?;
    let aegis_key = receipt_key_id("aegis")?;

    let mut running = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut flags = common_flags(&ring, &data_dir, name, addr(i));
        match *name {
            "treasury" => flags.extend([
                format!("--hydra-url={}", url(1)),
                format!("--aegis-url={}", url(2)),
                format!("--default-agent-budget-msat={DEV_AGENT_BUDGET_MSAT}"),
            ]),
            "hydra" => flags.extend([
                format!("--executor-url=http://{}", addr(5)),
                format!("--executor-receipt-keys={executor_key}"),
                format!("--aegis-url={}", url(2)),
                format!("--aegis-receipt-keys={aegis_key}"),
            ]),
            "aegis" => flags.push(format!("--hydra-url={}", url(1))),
            "lightning-ops" => flags.extend([
                format!("--executor-url=http://{}", addr(5)),
                format!("--executor-receipt-keys={executor_key}"),
            ]),
            "wallet-executor" => flags.extend([
                format!("--grpc-listen={}", addr(5)),
                // The simulated network outlives restarts of the suite, as a real node would.
                format!(
                    "--sim-state-file={}",
                    data_dir.join("wallet-executor-sim.jsonl").display()
                ),
            ]),
            _ => {}
        }
        let log = std::fs::File::create(log_path(&data_dir, name))?;
        let child = spawn_service(name, &flags, log)?;
        running.push(Running {
            name,
            flags,
            child,
            restarts: Vec::new(),
        });
    }

    if let Err(e) = wait_ready(&names, &url, &mut running).await {
        stop_all(&mut running).await;
        return Err(e);
    }

    let mut services = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        services.insert(
            (*name).to_owned(),
            ServiceEntry {
                url: url(i),
                grpc_url: (*name == "wallet-executor").then(|| format!("http://{}", addr(5))),
                token: ring.operator_token(name, scopes(name), TOKEN_TTL)?,
                log: log_path(&data_dir, name).display().to_string(),
                pid: running[i].child.id(),
            },
        );
    }
    let mut suite = Suite {
        data_dir: data_dir.display().to_string(),
        pid: std::process::id(),
        services,
    };
    suite.write(&data_dir)?;

    println!(
        "suite ready in {} ms (data in {})",
        started.elapsed().as_millis(),
        data_dir.display()
    );
    for (name, s) in &suite.services {
        println!(
            "  {name:<16} {}{}",
            s.url,
            s.grpc_url
                .as_ref()
                .map(|g| format!("  (gRPC {g})"))
                .unwrap_or_default()
        );
    }
    println!(
        "\ntreasury token (scopes treasury:pay treasury:read treasury:admin receipts:read events:read):\n{}",
        suite.services["treasury"].token
    );
    println!(
        "\nURLs and a token per service: {}\ntry it: oa demo --data-dir {}\nstop: Ctrl-C",
        data_dir.join(FILE).display(),
        args.data_dir.display()
    );

    let shutdown = oa_service::shutdown_signal();
    tokio::pin!(shutdown);
    let outcome = loop {
        let (i, status) = tokio::select! {
            () = &mut shutdown => break Ok(ExitCode::SUCCESS),
            exited = first_exit(&mut running) => exited,
        };
        let r = &mut running[i];
        let log = log_path(&data_dir, r.name);
        if !args.restart {
            break Err(anyhow::anyhow!(
                "{} exited unexpectedly ({status}); see {}",
                r.name,
                log.display()
            ));
        }
        let now = Instant::now();
        r.restarts
            .retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        if r.restarts.len() >= MAX_RESTARTS {
            break Err(anyhow::anyhow!(
                "{} exited {MAX_RESTARTS} times within {} s ({status}); see {}",
                r.name,
                RESTART_WINDOW.as_secs(),
                log.display()
            ));
        }
        // A service that keeps failing at start-up is restarted ever more slowly.
        let backoff = Duration::from_millis(50) * u32::try_from(r.restarts.len()).unwrap_or(1);
        r.restarts.push(now);
        eprintln!("{} exited ({status}); restarting it", r.name);
        tokio::time::sleep(backoff).await;
        if let Err(e) = r.spawn(&data_dir) {
            break Err(e);
        }
        if let Some(entry) = suite.services.get_mut(r.name) {
            entry.pid = r.child.id();
        }
        if let Err(e) = suite.write(&data_dir) {
            break Err(e);
        }
    };
    stop_all(&mut running).await;
    let _ = std::fs::remove_file(data_dir.join(FILE));
    outcome
}

fn log_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("logs").join(format!("{name}.log"))
}

fn common_flags(ring: &DevKeyring, data_dir: &Path, name: &str, listen: SocketAddr) -> Vec<String> {
    let mut flags = vec![
        format!("--listen={listen}"),
        format!(
            "--database-url=sqlite://{}",
            data_dir.join("db").join(format!("{name}.db")).display()
        ),
        format!(
            "--receipt-key-file={}",
            ring.receipt_key_file(name).display()
        ),
        format!("--trust-file={}", ring.trust_file().display()),
        // A development suite checkpoints its receipt logs every second, so an export taken
        // right after a payment is already covered by a signed checkpoint.
        "--checkpoint-interval-ms=1000".to_owned(),
    ];
    if matches!(name, "treasury" | "hydra" | "aegis" | "lightning-ops") {
        flags.push(format!(
            "--identity-key-file={}",
            ring.identity_file(name).display()
        ));
        flags.push(format!("--identity-kid={}", ring.kid(name)));
    }
    flags
}

async fn wait_ready(
    names: &[&str],
    url: &impl Fn(usize) -> String,
    running: &mut [Running],
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + READY_TIMEOUT;
    for (i, name) in names.iter().enumerate() {
        loop {
            if let Some(status) = running[i].child.try_wait()? {
                anyhow::bail!(
                    "{name} exited during start-up ({status}); see its log in the data folder"
                );
            }
            let ready = client
                .get(format!("{}/readyz", url(i)))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name} was not ready within {} s",
                READY_TIMEOUT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    Ok(())
}

/// The index of the first service found exited, and how it ended.
async fn first_exit(running: &mut [Running]) -> (usize, String) {
    loop {
        for (i, r) in running.iter_mut().enumerate() {
            if let Ok(Some(status)) = r.child.try_wait() {
                return (i, status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM to every service (they drain and close their databases), SIGKILL after a bound.
async fn stop_all(running: &mut [Running]) {
    for r in running.iter() {
        if let Some(pid) = r.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
    for r in running.iter_mut() {
        if tokio::time::timeout(STOP_TIMEOUT, r.child.wait())
            .await
            .is_err()
        {
            let _ = r.child.start_kill();
            let _ = r.child.wait().await;
        }
    }
}
