//! lightning-ops: operators' declarative channel, fee and gateway policy.
//!
//! In this version: the policy file (`--policy-file`, TOML, see `policy.example.toml`) is parsed
//! and validated at start (an invalid policy refuses to start, listing every problem), and its
//! paywalled routes are compiled into Aperture's YAML configuration with a config hash
//! (`GET /v1/ops/aperture/config`). Plan/apply, forwarding P&L and channel health answer
//! `501 NOT_SUPPORTED` until they are built.

pub mod aperture;
pub mod plan;
pub mod policy;

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::{FromRef, State},
    routing::get,
};
use oa_auth::Verifier;
use oa_proto::ops;
use oa_service::{ApiError, Base, CommonArgs, Route, Scoped, base::run_http};
use oa_store::MigrationSet;

pub const SERVICE: &str = "lightning-ops";

/// lightning-ops owns no tables of its own yet (the store's core tables hold its receipt log).
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: SERVICE,
    migrations: &[],
};

oa_service::scope!(OpsRead, "ops:read");

pub const ROUTES: [Route; 5] = [
    Route::built(
        "GET",
        "/v1/ops/aperture/config",
        "Aperture (L402) configuration compiled from the policy's paywalled routes, with its hash",
        None,
        Some("openagents.ops.v1.ApertureConfigResponse"),
        Some("ops:read"),
    ),
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
];

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "lightning-ops",
    about = "lightning-ops: channel, fee and L402 gateway policy, reconcile, forwarding P&L"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The policy file (TOML); see policy.example.toml. Without one, the gateway configuration
    /// answers NOT_CONFIGURED.
    #[arg(long, env = "OA_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
}

#[derive(Clone)]
struct OpsState {
    aperture: Option<Arc<aperture::Compiled>>,
    verifier: Arc<Verifier>,
}

impl FromRef<OpsState> for Arc<Verifier> {
    fn from_ref(s: &OpsState) -> Self {
        s.verifier.clone()
    }
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

pub async fn build(config: &Config) -> anyhow::Result<(Router, oa_store::Db)> {
    let aperture = match &config.policy_file {
        Some(path) => {
            let policy = load_policy(path)?;
            policy
                .aperture
                .as_ref()
                .map(|a| {
                    aperture::compile(a)
                        .map_err(|p| anyhow::anyhow!("invalid aperture routes: {p:?}"))
                })
                .transpose()?
                .map(Arc::new)
        }
        None => None,
    };
    let base = Base::open(SERVICE, &config.common, &[&MIGRATIONS]).await?;
    let api = Router::new()
        .route("/v1/ops/aperture/config", get(aperture_config))
        .with_state(OpsState {
            aperture,
            verifier: base.keys.verifier.clone(),
        });
    Ok((base.router(api, &ROUTES, None), base.db))
}

async fn aperture_config(
    State(s): State<OpsState>,
    _auth: Scoped<OpsRead>,
) -> Result<Json<ops::ApertureConfigResponse>, ApiError> {
    let compiled = s.aperture.ok_or_else(|| {
        ApiError::new(
            http::StatusCode::NOT_FOUND,
            "NOT_CONFIGURED",
            "the policy has no [aperture] section (or no --policy-file was given)",
        )
    })?;
    Ok(Json(ops::ApertureConfigResponse {
        config_yaml: compiled.config_yaml.clone(),
        config_hash: compiled.config_hash.clone(),
    }))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    oa_service::init_tracing(config.common.log_json);
    let (router, db) = build(&config).await?;
    run_http(SERVICE, config.common.listen, router, db).await
}
