//! Hydra's HTTP authority API (paths from seed 004). `ROUTES` lists every route with its
//! request and response messages and the scope a token needs.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{FromRef, Path, State},
    routing::{get, post},
};
use oa_auth::{Authenticated, Verifier};
use oa_proto::hydra;
use oa_service::{ApiError, ProtoJson, Route, Scoped};

use crate::{
    credit::Credit, deposits::Deposits, fx_desk::FxDesk, liquidity::Liquidity,
    observability::Observability, risk::Risk, routing::Routing, withdrawals::Withdrawals,
};

pub const SCOPE_LIQUIDITY: &str = "hydra:liquidity";
pub const SCOPE_CREDIT: &str = "hydra:credit";
pub const SCOPE_ROUTING: &str = "hydra:routing";
pub const SCOPE_FX: &str = "hydra:fx";
pub const SCOPE_READ: &str = "hydra:read";
/// Reads of liquidity records take `hydra:read` or `hydra:liquidity`: each route publishes one
/// as its scope and the other as an alternative.
const ALSO_LIQUIDITY: &[&str] = &[SCOPE_LIQUIDITY];
const ALSO_READ: &[&str] = &[SCOPE_READ];
oa_service::scope!(LiquidityScope, "hydra:liquidity");
oa_service::scope!(CreditScope, "hydra:credit");
oa_service::scope!(RoutingScope, "hydra:routing");
oa_service::scope!(FxScope, "hydra:fx");

#[derive(Clone)]
pub struct HydraState {
    pub liquidity: Arc<Liquidity>,
    pub credit: Arc<Credit>,
    pub deposits: Arc<Deposits>,
    pub withdrawals: Arc<Withdrawals>,
    pub routing: Arc<Routing>,
    pub fx: Arc<FxDesk>,
    pub risk: Arc<Risk>,
    pub observability: Arc<Observability>,
    pub verifier: Arc<Verifier>,
}

impl FromRef<HydraState> for Arc<Verifier> {
    fn from_ref(s: &HydraState) -> Self {
        s.verifier.clone()
    }
}

pub const ROUTES: [Route; 18] = [
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
        "Executor reachability, balances, channel liquidity, the pool, breakers, withdrawal throttle (hydra:read or hydra:liquidity)",
        None,
        Some("openagents.hydra.v1.LiquidityStatusResponse"),
        Some(SCOPE_READ),
    )
    .or_any_of(ALSO_LIQUIDITY),
    Route::built(
        "POST",
        "/v1/liquidity/deposit",
        "Deposit to an agent's balance by invoice (method onchain: 501 NOT_SUPPORTED)",
        Some("openagents.hydra.v1.DepositRequest"),
        Some("openagents.hydra.v1.DepositResponse"),
        Some(SCOPE_LIQUIDITY),
    ),
    Route::built(
        "GET",
        "/v1/liquidity/deposit/{deposit_id}",
        "A deposit, with its receipt once credited (hydra:liquidity or hydra:read)",
        None,
        Some("openagents.hydra.v1.DepositResponse"),
        Some(SCOPE_LIQUIDITY),
    )
    .or_any_of(ALSO_READ),
    Route::built(
        "POST",
        "/v1/liquidity/withdraw",
        "Withdraw from an agent's balance to a BOLT11 invoice, exactly once, under the throttle",
        Some("openagents.hydra.v1.WithdrawRequest"),
        Some("openagents.hydra.v1.WithdrawResponse"),
        Some(SCOPE_LIQUIDITY),
    ),
    Route::built(
        "GET",
        "/v1/liquidity/withdraw/{withdrawal_id}",
        "A withdrawal, with its receipt once terminal (hydra:liquidity or hydra:read)",
        None,
        Some("openagents.hydra.v1.WithdrawResponse"),
        Some(SCOPE_LIQUIDITY),
    )
    .or_any_of(ALSO_READ),
    Route::built(
        "GET",
        "/v1/liquidity/balance/{agent_id}",
        "An agent's balance, reserved and available (hydra:liquidity or hydra:read)",
        None,
        Some("openagents.hydra.v1.AgentBalanceResponse"),
        Some(SCOPE_LIQUIDITY),
    )
    .or_any_of(ALSO_READ),
    Route::built(
        "POST",
        "/v1/credit/intent",
        "Ask for a credit envelope: agent, provider, scope, cap, expiry",
        Some("openagents.hydra.v1.CreditIntentRequest"),
        Some("openagents.hydra.v1.CreditIntentResponse"),
        Some(SCOPE_CREDIT),
    ),
    Route::built(
        "POST",
        "/v1/credit/offer",
        "Underwrite an intent from the agent's history: a cap and a fee, with a TTL",
        Some("openagents.hydra.v1.CreditOfferRequest"),
        Some("openagents.hydra.v1.CreditOfferResponse"),
        Some(SCOPE_CREDIT),
    ),
    Route::built(
        "POST",
        "/v1/credit/envelope",
        "Accept a live offer: reserve the cap from the pool and issue the envelope",
        Some("openagents.hydra.v1.CreditEnvelopeRequest"),
        Some("openagents.hydra.v1.CreditEnvelopeResponse"),
        Some(SCOPE_CREDIT),
    ),
    Route::built(
        "POST",
        "/v1/credit/settle",
        "Settle an envelope after an Aegis verification: pay the provider, or default",
        Some("openagents.hydra.v1.CreditSettleRequest"),
        Some("openagents.hydra.v1.CreditSettleResponse"),
        Some(SCOPE_CREDIT),
    ),
    Route::built(
        "POST",
        "/v1/routing/score",
        "Rank candidate routes and the envelope rail under a policy; a decision receipt",
        Some("openagents.hydra.v1.RoutingScoreRequest"),
        Some("openagents.hydra.v1.RoutingScoreResponse"),
        Some(SCOPE_ROUTING),
    ),
    Route::built(
        "POST",
        "/v1/fx/rfq",
        "Quote a conversion between BTC and a fiat currency, with a TTL",
        Some("openagents.hydra.v1.FxRfqRequest"),
        Some("openagents.hydra.v1.FxRfqResponse"),
        Some(SCOPE_FX),
    ),
    Route::built(
        "POST",
        "/v1/fx/settle",
        "Settle a live FX quote once: both legs in the ledger and a receipt",
        Some("openagents.hydra.v1.FxSettleRequest"),
        Some("openagents.hydra.v1.FxSettleResponse"),
        Some(SCOPE_FX),
    ),
    Route::built(
        "POST",
        "/internal/v1/hydra/routing/score",
        "The routing score, on the internal path",
        Some("openagents.hydra.v1.RoutingScoreRequest"),
        Some("openagents.hydra.v1.RoutingScoreResponse"),
        Some(SCOPE_ROUTING),
    ),
    Route::built(
        "GET",
        "/internal/v1/hydra/risk/health",
        "Breakers (state and why), what is halted, open exposure and the pool",
        None,
        Some("openagents.hydra.v1.RiskHealthResponse"),
        Some(SCOPE_READ),
    ),
    Route::built(
        "GET",
        "/internal/v1/hydra/observability",
        "Selected-route mix, confidence buckets, breaker transitions, withdrawal throttle posture",
        None,
        Some("openagents.hydra.v1.ObservabilityResponse"),
        Some(SCOPE_READ),
    ),
];

pub fn router(state: HydraState) -> Router {
    Router::new()
        .route("/v1/liquidity/quote_pay", post(quote_pay))
        .route("/v1/liquidity/pay", post(pay))
        .route("/v1/liquidity/status", get(status))
        .route("/v1/liquidity/deposit", post(deposit))
        .route("/v1/liquidity/deposit/{deposit_id}", get(get_deposit))
        .route("/v1/liquidity/withdraw", post(withdraw))
        .route(
            "/v1/liquidity/withdraw/{withdrawal_id}",
            get(get_withdrawal),
        )
        .route("/v1/liquidity/balance/{agent_id}", get(balance))
        .route("/internal/v1/hydra/observability", get(observability))
        .route("/v1/credit/intent", post(credit_intent))
        .route("/v1/credit/offer", post(credit_offer))
        .route("/v1/credit/envelope", post(credit_envelope))
        .route("/v1/credit/settle", post(credit_settle))
        .route("/v1/routing/score", post(routing_score))
        .route("/internal/v1/hydra/routing/score", post(routing_score))
        .route("/v1/fx/rfq", post(fx_rfq))
        .route("/v1/fx/settle", post(fx_settle))
        .route("/internal/v1/hydra/risk/health", get(risk_health))
        .with_state(state)
}

async fn risk_health(
    State(s): State<HydraState>,
    auth: Authenticated,
) -> Result<Json<hydra::RiskHealthResponse>, ApiError> {
    auth.require_scope(SCOPE_READ)?;
    s.risk.health().await.map(Json).map_err(|e| e.to_api())
}

async fn fx_rfq(
    State(s): State<HydraState>,
    auth: Scoped<FxScope>,
    ProtoJson(req): ProtoJson<hydra::FxRfqRequest>,
) -> Result<Json<hydra::FxRfqResponse>, ApiError> {
    s.fx.rfq(&auth.sub, req)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn fx_settle(
    State(s): State<HydraState>,
    auth: Scoped<FxScope>,
    ProtoJson(req): ProtoJson<hydra::FxSettleRequest>,
) -> Result<Json<hydra::FxSettleResponse>, ApiError> {
    s.fx.settle(&auth.sub, req)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn routing_score(
    State(s): State<HydraState>,
    auth: Scoped<RoutingScope>,
    ProtoJson(req): ProtoJson<hydra::RoutingScoreRequest>,
) -> Result<Json<hydra::RoutingScoreResponse>, ApiError> {
    s.routing
        .score(&auth.sub, req)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn credit_intent(
    State(s): State<HydraState>,
    auth: Scoped<CreditScope>,
    ProtoJson(req): ProtoJson<hydra::CreditIntentRequest>,
) -> Result<Json<hydra::CreditIntentResponse>, ApiError> {
    s.credit
        .intent(&auth.sub, req)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn credit_offer(
    State(s): State<HydraState>,
    auth: Scoped<CreditScope>,
    ProtoJson(req): ProtoJson<hydra::CreditOfferRequest>,
) -> Result<Json<hydra::CreditOfferResponse>, ApiError> {
    s.credit
        .offer(&auth.sub, req)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn credit_envelope(
    State(s): State<HydraState>,
    auth: Scoped<CreditScope>,
    ProtoJson(req): ProtoJson<hydra::CreditEnvelopeRequest>,
) -> Result<Json<hydra::CreditEnvelopeResponse>, ApiError> {
    s.credit
        .accept(&auth.sub, req)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn credit_settle(
    State(s): State<HydraState>,
    auth: Scoped<CreditScope>,
    ProtoJson(req): ProtoJson<hydra::CreditSettleRequest>,
) -> Result<Json<hydra::CreditSettleResponse>, ApiError> {
    s.credit
        .settle(&auth.sub, req)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
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
    auth.require_any(SCOPE_READ, ALSO_LIQUIDITY)?;
    let m = s.withdrawals.measure().await.map_err(|e| e.to_api())?;
    let mut resp = s
        .liquidity
        .status(m.info.as_ref())
        .await
        .map_err(|e| e.to_api())?;
    let breakers = s.risk.breakers().await.map_err(|e| e.to_api())?;
    resp.breaker_state = if breakers.iter().any(|b| b.state == "open") {
        "open"
    } else {
        "closed"
    }
    .into();
    resp.breakers = breakers;
    resp.onchain_confirmed_msat = m.balance.as_ref().map_or(0, |b| b.confirmed_balance_msat);
    resp.withdraw_throttle = Some(
        s.withdrawals
            .throttle_proto(&m.throttle)
            .await
            .map_err(|e| e.to_api())?,
    );
    Ok(Json(resp))
}

async fn deposit(
    State(s): State<HydraState>,
    auth: Scoped<LiquidityScope>,
    ProtoJson(req): ProtoJson<hydra::DepositRequest>,
) -> Result<Json<hydra::DepositResponse>, ApiError> {
    s.deposits
        .deposit(&auth.sub, req)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn get_deposit(
    State(s): State<HydraState>,
    auth: Authenticated,
    Path(deposit_id): Path<String>,
) -> Result<Json<hydra::DepositResponse>, ApiError> {
    auth.require_any(SCOPE_LIQUIDITY, ALSO_READ)?;
    s.deposits
        .get(&deposit_id)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn withdraw(
    State(s): State<HydraState>,
    auth: Scoped<LiquidityScope>,
    ProtoJson(req): ProtoJson<hydra::WithdrawRequest>,
) -> Result<Json<hydra::WithdrawResponse>, ApiError> {
    s.withdrawals
        .withdraw(&auth.sub, req)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn get_withdrawal(
    State(s): State<HydraState>,
    auth: Authenticated,
    Path(withdrawal_id): Path<String>,
) -> Result<Json<hydra::WithdrawResponse>, ApiError> {
    auth.require_any(SCOPE_LIQUIDITY, ALSO_READ)?;
    s.withdrawals
        .current(&withdrawal_id)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn balance(
    State(s): State<HydraState>,
    auth: Authenticated,
    Path(agent_id): Path<String>,
) -> Result<Json<hydra::AgentBalanceResponse>, ApiError> {
    auth.require_any(SCOPE_LIQUIDITY, ALSO_READ)?;
    s.withdrawals
        .balance(&agent_id)
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}

async fn observability(
    State(s): State<HydraState>,
    auth: Authenticated,
) -> Result<Json<hydra::ObservabilityResponse>, ApiError> {
    auth.require_scope(SCOPE_READ)?;
    s.observability
        .report()
        .await
        .map(Json)
        .map_err(|e| e.to_api())
}
