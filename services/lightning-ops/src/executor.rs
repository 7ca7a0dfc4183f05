//! lightning-ops reads and changes channels only through the wallet-executor's custody channel;
//! it never holds node credentials. [`Channels`] is that channel as lightning-ops needs it (a
//! trait, so tests use a fake); [`GrpcChannels`] is the real client.
//!
//! Open, close and rebalance are not part of the custody channel yet: when they are, each becomes
//! one more method here and one more arm in `Ops::execute` (`apply.rs`).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use oa_auth::{SigningIdentity, grpc::BearerInterceptor};
use oa_proto::wallet::{self, wallet_executor_client::WalletExecutorClient};
use oa_receipts::Receipt;
use oa_service::{ApiError, grpc_status_to_api_error};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::plan::{Fees, Observed};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const TOKEN_TTL: Duration = Duration::from_secs(300);
/// The scopes lightning-ops asks for at the executor: read channels and forwards, change policy.
pub const EXECUTOR_SCOPES: [&str; 2] = ["wallet:read", "wallet:channels"];

/// One forwarding event of our node, as the executor reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Position in the node's forwarding log, from 0.
    pub index: u64,
    pub timestamp_ms: u64,
    pub chan_id_in: u64,
    pub chan_id_out: u64,
    pub amt_in_msat: u64,
    pub amt_out_msat: u64,
    pub fee_msat: u64,
}

/// A page of the forwarding log and the offset to ask for next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardPage {
    pub events: Vec<Forward>,
    pub last_offset_index: u64,
}

/// The custody channel, as lightning-ops uses it.
#[async_trait]
pub trait Channels: Send + Sync + 'static {
    /// Our channels as the node reports them now.
    async fn list(&self) -> Result<Vec<Observed>, ApiError>;

    /// Sets our forwarding policy on channel `chan_id` (never 0, "all channels": lightning-ops
    /// changes channels one at a time so each change has its own rate limit and receipt).
    /// Implementors must be idempotent by `idempotency_key`: the same key with the same request
    /// answers the first call's receipt and changes nothing again. Returns the executor's receipt
    /// for the change.
    async fn update_policy(
        &self,
        idempotency_key: &str,
        chan_id: u64,
        fees: &Fees,
    ) -> Result<Receipt, ApiError>;

    /// Up to `max_events` forwarding events from `index_offset` on, oldest first, with
    /// consecutive indices starting at `index_offset`; empty when there are no more.
    async fn forwarding_history(
        &self,
        index_offset: u64,
        max_events: u32,
    ) -> Result<ForwardPage, ApiError>;
}

pub struct GrpcChannels {
    client: WalletExecutorClient<InterceptedService<Channel, BearerInterceptor>>,
}

impl GrpcChannels {
    pub fn new(url: &str, identity: Arc<SigningIdentity>) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let bearer =
            BearerInterceptor::new(identity, "wallet-executor", EXECUTOR_SCOPES, TOKEN_TTL)?;
        Ok(Self {
            client: WalletExecutorClient::with_interceptor(channel, bearer),
        })
    }
}

fn fees(p: Option<&wallet::ChannelPolicy>) -> Fees {
    let p = p.cloned().unwrap_or_default();
    Fees {
        base_fee_msat: p.base_fee_msat,
        fee_rate_ppm: p.fee_rate_ppm,
        min_htlc_msat: p.min_htlc_msat,
        max_htlc_msat: p.max_htlc_msat,
        time_lock_delta: p.time_lock_delta,
    }
}

#[async_trait]
impl Channels for GrpcChannels {
    async fn list(&self) -> Result<Vec<Observed>, ApiError> {
        let resp = self
            .client
            .clone()
            .list_channels(wallet::ListChannelsRequest {})
            .await
            .map_err(|s| grpc_status_to_api_error(&s))?
            .into_inner();
        Ok(resp
            .channels
            .iter()
            .map(|c| Observed {
                chan_id: c.chan_id,
                remote_pubkey: c.remote_pubkey.clone(),
                local_balance_msat: c.local_balance_msat,
                remote_balance_msat: c.remote_balance_msat,
                active: c.active,
                local_policy: fees(c.local_policy.as_ref()),
            })
            .collect())
    }

    async fn update_policy(
        &self,
        idempotency_key: &str,
        chan_id: u64,
        fees: &Fees,
    ) -> Result<Receipt, ApiError> {
        let resp = self
            .client
            .clone()
            .update_channel_policy(wallet::UpdateChannelPolicyRequest {
                idempotency_key: idempotency_key.to_owned(),
                chan_id,
                policy: Some(wallet::ChannelPolicy {
                    base_fee_msat: fees.base_fee_msat,
                    fee_rate_ppm: fees.fee_rate_ppm,
                    min_htlc_msat: fees.min_htlc_msat,
                    max_htlc_msat: fees.max_htlc_msat,
                    time_lock_delta: fees.time_lock_delta,
                    ..Default::default()
                }),
            })
            .await
            .map_err(|s| grpc_status_to_api_error(&s))?
            .into_inner();
        let receipt = resp.receipt.ok_or_else(|| {
            ApiError::new(
                http::StatusCode::BAD_GATEWAY,
                "BAD_EXECUTOR_RECEIPT",
                "the executor answered a policy change without a receipt",
            )
        })?;
        oa_service::receipts::from_proto(&receipt)
            .map_err(|e| ApiError::new(http::StatusCode::BAD_GATEWAY, "BAD_EXECUTOR_RECEIPT", e))
    }

    async fn forwarding_history(
        &self,
        index_offset: u64,
        max_events: u32,
    ) -> Result<ForwardPage, ApiError> {
        let resp = self
            .client
            .clone()
            .forwarding_history(wallet::ForwardingHistoryRequest {
                index_offset,
                max_events,
            })
            .await
            .map_err(|s| grpc_status_to_api_error(&s))?
            .into_inner();
        Ok(ForwardPage {
            events: resp
                .events
                .iter()
                .map(|e| Forward {
                    index: e.index,
                    timestamp_ms: e.timestamp_ms,
                    chan_id_in: e.chan_id_in,
                    chan_id_out: e.chan_id_out,
                    amt_in_msat: e.amt_in_msat,
                    amt_out_msat: e.amt_out_msat,
                    fee_msat: e.fee_msat,
                })
                .collect(),
            last_offset_index: resp.last_offset_index,
        })
    }
}
