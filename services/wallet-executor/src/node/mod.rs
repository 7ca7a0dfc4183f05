//! The Lightning node behind the executor, as one trait with interchangeable backends.
//!
//! `sim` is a deterministic in-process network (the embedded default). A real `lnd` backend
//! implements the same trait over gRPC.

pub mod lnd;
pub mod sim;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
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
    /// Inbound fee (BOLT proposal / LND 0.18): charged (or, when negative, discounted) on HTLCs
    /// that *arrive* over this channel, added to the outgoing channel's fee. The total fee of a
    /// hop never goes below zero.
    pub inbound_base_fee_msat: i64,
    pub inbound_fee_ppm: i32,
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

/// What invoice to issue.
#[derive(Clone, Debug)]
pub struct InvoiceRequest {
    /// Zero issues an amountless invoice.
    pub amount: Msat,
    pub description: String,
    pub expiry_secs: u32,
}

/// An invoice's state at the node. `Expired` is derived from the creation time and expiry of an
/// invoice still open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvoiceStatus {
    Open,
    Settled,
    Cancelled,
    Expired,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Open => "OPEN",
            InvoiceStatus::Settled => "SETTLED",
            InvoiceStatus::Cancelled => "CANCELLED",
            InvoiceStatus::Expired => "EXPIRED",
        }
    }
}

/// An invoice our node issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInvoice {
    pub bolt11: String,
    pub payment_hash: PaymentHash,
    /// Zero for an amountless invoice.
    pub amount: Msat,
    /// What the payer paid (set once settled).
    pub amount_paid: Msat,
    pub status: InvoiceStatus,
    /// Position in the node's invoice log (from 1), in the order invoices were added.
    pub add_index: u64,
    /// Position in the node's settlement log (from 1) once settled, else 0.
    pub settle_index: u64,
    pub created_at_ms: u64,
    pub settled_at_ms: u64,
}

/// What routing a payment to `dest` would cost, as the node estimates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteFeeEstimate {
    pub fee: Msat,
    /// Total time lock of the route, in blocks.
    pub time_lock_delay: u32,
}

/// How a channel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseType {
    Cooperative,
    LocalForce,
    RemoteForce,
    Breach,
    FundingCanceled,
    Abandoned,
}

impl CloseType {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseType::Cooperative => "COOPERATIVE",
            CloseType::LocalForce => "LOCAL_FORCE",
            CloseType::RemoteForce => "REMOTE_FORCE",
            CloseType::Breach => "BREACH",
            CloseType::FundingCanceled => "FUNDING_CANCELED",
            CloseType::Abandoned => "ABANDONED",
        }
    }
}

/// A channel of ours that is closed (its closing transaction confirmed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedChannel {
    pub chan_id: u64,
    pub remote_pubkey: String,
    pub capacity: Msat,
    /// What came back to our on-chain wallet.
    pub settled_balance: Msat,
    pub close_type: CloseType,
    pub closing_txid: String,
    pub close_height: u32,
}

/// Our forwarding fees: the policy per channel and what we earned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeeReport {
    pub channels: Vec<(u64, ChannelPolicy)>,
    pub day_fee_sum: Msat,
    pub week_fee_sum: Msat,
    pub month_fee_sum: Msat,
}

/// A channel to open with a peer.
#[derive(Clone, Debug)]
pub struct OpenChannelRequest {
    /// Hex secp256k1 public key of the peer (33 bytes compressed).
    pub remote_pubkey: String,
    /// Our funding amount (whole satoshis: a multiple of 1000 msat).
    pub local_funding: Msat,
    /// Given to the peer at opening.
    pub push: Msat,
    pub private: bool,
}

/// The funding output of a channel being opened (`txid:index`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelPoint {
    pub funding_txid: String,
    pub output_index: u32,
}

/// A closing transaction broadcast for one of our channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosingChannel {
    pub closing_txid: String,
}

/// Our on-chain wallet's balance (whole satoshis, as msat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalletBalance {
    pub confirmed: Msat,
    pub unconfirmed: Msat,
}

/// An on-chain send.
#[derive(Clone, Debug)]
pub struct SendCoinsRequest {
    pub address: String,
    /// Whole satoshis, as msat.
    pub amount: Msat,
    /// Fee rate; 0 lets the node choose.
    pub sat_per_vbyte: u64,
    /// Names the send at the node, so it can be found again (see [`LightningNode::send_coins`]).
    pub label: String,
}

/// A circular payment that moves our liquidity from one channel to another.
#[derive(Clone, Debug)]
pub struct RebalanceRequest {
    /// The channel our liquidity leaves by.
    pub out_chan_id: u64,
    /// The channel it comes back through (its local balance grows).
    pub in_chan_id: u64,
    pub amount: Msat,
    pub fee_limit: Msat,
    pub timeout: Duration,
}

/// A rebalance's result: the payment's state and hash (the node issued the invoice to itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebalanceOutcome {
    pub payment_hash: PaymentHash,
    pub state: PayState,
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
    /// The node refused the request as invalid (bad address, unknown peer, amount too small...).
    #[error("refused by the node: {0}")]
    Refused(String),
    /// Not enough confirmed on-chain funds.
    #[error("insufficient on-chain funds")]
    InsufficientFunds,
    /// This backend cannot do this.
    #[error("not supported by this backend: {0}")]
    NotSupported(&'static str),
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

    /// Issues an invoice from our node.
    async fn add_invoice(&self, req: &InvoiceRequest) -> Result<NodeInvoice, NodeError>;
    /// One of our invoices, by payment hash (`NotFound` if we never issued it).
    async fn lookup_invoice(&self, hash: &PaymentHash) -> Result<NodeInvoice, NodeError>;
    /// Settled invoices with `settle_index` above `after_settle_index`, in settle order: first
    /// those already settled, then each new settlement as it happens. Gapless: a consumer that
    /// stores the last `settle_index` it handled and resubscribes from it misses nothing.
    async fn subscribe_settled_invoices(
        &self,
        after_settle_index: u64,
    ) -> Result<BoxStream<'static, Result<NodeInvoice, NodeError>>, NodeError>;
    /// What a payment of `amount` to node `dest` (hex pubkey) would cost in routing fees.
    async fn estimate_route_fee(
        &self,
        dest: &str,
        amount: Msat,
    ) -> Result<RouteFeeEstimate, NodeError>;
    async fn closed_channels(&self) -> Result<Vec<ClosedChannel>, NodeError>;
    async fn fee_report(&self) -> Result<FeeReport, NodeError>;
    /// Starts opening a channel; it becomes active (listed by `list_channels`) once its funding
    /// transaction has the confirmations the node requires.
    async fn open_channel(&self, req: &OpenChannelRequest) -> Result<ChannelPoint, NodeError>;
    /// Starts closing a channel (cooperatively, or unilaterally when `force`). Closing a channel
    /// that is already closing reports the same closing transaction.
    async fn close_channel(&self, chan_id: u64, force: bool) -> Result<ClosingChannel, NodeError>;
    async fn wallet_balance(&self) -> Result<WalletBalance, NodeError>;
    /// A fresh receive address (P2WPKH) of our on-chain wallet.
    async fn new_address(&self) -> Result<String, NodeError>;
    /// Sends on-chain and returns the txid. Idempotent per `label`: if a transaction with this
    /// label exists, its txid is returned and nothing is sent.
    async fn send_coins(&self, req: &SendCoinsRequest) -> Result<String, NodeError>;
    /// Moves liquidity between two of our channels with a payment to ourselves.
    async fn rebalance(&self, req: &RebalanceRequest) -> Result<RebalanceOutcome, NodeError>;
}
