//! The custody channel (gRPC). Only authenticated callers with this service's audience reach it;
//! each RPC checks its scope:
//!
//! | scope | RPCs |
//! |---|---|
//! | `wallet:pay` | `PayInvoice` |
//! | `wallet:read` or `wallet:pay` | `GetPayment`, `GetInfo`, `ListChannels`, `ForwardingHistory`, `EstimateRouteFee` |
//! | `wallet:read` | `ListClosedChannels`, `FeeReport`, `WalletBalance` |
//! | `wallet:receive` | `CreateInvoice`, `NewAddress` |
//! | `wallet:receive` or `wallet:read` | `LookupInvoice`, `SubscribeInvoiceSettlements` |
//! | `wallet:channels` | `UpdateChannelPolicy`, `OpenChannel`, `CloseChannel`, `Rebalance` |
//! | `wallet:send_onchain` | `SendCoins` (granted to no service by default: operators only) |

use std::sync::Arc;

use futures::stream::BoxStream;
use oa_auth::grpc::{claims, require_scope};
use oa_proto::wallet::{self, wallet_executor_server::WalletExecutor};
use tonic::{Request, Response, Status};

use crate::{
    actions::ChannelActions, channels::Channels, invoices::Invoices, node::LightningNode,
    onchain::Onchain, payments::Payments,
};

pub const SCOPE_PAY: &str = "wallet:pay";
pub const SCOPE_READ: &str = "wallet:read";
pub const SCOPE_CHANNELS: &str = "wallet:channels";
pub const SCOPE_RECEIVE: &str = "wallet:receive";
pub const SCOPE_SEND_ONCHAIN: &str = "wallet:send_onchain";
/// Largest gRPC message accepted: requests are an invoice and a few numbers.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub struct ExecutorGrpc {
    pub payments: Arc<Payments>,
    pub node: Arc<dyn LightningNode>,
    pub channels: Arc<Channels>,
    pub invoices: Arc<Invoices>,
    pub onchain: Arc<Onchain>,
    pub actions: Arc<ChannelActions>,
}

/// Passes if the caller holds any of `scopes`; else refuses naming the first.
fn require_any<T>(req: &Request<T>, scopes: &[&str]) -> Result<(), Status> {
    let c = claims(req)?;
    if scopes.iter().any(|s| c.has_scope(s)) {
        Ok(())
    } else {
        Err(oa_auth::AuthError::MissingScope(scopes[0].into()).to_status())
    }
}

fn require_read<T>(req: &Request<T>) -> Result<(), Status> {
    require_any(req, &[SCOPE_READ, SCOPE_PAY])
}

#[tonic::async_trait]
impl WalletExecutor for ExecutorGrpc {
    async fn pay_invoice(
        &self,
        req: Request<wallet::PayInvoiceRequest>,
    ) -> Result<Response<wallet::PaymentResponse>, Status> {
        let caller = require_scope(&req, SCOPE_PAY)?;
        let resp = self.payments.pay(&caller.sub, req.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn get_payment(
        &self,
        req: Request<wallet::GetPaymentRequest>,
    ) -> Result<Response<wallet::PaymentResponse>, Status> {
        require_read(&req)?;
        let hash = req.into_inner().payment_hash;
        crate::validate::payment_hash(&hash)?;
        Ok(Response::new(self.payments.get(&hash).await?))
    }

    async fn get_info(
        &self,
        req: Request<wallet::GetInfoRequest>,
    ) -> Result<Response<wallet::GetInfoResponse>, Status> {
        require_read(&req)?;
        let info = self
            .node
            .info()
            .await
            .map_err(|e| crate::error::WalletError::NodeUnavailable(e.to_string()))?;
        Ok(Response::new(wallet::GetInfoResponse {
            node_pubkey: info.pubkey,
            network: info.network,
            backend: info.backend.to_owned(),
            local_balance_msat: info.local_balance.as_u64(),
            remote_balance_msat: info.remote_balance.as_u64(),
            channel_count: info.channel_count,
        }))
    }

    async fn list_channels(
        &self,
        req: Request<wallet::ListChannelsRequest>,
    ) -> Result<Response<wallet::ListChannelsResponse>, Status> {
        require_read(&req)?;
        Ok(Response::new(self.channels.list().await?))
    }

    async fn update_channel_policy(
        &self,
        req: Request<wallet::UpdateChannelPolicyRequest>,
    ) -> Result<Response<wallet::UpdateChannelPolicyResponse>, Status> {
        let caller = require_scope(&req, SCOPE_CHANNELS)?;
        let resp = self
            .channels
            .update_policy(&caller.sub, req.into_inner())
            .await?;
        Ok(Response::new(resp))
    }

    async fn forwarding_history(
        &self,
        req: Request<wallet::ForwardingHistoryRequest>,
    ) -> Result<Response<wallet::ForwardingHistoryResponse>, Status> {
        require_read(&req)?;
        Ok(Response::new(
            self.channels.forwarding_history(req.get_ref()).await?,
        ))
    }

    async fn create_invoice(
        &self,
        req: Request<wallet::CreateInvoiceRequest>,
    ) -> Result<Response<wallet::InvoiceResponse>, Status> {
        let caller = require_scope(&req, SCOPE_RECEIVE)?;
        Ok(Response::new(
            self.invoices.create(&caller.sub, req.into_inner()).await?,
        ))
    }

    async fn lookup_invoice(
        &self,
        req: Request<wallet::LookupInvoiceRequest>,
    ) -> Result<Response<wallet::InvoiceResponse>, Status> {
        require_any(&req, &[SCOPE_RECEIVE, SCOPE_READ])?;
        Ok(Response::new(
            self.invoices.lookup(&req.get_ref().payment_hash).await?,
        ))
    }

    type SubscribeInvoiceSettlementsStream =
        BoxStream<'static, Result<wallet::InvoiceSettlement, Status>>;

    async fn subscribe_invoice_settlements(
        &self,
        req: Request<wallet::SubscribeInvoiceSettlementsRequest>,
    ) -> Result<Response<Self::SubscribeInvoiceSettlementsStream>, Status> {
        require_any(&req, &[SCOPE_READ, SCOPE_RECEIVE])?;
        Ok(Response::new(
            self.invoices.subscribe(req.get_ref().after_settle_index),
        ))
    }

    async fn estimate_route_fee(
        &self,
        req: Request<wallet::EstimateRouteFeeRequest>,
    ) -> Result<Response<wallet::EstimateRouteFeeResponse>, Status> {
        require_read(&req)?;
        Ok(Response::new(
            self.payments.estimate_route_fee(req.get_ref()).await?,
        ))
    }

    async fn list_closed_channels(
        &self,
        req: Request<wallet::ListClosedChannelsRequest>,
    ) -> Result<Response<wallet::ListClosedChannelsResponse>, Status> {
        require_scope(&req, SCOPE_READ)?;
        Ok(Response::new(self.channels.list_closed().await?))
    }

    async fn fee_report(
        &self,
        req: Request<wallet::FeeReportRequest>,
    ) -> Result<Response<wallet::FeeReportResponse>, Status> {
        require_scope(&req, SCOPE_READ)?;
        Ok(Response::new(self.channels.fee_report().await?))
    }

    async fn wallet_balance(
        &self,
        req: Request<wallet::WalletBalanceRequest>,
    ) -> Result<Response<wallet::WalletBalanceResponse>, Status> {
        require_scope(&req, SCOPE_READ)?;
        Ok(Response::new(self.onchain.balance().await?))
    }

    async fn new_address(
        &self,
        req: Request<wallet::NewAddressRequest>,
    ) -> Result<Response<wallet::NewAddressResponse>, Status> {
        require_scope(&req, SCOPE_RECEIVE)?;
        Ok(Response::new(self.onchain.new_address().await?))
    }

    async fn send_coins(
        &self,
        req: Request<wallet::SendCoinsRequest>,
    ) -> Result<Response<wallet::SendCoinsResponse>, Status> {
        let caller = require_scope(&req, SCOPE_SEND_ONCHAIN)?;
        Ok(Response::new(
            self.onchain.send(&caller.sub, req.into_inner()).await?,
        ))
    }

    async fn open_channel(
        &self,
        req: Request<wallet::OpenChannelRequest>,
    ) -> Result<Response<wallet::OpenChannelResponse>, Status> {
        let caller = require_scope(&req, SCOPE_CHANNELS)?;
        Ok(Response::new(
            self.actions.open(&caller.sub, req.into_inner()).await?,
        ))
    }

    async fn close_channel(
        &self,
        req: Request<wallet::CloseChannelRequest>,
    ) -> Result<Response<wallet::CloseChannelResponse>, Status> {
        let caller = require_scope(&req, SCOPE_CHANNELS)?;
        Ok(Response::new(
            self.actions.close(&caller.sub, req.into_inner()).await?,
        ))
    }

    async fn rebalance(
        &self,
        req: Request<wallet::RebalanceRequest>,
    ) -> Result<Response<wallet::RebalanceResponse>, Status> {
        let caller = require_scope(&req, SCOPE_CHANNELS)?;
        Ok(Response::new(
            self.actions
                .rebalance(&caller.sub, req.into_inner())
                .await?,
        ))
    }
}
