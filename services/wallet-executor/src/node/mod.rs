//! The Lightning node behind the executor, as one trait with interchangeable backends.
//!
//! `sim` is a deterministic in-process network (the embedded default). A real `lnd` backend
//! implements the same trait over gRPC.

pub mod lnd;
pub mod sim;

use std::time::Duration;

use async_trait::async_trait;
use oa_invoice::{PaymentHash, Preimage};
use oa_money::Msat;

/// Largest total time lock a route may need, in blocks (LND's default limit, two weeks).
pub const MAX_ROUTE_CLTV: u32 = 2016;
/// Smallest CLTV delta a node may ask for (LND refuses lower time-lock deltas).
pub const MIN_CLTV_DELTA: u32 = 18;

/// What to send.
#[derive(Clone, Debug)]
pub struct SendRequest {
    pub bolt11: String,
    pub payment_hash: PaymentHash,
    /// The amount the payee receives.
    pub amount: Msat,
    /// The most routing may cost; a route above it is not tried.
    pub fee_limit: Msat,
    /// How long `pay` may wait for a terminal state before answering `InFlight`.
    pub timeout: Duration,
}

/// Why a payment failed, as stable codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCode {
    NoRoute,
    InsufficientBalance,
    IncorrectPaymentDetails,
    Timeout,
    PeerOffline,
    /// The node has no record of the payment after our send attempt ended: it was never sent.
    NotSent,
    Error,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::NoRoute => "NO_ROUTE",
            FailureCode::InsufficientBalance => "INSUFFICIENT_BALANCE",
            FailureCode::IncorrectPaymentDetails => "INCORRECT_PAYMENT_DETAILS",
            FailureCode::Timeout => "TIMEOUT",
            FailureCode::PeerOffline => "PEER_OFFLINE",
            FailureCode::NotSent => "NOT_SENT",
            FailureCode::Error => "ERROR",
        }
    }
}

/// The state of a payment at the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayState {
    InFlight,
    Succeeded { preimage: Preimage, fee: Msat },
    Failed { code: FailureCode, reason: String },
}

impl PayState {
    pub fn is_terminal(&self) -> bool {
        !matches!(self, PayState::InFlight)
    }
}

#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub pubkey: String,
    pub network: String,
    pub backend: &'static str,
    pub local_balance: Msat,
    pub remote_balance: Msat,
    pub channel_count: u32,
}

/// Our side's forwarding policy on a channel (what we charge to forward out over it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelPolicy {
    pub base_fee: Msat,
    pub fee_ppm: u32,
    pub min_htlc: Msat,
    pub max_htlc: Msat,
    /// Blocks of CLTV the forwarding node adds to the route's time lock.
    pub time_lock_delta: u32,
}

/// One of our node's channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    pub chan_id: u64,
    pub remote_pubkey: String,
    pub capacity: Msat,
    pub local_balance: Msat,
    pub remote_balance: Msat,
    /// False while the peer is offline.
    pub active: bool,
    pub local_policy: ChannelPolicy,
    pub remote_policy: ChannelPolicy,
}

/// A payment our node forwarded (and earned `fee` on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardingEvent {
    /// Position in our node's forwarding log, from 0.
    pub index: u64,
    pub timestamp_ms: u64,
    pub chan_id_in: u64,
    pub chan_id_out: u64,
    pub amt_in: Msat,
    pub amt_out: Msat,
    pub fee: Msat,
}

/// A page of forwarding events and the offset to ask for next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardingPage {
    pub events: Vec<ForwardingEvent>,
    pub last_offset_index: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node could not be reached or did not answer in time: the state is unknown.
    #[error("node unavailable: {0}")]
    Unavailable(String),
    /// The node refused our credentials.
    #[error("node refused our credentials")]
    Auth,
    /// The node has no record of this payment (see [`LightningNode::track`]).
    #[error("payment not found at the node")]
    NotFound,
    /// No channel with this id.
    #[error("unknown channel {0}")]
    UnknownChannel(u64),
}

/// A Lightning node.
///
/// Implementors must guarantee:
/// - `pay` is idempotent per payment hash: if a payment with this hash was ever sent, it is not
///   sent again; the call reports the existing payment's state instead.
/// - `track` never sends anything; it reports what happened to a payment sent before. It answers
///   `NotFound` only when the node will never start this payment later (no earlier send of it can
///   still be in transit); when it cannot be sure, it answers `Unavailable`. The executor records
///   a payment the node does not know as failed (`NOT_SENT`), so a wrong `NotFound` would hide a
///   payment.
/// - A state once `Succeeded` or `Failed` never changes.
///
/// Callers must record their intent to pay (durably) before calling `pay`, so that after a crash
/// they `track` instead of paying again.
#[async_trait]
pub trait LightningNode: Send + Sync + 'static {
    fn backend(&self) -> &'static str;
    async fn info(&self) -> Result<NodeInfo, NodeError>;
    async fn pay(&self, req: &SendRequest) -> Result<PayState, NodeError>;
    async fn track(&self, payment_hash: &PaymentHash) -> Result<PayState, NodeError>;
    /// Our channels, with both balances and both policies.
    async fn list_channels(&self) -> Result<Vec<ChannelInfo>, NodeError>;
    /// Sets our side's policy on channel `chan_id`, or on every channel when `None`. Returns how
    /// many channels changed. Setting the same policy again is harmless (idempotent).
    async fn update_channel_policy(
        &self,
        chan_id: Option<u64>,
        policy: &ChannelPolicy,
    ) -> Result<u32, NodeError>;
    /// Forwards through our node from `index_offset`, at most `max_events` of them.
    async fn forwarding_history(
        &self,
        index_offset: u64,
        max_events: u32,
    ) -> Result<ForwardingPage, NodeError>;
}
