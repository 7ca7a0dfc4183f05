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
//! - ground-truth cases, the verifier simulation and its scoreboard ([`cases`], [`sim`]).
//!
//! Issuing warranties, bonds, claims and disputes move money through Hydra and answer
//! `501 NOT_SUPPORTED` until they are built.

pub mod budgets;
pub mod cases;
pub mod classify;
pub mod error;
pub mod http;
pub mod model;
pub mod pricing;
pub mod quorum;
pub mod registry;
pub mod risk;
pub mod service;
pub mod sim;
pub mod store;
pub mod validate;
pub mod verification;
pub mod work;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
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
    migrations: &[(
        1,
        "verifications, verifiers, risk budgets, cases, simulation",
        include_str!("../migrations/0001_aegis.sql"),
    )],
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
    })
}

pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    let settings = settings(config)?;
    let base = Base::open(SERVICE, &config.common, &[&MIGRATIONS]).await?;
    let aegis = Arc::new(Aegis {
        db: base.db.clone(),
        log: ReceiptLog::new(SERVICE, base.keys.receipt_key.clone()),
        clock,
        settings,
    });
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
    let app = build(&config, Arc::new(SystemClock)).await?;
    run_http(SERVICE, config.common.listen, app.http, app.db).await
}
