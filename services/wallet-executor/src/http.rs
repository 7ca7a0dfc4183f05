//! The executor's HTTP surface: its receipts (from the service kit), and on the simulated
//! network only, invoice creation at a simulated payee for demos and tests.

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

use crate::node::sim::SimNetwork;

/// Scope to create invoices on the simulated network.
pub const SCOPE_SIM: &str = "wallet:sim";
oa_service::scope!(Sim, "wallet:sim");
/// Default expiry of a simulated invoice.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(3600);

pub const ROUTES: [Route; 1] = [Route::built(
    "POST",
    "/v1/sim/invoices",
    "Simulated network only: a payee node issues a BOLT11 invoice",
    Some("openagents.wallet.v1.CreateSimInvoiceRequest"),
    Some("openagents.wallet.v1.CreateSimInvoiceResponse"),
    Some(SCOPE_SIM),
)];

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
        .with_state(state)
}

async fn create_invoice(
    State(s): State<SimState>,
    _auth: Scoped<Sim>,
    ProtoJson(req): ProtoJson<wallet::CreateSimInvoiceRequest>,
) -> Result<Json<wallet::CreateSimInvoiceResponse>, ApiError> {
    let Some(sim) = s.sim else {
        return Err(ApiError::not_supported(
            "invoice creation on a simulated payee needs the sim backend",
        ));
    };
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
        .map_err(|e| match e {
            crate::node::sim::SimError::UnknownNode(_) => {
                ApiError::bad_request("UNKNOWN_NODE", e.to_string())
            }
            crate::node::sim::SimError::BadExpiry => {
                ApiError::bad_request("INVALID_EXPIRY", e.to_string())
            }
            crate::node::sim::SimError::Invoice(ref i) => {
                ApiError::bad_request(i.code(), e.to_string())
            }
            crate::node::sim::SimError::NoChannel(..) => {
                ApiError::bad_request("NO_CHANNEL", e.to_string())
            }
            crate::node::sim::SimError::Journal(_) => ApiError::internal(e),
        })?;
    Ok(Json(wallet::CreateSimInvoiceResponse {
        invoice: created.bolt11,
        payment_hash: created.payment_hash.to_string(),
        node_pubkey: created.node_pubkey,
    }))
}
