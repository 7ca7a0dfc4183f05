//! A fake LND gRPC server: speaks the `lnrpc.Lightning` and `routerrpc.Router` subset in
//! `proto/`, checks the macaroon, keeps invoices and payments in memory, pays the invoices it
//! issued (settling them, revealing their preimages), and can be told to fail: drop the payment
//! stream mid-payment, hang payments in flight, or reject every macaroon.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bitcoin::secp256k1::SecretKey;
use oa_invoice::{InvoiceRequest, InvoiceSigner, Network, PaymentHash, Preimage};
use oa_money::Msat;
use oa_proto::{
    lnrpc::{
        self, AddInvoiceResponse, Amount, Chain, ChanInfoRequest, ChannelBalanceRequest,
        ChannelBalanceResponse, ChannelEdge, ForwardingHistoryRequest, ForwardingHistoryResponse,
        GetInfoRequest, GetInfoResponse, Invoice, InvoiceState, ListChannelsRequest,
        ListChannelsResponse, Payment, PaymentFailureReason, PolicyUpdateRequest,
        PolicyUpdateResponse, RoutingPolicy,
        channel_point::FundingTxid,
        lightning_server::{Lightning, LightningServer},
        payment::PaymentStatus,
        policy_update_request::Scope,
    },
    routerrpc::{
        SendPaymentRequest, TrackPaymentRequest,
        router_server::{Router, RouterServer},
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// What the fake should get wrong.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Refuse every macaroon (UNAUTHENTICATED).
    pub reject_macaroon: bool,
    /// Break the payment stream after its first in-flight update; the payment still completes.
    pub drop_stream: bool,
    /// Keep new payments in flight until [`FakeLnd::release`].
    pub hang: bool,
    /// Break the payment stream before any update, and only then start the payment (a request
    /// LND took although the client saw the connection fail).
    pub drop_before_update: bool,
}

struct FakeInvoice {
    preimage: Preimage,
    amount_msat: u64,
    bolt11: String,
    direct: bool,
    state: InvoiceState,
    add_index: u64,
}

struct FakeChannel {
    chan_id: u64,
    chan_point: String,
    remote_pubkey: String,
    capacity_sat: i64,
    local_sat: i64,
    local: RoutingPolicy,
    remote: RoutingPolicy,
}

#[derive(Default)]
struct State {
    invoices: HashMap<[u8; 32], FakeInvoice>,
    payments: HashMap<[u8; 32], Payment>,
    /// How many times each hash was really sent.
    sends: HashMap<[u8; 32], u32>,
    /// Outcomes held back by the `hang` fault.
    held: Vec<([u8; 32], Payment)>,
    channels: Vec<FakeChannel>,
    faults: Faults,
}

#[derive(Clone)]
pub struct FakeLnd {
    macaroon_hex: String,
    me: Arc<InvoiceSigner>,
    peer: Arc<InvoiceSigner>,
    merchant: Arc<InvoiceSigner>,
    state: Arc<Mutex<State>>,
}

fn signer(byte: u8) -> Arc<InvoiceSigner> {
    Arc::new(InvoiceSigner::new(
        SecretKey::from_slice(&[byte; 32]).unwrap(),
    ))
}

fn policy(base: i64, ppm: i64) -> RoutingPolicy {
    RoutingPolicy {
        time_lock_delta: 40,
        min_htlc: 1_000,
        fee_base_msat: base,
        fee_rate_milli_msat: ppm,
        disabled: false,
        max_htlc_msat: 990_000_000,
        last_update: 0,
    }
}

const ROUTED_BASE_FEE_MSAT: u64 = 1_000;
const ROUTED_FEE_PPM: u64 = 100;

impl FakeLnd {
    pub fn new(macaroon_hex: &str) -> FakeLnd {
        let (me, peer, merchant) = (signer(0x11), signer(0x22), signer(0x33));
        let channels = vec![
            FakeChannel {
                chan_id: 0x0001_0000_0100_0000,
                chan_point: format!("{}:0", "ab".repeat(32)),
                remote_pubkey: peer.node_id().to_string(),
                capacity_sat: 1_000_000,
                local_sat: 600_000,
                local: policy(1_000, 1),
                remote: policy(1_000, 1),
            },
            FakeChannel {
                chan_id: 0x0002_0000_0200_0001,
                chan_point: format!("{}:1", "cd".repeat(32)),
                remote_pubkey: signer(0x44).node_id().to_string(),
                capacity_sat: 2_000_000,
                local_sat: 500_000,
                local: policy(1_000, 1),
                remote: policy(ROUTED_BASE_FEE_MSAT as i64, ROUTED_FEE_PPM as i64),
            },
        ];
        FakeLnd {
            macaroon_hex: macaroon_hex.to_owned(),
            me,
            peer,
            merchant,
            state: Arc::new(Mutex::new(State {
                channels,
                ..State::default()
            })),
        }
    }

    /// Serves on a free loopback port; returns the `http://` url.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (l, r) = (self.clone(), self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(LightningServer::new(l))
                .add_service(RouterServer::new(r))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        format!("http://{addr}")
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }

    /// Completes the payments held in flight by the `hang` fault.
    pub fn release(&self) {
        let mut s = self.state.lock().unwrap();
        s.faults.hang = false;
        let held = std::mem::take(&mut s.held);
        for (hash, p) in held {
            s.payments.insert(hash, p);
        }
    }

    /// How many times the hash was really sent.
    pub fn sends(&self, hash: &PaymentHash) -> u32 {
        self.state
            .lock()
            .unwrap()
            .sends
            .get(&hash.0)
            .copied()
            .unwrap_or(0)
    }

    pub fn max_sends(&self) -> u32 {
        let s = self.state.lock().unwrap();
        s.sends.values().copied().max().unwrap_or(0)
    }

    /// An invoice from a peer of ours (`direct`: no routing fee) or from a payee one hop further
    /// (a routing fee is due).
    pub fn issue(&self, direct: bool, amount_msat: u64) -> String {
        let who = if direct { &self.peer } else { &self.merchant };
        self.issue_with(who, direct, amount_msat, "fake-lnd")
    }

    fn issue_with(
        &self,
        who: &InvoiceSigner,
        direct: bool,
        amount_msat: u64,
        memo: &str,
    ) -> String {
        let preimage = Preimage::random();
        let hash = preimage.payment_hash();
        let bolt11 = who
            .create_invoice(&InvoiceRequest {
                network: Network::Regtest,
                amount: Some(Msat::new(amount_msat).unwrap()),
                payment_hash: hash,
                payment_secret: [9u8; 32],
                description: memo.to_owned(),
                created_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap(),
                expiry: Duration::from_secs(3600),
                min_final_cltv_expiry_delta: 40,
            })
            .unwrap();
        let mut s = self.state.lock().unwrap();
        let add_index = s.invoices.len() as u64 + 1;
        s.invoices.insert(
            hash.0,
            FakeInvoice {
                preimage,
                amount_msat,
                bolt11: bolt11.clone(),
                direct,
                state: InvoiceState::Open,
                add_index,
            },
        );
        bolt11
    }

    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let ok = !self.state.lock().unwrap().faults.reject_macaroon
            && req
                .metadata()
                .get("macaroon")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|m| m == self.macaroon_hex);
        if ok {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "verification failed: signature mismatch after caveat verification",
            ))
        }
    }

    /// The outcome of paying `bolt11` with at most `fee_limit_msat` of fees (settles the invoice).
    fn outcome(s: &mut State, hash: [u8; 32], base: &Payment, fee_limit_msat: i64) -> Payment {
        let mut p = base.clone();
        let Some(inv) = s.invoices.get_mut(&hash) else {
            p.status = PaymentStatus::Failed as i32;
            p.failure_reason = PaymentFailureReason::FailureReasonNoRoute as i32;
            return p;
        };
        let fee = if inv.direct {
            0
        } else {
            ROUTED_BASE_FEE_MSAT + inv.amount_msat * ROUTED_FEE_PPM / 1_000_000
        };
        if fee as i64 > fee_limit_msat || inv.state != InvoiceState::Open {
            p.status = PaymentStatus::Failed as i32;
            p.failure_reason = PaymentFailureReason::FailureReasonNoRoute as i32;
            return p;
        }
        inv.state = InvoiceState::Settled;
        p.status = PaymentStatus::Succeeded as i32;
        p.payment_preimage = inv.preimage.to_hex();
        p.fee_msat = fee as i64;
        p.fee_sat = (fee / 1000) as i64;
        p
    }
}

type PayStream = ReceiverStream<Result<Payment, Status>>;

#[tonic::async_trait]
impl Router for FakeLnd {
    type SendPaymentV2Stream = PayStream;
    type TrackPaymentV2Stream = PayStream;

    async fn send_payment_v2(
        &self,
        req: Request<SendPaymentRequest>,
    ) -> Result<Response<PayStream>, Status> {
        self.check(&req)?;
        let req = req.into_inner();
        let decoded = oa_invoice::decode(&req.payment_request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let hash = decoded.payment_hash.0;
        let (first, final_state, faults) = {
            let mut s = self.state.lock().unwrap();
            match s.payments.get(&hash).map(|p| p.status) {
                Some(st) if st == PaymentStatus::Succeeded as i32 => {
                    return Err(Status::already_exists("invoice is already paid"));
                }
                Some(st) if st == PaymentStatus::InFlight as i32 => {
                    return Err(Status::already_exists("payment is in transition"));
                }
                // Like LND, a failed payment may be tried again.
                _ => {}
            }
            *s.sends.entry(hash).or_insert(0) += 1;
            let in_flight = Payment {
                payment_hash: hex::encode(hash),
                value_msat: decoded.amount.map_or(req.amt_msat, |a| a.as_u64() as i64),
                payment_request: req.payment_request.clone(),
                status: PaymentStatus::InFlight as i32,
                payment_index: s.payments.len() as u64 + 1,
                ..Payment::default()
            };
            s.payments.insert(hash, in_flight.clone());
            let done = FakeLnd::outcome(&mut s, hash, &in_flight, req.fee_limit_msat);
            let faults = s.faults;
            if faults.drop_before_update {
                s.payments.remove(&hash);
            }
            if faults.hang {
                s.held.push((hash, done.clone()));
            }
            (in_flight, done, faults)
        };
        let (tx, rx) = mpsc::channel(4);
        let state = self.state.clone();
        tokio::spawn(async move {
            if faults.drop_before_update {
                let _ = tx.send(Err(Status::unavailable("connection reset"))).await;
                drop(tx);
                tokio::time::sleep(Duration::from_millis(150)).await;
                state.lock().unwrap().payments.insert(hash, final_state);
                return;
            }
            let _ = tx.send(Ok(first)).await;
            if faults.hang {
                // Stay in flight; the stream stays open until the client goes away.
                tx.closed().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            if faults.drop_stream {
                // The connection breaks; the payment completes at the node regardless.
                let _ = tx.send(Err(Status::unavailable("connection reset"))).await;
                drop(tx);
                tokio::time::sleep(Duration::from_millis(150)).await;
                state.lock().unwrap().payments.insert(hash, final_state);
                return;
            }
            state
                .lock()
                .unwrap()
                .payments
                .insert(hash, final_state.clone());
            let _ = tx.send(Ok(final_state)).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn track_payment_v2(
        &self,
        req: Request<TrackPaymentRequest>,
    ) -> Result<Response<PayStream>, Status> {
        self.check(&req)?;
        let hash: [u8; 32] = req
            .into_inner()
            .payment_hash
            .try_into()
            .map_err(|_| Status::invalid_argument("payment hash must be 32 bytes"))?;
        if !self.state.lock().unwrap().payments.contains_key(&hash) {
            return Err(Status::not_found("payment isn't initiated"));
        }
        let (tx, rx) = mpsc::channel(4);
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let p = state.lock().unwrap().payments.get(&hash).cloned();
                let Some(p) = p else { return };
                let terminal = p.status != PaymentStatus::InFlight as i32;
                if last.as_ref() != Some(&p) {
                    if tx.send(Ok(p.clone())).await.is_err() {
                        return;
                    }
                    last = Some(p);
                }
                if terminal {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Lightning for FakeLnd {
    async fn get_info(
        &self,
        req: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        self.check(&req)?;
        let n = self.state.lock().unwrap().channels.len() as u32;
        Ok(Response::new(GetInfoResponse {
            identity_pubkey: self.me.node_id().to_string(),
            alias: "fake-lnd".into(),
            num_active_channels: n,
            num_peers: n,
            block_height: 800,
            synced_to_chain: true,
            version: "0.18.0-beta fake".into(),
            chains: vec![Chain {
                chain: "bitcoin".into(),
                network: "regtest".into(),
            }],
            ..Default::default()
        }))
    }

    async fn channel_balance(
        &self,
        req: Request<ChannelBalanceRequest>,
    ) -> Result<Response<ChannelBalanceResponse>, Status> {
        self.check(&req)?;
        let s = self.state.lock().unwrap();
        let local: i64 = s.channels.iter().map(|c| c.local_sat).sum();
        let remote: i64 = s
            .channels
            .iter()
            .map(|c| c.capacity_sat - c.local_sat)
            .sum();
        let amount = |sat: i64| Amount {
            sat: sat as u64,
            msat: sat as u64 * 1000,
        };
        Ok(Response::new(ChannelBalanceResponse {
            balance: local,
            pending_open_balance: 0,
            local_balance: Some(amount(local)),
            remote_balance: Some(amount(remote)),
        }))
    }

    async fn list_channels(
        &self,
        req: Request<ListChannelsRequest>,
    ) -> Result<Response<ListChannelsResponse>, Status> {
        self.check(&req)?;
        let s = self.state.lock().unwrap();
        let channels = s
            .channels
            .iter()
            .map(|c| lnrpc::Channel {
                active: true,
                remote_pubkey: c.remote_pubkey.clone(),
                channel_point: c.chan_point.clone(),
                chan_id: c.chan_id,
                capacity: c.capacity_sat,
                local_balance: c.local_sat,
                remote_balance: c.capacity_sat - c.local_sat,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(ListChannelsResponse { channels }))
    }

    async fn add_invoice(
        &self,
        req: Request<Invoice>,
    ) -> Result<Response<AddInvoiceResponse>, Status> {
        self.check(&req)?;
        let req = req.into_inner();
        let amount = if req.value_msat > 0 {
            req.value_msat
        } else {
            req.value * 1000
        };
        let bolt11 = self.issue_with(&self.me, true, amount as u64, &req.memo);
        let d = oa_invoice::decode(&bolt11).map_err(|e| Status::internal(e.to_string()))?;
        let add_index = self.state.lock().unwrap().invoices.len() as u64;
        Ok(Response::new(AddInvoiceResponse {
            r_hash: d.payment_hash.0.to_vec(),
            payment_request: bolt11,
            add_index,
            payment_addr: vec![9u8; 32],
        }))
    }

    async fn lookup_invoice(
        &self,
        req: Request<lnrpc::PaymentHash>,
    ) -> Result<Response<Invoice>, Status> {
        self.check(&req)?;
        let hash: [u8; 32] = req
            .into_inner()
            .r_hash
            .try_into()
            .map_err(|_| Status::invalid_argument("r_hash must be 32 bytes"))?;
        let s = self.state.lock().unwrap();
        let inv = s
            .invoices
            .get(&hash)
            .ok_or_else(|| Status::not_found("unable to locate invoice"))?;
        let settled = inv.state == InvoiceState::Settled;
        Ok(Response::new(Invoice {
            r_hash: hash.to_vec(),
            r_preimage: if settled {
                inv.preimage.0.to_vec()
            } else {
                Vec::new()
            },
            value_msat: inv.amount_msat as i64,
            value: (inv.amount_msat / 1000) as i64,
            payment_request: inv.bolt11.clone(),
            add_index: inv.add_index,
            state: inv.state as i32,
            amt_paid_msat: if settled { inv.amount_msat as i64 } else { 0 },
            ..Default::default()
        }))
    }

    async fn get_chan_info(
        &self,
        req: Request<ChanInfoRequest>,
    ) -> Result<Response<ChannelEdge>, Status> {
        self.check(&req)?;
        let id = req.into_inner().chan_id;
        let me = self.me.node_id().to_string();
        let s = self.state.lock().unwrap();
        let c = s
            .channels
            .iter()
            .find(|c| c.chan_id == id)
            .ok_or_else(|| Status::not_found("edge not found"))?;
        // LND orders the two nodes of an edge by public key.
        let (n1, p1, n2, p2) = if me < c.remote_pubkey {
            (me, c.local, c.remote_pubkey.clone(), c.remote)
        } else {
            (c.remote_pubkey.clone(), c.remote, me, c.local)
        };
        Ok(Response::new(ChannelEdge {
            channel_id: c.chan_id,
            chan_point: c.chan_point.clone(),
            node1_pub: n1,
            node2_pub: n2,
            capacity: c.capacity_sat,
            node1_policy: Some(p1),
            node2_policy: Some(p2),
        }))
    }

    async fn update_channel_policy(
        &self,
        req: Request<PolicyUpdateRequest>,
    ) -> Result<Response<PolicyUpdateResponse>, Status> {
        self.check(&req)?;
        let req = req.into_inner();
        if req.time_lock_delta < 18 {
            return Err(Status::invalid_argument("time lock delta too small"));
        }
        let target = match req.scope {
            Some(Scope::Global(true)) => None,
            Some(Scope::ChanPoint(cp)) => {
                let txid = match cp.funding_txid {
                    Some(FundingTxid::FundingTxidStr(t)) => t,
                    _ => return Err(Status::invalid_argument("funding_txid_str expected")),
                };
                Some(format!("{txid}:{}", cp.output_index))
            }
            _ => return Err(Status::invalid_argument("no scope")),
        };
        let mut s = self.state.lock().unwrap();
        let mut failed = Vec::new();
        let mut hit = false;
        for c in &mut s.channels {
            if target.as_ref().is_some_and(|t| *t != c.chan_point) {
                continue;
            }
            hit = true;
            c.local.fee_base_msat = req.base_fee_msat;
            c.local.fee_rate_milli_msat = i64::from(req.fee_rate_ppm);
            c.local.time_lock_delta = req.time_lock_delta;
            c.local.max_htlc_msat = req.max_htlc_msat;
            if req.min_htlc_msat_specified {
                c.local.min_htlc = req.min_htlc_msat as i64;
            }
        }
        if !hit && target.is_some() {
            failed.push(lnrpc::FailedUpdate {
                outpoint: None,
                reason: lnrpc::UpdateFailure::NotFound as i32,
                update_error: "not found".into(),
            });
        }
        Ok(Response::new(PolicyUpdateResponse {
            failed_updates: failed,
        }))
    }

    async fn forwarding_history(
        &self,
        req: Request<ForwardingHistoryRequest>,
    ) -> Result<Response<ForwardingHistoryResponse>, Status> {
        self.check(&req)?;
        let req = req.into_inner();
        let all: Vec<lnrpc::ForwardingEvent> = (0..3u64)
            .map(|i| lnrpc::ForwardingEvent {
                chan_id_in: 0x0001_0000_0100_0000,
                chan_id_out: 0x0002_0000_0200_0001,
                amt_in_msat: 101_000 + i,
                amt_out_msat: 100_000 + i,
                fee_msat: 1_000,
                amt_in: 101,
                amt_out: 100,
                fee: 1,
                timestamp: 1_700_000_000 + i,
                timestamp_ns: (1_700_000_000 + i) * 1_000_000_000,
            })
            .collect();
        let events: Vec<_> = all
            .into_iter()
            .skip(req.index_offset as usize)
            .take(req.num_max_events as usize)
            .collect();
        Ok(Response::new(ForwardingHistoryResponse {
            last_offset_index: req.index_offset + events.len() as u32,
            forwarding_events: events,
        }))
    }
}
