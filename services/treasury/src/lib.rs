//! TreasuryRouter: what runtime services talk to. It decides every payment request under
//! versioned policy (`policy.rs`), budgets per org, agent and host with periods in a time zone
//! (`budget.rs`, `period.rs`) and Aegis's risk state (`risk.rs`); it reserves before paying and
//! settles to the actual amount; it chooses the rail (Hydra's liquidity or a credit envelope,
//! by Hydra's routing score where the policy says), falls back where allowed, holds payments for
//! approval, and pays through Hydra (`payments.rs`), with a receipt for every attempt.

pub mod budget;
pub mod error;
pub mod http;
pub mod hydra_client;
pub mod known;
pub mod l402;
pub mod payments;
pub mod period;
pub mod policies;
pub mod policy;
pub mod risk;
pub mod store;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use oa_auth::TokenSource;
use oa_invoice::Network;
use oa_money::Msat;
use oa_service::{
    Base, Clock, CommonArgs, SystemClock,
    base::{count_by, run_http},
};
use oa_store::{Backend, Db, MigrationSet, receipt_log::ReceiptLog};

use crate::{
    hydra_client::{HttpHydra, Hydra},
    payments::{Payments, PaymentsConfig},
    policies::Policies,
    risk::{Assessor, HttpRisk, NotConfigured, RiskSource},
};

pub const SERVICE: &str = "treasury";
/// Lifetime of the tokens treasury mints for Hydra and Aegis.
const TOKEN_TTL: Duration = Duration::from_secs(300);

pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: SERVICE,
    migrations: &[
        (
            1,
            "budgets and payments",
            include_str!("../migrations/0001_payments.sql"),
        ),
        (
            2,
            "budgets on the ledger",
            include_str!("../migrations/0002_budgets_on_ledger.sql"),
        ),
        (
            3,
            "policy, periodic budgets, approvals and rails",
            include_str!("../migrations/0003_policy_budgets_approvals.sql"),
        ),
    ],
};

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "treasury",
    about = "TreasuryRouter: budgets, spending policy and payments for agents"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Base URL of Hydra's HTTP API.
    #[arg(long, env = "OA_HYDRA_URL")]
    pub hydra_url: String,
    /// Base URL of Aegis's HTTP API, read for risk when the policy says `[risk] source = "aegis"`.
    #[arg(long, env = "OA_AEGIS_URL")]
    pub aegis_url: Option<String>,
    /// The spending policy (TOML; see services/treasury/policy.example.toml). It becomes the
    /// active policy at start; without it the last active one stays (or the built-in default:
    /// pay directly, no approvals).
    #[arg(long, env = "OA_TREASURY_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
    #[arg(long, env = "OA_NETWORK", default_value = "regtest")]
    pub network: Network,
    /// Largest invoice amount treasury pays.
    #[arg(long, env = "OA_MAX_PAYMENT_MSAT", default_value_t = 1_000_000_000)]
    pub max_payment_msat: u64,
    /// Budget an agent gets on its first payment; 0 means agents need an explicit budget.
    #[arg(long, env = "OA_DEFAULT_AGENT_BUDGET_MSAT", default_value_t = 0)]
    pub default_agent_budget_msat: u64,
    /// How often expired approvals and unsettled expired envelopes are swept.
    #[arg(long, env = "OA_TREASURY_SWEEP_INTERVAL_MS", default_value_t = 5_000)]
    pub sweep_interval_ms: u64,
    /// Record new payment attempts many per transaction (group commit). `auto`: on PostgreSQL,
    /// where it measured faster with less database CPU, not on SQLite, whose one writer already
    /// takes transactions one at a time and where it measured slower (BENCHMARKS.md).
    #[arg(long, env = "OA_TREASURY_GROUP_CREATES", value_enum, default_value_t = GroupCreates::Auto)]
    pub group_creates: GroupCreates,
}

/// Whether treasury records new attempts by group commit (see `--group-creates`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupCreates {
    Auto,
    On,
    Off,
}

impl GroupCreates {
    /// Whether new attempts are group-committed on `backend`.
    pub fn on(self, backend: Backend) -> bool {
        match self {
            GroupCreates::Auto => backend == Backend::Postgres,
            GroupCreates::On => true,
            GroupCreates::Off => false,
        }
    }
}

/// External effects a caller may supply (tests give fakes); `None` builds the HTTP clients.
#[derive(Default, Clone)]
pub struct Deps {
    pub hydra: Option<Arc<dyn Hydra>>,
    pub risk: Option<Arc<dyn RiskSource>>,
}

pub struct App {
    pub http: Router,
    pub payments: Arc<Payments>,
    pub db: Db,
}

/// Largest policy file read at start.
const MAX_POLICY_FILE_BYTES: u64 = policy::MAX_POLICY_BYTES as u64;

fn read_policy_file(path: &PathBuf) -> anyhow::Result<String> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("--policy-file {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= MAX_POLICY_FILE_BYTES,
        "--policy-file {} is larger than {MAX_POLICY_FILE_BYTES} bytes",
        path.display()
    );
    std::fs::read_to_string(path).with_context(|| format!("--policy-file {}", path.display()))
}

pub async fn build(config: &Config, clock: Arc<dyn Clock>, deps: Deps) -> anyhow::Result<App> {
    let policy_text = config
        .policy_file
        .as_ref()
        .map(read_policy_file)
        .transpose()?;
    let base = Base::open(
        SERVICE,
        &config.common,
        &[&MIGRATIONS, &oa_ledger::MIGRATIONS],
    )
    .await?;
    let identity = || {
        base.keys.identity.clone().context(
            "treasury needs --identity-key-file and --identity-kid to call hydra and aegis",
        )
    };
    let hydra = match deps.hydra {
        Some(h) => h,
        None => {
            let tokens = TokenSource::new(identity()?, "hydra", hydra_client::SCOPES, TOKEN_TTL)?;
            Arc::new(HttpHydra::new(&config.hydra_url, tokens)?)
        }
    };
    let risk: Arc<dyn RiskSource> = match (deps.risk, &config.aegis_url) {
        (Some(r), _) => r,
        (None, Some(url)) => {
            let tokens = TokenSource::new(identity()?, "aegis", ["aegis:read"], TOKEN_TTL)?;
            Arc::new(HttpRisk::new(url, tokens)?)
        }
        (None, None) => Arc::new(NotConfigured),
    };
    let policies = Arc::new(Policies::new(base.db.clone()));
    let bundle = policies
        .at_start(policy_text.as_deref(), clock.now_ms())
        .await
        .map_err(|e| anyhow::anyhow!("policy: {e}"))?;
    tracing::info!(policy_bundle_id = %bundle, "treasury policy active");
    let payments = Arc::new(Payments::new(
        base.db.clone(),
        hydra,
        ReceiptLog::new(SERVICE, base.keys.receipt_key.clone()),
        clock.clone(),
        PaymentsConfig {
            network: config.network,
            max_payment: Msat::new(config.max_payment_msat).context("--max-payment-msat")?,
            default_budget: Msat::new(config.default_agent_budget_msat)
                .context("--default-agent-budget-msat")?,
            group_creates: config.group_creates.on(base.db.backend()),
        },
        policies,
        Arc::new(Assessor::new(risk, clock)),
    ));
    let api = http::router(http::TreasuryState {
        payments: payments.clone(),
        verifier: base.keys.verifier.clone(),
    })
    .merge(oa_service::ledger::router(
        oa_service::ledger::LedgerState {
            db: base.db.clone(),
            verifier: base.keys.verifier.clone(),
        },
    ));
    let routes: Vec<oa_service::Route> = http::ROUTES
        .iter()
        .chain(oa_service::ledger::ROUTES.iter())
        .copied()
        .collect();
    let http = base.router(
        api,
        &routes,
        Some(count_by(&base.db, "treasury_payments", "state")),
    );
    Ok(App {
        http,
        payments,
        db: base.db,
    })
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    oa_service::init_tracing(config.common.log_json);
    config.common.pin_cpus()?;
    let app = build(&config, Arc::new(SystemClock), Deps::default()).await?;
    app.payments.recover().await?;
    app.payments
        .spawn_sweeper(Duration::from_millis(config.sweep_interval_ms.max(100)));
    let payments = app.payments.clone();
    oa_service::tracker::spawn_resweep(
        "payments",
        move |before| {
            let payments = payments.clone();
            async move { payments.recover_before(before).await }
        },
        app.payments.clock.clone(),
    );
    run_http(SERVICE, config.common.listen, app.http, app.db).await
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn new_attempts_are_grouped_by_default_on_postgresql_only() {
        let parse = |args: &[&str]| {
            let base = [
                "treasury",
                "--listen=127.0.0.1:0",
                "--database-url=sqlite::memory:",
                "--receipt-key-file=k",
                "--trust-file=t",
                "--hydra-url=http://h",
            ];
            let base = base.iter();
            Config::try_parse_from(base.chain(args.iter()))
        };
        let auto = parse(&[]).unwrap().group_creates;
        assert_eq!(auto, GroupCreates::Auto);
        assert!(auto.on(Backend::Postgres));
        assert!(!auto.on(Backend::Sqlite));
        let on = parse(&["--group-creates=on"]).unwrap().group_creates;
        assert!(on.on(Backend::Sqlite));
        let off = parse(&["--group-creates=off"]).unwrap().group_creates;
        assert!(!off.on(Backend::Postgres));
        assert!(parse(&["--group-creates=sometimes"]).is_err());
    }
}
