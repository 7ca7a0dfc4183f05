//! Treasury's view of Hydra: a trait (tests use a fake) and the HTTP client.
//!
//! Contracts: `proto/openagents/hydra/v1/{liquidity,routing,credit}.proto`.

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

/// Bound on one call to Hydra (a pay waits for the payment up to Hydra's own bound).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(45);
/// Largest answer read from Hydra: a response and a few receipts are a few KiB.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The scopes treasury's tokens for Hydra carry.
pub const SCOPES: [&str; 4] = [
    "hydra:liquidity",
    "hydra:credit",
    "hydra:routing",
    "hydra:read",
];

/// Hydra's API as treasury uses it.
///
/// Implementors pass idempotency keys through unchanged: Hydra's replay of a key is what makes
/// treasury's retries safe. An error that is `retryable` means Hydra could not be asked or did
/// not finish (nothing is known about the outcome of a call that moves money; retry it with the
/// same key); any other error is Hydra's typed refusal, and the call changed nothing.
#[async_trait]
pub trait Hydra: Send + Sync + 'static {
    async fn quote_pay(
        &self,
        req: hydra::QuotePayRequest,
    ) -> Result<hydra::QuotePayResponse, ApiError>;
    async fn pay(&self, req: hydra::PayRequest) -> Result<hydra::PayResponse, ApiError>;
    async fn liquidity_status(&self) -> Result<hydra::LiquidityStatusResponse, ApiError>;
    async fn routing_score(
        &self,
        req: hydra::RoutingScoreRequest,
    ) -> Result<hydra::RoutingScoreResponse, ApiError>;
    async fn credit_intent(
        &self,
        req: hydra::CreditIntentRequest,
    ) -> Result<hydra::CreditIntentResponse, ApiError>;
    async fn credit_offer(
        &self,
        req: hydra::CreditOfferRequest,
    ) -> Result<hydra::CreditOfferResponse, ApiError>;
    async fn credit_envelope(
        &self,
        req: hydra::CreditEnvelopeRequest,
    ) -> Result<hydra::CreditEnvelopeResponse, ApiError>;
    async fn credit_settle(
        &self,
        req: hydra::CreditSettleRequest,
    ) -> Result<hydra::CreditSettleResponse, ApiError>;
}

pub struct HttpHydra {
    peer: PeerClient,
}

impl HttpHydra {
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

    async fn get<Resp: DeserializeOwned>(&self, path: &str) -> Result<Resp, ApiError> {
        answer(self.peer.get(path).await)
    }
}

fn answer<Resp: DeserializeOwned>(
    answered: Result<(StatusCode, Vec<u8>), PeerError>,
) -> Result<Resp, ApiError> {
    let (status, bytes) = answered.map_err(|e| unavailable(&e))?;
    if status.is_success() {
        return oa_service::parse_json(&bytes).map_err(|_| {
            ApiError::internal("hydra answered with a body that is not its contract")
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
    e.retryable =
        status.is_server_error() || envelope["error"]["retryable"].as_bool().unwrap_or(false);
    if let Some(r) = envelope["error"]["reason_code"].as_str() {
        e.reason_code = Some(r.to_owned());
    }
    if status.is_server_error() {
        e.code = "HYDRA_UNAVAILABLE".into();
        e.status = StatusCode::SERVICE_UNAVAILABLE;
    }
    Err(e)
}

fn unavailable(e: &PeerError) -> ApiError {
    tracing::warn!("hydra call failed: {e}");
    ApiError::unavailable("HYDRA_UNAVAILABLE", "hydra is unavailable; retry later")
}

#[async_trait]
impl Hydra for HttpHydra {
    async fn quote_pay(
        &self,
        req: hydra::QuotePayRequest,
    ) -> Result<hydra::QuotePayResponse, ApiError> {
        self.post("/v1/liquidity/quote_pay", &req).await
    }

    async fn pay(&self, req: hydra::PayRequest) -> Result<hydra::PayResponse, ApiError> {
        self.post("/v1/liquidity/pay", &req).await
    }

    async fn liquidity_status(&self) -> Result<hydra::LiquidityStatusResponse, ApiError> {
        self.get("/v1/liquidity/status").await
    }

    async fn routing_score(
        &self,
        req: hydra::RoutingScoreRequest,
    ) -> Result<hydra::RoutingScoreResponse, ApiError> {
        self.post("/v1/routing/score", &req).await
    }

    async fn credit_intent(
        &self,
        req: hydra::CreditIntentRequest,
    ) -> Result<hydra::CreditIntentResponse, ApiError> {
        self.post("/v1/credit/intent", &req).await
    }

    async fn credit_offer(
        &self,
        req: hydra::CreditOfferRequest,
    ) -> Result<hydra::CreditOfferResponse, ApiError> {
        self.post("/v1/credit/offer", &req).await
    }

    async fn credit_envelope(
        &self,
        req: hydra::CreditEnvelopeRequest,
    ) -> Result<hydra::CreditEnvelopeResponse, ApiError> {
        self.post("/v1/credit/envelope", &req).await
    }

    async fn credit_settle(
        &self,
        req: hydra::CreditSettleRequest,
    ) -> Result<hydra::CreditSettleResponse, ApiError> {
        self.post("/v1/credit/settle", &req).await
    }
}
