//! Hydra: the capital layer. In this version: liquidity (quote and pay BOLT11 invoices from the
//! pool through the wallet-executor, exactly once per quote, with a receipt that links the
//! executor's; agents' deposits by invoice, credited from the executor's settlement stream, and
//! withdrawals to a BOLT11 invoice under a throttle that delays or halts them when liabilities
//! press on the node's liquidity), credit envelopes (intent, offer, envelope, settle after an
//! Aegis verification; the pool and the reservations in the ledger), the routing score (learning
//! from its own payments), FX (quotes and settlement in the ledger), breakers (payment failure and
//! envelope loss rates) and internal observability. On-chain deposits and withdrawals answer
//! `NOT_SUPPORTED` (see `deposits.rs` and `withdrawals.rs` for why).

pub mod aegis;
pub mod book;
pub mod credit;
pub mod deposits;
pub mod error;
pub mod executor;
pub mod fx;
pub mod fx_desk;
pub mod http;
pub mod liquidity;
pub mod observability;
pub mod risk;
pub mod routing;
pub mod scoring;
pub mod store;
pub mod throttle;
pub mod underwriting;
pub mod validate;
pub mod withdrawals;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use oa_auth::TokenSource;
use oa_invoice::Network;
use oa_money::Msat;
use oa_service::{Base, Clock, CommonArgs, SystemClock, base::count_by};
use oa_store::{Db, MigrationSet, receipt_log::ReceiptLog};

use crate::{
    aegis::{HttpAegis, Verifications},
    credit::{Credit, CreditConfig},
    deposits::Deposits,
    executor::{Executor, GrpcExecutor},
    liquidity::{Liquidity, LiquidityConfig, MAX_QUOTE_TTL},
    routing::Routing,
    withdrawals::Withdrawals,
};

pub const SERVICE: &str = "hydra";

pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: SERVICE,
    migrations: &[
        (1, "quotes", include_str!("../migrations/0001_quotes.sql")),
        (
            2,
            "credit envelopes",
            include_str!("../migrations/0002_credit_envelopes.sql"),
        ),
        (3, "routing", include_str!("../migrations/0003_routing.sql")),
        (4, "fx", include_str!("../migrations/0004_fx.sql")),
        (
            5,
            "deposits and withdrawals",
            include_str!("../migrations/0005_deposits_withdrawals.sql"),
        ),
        (
            6,
            "quote idempotency keys",
            include_str!("../migrations/0006_quote_keys.sql"),
        ),
    ],
};

/// Lifetime of the tokens Hydra mints for Aegis.
const AEGIS_TOKEN_TTL: Duration = Duration::from_secs(300);

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
    /// Largest invoice amount Hydra quotes, issues for a deposit or pays for a withdrawal.
    #[arg(long, env = "OA_MAX_INVOICE_MSAT", default_value_t = 1_000_000_000)]
    pub max_invoice_msat: u64,
    /// Smallest fee limit of a quote (before the caller's max fee caps it).
    #[arg(long, env = "OA_FEE_FLOOR_MSAT", default_value_t = 10_000)]
    pub fee_floor_msat: u64,
    /// Proportional fee limit of a quote, in parts per million of the amount.
    #[arg(long, env = "OA_FEE_PPM", default_value_t = 5_000)]
    pub fee_ppm: u32,
    /// Base URL of Aegis's HTTP API, asked for verifications before a credit settlement. Without
    /// it, settlements answer AEGIS_NOT_CONFIGURED.
    #[arg(long, env = "OA_AEGIS_URL")]
    pub aegis_url: Option<String>,
    /// Receipt key ids (hex) of Aegis that Hydra trusts; empty accepts any key whose signature
    /// verifies (development only).
    #[arg(long, env = "OA_AEGIS_RECEIPT_KEYS", value_delimiter = ',')]
    pub aegis_receipt_keys: Vec<String>,
    /// Size of the pool, Hydra's own capital: envelope caps and liquidity pays draw from it (agents'
    /// deposits are not pool capital). The difference is moved from the ledger's `funding`
    /// account at start.
    #[arg(long, env = "OA_CREDIT_POOL_MSAT", default_value_t = 10_000_000_000)]
    pub credit_pool_msat: u64,
    /// How long a credit offer can be accepted.
    #[arg(long, env = "OA_OFFER_TTL_SECS", default_value_t = 300)]
    pub offer_ttl_secs: u64,
    /// Latest expiry an intent may ask for, from now.
    #[arg(long, env = "OA_MAX_ENVELOPE_TTL_SECS", default_value_t = 7 * 86_400)]
    pub max_envelope_ttl_secs: u64,
    /// Most open (issued or settling) envelopes per agent.
    #[arg(long, env = "OA_MAX_OPEN_ENVELOPES", default_value_t = 8)]
    pub max_open_envelopes: u64,
    /// How fast what routing learned from payments fades (halves) back to the channels'
    /// capacities.
    #[arg(long, env = "OA_ROUTING_HALF_LIFE_SECS", default_value_t = 6 * 3600)]
    pub routing_half_life_secs: u64,
    /// Reference FX rates, fiat per BTC: `USD=65000.12,EUR=60000`. A currency without a rate is
    /// not quoted.
    #[arg(long, env = "OA_FX_RATES", value_delimiter = ',')]
    pub fx_rates: Vec<String>,
    /// The FX spread, moved against the client on each side of the mid (at most 1 000).
    #[arg(long, env = "OA_FX_SPREAD_BPS", default_value_t = 50)]
    pub fx_spread_bps: u32,
    /// How long an FX quote can be settled (at most 600 s).
    #[arg(long, env = "OA_FX_QUOTE_TTL_SECS", default_value_t = 30)]
    pub fx_quote_ttl_secs: u64,
    /// The breakers' sliding window.
    #[arg(long, env = "OA_BREAKER_WINDOW_SECS", default_value_t = 3_600)]
    pub breaker_window_secs: u64,
    /// Fewest outcomes in the window before a breaker may open.
    #[arg(long, env = "OA_BREAKER_MIN_SAMPLES", default_value_t = 20)]
    pub breaker_min_samples: u64,
    /// Payment failure rate (bps of payments in the window) at which new envelopes and large
    /// settlements halt.
    #[arg(long, env = "OA_BREAKER_PAYMENT_FAILURE_BPS", default_value_t = 2_500)]
    pub breaker_payment_failure_bps: u32,
    /// Envelope loss rate (bps of envelopes ended in the window) at which new envelopes halt.
    #[arg(long, env = "OA_BREAKER_LOSS_BPS", default_value_t = 2_000)]
    pub breaker_loss_bps: u32,
    /// Settlement payments of at least this amount are "large" (halted by the payment breaker).
    #[arg(
        long,
        env = "OA_BREAKER_LARGE_SETTLEMENT_MSAT",
        default_value_t = 100_000_000
    )]
    pub breaker_large_settlement_msat: u64,
    /// How often the sweepers look for expired envelopes and due queued withdrawals.
    #[arg(long, env = "OA_SWEEP_INTERVAL_MS", default_value_t = 1_000)]
    pub sweep_interval_ms: u64,
    /// Withdrawal throttle: at or above this ratio of liabilities (agents' balances + open
    /// envelope reservations) to liquidity (channels' local balance + confirmed on-chain), in
    /// basis points, new withdrawals are queued for --withdraw-delay-secs.
    #[arg(long, env = "OA_WITHDRAW_DELAY_BPS", default_value_t = 8_000)]
    pub withdraw_delay_bps: u32,
    /// Withdrawal throttle: at or above this ratio (bps), withdrawals are halted (refused, and
    /// queued ones wait). At least --withdraw-delay-bps.
    #[arg(long, env = "OA_WITHDRAW_HALT_BPS", default_value_t = 9_500)]
    pub withdraw_halt_bps: u32,
    /// How long a delayed withdrawal waits (and a queued one is pushed back while halted).
    #[arg(long, env = "OA_WITHDRAW_DELAY_SECS", default_value_t = 600)]
    pub withdraw_delay_secs: u64,
}

/// Replacements for Hydra's external dependencies (tests use fakes); `None` builds the real
/// client from the configuration.
#[derive(Default)]
pub struct Deps {
    pub executor: Option<Arc<dyn Executor>>,
    pub verifications: Option<Arc<dyn Verifications>>,
}

pub struct App {
    pub http: Router,
    pub liquidity: Arc<Liquidity>,
    pub credit: Arc<Credit>,
    pub deposits: Arc<Deposits>,
    pub withdrawals: Arc<Withdrawals>,
    pub db: Db,
    /// Set by [`App::stop`]: ends the settlement follower and the withdrawal queue.
    stop: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Re-drives what a previous run left in flight: quotes and envelope settlements being paid,
    /// withdrawals in `paying` (never re-sent: the executor answers each key with its payment).
    pub async fn recover(&self) -> anyhow::Result<()> {
        self.liquidity.recover().await?;
        self.credit.recover().await?;
        self.withdrawals.recover().await?;
        Ok(())
    }

    /// Stops the settlement follower and the withdrawal queue (the envelope sweeper stops when
    /// the database closes).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// Builds Hydra (and starts its envelope expiry sweeper); `deps` replaces external clients.
pub async fn build(config: &Config, clock: Arc<dyn Clock>, deps: Deps) -> anyhow::Result<App> {
    let quote_ttl = Duration::from_secs(config.quote_ttl_secs);
    anyhow::ensure!(
        !quote_ttl.is_zero() && quote_ttl <= MAX_QUOTE_TTL,
        "--quote-ttl-secs must be 1..=600"
    );
    anyhow::ensure!(
        config.offer_ttl_secs > 0,
        "--offer-ttl-secs must be positive"
    );
    anyhow::ensure!(
        config.max_envelope_ttl_secs >= credit::MIN_ENVELOPE_TTL.as_secs(),
        "--max-envelope-ttl-secs must be at least 60"
    );
    anyhow::ensure!(
        config.max_open_envelopes > 0,
        "--max-open-envelopes must be positive"
    );
    let pool_size = Msat::new(config.credit_pool_msat).context("--credit-pool-msat")?;
    let fx_rates = fx_desk::parse_rates(&config.fx_rates)?;
    anyhow::ensure!(
        config.breaker_window_secs > 0,
        "--breaker-window-secs must be positive"
    );
    anyhow::ensure!(
        config.breaker_payment_failure_bps <= 10_000 && config.breaker_loss_bps <= 10_000,
        "breaker thresholds are basis points, at most 10000"
    );
    let risk_config = risk::RiskConfig {
        window: Duration::from_secs(config.breaker_window_secs),
        min_samples: config.breaker_min_samples.max(1),
        payment_failure_bps: config.breaker_payment_failure_bps,
        loss_bps: config.breaker_loss_bps,
        large_settlement: Msat::new(config.breaker_large_settlement_msat)
            .context("--breaker-large-settlement-msat")?,
    };
    anyhow::ensure!(
        config.fx_spread_bps <= fx::MAX_SPREAD_BPS,
        "--fx-spread-bps must be at most {}",
        fx::MAX_SPREAD_BPS
    );
    anyhow::ensure!(
        config.withdraw_delay_bps <= config.withdraw_halt_bps
            && config.withdraw_halt_bps <= throttle::MAX_THRESHOLD_BPS,
        "--withdraw-delay-bps must be at most --withdraw-halt-bps, at most {}",
        throttle::MAX_THRESHOLD_BPS
    );
    let throttle_config = throttle::ThrottleConfig {
        delay_bps: config.withdraw_delay_bps,
        halt_bps: config.withdraw_halt_bps,
        delay: Duration::from_secs(config.withdraw_delay_secs),
    };
    let fx_quote_ttl = Duration::from_secs(config.fx_quote_ttl_secs);
    anyhow::ensure!(
        !fx_quote_ttl.is_zero() && fx_quote_ttl <= fx_desk::MAX_QUOTE_TTL,
        "--fx-quote-ttl-secs must be 1..=600"
    );
    let base = Base::open(
        SERVICE,
        &config.common,
        &[&MIGRATIONS, &oa_ledger::MIGRATIONS],
    )
    .await?;
    {
        let mut tx = base.db.begin().await?;
        book::init(&mut tx, pool_size, clock.now_ms()).await?;
        tx.commit().await?;
    }
    let verifications: Option<Arc<dyn Verifications>> =
        match (deps.verifications, &config.aegis_url) {
            (Some(v), _) => Some(v),
            (None, Some(url)) => {
                let identity =
                    base.keys.identity.clone().context(
                        "hydra needs --identity-key-file and --identity-kid to call aegis",
                    )?;
                let tokens = TokenSource::new(identity, "aegis", ["aegis:read"], AEGIS_TOKEN_TTL)?;
                Some(Arc::new(HttpAegis::new(url, tokens)?))
            }
            (None, None) => None,
        };
    let executor = match deps.executor {
        Some(e) => e,
        None => {
            let identity = base.keys.identity.clone().context(
                "hydra needs --identity-key-file and --identity-kid to call the executor",
            )?;
            Arc::new(GrpcExecutor::new(&config.executor_url, identity)?)
        }
    };
    let risk = Arc::new(risk::Risk::new(base.db.clone(), clock.clone(), risk_config));
    let routing = Arc::new(Routing {
        db: base.db.clone(),
        log: ReceiptLog::new(SERVICE, base.keys.receipt_key.clone()),
        clock: clock.clone(),
        half_life_ms: config.routing_half_life_secs.saturating_mul(1_000).max(1),
    });
    let max_invoice = Msat::new(config.max_invoice_msat).context("--max-invoice-msat")?;
    let liquidity = Arc::new(Liquidity::new(
        base.db.clone(),
        executor.clone(),
        ReceiptLog::new(SERVICE, base.keys.receipt_key.clone()),
        clock.clone(),
        LiquidityConfig {
            network: config.network,
            quote_ttl,
            max_invoice,
            fee_floor: Msat::new(config.fee_floor_msat).context("--fee-floor-msat")?,
            fee_ppm: config.fee_ppm,
        },
        config.executor_receipt_keys.clone(),
        routing.clone(),
    ));
    let (stop, _) = tokio::sync::watch::channel(false);
    let deposits = Arc::new(Deposits::new(
        base.db.clone(),
        executor.clone(),
        ReceiptLog::new(SERVICE, base.keys.receipt_key.clone()),
        clock.clone(),
        deposits::DepositsConfig {
            network: config.network,
            max_amount: max_invoice,
            executor_keys: config.executor_receipt_keys.clone(),
        },
    ));
    deposits.spawn_follower(stop.subscribe());
    let withdrawals = Arc::new(Withdrawals::new(
        base.db.clone(),
        executor.clone(),
        ReceiptLog::new(SERVICE, base.keys.receipt_key.clone()),
        clock.clone(),
        withdrawals::WithdrawalsConfig {
            network: config.network,
            max_amount: max_invoice,
            throttle: throttle_config,
            queue_interval: Duration::from_millis(config.sweep_interval_ms),
            executor_keys: config.executor_receipt_keys.clone(),
        },
        liquidity.clone(),
    ));
    withdrawals.spawn_queue(stop.subscribe());
    let credit = Arc::new(Credit::new(
        base.db.clone(),
        executor,
        verifications,
        ReceiptLog::new(SERVICE, base.keys.receipt_key.clone()),
        clock.clone(),
        CreditConfig {
            network: config.network,
            terms: underwriting::Terms::default(),
            offer_ttl: Duration::from_secs(config.offer_ttl_secs),
            max_envelope_ttl: Duration::from_secs(config.max_envelope_ttl_secs),
            max_open_envelopes: config.max_open_envelopes,
            sweep_interval: Duration::from_millis(config.sweep_interval_ms),
            aegis_keys: config.aegis_receipt_keys.clone(),
        },
        liquidity.clone(),
        risk.clone(),
    ));
    credit.spawn_sweeper();
    let fx_desk = Arc::new(fx_desk::FxDesk {
        db: base.db.clone(),
        log: ReceiptLog::new(SERVICE, base.keys.receipt_key.clone()),
        clock: clock.clone(),
        rates: fx_rates,
        spread_bps: config.fx_spread_bps,
        quote_ttl: fx_quote_ttl,
    });
    let observability = Arc::new(observability::Observability {
        db: base.db.clone(),
        risk: risk.clone(),
        withdrawals: withdrawals.clone(),
        deposits: deposits.clone(),
    });
    let api = http::router(http::HydraState {
        liquidity: liquidity.clone(),
        credit: credit.clone(),
        deposits: deposits.clone(),
        withdrawals: withdrawals.clone(),
        routing,
        fx: fx_desk,
        risk,
        observability,
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
        Some(count_by(&base.db, "hydra_quotes", "state")),
    );
    Ok(App {
        http,
        liquidity,
        credit,
        deposits,
        withdrawals,
        db: base.db,
        stop,
    })
}

/// Serves a built Hydra on `listener` until `shutdown` resolves, then stops its background work
/// and closes its database. Accepted connections get `TCP_NODELAY`: the API's responses are small,
/// and Nagle's algorithm with delayed ACKs would hold each one back by up to ~40 ms.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let result = axum::serve(listener, app.http.clone())
        .with_graceful_shutdown(shutdown)
        .await;
    app.stop();
    app.db.close().await;
    result.context("serving HTTP")
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    oa_service::init_tracing(config.common.log_json);
    config.common.pin_cpus()?;
    let app = build(&config, Arc::new(SystemClock), Deps::default()).await?;
    app.recover().await?;
    let liquidity = app.liquidity.clone();
    oa_service::tracker::spawn_resweep(
        "quotes being paid",
        move |before| {
            let liquidity = liquidity.clone();
            async move { liquidity.recover_before(before).await }
        },
        app.liquidity.clock.clone(),
    );
    let listener = tokio::net::TcpListener::bind(config.common.listen)
        .await
        .context("bind HTTP")?;
    tracing::info!(http = %config.common.listen, "{SERVICE} listening");
    serve(app, listener, oa_service::shutdown_signal()).await
}
