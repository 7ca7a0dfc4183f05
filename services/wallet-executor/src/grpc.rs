//! The custody channel (gRPC). Only authenticated callers with this service's audience reach it;
//! each RPC checks its scope: `wallet:pay` to pay, `wallet:read` (or `wallet:pay`) to read,
//! `wallet:channels` to change channel policy.

use std::sync::Arc;

use oa_auth::grpc::{claims, require_scope};
use oa_proto::wallet::{self, wallet_executor_server::WalletExecutor};
use tonic::{Request, Response, Status};

use crate::{channels::Channels, node::LightningNode, payments::Payments};

pub const SCOPE_PAY: &str = "wallet:pay";
pub const SCOPE_READ: &str = "wallet:read";
pub const SCOPE_CHANNELS: &str = "wallet:channels";
/// Largest gRPC message accepted: requests are an invoice and a few numbers.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub struct ExecutorGrpc {
    pub payments: Arc<Payments>,
    pub node: Arc<dyn LightningNode>,
    pub channels: Arc<Channels>,
}

fn require_read<T>(req: &Request<T>) -> Result<(), Status> {
    let c = claims(req)?;
    if c.has_scope(SCOPE_READ) || c.has_scope(SCOPE_PAY) {
        Ok(())
    } else {
        Err(oa_auth::AuthError::MissingScope(SCOPE_READ.into()).to_status())
    }
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
        if hash.parse::<oa_invoice::PaymentHash>().is_err() {
            return Err(oa_service::ApiError::bad_request(
                "INVALID_PAYMENT_HASH",
                "payment_hash must be 64 lowercase hex characters",
            )
            .to_grpc_status());
        }
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
}
