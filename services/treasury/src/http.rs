//! Treasury's HTTP authority API.
//!
//! Scopes: `treasury:pay` (pay, settle an envelope), `treasury:approve` (approve or deny a waiting
//! payment), `treasury:admin` (budgets, policy), `treasury:read` (reads; `pay`, `approve` and
//! `admin` read too).

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

use crate::{
    budget::{self, BudgetConfig, Kind},
    error::TreasuryError,
    payments::{Payments, Stored},
    period::{Period, parse_weekday, weekday_name},
    policy::Policy,
    store::ActivePolicy,
};

oa_service::scope!(PayScope, "treasury:pay");
oa_service::scope!(AdminScope, "treasury:admin");
oa_service::scope!(ApproveScope, "treasury:approve");
pub const SCOPE_READ: &str = "treasury:read";
pub const SCOPE_APPROVE: &str = "treasury:approve";
/// Besides `treasury:read`, what lets a caller read payments, budgets and the policy.
const ALSO_READ: &[&str] = &["treasury:pay", "treasury:admin", "treasury:approve"];
/// Besides `treasury:approve`, what lets a caller list the approvals waiting.
const ALSO_LIST_APPROVALS: &[&str] = &["treasury:read", "treasury:admin"];

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

pub const ROUTES: [Route; 13] = [
    Route::built(
        "POST",
        "/v1/treasury/payments",
        "Pay a BOLT11 invoice or an L402 challenge for an agent, under its budgets and the policy",
        Some("openagents.treasury.v1.CreatePaymentRequest"),
        Some("openagents.treasury.v1.PaymentResponse"),
        Some("treasury:pay"),
    ),
    Route::built(
        "GET",
        "/v1/treasury/payments/{id}",
        "A payment attempt, its decision and its receipt",
        None,
        Some("openagents.treasury.v1.PaymentResponse"),
        Some(SCOPE_READ),
    )
    .or_any_of(ALSO_READ),
    Route::built(
        "POST",
        "/v1/treasury/payments/{id}/settle",
        "Settle a payment's credit envelope after Aegis verified the work",
        Some("openagents.treasury.v1.SettlePaymentRequest"),
        Some("openagents.treasury.v1.PaymentResponse"),
        Some("treasury:pay"),
    ),
    Route::built(
        "PUT",
        "/v1/treasury/budgets/{agent_id}",
        "Set an agent's budget (a period of never unless given)",
        Some("openagents.treasury.v1.SetBudgetRequest"),
        Some("openagents.treasury.v1.Budget"),
        Some("treasury:admin"),
    ),
    Route::built(
        "GET",
        "/v1/treasury/budgets/{agent_id}",
        "An agent's budget that never resets: limit, reserved, spent, available",
        None,
        Some("openagents.treasury.v1.Budget"),
        Some(SCOPE_READ),
    )
    .or_any_of(ALSO_READ),
    Route::built(
        "PUT",
        "/v1/treasury/budgets/{kind}/{subject}",
        "Set an org, agent or host budget for one period",
        Some("openagents.treasury.v1.SetBudgetRequest"),
        Some("openagents.treasury.v1.Budget"),
        Some("treasury:admin"),
    ),
    Route::built(
        "GET",
        "/v1/treasury/budgets/{kind}/{subject}",
        "Every budget of an org, agent or host, with its current window",
        None,
        Some("openagents.treasury.v1.ListBudgetsResponse"),
        Some(SCOPE_READ),
    )
    .or_any_of(ALSO_READ),
    Route::built(
        "GET",
        "/v1/treasury/approvals",
        "Payments waiting for approval, oldest first",
        None,
        Some("openagents.treasury.v1.ListApprovalsResponse"),
        Some(SCOPE_APPROVE),
    )
    .or_any_of(ALSO_LIST_APPROVALS),
    Route::built(
        "POST",
        "/v1/treasury/approvals/{id}/approve",
        "Approve a payment waiting for approval",
        Some("openagents.treasury.v1.ApprovalRequest"),
        Some("openagents.treasury.v1.PaymentResponse"),
        Some(SCOPE_APPROVE),
    ),
    Route::built(
        "POST",
        "/v1/treasury/approvals/{id}/deny",
        "Deny a payment waiting for approval",
        Some("openagents.treasury.v1.ApprovalRequest"),
        Some("openagents.treasury.v1.PaymentResponse"),
        Some(SCOPE_APPROVE),
    ),
    Route::built(
        "POST",
        "/v1/treasury/policy/evaluate",
        "Dry-run the spending policy for a payment: decision, rule and reasons; changes nothing",
        Some("openagents.treasury.v1.EvaluateRequest"),
        Some("openagents.treasury.v1.EvaluateResponse"),
        Some(SCOPE_READ),
    )
    .or_any_of(ALSO_READ),
    Route::built(
        "PUT",
        "/v1/treasury/policy",
        "Replace the spending policy (TOML); answers its bundle id",
        Some("openagents.treasury.v1.SetPolicyRequest"),
        Some("openagents.treasury.v1.PolicyResponse"),
        Some("treasury:admin"),
    ),
    Route::built(
        "GET",
        "/v1/treasury/policy",
        "The active spending policy and its bundle id",
        None,
        Some("openagents.treasury.v1.PolicyResponse"),
        Some(SCOPE_READ),
    )
    .or_any_of(ALSO_READ),
];

pub fn router(state: TreasuryState) -> Router {
    Router::new()
        .route("/v1/treasury/payments", post(create_payment))
        .route("/v1/treasury/payments/{id}", get(get_payment))
        .route("/v1/treasury/payments/{id}/settle", post(settle_payment))
        .route(
            "/v1/treasury/budgets/{agent_id}",
            put(set_agent_budget).get(get_agent_budget),
        )
        .route(
            "/v1/treasury/budgets/{kind}/{subject}",
            put(set_budget).get(list_budgets),
        )
        .route("/v1/treasury/approvals", get(list_approvals))
        .route("/v1/treasury/approvals/{id}/approve", post(approve))
        .route("/v1/treasury/approvals/{id}/deny", post(deny))
        .route("/v1/treasury/policy/evaluate", post(evaluate))
        .route("/v1/treasury/policy", put(set_policy).get(get_policy))
        .with_state(state)
}

fn require_read(auth: &Authenticated) -> Result<(), ApiError> {
    Ok(auth.require_any(SCOPE_READ, ALSO_READ)?)
}

fn api(e: TreasuryError) -> ApiError {
    e.to_api()
}

fn respond(stored: Stored) -> Response {
    (stored.status, Json(stored.body)).into_response()
}

/// Payment ids are `pay_` + 32 hex digits; anything much longer is refused before a lookup.
fn check_id(id: &str) -> Result<(), ApiError> {
    if id.len() > 64 {
        return Err(ApiError::bad_request(
            "INVALID_REQUEST",
            "payment id is too long",
        ));
    }
    Ok(())
}

async fn create_payment(
    State(s): State<TreasuryState>,
    auth: Scoped<PayScope>,
    ProtoJson(req): ProtoJson<treasury::CreatePaymentRequest>,
) -> Result<Response, ApiError> {
    s.payments
        .create(&auth.sub, req)
        .await
        .map(respond)
        .map_err(api)
}

async fn get_payment(
    State(s): State<TreasuryState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<treasury::PaymentResponse>, ApiError> {
    require_read(&auth)?;
    check_id(&id)?;
    s.payments.get(&id).await.map(Json).map_err(api)
}

async fn settle_payment(
    State(s): State<TreasuryState>,
    auth: Scoped<PayScope>,
    Path(id): Path<String>,
    ProtoJson(req): ProtoJson<treasury::SettlePaymentRequest>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    s.payments
        .settle(&auth.sub, &id, req)
        .await
        .map(respond)
        .map_err(api)
}

async fn list_approvals(
    State(s): State<TreasuryState>,
    auth: Authenticated,
) -> Result<Json<treasury::ListApprovalsResponse>, ApiError> {
    auth.require_any(SCOPE_APPROVE, ALSO_LIST_APPROVALS)?;
    let payments = s.payments.pending_approvals().await.map_err(api)?;
    Ok(Json(treasury::ListApprovalsResponse { payments }))
}

async fn approve(
    State(s): State<TreasuryState>,
    auth: Scoped<ApproveScope>,
    Path(id): Path<String>,
    ProtoJson(req): ProtoJson<treasury::ApprovalRequest>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    s.payments
        .decide_approval(&auth.sub, &id, true, req)
        .await
        .map(respond)
        .map_err(api)
}

async fn deny(
    State(s): State<TreasuryState>,
    auth: Scoped<ApproveScope>,
    Path(id): Path<String>,
    ProtoJson(req): ProtoJson<treasury::ApprovalRequest>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    s.payments
        .decide_approval(&auth.sub, &id, false, req)
        .await
        .map(respond)
        .map_err(api)
}

async fn evaluate(
    State(s): State<TreasuryState>,
    auth: Authenticated,
    body: Result<ProtoJson<treasury::EvaluateRequest>, ApiError>,
) -> Result<Json<treasury::EvaluateResponse>, ApiError> {
    // The scope before the body: a caller without it learns nothing about its request.
    require_read(&auth)?;
    let ProtoJson(req) = body?;
    s.payments.evaluate(&req).await.map(Json).map_err(api)
}

/// Runs `f` under an idempotency claim of `(scope, key)` for a request with `fingerprint`: a
/// replay answers the stored response, a conflict is 409, and `f`'s answer is stored in the same
/// transaction as its changes. An error rolls everything back.
async fn idempotent<T, F>(
    p: &Payments,
    scope: &str,
    key: &str,
    fingerprint: &str,
    f: F,
) -> Result<Json<T>, ApiError>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: for<'c> AsyncFnOnce(&'c mut sqlx::AnyConnection, u64) -> Result<T, TreasuryError>,
{
    let now = p.clock.now_ms();
    let mut tx = p.db.begin().await.map_err(ApiError::internal)?;
    match idempotency::claim(&mut tx, scope, key, fingerprint, now)
        .await
        .map_err(ApiError::internal)?
    {
        Claim::Conflict => return Err(api(TreasuryError::IdempotencyConflict)),
        Claim::Replay { response, .. } => {
            return oa_service::parse_json(response.as_bytes()).map(Json);
        }
        Claim::InProgress { .. } => return Err(api(TreasuryError::RequestInProgress)),
        Claim::New => {}
    }
    let resp = f(&mut tx, now).await.map_err(api)?;
    let json = serde_json::to_string(&resp).map_err(ApiError::internal)?;
    idempotency::complete(&mut tx, scope, key, 200, &json, now)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(Json(resp))
}

fn bad(message: impl Into<String>) -> TreasuryError {
    TreasuryError::InvalidRequest(message.into())
}

/// Checks a budget request into a configuration. Every failure is a typed 400.
fn budget_config(
    kind: &str,
    subject: &str,
    req: &treasury::SetBudgetRequest,
    now_ms: u64,
) -> Result<BudgetConfig, TreasuryError> {
    let kind = Kind::parse(kind).ok_or_else(|| bad("kind must be org, agent or host"))?;
    if !budget::valid_subject(kind, subject) {
        return Err(bad(match kind {
            Kind::Host => "a host is 1..=64 characters of lowercase [a-z0-9.-]",
            _ => "an agent or org id is 1..=64 characters of [A-Za-z0-9._:-]",
        }));
    }
    let period = match req.period.as_str() {
        "" => Period::Never,
        p => Period::parse(p)
            .ok_or_else(|| bad("period must be daily, weekly, monthly, yearly or never"))?,
    };
    let time_zone = match req.time_zone.as_str() {
        "" => "UTC".to_owned(),
        tz => tz.to_owned(),
    };
    let week_start = match req.week_start.as_str() {
        "" => jiff::civil::Weekday::Monday,
        w => parse_weekday(w).ok_or_else(|| bad("week_start must be monday ... sunday"))?,
    };
    let limit = Msat::new(req.limit_msat).map_err(|e| bad(format!("limit_msat: {e}")))?;
    let per_payment_max = match req.per_payment_max_msat {
        0 => None,
        v => Some(Msat::new(v).map_err(|e| bad(format!("per_payment_max_msat: {e}")))?),
    };
    let lists = [
        ("payee_allow", &req.payee_allow, true),
        ("payee_deny", &req.payee_deny, true),
        ("host_allow", &req.host_allow, false),
        ("host_deny", &req.host_deny, false),
    ];
    let mut clean: Vec<Vec<String>> = Vec::with_capacity(4);
    for (name, list, pubkeys) in lists {
        if list.len() > budget::MAX_LIST_LEN {
            return Err(bad(format!(
                "{name} has more than {} entries",
                budget::MAX_LIST_LEN
            )));
        }
        if let Some(bad_entry) = list.iter().find(|e| {
            if pubkeys {
                !budget::valid_pubkey(e)
            } else {
                !budget::valid_host_pattern(e)
            }
        }) {
            return Err(bad(format!(
                "{name}: {bad_entry:?} is not {}",
                if pubkeys {
                    "a node public key (66 lowercase hex digits)"
                } else {
                    "a host or *.domain"
                }
            )));
        }
        let mut l = list.clone();
        l.sort();
        l.dedup();
        clean.push(l);
    }
    let mut it = clean.into_iter();
    let cfg = BudgetConfig {
        kind,
        subject: subject.to_owned(),
        period,
        limit,
        time_zone,
        week_start,
        per_payment_max,
        payee_allow: it.next().unwrap_or_default(),
        payee_deny: it.next().unwrap_or_default(),
        host_allow: it.next().unwrap_or_default(),
        host_deny: it.next().unwrap_or_default(),
        updated_at_ms: now_ms,
    };
    cfg.calendar()?;
    Ok(cfg)
}

fn to_budget(st: &budget::BudgetStatus) -> treasury::Budget {
    let c = &st.config;
    treasury::Budget {
        agent_id: if c.kind == Kind::Agent {
            c.subject.clone()
        } else {
            String::new()
        },
        limit_msat: c.limit.as_u64(),
        reserved_msat: st.reserved.as_u64(),
        spent_msat: st.spent.as_u64(),
        available_msat: st.available.as_u64(),
        kind: c.kind.as_str().into(),
        subject: c.subject.clone(),
        period: c.period.as_str().into(),
        time_zone: c.time_zone.clone(),
        week_start: weekday_name(c.week_start).into(),
        period_start_ms: st.window.start_ms.unwrap_or(0),
        period_end_ms: st.window.end_ms.unwrap_or(0),
        per_payment_max_msat: c.per_payment_max.map_or(0, Msat::as_u64),
        payee_allow: c.payee_allow.clone(),
        payee_deny: c.payee_deny.clone(),
        host_allow: c.host_allow.clone(),
        host_deny: c.host_deny.clone(),
        updated_at_ms: c.updated_at_ms,
        funded_msat: st.funded.as_u64(),
    }
}

async fn put_budget(
    s: &TreasuryState,
    caller: &str,
    kind: &str,
    subject: &str,
    req: treasury::SetBudgetRequest,
) -> Result<Json<treasury::Budget>, ApiError> {
    idempotency::validate_key(&req.idempotency_key).map_err(|e| api(e.into()))?;
    let p = &s.payments;
    let cfg = budget_config(kind, subject, &req, p.clock.now_ms()).map_err(api)?;
    let scope = format!("treasury.budgets/{caller}");
    let fingerprint =
        idempotency::fingerprint(&(kind, subject, &req)).map_err(ApiError::internal)?;
    idempotent(
        p,
        &scope,
        &req.idempotency_key,
        &fingerprint,
        async |tx, now| {
            budget::set_budget(tx, &cfg, now).await?;
            Ok(to_budget(&budget::status(tx, &cfg, now).await?))
        },
    )
    .await
}

async fn set_agent_budget(
    State(s): State<TreasuryState>,
    auth: Scoped<AdminScope>,
    Path(agent_id): Path<String>,
    ProtoJson(req): ProtoJson<treasury::SetBudgetRequest>,
) -> Result<Json<treasury::Budget>, ApiError> {
    put_budget(&s, &auth.sub, "agent", &agent_id, req).await
}

async fn set_budget(
    State(s): State<TreasuryState>,
    auth: Scoped<AdminScope>,
    Path((kind, subject)): Path<(String, String)>,
    ProtoJson(req): ProtoJson<treasury::SetBudgetRequest>,
) -> Result<Json<treasury::Budget>, ApiError> {
    put_budget(&s, &auth.sub, &kind, &subject, req).await
}

async fn budgets_of(
    s: &TreasuryState,
    kind: &str,
    subject: &str,
) -> Result<Vec<treasury::Budget>, ApiError> {
    let kind = Kind::parse(kind).ok_or_else(|| api(bad("kind must be org, agent or host")))?;
    if !budget::valid_subject(kind, subject) {
        return Err(api(bad("not a valid subject for this kind")));
    }
    let p = &s.payments;
    let now = p.clock.now_ms();
    let mut conn = p.db.reader().await.map_err(ApiError::internal)?;
    let mut out = Vec::new();
    for cfg in budget::list(&mut conn, kind, subject).await.map_err(api)? {
        out.push(to_budget(
            &budget::status(&mut conn, &cfg, now).await.map_err(api)?,
        ));
    }
    Ok(out)
}

async fn get_agent_budget(
    State(s): State<TreasuryState>,
    auth: Authenticated,
    Path(agent_id): Path<String>,
) -> Result<Json<treasury::Budget>, ApiError> {
    require_read(&auth)?;
    budgets_of(&s, "agent", &agent_id)
        .await?
        .into_iter()
        .find(|b| b.period == Period::Never.as_str())
        .map(Json)
        .ok_or_else(|| api(TreasuryError::BudgetNotFound))
}

async fn list_budgets(
    State(s): State<TreasuryState>,
    auth: Authenticated,
    Path((kind, subject)): Path<(String, String)>,
) -> Result<Json<treasury::ListBudgetsResponse>, ApiError> {
    require_read(&auth)?;
    let budgets = budgets_of(&s, &kind, &subject).await?;
    Ok(Json(treasury::ListBudgetsResponse { budgets }))
}

fn to_policy(a: &ActivePolicy) -> treasury::PolicyResponse {
    let rules = serde_json::from_str::<Policy>(&a.canonical_json)
        .map(|p| p.rules.into_iter().map(|r| r.id).collect())
        .unwrap_or_default();
    treasury::PolicyResponse {
        policy_bundle_id: a.bundle_id.clone(),
        version: a.version,
        policy_toml: a.source_toml.clone(),
        canonical_json: a.canonical_json.clone(),
        activated_by: a.activated_by.clone(),
        activated_at_ms: a.activated_at_ms,
        rules,
    }
}

async fn set_policy(
    State(s): State<TreasuryState>,
    auth: Scoped<AdminScope>,
    ProtoJson(req): ProtoJson<treasury::SetPolicyRequest>,
) -> Result<Json<treasury::PolicyResponse>, ApiError> {
    idempotency::validate_key(&req.idempotency_key).map_err(|e| api(e.into()))?;
    // Validated before anything is claimed, so a bad policy changes nothing.
    Policy::from_toml(&req.policy_toml).map_err(api)?;
    let p = &s.payments;
    let scope = format!("treasury.policy/{}", auth.sub);
    let fingerprint = idempotency::fingerprint(&req).map_err(ApiError::internal)?;
    let policies = p.policies.clone();
    let by = auth.sub.clone();
    idempotent(
        p,
        &scope,
        &req.idempotency_key,
        &fingerprint,
        async |tx, now| {
            let active = policies.activate(tx, &req.policy_toml, &by, now).await?;
            Ok(to_policy(&active))
        },
    )
    .await
}

async fn get_policy(
    State(s): State<TreasuryState>,
    auth: Authenticated,
) -> Result<Json<treasury::PolicyResponse>, ApiError> {
    require_read(&auth)?;
    let active = s.payments.policies.active().await.map_err(api)?;
    Ok(Json(to_policy(&active)))
}
