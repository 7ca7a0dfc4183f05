//! Hydra's HTTP authority API (paths from seed 004).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{FromRef, State},
    routing::{get, post},
};
use oa_auth::{Authenticated, Verifier};
use oa_proto::hydra;
use oa_service::{ApiError, ProtoJson, Route, Scoped};

use crate::liquidity::Liquidity;

pub const SCOPE_LIQUIDITY: &str = "hydra:liquidity";
pub const SCOPE_READ: &str = "hydra:read";
oa_service::scope!(LiquidityScope, "hydra:liquidity");

#[derive(Clone)]
pub struct HydraState {
    pub liquidity: Arc<Liquidity>,
    pub verifier: Arc<Verifier>,
}

impl FromRef<HydraState> for Arc<Verifier> {
    fn from_ref(s: &HydraState) -> Self {
        s.verifier.clone()
    }
}

pub const ROUTES: [Route; 15] = [
    Route::built(
        "POST",
        "/v1/liquidity/quote_pay",
        "Quote paying a BOLT11 invoice from pooled liquidity",
        Some("openagents.hydra.v1.QuotePayRequest"),
        Some("openagents.hydra.v1.QuotePayResponse"),
        Some(SCOPE_LIQUIDITY),
    ),
    Route::built(
        "POST",
        "/v1/liquidity/pay",
        "Pay a live quote, exactly once",
        Some("openagents.hydra.v1.PayRequest"),
        Some("openagents.hydra.v1.PayResponse"),
        Some(SCOPE_LIQUIDITY),
    ),
    Route::built(
        "GET",
        "/v1/liquidity/status",
        "Executor reachability, balances, channel liquidity, breaker state",
        None,
        Some("openagents.hydra.v1.LiquidityStatusResponse"),
        Some(SCOPE_READ),
    ),
    Route::not_supported(
        "POST",
        "/v1/liquidity/deposit",
        "Deposit by invoice or on-chain address",
    ),
    Route::not_supported(
        "POST",
        "/v1/liquidity/withdraw",
        "Withdraw, throttled by liabilities",
    ),
    Route::not_supported("POST", "/v1/credit/intent", "Credit envelope intent"),
    Route::not_supported("POST", "/v1/credit/offer", "Underwritten credit offer"),
    Route::not_supported("POST", "/v1/credit/envelope", "Issue a credit envelope"),
    Route::not_supported(
        "POST",
        "/v1/credit/settle",
        "Settle a credit envelope after verification",
    ),
    Route::not_supported("POST", "/v1/routing/score", "Rank rails and routes"),
    Route::not_supported("POST", "/v1/fx/rfq", "FX quote"),
    Route::not_supported("POST", "/v1/fx/settle", "FX settlement"),
    Route::not_supported(
        "POST",
        "/internal/v1/hydra/routing/score",
        "Internal routing score",
    ),
    Route::not_supported(
        "GET",
        "/internal/v1/hydra/risk/health",
        "Breakers and risk health",
    ),
    Route::not_supported(
        "GET",
        "/internal/v1/hydra/observability",
        "Internal observability",
    ),
];

pub fn router(state: HydraState) -> Router {
    Router::new()
        .route("/v1/liquidity/quote_pay", post(quote_pay))
        .route("/v1/liquidity/pay", post(pay))
        .route("/v1/liquidity/status", get(status))
        .with_state(state)
}

async fn quote_pay(
    State(s): State<HydraState>,
    auth: Scoped<LiquidityScope>,
    ProtoJson(req): ProtoJson<hydra::QuotePayRequest>,
) -> Result<Json<hydra::QuotePayResponse>, ApiError> {
    s.liquidity
        .quote(&auth.sub, req)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn pay(
    State(s): State<HydraState>,
    auth: Scoped<LiquidityScope>,
    ProtoJson(req): ProtoJson<hydra::PayRequest>,
) -> Result<Json<hydra::PayResponse>, ApiError> {
    s.liquidity
        .pay(&auth.sub, req)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn status(
    State(s): State<HydraState>,
    auth: Authenticated,
) -> Result<Json<hydra::LiquidityStatusResponse>, ApiError> {
    if !auth.has_scope(SCOPE_READ) && !auth.has_scope(SCOPE_LIQUIDITY) {
        return Err(oa_auth::AuthError::MissingScope(SCOPE_READ.into()).into());
    }
    s.liquidity.status().await.map(Json).map_err(|e| e.to_api())
}
