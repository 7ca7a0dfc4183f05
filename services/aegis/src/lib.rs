//! Aegis: verification and underwriting. In this version the service runs with its standard
//! routes and receipt log; every route of its authority surface (seed 004) answers
//! `501 NOT_SUPPORTED` until it is built.

use axum::Router;
use oa_service::{Base, CommonArgs, Route, base::run_http};
use oa_store::MigrationSet;

pub const SERVICE: &str = "aegis";

/// Aegis owns no tables of its own yet (the store's core tables hold its receipt log).
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: SERVICE,
    migrations: &[],
};

pub const ROUTES: [Route; 17] = [
    Route::not_supported(
        "POST",
        "/v1/aegis/classify",
        "Classify a work unit's verifiability",
    ),
    Route::not_supported(
        "POST",
        "/v1/aegis/verify",
        "Run the verification plan for a work unit",
    ),
    Route::not_supported(
        "GET",
        "/v1/aegis/verification/{id}",
        "A verification and its receipt",
    ),
    Route::not_supported("POST", "/v1/aegis/risk_budget/set", "Set a risk budget"),
    Route::not_supported("GET", "/v1/aegis/risk_budget/status", "Risk budget state"),
    Route::not_supported("POST", "/v1/aegis/warranty/quote", "Price a warranty"),
    Route::not_supported("POST", "/v1/aegis/warranty/issue", "Issue a warranty"),
    Route::not_supported("POST", "/v1/aegis/bond/reserve", "Reserve a provider bond"),
    Route::not_supported("POST", "/v1/aegis/bond/release", "Release a provider bond"),
    Route::not_supported("POST", "/v1/aegis/claim/open", "Open a claim"),
    Route::not_supported("POST", "/v1/aegis/claim/resolve", "Resolve a claim"),
    Route::not_supported("POST", "/v1/aegis/dispute/open", "Open a dispute"),
    Route::not_supported("POST", "/v1/aegis/dispute/arbitrate", "Arbitrate a dispute"),
    Route::not_supported(
        "POST",
        "/v1/aegis/cases/create",
        "Register a ground-truth case",
    ),
    Route::not_supported("GET", "/v1/aegis/cases", "List ground-truth cases"),
    Route::not_supported("POST", "/v1/aegis/sim/run", "Run verifiers against cases"),
    Route::not_supported("GET", "/v1/aegis/sim/scoreboard", "Verifier scoreboard"),
];

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "aegis",
    about = "Aegis: verification, risk budgets, warranties, bonds, claims, disputes"
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
