//! Hydra's view of the wallet-executor: a trait (so tests use a fake) and the gRPC client.
//!
//! Hydra uses the custody channel to pay (liquidity pays, envelope settlements, withdrawals), to
//! receive (deposit invoices and the stream of their settlements) and to read the node's
//! liquidity (channel balances and the on-chain wallet, for the withdrawal throttle). Its token
//! asks for `wallet:pay`, `wallet:read` and `wallet:receive`; it never asks for
//! `wallet:send_onchain` (on-chain sends are an operator's) or `wallet:channels`.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
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
/// The executor's invoice settlement receipt class (one per settled invoice of its node).
pub const SETTLEMENT_SCHEMA: &str = "oa.wallet_executor.invoice_settlement_receipt.v1";

/// The executor's settlements of its node's invoices, in settle-index order.
pub type Settlements = BoxStream<'static, Result<wallet::InvoiceSettlement, ApiError>>;

/// Verifies the executor's receipt for one settlement of its stream: signature, trusted key (as
/// [`check_receipt`]), the class, and that it attests this settlement (payment hash, settle
/// index and amount paid).
pub fn check_settlement_receipt(
    trusted: &[String],
    settlement: &wallet::InvoiceSettlement,
) -> Result<Receipt, String> {
    let invoice = settlement
        .invoice
        .as_ref()
        .ok_or("a settlement without its invoice")?;
    let proto = settlement
        .receipt
        .as_ref()
        .ok_or("a settlement without its receipt")?;
    let receipt = oa_service::receipts::from_proto(proto)?;
    receipt.verify().map_err(|e| e.to_string())?;
    if !trusted.is_empty() && !trusted.contains(&receipt.issuer.key_id) {
        return Err("signed by an untrusted key".into());
    }
    let body_is = |k: &str, v: &str| receipt.body.get(k).and_then(|x| x.as_str()) == Some(v);
    if receipt.schema != SETTLEMENT_SCHEMA
        || !body_is("payment_hash", &invoice.payment_hash)
        || !body_is("settle_index", &invoice.settle_index.to_string())
        || !body_is("amount_paid_msat", &invoice.amount_paid_msat.to_string())
    {
        return Err("receipt is not about this settlement".into());
    }
    Ok(receipt)
}

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
/// HTTP/2 keep-alive pings on the channel, so a settlement stream over a dead connection ends
/// (and is resubscribed) within about interval + timeout.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// The on-chain wallet's balance.
    async fn wallet_balance(&self) -> Result<wallet::WalletBalanceResponse, ApiError>;
    /// Issues an invoice of the executor's node; the same idempotency key and request give the
    /// same invoice.
    async fn create_invoice(
        &self,
        req: wallet::CreateInvoiceRequest,
    ) -> Result<wallet::InvoiceResponse, ApiError>;
    /// The settlements of the node's invoices with a settle index above `after_settle_index`,
    /// in order and without gaps, each with its signed receipt: first those recorded, then each
    /// new one. The stream may end (the executor restarted); the caller resubscribes from the
    /// last index it handled.
    async fn subscribe_settlements(&self, after_settle_index: u64)
    -> Result<Settlements, ApiError>;
}

/// The executor over gRPC, with Hydra's identity.
#[derive(Clone)]
pub struct GrpcExecutor {
    client: WalletExecutorClient<InterceptedService<Channel, BearerInterceptor>>,
}

impl GrpcExecutor {
    /// Connects lazily: Hydra starts even if the executor is not up yet, and reconnects by itself.
    pub fn new(url: &str, identity: Arc<SigningIdentity>) -> anyhow::Result<Self> {
        Self::with_timeout(url, identity, CALL_TIMEOUT)
    }

    /// As [`GrpcExecutor::new`], each call bounded by `call_timeout`.
    pub fn with_timeout(
        url: &str,
        identity: Arc<SigningIdentity>,
        call_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(call_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        let bearer = BearerInterceptor::new(
            identity,
            "wallet-executor",
            ["wallet:pay", "wallet:read", "wallet:receive"],
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

    async fn wallet_balance(&self) -> Result<wallet::WalletBalanceResponse, ApiError> {
        self.client
            .clone()
            .wallet_balance(wallet::WalletBalanceRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(map)
    }

    async fn create_invoice(
        &self,
        req: wallet::CreateInvoiceRequest,
    ) -> Result<wallet::InvoiceResponse, ApiError> {
        self.client
            .clone()
            .create_invoice(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(map)
    }

    async fn subscribe_settlements(
        &self,
        after_settle_index: u64,
    ) -> Result<Settlements, ApiError> {
        // The channel's per-call timeout bounds the wait for the stream to open, not its life;
        // HTTP/2 keep-alives notice a dead connection, and the follower resubscribes whenever
        // the stream ends.
        let req = wallet::SubscribeInvoiceSettlementsRequest { after_settle_index };
        let stream = self
            .client
            .clone()
            .subscribe_invoice_settlements(req)
            .await
            .map_err(map)?
            .into_inner();
        Ok(stream.map_err(map).boxed())
    }
}
