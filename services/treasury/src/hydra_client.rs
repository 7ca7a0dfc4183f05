//! Treasury's view of Hydra: a trait (tests use a fake) and the HTTP client.
//!
//! Contracts: `proto/openagents/hydra/v1/{liquidity,routing,credit}.proto`.

use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use oa_auth::TokenSource;
use oa_proto::hydra;
use oa_service::ApiError;
use serde::{Serialize, de::DeserializeOwned};

/// Bound on one call to Hydra (a pay waits for the payment up to Hydra's own bound).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(45);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
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
    base: String,
    client: reqwest::Client,
    tokens: TokenSource,
}

impl HttpHydra {
    pub fn new(base: &str, tokens: TokenSource) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
            tokens,
        })
    }

    async fn post<Req: Serialize + Sync, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, ApiError> {
        let token = self.tokens.token().map_err(ApiError::internal)?;
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(req)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        answer(resp).await
    }

    async fn get<Resp: DeserializeOwned>(&self, path: &str) -> Result<Resp, ApiError> {
        let token = self.tokens.token().map_err(ApiError::internal)?;
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        answer(resp).await
    }
}

async fn answer<Resp: DeserializeOwned>(resp: reqwest::Response) -> Result<Resp, ApiError> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| unavailable(&e))?;
    if bytes.len() > MAX_RESPONSE_BYTES {
        return Err(ApiError::unavailable(
            "HYDRA_UNAVAILABLE",
            "hydra's answer is too large",
        ));
    }
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
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
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

fn unavailable(e: &reqwest::Error) -> ApiError {
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
