//! lightning-ops: operators' declarative channel, fee and gateway policy. In this version the
//! service runs with its standard routes and receipt log; its `/v1/ops/...` surface answers
//! `501 NOT_SUPPORTED` until it is built.

use axum::Router;
use oa_service::{Base, CommonArgs, Route, base::run_http};
use oa_store::MigrationSet;

pub const SERVICE: &str = "lightning-ops";

/// lightning-ops owns no tables of its own yet (the store's core tables hold its receipt log).
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: SERVICE,
    migrations: &[],
};

pub const ROUTES: [Route; 5] = [
    Route::not_supported(
        "POST",
        "/v1/ops/plan",
        "Diff observed channel and gateway state against the policy",
    ),
    Route::not_supported(
        "POST",
        "/v1/ops/apply",
        "Apply a reviewed plan through the wallet-executor",
    ),
    Route::not_supported("GET", "/v1/ops/channels", "Channels with health flags"),
    Route::not_supported("GET", "/v1/ops/report", "Forwarding P&L per channel"),
    Route::not_supported(
        "GET",
        "/v1/ops/aperture/config",
        "Compiled Aperture (L402) configuration",
    ),
];

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "lightning-ops",
    about = "lightning-ops: channel, fee and L402 gateway policy, reconcile, forwarding P&L"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn build(config: &Config) -> anyhow::Result<(Router, oa_store::Db)> {
    let base = Base::open(SERVICE, &config.common, &[&MIGRATIONS]).await?;
    Ok((base.router(Router::new(), &ROUTES, None), base.db))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    oa_service::init_tracing(config.common.log_json);
    let (router, db) = build(&config).await?;
    run_http(SERVICE, config.common.listen, router, db).await
}
