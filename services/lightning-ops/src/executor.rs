//! lightning-ops reads and changes channels only through the wallet-executor's custody channel;
//! it never holds node credentials. [`Channels`] is that channel as lightning-ops needs it (a
//! trait, so tests use a fake); [`GrpcChannels`] is the real client.
//!
//! Every changing call carries an idempotency key lightning-ops derives deterministically from
//! the action (see `apply.rs`), so a call repeated after a lost answer changes the node once.

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
/// How long the executor may wait for a rebalance to end before answering that it is in flight:
/// long enough for most circular payments to end in one call, short enough that an apply with a
/// few rebalances answers within a client's minute. Past it, lightning-ops asks again, with the
/// same key, on its next run.
pub const REBALANCE_WAIT_MS: u32 = 20_000;
/// The client-side deadline of a rebalance call: the executor's wait plus the ordinary margin.
const REBALANCE_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The scopes lightning-ops asks for at the executor: read channels and forwards; change
/// policies, open, close and rebalance channels.
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

/// A channel of ours that is closed (its closing transaction confirmed), as the executor lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedChannel {
    pub chan_id: u64,
    pub remote_pubkey: String,
    /// `COOPERATIVE`, `LOCAL_FORCE`, `REMOTE_FORCE`, ...
    pub close_type: String,
}

/// A channel open the executor started: its funding output, and the executor's receipt.
#[derive(Clone, Debug)]
pub struct Opened {
    pub funding_txid: String,
    pub output_index: u32,
    pub receipt: Receipt,
}

/// A channel close the executor started: its closing transaction, and the executor's receipt.
#[derive(Clone, Debug)]
pub struct Closing {
    pub closing_txid: String,
    pub receipt: Receipt,
}

/// What to rebalance: `amount_msat` out over `out_chan_id`, back in over `in_chan_id`, paying
/// at most `fee_limit_msat` in routing fees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RebalanceAsk {
    pub out_chan_id: u64,
    pub in_chan_id: u64,
    pub amount_msat: u64,
    pub fee_limit_msat: u64,
}

/// Where a rebalance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebalanceState {
    InFlight,
    Succeeded,
    Failed,
}

/// The executor's answer to a rebalance: its payment, and once it ended, the executor's receipt.
#[derive(Clone, Debug)]
pub struct Rebalanced {
    pub payment_hash: String,
    pub state: RebalanceState,
    pub amount_msat: u64,
    /// The routing fee paid (0 unless succeeded).
    pub fee_msat: u64,
    pub fee_limit_msat: u64,
    pub failure_code: String,
    pub failure_reason: String,
    /// Present once the rebalance ended (succeeded or failed).
    pub receipt: Option<Receipt>,
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

    /// Our channels whose closing transaction confirmed.
    async fn list_closed(&self) -> Result<Vec<ClosedChannel>, ApiError>;

    /// Starts opening a public channel of `local_funding_msat` (whole satoshis) to
    /// `remote_pubkey`, funded from the on-chain wallet, nothing pushed. Implementors must be
    /// idempotent by `idempotency_key`, and must not open again under a key whose first attempt
    /// has an unknown outcome (the executor answers `IDEMPOTENCY_IN_PROGRESS`).
    async fn open_channel(
        &self,
        idempotency_key: &str,
        remote_pubkey: &str,
        local_funding_msat: u64,
    ) -> Result<Opened, ApiError>;

    /// Starts closing channel `chan_id` (unilaterally when `force`). Idempotent by key.
    async fn close_channel(
        &self,
        idempotency_key: &str,
        chan_id: u64,
        force: bool,
    ) -> Result<Closing, ApiError>;

    /// Rebalances as `ask` says. Idempotent by key: asked again, it answers where the first
    /// attempt is (in flight, or ended with its receipt) and never pays twice; an attempt whose
    /// outcome is unknown answers `IDEMPOTENCY_IN_PROGRESS`.
    async fn rebalance(
        &self,
        idempotency_key: &str,
        ask: &RebalanceAsk,
    ) -> Result<Rebalanced, ApiError>;
}

type Client = WalletExecutorClient<InterceptedService<Channel, BearerInterceptor>>;

pub struct GrpcChannels {
    client: Client,
    /// The same executor with the longer deadline of a rebalance call.
    rebalance_client: Client,
}

impl GrpcChannels {
    pub fn new(url: &str, identity: Arc<SigningIdentity>) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(url.to_owned())?.connect_timeout(CONNECT_TIMEOUT);
        let bearer =
            BearerInterceptor::new(identity, "wallet-executor", EXECUTOR_SCOPES, TOKEN_TTL)?;
        let client = |timeout: Duration| {
            WalletExecutorClient::with_interceptor(
                endpoint.clone().timeout(timeout).connect_lazy(),
                bearer.clone(),
            )
        };
        Ok(Self {
            client: client(CALL_TIMEOUT),
            rebalance_client: client(REBALANCE_CALL_TIMEOUT),
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
        inbound_base_fee_msat: p.inbound_base_fee_msat,
        inbound_fee_ppm: p.inbound_fee_ppm,
    }
}

fn bad_receipt(what: &str) -> ApiError {
    ApiError::new(
        http::StatusCode::BAD_GATEWAY,
        "BAD_EXECUTOR_RECEIPT",
        format!("the executor answered {what} without a valid receipt"),
    )
}

/// The executor's receipt from its proto form.
fn receipt(r: Option<oa_proto::common::Receipt>, what: &str) -> Result<Receipt, ApiError> {
    let r = r.ok_or_else(|| bad_receipt(what))?;
    oa_service::receipts::from_proto(&r)
        .map_err(|e| ApiError::new(http::StatusCode::BAD_GATEWAY, "BAD_EXECUTOR_RECEIPT", e))
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
                    inbound_base_fee_msat: fees.inbound_base_fee_msat,
                    inbound_fee_ppm: fees.inbound_fee_ppm,
                }),
            })
            .await
            .map_err(|s| grpc_status_to_api_error(&s))?
            .into_inner();
        receipt(resp.receipt, "a policy change")
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

    async fn list_closed(&self) -> Result<Vec<ClosedChannel>, ApiError> {
        let resp = self
            .client
            .clone()
            .list_closed_channels(wallet::ListClosedChannelsRequest {})
            .await
            .map_err(|s| grpc_status_to_api_error(&s))?
            .into_inner();
        Ok(resp
            .channels
            .into_iter()
            .map(|c| ClosedChannel {
                chan_id: c.chan_id,
                remote_pubkey: c.remote_pubkey,
                close_type: c.close_type,
            })
            .collect())
    }

    async fn open_channel(
        &self,
        idempotency_key: &str,
        remote_pubkey: &str,
        local_funding_msat: u64,
    ) -> Result<Opened, ApiError> {
        let resp = self
            .client
            .clone()
            .open_channel(wallet::OpenChannelRequest {
                idempotency_key: idempotency_key.to_owned(),
                remote_pubkey: remote_pubkey.to_owned(),
                local_funding_msat,
                push_msat: 0,
                private: false,
            })
            .await
            .map_err(|s| grpc_status_to_api_error(&s))?
            .into_inner();
        Ok(Opened {
            receipt: receipt(resp.receipt, "a channel open")?,
            funding_txid: resp.funding_txid,
            output_index: resp.output_index,
        })
    }

    async fn close_channel(
        &self,
        idempotency_key: &str,
        chan_id: u64,
        force: bool,
    ) -> Result<Closing, ApiError> {
        let resp = self
            .client
            .clone()
            .close_channel(wallet::CloseChannelRequest {
                idempotency_key: idempotency_key.to_owned(),
                chan_id,
                force,
            })
            .await
            .map_err(|s| grpc_status_to_api_error(&s))?
            .into_inner();
        Ok(Closing {
            receipt: receipt(resp.receipt, "a channel close")?,
            closing_txid: resp.closing_txid,
        })
    }

    async fn rebalance(
        &self,
        idempotency_key: &str,
        ask: &RebalanceAsk,
    ) -> Result<Rebalanced, ApiError> {
        let resp = self
            .rebalance_client
            .clone()
            .rebalance(wallet::RebalanceRequest {
                idempotency_key: idempotency_key.to_owned(),
                out_chan_id: ask.out_chan_id,
                in_chan_id: ask.in_chan_id,
                amount_msat: ask.amount_msat,
                fee_limit_msat: ask.fee_limit_msat,
                timeout_ms: REBALANCE_WAIT_MS,
            })
            .await
            .map_err(|s| grpc_status_to_api_error(&s))?
            .into_inner();
        let state = match wallet::PaymentStatus::try_from(resp.status) {
            Ok(wallet::PaymentStatus::InFlight) => RebalanceState::InFlight,
            Ok(wallet::PaymentStatus::Succeeded) => RebalanceState::Succeeded,
            Ok(wallet::PaymentStatus::Failed) => RebalanceState::Failed,
            _ => {
                return Err(ApiError::new(
                    http::StatusCode::BAD_GATEWAY,
                    "UPSTREAM_ERROR",
                    format!(
                        "the executor answered a rebalance with status {}",
                        resp.status
                    ),
                ));
            }
        };
        let receipt = match state {
            RebalanceState::InFlight => None,
            _ => Some(receipt(resp.receipt, "an ended rebalance")?),
        };
        Ok(Rebalanced {
            payment_hash: resp.payment_hash,
            state,
            amount_msat: resp.amount_msat,
            fee_msat: resp.fee_msat,
            fee_limit_msat: resp.fee_limit_msat,
            failure_code: resp.failure_code,
            failure_reason: resp.failure_reason,
            receipt,
        })
    }
}
