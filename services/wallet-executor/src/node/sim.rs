//! A deterministic simulated Lightning network, embedded in the executor.
//!
//! Nodes have secp256k1 keys derived from a seed, so the same seed gives the same network and the
//! same invoices' payee keys. Channels have a capacity, a balance on each side and a forwarding
//! policy per side (base fee, ppm, min/max HTLC, CLTV delta). A payment takes the cheapest route
//! whose every hop has the liquidity, accepts the HTLC's size, keeps the total time lock under
//! [`MAX_ROUTE_CLTV`] and whose fee fits the limit; it moves the balances hop by hop, records a
//! forwarding event at each routing node, and settles the payee's invoice, revealing its preimage.
//! Invoices are real BOLT11, signed with the payee node's key, and are open, settled, expired or
//! cancelled.
//!
//! Faults can be injected for tests: a node offline, a payment that hangs in flight, a crash
//! between send and result (the node completes the payment but the executor never hears of it
//! until it reconnects), liquidity shifted away from a channel.
//!
//! The network lives in the executor's process. So that a crash test can kill the process and
//! still count every send, the sim can keep a journal ([`SimNetwork::open_journaled`]): every
//! invoice, send and policy change is appended as one JSON line (one `write` call, before `pay`
//! returns) and replayed in order at start-up. Replay is deterministic, so it rebuilds the same
//! balances, invoice states and payment outcomes. A line torn by a kill is dropped: its send never
//! returned to the executor, which then finds the payment unknown and records it as never sent.
//! Injected faults are not journaled.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, Write},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use oa_invoice::{InvoiceRequest, InvoiceSigner, Network, PaymentHash, Preimage};
use oa_money::Msat;
use oa_service::Clock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::MAX_ROUTE_CLTV;
use super::{
    ChannelInfo, ChannelPolicy, FailureCode, ForwardingEvent, ForwardingPage, LightningNode,
    MIN_CLTV_DELTA, NodeError, NodeInfo, PayState, SendRequest,
};

/// The alias of the node the executor pays from.
pub const OUR_NODE: &str = "wallet";
/// Longest route tried, in hops.
const MAX_HOPS: usize = 4;
/// The final CLTV delta every sim invoice asks for.
pub const FINAL_CLTV_DELTA: u32 = MIN_CLTV_DELTA;
/// Largest invoice expiry the sim accepts (a week), as BOLT11 wallets usually cap it.
pub const MAX_INVOICE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

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
}

struct SimNode {
    alias: String,
    secret: SecretKey,
    pubkey: PublicKey,
    online: bool,
    invoices: HashMap<PaymentHash, SimInvoice>,
    forwards: Vec<ForwardingEvent>,
}

struct Channel {
    chan_id: u64,
    a: usize,
    b: usize,
    capacity: Msat,
    balance_a: Msat,
    balance_b: Msat,
    /// The policy `a` applies forwarding out over this channel, and `b`'s.
    policy_a: ChannelPolicy,
    policy_b: ChannelPolicy,
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

#[derive(Default)]
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
    journal: Option<std::fs::File>,
}

/// The simulated network. Cloning shares it.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<State>>,
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

/// One line of the journal.
#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
enum Entry {
    Invoice {
        alias: String,
        amount_msat: Option<u64>,
        description: String,
        expiry_ms: u64,
        now_ms: u64,
    },
    Send {
        from: String,
        payment_hash: String,
        bolt11: String,
        amount_msat: u64,
        fee_limit_msat: u64,
        now_ms: u64,
    },
    Policy {
        chan_id: Option<u64>,
        base_fee_msat: u64,
        fee_ppm: u32,
        min_htlc_msat: u64,
        max_htlc_msat: u64,
        time_lock_delta: u32,
        #[serde(default)]
        inbound_base_fee_msat: i64,
        #[serde(default)]
        inbound_fee_ppm: i32,
    },
}

fn sat(v: u64) -> Msat {
    Msat::from_sat(v).unwrap_or(Msat::MAX)
}

/// The policy LND applies by default (base 1 sat, 1 ppm, CLTV delta 80), with a minimum HTLC
/// of 1 msat so tests can send tiny amounts, and no maximum below the capacity.
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
    /// our node records forwarding events.
    pub fn default_topology(seed: u64, network: Network, clock: Arc<dyn Clock>) -> Self {
        let sim = SimNetwork {
            state: Arc::new(Mutex::new(State::default())),
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
                s.channels.push(Channel {
                    chan_id: ((100 + n as u64) << 40) | (1 << 16),
                    a,
                    b,
                    capacity,
                    balance_a,
                    balance_b: capacity.saturating_sub(balance_a),
                    policy_a,
                    policy_b: default_policy(capacity),
                });
            }
        }
        sim
    }

    /// The default topology with a journal at `path`: replays what the file holds, then appends
    /// every later invoice, send and policy change to it (see the module docs).
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

    fn replay(&self, entry: Entry) -> Result<(), SimError> {
        match entry {
            Entry::Invoice {
                alias,
                amount_msat,
                description,
                expiry_ms,
                now_ms,
            } => {
                let amount = amount_msat
                    .map(Msat::new)
                    .transpose()
                    .map_err(|e| SimError::Journal(e.to_string()))?;
                let mut s = self.lock();
                self.create_invoice_at(
                    &mut s,
                    &alias,
                    amount,
                    &description,
                    Duration::from_millis(expiry_ms),
                    now_ms,
                )?;
            }
            Entry::Send {
                from,
                payment_hash,
                bolt11,
                amount_msat,
                fee_limit_msat,
                now_ms,
            } => {
                let bad = |e: String| SimError::Journal(e);
                let req = SendRequest {
                    bolt11,
                    payment_hash: payment_hash
                        .parse()
                        .map_err(|_| bad("payment hash".into()))?,
                    amount: Msat::new(amount_msat).map_err(|e| bad(e.to_string()))?,
                    fee_limit: Msat::new(fee_limit_msat).map_err(|e| bad(e.to_string()))?,
                    timeout: Duration::ZERO,
                };
                let mut s = self.lock();
                let src = index_of(&s, &from)?;
                self.send_at(&mut s, src, &req, now_ms);
            }
            Entry::Policy {
                chan_id,
                base_fee_msat,
                fee_ppm,
                min_htlc_msat,
                max_htlc_msat,
                time_lock_delta,
                inbound_base_fee_msat,
                inbound_fee_ppm,
            } => {
                let m = |v: u64| Msat::new(v).map_err(|e| SimError::Journal(e.to_string()));
                let policy = ChannelPolicy {
                    base_fee: m(base_fee_msat)?,
                    fee_ppm,
                    min_htlc: m(min_htlc_msat)?,
                    max_htlc: m(max_htlc_msat)?,
                    time_lock_delta,
                    inbound_base_fee_msat,
                    inbound_fee_ppm,
                };
                let mut s = self.lock();
                // A journaled change was valid when made; replaying it cannot fail.
                let _ = set_policy(&mut s, chan_id, &policy);
            }
        }
        Ok(())
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

    fn create_invoice_at(
        &self,
        s: &mut State,
        alias: &str,
        amount: Option<Msat>,
        description: &str,
        expiry: Duration,
        now_ms: u64,
    ) -> Result<CreatedInvoice, SimError> {
        let idx = index_of(s, alias)?;
        s.invoice_counter += 1;
        let counter = s.invoice_counter;
        // Preimages are derived, not random, so a seeded run is reproducible end to end.
        let preimage = Preimage(derive_bytes(
            self.seed,
            &format!("preimage/{alias}/{counter}/{now_ms}"),
        ));
        let payment_hash = preimage.payment_hash();
        let secret = derive_bytes(self.seed, &format!("secret/{alias}/{counter}"));
        let node = &mut s.nodes[idx];
        let bolt11 = InvoiceSigner::new(node.secret).create_invoice(&InvoiceRequest {
            network: self.network,
            amount,
            payment_hash,
            payment_secret: secret,
            description: description.to_owned(),
            created_at: Duration::from_millis(now_ms),
            expiry,
            min_final_cltv_expiry_delta: u64::from(FINAL_CLTV_DELTA),
        })?;
        let expires_at_ms = (now_ms / 1000)
            .saturating_add(expiry.as_secs())
            .saturating_mul(1000);
        node.invoices.insert(
            payment_hash,
            SimInvoice {
                bolt11: bolt11.clone(),
                preimage,
                amount,
                expires_at_ms,
                state: InvoiceState::Open,
            },
        );
        let node_pubkey = node.pubkey.to_string();
        s.payee_of.insert(payment_hash, idx);
        Ok(CreatedInvoice {
            bolt11,
            payment_hash,
            node_pubkey,
        })
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

    /// Pays an invoice from another node of the network (not through the executor), e.g. so
    /// that payments route through our node and leave forwarding events there.
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
        Self::journal(&mut s, &send_entry(alias, &req, now_ms))
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
        let outcome = execute(s, src, req, now_ms);
        s.payments.insert(req.payment_hash, outcome.clone());
        s.history
            .entry(req.payment_hash)
            .or_default()
            .push(outcome.clone());
        outcome
    }
}

fn send_entry(from: &str, req: &SendRequest, now_ms: u64) -> Entry {
    Entry::Send {
        from: from.to_owned(),
        payment_hash: req.payment_hash.to_string(),
        bolt11: req.bolt11.clone(),
        amount_msat: req.amount.as_u64(),
        fee_limit_msat: req.fee_limit.as_u64(),
        now_ms,
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

fn hop_fee(p: &ChannelPolicy, amount: Msat) -> Msat {
    amount
        .ppm_ceil(p.fee_ppm)
        .and_then(|f| f.checked_add(p.base_fee))
        .unwrap_or(Msat::MAX)
}

/// Why a candidate route was refused, in the order the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    Offline,
    /// Our own first hop lacks the balance.
    LocalLiquidity,
    Liquidity,
    HtlcLimits,
    Cltv,
    FeeLimit,
}

impl Refusal {
    fn describe(self) -> &'static str {
        match self {
            Refusal::Offline => "a node on the route is offline",
            Refusal::LocalLiquidity => "our channel lacks the outbound liquidity",
            Refusal::Liquidity => "a channel on the route lacks the liquidity",
            Refusal::HtlcLimits => "the amount is outside a channel's HTLC limits",
            Refusal::Cltv => "the route's time lock is too long",
            Refusal::FeeLimit => "the route's fee is above the fee limit",
        }
    }
}

/// Executes a payment from node `src` to completion (the sim settles at once).
fn execute(s: &mut State, src: usize, req: &SendRequest, now_ms: u64) -> PayState {
    let issued_here = s.payee_of.get(&req.payment_hash).copied().filter(|&d| {
        s.nodes[d]
            .invoices
            .get(&req.payment_hash)
            .is_some_and(|i| i.bolt11 == req.bolt11)
    });
    let dest = match issued_here {
        Some(d) => d,
        None => {
            let Ok(decoded) = oa_invoice::decode(&req.bolt11) else {
                return failed(FailureCode::IncorrectPaymentDetails, "undecodable invoice");
            };
            let Some(d) = s
                .nodes
                .iter()
                .position(|n| n.pubkey.to_string() == decoded.payee_pubkey)
            else {
                return failed(FailureCode::NoRoute, "the payee is not on this network");
            };
            d
        }
    };
    if !s.nodes[dest].online {
        return failed(FailureCode::PeerOffline, "the payee's node is offline");
    }
    let mut routes = Vec::new();
    enumerate_paths(
        s,
        src,
        dest,
        &mut Vec::new(),
        &mut vec![false; s.nodes.len()],
        &mut routes,
    );
    if routes.is_empty() {
        return failed(FailureCode::NoRoute, "no path to the payee");
    }
    let mut best: Option<(Vec<(usize, bool)>, Msat)> = None;
    let mut refusals = Vec::new();
    for route in routes {
        match check_route(s, &route, req.amount, req.fee_limit) {
            Ok(fee) => {
                if best
                    .as_ref()
                    .is_none_or(|(p, f)| (fee, route.len()) < (*f, p.len()))
                {
                    best = Some((route, fee));
                }
            }
            Err(r) => refusals.push(r),
        }
    }
    let Some((path, fee)) = best else {
        refusals.sort_unstable();
        refusals.dedup();
        let reason = refusals
            .iter()
            .map(|r| r.describe())
            .collect::<Vec<_>>()
            .join("; ");
        let code = match refusals.as_slice() {
            [Refusal::Offline] => FailureCode::PeerOffline,
            [Refusal::LocalLiquidity] => FailureCode::InsufficientBalance,
            _ => FailureCode::NoRoute,
        };
        return failed(code, &format!("no usable route: {reason}"));
    };
    let rejected = match s.nodes[dest].invoices.get(&req.payment_hash) {
        None => Some("the payee does not know this payment hash"),
        Some(inv) => match effective_state(inv, now_ms) {
            InvoiceState::Settled => Some("the invoice is already settled"),
            InvoiceState::Cancelled => Some("the invoice was cancelled"),
            InvoiceState::Expired => Some("the invoice has expired"),
            InvoiceState::Open if inv.amount.is_some_and(|a| a > req.amount) => {
                Some("the amount is below the invoice's")
            }
            InvoiceState::Open => None,
        },
    };
    if let Some(reason) = rejected {
        return failed(FailureCode::IncorrectPaymentDetails, reason);
    }
    // Move liquidity along the path, from the payee back: each hop carries the amount plus the
    // fees of the hops after it; each forwarding node keeps its fee and logs the forward.
    let mut carried = req.amount;
    let mut forwards = Vec::new();
    for (pos, &(ch, forward)) in path.iter().enumerate().rev() {
        let c = &mut s.channels[ch];
        let (from, to) = if forward {
            (&mut c.balance_a, &mut c.balance_b)
        } else {
            (&mut c.balance_b, &mut c.balance_a)
        };
        *from = from.saturating_sub(carried);
        *to = to.checked_add(carried).unwrap_or(*to);
        if pos > 0 {
            let node = if forward { c.a } else { c.b };
            let (_, policy) = c.out(forward);
            let f = hop_fee(policy, carried);
            let amt_in = carried.checked_add(f).unwrap_or(carried);
            forwards.push((node, path[pos - 1].0, ch, amt_in, carried, f));
            carried = amt_in;
        }
    }
    for (node, ch_in, ch_out, amt_in, amt_out, f) in forwards.into_iter().rev() {
        let (chan_id_in, chan_id_out) = (s.channels[ch_in].chan_id, s.channels[ch_out].chan_id);
        let log = &mut s.nodes[node].forwards;
        let index = log.len() as u64;
        log.push(ForwardingEvent {
            index,
            timestamp_ms: now_ms,
            chan_id_in,
            chan_id_out,
            amt_in,
            amt_out,
            fee: f,
        });
    }
    let Some(inv) = s.nodes[dest].invoices.get_mut(&req.payment_hash) else {
        return failed(
            FailureCode::IncorrectPaymentDetails,
            "the payee does not know this payment hash",
        );
    };
    inv.state = InvoiceState::Settled;
    PayState::Succeeded {
        preimage: inv.preimage.clone(),
        fee,
    }
}

/// Every simple path from `at` to `dest` of at most [`MAX_HOPS`] channels, as
/// `(channel index, direction a->b)` hops. The graph is small, and exhaustive search keeps the
/// choice obvious and deterministic (ties go to fewer hops, then channel order).
fn enumerate_paths(
    s: &State,
    at: usize,
    dest: usize,
    path: &mut Vec<(usize, bool)>,
    visited: &mut Vec<bool>,
    out: &mut Vec<Vec<(usize, bool)>>,
) {
    visited[at] = true;
    if at == dest {
        out.push(path.clone());
    } else if path.len() < MAX_HOPS {
        for (i, c) in s.channels.iter().enumerate() {
            let (next, forward) = if c.a == at {
                (c.b, true)
            } else if c.b == at {
                (c.a, false)
            } else {
                continue;
            };
            if !visited[next] {
                path.push((i, forward));
                enumerate_paths(s, next, dest, path, visited, out);
                path.pop();
            }
        }
    }
    visited[at] = false;
}

/// The total routing fee of `route` for `amount`, or why it cannot carry it. Walks back from the
/// payee: each hop carries the amount plus the fees of the hops after it, and must have the
/// sender-side balance, accept the HTLC size, and keep the time lock in bounds. The first hop is
/// ours and charges no fee.
fn check_route(
    s: &State,
    route: &[(usize, bool)],
    amount: Msat,
    fee_limit: Msat,
) -> Result<Msat, Refusal> {
    let mut carried = amount;
    let mut fee = Msat::ZERO;
    let mut cltv = FINAL_CLTV_DELTA;
    for (pos, &(ch, forward)) in route.iter().enumerate().rev() {
        let c = &s.channels[ch];
        let (sender, receiver) = if forward { (c.a, c.b) } else { (c.b, c.a) };
        if !s.nodes[sender].online || !s.nodes[receiver].online {
            return Err(Refusal::Offline);
        }
        let (available, policy) = c.out(forward);
        if available < carried {
            return Err(if pos == 0 {
                Refusal::LocalLiquidity
            } else {
                Refusal::Liquidity
            });
        }
        if carried < policy.min_htlc || carried > policy.max_htlc {
            return Err(Refusal::HtlcLimits);
        }
        if pos > 0 {
            let f = hop_fee(policy, carried);
            fee = fee.checked_add(f).map_err(|_| Refusal::FeeLimit)?;
            carried = carried.checked_add(f).map_err(|_| Refusal::FeeLimit)?;
            cltv = cltv.saturating_add(policy.time_lock_delta);
        }
    }
    if cltv > MAX_ROUTE_CLTV {
        return Err(Refusal::Cltv);
    }
    if fee > fee_limit {
        return Err(Refusal::FeeLimit);
    }
    Ok(fee)
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
        Self::journal(&mut s, &send_entry(OUR_NODE, req, now_ms))?;
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
        Self::journal(
            &mut s,
            &Entry::Policy {
                chan_id,
                base_fee_msat: policy.base_fee.as_u64(),
                fee_ppm: policy.fee_ppm,
                min_htlc_msat: policy.min_htlc.as_u64(),
                max_htlc_msat: policy.max_htlc.as_u64(),
                time_lock_delta: policy.time_lock_delta,
                inbound_base_fee_msat: policy.inbound_base_fee_msat,
                inbound_fee_ppm: policy.inbound_fee_ppm,
            },
        )?;
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use oa_service::ManualClock;

    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn sim() -> (SimNetwork, ManualClock) {
        let clock = ManualClock::new(T0);
        let sim = SimNetwork::default_topology(7, Network::Regtest, Arc::new(clock.clone()));
        (sim, clock)
    }

    fn invoice(sim: &SimNetwork, alias: &str, amount_msat: u64) -> CreatedInvoice {
        sim.create_invoice(
            alias,
            Some(Msat::new(amount_msat).unwrap()),
            "t",
            Duration::from_secs(600),
        )
        .unwrap()
    }

    fn send(inv: &CreatedInvoice, amount_msat: u64, fee_limit_msat: u64) -> SendRequest {
        SendRequest {
            bolt11: inv.bolt11.clone(),
            payment_hash: inv.payment_hash,
            amount: Msat::new(amount_msat).unwrap(),
            fee_limit: Msat::new(fee_limit_msat).unwrap(),
            timeout: Duration::from_secs(1),
        }
    }

    fn code(state: &PayState) -> Option<FailureCode> {
        match state {
            PayState::Failed { code, .. } => Some(*code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn invoices_move_from_open_to_settled_expired_or_cancelled() {
        let (sim, clock) = sim();
        let paid = invoice(&sim, "carol", 1_000);
        let cancelled = invoice(&sim, "carol", 1_000);
        let expired = invoice(&sim, "carol", 1_000);
        for i in [&paid, &cancelled, &expired] {
            assert_eq!(sim.invoice_state(&i.payment_hash), Some(InvoiceState::Open));
        }
        assert!(matches!(
            sim.pay(&send(&paid, 1_000, 0)).await.unwrap(),
            PayState::Succeeded { .. }
        ));
        assert_eq!(
            sim.invoice_state(&paid.payment_hash),
            Some(InvoiceState::Settled)
        );
        assert!(sim.cancel_invoice(&cancelled.payment_hash));
        assert!(!sim.cancel_invoice(&cancelled.payment_hash));
        assert_eq!(
            sim.invoice_state(&cancelled.payment_hash),
            Some(InvoiceState::Cancelled)
        );
        let st = sim.pay(&send(&cancelled, 1_000, 0)).await.unwrap();
        assert_eq!(
            st,
            failed(
                FailureCode::IncorrectPaymentDetails,
                "the invoice was cancelled"
            )
        );
        clock.advance(601_000);
        assert_eq!(
            sim.invoice_state(&expired.payment_hash),
            Some(InvoiceState::Expired)
        );
        let st = sim.pay(&send(&expired, 1_000, 0)).await.unwrap();
        assert_eq!(
            st,
            failed(
                FailureCode::IncorrectPaymentDetails,
                "the invoice has expired"
            )
        );
        // A settled invoice stays settled whatever the clock says.
        assert_eq!(
            sim.invoice_state(&paid.payment_hash),
            Some(InvoiceState::Settled)
        );
    }

    #[tokio::test]
    async fn routes_take_the_cheapest_path_with_liquidity_and_fall_back() {
        let (sim, _) = sim();
        // Through router: 1 sat + 100 ppm of 50_000 msat (rounded up) = 1_005 msat.
        let a = invoice(&sim, "merchant", 50_000);
        assert_eq!(
            sim.pay(&send(&a, 50_000, 5_000)).await.unwrap(),
            PayState::Succeeded {
                preimage: match sim.track(&a.payment_hash).await.unwrap() {
                    PayState::Succeeded { preimage, .. } => preimage,
                    other => panic!("{other:?}"),
                },
                fee: Msat::new(1_005).unwrap(),
            }
        );
        // Drain router's side towards merchant: the sim falls back to hub (2 sat + 500 ppm).
        sim.shift_liquidity("router", "merchant", Msat::MAX)
            .unwrap();
        let b = invoice(&sim, "merchant", 50_000);
        match sim.pay(&send(&b, 50_000, 5_000)).await.unwrap() {
            PayState::Succeeded { fee, .. } => assert_eq!(fee, Msat::new(2_025).unwrap()),
            other => panic!("{other:?}"),
        }
        // Neither route fits a 10 msat fee limit.
        let c = invoice(&sim, "merchant", 50_000);
        let st = sim.pay(&send(&c, 50_000, 10)).await.unwrap();
        assert_eq!(code(&st), Some(FailureCode::NoRoute), "{st:?}");
    }

    #[tokio::test]
    async fn htlc_limits_liquidity_and_offline_nodes_fail_with_their_reason() {
        let (sim, _) = sim();
        let small = invoice(&sim, "dave", 5_000); // below router's 10 sat minimum HTLC
        let big = invoice(&sim, "dave", 25_000_000); // above its 20k sat maximum
        let huge = invoice(&sim, "dave", 35_000_000); // above router's 30k sat balance
        for (inv, want) in [
            (
                &small,
                "no usable route: the amount is outside a channel's HTLC limits",
            ),
            (
                &big,
                "no usable route: the amount is outside a channel's HTLC limits",
            ),
            (
                &huge,
                "no usable route: a channel on the route lacks the liquidity",
            ),
        ] {
            let amount = oa_invoice::decode(&inv.bolt11).unwrap().amount.unwrap();
            let st = sim
                .pay(&send(inv, amount.as_u64(), 1_000_000))
                .await
                .unwrap();
            assert_eq!(st, failed(FailureCode::NoRoute, want));
        }
        sim.set_online("router", false).unwrap();
        let inv = invoice(&sim, "dave", 20_000);
        let st = sim.pay(&send(&inv, 20_000, 10_000)).await.unwrap();
        assert_eq!(
            st,
            failed(
                FailureCode::PeerOffline,
                "no usable route: a node on the route is offline"
            )
        );
        sim.set_online("carol", false).unwrap();
        let inv = invoice(&sim, "carol", 1_000);
        let st = sim.pay(&send(&inv, 1_000, 0)).await.unwrap();
        assert_eq!(code(&st), Some(FailureCode::PeerOffline));
        assert_eq!(
            sim.history(&inv.payment_hash),
            vec![PayState::InFlight, st.clone()]
        );
        let channels = sim.list_channels().await.unwrap();
        assert_eq!(channels.iter().filter(|c| !c.active).count(), 2);
    }

    #[tokio::test]
    async fn a_long_time_lock_is_refused() {
        let (sim, _) = sim();
        let slow = ChannelPolicy {
            time_lock_delta: 2_000,
            ..default_policy(sat(100_000_000))
        };
        // Our node's delta counts when it forwards: hub -> wallet -> carol.
        sim.update_channel_policy(None, &slow).await.unwrap();
        let inv = invoice(&sim, "carol", 1_000);
        let st = sim.pay_from("hub", &inv.bolt11, sat(1_000)).unwrap();
        assert_eq!(code(&st), Some(FailureCode::NoRoute));
        match st {
            PayState::Failed { reason, .. } => {
                assert!(
                    reason.contains("the route's time lock is too long"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn payments_through_our_node_leave_forwarding_events() {
        let (sim, _) = sim();
        for n in 0..3u64 {
            let inv = invoice(&sim, "carol", 10_000 + n);
            let st = sim.pay_from("hub", &inv.bolt11, sat(10)).unwrap();
            assert!(matches!(st, PayState::Succeeded { .. }), "{st:?}");
        }
        let page = sim.forwarding_history(1, 10).await.unwrap();
        assert_eq!(page.events.len(), 2);
        assert_eq!(page.last_offset_index, 3);
        let e = &page.events[0];
        assert_eq!(e.index, 1);
        assert_eq!(e.amt_out, Msat::new(10_001).unwrap());
        // Our default policy: 1 sat + 1 ppm of 10_001 msat (rounded up).
        assert_eq!(e.fee, Msat::new(1_001).unwrap());
        assert_eq!(e.amt_in, Msat::new(11_002).unwrap());
        let empty = sim.forwarding_history(3, 10).await.unwrap();
        assert!(empty.events.is_empty());
        assert_eq!(empty.last_offset_index, 3);
    }

    #[tokio::test]
    async fn a_crash_after_send_hides_the_result_until_reconnect_and_never_resends() {
        let (sim, _) = sim();
        let inv = invoice(&sim, "carol", 2_000);
        sim.crash_after_send(inv.payment_hash);
        assert!(matches!(
            sim.pay(&send(&inv, 2_000, 0)).await,
            Err(NodeError::Unavailable(_))
        ));
        assert!(matches!(
            sim.track(&inv.payment_hash).await,
            Err(NodeError::Unavailable(_))
        ));
        assert_eq!(
            sim.invoice_state(&inv.payment_hash),
            Some(InvoiceState::Settled)
        );
        sim.reconnect();
        assert!(matches!(
            sim.pay(&send(&inv, 2_000, 0)).await.unwrap(),
            PayState::Succeeded { .. }
        ));
        assert_eq!(sim.send_count(&inv.payment_hash), 1);
    }

    #[tokio::test]
    async fn a_journal_replays_sends_invoices_and_policies_and_drops_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.jsonl");
        let clock = ManualClock::new(T0);
        let open = || {
            SimNetwork::open_journaled(7, Network::Regtest, Arc::new(clock.clone()), &path).unwrap()
        };
        let sim = open();
        let paid = invoice(&sim, "merchant", 50_000);
        let open_inv = invoice(&sim, "carol", 3_000);
        sim.pay(&send(&paid, 50_000, 5_000)).await.unwrap();
        let policy = ChannelPolicy {
            fee_ppm: 42,
            ..default_policy(sat(1_000))
        };
        sim.update_channel_policy(None, &policy).await.unwrap();
        let before = sim.info().await.unwrap();
        drop(sim);
        // A kill in the middle of a write leaves a torn line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"t\":\"send\",\"fr")
            .unwrap();

        let sim = open();
        assert_eq!(sim.send_count(&paid.payment_hash), 1);
        assert!(matches!(
            sim.track(&paid.payment_hash).await.unwrap(),
            PayState::Succeeded { .. }
        ));
        assert_eq!(
            sim.invoice_state(&open_inv.payment_hash),
            Some(InvoiceState::Open)
        );
        let after = sim.info().await.unwrap();
        assert_eq!(
            (after.local_balance, after.remote_balance),
            (before.local_balance, before.remote_balance)
        );
        assert!(
            sim.list_channels()
                .await
                .unwrap()
                .iter()
                .all(|c| c.local_policy.fee_ppm == 42)
        );
        // The torn line is gone, and the next entry starts a line of its own.
        sim.pay(&send(&open_inv, 3_000, 0)).await.unwrap();
        drop(sim);
        let sim = open();
        assert_eq!(sim.send_count(&open_inv.payment_hash), 1);
        assert_eq!(sim.send_stats(), (2, 0));
    }
}
