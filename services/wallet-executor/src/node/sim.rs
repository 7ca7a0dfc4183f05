//! A deterministic simulated Lightning network, embedded in the executor.
//!
//! Nodes have secp256k1 keys derived from a seed, so the same seed gives the same network and the
//! same invoices' payee keys. Channels have balances on both sides and fee policies (base +
//! ppm); a payment takes the cheapest route with enough liquidity whose fee fits the limit,
//! moves the balances hop by hop, and settles the payee's invoice, revealing its preimage.
//! Invoices are real BOLT11, signed with the payee node's key.
//!
//! Faults can be injected for tests: a payment hash can be made to hang in flight.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use oa_invoice::{InvoiceRequest, InvoiceSigner, Network, PaymentHash, Preimage};
use oa_money::Msat;
use oa_service::Clock;
use sha2::{Digest, Sha256};

use super::{FailureCode, LightningNode, NodeError, NodeInfo, PayState, SendRequest};

/// The alias of the node the executor pays from.
pub const OUR_NODE: &str = "wallet";
/// Longest route tried, in hops.
const MAX_HOPS: usize = 4;
/// Largest invoice expiry the sim accepts (a week), as BOLT11 wallets usually cap it.
pub const MAX_INVOICE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvoiceState {
    Open,
    Settled,
}

struct SimInvoice {
    preimage: Preimage,
    amount: Option<Msat>,
    expires_at_ms: u64,
    state: InvoiceState,
}

struct SimNode {
    alias: String,
    secret: SecretKey,
    pubkey: PublicKey,
    invoices: HashMap<PaymentHash, SimInvoice>,
}

struct Channel {
    a: usize,
    b: usize,
    balance_a: Msat,
    balance_b: Msat,
    /// Fee charged by each side for forwarding out over this channel.
    base_fee: Msat,
    fee_ppm: u32,
}

#[derive(Default)]
struct State {
    nodes: Vec<SimNode>,
    channels: Vec<Channel>,
    payments: HashMap<PaymentHash, PayState>,
    /// How many times each payment hash was actually sent (must never exceed 1).
    sends: HashMap<PaymentHash, u32>,
    hang: HashSet<PaymentHash>,
    /// Requests held in flight by [`SimNetwork::hang`], completed by `track` once released.
    held: HashMap<PaymentHash, SendRequest>,
    invoice_counter: u64,
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
    #[error("invoice expiry must be between 1 s and {} s", MAX_INVOICE_EXPIRY.as_secs())]
    BadExpiry,
    #[error(transparent)]
    Invoice(#[from] oa_invoice::InvoiceError),
}

/// A created invoice.
#[derive(Clone, Debug)]
pub struct CreatedInvoice {
    pub bolt11: String,
    pub payment_hash: PaymentHash,
    pub node_pubkey: String,
}

impl SimNetwork {
    /// The default topology: our node `wallet`, a routing node `router`, and payees `merchant`
    /// (reached through `router`, so payments to it pay routing fees) and `carol` (a direct peer).
    pub fn default_topology(seed: u64, network: Network, clock: Arc<dyn Clock>) -> Self {
        let sim = SimNetwork {
            state: Arc::new(Mutex::new(State::default())),
            network,
            clock,
            seed,
        };
        let one_btc = Msat::from_sat(100_000_000).unwrap_or(Msat::MAX);
        let zero = Msat::ZERO;
        {
            let mut s = sim.lock();
            for alias in [OUR_NODE, "router", "merchant", "carol"] {
                let secret = derive_key(seed, alias);
                let pubkey = PublicKey::from_secret_key(&Secp256k1::signing_only(), &secret);
                s.nodes.push(SimNode {
                    alias: alias.to_owned(),
                    secret,
                    pubkey,
                    invoices: HashMap::new(),
                });
            }
            let fee = |sat| Msat::from_sat(sat).unwrap_or(zero);
            s.channels.push(Channel {
                a: 0,
                b: 1,
                balance_a: one_btc,
                balance_b: zero,
                base_fee: fee(1),
                fee_ppm: 100,
            });
            s.channels.push(Channel {
                a: 1,
                b: 2,
                balance_a: one_btc,
                balance_b: zero,
                base_fee: fee(1),
                fee_ppm: 100,
            });
            s.channels.push(Channel {
                a: 0,
                b: 3,
                balance_a: one_btc,
                balance_b: zero,
                base_fee: zero,
                fee_ppm: 0,
            });
        }
        sim
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this module; the state is still
        // consistent because every mutation completes before the guard drops.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        s.invoice_counter += 1;
        let counter = s.invoice_counter;
        let idx = s
            .nodes
            .iter()
            .position(|n| n.alias == alias)
            .ok_or_else(|| SimError::UnknownNode(alias.to_owned()))?;
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
            min_final_cltv_expiry_delta: 18,
        })?;
        let expires_at_ms = (now_ms / 1000)
            .saturating_add(expiry.as_secs())
            .saturating_mul(1000);
        node.invoices.insert(
            payment_hash,
            SimInvoice {
                preimage,
                amount,
                expires_at_ms,
                state: InvoiceState::Open,
            },
        );
        Ok(CreatedInvoice {
            bolt11,
            payment_hash,
            node_pubkey: node.pubkey.to_string(),
        })
    }

    /// Makes a payment to `payment_hash` stay in flight until [`SimNetwork::release`].
    pub fn hang(&self, payment_hash: PaymentHash) {
        self.lock().hang.insert(payment_hash);
    }

    /// Lets a hung payment complete on its next `track`.
    pub fn release(&self, payment_hash: &PaymentHash) {
        self.lock().hang.remove(payment_hash);
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

    /// The state of an invoice at its payee.
    pub fn invoice_state(&self, payment_hash: &PaymentHash) -> Option<InvoiceState> {
        let s = self.lock();
        s.nodes
            .iter()
            .find_map(|n| n.invoices.get(payment_hash).map(|i| i.state))
    }

    fn our_index(s: &State) -> usize {
        s.nodes
            .iter()
            .position(|n| n.alias == OUR_NODE)
            .unwrap_or(0)
    }

    /// Executes a payment to completion (the sim settles instantly unless told to hang).
    fn execute(&self, s: &mut State, req: &SendRequest) -> PayState {
        let now_ms = self.clock.now_ms();
        let Ok(decoded) = oa_invoice::decode(&req.bolt11) else {
            return failed(FailureCode::IncorrectPaymentDetails, "undecodable invoice");
        };
        let Some(dest) = s
            .nodes
            .iter()
            .position(|n| n.pubkey.to_string() == decoded.payee_pubkey)
        else {
            return failed(FailureCode::NoRoute, "payee is not on this network");
        };
        let src = Self::our_index(s);
        let Some((path, fee)) = cheapest_route(s, src, dest, req.amount, req.fee_limit) else {
            return failed(
                FailureCode::NoRoute,
                "no route with enough liquidity within the fee limit",
            );
        };
        let invoice_ok = match s.nodes[dest].invoices.get(&req.payment_hash) {
            Some(inv) => {
                inv.state == InvoiceState::Open
                    && inv.expires_at_ms > now_ms
                    && inv.amount.is_none_or(|a| a <= req.amount)
            }
            None => false,
        };
        if !invoice_ok {
            return failed(
                FailureCode::IncorrectPaymentDetails,
                "payee rejected the payment",
            );
        }
        // Move liquidity along the path, from the payee back: each hop carries the amount plus
        // the fees of the hops after it; forwarding nodes (all but us) keep their fee.
        let mut carried = req.amount;
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
                carried = carried.checked_add(hop_fee(c, carried)).unwrap_or(carried);
            }
        }
        let Some(inv) = s.nodes[dest].invoices.get_mut(&req.payment_hash) else {
            return failed(
                FailureCode::IncorrectPaymentDetails,
                "payee rejected the payment",
            );
        };
        inv.state = InvoiceState::Settled;
        PayState::Succeeded {
            preimage: inv.preimage.clone(),
            fee,
        }
    }
}

fn failed(code: FailureCode, reason: &str) -> PayState {
    PayState::Failed {
        code,
        reason: reason.to_owned(),
    }
}

fn hop_fee(c: &Channel, amount: Msat) -> Msat {
    amount
        .ppm_ceil(c.fee_ppm)
        .and_then(|p| p.checked_add(c.base_fee))
        .unwrap_or(Msat::MAX)
}

/// Cheapest route by total fee (ties broken by fewer hops, then channel order), searched
/// exhaustively up to [`MAX_HOPS`]: the sim's graph is small, and exhaustive search keeps the
/// choice obvious and deterministic. The first hop is ours and charges no fee.
fn cheapest_route(
    s: &State,
    src: usize,
    dest: usize,
    amount: Msat,
    fee_limit: Msat,
) -> Option<(Vec<(usize, bool)>, Msat)> {
    let mut routes = Vec::new();
    enumerate_paths(
        s,
        src,
        dest,
        &mut Vec::new(),
        &mut vec![false; s.nodes.len()],
        &mut routes,
    );
    let mut best: Option<(Vec<(usize, bool)>, Msat)> = None;
    for route in routes {
        let Some(fee) = route_fee(s, &route, amount) else {
            continue;
        };
        if fee > fee_limit {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|(p, f)| (fee, route.len()) < (*f, p.len()))
        {
            best = Some((route, fee));
        }
    }
    best
}

/// Every simple path from `at` to `dest` of at most [`MAX_HOPS`] channels, as
/// `(channel index, direction a->b)` hops.
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

/// The total routing fee of `route` for `amount`, or `None` if a hop lacks liquidity. Walks back
/// from the payee: each hop carries the amount plus the fees of the hops after it.
fn route_fee(s: &State, route: &[(usize, bool)], amount: Msat) -> Option<Msat> {
    let mut carried = amount;
    let mut fee = Msat::ZERO;
    for (pos, &(ch, forward)) in route.iter().enumerate().rev() {
        let c = &s.channels[ch];
        let available = if forward { c.balance_a } else { c.balance_b };
        if available < carried {
            return None;
        }
        if pos > 0 {
            let f = hop_fee(c, carried);
            fee = fee.checked_add(f).ok()?;
            carried = carried.checked_add(f).ok()?;
        }
    }
    Some(fee)
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
        let mut s = self.lock();
        if let Some(existing) = s.payments.get(&req.payment_hash) {
            return Ok(existing.clone());
        }
        *s.sends.entry(req.payment_hash).or_insert(0) += 1;
        if s.hang.contains(&req.payment_hash) {
            s.payments.insert(req.payment_hash, PayState::InFlight);
            s.held.insert(req.payment_hash, req.clone());
            return Ok(PayState::InFlight);
        }
        let outcome = self.execute(&mut s, req);
        s.payments.insert(req.payment_hash, outcome.clone());
        Ok(outcome)
    }

    async fn track(&self, payment_hash: &PaymentHash) -> Result<PayState, NodeError> {
        let mut s = self.lock();
        match s.payments.get(payment_hash).cloned() {
            None => Err(NodeError::NotFound),
            Some(PayState::InFlight) if !s.hang.contains(payment_hash) => {
                let Some(req) = s.held.remove(payment_hash) else {
                    return Ok(PayState::InFlight);
                };
                let outcome = self.execute(&mut s, &req);
                s.payments.insert(*payment_hash, outcome.clone());
                Ok(outcome)
            }
            Some(state) => Ok(state),
        }
    }
}
