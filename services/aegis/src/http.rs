//! Aegis's HTTP authority API (paths from seed 004, plus the verifier registry, verdicts,
//! decisions and the decision queue).
//!
//! Scopes: `aegis:verify` (classify, verify, quote), `aegis:verdict` (a verifier's runner
//! submits signed verdicts), `aegis:decide` / `aegis:decide_human` (decide adjudicated / human
//! verifications, read the queue), `aegis:admin` (verifier registry, risk budgets, cases,
//! simulation runs), `aegis:read` (every read: verifications, risk status, cases, scoreboard,
//! verifiers), `aegis:underwrite` (issue warranties, reserve and release bonds), `aegis:claim`
//! (open claims and disputes, as a warranty's beneficiary or a party), `aegis:adjust` (resolve
//! claims: pay or deny), `aegis:arbitrate` (decide disputes). Every scope is checked before the body is read, so a caller without it learns
//! nothing about the body (403 before any 400).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{FromRef, FromRequestParts, Path, Query, State, rejection::QueryRejection},
    routing::{get, post},
};
use http::request::Parts;
use oa_auth::{AuthError, Authenticated, Verifier};
use oa_proto::aegis;
use oa_service::{ProtoJson, Route, Scoped};
use serde::Deserialize;

use crate::{error::AegisError, service::Aegis};

pub const SCOPE_VERIFY: &str = "aegis:verify";
pub const SCOPE_VERDICT: &str = "aegis:verdict";
pub const SCOPE_DECIDE: &str = "aegis:decide";
pub const SCOPE_DECIDE_HUMAN: &str = "aegis:decide_human";
/// Besides `aegis:decide`, what lets a caller decide and see the queue (a [`Decider`]).
const ALSO_DECIDE: &[&str] = &[SCOPE_DECIDE_HUMAN];
pub const SCOPE_ADMIN: &str = "aegis:admin";
pub const SCOPE_READ: &str = "aegis:read";
pub const SCOPE_UNDERWRITE: &str = "aegis:underwrite";
pub const SCOPE_CLAIM: &str = "aegis:claim";
pub const SCOPE_ADJUST: &str = "aegis:adjust";
pub const SCOPE_ARBITRATE: &str = "aegis:arbitrate";
oa_service::scope!(UnderwriteScope, "aegis:underwrite");
oa_service::scope!(ClaimScope, "aegis:claim");
oa_service::scope!(AdjustScope, "aegis:adjust");
oa_service::scope!(ArbitrateScope, "aegis:arbitrate");
oa_service::scope!(VerifyScope, "aegis:verify");
oa_service::scope!(VerdictScope, "aegis:verdict");
oa_service::scope!(AdminScope, "aegis:admin");
oa_service::scope!(ReadScope, "aegis:read");

#[derive(Clone)]
pub struct AegisState {
    pub aegis: Arc<Aegis>,
    pub verifier: Arc<Verifier>,
}

impl FromRef<AegisState> for Arc<Verifier> {
    fn from_ref(s: &AegisState) -> Self {
        s.verifier.clone()
    }
}

/// A caller holding `aegis:decide` or `aegis:decide_human` (which tier it may decide is checked
/// against the verification).
pub struct Decider {
    pub sub: String,
    pub human: bool,
}

impl<S> FromRequestParts<S> for Decider
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        claims.require_any(SCOPE_DECIDE, ALSO_DECIDE)?;
        let human = claims.has_scope(SCOPE_DECIDE_HUMAN);
        Ok(Decider {
            sub: claims.sub,
            human,
        })
    }
}

const fn built(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<&'static str>,
    response: &'static str,
    scope: &'static str,
) -> Route {
    Route::built(method, path, summary, request, Some(response), Some(scope))
}

pub const ROUTES: [Route; 28] = [
    built(
        "POST",
        "/v1/aegis/classify",
        "Classify a work unit's verifiability and the independence tier it needs",
        Some("openagents.aegis.v1.ClassifyRequest"),
        "openagents.aegis.v1.ClassifyResponse",
        SCOPE_VERIFY,
    ),
    built(
        "POST",
        "/v1/aegis/verify",
        "Run the verification plan for a work unit",
        Some("openagents.aegis.v1.VerifyRequest"),
        "openagents.aegis.v1.VerifyResponse",
        SCOPE_VERIFY,
    ),
    built(
        "GET",
        "/v1/aegis/verification/{id}",
        "A verification and, once final, its receipt",
        None,
        "openagents.aegis.v1.GetVerificationResponse",
        SCOPE_READ,
    ),
    built(
        "GET",
        "/v1/aegis/verification/{id}/detail",
        "A verification with its checks, verdicts, quorum and decision",
        None,
        "openagents.aegis.v1.VerifyResponse",
        SCOPE_READ,
    ),
    built(
        "POST",
        "/v1/aegis/verification/{id}/verdict",
        "A registered verifier's signed verdict on a heterogeneous verification",
        Some("openagents.aegis.v1.SubmitVerdictRequest"),
        "openagents.aegis.v1.VerifyResponse",
        SCOPE_VERDICT,
    ),
    built(
        "POST",
        "/v1/aegis/verification/{id}/decide",
        "Decide an adjudicated (aegis:decide) or human (aegis:decide_human) verification",
        Some("openagents.aegis.v1.DecideRequest"),
        "openagents.aegis.v1.VerifyResponse",
        SCOPE_DECIDE,
    )
    .or_any_of(ALSO_DECIDE),
    built(
        "GET",
        "/v1/aegis/queue",
        "Pending adjudicated and human verifications, oldest first",
        None,
        "openagents.aegis.v1.QueueResponse",
        SCOPE_DECIDE,
    )
    .or_any_of(ALSO_DECIDE),
    built(
        "POST",
        "/v1/aegis/verifiers",
        "Register a verifier: id, secp256k1 key, family, simulation profile",
        Some("openagents.aegis.v1.RegisterVerifierRequest"),
        "openagents.aegis.v1.VerifierResponse",
        SCOPE_ADMIN,
    ),
    built(
        "GET",
        "/v1/aegis/verifiers",
        "Registered verifiers and their current weights",
        None,
        "openagents.aegis.v1.ListVerifiersResponse",
        SCOPE_READ,
    ),
    built(
        "POST",
        "/v1/aegis/verifiers/{id}/disable",
        "Disable a verifier: its verdicts are refused from now on",
        Some("openagents.aegis.v1.DisableVerifierRequest"),
        "openagents.aegis.v1.VerifierResponse",
        SCOPE_ADMIN,
    ),
    built(
        "POST",
        "/v1/aegis/risk_budget/set",
        "Set an agent's or an org's risk budget",
        Some("openagents.aegis.v1.SetRiskBudgetRequest"),
        "openagents.aegis.v1.RiskBudgetResponse",
        SCOPE_ADMIN,
    ),
    built(
        "GET",
        "/v1/aegis/risk_budget/status",
        "Risk budget state (?subject_type=agent|org&subject_id=...)",
        None,
        "openagents.aegis.v1.RiskBudgetResponse",
        SCOPE_READ,
    ),
    built(
        "POST",
        "/v1/aegis/warranty/quote",
        "Price a warranty: verification fee and liability premium",
        Some("openagents.aegis.v1.WarrantyQuoteRequest"),
        "openagents.aegis.v1.WarrantyQuoteResponse",
        SCOPE_VERIFY,
    ),
    built(
        "POST",
        "/v1/aegis/warranty/issue",
        "Issue a warranty on a passed verification: premium collected, coverage reserved",
        Some("openagents.aegis.v1.IssueWarrantyRequest"),
        "openagents.aegis.v1.WarrantyResponse",
        SCOPE_UNDERWRITE,
    ),
    built(
        "GET",
        "/v1/aegis/warranty/{id}",
        "A warranty, its coverage left and its issue receipt",
        None,
        "openagents.aegis.v1.WarrantyResponse",
        SCOPE_READ,
    ),
    built(
        "POST",
        "/v1/aegis/bond/reserve",
        "Reserve a provider's stake behind a warranty (a pending ledger transfer)",
        Some("openagents.aegis.v1.ReserveBondRequest"),
        "openagents.aegis.v1.BondResponse",
        SCOPE_UNDERWRITE,
    ),
    built(
        "POST",
        "/v1/aegis/bond/release",
        "Release a provider's bond (void its reservation)",
        Some("openagents.aegis.v1.ReleaseBondRequest"),
        "openagents.aegis.v1.BondResponse",
        SCOPE_UNDERWRITE,
    ),
    built(
        "GET",
        "/v1/aegis/bond/{id}",
        "A bond and its latest receipt",
        None,
        "openagents.aegis.v1.BondResponse",
        SCOPE_READ,
    ),
    built(
        "POST",
        "/v1/aegis/claim/open",
        "Open a claim against a warranty, with the claimant's invoice and evidence",
        Some("openagents.aegis.v1.OpenClaimRequest"),
        "openagents.aegis.v1.ClaimResponse",
        SCOPE_CLAIM,
    ),
    built(
        "POST",
        "/v1/aegis/claim/resolve",
        "Pay a claim through Hydra (exactly once) or deny it with a reason code",
        Some("openagents.aegis.v1.ResolveClaimRequest"),
        "openagents.aegis.v1.ClaimResponse",
        SCOPE_ADJUST,
    ),
    built(
        "GET",
        "/v1/aegis/claim/{id}",
        "A claim, its latest receipt and its warranty's bond",
        None,
        "openagents.aegis.v1.ClaimResponse",
        SCOPE_READ,
    ),
    built(
        "POST",
        "/v1/aegis/dispute/open",
        "Dispute a denied or paid claim",
        Some("openagents.aegis.v1.OpenDisputeRequest"),
        "openagents.aegis.v1.DisputeResponse",
        SCOPE_CLAIM,
    ),
    built(
        "POST",
        "/v1/aegis/dispute/arbitrate",
        "An arbitrator's decision on a dispute, before its deadline",
        Some("openagents.aegis.v1.ArbitrateDisputeRequest"),
        "openagents.aegis.v1.DisputeResponse",
        SCOPE_ARBITRATE,
    ),
    built(
        "GET",
        "/v1/aegis/dispute/{id}",
        "A dispute, its arbitration receipt and its claim",
        None,
        "openagents.aegis.v1.DisputeResponse",
        SCOPE_READ,
    ),
    built(
        "POST",
        "/v1/aegis/cases/create",
        "Register a ground-truth (known-answer) case",
        Some("openagents.aegis.v1.CreateCaseRequest"),
        "openagents.aegis.v1.CreateCaseResponse",
        SCOPE_ADMIN,
    ),
    built(
        "GET",
        "/v1/aegis/cases",
        "List ground-truth cases (?after=<case_id>&limit=1..=50)",
        None,
        "openagents.aegis.v1.ListCasesResponse",
        SCOPE_READ,
    ),
    built(
        "POST",
        "/v1/aegis/sim/run",
        "Run simulated verifiers against cases",
        Some("openagents.aegis.v1.SimRunRequest"),
        "openagents.aegis.v1.SimRunResponse",
        SCOPE_ADMIN,
    ),
    built(
        "GET",
        "/v1/aegis/sim/scoreboard",
        "Per verifier: accuracy, false-pass and false-fail rates (ppm), quorum weight",
        None,
        "openagents.aegis.v1.ScoreboardResponse",
        SCOPE_READ,
    ),
];

pub fn router(state: AegisState) -> Router {
    Router::new()
        .route("/v1/aegis/classify", post(classify))
        .route("/v1/aegis/verify", post(verify))
        .route("/v1/aegis/verification/{id}", get(get_verification))
        .route("/v1/aegis/verification/{id}/detail", get(detail))
        .route("/v1/aegis/verification/{id}/verdict", post(verdict))
        .route("/v1/aegis/verification/{id}/decide", post(decide))
        .route("/v1/aegis/queue", get(queue))
        .route("/v1/aegis/verifiers", post(register).get(verifiers))
        .route("/v1/aegis/verifiers/{id}/disable", post(disable))
        .route("/v1/aegis/risk_budget/set", post(set_budget))
        .route("/v1/aegis/risk_budget/status", get(budget_status))
        .route("/v1/aegis/warranty/quote", post(quote))
        .route("/v1/aegis/warranty/issue", post(issue_warranty))
        .route("/v1/aegis/warranty/{id}", get(get_warranty))
        .route("/v1/aegis/bond/reserve", post(reserve_bond))
        .route("/v1/aegis/bond/release", post(release_bond))
        .route("/v1/aegis/bond/{id}", get(get_bond))
        .route("/v1/aegis/claim/open", post(open_claim))
        .route("/v1/aegis/claim/resolve", post(resolve_claim))
        .route("/v1/aegis/claim/{id}", get(get_claim))
        .route("/v1/aegis/dispute/open", post(open_dispute))
        .route("/v1/aegis/dispute/arbitrate", post(arbitrate))
        .route("/v1/aegis/dispute/{id}", get(get_dispute))
        .route("/v1/aegis/cases/create", post(create_case))
        .route("/v1/aegis/cases", get(cases))
        .route("/v1/aegis/sim/run", post(sim_run))
        .route("/v1/aegis/sim/scoreboard", get(scoreboard))
        .with_state(state)
}

type Answer<T> = Result<Json<T>, AegisError>;

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, AegisError> {
    q.map(|Query(q)| q)
        .map_err(|e| crate::error::invalid("INVALID_QUERY", e.body_text()))
}

async fn classify(
    State(s): State<AegisState>,
    _auth: Scoped<VerifyScope>,
    ProtoJson(req): ProtoJson<aegis::ClassifyRequest>,
) -> Answer<aegis::ClassifyResponse> {
    s.aegis.classify(req).await.map(Json)
}

async fn verify(
    State(s): State<AegisState>,
    auth: Scoped<VerifyScope>,
    ProtoJson(req): ProtoJson<aegis::VerifyRequest>,
) -> Answer<aegis::VerifyResponse> {
    s.aegis.verify(&auth.sub, req).await.map(Json)
}

async fn get_verification(
    State(s): State<AegisState>,
    _auth: Scoped<ReadScope>,
    Path(id): Path<String>,
) -> Answer<aegis::GetVerificationResponse> {
    s.aegis.get(&id).await.map(Json)
}

async fn detail(
    State(s): State<AegisState>,
    _auth: Scoped<ReadScope>,
    Path(id): Path<String>,
) -> Answer<aegis::VerifyResponse> {
    s.aegis.detail(&id).await.map(Json)
}

async fn verdict(
    State(s): State<AegisState>,
    auth: Scoped<VerdictScope>,
    Path(id): Path<String>,
    ProtoJson(req): ProtoJson<aegis::SubmitVerdictRequest>,
) -> Answer<aegis::VerifyResponse> {
    s.aegis.submit_verdict(&auth.sub, &id, req).await.map(Json)
}

async fn decide(
    State(s): State<AegisState>,
    auth: Decider,
    Path(id): Path<String>,
    ProtoJson(req): ProtoJson<aegis::DecideRequest>,
) -> Answer<aegis::VerifyResponse> {
    s.aegis
        .decide(&auth.sub, auth.human, &id, req)
        .await
        .map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueQuery {
    limit: Option<u32>,
}

async fn queue(
    State(s): State<AegisState>,
    _auth: Decider,
    q: Result<Query<QueueQuery>, QueryRejection>,
) -> Answer<aegis::QueueResponse> {
    let q = query(q)?;
    s.aegis
        .queue(q.limit.unwrap_or(crate::verification::MAX_QUEUE_PAGE))
        .await
        .map(Json)
}

async fn register(
    State(s): State<AegisState>,
    auth: Scoped<AdminScope>,
    ProtoJson(req): ProtoJson<aegis::RegisterVerifierRequest>,
) -> Answer<aegis::VerifierResponse> {
    s.aegis.register_verifier(&auth.sub, req).await.map(Json)
}

async fn verifiers(
    State(s): State<AegisState>,
    _auth: Scoped<ReadScope>,
) -> Answer<aegis::ListVerifiersResponse> {
    s.aegis.list_verifiers().await.map(Json)
}

async fn disable(
    State(s): State<AegisState>,
    auth: Scoped<AdminScope>,
    Path(id): Path<String>,
    ProtoJson(req): ProtoJson<aegis::DisableVerifierRequest>,
) -> Answer<aegis::VerifierResponse> {
    s.aegis
        .disable_verifier(&auth.sub, &id, req)
        .await
        .map(Json)
}

async fn set_budget(
    State(s): State<AegisState>,
    auth: Scoped<AdminScope>,
    ProtoJson(req): ProtoJson<aegis::SetRiskBudgetRequest>,
) -> Answer<aegis::RiskBudgetResponse> {
    s.aegis.set_budget(&auth.sub, req).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    subject_type: String,
    subject_id: String,
}

async fn budget_status(
    State(s): State<AegisState>,
    _auth: Scoped<ReadScope>,
    q: Result<Query<StatusQuery>, QueryRejection>,
) -> Answer<aegis::RiskBudgetResponse> {
    let q = query(q)?;
    s.aegis
        .budget_status(&q.subject_type, &q.subject_id)
        .await
        .map(Json)
}

async fn quote(
    State(s): State<AegisState>,
    _auth: Scoped<VerifyScope>,
    ProtoJson(req): ProtoJson<aegis::WarrantyQuoteRequest>,
) -> Answer<aegis::WarrantyQuoteResponse> {
    s.aegis.quote(req).await.map(Json)
}

async fn create_case(
    State(s): State<AegisState>,
    auth: Scoped<AdminScope>,
    ProtoJson(req): ProtoJson<aegis::CreateCaseRequest>,
) -> Answer<aegis::CreateCaseResponse> {
    s.aegis.create_case(&auth.sub, req).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesQuery {
    #[serde(default)]
    after: String,
    limit: Option<u32>,
}

async fn cases(
    State(s): State<AegisState>,
    _auth: Scoped<ReadScope>,
    q: Result<Query<CasesQuery>, QueryRejection>,
) -> Answer<aegis::ListCasesResponse> {
    let q = query(q)?;
    s.aegis.list_cases(&q.after, q.limit).await.map(Json)
}

async fn sim_run(
    State(s): State<AegisState>,
    auth: Scoped<AdminScope>,
    ProtoJson(req): ProtoJson<aegis::SimRunRequest>,
) -> Answer<aegis::SimRunResponse> {
    s.aegis.sim_run(&auth.sub, req).await.map(Json)
}

async fn scoreboard(
    State(s): State<AegisState>,
    _auth: Scoped<ReadScope>,
) -> Answer<aegis::ScoreboardResponse> {
    s.aegis.scoreboard().await.map(Json)
}

async fn issue_warranty(
    State(s): State<AegisState>,
    auth: Scoped<UnderwriteScope>,
    ProtoJson(req): ProtoJson<aegis::IssueWarrantyRequest>,
) -> Answer<aegis::WarrantyResponse> {
    s.aegis.issue_warranty(&auth.sub, req).await.map(Json)
}

async fn get_warranty(
    State(s): State<AegisState>,
    _auth: Scoped<ReadScope>,
    Path(id): Path<String>,
) -> Answer<aegis::WarrantyResponse> {
    s.aegis.get_warranty(&id).await.map(Json)
}

async fn reserve_bond(
    State(s): State<AegisState>,
    auth: Scoped<UnderwriteScope>,
    ProtoJson(req): ProtoJson<aegis::ReserveBondRequest>,
) -> Answer<aegis::BondResponse> {
    s.aegis.reserve_bond(&auth.sub, req).await.map(Json)
}

async fn release_bond(
    State(s): State<AegisState>,
    auth: Scoped<UnderwriteScope>,
    ProtoJson(req): ProtoJson<aegis::ReleaseBondRequest>,
) -> Answer<aegis::BondResponse> {
    s.aegis.release_bond(&auth.sub, req).await.map(Json)
}

async fn get_bond(
    State(s): State<AegisState>,
    _auth: Scoped<ReadScope>,
    Path(id): Path<String>,
) -> Answer<aegis::BondResponse> {
    s.aegis.get_bond(&id).await.map(Json)
}

async fn open_claim(
    State(s): State<AegisState>,
    auth: Scoped<ClaimScope>,
    ProtoJson(req): ProtoJson<aegis::OpenClaimRequest>,
) -> Answer<aegis::ClaimResponse> {
    s.aegis.open_claim(&auth.sub, req).await.map(Json)
}

async fn resolve_claim(
    State(s): State<AegisState>,
    auth: Scoped<AdjustScope>,
    ProtoJson(req): ProtoJson<aegis::ResolveClaimRequest>,
) -> Answer<aegis::ClaimResponse> {
    s.aegis.resolve_claim(&auth.sub, req).await.map(Json)
}

async fn get_claim(
    State(s): State<AegisState>,
    _auth: Scoped<ReadScope>,
    Path(id): Path<String>,
) -> Answer<aegis::ClaimResponse> {
    s.aegis.get_claim(&id).await.map(Json)
}

async fn open_dispute(
    State(s): State<AegisState>,
    auth: Scoped<ClaimScope>,
    ProtoJson(req): ProtoJson<aegis::OpenDisputeRequest>,
) -> Answer<aegis::DisputeResponse> {
    s.aegis.open_dispute(&auth.sub, req).await.map(Json)
}

async fn arbitrate(
    State(s): State<AegisState>,
    auth: Scoped<ArbitrateScope>,
    ProtoJson(req): ProtoJson<aegis::ArbitrateDisputeRequest>,
) -> Answer<aegis::DisputeResponse> {
    s.aegis.arbitrate(&auth.sub, req).await.map(Json)
}

async fn get_dispute(
    State(s): State<AegisState>,
    _auth: Scoped<ReadScope>,
    Path(id): Path<String>,
) -> Answer<aegis::DisputeResponse> {
    s.aegis.get_dispute(&id).await.map(Json)
}
