//! Treasury's HTTP authority API.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{FromRef, Path, State},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use oa_auth::{Authenticated, Verifier};
use oa_money::Msat;
use oa_proto::treasury;
use oa_service::{ApiError, ProtoJson, Route, Scoped};
use oa_store::idempotency::{self, Claim};

use crate::{budget, payments::Payments};

oa_service::scope!(PayScope, "treasury:pay");
oa_service::scope!(AdminScope, "treasury:admin");
pub const SCOPE_READ: &str = "treasury:read";

#[derive(Clone)]
pub struct TreasuryState {
    pub payments: Arc<Payments>,
    pub verifier: Arc<Verifier>,
}

impl FromRef<TreasuryState> for Arc<Verifier> {
    fn from_ref(s: &TreasuryState) -> Self {
        s.verifier.clone()
    }
}

pub const ROUTES: [Route; 8] = [
    Route::built(
        "POST",
        "/v1/treasury/payments",
        "Pay a BOLT11 invoice for an agent, within its budget",
        Some("openagents.treasury.v1.CreatePaymentRequest"),
        Some("openagents.treasury.v1.PaymentResponse"),
        Some("treasury:pay"),
    ),
    Route::built(
        "GET",
        "/v1/treasury/payments/{id}",
        "A payment attempt and its receipt",
        None,
        Some("openagents.treasury.v1.PaymentResponse"),
        Some(SCOPE_READ),
    ),
    Route::built(
        "PUT",
        "/v1/treasury/budgets/{agent_id}",
        "Set an agent's budget limit",
        Some("openagents.treasury.v1.SetBudgetRequest"),
        Some("openagents.treasury.v1.Budget"),
        Some("treasury:admin"),
    ),
    Route::built(
        "GET",
        "/v1/treasury/budgets/{agent_id}",
        "An agent's budget: limit, reserved, spent, available",
        None,
        Some("openagents.treasury.v1.Budget"),
        Some(SCOPE_READ),
    ),
    Route::not_supported(
        "POST",
        "/v1/treasury/approvals/{id}/approve",
        "Approve a payment waiting for approval",
    ),
    Route::not_supported(
        "POST",
        "/v1/treasury/approvals/{id}/deny",
        "Deny a payment waiting for approval",
    ),
    Route::not_supported(
        "POST",
        "/v1/treasury/policy/evaluate",
        "Dry-run the spending policy",
    ),
    Route::not_supported("PUT", "/v1/treasury/policy", "Replace the spending policy"),
];

pub fn router(state: TreasuryState) -> Router {
    Router::new()
        .route("/v1/treasury/payments", post(create_payment))
        .route("/v1/treasury/payments/{id}", get(get_payment))
        .route(
            "/v1/treasury/budgets/{agent_id}",
            put(set_budget).get(get_budget),
        )
        .with_state(state)
}

fn require_read(auth: &Authenticated) -> Result<(), ApiError> {
    if ["treasury:read", "treasury:pay", "treasury:admin"]
        .iter()
        .any(|s| auth.has_scope(s))
    {
        Ok(())
    } else {
        Err(oa_auth::AuthError::MissingScope(SCOPE_READ.into()).into())
    }
}

async fn create_payment(
    State(s): State<TreasuryState>,
    auth: Scoped<PayScope>,
    ProtoJson(req): ProtoJson<treasury::CreatePaymentRequest>,
) -> Result<Response, ApiError> {
    let stored = s
        .payments
        .create(&auth.sub, req)
        .await
        .map_err(|e| e.to_api())?;
    Ok((stored.status, Json(stored.body)).into_response())
}

async fn get_payment(
    State(s): State<TreasuryState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<treasury::PaymentResponse>, ApiError> {
    require_read(&auth)?;
    if id.len() > 64 {
        return Err(ApiError::bad_request(
            "INVALID_REQUEST",
            "payment id is too long",
        ));
    }
    s.payments.get(&id).await.map(Json).map_err(|e| e.to_api())
}

async fn set_budget(
    State(s): State<TreasuryState>,
    auth: Scoped<AdminScope>,
    Path(agent_id): Path<String>,
    ProtoJson(req): ProtoJson<treasury::SetBudgetRequest>,
) -> Result<Json<treasury::Budget>, ApiError> {
    idempotency::validate_key(&req.idempotency_key)
        .map_err(|e| ApiError::bad_request("INVALID_IDEMPOTENCY_KEY", e.to_string()))?;
    if agent_id.is_empty()
        || agent_id.len() > 64
        || !agent_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(ApiError::bad_request(
            "INVALID_REQUEST",
            "agent_id must be 1..=64 characters of [A-Za-z0-9._:-]",
        ));
    }
    let limit = Msat::new(req.limit_msat)
        .map_err(|e| ApiError::bad_request("INVALID_REQUEST", format!("limit_msat: {e}")))?;
    let p = &s.payments;
    let now = p.clock.now_ms();
    let scope = format!("treasury.budgets/{}", auth.sub);
    let fingerprint = idempotency::fingerprint(&(&agent_id, &req)).map_err(ApiError::internal)?;
    let mut tx = p.db.begin().await.map_err(ApiError::internal)?;
    match idempotency::claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now)
        .await
        .map_err(ApiError::internal)?
    {
        Claim::Conflict => {
            return Err(ApiError::conflict(
                "IDEMPOTENCY_CONFLICT",
                "this idempotency key was used for a different request",
            ));
        }
        Claim::Replay { response, .. } => {
            return oa_service::parse_json(response.as_bytes()).map(Json);
        }
        Claim::InProgress { .. } => {
            return Err(ApiError::conflict(
                "REQUEST_IN_PROGRESS",
                "the same request is being processed",
            )
            .retryable());
        }
        Claim::New => {}
    }
    if !budget::set_limit(&mut tx, &agent_id, limit, now)
        .await
        .map_err(|e| e.to_api())?
    {
        return Err(ApiError::conflict(
            "BUDGET_IN_USE",
            "the limit cannot go below what the agent has reserved or spent",
        ));
    }
    let budget = budget::get(&mut tx, &agent_id)
        .await
        .map_err(|e| e.to_api())?
        .ok_or_else(|| ApiError::internal("budget vanished"))?;
    let resp = to_budget(&budget);
    let json = serde_json::to_string(&resp).map_err(ApiError::internal)?;
    idempotency::complete(&mut tx, &scope, &req.idempotency_key, 200, &json, now)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(Json(resp))
}

async fn get_budget(
    State(s): State<TreasuryState>,
    auth: Authenticated,
    Path(agent_id): Path<String>,
) -> Result<Json<treasury::Budget>, ApiError> {
    require_read(&auth)?;
    let mut conn = s
        .payments
        .db
        .pool()
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    let budget = budget::get(&mut conn, &agent_id)
        .await
        .map_err(|e| e.to_api())?;
    budget
        .map(|b| Json(to_budget(&b)))
        .ok_or_else(|| ApiError::not_found("budget"))
}

fn to_budget(b: &budget::Budget) -> treasury::Budget {
    treasury::Budget {
        agent_id: b.agent_id.clone(),
        limit_msat: b.limit.as_u64(),
        reserved_msat: b.reserved.as_u64(),
        spent_msat: b.spent.as_u64(),
        available_msat: b.available.as_u64(),
    }
}
