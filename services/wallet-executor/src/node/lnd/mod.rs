//! The `lnd` backend: LND over gRPC (tonic), over TLS with the node's certificate (see
//! [`tls`]), with the macaroon sent as `macaroon` metadata on every call.
//!
//! Payments go through LND's router (`SendPaymentV2`, `TrackPaymentV2`). Idempotency per payment
//! hash (the trait's first rule) is kept on our side as well as LND's: `pay` first asks LND
//! whether it knows the hash (any state, including a failed one, which LND itself would let us
//! retry) and only sends when LND has no record of it; if LND answers that the payment already
//! exists or is in transition, `pay` falls back to tracking. A stream that breaks mid-payment is
//! reported as in flight (or unavailable before the first update), never as failed, so the
//! executor tracks instead of re-sending.
//!
//! `track` answers `NotFound` only when LND says the payment is unknown and no send of that hash
//! from this process is still outstanding, nor ended without an answer less than `SEND_GRACE`
//! ago (a request still in LND's hands could start it later); otherwise `Unavailable`.
//!
//! On-chain sends are idempotent per label: before sending, `send_coins` looks for a wallet
//! transaction carrying the label (`GetTransactions`) and returns it instead of sending again
//! (a send without a label is not idempotent).
//! Closing a channel that is already closing reports the pending closing transaction
//! (`PendingChannels`), or the confirmed one (`ClosedChannels`).

mod config;
mod convert;
mod invoices;
mod status;
mod tls;

use std::{
    collections::HashMap,
    error::Error as _,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::stream::BoxStream;
use oa_invoice::PaymentHash;
use oa_money::Msat;
use oa_proto::{
    lnrpc::{
        self, AddressType, ChanInfoRequest, ChannelBalanceRequest, CloseChannelRequest,
        ClosedChannelsRequest, FeeReportRequest, ForwardingHistoryRequest, GetInfoRequest,
        GetTransactionsRequest, InboundFee, ListChannelsRequest, NewAddressRequest,
        OpenChannelRequest, PendingChannelsRequest, PolicyUpdateRequest, SendCoinsRequest,
        WalletBalanceRequest, close_status_update::Update, lightning_client::LightningClient,
        policy_update_request::Scope,
    },
    routerrpc::{
        RouteFeeRequest, SendPaymentRequest, TrackPaymentRequest, router_client::RouterClient,
    },
};
use tonic::{
    Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

pub use config::{LndConfig, LndConfigError};
pub use status::LndConnectError;

use self::{
    convert::{
        chan_point, channel_point, closed_channel, invoice, msat, msat_i64, payment_state, policy,
        pubkey_bytes, req_i64, sat, sat_ceil, sat_u64, txid_hex, whole_sat,
    },
    status::{
        broken_stream, connect_error, is_already_exists, is_definitive_refusal, is_unknown_payment,
        payment_error, rpc_error,
    },
    tls::Transport,
};
use super::{
    ChannelInfo, ChannelPolicy, ClosedChannel, ClosingChannel, FeeReport, ForwardingEvent,
    ForwardingPage, InvoiceRequest, LightningNode, NodeError, NodeInfo, NodeInvoice,
    OpenChannelRequest as NodeOpenChannel, PayState, RebalanceOutcome, RebalanceRequest,
    RouteFeeEstimate, SendCoinsRequest as NodeSendCoins, SendRequest, WalletBalance,
};

/// How long one unary call (or the first message of a tracking stream) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a channel (`OpenChannelSync`: negotiation with the peer, then the funding
/// transaction's broadcast) or starting a close (negotiation, then the closing transaction's
/// broadcast) may take. A call that runs out is unavailable: the caller looks again (a close
/// is found among the pending channels).
const CHANNEL_ACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after a send whose fate is unknown (no answer, or a broken connection before LND's
/// first update) `track` refuses to call the payment unknown: the request could still be in
/// LND's hands and start the payment later.
const SEND_GRACE: Duration = Duration::from_secs(60);
/// LND's path-finding timeout for one payment.
const PAYMENT_TIMEOUT_SECS: i32 = 60;
/// LND refuses transaction labels longer than this.
const MAX_LABEL_CHARS: usize = 500;
/// Expiry of the invoice a rebalance pays to ourselves: the payment starts at once; an hour
/// covers LND's path-finding timeout many times over.
const REBALANCE_INVOICE_EXPIRY_SECS: i64 = 3_600;

/// Adds the macaroon to every call. `Debug` redacts it.
#[derive(Clone)]
pub struct MacaroonInterceptor {
    value: AsciiMetadataValue,
}

impl fmt::Debug for MacaroonInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacaroonInterceptor([redacted])")
    }
}

impl Interceptor for MacaroonInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        req.metadata_mut().insert("macaroon", self.value.clone());
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, MacaroonInterceptor>;

/// Decrements the count of outstanding sends of one hash when dropped.
struct Sending {
    map: Arc<Mutex<HashMap<[u8; 32], u32>>>,
    hash: [u8; 32],
}

impl Drop for Sending {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.hash) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.hash);
            }
        }
    }
}

/// A `LightningNode` backed by LND. `Debug` shows no credential.
#[derive(Clone)]
pub struct LndNode {
    lightning: LightningClient<Svc>,
    router: RouterClient<Svc>,
    transport: Transport,
    sending: Arc<Mutex<HashMap<[u8; 32], u32>>>,
    /// Sends whose fate is unknown, and when they ended.
    unsure: Arc<Mutex<HashMap<[u8; 32], tokio::time::Instant>>>,
    /// On-chain sends one at a time, so two sends with the same label from this process cannot
    /// both miss each other's transaction.
    send_coins_lock: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for LndNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LndNode")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl LndNode {
    /// Prepares the client; the connection is made on first use (LND may start after us). See
    /// [`LndNode::check`] to try it at once. Call it within a tokio runtime.
    pub fn connect(config: &LndConfig) -> Result<LndNode, LndConfigError> {
        if config.macaroon_hex.is_empty() || hex::decode(&config.macaroon_hex).is_err() {
            return Err(LndConfigError::BadMacaroon);
        }
        let value: AsciiMetadataValue = MetadataValue::try_from(config.macaroon_hex.as_str())
            .map_err(|_| LndConfigError::BadMacaroon)?;
        let (endpoint, transport) = tls::endpoint(config)?;
        let channel = endpoint.connect_lazy();
        let interceptor = MacaroonInterceptor { value };
        Ok(LndNode {
            lightning: LightningClient::with_interceptor(channel.clone(), interceptor.clone()),
            router: RouterClient::with_interceptor(channel, interceptor),
            transport,
            sending: Arc::default(),
            unsure: Arc::default(),
            send_coins_lock: Arc::default(),
        })
    }

    /// Calls LND once (`GetInfo`) and says precisely what is wrong if that fails: a certificate
    /// that is not LND's, a plaintext client facing a TLS port, a refused macaroon, an
    /// unreachable node.
    pub async fn check(&self) -> Result<(), LndConnectError> {
        match tokio::time::timeout(
            CALL_TIMEOUT,
            self.lightning.clone().get_info(GetInfoRequest {}),
        )
        .await
        {
            Err(_) => Err(LndConnectError::Unreachable(
                "LND did not answer in time".into(),
            )),
            Ok(Err(s)) => Err(connect_error(&s, self.transport)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    fn outstanding(&self, hash: &PaymentHash) -> bool {
        let sending = {
            let map = self.sending.lock().unwrap_or_else(|e| e.into_inner());
            map.contains_key(&hash.0)
        };
        sending || self.recently_unsure(hash)
    }

    /// Whether a send of `hash` ended without an answer less than `SEND_GRACE` ago.
    fn recently_unsure(&self, hash: &PaymentHash) -> bool {
        let mut unsure = self.unsure.lock().unwrap_or_else(|e| e.into_inner());
        unsure.retain(|_, at| at.elapsed() < SEND_GRACE);
        unsure.contains_key(&hash.0)
    }

    /// Remembers that a send of `hash` ended without knowing whether LND took it.
    fn mark_unsure(&self, hash: &PaymentHash) {
        let mut unsure = self.unsure.lock().unwrap_or_else(|e| e.into_inner());
        unsure.insert(hash.0, tokio::time::Instant::now());
    }

    fn start_send(&self, hash: &PaymentHash) -> Option<Sending> {
        let mut map = self.sending.lock().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&hash.0) {
            return None;
        }
        map.insert(hash.0, 1);
        Some(Sending {
            map: self.sending.clone(),
            hash: hash.0,
        })
    }

    /// A unary call with the call timeout; LND's refusals mapped by [`rpc_error`].
    async fn unary<T>(
        &self,
        fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, NodeError> {
        self.unary_within(CALL_TIMEOUT, fut).await
    }

    async fn unary_within<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, NodeError> {
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Err(NodeError::Unavailable("LND did not answer in time".into())),
            Ok(Err(s)) => Err(rpc_error(&s, self.transport)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    async fn our_pubkey(&self) -> Result<String, NodeError> {
        let info = self
            .unary(self.lightning.clone().get_info(GetInfoRequest {}))
            .await?;
        Ok(info.identity_pubkey)
    }

    async fn channels_raw(&self) -> Result<Vec<lnrpc::Channel>, NodeError> {
        let resp = self
            .unary(
                self.lightning
                    .clone()
                    .list_channels(ListChannelsRequest::default()),
            )
            .await?;
        Ok(resp.channels)
    }

    /// One look at a payment through `TrackPaymentV2` (its first message is the current state).
    async fn track_once(&self, hash: &PaymentHash) -> Result<PayState, NodeError> {
        match self.lookup(hash).await {
            Err(NodeError::NotFound) if self.outstanding(hash) => Err(NodeError::Unavailable(
                "unknown to LND, but a send of it is still outstanding".into(),
            )),
            other => other,
        }
    }

    /// LND's answer alone (`NotFound` when LND does not know the hash).
    async fn lookup(&self, hash: &PaymentHash) -> Result<PayState, NodeError> {
        let mut router = self.router.clone();
        let req = TrackPaymentRequest {
            payment_hash: hash.0.to_vec(),
            no_inflight_updates: false,
        };
        let first = tokio::time::timeout(CALL_TIMEOUT, async move {
            let mut stream = router.track_payment_v2(req).await?.into_inner();
            stream.message().await
        })
        .await
        .map_err(|_| NodeError::Unavailable("TrackPaymentV2 timed out".into()))?;
        match first {
            Ok(Some(p)) => payment_state(hash, &p),
            Ok(None) => Err(NodeError::Unavailable(
                "TrackPaymentV2 ended without a state".into(),
            )),
            Err(s) if is_unknown_payment(&s) => Err(NodeError::NotFound),
            Err(s) => Err(payment_error(&s, self.transport)),
        }
    }

    async fn send(&self, req: &SendRequest) -> Result<PayState, NodeError> {
        let decoded = oa_invoice::decode(&req.bolt11)
            .map_err(|e| NodeError::Unavailable(format!("invalid invoice: {e}")))?;
        let amt_msat = match decoded.amount {
            Some(_) => 0,
            None => req_i64(req.amount.as_u64(), "amount")?,
        };
        let send = SendPaymentRequest {
            payment_request: req.bolt11.clone(),
            amt_msat,
            fee_limit_msat: req_i64(req.fee_limit.as_u64(), "fee limit")?,
            timeout_seconds: PAYMENT_TIMEOUT_SECS,
            no_inflight_updates: false,
            ..Default::default()
        };
        self.send_prepared(&req.payment_hash, send, req.timeout)
            .await
    }

    /// Sends `send` (for `hash`) and follows its stream until a terminal state or `timeout`.
    /// The caller holds the hash's [`Sending`] guard.
    async fn send_prepared(
        &self,
        hash: &PaymentHash,
        send: SendPaymentRequest,
        timeout: Duration,
    ) -> Result<PayState, NodeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stream = match tokio::time::timeout_at(
            deadline,
            self.router.clone().send_payment_v2(send),
        )
        .await
        {
            Err(_) => {
                self.mark_unsure(hash);
                return Err(NodeError::Unavailable(
                    "SendPaymentV2 did not answer in time".into(),
                ));
            }
            Ok(Err(s)) if is_already_exists(&s) => return self.track_once(hash).await,
            Ok(Err(s)) => {
                if !is_definitive_refusal(&s) {
                    self.mark_unsure(hash);
                }
                return Err(payment_error(&s, self.transport));
            }
            Ok(Ok(resp)) => resp.into_inner(),
        };
        let mut seen_update = false;
        loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                // Out of time: the payment goes on at LND; the caller tracks it.
                Err(_) => {
                    if !seen_update {
                        self.mark_unsure(hash);
                    }
                    return Ok(PayState::InFlight);
                }
                Ok(Ok(Some(p))) => {
                    seen_update = true;
                    let state = payment_state(hash, &p)?;
                    if state.is_terminal() {
                        return Ok(state);
                    }
                }
                Ok(Err(s)) if is_already_exists(&s) => {
                    return self.track_once(hash).await;
                }
                Ok(Err(s)) if status::is_auth(&s) => return Err(NodeError::Auth),
                // The stream broke: whatever LND did with the payment, it was not a failure we
                // know of. Never report Failed here.
                Ok(Err(s)) if seen_update => {
                    tracing::warn!(payment_hash = %hash, code = ?s.code(), "payment stream broke mid-payment; tracking");
                    return Ok(PayState::InFlight);
                }
                Ok(Err(s)) => {
                    if !is_definitive_refusal(&s) {
                        self.mark_unsure(hash);
                    }
                    return Err(payment_error(&s, self.transport));
                }
                Ok(Ok(None)) if seen_update => return Ok(PayState::InFlight),
                Ok(Ok(None)) => {
                    self.mark_unsure(hash);
                    return Err(NodeError::Unavailable(
                        "payment stream ended without a state".into(),
                    ));
                }
            }
        }
    }

    /// Our side's full policy per channel (from the channel graph, as `list_channels`).
    async fn local_policies(&self) -> Result<HashMap<u64, ChannelPolicy>, NodeError> {
        Ok(self
            .list_channels()
            .await?
            .into_iter()
            .map(|c| (c.chan_id, c.local_policy))
            .collect())
    }

    /// The closing transaction of the channel funded at `point`, if its close has started
    /// (waiting for the closing transaction to confirm, or force-closed and maturing).
    async fn pending_closing_txid(&self, point: &str) -> Result<Option<String>, NodeError> {
        let pending = self
            .unary(
                self.lightning
                    .clone()
                    .pending_channels(PendingChannelsRequest::default()),
            )
            .await?;
        let is_it = |c: &Option<lnrpc::pending_channels_response::PendingChannel>| {
            c.as_ref().is_some_and(|c| c.channel_point == point)
        };
        let waiting = pending
            .waiting_close_channels
            .iter()
            .find(|w| is_it(&w.channel) && !w.closing_txid.is_empty())
            .map(|w| w.closing_txid.clone());
        let forced = pending
            .pending_force_closing_channels
            .iter()
            .find(|f| is_it(&f.channel) && !f.closing_txid.is_empty())
            .map(|f| f.closing_txid.clone());
        Ok(waiting.or(forced))
    }

    /// The funding outpoint of one of our channels that is no longer listed as open (it may be
    /// closing), from the channel graph.
    async fn graph_channel_point(&self, chan_id: u64) -> Result<Option<String>, NodeError> {
        let edge = match tokio::time::timeout(
            CALL_TIMEOUT,
            self.lightning.clone().get_chan_info(ChanInfoRequest {
                chan_id,
                chan_point: String::new(),
            }),
        )
        .await
        {
            Err(_) => return Err(NodeError::Unavailable("LND did not answer in time".into())),
            Ok(Err(s)) => match rpc_error(&s, self.transport) {
                // Not in the graph (LND says "edge not found").
                NodeError::Refused(_) => return Ok(None),
                e => return Err(e),
            },
            Ok(Ok(r)) => r.into_inner(),
        };
        let me = self.our_pubkey().await?;
        Ok((edge.node1_pub == me || edge.node2_pub == me).then_some(edge.chan_point))
    }

    /// The wallet transaction carrying `label`, if any (unconfirmed ones included).
    async fn labelled_tx(&self, label: &str) -> Result<Option<String>, NodeError> {
        let txs = self
            .unary(
                self.lightning
                    .clone()
                    .get_transactions(GetTransactionsRequest {
                        start_height: 0,
                        // -1 includes unconfirmed transactions.
                        end_height: -1,
                        account: String::new(),
                    }),
            )
            .await?;
        Ok(txs
            .transactions
            .into_iter()
            .find(|t| t.label == label)
            .map(|t| t.tx_hash))
    }

    /// Starts a close and waits for its closing transaction's id.
    async fn start_close(&self, point: &str, force: bool) -> Result<ClosingChannel, NodeError> {
        let channel_point = chan_point(point).ok_or_else(|| {
            NodeError::Unavailable(format!("LND reported a malformed channel point {point:?}"))
        })?;
        let mut lightning = self.lightning.clone();
        let req = CloseChannelRequest {
            channel_point: Some(channel_point),
            force,
            ..Default::default()
        };
        let transport = self.transport;
        let first = tokio::time::timeout(CHANNEL_ACTION_TIMEOUT, async move {
            let mut stream = lightning
                .close_channel(req)
                .await
                .map_err(|s| rpc_error(&s, transport))?
                .into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(update)) => match update.update {
                        Some(Update::ClosePending(p)) => return txid_hex(&p.txid),
                        Some(Update::ChanClose(c)) => return txid_hex(&c.closing_txid),
                        // No txid in these: wait for the next update.
                        Some(Update::CloseInstant(_)) | None => {}
                    },
                    Ok(None) => {
                        return Err(NodeError::Unavailable(
                            "LND ended the close stream without a closing transaction".into(),
                        ));
                    }
                    // The connection broke after LND took the request.
                    Err(s) if s.source().is_some() => return Err(broken_stream(&s)),
                    Err(s) => return Err(rpc_error(&s, transport)),
                }
            }
        })
        .await
        .map_err(|_| {
            NodeError::Unavailable(
                "LND did not report a closing transaction in time; the close may be under way"
                    .into(),
            )
        })?;
        Ok(ClosingChannel {
            closing_txid: first?,
        })
    }
}

#[async_trait]
impl LightningNode for LndNode {
    fn backend(&self) -> &'static str {
        "lnd"
    }

    async fn info(&self) -> Result<NodeInfo, NodeError> {
        let info = self
            .unary(self.lightning.clone().get_info(GetInfoRequest {}))
            .await?;
        let bal = self
            .unary(
                self.lightning
                    .clone()
                    .channel_balance(ChannelBalanceRequest {}),
            )
            .await?;
        Ok(NodeInfo {
            pubkey: info.identity_pubkey,
            network: info
                .chains
                .first()
                .map(|c| c.network.clone())
                .unwrap_or_default(),
            backend: "lnd",
            local_balance: msat(bal.local_balance.map_or(0, |a| a.msat))?,
            remote_balance: msat(bal.remote_balance.map_or(0, |a| a.msat))?,
            channel_count: info
                .num_active_channels
                .saturating_add(info.num_inactive_channels),
        })
    }

    async fn pay(&self, req: &SendRequest) -> Result<PayState, NodeError> {
        // One send per hash from this process at a time; a concurrent caller only tracks.
        let Some(_sending) = self.start_send(&req.payment_hash) else {
            return self.track_once(&req.payment_hash).await;
        };
        // Sent before (in any state, even failed, which LND would let us retry): report it. The
        // only outstanding send of this hash is ours, not yet made.
        match self.lookup(&req.payment_hash).await {
            Ok(state) => return Ok(state),
            // An earlier send of unknown fate may still start it: do not send again yet.
            Err(NodeError::NotFound) if self.recently_unsure(&req.payment_hash) => {
                return Err(NodeError::Unavailable(
                    "an earlier send of this payment has an unknown fate".into(),
                ));
            }
            Err(NodeError::NotFound) => {}
            Err(e) => return Err(e),
        }
        self.send(req).await
    }

    async fn track(&self, payment_hash: &PaymentHash) -> Result<PayState, NodeError> {
        self.track_once(payment_hash).await
    }

    async fn list_channels(&self) -> Result<Vec<ChannelInfo>, NodeError> {
        let me = self.our_pubkey().await?;
        let mut out = Vec::new();
        for c in self.channels_raw().await? {
            let edge = self
                .unary(self.lightning.clone().get_chan_info(ChanInfoRequest {
                    chan_id: c.chan_id,
                    chan_point: String::new(),
                }))
                .await?;
            let (ours, theirs) = if edge.node1_pub == me {
                (edge.node1_policy.as_ref(), edge.node2_policy.as_ref())
            } else {
                (edge.node2_policy.as_ref(), edge.node1_policy.as_ref())
            };
            out.push(ChannelInfo {
                chan_id: c.chan_id,
                remote_pubkey: c.remote_pubkey,
                capacity: sat(c.capacity)?,
                local_balance: sat(c.local_balance)?,
                remote_balance: sat(c.remote_balance)?,
                active: c.active,
                local_policy: policy(ours)?,
                remote_policy: policy(theirs)?,
            });
        }
        Ok(out)
    }

    async fn update_channel_policy(
        &self,
        chan_id: Option<u64>,
        policy: &ChannelPolicy,
    ) -> Result<u32, NodeError> {
        let inbound_fee = InboundFee {
            base_fee_msat: i32::try_from(policy.inbound_base_fee_msat).map_err(|_| {
                NodeError::Refused(format!(
                    "inbound base fee {} msat is out of range",
                    policy.inbound_base_fee_msat
                ))
            })?,
            fee_rate_ppm: policy.inbound_fee_ppm,
        };
        let channels = self.channels_raw().await?;
        let (scope, in_scope) = match chan_id {
            None => (Scope::Global(true), channels.len()),
            Some(id) => {
                let cp = channels
                    .iter()
                    .find(|c| c.chan_id == id)
                    .and_then(|c| chan_point(&c.channel_point))
                    .ok_or(NodeError::UnknownChannel(id))?;
                (Scope::ChanPoint(cp), 1)
            }
        };
        let resp = self
            .unary(
                self.lightning
                    .clone()
                    .update_channel_policy(PolicyUpdateRequest {
                        scope: Some(scope),
                        base_fee_msat: req_i64(policy.base_fee.as_u64(), "base fee")?,
                        fee_rate_ppm: policy.fee_ppm,
                        time_lock_delta: policy.time_lock_delta,
                        max_htlc_msat: policy.max_htlc.as_u64(),
                        min_htlc_msat: policy.min_htlc.as_u64(),
                        min_htlc_msat_specified: true,
                        inbound_fee: Some(inbound_fee),
                        ..Default::default()
                    }),
            )
            .await?;
        let changed = in_scope.saturating_sub(resp.failed_updates.len());
        Ok(u32::try_from(changed).unwrap_or(u32::MAX))
    }

    async fn forwarding_history(
        &self,
        index_offset: u64,
        max_events: u32,
    ) -> Result<ForwardingPage, NodeError> {
        // LND's offsets are 32-bit: past them there is nothing.
        let Ok(offset) = u32::try_from(index_offset) else {
            return Ok(ForwardingPage {
                events: Vec::new(),
                last_offset_index: index_offset,
            });
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let resp = self
            .unary(
                self.lightning
                    .clone()
                    .forwarding_history(ForwardingHistoryRequest {
                        start_time: 1,
                        end_time: now.saturating_add(86_400),
                        index_offset: offset,
                        num_max_events: max_events,
                        peer_alias_lookup: false,
                    }),
            )
            .await?;
        let mut events = Vec::with_capacity(resp.forwarding_events.len());
        for (i, e) in resp.forwarding_events.iter().enumerate() {
            events.push(ForwardingEvent {
                index: index_offset.saturating_add(i as u64),
                timestamp_ms: e.timestamp_ns / 1_000_000,
                chan_id_in: e.chan_id_in,
                chan_id_out: e.chan_id_out,
                amt_in: msat(e.amt_in_msat)?,
                amt_out: msat(e.amt_out_msat)?,
                fee: msat(e.fee_msat)?,
            });
        }
        Ok(ForwardingPage {
            events,
            last_offset_index: u64::from(resp.last_offset_index),
        })
    }

    async fn add_invoice(&self, req: &InvoiceRequest) -> Result<NodeInvoice, NodeError> {
        let added = self
            .unary(self.lightning.clone().add_invoice(lnrpc::Invoice {
                memo: req.description.clone(),
                value_msat: req_i64(req.amount.as_u64(), "amount")?,
                expiry: i64::from(req.expiry_secs),
                ..Default::default()
            }))
            .await?;
        let hash: [u8; 32] = added.r_hash.as_slice().try_into().map_err(|_| {
            NodeError::Unavailable("LND reported an invoice hash not of 32 bytes".into())
        })?;
        // LND's own record (creation time, indexes) is the truth.
        self.lookup_invoice(&PaymentHash(hash)).await
    }

    async fn lookup_invoice(&self, hash: &PaymentHash) -> Result<NodeInvoice, NodeError> {
        let req = lnrpc::PaymentHash {
            r_hash_str: String::new(),
            r_hash: hash.0.to_vec(),
        };
        let inv =
            match tokio::time::timeout(CALL_TIMEOUT, self.lightning.clone().lookup_invoice(req))
                .await
            {
                Err(_) => return Err(NodeError::Unavailable("LND did not answer in time".into())),
                Ok(Err(s))
                    if s.source().is_none()
                        && (s.code() == tonic::Code::NotFound
                            || s.message().contains("unable to locate invoice")) =>
                {
                    return Err(NodeError::NotFound);
                }
                Ok(Err(s)) => return Err(rpc_error(&s, self.transport)),
                Ok(Ok(r)) => r.into_inner(),
            };
        invoice(&inv, invoices::now_ms())
    }

    async fn subscribe_settled_invoices(
        &self,
        after_settle_index: u64,
    ) -> Result<BoxStream<'static, Result<NodeInvoice, NodeError>>, NodeError> {
        invoices::subscribe_settled(self, after_settle_index).await
    }

    async fn estimate_route_fee(
        &self,
        dest: &str,
        amount: Msat,
    ) -> Result<RouteFeeEstimate, NodeError> {
        let resp = self
            .unary(self.router.clone().estimate_route_fee(RouteFeeRequest {
                dest: pubkey_bytes(dest)?,
                amt_sat: sat_ceil(amount)?,
                ..Default::default()
            }))
            .await?;
        if resp.failure_reason != lnrpc::PaymentFailureReason::FailureReasonNone as i32 {
            let reason = lnrpc::PaymentFailureReason::try_from(resp.failure_reason)
                .map_or("unknown", |r| r.as_str_name());
            return Err(NodeError::Refused(format!("no route to {dest}: {reason}")));
        }
        Ok(RouteFeeEstimate {
            fee: msat_i64(resp.routing_fee_msat)?,
            time_lock_delay: u32::try_from(resp.time_lock_delay).map_err(|_| {
                NodeError::Unavailable(format!(
                    "LND reported a time lock delay of {}",
                    resp.time_lock_delay
                ))
            })?,
        })
    }

    async fn closed_channels(&self) -> Result<Vec<ClosedChannel>, NodeError> {
        let resp = self
            .unary(
                self.lightning
                    .clone()
                    .closed_channels(ClosedChannelsRequest::default()),
            )
            .await?;
        resp.channels.iter().map(closed_channel).collect()
    }

    async fn fee_report(&self) -> Result<FeeReport, NodeError> {
        let report = self
            .unary(self.lightning.clone().fee_report(FeeReportRequest {}))
            .await?;
        // The fee report carries the fees; the rest of each policy comes from the graph.
        let policies = self.local_policies().await?;
        let mut channels = Vec::with_capacity(report.channel_fees.len());
        for f in &report.channel_fees {
            let Some(mut p) = policies.get(&f.chan_id).copied() else {
                // Listed in the report but not among our open channels any more (closed in
                // between): skip it rather than report a half-known policy.
                continue;
            };
            p.base_fee = msat_i64(f.base_fee_msat)?;
            p.fee_ppm = u32::try_from(f.fee_per_mil).map_err(|_| {
                NodeError::Unavailable(format!("LND reported a fee rate of {}", f.fee_per_mil))
            })?;
            p.inbound_base_fee_msat = i64::from(f.inbound_base_fee_msat);
            p.inbound_fee_ppm = f.inbound_fee_per_mil;
            channels.push((f.chan_id, p));
        }
        Ok(FeeReport {
            channels,
            day_fee_sum: sat_u64(report.day_fee_sum)?,
            week_fee_sum: sat_u64(report.week_fee_sum)?,
            month_fee_sum: sat_u64(report.month_fee_sum)?,
        })
    }

    async fn open_channel(&self, req: &NodeOpenChannel) -> Result<super::ChannelPoint, NodeError> {
        let open = OpenChannelRequest {
            node_pubkey: pubkey_bytes(&req.remote_pubkey)?,
            local_funding_amount: whole_sat(req.local_funding, "local funding")?,
            push_sat: whole_sat(req.push, "push amount")?,
            private: req.private,
            ..Default::default()
        };
        let point = self
            .unary_within(
                CHANNEL_ACTION_TIMEOUT,
                self.lightning.clone().open_channel_sync(open),
            )
            .await?;
        channel_point(&point)
    }

    async fn close_channel(&self, chan_id: u64, force: bool) -> Result<ClosingChannel, NodeError> {
        let open_point = self
            .channels_raw()
            .await?
            .into_iter()
            .find(|c| c.chan_id == chan_id)
            .map(|c| c.channel_point);
        if let Some(point) = open_point {
            // Already closing (LND may still list it): report the same closing transaction.
            if let Some(closing_txid) = self.pending_closing_txid(&point).await? {
                return Ok(ClosingChannel { closing_txid });
            }
            return self.start_close(&point, force).await;
        }
        // Not open: closed already, or closing and no longer listed.
        let closed = self.closed_channels().await?;
        if let Some(c) = closed.iter().find(|c| c.chan_id == chan_id) {
            return Ok(ClosingChannel {
                closing_txid: c.closing_txid.clone(),
            });
        }
        if let Some(point) = self.graph_channel_point(chan_id).await?
            && let Some(closing_txid) = self.pending_closing_txid(&point).await?
        {
            return Ok(ClosingChannel { closing_txid });
        }
        Err(NodeError::UnknownChannel(chan_id))
    }

    async fn wallet_balance(&self) -> Result<WalletBalance, NodeError> {
        let bal = self
            .unary(
                self.lightning
                    .clone()
                    .wallet_balance(WalletBalanceRequest::default()),
            )
            .await?;
        Ok(WalletBalance {
            confirmed: sat(bal.confirmed_balance)?,
            unconfirmed: sat(bal.unconfirmed_balance)?,
        })
    }

    async fn new_address(&self) -> Result<String, NodeError> {
        let resp = self
            .unary(self.lightning.clone().new_address(NewAddressRequest {
                r#type: AddressType::WitnessPubkeyHash as i32,
                account: String::new(),
            }))
            .await?;
        Ok(resp.address)
    }

    async fn send_coins(&self, req: &NodeSendCoins) -> Result<String, NodeError> {
        if req.label.chars().count() > MAX_LABEL_CHARS {
            return Err(NodeError::Refused(format!(
                "the label is longer than {MAX_LABEL_CHARS} characters"
            )));
        }
        if req.amount.is_zero() {
            return Err(NodeError::Refused("the amount is zero".into()));
        }
        let amount = whole_sat(req.amount, "amount")?;
        let _one_at_a_time = self.send_coins_lock.lock().await;
        // Sent before (by us, before a crash or a lost answer)? Then that is the send. Without
        // a label there is nothing to find a send by (every unlabelled transaction, deposits
        // included, would match): such a send is not idempotent.
        if !req.label.is_empty()
            && let Some(txid) = self.labelled_tx(&req.label).await?
        {
            return Ok(txid);
        }
        let sent = self
            .unary(self.lightning.clone().send_coins(SendCoinsRequest {
                addr: req.address.clone(),
                amount,
                sat_per_vbyte: req.sat_per_vbyte,
                label: req.label.clone(),
                ..Default::default()
            }))
            .await?;
        Ok(sent.txid)
    }

    async fn rebalance(&self, req: &RebalanceRequest) -> Result<RebalanceOutcome, NodeError> {
        if req.out_chan_id == req.in_chan_id {
            return Err(NodeError::Refused(
                "a rebalance needs two different channels".into(),
            ));
        }
        if req.amount.is_zero() {
            return Err(NodeError::Refused("the amount is zero".into()));
        }
        let channels = self.channels_raw().await?;
        if !channels.iter().any(|c| c.chan_id == req.out_chan_id) {
            return Err(NodeError::UnknownChannel(req.out_chan_id));
        }
        let last_hop = channels
            .iter()
            .find(|c| c.chan_id == req.in_chan_id)
            .map(|c| pubkey_bytes(&c.remote_pubkey))
            .ok_or(NodeError::UnknownChannel(req.in_chan_id))??;
        let added = self
            .unary(self.lightning.clone().add_invoice(lnrpc::Invoice {
                memo: format!("rebalance {} -> {}", req.out_chan_id, req.in_chan_id),
                value_msat: req_i64(req.amount.as_u64(), "amount")?,
                expiry: REBALANCE_INVOICE_EXPIRY_SECS,
                ..Default::default()
            }))
            .await?;
        let hash = PaymentHash(added.r_hash.as_slice().try_into().map_err(|_| {
            NodeError::Unavailable("LND reported an invoice hash not of 32 bytes".into())
        })?);
        let send = SendPaymentRequest {
            payment_request: added.payment_request,
            fee_limit_msat: req_i64(req.fee_limit.as_u64(), "fee limit")?,
            timeout_seconds: PAYMENT_TIMEOUT_SECS,
            outgoing_chan_ids: vec![req.out_chan_id],
            last_hop_pubkey: last_hop,
            allow_self_payment: true,
            no_inflight_updates: false,
            ..Default::default()
        };
        // A fresh hash: nothing else can be sending it.
        let _sending = self.start_send(&hash);
        let state = match self.send_prepared(&hash, send, req.timeout).await {
            Ok(state) => state,
            // Its fate is unknown: report the hash in flight so the caller tracks it.
            Err(NodeError::Unavailable(reason)) => {
                tracing::warn!(payment_hash = %hash, %reason, "rebalance send has an unknown fate; tracking");
                PayState::InFlight
            }
            Err(e) => return Err(e),
        };
        Ok(RebalanceOutcome {
            payment_hash: hash,
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> LndConfig {
        LndConfig {
            url: url.into(),
            macaroon_hex: "0201036c6e64".into(),
            tls_cert_pem: None,
            tls_domain: None,
            insecure_plaintext: false,
        }
    }

    // `connect` prepares a lazy channel, which needs a runtime.
    #[tokio::test]
    async fn plaintext_needs_the_explicit_flag_and_https_needs_a_certificate() {
        assert!(matches!(
            LndNode::connect(&config("http://127.0.0.1:10009")),
            Err(LndConfigError::PlaintextNotAllowed)
        ));
        assert!(matches!(
            LndNode::connect(&config("https://127.0.0.1:10009")),
            Err(LndConfigError::MissingTlsCert)
        ));
        let garbage = LndConfig {
            tls_cert_pem: Some(b"not a certificate".to_vec()),
            ..config("https://127.0.0.1:10009")
        };
        assert!(matches!(
            LndNode::connect(&garbage),
            Err(LndConfigError::BadTlsCert)
        ));
        assert!(matches!(
            LndNode::connect(&config("ftp://127.0.0.1:10009")),
            Err(LndConfigError::BadUrl(..))
        ));
        let plaintext = LndConfig {
            insecure_plaintext: true,
            ..config("http://127.0.0.1:10009")
        };
        assert!(LndNode::connect(&plaintext).is_ok());
        let bad_mac = LndConfig {
            macaroon_hex: "zz".into(),
            ..plaintext
        };
        assert!(matches!(
            LndNode::connect(&bad_mac),
            Err(LndConfigError::BadMacaroon)
        ));
    }
}
