//! lightning-ops: operators' declarative channel, fee and gateway policy.
//!
//! In this version: the policy file (`--policy-file`, TOML, see `policy.example.toml`) is parsed
//! and validated at start (an invalid policy refuses to start, listing every problem), and its
//! paywalled routes are compiled into Aperture's YAML configuration with a config hash
//! (`GET /v1/ops/aperture/config`). Plan/apply, forwarding P&L and channel health answer
//! `501 NOT_SUPPORTED` until they are built.

pub mod aperture;
pub mod executor;
pub mod plan;
pub mod policy;

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::{FromRef, State},
    routing::{get, post},
};
use oa_auth::Verifier;
use oa_proto::ops;
use oa_service::{ApiError, Base, CommonArgs, ProtoJson, Route, Scoped, base::run_http};

use crate::executor::{Channels, GrpcChannels};
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
    Route::built(
        "POST",
        "/v1/ops/plan",
        "What would change to bring the node's channels to the policy, and why (changes nothing)",
        Some("openagents.ops.v1.PlanRequest"),
        Some("openagents.ops.v1.PlanResponse"),
        Some("ops:read"),
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
    /// gRPC URL of the wallet-executor's custody channel (needed to plan).
    #[arg(long, env = "OA_EXECUTOR_URL")]
    pub executor_url: Option<String>,
}

#[derive(Clone)]
struct OpsState {
    policy: Option<Arc<policy::Policy>>,
    aperture: Option<Arc<aperture::Compiled>>,
    channels: Option<Arc<dyn Channels>>,
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
    build_with(config, None).await
}

/// Like [`build`], with `channels` replacing the custody-channel client (tests use a fake).
pub async fn build_with(
    config: &Config,
    channels: Option<Arc<dyn Channels>>,
) -> anyhow::Result<(Router, oa_store::Db)> {
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
                .context("planning needs --identity-key-file and --identity-kid")?;
            Some(Arc::new(GrpcChannels::new(url, identity)?) as Arc<dyn Channels>)
        }
        (None, None) => None,
    };
    let api = Router::new()
        .route("/v1/ops/aperture/config", get(aperture_config))
        .route("/v1/ops/plan", post(plan_route))
        .with_state(OpsState {
            policy,
            aperture,
            channels,
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

async fn plan_route(
    State(s): State<OpsState>,
    _auth: Scoped<OpsRead>,
    ProtoJson(_req): ProtoJson<ops::PlanRequest>,
) -> Result<Json<ops::PlanResponse>, ApiError> {
    let not_configured = |what: &str| {
        ApiError::new(
            http::StatusCode::NOT_FOUND,
            "NOT_CONFIGURED",
            format!("planning needs {what}"),
        )
    };
    let policy = s.policy.ok_or_else(|| not_configured("a --policy-file"))?;
    let channels = s
        .channels
        .ok_or_else(|| not_configured("an --executor-url"))?;
    let observed = channels.list().await?;
    let actions = plan::plan(&policy, &observed)
        .iter()
        .map(|a| {
            let (action, channel_id) = match a {
                plan::Action::SetPolicy { channel_id, .. } => ("set_policy", channel_id.clone()),
                plan::Action::Rebalance { channel_id, .. } => ("rebalance", channel_id.clone()),
                plan::Action::Open { .. } => ("open", String::new()),
                plan::Action::Close { channel_id, .. } => ("close", channel_id.clone()),
                plan::Action::Flag { channel_id, .. } => ("flag", channel_id.clone()),
            };
            ops::PlanAction {
                action: action.into(),
                channel_id,
                description: a.to_string(),
            }
        })
        .collect();
    Ok(Json(ops::PlanResponse { actions }))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    oa_service::init_tracing(config.common.log_json);
    let (router, db) = build(&config).await?;
    run_http(SERVICE, config.common.listen, router, db).await
}
