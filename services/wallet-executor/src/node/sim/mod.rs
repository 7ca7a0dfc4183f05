//! A deterministic simulated Lightning network, embedded in the executor.
//!
//! Nodes have secp256k1 keys derived from a seed, so the same seed gives the same network and the
//! same invoices' payee keys. Channels have a capacity, a balance on each side and a forwarding
//! policy per side (base fee, ppm, inbound fees, min/max HTLC, CLTV delta). A payment takes the
//! cheapest route whose every hop has the liquidity, accepts the HTLC's size, keeps the total
//! time lock under [`MAX_ROUTE_CLTV`] and whose fee fits the limit ([`routing`]); it moves the
//! balances hop by hop, records a forwarding event at each routing node, and settles the payee's
//! invoice, revealing its preimage. Invoices are real BOLT11, signed with the payee node's key,
//! and are open, settled, expired or cancelled; our node's settlements are numbered and can be
//! followed ([`invoices`]).
//!
//! Our node (alias [`OUR_NODE`]) also has an on-chain wallet on a simulated chain ([`chain`]):
//! regtest P2WPKH addresses derived from the seed, deposits ([`SimNetwork::fund_wallet`]),
//! sends, blocks mined on demand ([`SimNetwork::mine_blocks`]), and channel opens and closes
//! that spend from and pay back to it ([`channels`]). A rebalance pays an invoice of ours to
//! ourselves over a circular route.
//!
//! Faults can be injected for tests: a node offline, a payment that hangs in flight, a crash
//! between send and result (the node completes the payment but the executor never hears of it
//! until it reconnects), liquidity shifted away from a channel, an on-chain send interrupted
//! before or after it is made, settlement subscriptions dropped.
//!
//! The network lives in the executor's process. So that a crash test can kill the process and
//! still count every send, the sim can keep a journal ([`SimNetwork::open_journaled`], format in
//! [`journal`]): every change is appended as one JSON line (one `write` call, before the call
//! returns) and replayed in order at start-up. Replay is deterministic, so it rebuilds the same
//! balances, invoice states, payment outcomes, chain and wallet. A line torn by a kill is
//! dropped: its change never returned to the executor. Injected faults are not journaled.

mod chain;
mod channels;
mod invoices;
mod journal;
mod routing;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, Write},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bitcoin::{
    OutPoint,
    secp256k1::{PublicKey, Secp256k1, SecretKey},
};
use futures::stream::BoxStream;
use oa_invoice::{Network, PaymentHash, Preimage};
use oa_money::Msat;
use oa_service::Clock;
use sha2::{Digest, Sha256};

use self::journal::Entry;
pub use self::{
    chain::{
        DEFAULT_SAT_PER_VBYTE, DUST_LIMIT_SAT, FORCE_CLOSE_CSV, FUNDING_CONFIRMATIONS,
        START_HEIGHT, STARTING_BALANCE_SAT, vsize,
    },
    channels::{MAX_CHANNEL_SAT, MIN_CHANNEL_SAT, PendingChannel},
    routing::{MAX_HOPS, forwarding_fee},
};
pub use super::MAX_ROUTE_CLTV;
use super::{
    ChannelInfo, ChannelPoint, ChannelPolicy, ClosedChannel, ClosingChannel, FailureCode,
    FeeReport, ForwardingEvent, ForwardingPage, InvoiceRequest, LightningNode, MIN_CLTV_DELTA,
    NodeError, NodeInfo, NodeInvoice, OpenChannelRequest, PayState, RebalanceOutcome,
    RebalanceRequest, RouteFeeEstimate, SendCoinsRequest, SendRequest, WalletBalance,
};

/// The alias of the node the executor pays from.
pub const OUR_NODE: &str = "wallet";
/// The final CLTV delta every sim invoice asks for.
pub const FINAL_CLTV_DELTA: u32 = MIN_CLTV_DELTA;
/// Largest invoice expiry the sim accepts (a week), as BOLT11 wallets usually cap it.
pub const MAX_INVOICE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Expiry of the invoice a rebalance pays to ourselves.
const REBALANCE_INVOICE_EXPIRY: Duration = Duration::from_secs(3600);
/// Most blocks one `mine_blocks` call mines: a bound on the work of one call (and on a typo).
pub const MAX_MINE_BLOCKS: u32 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvoiceState {
    Open,
    Settled,
    Expired,
    Cancelled,
}

struct SimInvoice {
    /// The invoice as issued, so a send of exactly this string skips decoding it again.
    bolt11: String,
    preimage: Preimage,
    amount: Option<Msat>,
    expires_at_ms: u64,
    /// Open, Settled or Cancelled; Expired is derived from the clock when read.
    state: InvoiceState,
    add_index: u64,
    /// 0 until settled.
    settle_index: u64,
    created_at_ms: u64,
    settled_at_ms: u64,
    amount_paid: Msat,
}

struct SimNode {
    alias: String,
    secret: SecretKey,
    pubkey: PublicKey,
    online: bool,
    invoices: HashMap<PaymentHash, SimInvoice>,
    forwards: Vec<ForwardingEvent>,
    /// Invoices added so far (the last `add_index`).
    add_index: u64,
    /// Invoices settled so far (the last `settle_index`).
    settle_index: u64,
    /// Settled invoices in settle order: `settled[i]` has settle index `i + 1`.
    settled: Vec<PaymentHash>,
}

struct Channel {
    chan_id: u64,
    a: usize,
    b: usize,
    capacity: Msat,
    balance_a: Msat,
    balance_b: Msat,
    /// The policy `a` applies forwarding out over this channel (and, for inbound fees, to HTLCs
    /// arriving to it over this channel), and `b`'s.
    policy_a: ChannelPolicy,
    policy_b: ChannelPolicy,
    /// The channel's funding output, which its closing transaction spends.
    funding: OutPoint,
}

impl Channel {
    /// The sender's balance and policy for a hop in direction `forward` (a -> b).
    fn out(&self, forward: bool) -> (Msat, &ChannelPolicy) {
        if forward {
            (self.balance_a, &self.policy_a)
        } else {
            (self.balance_b, &self.policy_b)
        }
    }
}

/// Where an injected interruption of the next on-chain send hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// The node answers `Unavailable` without sending (the executor died before the node got it).
    BeforeSend,
    /// The node sends, then answers `Unavailable` (the executor died before hearing the txid).
    AfterSend,
}

struct State {
    nodes: Vec<SimNode>,
    channels: Vec<Channel>,
    payments: HashMap<PaymentHash, PayState>,
    /// Every state each payment went through at the node, in order.
    history: HashMap<PaymentHash, Vec<PayState>>,
    /// How many times each payment hash was actually sent (must never exceed 1).
    sends: HashMap<PaymentHash, u32>,
    hang: HashSet<PaymentHash>,
    /// Requests held in flight by [`SimNetwork::hang`], completed by `track` once released.
    held: HashMap<PaymentHash, (usize, SendRequest)>,
    /// Payments whose next send completes but whose result the executor never hears.
    crash_after_send: HashSet<PaymentHash>,
    /// Payments sent while "crashed": `pay` and `track` answer `Unavailable` until reconnect.
    crashed: HashSet<PaymentHash>,
    invoice_counter: u64,
    /// Which node issued each invoice, to find the payee without decoding (and re-verifying
    /// the signature of) an invoice the sim itself issued.
    payee_of: HashMap<PaymentHash, usize>,
    chain: chain::Chain,
    pending_opens: Vec<channels::PendingOpen>,
    /// Our channels being closed or closed, in the order they were closed.
    closed: Vec<channels::Closed>,
    onchain_interrupt: Option<Interrupt>,
    journal: Option<std::fs::File>,
}

/// The simulated network. Cloning shares it.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<State>>,
    signals: invoices::Signals,
    network: Network,
    clock: Arc<dyn Clock>,
    seed: u64,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNetwork")
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown node {0}")]
    UnknownNode(String),
    #[error("no channel between {0} and {1}")]
    NoChannel(String, String),
    #[error("invoice expiry must be between 1 s and {} s", MAX_INVOICE_EXPIRY.as_secs())]
    BadExpiry,
    #[error("invalid amount: {0}")]
    BadAmount(String),
    #[error("blocks must be between 1 and {MAX_MINE_BLOCKS}")]
    BadBlocks,
    #[error(transparent)]
    Invoice(#[from] oa_invoice::InvoiceError),
    #[error("sim journal: {0}")]
    Journal(String),
}

/// A created invoice.
#[derive(Clone, Debug)]
pub struct CreatedInvoice {
    pub bolt11: String,
    pub payment_hash: PaymentHash,
    pub node_pubkey: String,
}

fn sat(v: u64) -> Msat {
    Msat::from_sat(v).unwrap_or(Msat::MAX)
}

/// The policy LND applies by default (base 1 sat, 1 ppm, CLTV delta 80, no inbound fee), with a
/// minimum HTLC of 1 msat so tests can send tiny amounts, and no maximum below the capacity.
pub fn default_policy(capacity: Msat) -> ChannelPolicy {
    ChannelPolicy {
        base_fee: Msat::new(1_000).unwrap_or(Msat::ZERO),
        fee_ppm: 1,
        min_htlc: Msat::new(1).unwrap_or(Msat::ZERO),
        max_htlc: capacity,
        time_lock_delta: 80,
        inbound_base_fee_msat: 0,
        inbound_fee_ppm: 0,
    }
}

impl SimNetwork {
    /// The default topology (channel ids are short-channel-id shaped, block 100 + n):
    ///
    /// ```text
    /// wallet --1 BTC--> router --1 BTC--> merchant      router charges 1 sat + 100 ppm
    ///   |  \                  \--30k/70k sat--> dave    router: min 10 sat, max 20k sat HTLC
    ///   |   \--0.25/0.25 BTC--> hub --0.5 BTC--> merchant   hub charges 2 sat + 500 ppm, delta 144
    ///   \--1 BTC--> carol                                   (direct peer)
    /// ```
    ///
    /// Payments to `merchant` pay routing fees (cheapest through `router`, else through `hub`);
    /// `dave` sits behind a small channel with HTLC limits; `hub` can route through `wallet`, so
    /// our node records forwarding events, and `hub` can pay our invoices. The chain starts at
    /// height [`START_HEIGHT`] and our wallet holds [`STARTING_BALANCE_SAT`], confirmed.
    pub fn default_topology(seed: u64, network: Network, clock: Arc<dyn Clock>) -> Self {
        let sim = SimNetwork {
            state: Arc::new(Mutex::new(State {
                nodes: Vec::new(),
                channels: Vec::new(),
                payments: HashMap::new(),
                history: HashMap::new(),
                sends: HashMap::new(),
                hang: HashSet::new(),
                held: HashMap::new(),
                crash_after_send: HashSet::new(),
                crashed: HashSet::new(),
                invoice_counter: 0,
                payee_of: HashMap::new(),
                chain: chain::Chain::new(seed, network.to_bitcoin()),
                pending_opens: Vec::new(),
                closed: Vec::new(),
                onchain_interrupt: None,
                journal: None,
            })),
            signals: invoices::signals(),
            network,
            clock,
            seed,
        };
        {
            let mut s = sim.lock();
            for alias in [OUR_NODE, "router", "merchant", "carol", "hub", "dave"] {
                let secret = derive_key(seed, alias);
                let pubkey = PublicKey::from_secret_key(&Secp256k1::signing_only(), &secret);
                s.nodes.push(SimNode {
                    alias: alias.to_owned(),
                    secret,
                    pubkey,
                    online: true,
                    invoices: HashMap::new(),
                    forwards: Vec::new(),
                    add_index: 0,
                    settle_index: 0,
                    settled: Vec::new(),
                });
            }
            let btc = sat(100_000_000);
            let routing = |base_sat: u64, ppm: u32, cap: Msat, delta: u32| ChannelPolicy {
                base_fee: sat(base_sat),
                fee_ppm: ppm,
                time_lock_delta: delta,
                ..default_policy(cap)
            };
            // (a, b, capacity, a's balance, a's policy)
            let specs: [(usize, usize, Msat, Msat, ChannelPolicy); 6] = [
                (0, 1, btc, btc, default_policy(btc)),
                (1, 2, btc, btc, routing(1, 100, btc, 40)),
                (0, 3, btc, btc, default_policy(btc)),
                (
                    0,
                    4,
                    sat(50_000_000),
                    sat(25_000_000),
                    default_policy(sat(50_000_000)),
                ),
                (
                    4,
                    2,
                    sat(50_000_000),
                    sat(50_000_000),
                    routing(2, 500, sat(50_000_000), 144),
                ),
                (
                    1,
                    5,
                    sat(100_000),
                    sat(30_000),
                    ChannelPolicy {
                        min_htlc: sat(10),
                        max_htlc: sat(20_000),
                        ..routing(1, 100, sat(100_000), 40)
                    },
                ),
            ];
            for (n, (a, b, capacity, balance_a, policy_a)) in specs.into_iter().enumerate() {
                let chan_id = ((100 + n as u64) << 40) | (1 << 16);
                s.channels.push(Channel {
                    chan_id,
                    a,
                    b,
                    capacity,
                    balance_a,
                    balance_b: capacity.saturating_sub(balance_a),
                    policy_a,
                    policy_b: default_policy(capacity),
                    funding: chain::genesis_funding(seed, chan_id),
                });
            }
            s.chain.deposit(STARTING_BALANCE_SAT);
        }
        sim
    }

    /// The default topology with a journal at `path`: replays what the file holds, then appends
    /// every later change to it (see the module docs).
    pub fn open_journaled(
        seed: u64,
        network: Network,
        clock: Arc<dyn Clock>,
        path: &Path,
    ) -> Result<Self, SimError> {
        let sim = Self::default_topology(seed, network, clock);
        let io = |e: std::io::Error| SimError::Journal(format!("{}: {e}", path.display()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut complete_len = 0u64;
        {
            let mut reader = std::io::BufReader::new(&mut file);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line).map_err(io)?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                let entry: Entry = serde_json::from_str(line.trim_end())
                    .map_err(|e| SimError::Journal(format!("line at byte {complete_len}: {e}")))?;
                sim.replay(entry)?;
                complete_len += n as u64;
            }
        }
        // Drop a line torn by a kill, so the next append starts on a line of its own.
        file.set_len(complete_len).map_err(io)?;
        file.sync_all().map_err(io)?;
        sim.lock().journal = Some(file);
        Ok(sim)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this module; the state is still
        // consistent because every mutation completes before the guard drops.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends one journal line with a single `write`, so a kill leaves either the whole line
    /// or a torn tail that replay drops.
    fn journal(s: &mut State, entry: &Entry) -> Result<(), NodeError> {
        let Some(file) = s.journal.as_mut() else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(entry)
            .map_err(|e| NodeError::Unavailable(format!("sim journal: {e}")))?;
        line.push(b'\n');
        file.write_all(&line)
            .map_err(|e| NodeError::Unavailable(format!("sim journal: {e}")))
    }

    /// Creates a real BOLT11 invoice at node `alias`.
    pub fn create_invoice(
        &self,
        alias: &str,
        amount: Option<Msat>,
        description: &str,
        expiry: Duration,
    ) -> Result<CreatedInvoice, SimError> {
        if expiry.is_zero() || expiry > MAX_INVOICE_EXPIRY {
            return Err(SimError::BadExpiry);
        }
        let now_ms = self.clock.now_ms();
        let mut s = self.lock();
        let created = self.create_invoice_at(&mut s, alias, amount, description, expiry, now_ms)?;
        Self::journal(
            &mut s,
            &Entry::Invoice {
                alias: alias.to_owned(),
                amount_msat: amount.map(Msat::as_u64),
                description: description.to_owned(),
                expiry_ms: u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX),
                now_ms,
            },
        )
        .map_err(|e| SimError::Journal(e.to_string()))?;
        Ok(created)
    }

    /// Cancels an open invoice at its payee; a later payment to it fails. Returns false if the
    /// invoice is unknown or no longer open.
    pub fn cancel_invoice(&self, payment_hash: &PaymentHash) -> bool {
        let mut s = self.lock();
        let now_ms = self.clock.now_ms();
        for n in &mut s.nodes {
            if let Some(inv) = n.invoices.get_mut(payment_hash) {
                if effective_state(inv, now_ms) == InvoiceState::Open {
                    inv.state = InvoiceState::Cancelled;
                    return true;
                }
                return false;
            }
        }
        false
    }

    /// Makes a payment to `payment_hash` stay in flight until [`SimNetwork::release`].
    pub fn hang(&self, payment_hash: PaymentHash) {
        self.lock().hang.insert(payment_hash);
    }

    /// Lets a hung payment complete on its next `track`.
    pub fn release(&self, payment_hash: &PaymentHash) {
        self.lock().hang.remove(payment_hash);
    }

    /// The next send of `payment_hash` completes at the node, but the executor never hears the
    /// result: `pay` and `track` answer `Unavailable` for it until [`SimNetwork::reconnect`], as
    /// if the executor died between the send and recording the result.
    pub fn crash_after_send(&self, payment_hash: PaymentHash) {
        self.lock().crash_after_send.insert(payment_hash);
    }

    /// Ends every injected crash: the restarted executor can see what happened.
    pub fn reconnect(&self) {
        self.lock().crashed.clear();
    }

    /// Interrupts the next on-chain send that is not a replay of an earlier label (see
    /// [`Interrupt`]).
    pub fn interrupt_next_send_coins(&self, at: Interrupt) {
        self.lock().onchain_interrupt = Some(at);
    }

    /// Takes a node offline (or back): routes through it are unusable, payments to it fail.
    pub fn set_online(&self, alias: &str, online: bool) -> Result<(), SimError> {
        let mut s = self.lock();
        let i = index_of(&s, alias)?;
        s.nodes[i].online = online;
        Ok(())
    }

    /// Moves `amount` (at most what `from` holds) from `from`'s side of its channel with `to`
    /// to `to`'s side, as a rebalance elsewhere would. Returns what moved.
    pub fn shift_liquidity(&self, from: &str, to: &str, amount: Msat) -> Result<Msat, SimError> {
        let mut s = self.lock();
        let (f, t) = (index_of(&s, from)?, index_of(&s, to)?);
        let c = s
            .channels
            .iter_mut()
            .find(|c| (c.a, c.b) == (f, t) || (c.a, c.b) == (t, f))
            .ok_or_else(|| SimError::NoChannel(from.to_owned(), to.to_owned()))?;
        let (src, dst) = if c.a == f {
            (&mut c.balance_a, &mut c.balance_b)
        } else {
            (&mut c.balance_b, &mut c.balance_a)
        };
        let moved = amount.min(*src);
        *src = src.saturating_sub(moved);
        *dst = dst.checked_add(moved).unwrap_or(*dst);
        Ok(moved)
    }

    /// Sets node `alias`'s policy on its channel with `peer` (a policy elsewhere in the network,
    /// which our `update_channel_policy` cannot change). Not journaled, like other test levers.
    pub fn set_peer_policy(
        &self,
        alias: &str,
        peer: &str,
        policy: &ChannelPolicy,
    ) -> Result<(), SimError> {
        let mut s = self.lock();
        let (f, t) = (index_of(&s, alias)?, index_of(&s, peer)?);
        let c = s
            .channels
            .iter_mut()
            .find(|c| (c.a, c.b) == (f, t) || (c.a, c.b) == (t, f))
            .ok_or_else(|| SimError::NoChannel(alias.to_owned(), peer.to_owned()))?;
        if c.a == f {
            c.policy_a = *policy;
        } else {
            c.policy_b = *policy;
        }
        Ok(())
    }

    /// Pays an invoice from another node of the network (not through the executor), e.g. so
    /// that payments route through our node and leave forwarding events there, or to pay an
    /// invoice our node issued.
    pub fn pay_from(
        &self,
        alias: &str,
        bolt11: &str,
        fee_limit: Msat,
    ) -> Result<PayState, SimError> {
        let decoded = oa_invoice::decode(bolt11)?;
        let req = SendRequest {
            bolt11: bolt11.to_owned(),
            payment_hash: decoded.payment_hash,
            amount: decoded.amount.unwrap_or(Msat::ZERO),
            fee_limit,
            timeout: Duration::ZERO,
        };
        let now_ms = self.clock.now_ms();
        let mut s = self.lock();
        let src = index_of(&s, alias)?;
        if let Some(existing) = s.payments.get(&req.payment_hash) {
            return Ok(existing.clone());
        }
        Self::journal(&mut s, &journal::send_entry(alias, &req, now_ms))
            .map_err(|e| SimError::Journal(e.to_string()))?;
        Ok(self.send_at(&mut s, src, &req, now_ms))
    }

    /// How many times a payment hash was actually sent (exactly-once checks).
    pub fn send_count(&self, payment_hash: &PaymentHash) -> u32 {
        self.lock().sends.get(payment_hash).copied().unwrap_or(0)
    }

    /// Total sends of every hash, and how many hashes were sent more than once.
    pub fn send_stats(&self) -> (u64, usize) {
        let s = self.lock();
        (
            s.sends.values().map(|v| u64::from(*v)).sum(),
            s.sends.values().filter(|v| **v > 1).count(),
        )
    }

    /// Every state the payment went through at the node, in order.
    pub fn history(&self, payment_hash: &PaymentHash) -> Vec<PayState> {
        self.lock()
            .history
            .get(payment_hash)
            .cloned()
            .unwrap_or_default()
    }

    /// The state of an invoice at its payee.
    pub fn invoice_state(&self, payment_hash: &PaymentHash) -> Option<InvoiceState> {
        let now_ms = self.clock.now_ms();
        let s = self.lock();
        s.nodes.iter().find_map(|n| {
            n.invoices
                .get(payment_hash)
                .map(|i| effective_state(i, now_ms))
        })
    }

    /// Forwarding events recorded at node `alias`.
    pub fn forwards_at(&self, alias: &str) -> Result<Vec<ForwardingEvent>, SimError> {
        let s = self.lock();
        let i = index_of(&s, alias)?;
        Ok(s.nodes[i].forwards.clone())
    }

    /// The public key (hex) of node `alias`.
    pub fn pubkey_of(&self, alias: &str) -> Result<String, SimError> {
        let s = self.lock();
        let i = index_of(&s, alias)?;
        Ok(s.nodes[i].pubkey.to_string())
    }

    /// The chain's tip height.
    pub fn height(&self) -> u32 {
        self.lock().chain.height
    }

    /// Mines `blocks` blocks: mempool transactions confirm in the first, channel opens and
    /// closes progress with each. Returns the new tip height.
    pub fn mine_blocks(&self, blocks: u32) -> Result<u32, SimError> {
        if blocks == 0 || blocks > MAX_MINE_BLOCKS {
            return Err(SimError::BadBlocks);
        }
        let mut s = self.lock();
        Self::mine_at(&mut s, blocks);
        Self::journal(&mut s, &Entry::Mine { blocks })
            .map_err(|e| SimError::Journal(e.to_string()))?;
        Ok(s.chain.height)
    }

    fn mine_at(s: &mut State, blocks: u32) {
        for _ in 0..blocks {
            s.chain.mine();
            channels::on_block(s);
        }
    }

    /// A deposit of `amount` (whole satoshis, at least the dust limit) into our wallet from
    /// outside, confirmed in the tip block. Returns its txid.
    pub fn fund_wallet(&self, amount: Msat) -> Result<String, SimError> {
        let mut s = self.lock();
        let txid = Self::fund_at(&mut s, amount)?;
        Self::journal(
            &mut s,
            &Entry::Fund {
                amount_msat: amount.as_u64(),
            },
        )
        .map_err(|e| SimError::Journal(e.to_string()))?;
        Ok(txid)
    }

    fn fund_at(s: &mut State, amount: Msat) -> Result<String, SimError> {
        if !amount.as_u64().is_multiple_of(1_000) {
            return Err(SimError::BadAmount(
                "on-chain amounts are whole satoshis (a multiple of 1000 msat)".into(),
            ));
        }
        if amount.as_u64() / 1_000 < DUST_LIMIT_SAT {
            return Err(SimError::BadAmount(format!(
                "a deposit must be at least {DUST_LIMIT_SAT} sat"
            )));
        }
        Ok(s.chain.deposit(amount.as_u64() / 1_000).to_string())
    }

    /// Our channels still waiting for funding confirmations.
    pub fn pending_channels(&self) -> Vec<PendingChannel> {
        channels::pending(&self.lock())
    }

    /// How many transactions were built under an on-chain send label (exactly-once checks).
    pub fn send_coins_count(&self, label: &str) -> u32 {
        self.lock().chain.label_sends(label)
    }

    fn our_index(s: &State) -> usize {
        s.nodes
            .iter()
            .position(|n| n.alias == OUR_NODE)
            .unwrap_or(0)
    }

    /// Records a send of `req` from node `src` and runs it (unless it is told to hang).
    fn send_at(&self, s: &mut State, src: usize, req: &SendRequest, now_ms: u64) -> PayState {
        *s.sends.entry(req.payment_hash).or_insert(0) += 1;
        s.payments.insert(req.payment_hash, PayState::InFlight);
        s.history
            .entry(req.payment_hash)
            .or_default()
            .push(PayState::InFlight);
        if s.hang.contains(&req.payment_hash) {
            s.held.insert(req.payment_hash, (src, req.clone()));
            return PayState::InFlight;
        }
        self.complete(s, src, req, now_ms)
    }

    fn complete(&self, s: &mut State, src: usize, req: &SendRequest, now_ms: u64) -> PayState {
        let outcome = routing::execute(s, src, req, now_ms);
        s.payments.insert(req.payment_hash, outcome.clone());
        s.history
            .entry(req.payment_hash)
            .or_default()
            .push(outcome.clone());
        self.publish(s);
        outcome
    }

    fn send_coins_at(s: &mut State, req: &SendCoinsRequest) -> Result<String, NodeError> {
        if !req.amount.as_u64().is_multiple_of(1_000) {
            return Err(NodeError::Refused(
                "on-chain amounts are whole satoshis (a multiple of 1000 msat)".into(),
            ));
        }
        let address = s.chain.parse_address(&req.address)?;
        let built = s.chain.spend(
            vec![bitcoin::TxOut {
                value: bitcoin::Amount::from_sat(req.amount.as_u64() / 1_000),
                script_pubkey: address.script_pubkey(),
            }],
            req.sat_per_vbyte,
            Some(&req.label),
        )?;
        Ok(built.txid.to_string())
    }

    /// A rebalance: an invoice of ours, paid by ourselves out over `out_chan_id` and back in over
    /// `in_chan_id` (see [`routing::circular_routes`]).
    fn rebalance_at(
        &self,
        s: &mut State,
        req: &RebalanceRequest,
        now_ms: u64,
    ) -> Result<RebalanceOutcome, NodeError> {
        let me = Self::our_index(s);
        if req.out_chan_id == req.in_chan_id {
            return Err(NodeError::Refused(
                "a rebalance needs two different channels".into(),
            ));
        }
        if req.amount.is_zero() {
            return Err(NodeError::Refused("the amount must be positive".into()));
        }
        let ours = |id: u64| {
            s.channels
                .iter()
                .position(|c| c.chan_id == id && (c.a == me || c.b == me))
                .ok_or(NodeError::UnknownChannel(id))
        };
        let (out, inbound) = (ours(req.out_chan_id)?, ours(req.in_chan_id)?);
        let created = self
            .create_invoice_at(
                s,
                OUR_NODE,
                Some(req.amount),
                "rebalance",
                REBALANCE_INVOICE_EXPIRY,
                now_ms,
            )
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        let hash = created.payment_hash;
        *s.sends.entry(hash).or_insert(0) += 1;
        s.history.entry(hash).or_default().push(PayState::InFlight);
        let routes = routing::circular_routes(s, me, out, inbound);
        let state =
            routing::execute_circular(s, me, routes, &hash, req.amount, req.fee_limit, now_ms);
        s.payments.insert(hash, state.clone());
        s.history.entry(hash).or_default().push(state.clone());
        Ok(RebalanceOutcome {
            payment_hash: hash,
            state,
        })
    }
}

fn index_of(s: &State, alias: &str) -> Result<usize, SimError> {
    s.nodes
        .iter()
        .position(|n| n.alias == alias)
        .ok_or_else(|| SimError::UnknownNode(alias.to_owned()))
}

fn effective_state(inv: &SimInvoice, now_ms: u64) -> InvoiceState {
    if inv.state == InvoiceState::Open && inv.expires_at_ms <= now_ms {
        InvoiceState::Expired
    } else {
        inv.state
    }
}

fn set_policy(
    s: &mut State,
    chan_id: Option<u64>,
    policy: &ChannelPolicy,
) -> Result<u32, NodeError> {
    let me = SimNetwork::our_index(s);
    let mut n = 0;
    for c in &mut s.channels {
        if chan_id.is_some_and(|id| id != c.chan_id) {
            continue;
        }
        if c.a == me {
            c.policy_a = *policy;
        } else if c.b == me {
            c.policy_b = *policy;
        } else {
            continue;
        }
        n += 1;
    }
    match (chan_id, n) {
        (Some(id), 0) => Err(NodeError::UnknownChannel(id)),
        _ => Ok(n),
    }
}

fn failed(code: FailureCode, reason: &str) -> PayState {
    PayState::Failed {
        code,
        reason: reason.to_owned(),
    }
}

fn derive_bytes(seed: u64, label: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"oa-sim/");
    h.update(seed.to_be_bytes());
    h.update(label.as_bytes());
    h.finalize().into()
}

fn derive_key(seed: u64, alias: &str) -> SecretKey {
    let mut counter = 0u32;
    loop {
        let bytes = derive_bytes(seed, &format!("node/{alias}/{counter}"));
        if let Ok(k) = SecretKey::from_slice(&bytes) {
            return k;
        }
        counter += 1;
    }
}

#[async_trait]
impl LightningNode for SimNetwork {
    fn backend(&self) -> &'static str {
        "sim"
    }

    async fn info(&self) -> Result<NodeInfo, NodeError> {
        let s = self.lock();
        let me = Self::our_index(&s);
        let (mut local, mut remote, mut count) = (Msat::ZERO, Msat::ZERO, 0u32);
        for c in s.channels.iter().filter(|c| c.a == me || c.b == me) {
            let (l, r) = if c.a == me {
                (c.balance_a, c.balance_b)
            } else {
                (c.balance_b, c.balance_a)
            };
            local = local.checked_add(l).unwrap_or(Msat::MAX);
            remote = remote.checked_add(r).unwrap_or(Msat::MAX);
            count += 1;
        }
        Ok(NodeInfo {
            pubkey: s.nodes[me].pubkey.to_string(),
            network: self.network.to_string(),
            backend: "sim",
            local_balance: local,
            remote_balance: remote,
            channel_count: count,
        })
    }

    async fn pay(&self, req: &SendRequest) -> Result<PayState, NodeError> {
        let now_ms = self.clock.now_ms();
        let mut s = self.lock();
        if s.crashed.contains(&req.payment_hash) {
            return Err(NodeError::Unavailable("connection lost".into()));
        }
        if let Some(existing) = s.payments.get(&req.payment_hash) {
            return Ok(existing.clone());
        }
        // Journal first: the send must be on disk before the executor can act on its result.
        Self::journal(&mut s, &journal::send_entry(OUR_NODE, req, now_ms))?;
        let me = Self::our_index(&s);
        let outcome = self.send_at(&mut s, me, req, now_ms);
        if s.crash_after_send.remove(&req.payment_hash) {
            s.crashed.insert(req.payment_hash);
            return Err(NodeError::Unavailable(
                "connection lost after the send".into(),
            ));
        }
        Ok(outcome)
    }

    async fn track(&self, payment_hash: &PaymentHash) -> Result<PayState, NodeError> {
        let now_ms = self.clock.now_ms();
        let mut s = self.lock();
        if s.crashed.contains(payment_hash) {
            return Err(NodeError::Unavailable("connection lost".into()));
        }
        match s.payments.get(payment_hash).cloned() {
            // The sim's sends are atomic under its lock: an unknown hash was never sent and
            // never will be by an earlier call.
            None => Err(NodeError::NotFound),
            Some(PayState::InFlight) if !s.hang.contains(payment_hash) => {
                let Some((src, req)) = s.held.remove(payment_hash) else {
                    return Ok(PayState::InFlight);
                };
                Ok(self.complete(&mut s, src, &req, now_ms))
            }
            Some(state) => Ok(state),
        }
    }

    async fn list_channels(&self) -> Result<Vec<ChannelInfo>, NodeError> {
        let s = self.lock();
        let me = Self::our_index(&s);
        Ok(s.channels
            .iter()
            .filter(|c| c.a == me || c.b == me)
            .map(|c| {
                let ours = c.a == me;
                let peer = if ours { c.b } else { c.a };
                let (local_balance, remote_balance, local_policy, remote_policy) = if ours {
                    (c.balance_a, c.balance_b, c.policy_a, c.policy_b)
                } else {
                    (c.balance_b, c.balance_a, c.policy_b, c.policy_a)
                };
                ChannelInfo {
                    chan_id: c.chan_id,
                    remote_pubkey: s.nodes[peer].pubkey.to_string(),
                    capacity: c.capacity,
                    local_balance,
                    remote_balance,
                    active: s.nodes[peer].online,
                    local_policy,
                    remote_policy,
                }
            })
            .collect())
    }

    async fn update_channel_policy(
        &self,
        chan_id: Option<u64>,
        policy: &ChannelPolicy,
    ) -> Result<u32, NodeError> {
        let mut s = self.lock();
        let n = set_policy(&mut s, chan_id, policy)?;
        Self::journal(&mut s, &journal::policy_entry(chan_id, policy))?;
        Ok(n)
    }

    async fn forwarding_history(
        &self,
        index_offset: u64,
        max_events: u32,
    ) -> Result<ForwardingPage, NodeError> {
        let s = self.lock();
        let me = Self::our_index(&s);
        let log = &s.nodes[me].forwards;
        let start = usize::try_from(index_offset)
            .unwrap_or(usize::MAX)
            .min(log.len());
        let events: Vec<ForwardingEvent> = log[start..]
            .iter()
            .take(max_events as usize)
            .cloned()
            .collect();
        let last_offset_index = events.last().map_or(index_offset, |e| e.index + 1);
        Ok(ForwardingPage {
            events,
            last_offset_index,
        })
    }

    async fn add_invoice(&self, req: &InvoiceRequest) -> Result<NodeInvoice, NodeError> {
        let amount = (!req.amount.is_zero()).then_some(req.amount);
        let created = self
            .create_invoice(
                OUR_NODE,
                amount,
                &req.description,
                Duration::from_secs(u64::from(req.expiry_secs)),
            )
            .map_err(|e| match e {
                SimError::Journal(m) => NodeError::Unavailable(m),
                other => NodeError::Refused(other.to_string()),
            })?;
        self.lookup_invoice(&created.payment_hash).await
    }

    async fn lookup_invoice(&self, hash: &PaymentHash) -> Result<NodeInvoice, NodeError> {
        let now_ms = self.clock.now_ms();
        let s = self.lock();
        let me = Self::our_index(&s);
        s.nodes[me]
            .invoices
            .get(hash)
            .map(|inv| invoices::to_node_invoice(hash, inv, now_ms))
            .ok_or(NodeError::NotFound)
    }

    async fn subscribe_settled_invoices(
        &self,
        after_settle_index: u64,
    ) -> Result<BoxStream<'static, Result<NodeInvoice, NodeError>>, NodeError> {
        Ok(self.settled_stream(after_settle_index))
    }

    async fn estimate_route_fee(
        &self,
        dest: &str,
        amount: Msat,
    ) -> Result<RouteFeeEstimate, NodeError> {
        let s = self.lock();
        routing::estimate(&s, Self::our_index(&s), dest, amount)
    }

    async fn closed_channels(&self) -> Result<Vec<ClosedChannel>, NodeError> {
        Ok(channels::closed_channels(&self.lock()))
    }

    async fn fee_report(&self) -> Result<FeeReport, NodeError> {
        let now_ms = self.clock.now_ms();
        Ok(channels::fee_report(&self.lock(), now_ms))
    }

    async fn open_channel(&self, req: &OpenChannelRequest) -> Result<ChannelPoint, NodeError> {
        let mut s = self.lock();
        let point = channels::open(&mut s, req)?;
        Self::journal(
            &mut s,
            &Entry::OpenChannel {
                remote_pubkey: req.remote_pubkey.clone(),
                local_funding_msat: req.local_funding.as_u64(),
                push_msat: req.push.as_u64(),
                private: req.private,
            },
        )?;
        Ok(point)
    }

    async fn close_channel(&self, chan_id: u64, force: bool) -> Result<ClosingChannel, NodeError> {
        let mut s = self.lock();
        let (closing, new) = channels::close(&mut s, chan_id, force)?;
        if new {
            Self::journal(&mut s, &Entry::CloseChannel { chan_id, force })?;
        }
        Ok(closing)
    }

    async fn wallet_balance(&self) -> Result<WalletBalance, NodeError> {
        let (confirmed, unconfirmed) = self.lock().chain.balance();
        Ok(WalletBalance {
            confirmed: sat(confirmed),
            unconfirmed: sat(unconfirmed),
        })
    }

    async fn new_address(&self) -> Result<String, NodeError> {
        let mut s = self.lock();
        let address = s.chain.new_address();
        Self::journal(&mut s, &Entry::NewAddress {})?;
        Ok(address.to_string())
    }

    async fn send_coins(&self, req: &SendCoinsRequest) -> Result<String, NodeError> {
        let mut s = self.lock();
        if !req.label.is_empty()
            && let Some(txid) = s.chain.labelled(&req.label)
        {
            return Ok(txid.to_string());
        }
        let interrupt = s.onchain_interrupt.take();
        if interrupt == Some(Interrupt::BeforeSend) {
            return Err(NodeError::Unavailable(
                "connection lost before the send".into(),
            ));
        }
        let txid = match Self::send_coins_at(&mut s, req) {
            Ok(txid) => txid,
            Err(e) => {
                // A refused send did not happen: the fault waits for the next one.
                s.onchain_interrupt = interrupt;
                return Err(e);
            }
        };
        Self::journal(
            &mut s,
            &Entry::SendCoins {
                address: req.address.clone(),
                amount_msat: req.amount.as_u64(),
                sat_per_vbyte: req.sat_per_vbyte,
                label: req.label.clone(),
            },
        )?;
        if interrupt == Some(Interrupt::AfterSend) {
            return Err(NodeError::Unavailable(
                "connection lost after the send".into(),
            ));
        }
        Ok(txid)
    }

    async fn rebalance(&self, req: &RebalanceRequest) -> Result<RebalanceOutcome, NodeError> {
        let now_ms = self.clock.now_ms();
        let mut s = self.lock();
        let outcome = self.rebalance_at(&mut s, req, now_ms)?;
        Self::journal(
            &mut s,
            &Entry::Rebalance {
                out_chan_id: req.out_chan_id,
                in_chan_id: req.in_chan_id,
                amount_msat: req.amount.as_u64(),
                fee_limit_msat: req.fee_limit.as_u64(),
                now_ms,
            },
        )?;
        self.publish(&s);
        Ok(outcome)
    }
}
