//! How Aegis pays a claim: through Hydra's liquidity API (`quote_pay`, then `pay`), with Aegis's
//! own identity token for audience `hydra`. Aegis never holds Lightning credentials (DESIGN.md).
//!
//! Contract: `proto/openagents/hydra/v1/liquidity.proto`.

use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use oa_auth::TokenSource;
use oa_proto::hydra;
use oa_service::{
    ApiError,
    peer::{PeerClient, PeerError},
};
use serde::{Serialize, de::DeserializeOwned};

/// Bound on one call to Hydra: a pay waits for the payment up to Hydra's own bound (20 s), so
/// this leaves room for the round trip.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(45);
/// Largest answer read from Hydra: a response and two receipts are a few KiB.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The scopes Aegis's tokens for Hydra carry.
pub const SCOPES: [&str; 1] = ["hydra:liquidity"];

/// Pays invoices for Aegis.
///
/// Implementors pass idempotency keys through unchanged: Hydra's replay of a key is what makes a
/// re-driven payout safe (Aegis derives the keys from the claim, so a retry after a crash asks
/// for the same payment). An error that is `retryable` means nothing is known about the outcome
/// (the caller keeps the claim `paying` and asks again with the same keys); any other error is a
/// typed refusal, and the call changed nothing.
#[async_trait]
pub trait Payer: Send + Sync + 'static {
    /// False when no Hydra is configured: payouts are refused before any state changes.
    fn configured(&self) -> bool {
        true
    }
    async fn quote_pay(
        &self,
        req: hydra::QuotePayRequest,
    ) -> Result<hydra::QuotePayResponse, ApiError>;
    async fn pay(&self, req: hydra::PayRequest) -> Result<hydra::PayResponse, ApiError>;
}

/// No `--hydra-url`: claims can be opened and denied, not paid.
pub struct NotConfigured;

fn not_configured() -> ApiError {
    ApiError::unavailable(
        "HYDRA_NOT_CONFIGURED",
        "aegis has no --hydra-url; claims cannot be paid",
    )
}

#[async_trait]
impl Payer for NotConfigured {
    fn configured(&self) -> bool {
        false
    }
    async fn quote_pay(
        &self,
        _req: hydra::QuotePayRequest,
    ) -> Result<hydra::QuotePayResponse, ApiError> {
        Err(not_configured())
    }
    async fn pay(&self, _req: hydra::PayRequest) -> Result<hydra::PayResponse, ApiError> {
        Err(not_configured())
    }
}

pub struct HttpPayer {
    peer: PeerClient,
}

impl HttpPayer {
    pub fn new(base: &str, tokens: TokenSource) -> anyhow::Result<Self> {
        Ok(Self {
            peer: PeerClient::new(base, tokens, CALL_TIMEOUT, MAX_RESPONSE_BYTES)?,
        })
    }

    async fn post<Req: Serialize + Sync, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, ApiError> {
        answer(self.peer.post(path, req).await)
    }
}

fn answer<Resp: DeserializeOwned>(
    answered: Result<(StatusCode, Vec<u8>), PeerError>,
) -> Result<Resp, ApiError> {
    let (status, bytes) = answered.map_err(|e| unavailable(&e))?;
    if status.is_success() {
        return oa_service::parse_json(&bytes).map_err(|_| {
            ApiError::unavailable(
                "HYDRA_UNAVAILABLE",
                "hydra answered with a body that is not its contract",
            )
        });
    }
    let envelope: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let code = envelope["error"]["code"]
        .as_str()
        .unwrap_or("HYDRA_ERROR")
        .to_owned();
    let message = envelope["error"]["message"]
        .as_str()
        .unwrap_or("hydra refused the request")
        .to_owned();
    let mut e = ApiError::new(status, code, message);
    // A conflict on a key in progress, a server error or an explicit retryable flag: the outcome
    // is unknown, ask again with the same key.
    e.retryable = status.is_server_error()
        || envelope["error"]["retryable"].as_bool().unwrap_or(false)
        || status == StatusCode::TOO_MANY_REQUESTS;
    if let Some(r) = envelope["error"]["reason_code"].as_str() {
        e.reason_code = Some(r.to_owned());
    }
    Err(e)
}

fn unavailable(e: &PeerError) -> ApiError {
    tracing::warn!("hydra call failed: {e}");
    ApiError::unavailable("HYDRA_UNAVAILABLE", "hydra is unavailable; retry later")
}

#[async_trait]
impl Payer for HttpPayer {
    async fn quote_pay(
        &self,
        req: hydra::QuotePayRequest,
    ) -> Result<hydra::QuotePayResponse, ApiError> {
        self.post("/v1/liquidity/quote_pay", &req).await
    }
    async fn pay(&self, req: hydra::PayRequest) -> Result<hydra::PayResponse, ApiError> {
        self.post("/v1/liquidity/pay", &req).await
    }
}
