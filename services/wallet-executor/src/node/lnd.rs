//! The `lnd` backend: LND over gRPC (tonic), with the macaroon sent as `macaroon` metadata on
//! every call.
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

use std::{
    collections::HashMap,
    fmt,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use oa_invoice::{PaymentHash, Preimage};
use oa_money::Msat;
use oa_proto::{
    lnrpc::{
        self, ChanInfoRequest, ChannelBalanceRequest, ChannelPoint, ForwardingHistoryRequest,
        GetInfoRequest, ListChannelsRequest, PaymentFailureReason, PolicyUpdateRequest,
        RoutingPolicy, channel_point::FundingTxid, lightning_client::LightningClient,
        payment::PaymentStatus, policy_update_request::Scope,
    },
    routerrpc::{SendPaymentRequest, TrackPaymentRequest, router_client::RouterClient},
};
use tonic::{
    Code, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use super::{
    ChannelInfo, ChannelPolicy, FailureCode, ForwardingEvent, ForwardingPage, LightningNode,
    NodeError, NodeInfo, PayState, SendRequest,
};

/// Largest macaroon or certificate file we read.
const MAX_CREDENTIAL_FILE_BYTES: u64 = 64 * 1024;
/// How long one unary call (or the first message of a tracking stream) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after a send whose fate is unknown (no answer, or a broken connection before LND's
/// first update) `track` refuses to call the payment unknown: the request could still be in
/// LND's hands and start the payment later.
const SEND_GRACE: Duration = Duration::from_secs(60);
/// LND's path-finding timeout for one payment.
const PAYMENT_TIMEOUT_SECS: i32 = 60;

/// How to reach LND. `Debug` redacts the macaroon.
#[derive(Clone)]
pub struct LndConfig {
    /// `http://host:port` (plaintext, for tests) or `https://host:port`.
    pub url: String,
    /// The macaroon, hex-encoded.
    pub macaroon_hex: String,
    /// The node's TLS certificate (PEM), for `https`.
    pub tls_cert_pem: Option<Vec<u8>>,
}

impl fmt::Debug for LndConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LndConfig")
            .field("url", &self.url)
            .field("macaroon_hex", &"[redacted]")
            .field(
                "tls_cert_pem",
                &self.tls_cert_pem.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LndConfigError {
    #[error("{what}: cannot read {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: {path} is larger than {MAX_CREDENTIAL_FILE_BYTES} bytes")]
    TooLarge { what: &'static str, path: String },
    #[error("the macaroon is empty or not valid hex")]
    BadMacaroon,
    #[error("invalid LND url {0:?}: {1}")]
    BadUrl(String, String),
    #[error(
        "TLS to LND is not built in this version: use an http:// --lnd-url (e.g. through a local \
         TLS-terminating proxy holding the node's certificate)"
    )]
    TlsNotSupported,
}

fn read_bounded(what: &'static str, path: &Path) -> Result<Vec<u8>, LndConfigError> {
    use std::io::Read;
    let read_err = |source| LndConfigError::Read {
        what,
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut buf = Vec::new();
    file.take(MAX_CREDENTIAL_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() as u64 > MAX_CREDENTIAL_FILE_BYTES {
        return Err(LndConfigError::TooLarge {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(buf)
}

impl LndConfig {
    /// Loads the credentials from files: the macaroon either as LND writes it (binary) or as hex
    /// text; the certificate as PEM.
    pub fn from_files(
        url: &str,
        macaroon_file: &Path,
        tls_cert_file: Option<&Path>,
    ) -> Result<LndConfig, LndConfigError> {
        let raw = read_bounded("--lnd-macaroon-file", macaroon_file)?;
        let text = std::str::from_utf8(&raw).ok().map(str::trim);
        let macaroon_hex = match text {
            Some(t) if !t.is_empty() && hex::decode(t).is_ok() => t.to_ascii_lowercase(),
            _ if raw.is_empty() => return Err(LndConfigError::BadMacaroon),
            _ => hex::encode(&raw),
        };
        let tls_cert_pem = tls_cert_file
            .map(|p| read_bounded("--lnd-tls-cert-file", p))
            .transpose()?;
        Ok(LndConfig {
            url: url.to_owned(),
            macaroon_hex,
            tls_cert_pem,
        })
    }
}

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

/// A `LightningNode` backed by LND.
#[derive(Clone)]
pub struct LndNode {
    lightning: LightningClient<Svc>,
    router: RouterClient<Svc>,
    sending: Arc<Mutex<HashMap<[u8; 32], u32>>>,
    /// Sends whose fate is unknown, and when they ended.
    unsure: Arc<Mutex<HashMap<[u8; 32], tokio::time::Instant>>>,
}

impl fmt::Debug for LndNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LndNode").finish_non_exhaustive()
    }
}

impl LndNode {
    /// Prepares the client; the connection is made on first use (LND may start after us).
    pub fn connect(config: &LndConfig) -> Result<LndNode, LndConfigError> {
        let value: AsciiMetadataValue = MetadataValue::try_from(config.macaroon_hex.as_str())
            .map_err(|_| LndConfigError::BadMacaroon)?;
        if config.macaroon_hex.is_empty() {
            return Err(LndConfigError::BadMacaroon);
        }
        if config.url.starts_with("https://") {
            return Err(LndConfigError::TlsNotSupported);
        }
        if !config.url.starts_with("http://") {
            return Err(LndConfigError::BadUrl(
                config.url.clone(),
                "expected http:// or https://".into(),
            ));
        }
        let endpoint = Endpoint::from_shared(config.url.clone())
            .map_err(|e| LndConfigError::BadUrl(config.url.clone(), e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        let interceptor = MacaroonInterceptor { value };
        Ok(LndNode {
            lightning: LightningClient::with_interceptor(channel.clone(), interceptor.clone()),
            router: RouterClient::with_interceptor(channel, interceptor),
            sending: Arc::default(),
            unsure: Arc::default(),
        })
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

    async fn our_pubkey(&self) -> Result<String, NodeError> {
        let info = unary(self.lightning.clone().get_info(GetInfoRequest {})).await?;
        Ok(info.identity_pubkey)
    }

    async fn channels_raw(&self) -> Result<Vec<lnrpc::Channel>, NodeError> {
        let resp = unary(
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
            Err(s) => Err(status_error(&s)),
        }
    }

    async fn send(&self, req: &SendRequest) -> Result<PayState, NodeError> {
        let decoded = oa_invoice::decode(&req.bolt11)
            .map_err(|e| NodeError::Unavailable(format!("invalid invoice: {e}")))?;
        let amt_msat = match decoded.amount {
            Some(_) => 0,
            None => to_i64(req.amount.as_u64())?,
        };
        let send = SendPaymentRequest {
            payment_request: req.bolt11.clone(),
            amt_msat,
            fee_limit_msat: to_i64(req.fee_limit.as_u64())?,
            timeout_seconds: PAYMENT_TIMEOUT_SECS,
            no_inflight_updates: false,
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + req.timeout;
        let mut stream = match tokio::time::timeout_at(
            deadline,
            self.router.clone().send_payment_v2(send),
        )
        .await
        {
            Err(_) => {
                self.mark_unsure(&req.payment_hash);
                return Err(NodeError::Unavailable(
                    "SendPaymentV2 did not answer in time".into(),
                ));
            }
            Ok(Err(s)) if is_already_exists(&s) => return self.track_once(&req.payment_hash).await,
            Ok(Err(s)) => {
                if !is_definitive_refusal(&s) {
                    self.mark_unsure(&req.payment_hash);
                }
                return Err(status_error(&s));
            }
            Ok(Ok(resp)) => resp.into_inner(),
        };
        let mut seen_update = false;
        loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                // Out of time: the payment goes on at LND; the caller tracks it.
                Err(_) => {
                    if !seen_update {
                        self.mark_unsure(&req.payment_hash);
                    }
                    return Ok(PayState::InFlight);
                }
                Ok(Ok(Some(p))) => {
                    seen_update = true;
                    let state = payment_state(&req.payment_hash, &p)?;
                    if state.is_terminal() {
                        return Ok(state);
                    }
                }
                Ok(Err(s)) if is_already_exists(&s) => {
                    return self.track_once(&req.payment_hash).await;
                }
                Ok(Err(s)) if is_auth(&s) => return Err(NodeError::Auth),
                // The stream broke: whatever LND did with the payment, it was not a failure we
                // know of. Never report Failed here.
                Ok(Err(s)) if seen_update => {
                    tracing::warn!(payment_hash = %req.payment_hash, code = ?s.code(), "payment stream broke mid-payment; tracking");
                    return Ok(PayState::InFlight);
                }
                Ok(Err(s)) => {
                    if !is_definitive_refusal(&s) {
                        self.mark_unsure(&req.payment_hash);
                    }
                    return Err(status_error(&s));
                }
                Ok(Ok(None)) if seen_update => return Ok(PayState::InFlight),
                Ok(Ok(None)) => {
                    self.mark_unsure(&req.payment_hash);
                    return Err(NodeError::Unavailable(
                        "payment stream ended without a state".into(),
                    ));
                }
            }
        }
    }
}

async fn unary<T>(
    fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, NodeError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Err(_) => Err(NodeError::Unavailable("LND did not answer in time".into())),
        Ok(Err(s)) => Err(status_error(&s)),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

fn is_auth(s: &Status) -> bool {
    match s.code() {
        Code::Unauthenticated | Code::PermissionDenied => true,
        // LND reports macaroon problems with code Unknown.
        Code::Unknown => {
            let m = s.message();
            m.contains("macaroon") || m.contains("verification failed")
        }
        _ => false,
    }
}

fn is_already_exists(s: &Status) -> bool {
    let m = s.message();
    s.code() == Code::AlreadyExists
        || m.contains("invoice is already paid")
        || m.contains("payment is in transition")
        || m.contains("already exists")
}

/// LND answered and refused the request itself: the payment was not started.
fn is_definitive_refusal(s: &Status) -> bool {
    is_auth(s)
        || matches!(
            s.code(),
            Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
                | Code::NotFound
        )
}

fn is_unknown_payment(s: &Status) -> bool {
    s.code() == Code::NotFound || s.message().contains("payment isn't initiated")
}

fn status_error(s: &Status) -> NodeError {
    if is_auth(s) {
        NodeError::Auth
    } else {
        NodeError::Unavailable(format!("lnd: {:?}: {}", s.code(), s.message()))
    }
}

fn to_i64(v: u64) -> Result<i64, NodeError> {
    i64::try_from(v).map_err(|_| NodeError::Unavailable(format!("{v} does not fit LND's int64")))
}

fn msat(v: u64) -> Result<Msat, NodeError> {
    Msat::new(v).map_err(|_| NodeError::Unavailable(format!("LND reported {v} msat, out of range")))
}

fn msat_i64(v: i64) -> Result<Msat, NodeError> {
    msat(u64::try_from(v).map_err(|_| NodeError::Unavailable(format!("LND reported {v}")))?)
}

fn sat(v: i64) -> Result<Msat, NodeError> {
    msat_i64(
        v.checked_mul(1000)
            .ok_or_else(|| NodeError::Unavailable(format!("LND reported {v} sat")))?,
    )
}

/// Maps LND's view of a payment to ours.
fn payment_state(hash: &PaymentHash, p: &lnrpc::Payment) -> Result<PayState, NodeError> {
    match PaymentStatus::try_from(p.status).unwrap_or(PaymentStatus::Unknown) {
        PaymentStatus::Succeeded => {
            let preimage: Preimage = p
                .payment_preimage
                .parse()
                .map_err(|_| NodeError::Unavailable("LND reported a malformed preimage".into()))?;
            if !preimage.matches(hash) {
                return Err(NodeError::Unavailable(
                    "LND reported a preimage that does not match the payment hash".into(),
                ));
            }
            Ok(PayState::Succeeded {
                preimage,
                fee: msat_i64(p.fee_msat)?,
            })
        }
        PaymentStatus::Failed => {
            let reason = PaymentFailureReason::try_from(p.failure_reason)
                .unwrap_or(PaymentFailureReason::FailureReasonError);
            let code = match reason {
                PaymentFailureReason::FailureReasonTimeout => FailureCode::Timeout,
                PaymentFailureReason::FailureReasonNoRoute => FailureCode::NoRoute,
                PaymentFailureReason::FailureReasonIncorrectPaymentDetails => {
                    FailureCode::IncorrectPaymentDetails
                }
                PaymentFailureReason::FailureReasonInsufficientBalance => {
                    FailureCode::InsufficientBalance
                }
                PaymentFailureReason::FailureReasonNone
                | PaymentFailureReason::FailureReasonError
                | PaymentFailureReason::FailureReasonCanceled => FailureCode::Error,
            };
            Ok(PayState::Failed {
                code,
                reason: format!("lnd: {}", reason.as_str_name()),
            })
        }
        PaymentStatus::InFlight | PaymentStatus::Initiated | PaymentStatus::Unknown => {
            Ok(PayState::InFlight)
        }
    }
}

fn policy(p: Option<&RoutingPolicy>) -> Result<ChannelPolicy, NodeError> {
    let d = RoutingPolicy::default();
    let p = p.unwrap_or(&d);
    Ok(ChannelPolicy {
        base_fee: msat_i64(p.fee_base_msat)?,
        fee_ppm: u32::try_from(p.fee_rate_milli_msat)
            .map_err(|_| NodeError::Unavailable("LND reported a fee rate out of range".into()))?,
        min_htlc: msat_i64(p.min_htlc)?,
        max_htlc: msat(p.max_htlc_msat)?,
        time_lock_delta: p.time_lock_delta,
        // Our LND message subset does not carry inbound fees yet.
        inbound_base_fee_msat: 0,
        inbound_fee_ppm: 0,
    })
}

fn chan_point(cp: &str) -> Option<ChannelPoint> {
    let (txid, index) = cp.rsplit_once(':')?;
    Some(ChannelPoint {
        funding_txid: Some(FundingTxid::FundingTxidStr(txid.to_owned())),
        output_index: index.parse().ok()?,
    })
}

#[async_trait]
impl LightningNode for LndNode {
    fn backend(&self) -> &'static str {
        "lnd"
    }

    async fn info(&self) -> Result<NodeInfo, NodeError> {
        let info = unary(self.lightning.clone().get_info(GetInfoRequest {})).await?;
        let bal = unary(
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
            let edge = unary(self.lightning.clone().get_chan_info(ChanInfoRequest {
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
        let resp = unary(
            self.lightning
                .clone()
                .update_channel_policy(PolicyUpdateRequest {
                    scope: Some(scope),
                    base_fee_msat: to_i64(policy.base_fee.as_u64())?,
                    fee_rate_ppm: policy.fee_ppm,
                    time_lock_delta: policy.time_lock_delta,
                    max_htlc_msat: policy.max_htlc.as_u64(),
                    min_htlc_msat: policy.min_htlc.as_u64(),
                    min_htlc_msat_specified: true,
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
        let resp = unary(
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
}
