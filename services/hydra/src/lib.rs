//! Hydra: the capital layer. In this version: liquidity (quote and pay BOLT11 invoices through
//! the wallet-executor, exactly once per quote, with a receipt that links the executor's).
//! Credit envelopes, routing score, FX, deposits/withdrawals and breakers answer `NOT_SUPPORTED`.

pub mod error;
pub mod executor;
pub mod fx;
pub mod http;
pub mod liquidity;
pub mod scoring;
pub mod store;
pub mod underwriting;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use oa_invoice::Network;
use oa_money::Msat;
use oa_service::{
    Base, Clock, CommonArgs, SystemClock,
    base::{count_by, run_http},
};
use oa_store::{Db, MigrationSet, receipt_log::ReceiptLog};

use crate::{
    executor::{Executor, GrpcExecutor},
    liquidity::{Liquidity, LiquidityConfig, MAX_QUOTE_TTL},
};

pub const SERVICE: &str = "hydra";

pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: SERVICE,
    migrations: &[(1, "quotes", include_str!("../migrations/0001_quotes.sql"))],
};

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "hydra",
    about = "Hydra: liquidity, credit envelopes, routing score, FX"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// gRPC URL of the wallet-executor's custody channel.
    #[arg(long, env = "OA_EXECUTOR_URL")]
    pub executor_url: String,
    /// Receipt key ids (hex) of the wallet-executor that Hydra trusts; empty accepts any key
    /// whose signature verifies (development only).
    #[arg(long, env = "OA_EXECUTOR_RECEIPT_KEYS", value_delimiter = ',')]
    pub executor_receipt_keys: Vec<String>,
    #[arg(long, env = "OA_NETWORK", default_value = "regtest")]
    pub network: Network,
    /// How long a quote stays payable (at most 600 s).
    #[arg(long, env = "OA_QUOTE_TTL_SECS", default_value_t = 60)]
    pub quote_ttl_secs: u64,
    /// Largest invoice amount Hydra quotes.
    #[arg(long, env = "OA_MAX_INVOICE_MSAT", default_value_t = 1_000_000_000)]
    pub max_invoice_msat: u64,
    /// Smallest fee limit of a quote (before the caller's max fee caps it).
    #[arg(long, env = "OA_FEE_FLOOR_MSAT", default_value_t = 10_000)]
    pub fee_floor_msat: u64,
    /// Proportional fee limit of a quote, in parts per million of the amount.
    #[arg(long, env = "OA_FEE_PPM", default_value_t = 5_000)]
    pub fee_ppm: u32,
}

pub struct App {
    pub http: Router,
    pub liquidity: Arc<Liquidity>,
    pub db: Db,
}

/// Builds Hydra; `executor` replaces the gRPC client (tests use a fake).
pub async fn build(
    config: &Config,
    clock: Arc<dyn Clock>,
    executor: Option<Arc<dyn Executor>>,
) -> anyhow::Result<App> {
    let quote_ttl = Duration::from_secs(config.quote_ttl_secs);
    anyhow::ensure!(
        !quote_ttl.is_zero() && quote_ttl <= MAX_QUOTE_TTL,
        "--quote-ttl-secs must be 1..=600"
    );
    let base = Base::open(SERVICE, &config.common, &[&MIGRATIONS]).await?;
    let executor = match executor {
        Some(e) => e,
        None => {
            let identity = base.keys.identity.clone().context(
                "hydra needs --identity-key-file and --identity-kid to call the executor",
            )?;
            Arc::new(GrpcExecutor::new(&config.executor_url, identity)?)
        }
    };
    let liquidity = Arc::new(Liquidity::new(
        base.db.clone(),
        executor,
        ReceiptLog::new(SERVICE, base.keys.receipt_key.clone()),
        clock,
        LiquidityConfig {
            network: config.network,
            quote_ttl,
            max_invoice: Msat::new(config.max_invoice_msat).context("--max-invoice-msat")?,
            fee_floor: Msat::new(config.fee_floor_msat).context("--fee-floor-msat")?,
            fee_ppm: config.fee_ppm,
        },
        config.executor_receipt_keys.clone(),
    ));
    let api = http::router(http::HydraState {
        liquidity: liquidity.clone(),
        verifier: base.keys.verifier.clone(),
    });
    let http = base.router(
        api,
        &http::ROUTES,
        Some(count_by(&base.db, "hydra_quotes", "state")),
    );
    Ok(App {
        http,
        liquidity,
        db: base.db,
    })
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    oa_service::init_tracing(config.common.log_json);
    let app = build(&config, Arc::new(SystemClock), None).await?;
    app.liquidity.recover().await?;
    run_http(SERVICE, config.common.listen, app.http, app.db).await
}
