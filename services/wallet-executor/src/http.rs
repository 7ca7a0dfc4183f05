//! The executor's HTTP surface: its receipts (from the service kit), and on the simulated
//! network only, development levers for demos and tests: invoice creation at a simulated payee,
//! mining blocks, and funding our on-chain wallet. With another backend they answer
//! `NOT_SUPPORTED` and change nothing.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{FromRef, State},
    routing::post,
};
use oa_auth::Verifier;
use oa_money::Msat;
use oa_proto::wallet;
use oa_service::{ApiError, ProtoJson, Route, Scoped};

use crate::node::{
    LightningNode,
    sim::{SimError, SimNetwork},
};

/// Scope of the simulated network's levers.
pub const SCOPE_SIM: &str = "wallet:sim";
oa_service::scope!(Sim, "wallet:sim");
/// Default expiry of a simulated invoice.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(3600);

pub const ROUTES: [Route; 3] = [
    Route::built(
        "POST",
        "/v1/sim/invoices",
        "Simulated network only: a payee node issues a BOLT11 invoice",
        Some("openagents.wallet.v1.CreateSimInvoiceRequest"),
        Some("openagents.wallet.v1.CreateSimInvoiceResponse"),
        Some(SCOPE_SIM),
    ),
    Route::built(
        "POST",
        "/v1/sim/mine",
        "Simulated network only: mine blocks on the simulated chain",
        Some("openagents.wallet.v1.SimMineRequest"),
        Some("openagents.wallet.v1.SimMineResponse"),
        Some(SCOPE_SIM),
    ),
    Route::built(
        "POST",
        "/v1/sim/fund",
        "Simulated network only: deposit into our on-chain wallet, confirmed",
        Some("openagents.wallet.v1.SimFundRequest"),
        Some("openagents.wallet.v1.SimFundResponse"),
        Some(SCOPE_SIM),
    ),
];

#[derive(Clone)]
pub struct SimState {
    pub sim: Option<SimNetwork>,
    pub verifier: Arc<Verifier>,
}

impl FromRef<SimState> for Arc<Verifier> {
    fn from_ref(s: &SimState) -> Self {
        s.verifier.clone()
    }
}

pub fn router(state: SimState) -> Router {
    Router::new()
        .route("/v1/sim/invoices", post(create_invoice))
        .route("/v1/sim/mine", post(mine))
        .route("/v1/sim/fund", post(fund))
        .with_state(state)
}

fn sim_of(s: SimState, what: &str) -> Result<SimNetwork, ApiError> {
    s.sim
        .ok_or_else(|| ApiError::not_supported(format!("{what} needs the sim backend")))
}

/// The one mapping of the sim's errors to HTTP.
fn sim_error(e: SimError) -> ApiError {
    match e {
        SimError::UnknownNode(_) => ApiError::bad_request("UNKNOWN_NODE", e.to_string()),
        SimError::BadExpiry => ApiError::bad_request("INVALID_EXPIRY", e.to_string()),
        SimError::BadAmount(_) => ApiError::bad_request("INVALID_AMOUNT", e.to_string()),
        SimError::BadBlocks => ApiError::bad_request("INVALID_BLOCKS", e.to_string()),
        SimError::Invoice(ref i) => ApiError::bad_request(i.code(), e.to_string()),
        SimError::NoChannel(..) => ApiError::bad_request("NO_CHANNEL", e.to_string()),
        SimError::Journal(_) => ApiError::internal(e),
    }
}

async fn create_invoice(
    State(s): State<SimState>,
    _auth: Scoped<Sim>,
    ProtoJson(req): ProtoJson<wallet::CreateSimInvoiceRequest>,
) -> Result<Json<wallet::CreateSimInvoiceResponse>, ApiError> {
    let sim = sim_of(s, "invoice creation on a simulated payee")?;
    let amount = match req.amount_msat {
        0 => None,
        v => {
            Some(Msat::new(v).map_err(|e| ApiError::bad_request("INVALID_AMOUNT", e.to_string()))?)
        }
    };
    let expiry = match req.expiry_secs {
        0 => DEFAULT_EXPIRY,
        s => Duration::from_secs(u64::from(s)),
    };
    let node = if req.node.is_empty() {
        "merchant"
    } else {
        req.node.as_str()
    };
    let created = sim
        .create_invoice(node, amount, &req.description, expiry)
        .map_err(sim_error)?;
    Ok(Json(wallet::CreateSimInvoiceResponse {
        invoice: created.bolt11,
        payment_hash: created.payment_hash.to_string(),
        node_pubkey: created.node_pubkey,
    }))
}

async fn mine(
    State(s): State<SimState>,
    _auth: Scoped<Sim>,
    ProtoJson(req): ProtoJson<wallet::SimMineRequest>,
) -> Result<Json<wallet::SimMineResponse>, ApiError> {
    let sim = sim_of(s, "mining blocks")?;
    let height = sim.mine_blocks(req.blocks).map_err(sim_error)?;
    Ok(Json(wallet::SimMineResponse { height }))
}

async fn fund(
    State(s): State<SimState>,
    _auth: Scoped<Sim>,
    ProtoJson(req): ProtoJson<wallet::SimFundRequest>,
) -> Result<Json<wallet::SimFundResponse>, ApiError> {
    let sim = sim_of(s, "funding the on-chain wallet")?;
    let amount = Msat::new(req.amount_msat)
        .map_err(|e| ApiError::bad_request("INVALID_AMOUNT", e.to_string()))?;
    let txid = sim.fund_wallet(amount).map_err(sim_error)?;
    let balance = sim
        .wallet_balance()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(wallet::SimFundResponse {
        txid,
        confirmed_balance_msat: balance.confirmed.as_u64(),
    }))
}
