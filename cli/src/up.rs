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
use oa_service::cpus::{CpuError, CpuList};
use oa_testkit::DevKeyring;
use tokio::process::{Child, Command};

use crate::suite::{FILE, Replica, ServiceEntry, Suite};

/// How long every service has to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a service has to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the tokens written to `suite.json` (the longest the auth crate allows).
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Budget each agent gets on first use in the development suite: 1,000,000 sat.
const DEV_AGENT_BUDGET_MSAT: u64 = 1_000_000_000;
/// Most replicas `--replicas` starts of treasury, Hydra and Aegis.
const MAX_REPLICAS: usize = 8;
/// The services, in start order.
const NAMES: [&str; 5] = [
    "treasury",
    "hydra",
    "aegis",
    "wallet-executor",
    "lightning-ops",
];
/// With `--restart`: most restarts of one service within `RESTART_WINDOW` before `oa up` gives up.
const MAX_RESTARTS: usize = 20;
/// Most tokio worker threads `--worker-threads` gives one service process.
const MAX_WORKER_THREADS: usize = 64;
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
    /// Run every service on PostgreSQL instead of SQLite: the URL of a server and a database to
    /// connect to first (e.g. postgres://postgres@127.0.0.1:5432/postgres); each service gets its
    /// own database, `<prefix>_<service>`, created if missing.
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// The prefix of the services' database names on PostgreSQL.
    #[arg(long, default_value = "oa")]
    pub postgres_db_prefix: String,
    /// Processes per service for treasury, Hydra and Aegis (PostgreSQL only); replica r of each
    /// calls replica r of the others, and `suite.json` lists every replica's URL.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Threads that run each service's tasks (its `--worker-threads`, set as
    /// `OA_WORKER_THREADS`). The suite runs every process on one machine, where one thread each
    /// wastes least on waking threads: every task on the main thread measured about a tenth less
    /// CPU per payment than one worker thread beside it, which measured about 20% more payments a
    /// second than one per core. A service alone on its host (a container) defaults to one per core.
    #[arg(long, default_value_t = 1)]
    pub worker_threads: usize,
    /// Pin each service process to one CPU (its `--cpus`), spreading them over the CPUs `oa up`
    /// may use, heaviest first. `auto` pins the embedded (SQLite) suite when there are at least
    /// two CPUs: each statement is then handed to the connection's thread on the same core,
    /// which measured about half again as many payments a second on 2 cores. It does not pin on
    /// PostgreSQL, whose own processes share the CPUs (pinned, it measured no faster).
    #[arg(long, value_enum, default_value_t = CpuPinning::Auto)]
    pub cpu_pinning: CpuPinning,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuPinning {
    Auto,
    Off,
}

/// Each service's expected share of the CPU under payment load (measured per payment: treasury
/// 1.8 ms, Hydra 1.2 ms, the executor 0.8 ms; Aegis and lightning-ops are off the payment path).
fn cpu_weight(name: &str) -> u32 {
    match name {
        "treasury" => 4,
        "hydra" => 3,
        "wallet-executor" => 2,
        _ => 1,
    }
}

/// The CPU each instance is pinned to, in order, or `None` for no pinning. `allowed` is what
/// `oa up` may run on ([`oa_service::cpus::allowed`]).
fn cpu_plan(
    pinning: CpuPinning,
    postgres: bool,
    names: &[&str],
    allowed: Result<CpuList, CpuError>,
) -> anyhow::Result<Option<Vec<usize>>> {
    if pinning == CpuPinning::Off || postgres {
        return Ok(None);
    }
    let cpus = match allowed {
        Ok(cpus) => cpus,
        Err(CpuError::Unsupported) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if cpus.iter().nth(1).is_none() {
        return Ok(None);
    }
    let weights: Vec<u32> = names.iter().map(|n| cpu_weight(n)).collect();
    Ok(Some(oa_service::cpus::spread(&weights, &cpus)))
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

/// One process of the suite: a service, or one replica of it.
struct Running {
    name: &'static str,
    /// The service's name, with `-2`, `-3`... for further replicas (its log's name).
    label: String,
    url: String,
    flags: Vec<String>,
    child: Child,
    /// When `--restart` last restarted it, newest last (at most `MAX_RESTARTS`).
    restarts: Vec<Instant>,
}

impl Running {
    /// Starts (or restarts) the service, its output appended to its log.
    fn spawn(&mut self, data_dir: &Path, worker_threads: usize) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(data_dir, &self.label))?;
        self.child = spawn_service(self.name, &self.flags, worker_threads, log)?;
        Ok(())
    }
}

fn spawn_service(
    name: &str,
    flags: &[String],
    worker_threads: usize,
    log: std::fs::File,
) -> anyhow::Result<Child> {
    Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg(name)
        .args(flags)
        .env("OA_WORKER_THREADS", worker_threads.to_string())
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

    anyhow::ensure!(
        (1..=MAX_REPLICAS).contains(&args.replicas),
        "--replicas must be 1 to {MAX_REPLICAS}"
    );
    anyhow::ensure!(
        (1..=MAX_WORKER_THREADS).contains(&args.worker_threads),
        "--worker-threads must be 1 to {MAX_WORKER_THREADS}"
    );
    anyhow::ensure!(
        args.replicas == 1 || args.postgres_url.is_some(),
        "--replicas needs --postgres-url: replicas share their service's database, and a SQLite \
         file has one writer"
    );
    let databases = match &args.postgres_url {
        Some(admin) => Some(postgres_databases(admin, &args.postgres_db_prefix).await?),
        None => None,
    };

    // Ports: treasury, hydra, aegis, wallet-executor, lightning-ops, the executor's gRPC, then
    // treasury, hydra and aegis of each further replica.
    let count = 6 + 3 * (args.replicas - 1);
    let ports: Vec<u16> = if args.base_port == 0 {
        // Every listener held until all are picked, so no port is handed out twice.
        let held = (0..count)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()?;
        held.iter()
            .map(|l| Ok(l.local_addr()?.port()))
            .collect::<std::io::Result<_>>()?
    } else {
        (0..count)
            .map(|i| {
                u16::try_from(i)
                    .ok()
                    .and_then(|i| args.base_port.checked_add(i))
                    .context("--base-port too high")
            })
            .collect::<Result<_, _>>()?
    };
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let url = |i: usize| format!("http://{}", addr(i));
    let grpc = format!("http://{}", addr(5));
    // Replica r of a replicated service (r = 0 is the first), as a port index.
    let replica_port = |service: usize, r: usize| {
        if r == 0 {
            service
        } else {
            6 + 3 * (r - 1) + service
        }
    };
    let receipt_key_id = |service: &str| -> anyhow::Result<String> {
        let secret = std::fs::read_to_string(ring.receipt_key_file(service))?;
        Ok(ReceiptKey::from_secret_hex(secret.trim())?
            .key_id()
            .to_owned())
    };
    let executor_key = receipt_key_id("wallet-executor")?;
    let aegis_key = receipt_key_id("aegis")?;

    // Replica r of treasury calls replica r of Hydra and Aegis, and Hydra and Aegis call each
    // other's replica r: callers spread over the replicas spread the whole path.
    let mut instances: Vec<(&'static str, usize, usize)> = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let replicas = if i < 3 { args.replicas } else { 1 };
        for r in 0..replicas {
            instances.push((name, r, replica_port(i, r)));
        }
    }
    let names: Vec<&str> = instances.iter().map(|i| i.0).collect();
    let pins = cpu_plan(
        args.cpu_pinning,
        databases.is_some(),
        &names,
        oa_service::cpus::allowed(),
    )?;
    let mut running = Vec::new();
    for (i, &(name, r, port)) in instances.iter().enumerate() {
        let database_url = match &databases {
            Some(dbs) => dbs[name].clone(),
            None => format!(
                "sqlite://{}",
                data_dir.join("db").join(format!("{name}.db")).display()
            ),
        };
        let mut flags = common_flags(&ring, &database_url, name, addr(port));
        match name {
            "treasury" => flags.extend([
                format!("--hydra-url={}", url(replica_port(1, r))),
                format!("--aegis-url={}", url(replica_port(2, r))),
                format!("--default-agent-budget-msat={DEV_AGENT_BUDGET_MSAT}"),
            ]),
            "hydra" => flags.extend([
                format!("--executor-url={grpc}"),
                format!("--executor-receipt-keys={executor_key}"),
                format!("--aegis-url={}", url(replica_port(2, r))),
                format!("--aegis-receipt-keys={aegis_key}"),
            ]),
            "aegis" => flags.push(format!("--hydra-url={}", url(replica_port(1, r)))),
            "lightning-ops" => flags.extend([
                format!("--executor-url={grpc}"),
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
        if let Some(pins) = &pins {
            flags.push(format!("--cpus={}", pins[i]));
        }
        let label = if r == 0 {
            name.to_owned()
        } else {
            format!("{name}-{}", r + 1)
        };
        let log = std::fs::File::create(log_path(&data_dir, &label))?;
        let child = spawn_service(name, &flags, args.worker_threads, log)?;
        running.push(Running {
            name,
            label,
            url: url(port),
            flags,
            child,
            restarts: Vec::new(),
        });
    }

    if let Err(e) = wait_ready(&mut running).await {
        stop_all(&mut running).await;
        return Err(e);
    }

    let mut services = BTreeMap::new();
    for name in NAMES {
        let mine: Vec<&Running> = running.iter().filter(|r| r.name == name).collect();
        services.insert(
            name.to_owned(),
            ServiceEntry {
                url: mine[0].url.clone(),
                grpc_url: (name == "wallet-executor").then(|| grpc.clone()),
                token: ring.operator_token(name, scopes(name), TOKEN_TTL)?,
                log: log_path(&data_dir, name).display().to_string(),
                pid: mine[0].child.id(),
                replicas: if mine.len() > 1 {
                    mine.iter()
                        .map(|r| Replica {
                            url: r.url.clone(),
                            pid: r.child.id(),
                        })
                        .collect()
                } else {
                    Vec::new()
                },
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
    if let Some(pins) = &pins {
        let each: Vec<String> = running
            .iter()
            .zip(pins)
            .map(|(r, cpu)| format!("{} {cpu}", r.label))
            .collect();
        println!("  pinned to CPUs: {}", each.join(", "));
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
        let log = log_path(&data_dir, &r.label);
        if !args.restart {
            break Err(anyhow::anyhow!(
                "{} exited unexpectedly ({status}); see {}",
                r.label,
                log.display()
            ));
        }
        let now = Instant::now();
        r.restarts
            .retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        if r.restarts.len() >= MAX_RESTARTS {
            break Err(anyhow::anyhow!(
                "{} exited {MAX_RESTARTS} times within {} s ({status}); see {}",
                r.label,
                RESTART_WINDOW.as_secs(),
                log.display()
            ));
        }
        // A service that keeps failing at start-up is restarted ever more slowly.
        let backoff = Duration::from_millis(50) * u32::try_from(r.restarts.len()).unwrap_or(1);
        r.restarts.push(now);
        eprintln!("{} exited ({status}); restarting it", r.label);
        tokio::time::sleep(backoff).await;
        if let Err(e) = r.spawn(&data_dir, args.worker_threads) {
            break Err(e);
        }
        if let Some(entry) = suite.services.get_mut(r.name) {
            let pid = r.child.id();
            if let Some(replica) = entry.replicas.iter_mut().find(|x| x.url == r.url) {
                replica.pid = pid;
            }
            if entry.url == r.url {
                entry.pid = pid;
            }
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

fn common_flags(
    ring: &DevKeyring,
    database_url: &str,
    name: &str,
    listen: SocketAddr,
) -> Vec<String> {
    let mut flags = vec![
        format!("--listen={listen}"),
        format!("--database-url={database_url}"),
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

async fn wait_ready(running: &mut [Running]) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + READY_TIMEOUT;
    for r in running.iter_mut() {
        loop {
            if let Some(status) = r.child.try_wait()? {
                anyhow::bail!(
                    "{} exited during start-up ({status}); see its log in the data folder",
                    r.label
                );
            }
            let ready = client
                .get(format!("{}/readyz", r.url))
                .send()
                .await
                .is_ok_and(|resp| resp.status().is_success());
            if ready {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} was not ready within {} s",
                r.label,
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

/// Creates (if missing) one database per service on the server `admin` names; their URLs.
async fn postgres_databases(
    admin: &str,
    prefix: &str,
) -> anyhow::Result<BTreeMap<&'static str, String>> {
    anyhow::ensure!(
        !prefix.is_empty()
            && prefix.len() <= 40
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "--postgres-db-prefix must be 1 to 40 of a-z, 0-9 and _"
    );
    let base = reqwest::Url::parse(admin).context("--postgres-url")?;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .with_context(|| format!("connect to {admin}"))?;
    let mut urls = BTreeMap::new();
    for name in NAMES {
        let db = format!("{prefix}_{}", name.replace('-', "_"));
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&db)
                .fetch_optional(&mut conn)
                .await?;
        if exists.is_none() {
            // The name is checked above: [a-z0-9_] only, so it needs no quoting.
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&mut conn)
                .await
                .with_context(|| format!("create database {db}"))?;
        }
        let mut url = base.clone();
        url.set_path(&format!("/{db}"));
        urls.insert(name, url.to_string());
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_suite_is_pinned_only_with_two_cpus_or_more() {
        let names = NAMES;
        let two: CpuList = "0-1".parse().unwrap();
        let plan = |pinning, postgres, allowed| cpu_plan(pinning, postgres, &names, allowed);
        assert_eq!(
            plan(CpuPinning::Auto, false, Ok(two.clone())).unwrap(),
            Some(vec![0, 1, 0, 1, 0])
        );
        assert_eq!(plan(CpuPinning::Off, false, Ok(two.clone())).unwrap(), None);
        assert_eq!(plan(CpuPinning::Auto, true, Ok(two)).unwrap(), None);
        assert_eq!(
            plan(CpuPinning::Auto, false, Ok("3".parse().unwrap())).unwrap(),
            None
        );
        assert_eq!(
            plan(CpuPinning::Auto, false, Err(CpuError::Unsupported)).unwrap(),
            None
        );
        assert!(
            plan(
                CpuPinning::Auto,
                false,
                Err(CpuError::Read("denied".into()))
            )
            .is_err()
        );
    }
}
