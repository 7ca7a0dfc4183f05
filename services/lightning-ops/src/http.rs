//! The `/v1/ops/...` routes. Handlers check the scope (before the body is read), parse, and call
//! [`Ops`]; errors map to HTTP in `error.rs` only.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{FromRef, Query, State, rejection::QueryRejection},
    routing::{get, post},
};
use oa_auth::Verifier;
use oa_proto::ops;
use oa_service::{ApiError, ProtoJson, Scoped};

use crate::{aperture, error::OpsError, ops::Ops, report};

oa_service::scope!(OpsRead, "ops:read");
oa_service::scope!(OpsApply, "ops:apply");

#[derive(Clone)]
pub(crate) struct HttpState {
    pub ops: Arc<Ops>,
    pub aperture: Option<Arc<aperture::Compiled>>,
    pub verifier: Arc<Verifier>,
}

impl FromRef<HttpState> for Arc<Verifier> {
    fn from_ref(s: &HttpState) -> Self {
        s.verifier.clone()
    }
}

pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/ops/aperture/config", get(aperture_config))
        .route("/v1/ops/plan", post(plan_route))
        .route("/v1/ops/apply", post(apply_route))
        .route("/v1/ops/report", get(report_route))
        .route("/v1/ops/channels", get(channels_route))
        .with_state(state)
}

async fn aperture_config(
    State(s): State<HttpState>,
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
    State(s): State<HttpState>,
    _auth: Scoped<OpsRead>,
    ProtoJson(_req): ProtoJson<ops::PlanRequest>,
) -> Result<Json<ops::PlanResponse>, OpsError> {
    let actions = s
        .ops
        .plan_now()
        .await?
        .iter()
        .map(|a| ops::PlanAction {
            action: a.kind().into(),
            channel_id: a.channel_id().to_owned(),
            description: a.to_string(),
        })
        .collect();
    Ok(Json(ops::PlanResponse { actions }))
}

async fn apply_route(
    State(s): State<HttpState>,
    auth: Scoped<OpsApply>,
    ProtoJson(req): ProtoJson<ops::ApplyRequest>,
) -> Result<Json<ops::ApplyResponse>, OpsError> {
    Ok(Json(s.ops.apply_request(&auth.sub, &req).await?))
}

fn window(
    ops: &Ops,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<(u64, u64), OpsError> {
    let Query(query) = query.map_err(|e| OpsError::invalid(e.body_text()))?;
    let default_ms = u64::try_from(ops.settings.report_window.as_millis()).unwrap_or(u64::MAX);
    report::parse_window(&query, ops.clock.now_ms(), default_ms)
}

async fn report_route(
    State(s): State<HttpState>,
    _auth: Scoped<OpsRead>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<ops::ReportResponse>, OpsError> {
    let (from_ms, to_ms) = window(&s.ops, query)?;
    Ok(Json(s.ops.report(from_ms, to_ms).await?))
}

async fn channels_route(
    State(s): State<HttpState>,
    _auth: Scoped<OpsRead>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<ops::ChannelsResponse>, OpsError> {
    let (from_ms, to_ms) = window(&s.ops, query)?;
    Ok(Json(s.ops.health(from_ms, to_ms).await?))
}
