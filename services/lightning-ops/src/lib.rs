//! lightning-ops: operators' declarative channel, fee and gateway policy, executed through the
//! wallet-executor (it never holds node credentials), with receipts and the numbers that show
//! whether each channel earns its keep.
//!
//! - The policy file (`--policy-file`, TOML, see `policy.example.toml`) is parsed and validated
//!   at start; an invalid policy refuses to start, listing every problem (`policy.rs`).
//! - Aperture: the policy's paywalled routes compiled into Aperture's YAML with a config hash
//!   (`aperture.rs`, `GET /v1/ops/aperture/config`).
//! - Plan: the diff between the observed channels and the policy, and why (`plan.rs`,
//!   `POST /v1/ops/plan`, changes nothing).
//! - Apply: executes the plan through the custody channel, idempotently, with a receipt per
//!   executed action linking the executor's (`apply.rs`, `POST /v1/ops/apply`, scope
//!   `ops:apply`): policy changes (inbound fees included) with a per-channel rate limit (changes
//!   inside the window are deferred, not dropped); rebalances within the policy's daily fee
//!   budget, their cost charged to the channel that received the liquidity (`rebalance.rs`);
//!   channel opens and closes from the policy's intents (`lifecycle.rs`).
//! - Reconcile loop (`--reconcile-interval-secs`, `--dry-run`) and forwarding ingestion
//!   (`--ingest-interval-secs`) in the background (`reconcile.rs`, `forwards.rs`).
//! - Report: forwarding volume, fee revenue, rebalance cost, uptime, balance ratio and P&L per
//!   channel (`report.rs`, `GET /v1/ops/report`); health flags (`GET /v1/ops/channels`).
//!
//! State lives in lightning-ops's own tables (`migrations/`, SQL in `store.rs`); the routes are in
//! `http.rs`, the domain object in `ops.rs`, errors and their HTTP mapping in `error.rs`.

pub mod aperture;
pub mod apply;
pub mod error;
pub mod executor;
pub mod forwards;
mod http;
pub mod lifecycle;
pub mod ops;
pub mod plan;
pub mod policy;
pub mod rebalance;
pub mod reconcile;
pub mod report;
pub mod store;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use oa_service::{Base, Clock, CommonArgs, Route, SystemClock, base::count_by};
use oa_store::{Db, MigrationSet, receipt_log::ReceiptLog};

use crate::{
    executor::{Channels, GrpcChannels},
    ops::{Ops, Settings},
    reconcile::Background,
};

pub const SERVICE: &str = "lightning-ops";

pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: SERVICE,
    migrations: &[
        (
            1,
            "actions, deferrals, forwards, rebalances, observations",
            include_str!("../migrations/0001_ops.sql"),
        ),
        (
            2,
            "rebalance, open and close actions",
            include_str!("../migrations/0002_liquidity_actions.sql"),
        ),
    ],
};

pub const ROUTES: [Route; 5] = [
    Route::built(
        "GET",
        "/v1/ops/aperture/config",
        "Aperture (L402) configuration compiled from the policy's paywalled routes, with its hash",
        None,
        Some("openagents.ops.v1.ApertureConfigResponse"),
        Some("ops:read"),
    ),
    Route::built(
        "POST",
        "/v1/ops/plan",
        "What would change to bring the node's channels to the policy, and why (changes nothing)",
        Some("openagents.ops.v1.PlanRequest"),
        Some("openagents.ops.v1.PlanResponse"),
        Some("ops:read"),
    ),
    Route::built(
        "POST",
        "/v1/ops/apply",
        "Execute the current plan through the wallet-executor: policy changes (rate-limited per channel: deferred, never dropped), rebalances within the daily fee budget, channel opens and closes, a receipt each; idempotent by key; dry_run changes nothing",
        Some("openagents.ops.v1.ApplyRequest"),
        Some("openagents.ops.v1.ApplyResponse"),
        Some("ops:apply"),
    ),
    Route::built(
        "GET",
        "/v1/ops/channels",
        "The node's channels with health flags (inactive, depleted_local, depleted_remote, losing_money); query from_ms, to_ms for the P&L window",
        None,
        Some("openagents.ops.v1.ChannelsResponse"),
        Some("ops:read"),
    ),
    Route::built(
        "GET",
        "/v1/ops/report",
        "Forwarding P&L per channel over [from_ms, to_ms) (query parameters, both optional): volume, fee revenue, rebalance cost, uptime, balance ratio",
        None,
        Some("openagents.ops.v1.ReportResponse"),
        Some("ops:read"),
    ),
];

/// Default shortest time between two policy changes of one channel: an hour. Every change is
/// gossiped to the whole network, nodes rate-limit (and may ignore) channels that update often,
/// and a fee change needs time to show its effect on flow before the next one is judged.
pub const DEFAULT_MIN_UPDATE_INTERVAL_SECS: u64 = 3_600;
/// Default report window: 30 days.
pub const DEFAULT_REPORT_WINDOW_SECS: u64 = 30 * 24 * 3_600;

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "lightning-ops",
    about = "lightning-ops: channel, fee and L402 gateway policy, reconcile, forwarding P&L"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The policy file (TOML); see policy.example.toml. Without one, planning, applying and the
    /// gateway configuration answer NOT_CONFIGURED.
    #[arg(long, env = "OA_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
    /// gRPC URL of the wallet-executor's custody channel (needed to plan, apply, ingest).
    #[arg(long, env = "OA_EXECUTOR_URL")]
    pub executor_url: Option<String>,
    /// Receipt key ids (hex) of the wallet-executor that lightning-ops trusts; empty accepts any
    /// key whose signature verifies (development only).
    #[arg(long, env = "OA_EXECUTOR_RECEIPT_KEYS", value_delimiter = ',')]
    pub executor_receipt_keys: Vec<String>,
    /// Shortest time between two policy changes of one channel; a change planned sooner is
    /// deferred and executed by the first apply or tick after the window.
    #[arg(long, env = "OA_MIN_UPDATE_INTERVAL_SECS", default_value_t = DEFAULT_MIN_UPDATE_INTERVAL_SECS)]
    pub min_update_interval_secs: u64,
    /// Run plan + apply every this many seconds (0: no reconcile loop; apply only on request).
    #[arg(long, env = "OA_RECONCILE_INTERVAL_SECS", default_value_t = 0)]
    pub reconcile_interval_secs: u64,
    /// The reconcile loop only plans and records what it would do; it changes nothing.
    #[arg(long, env = "OA_DRY_RUN")]
    pub dry_run: bool,
    /// Ingest the forwarding history every this many seconds (0: only on reports and ticks).
    #[arg(long, env = "OA_INGEST_INTERVAL_SECS", default_value_t = 60)]
    pub ingest_interval_secs: u64,
    /// Forwarding events asked for per page (1..=1000).
    #[arg(long, env = "OA_FORWARDS_PAGE_SIZE", default_value_t = forwards::DEFAULT_PAGE)]
    pub forwards_page_size: u32,
    /// Report window when a report names none (ending now).
    #[arg(long, env = "OA_REPORT_WINDOW_SECS", default_value_t = DEFAULT_REPORT_WINDOW_SECS)]
    pub report_window_secs: u64,
}

/// A built lightning-ops, not yet serving: its router, database and domain object (tests drive
/// the domain object directly too).
pub struct App {
    pub router: Router,
    pub db: Db,
    pub ops: Arc<Ops>,
}

/// Reads and validates a policy file; every problem is listed in the error.
pub fn load_policy(path: &std::path::Path) -> anyhow::Result<policy::Policy> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    policy::parse(&text).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "invalid policy {}:\n  {}",
            path.display(),
            list.join("\n  ")
        )
    })
}

pub async fn build(config: &Config) -> anyhow::Result<App> {
    build_with(config, Arc::new(SystemClock), None).await
}

/// Like [`build`], with the clock given and `channels` replacing the custody-channel client
/// (tests use a fake).
pub async fn build_with(
    config: &Config,
    clock: Arc<dyn Clock>,
    channels: Option<Arc<dyn Channels>>,
) -> anyhow::Result<App> {
    anyhow::ensure!(
        (1..=forwards::MAX_PAGE).contains(&config.forwards_page_size),
        "--forwards-page-size must be 1..={}",
        forwards::MAX_PAGE
    );
    anyhow::ensure!(
        config.report_window_secs > 0,
        "--report-window-secs must be positive"
    );
    let policy = config
        .policy_file
        .as_deref()
        .map(load_policy)
        .transpose()?
        .map(Arc::new);
    let aperture = match &policy {
        Some(policy) => policy
            .aperture
            .as_ref()
            .map(|a| {
                aperture::compile(a).map_err(|p| anyhow::anyhow!("invalid aperture routes: {p:?}"))
            })
            .transpose()?
            .map(Arc::new),
        None => None,
    };
    let base = Base::open(SERVICE, &config.common, &[&MIGRATIONS]).await?;
    let channels = match (channels, &config.executor_url) {
        (Some(c), _) => Some(c),
        (None, Some(url)) => {
            let identity = base
                .keys
                .identity
                .clone()
                .context("--executor-url needs --identity-key-file and --identity-kid")?;
            Some(Arc::new(GrpcChannels::new(url, identity)?) as Arc<dyn Channels>)
        }
        (None, None) => None,
    };
    anyhow::ensure!(
        config.reconcile_interval_secs == 0 || (policy.is_some() && channels.is_some()),
        "--reconcile-interval-secs needs a --policy-file and an --executor-url"
    );
    let ops = Arc::new(Ops::new(
        base.db.clone(),
        policy,
        channels,
        clock,
        ReceiptLog::new(SERVICE, base.keys.receipt_key.clone()),
        Settings {
            min_update_interval: Duration::from_secs(config.min_update_interval_secs),
            report_window: Duration::from_secs(config.report_window_secs),
            forwards_page: config.forwards_page_size,
            executor_receipt_keys: config.executor_receipt_keys.clone(),
        },
    ));
    let api = http::router(http::HttpState {
        ops: ops.clone(),
        aperture,
        verifier: base.keys.verifier.clone(),
    });
    let router = base.router(
        api,
        &ROUTES,
        Some(count_by(&base.db, "ops_actions", "status")),
    );
    Ok(App {
        router,
        db: base.db,
        ops,
    })
}

/// Starts the background loops `config` switches on.
pub fn background(config: &Config, ops: Arc<Ops>) -> Background {
    Background::spawn(
        ops,
        Some(Duration::from_secs(config.reconcile_interval_secs)),
        config.dry_run,
        Some(Duration::from_secs(config.ingest_interval_secs)),
    )
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    oa_service::init_tracing(config.common.log_json);
    config.common.pin_cpus()?;
    let app = build(&config).await?;
    let loops = background(&config, app.ops.clone());
    let listener = tokio::net::TcpListener::bind(config.common.listen)
        .await
        .context("bind HTTP")?;
    tracing::info!(http = %config.common.listen, "{SERVICE} listening");
    let served = oa_service::serve(listener, app.router, oa_service::shutdown_signal()).await;
    // The loops stop (a tick in progress finishes) before the database closes.
    loops.stop().await;
    app.db.close().await;
    Ok(served?)
}
