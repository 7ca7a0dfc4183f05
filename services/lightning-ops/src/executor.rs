//! lightning-ops reads (and later changes) channels only through the wallet-executor's custody
//! channel; it never holds node credentials. A trait, so tests use a fake.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use oa_auth::{SigningIdentity, grpc::BearerInterceptor};
use oa_proto::wallet::{self, wallet_executor_client::WalletExecutorClient};
use oa_service::{ApiError, grpc_status_to_api_error};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::plan::{Fees, Observed};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const TOKEN_TTL: Duration = Duration::from_secs(300);

#[async_trait]
pub trait Channels: Send + Sync + 'static {
    async fn list(&self) -> Result<Vec<Observed>, ApiError>;
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
            BearerInterceptor::new(identity, "wallet-executor", ["wallet:read"], TOKEN_TTL)?;
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
}
