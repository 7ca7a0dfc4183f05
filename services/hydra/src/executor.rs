//! Hydra's view of the wallet-executor: a trait (so tests use a fake) and the gRPC client.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use oa_auth::{SigningIdentity, grpc::BearerInterceptor};
use oa_money::Msat;
use oa_proto::wallet::{self, wallet_executor_client::WalletExecutorClient};
use oa_receipts::Receipt;
use oa_service::{ApiError, grpc_status_to_api_error};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

/// The executor's payment receipt class.
pub const EXECUTOR_SCHEMA: &str = "oa.wallet_executor.payment_receipt.v1";

/// Verifies the executor's receipt for a payment Hydra asked for: signature, trusted key (an
/// empty `trusted` list trusts the key the receipt names, after its signature verifies:
/// development only), the class, and that it is about this payment (hash and amount).
pub fn check_receipt(
    trusted: &[String],
    payment_hash: &str,
    amount: Msat,
    payment: &wallet::WalletPayment,
    proto: &oa_proto::common::Receipt,
) -> Result<Receipt, String> {
    let receipt = oa_service::receipts::from_proto(proto)?;
    receipt.verify().map_err(|e| e.to_string())?;
    if !trusted.is_empty() && !trusted.contains(&receipt.issuer.key_id) {
        return Err("signed by an untrusted key".into());
    }
    let body_is = |k: &str, v: &str| receipt.body.get(k).and_then(|x| x.as_str()) == Some(v);
    if receipt.schema != EXECUTOR_SCHEMA
        || !body_is("payment_hash", payment_hash)
        || !body_is("amount_msat", &amount.as_u64().to_string())
        || payment.payment_hash != payment_hash
    {
        return Err("receipt is not about this payment".into());
    }
    Ok(receipt)
}

/// Bound on one call to the executor; a pay call waits at most its own timeout plus this margin.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(40);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Lifetime of the tokens Hydra mints for the executor.
const TOKEN_TTL: Duration = Duration::from_secs(300);

/// The custody channel as Hydra uses it.
///
/// Implementors must pass requests through unchanged: `pay` is exactly-once per idempotency key
/// and payment hash at the executor, which is what makes Hydra's retries safe.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn pay(
        &self,
        req: wallet::PayInvoiceRequest,
    ) -> Result<wallet::PaymentResponse, ApiError>;
    async fn get_payment(&self, payment_hash: &str) -> Result<wallet::PaymentResponse, ApiError>;
    async fn info(&self) -> Result<wallet::GetInfoResponse, ApiError>;
}

/// The executor over gRPC, with Hydra's identity.
#[derive(Clone)]
pub struct GrpcExecutor {
    client: WalletExecutorClient<InterceptedService<Channel, BearerInterceptor>>,
}

impl GrpcExecutor {
    /// Connects lazily: Hydra starts even if the executor is not up yet, and reconnects by itself.
    pub fn new(url: &str, identity: Arc<SigningIdentity>) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let bearer = BearerInterceptor::new(
            identity,
            "wallet-executor",
            ["wallet:pay", "wallet:read"],
            TOKEN_TTL,
        )?;
        Ok(Self {
            client: WalletExecutorClient::with_interceptor(channel, bearer),
        })
    }
}

fn map(status: tonic::Status) -> ApiError {
    let mut e = grpc_status_to_api_error(&status);
    if status.code() == tonic::Code::Unavailable || status.code() == tonic::Code::Unknown {
        e.code = "EXECUTOR_UNAVAILABLE".into();
        e.status = http::StatusCode::SERVICE_UNAVAILABLE;
        e.retryable = true;
    }
    e
}

#[async_trait]
impl Executor for GrpcExecutor {
    async fn pay(
        &self,
        req: wallet::PayInvoiceRequest,
    ) -> Result<wallet::PaymentResponse, ApiError> {
        self.client
            .clone()
            .pay_invoice(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(map)
    }

    async fn get_payment(&self, payment_hash: &str) -> Result<wallet::PaymentResponse, ApiError> {
        self.client
            .clone()
            .get_payment(wallet::GetPaymentRequest {
                payment_hash: payment_hash.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(map)
    }

    async fn info(&self) -> Result<wallet::GetInfoResponse, ApiError> {
        self.client
            .clone()
            .get_info(wallet::GetInfoRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(map)
    }
}
