//! `GET /v1/ledger/statement?from_ms=&to_ms=` (`ledger:read`): the CSV statement of a service's
//! ledger (opening balance, period debits and credits, closing balance per account), for the
//! services that keep their money in `crates/ledger`.

use std::sync::Arc;

use axum::{
    Router,
    extract::{FromRef, Query, State},
    response::IntoResponse,
    routing::get,
};
use oa_auth::Verifier;
use oa_store::Db;
use serde::Deserialize;

use crate::{ApiError, Route, Scoped};

crate::scope!(LedgerRead, "ledger:read");

pub const ROUTES: [Route; 1] = [Route::built(
    "GET",
    "/v1/ledger/statement",
    "CSV statement of the ledger for [from_ms, to_ms): opening balance, period debits and credits, closing balance per account",
    None,
    None,
    Some("ledger:read"),
)];

#[derive(Clone)]
pub struct LedgerState {
    pub db: Db,
    pub verifier: Arc<Verifier>,
}

impl FromRef<LedgerState> for Arc<Verifier> {
    fn from_ref(s: &LedgerState) -> Self {
        s.verifier.clone()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Period {
    from_ms: u64,
    to_ms: u64,
}

pub fn router(state: LedgerState) -> Router {
    Router::new()
        .route("/v1/ledger/statement", get(statement))
        .with_state(state)
}

async fn statement(
    State(s): State<LedgerState>,
    _auth: Scoped<LedgerRead>,
    period: Result<Query<Period>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(p) = period.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    if p.from_ms > p.to_ms {
        return Err(ApiError::bad_request(
            "INVALID_PERIOD",
            "from_ms must not be after to_ms",
        ));
    }
    let mut conn = s.db.reader().await.map_err(ApiError::internal)?;
    let lines = oa_ledger::statement(&mut conn, p.from_ms, p.to_ms)
        .await
        .map_err(ApiError::internal)?;
    Ok((
        [(http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        oa_ledger::statement_csv(&lines),
    ))
}
