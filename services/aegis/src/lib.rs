//! Aegis: verification and underwriting. In this version (issue 6, part 1):
//!
//! - classification of work units into a verifiability class and an independence tier
//!   ([`classify`]), raised by the agent's failure history and its risk state;
//! - verifications ([`verification`]): objective checks that really run ([`work`]: artifact
//!   SHA-256, JSON Schema validity, test-report thresholds), signed verdicts of registered
//!   verifiers under a weighted quorum ([`quorum`], [`registry`]), and a decision queue for the
//!   adjudicated and human tiers; one signed receipt when a verdict is final (what Hydra checks
//!   before settling a credit envelope);
//! - risk budgets per agent and per org ([`risk`], [`budgets`]);
//! - warranty quotes ([`pricing`]);
//! - ground-truth cases, the verifier simulation and its scoreboard ([`cases`], [`sim`]);
//! - underwriting (part 2): warranties issued on passed verifications with the premium collected
//!   and the coverage reserved in the ledger ([`warranty`], accounts in [`book`]), provider bonds
//!   as pending ledger transfers ([`bond`]), claims paid exactly once to the claimant's invoice
//!   through Hydra ([`claim`], [`payer`]) and disputes an arbitrator decides before a deadline
//!   ([`dispute`]).

pub mod bond;
pub mod book;
pub mod budgets;
pub mod cases;
pub mod claim;
pub mod classify;
pub mod dispute;
pub mod error;
pub mod http;
pub mod model;
pub mod payer;
pub mod pricing;
pub mod quorum;
pub mod registry;
pub mod risk;
pub mod service;
pub mod sim;
pub mod store;
pub mod uw_store;
pub mod validate;
pub mod verification;
pub mod warranty;
pub mod work;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use oa_auth::TokenSource;
use oa_money::Msat;
use oa_service::{
    Base, Clock, CommonArgs, SystemClock,
    base::{count_by, run_http},
};
use oa_store::{Db, MigrationSet, receipt_log::ReceiptLog};

use crate::{
    classify::Policy,
    service::{Aegis, Settings},
};

pub const SERVICE: &str = "aegis";

pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: SERVICE,
    migrations: &[
        (
            1,
            "verifications, verifiers, risk budgets, cases, simulation",
            include_str!("../migrations/0001_aegis.sql"),
        ),
        (
            2,
            "warranties, bonds, claims, disputes",
            include_str!("../migrations/0002_underwriting.sql"),
        ),
    ],
};

pub use http::ROUTES;

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "aegis",
    about = "Aegis: verification, risk budgets, warranties, bonds, claims, disputes"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Counted verdicts a heterogeneous verification needs (1..=16).
    #[arg(long, env = "OA_AEGIS_QUORUM_SIZE", default_value_t = 3)]
    pub quorum_size: u32,
    /// Distinct verifier families among them (at most the quorum size).
    #[arg(long, env = "OA_AEGIS_QUORUM_MIN_FAMILIES", default_value_t = 2)]
    pub quorum_min_families: u32,
    /// How far back failure history and the verified share look.
    #[arg(long, env = "OA_AEGIS_HISTORY_WINDOW_SECS", default_value_t = 30 * 86_400)]
    pub history_window_secs: u64,
    /// Amounts at stake from this one raise the tier by one.
    #[arg(long, env = "OA_AEGIS_HIGH_STAKES_MSAT", default_value_t = 100_000_000)]
    pub high_stakes_msat: u64,
    /// Amounts at stake from this one need the human tier.
    #[arg(
        long,
        env = "OA_AEGIS_CRITICAL_STAKES_MSAT",
        default_value_t = 10_000_000_000
    )]
    pub critical_stakes_msat: u64,
    /// Hydra's base URL: claims are paid through its liquidity API with this service's identity
    /// (--identity-key-file, --identity-kid). Without it claims can be opened and denied, not paid.
    #[arg(long, env = "OA_HYDRA_URL")]
    pub hydra_url: Option<String>,
    /// How long an arbitrator has to decide a dispute; after it the claim's resolution stands.
    #[arg(long, env = "OA_AEGIS_DISPUTE_WINDOW_SECS", default_value_t = 7 * 86_400)]
    pub dispute_window_secs: u64,
    /// How often the background sweeper closes disputes whose deadline passed (1..=3600000):
    /// a dispute is closed at most this long after its deadline even if no route touches it.
    #[arg(long, env = "OA_AEGIS_SWEEP_INTERVAL_MS", default_value_t = 1_000)]
    pub sweep_interval_ms: u64,
}

/// Slowest sweep: an hour bounds how long an expired dispute can stay open past its deadline.
pub const MAX_SWEEP_INTERVAL_MS: u64 = 3_600_000;

/// Lifetime of the tokens Aegis mints for Hydra.
const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// What tests may swap in.
#[derive(Default)]
pub struct Deps {
    pub payer: Option<Arc<dyn payer::Payer>>,
}

/// Largest quorum: a verification waits for this many verdicts at most.
pub const MAX_QUORUM: u32 = 16;

pub struct App {
    pub http: Router,
    pub aegis: Arc<Aegis>,
    pub db: Db,
}

fn settings(config: &Config) -> anyhow::Result<Settings> {
    anyhow::ensure!(
        (1..=MAX_QUORUM).contains(&config.quorum_size),
        "--quorum-size must be 1..={MAX_QUORUM}"
    );
    anyhow::ensure!(
        (1..=config.quorum_size).contains(&config.quorum_min_families),
        "--quorum-min-families must be 1..=--quorum-size"
    );
    anyhow::ensure!(
        config.dispute_window_secs > 0,
        "--dispute-window-secs must be positive"
    );
    anyhow::ensure!(
        (1..=MAX_SWEEP_INTERVAL_MS).contains(&config.sweep_interval_ms),
        "--sweep-interval-ms must be 1..={MAX_SWEEP_INTERVAL_MS}"
    );
    anyhow::ensure!(
        config.history_window_secs > 0,
        "--history-window-secs must be positive"
    );
    let policy = Policy {
        high_stakes: Msat::new(config.high_stakes_msat).context("--high-stakes-msat")?,
        critical_stakes: Msat::new(config.critical_stakes_msat)
            .context("--critical-stakes-msat")?,
    };
    anyhow::ensure!(
        policy.high_stakes <= policy.critical_stakes,
        "--high-stakes-msat must be at most --critical-stakes-msat"
    );
    Ok(Settings {
        policy,
        history_window_ms: config.history_window_secs.saturating_mul(1_000),
        quorum_size: config.quorum_size,
        quorum_min_families: config.quorum_min_families,
        dispute_window_ms: config.dispute_window_secs.saturating_mul(1_000),
    })
}

/// Builds Aegis and starts its dispute expiry sweeper (so it must run inside a Tokio runtime).
pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    build_with(config, clock, Deps::default()).await
}

pub async fn build_with(config: &Config, clock: Arc<dyn Clock>, deps: Deps) -> anyhow::Result<App> {
    let settings = settings(config)?;
    let base = Base::open(
        SERVICE,
        &config.common,
        &[&MIGRATIONS, &oa_ledger::MIGRATIONS],
    )
    .await?;
    let payer: Arc<dyn payer::Payer> = match (deps.payer, &config.hydra_url) {
        (Some(p), _) => p,
        (None, Some(url)) => {
            let identity = base
                .keys
                .identity
                .clone()
                .context("aegis needs --identity-key-file and --identity-kid to call hydra")?;
            let tokens = TokenSource::new(identity, "hydra", payer::SCOPES, TOKEN_TTL)?;
            Arc::new(payer::HttpPayer::new(url, tokens)?)
        }
        (None, None) => Arc::new(payer::NotConfigured),
    };
    let aegis = Arc::new(Aegis {
        db: base.db.clone(),
        log: ReceiptLog::new(SERVICE, base.keys.receipt_key.clone()),
        clock,
        settings,
        payer,
    });
    aegis.spawn_sweeper(std::time::Duration::from_millis(config.sweep_interval_ms));
    let api = http::router(http::AegisState {
        aegis: aegis.clone(),
        verifier: base.keys.verifier.clone(),
    });
    let http = base.router(
        api,
        &ROUTES,
        Some(count_by(&base.db, "aegis_verifications", "state")),
    );
    Ok(App {
        http,
        aegis,
        db: base.db,
    })
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    oa_service::init_tracing(config.common.log_json);
    config.common.pin_cpus()?;
    let app = build(&config, Arc::new(SystemClock)).await?;
    run_http(SERVICE, config.common.listen, app.http, app.db).await
}
