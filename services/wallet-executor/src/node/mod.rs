//! The Lightning node behind the executor, as one trait with interchangeable backends.
//!
//! `sim` is a deterministic in-process network (the embedded default). A real `lnd` backend
//! implements the same trait over gRPC.

pub mod sim;

use std::time::Duration;

use async_trait::async_trait;
use oa_invoice::{PaymentHash, Preimage};
use oa_money::Msat;

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

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node could not be reached or did not answer in time: the state is unknown.
    #[error("node unavailable: {0}")]
    Unavailable(String),
    /// The node refused our credentials.
    #[error("node refused our credentials")]
    Auth,
    /// The node has no record of this payment.
    #[error("payment not found at the node")]
    NotFound,
}

/// A Lightning node.
///
/// Implementors must guarantee:
/// - `pay` is idempotent per payment hash: if a payment with this hash was ever sent, it is not
///   sent again; the call reports the existing payment's state instead.
/// - `track` never sends anything; it reports what happened to a payment sent before.
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
}
