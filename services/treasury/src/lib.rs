//! TreasuryRouter: what runtime services talk to. In this version: per-agent budgets on the
//! ledger (reserve before paying, settle to the actual amount), payments through Hydra's liquidity with a
//! payment-attempt receipt that links Hydra's. Approvals and policy answer `NOT_SUPPORTED`.

pub mod budget;
pub mod error;
pub mod http;
pub mod hydra_client;
pub mod payments;
pub mod store;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use oa_auth::TokenSource;
use oa_invoice::Network;
use oa_money::Msat;
use oa_service::{
    Base, Clock, CommonArgs, SystemClock,
    base::{count_by, run_http},
};
use oa_store::{Db, MigrationSet, receipt_log::ReceiptLog};

use crate::{
    hydra_client::{HttpHydra, Hydra},
    payments::{Payments, PaymentsConfig},
};

pub const SERVICE: &str = "treasury";
/// Lifetime of the tokens treasury mints for Hydra.
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
    #[arg(long, env = "OA_NETWORK", default_value = "regtest")]
    pub network: Network,
    /// Largest invoice amount treasury pays.
    #[arg(long, env = "OA_MAX_PAYMENT_MSAT", default_value_t = 1_000_000_000)]
    pub max_payment_msat: u64,
    /// Budget an agent gets on its first payment; 0 means agents need an explicit budget.
    #[arg(long, env = "OA_DEFAULT_AGENT_BUDGET_MSAT", default_value_t = 0)]
    pub default_agent_budget_msat: u64,
}

pub struct App {
    pub http: Router,
    pub payments: Arc<Payments>,
    pub db: Db,
}

pub async fn build(
    config: &Config,
    clock: Arc<dyn Clock>,
    hydra: Option<Arc<dyn Hydra>>,
) -> anyhow::Result<App> {
    let base = Base::open(
        SERVICE,
        &config.common,
        &[&MIGRATIONS, &oa_ledger::MIGRATIONS],
    )
    .await?;
    let hydra = match hydra {
        Some(h) => h,
        None => {
            let identity =
                base.keys.identity.clone().context(
                    "treasury needs --identity-key-file and --identity-kid to call hydra",
                )?;
            let tokens = TokenSource::new(identity, "hydra", ["hydra:liquidity"], TOKEN_TTL)?;
            Arc::new(HttpHydra::new(&config.hydra_url, tokens)?)
        }
    };
    let payments = Arc::new(Payments::new(
        base.db.clone(),
        hydra,
        ReceiptLog::new(SERVICE, base.keys.receipt_key.clone()),
        clock,
        PaymentsConfig {
            network: config.network,
            max_payment: Msat::new(config.max_payment_msat).context("--max-payment-msat")?,
            default_budget: Msat::new(config.default_agent_budget_msat)
                .context("--default-agent-budget-msat")?,
        },
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
    let app = build(&config, Arc::new(SystemClock), None).await?;
    app.payments.recover().await?;
    run_http(SERVICE, config.common.listen, app.http, app.db).await
}
