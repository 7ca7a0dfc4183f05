//! Pathfinding and payment execution on the simulated network.
//!
//! Routes are found by exhaustive search (the graph is small, and an exhaustive search keeps the
//! choice obvious and deterministic): every simple path of at most [`MAX_HOPS`] channels is
//! checked backwards from the payee, and the cheapest one that fits is taken (ties go to fewer
//! hops, then channel order).
//!
//! Fees: a forwarding node charges the outbound fee of the channel the HTLC leaves by (base +
//! ppm of the amount it forwards, rounded up) plus the inbound fee it set on the channel the HTLC
//! arrived by (base + ppm of the amount forwarded plus the outbound fee, rounded up, either of
//! them possibly negative, as in LND 0.18). The total of a hop never goes below zero.

use oa_invoice::PaymentHash;
use oa_money::Msat;

use super::{
    FINAL_CLTV_DELTA, InvoiceState, MAX_ROUTE_CLTV, State, effective_state, failed, invoices,
};
use crate::node::{
    ChannelPolicy, FailureCode, ForwardingEvent, NodeError, PayState, RouteFeeEstimate, SendRequest,
};

/// Longest route tried, in hops.
pub const MAX_HOPS: usize = 4;

/// A route: `(channel index, direction a->b)` per hop, from the sender.
pub(super) type Route = Vec<(usize, bool)>;

/// The outbound part of a hop's fee: base plus ppm of `amount`, rounded up.
fn outbound_fee(p: &ChannelPolicy, amount: Msat) -> Msat {
    amount
        .ppm_ceil(p.fee_ppm)
        .and_then(|f| f.checked_add(p.base_fee))
        .unwrap_or(Msat::MAX)
}

/// The inbound part of a hop's fee (possibly negative): base plus ppm of `amount`, rounded up
/// (towards the higher fee, so a discount is rounded down in size).
fn inbound_fee_msat(p: &ChannelPolicy, amount: Msat) -> i128 {
    let product = i128::from(amount.as_u64()) * i128::from(p.inbound_fee_ppm);
    let proportional =
        product.div_euclid(1_000_000) + i128::from(product.rem_euclid(1_000_000) != 0);
    i128::from(p.inbound_base_fee_msat) + proportional
}

/// What a node charges to forward `amt_out` out over a channel with policy `out`, for an HTLC
/// that arrived over a channel where it set policy `inbound`: outbound fee plus inbound fee
/// (computed on the amount plus the outbound fee), never below zero.
pub fn forwarding_fee(out: &ChannelPolicy, inbound: &ChannelPolicy, amt_out: Msat) -> Msat {
    let outbound = outbound_fee(out, amt_out);
    let basis = amt_out.checked_add(outbound).unwrap_or(Msat::MAX);
    let total = i128::from(outbound.as_u64()) + inbound_fee_msat(inbound, basis);
    u64::try_from(total.max(0))
        .ok()
        .and_then(|v| Msat::new(v).ok())
        .unwrap_or(Msat::MAX)
}

/// The fee the forwarding node at position `pos` (> 0) of `route` charges to forward `carried`.
fn hop_fee_at(s: &State, route: &[(usize, bool)], pos: usize, carried: Msat) -> Msat {
    let (ch, forward) = route[pos];
    let (prev_ch, prev_forward) = route[pos - 1];
    let (_, out) = s.channels[ch].out(forward);
    // The forwarding node is the receiving side of the previous hop.
    let (_, inbound) = s.channels[prev_ch].out(!prev_forward);
    forwarding_fee(out, inbound, carried)
}

/// Why a candidate route was refused, in the order the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Refusal {
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

/// Every simple path from `at` to `dest` of at most `max_hops` channels that avoids the nodes
/// already `visited`.
pub(super) fn enumerate_paths(
    s: &State,
    at: usize,
    dest: usize,
    max_hops: usize,
    path: &mut Route,
    visited: &mut Vec<bool>,
    out: &mut Vec<Route>,
) {
    visited[at] = true;
    if at == dest {
        out.push(path.clone());
    } else if path.len() < max_hops {
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
                enumerate_paths(s, next, dest, max_hops, path, visited, out);
                path.pop();
            }
        }
    }
    visited[at] = false;
}

/// The total routing fee of `route` for `amount` and its total time lock, or why it cannot carry
/// it. Walks back from the payee: each hop carries the amount plus the fees of the hops after it,
/// and must have the sender-side balance, accept the HTLC's size, and keep the time lock in
/// bounds. The first hop is the sender's own and charges no fee.
pub(super) fn check_route(
    s: &State,
    route: &[(usize, bool)],
    amount: Msat,
    fee_limit: Msat,
) -> Result<(Msat, u32), Refusal> {
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
            let f = hop_fee_at(s, route, pos, carried);
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
    Ok((fee, cltv))
}

/// The cheapest of `routes` that fits (ties: fewer hops, then the order given), with its fee and
/// time lock; or the failure code and the reasons every route was refused.
pub(super) fn best_route(
    s: &State,
    routes: Vec<Route>,
    amount: Msat,
    fee_limit: Msat,
) -> Result<(Route, Msat, u32), (FailureCode, String)> {
    let mut best: Option<(Route, Msat, u32)> = None;
    let mut refusals = Vec::new();
    for route in routes {
        match check_route(s, &route, amount, fee_limit) {
            Ok((fee, cltv)) => {
                if best
                    .as_ref()
                    .is_none_or(|(p, f, _)| (fee, route.len()) < (*f, p.len()))
                {
                    best = Some((route, fee, cltv));
                }
            }
            Err(r) => refusals.push(r),
        }
    }
    best.ok_or_else(|| {
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
        (code, reason)
    })
}

/// Moves `amount` along `path`, from the payee back: each hop carries the amount plus the fees of
/// the hops after it; each forwarding node keeps its fee and logs the forward.
pub(super) fn apply_route(s: &mut State, path: &[(usize, bool)], amount: Msat, now_ms: u64) {
    let mut carried = amount;
    let mut forwards = Vec::new();
    for pos in (0..path.len()).rev() {
        let fee = (pos > 0).then(|| hop_fee_at(s, path, pos, carried));
        let (ch, forward) = path[pos];
        let c = &mut s.channels[ch];
        let (from, to) = if forward {
            (&mut c.balance_a, &mut c.balance_b)
        } else {
            (&mut c.balance_b, &mut c.balance_a)
        };
        *from = from.saturating_sub(carried);
        *to = to.checked_add(carried).unwrap_or(*to);
        if let Some(f) = fee {
            let node = if forward { c.a } else { c.b };
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
}

/// Every route from `src` to `dest` (simple paths of at most [`MAX_HOPS`] channels).
fn routes_between(s: &State, src: usize, dest: usize) -> Vec<Route> {
    let mut routes = Vec::new();
    enumerate_paths(
        s,
        src,
        dest,
        MAX_HOPS,
        &mut Vec::new(),
        &mut vec![false; s.nodes.len()],
        &mut routes,
    );
    routes
}

/// Executes a payment from node `src` to completion (the sim settles at once).
pub(super) fn execute(s: &mut State, src: usize, req: &SendRequest, now_ms: u64) -> PayState {
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
    let routes = routes_between(s, src, dest);
    if routes.is_empty() {
        return failed(FailureCode::NoRoute, "no path to the payee");
    }
    let (path, fee) = match best_route(s, routes, req.amount, req.fee_limit) {
        Ok((path, fee, _)) => (path, fee),
        Err((code, reason)) => return failed(code, &format!("no usable route: {reason}")),
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
    apply_route(s, &path, req.amount, now_ms);
    settle_or_fail(s, dest, &req.payment_hash, req.amount, now_ms, fee)
}

fn settle_or_fail(
    s: &mut State,
    dest: usize,
    hash: &PaymentHash,
    amount: Msat,
    now_ms: u64,
    fee: Msat,
) -> PayState {
    match invoices::settle(s, dest, hash, amount, now_ms) {
        Some(preimage) => PayState::Succeeded { preimage, fee },
        None => failed(
            FailureCode::IncorrectPaymentDetails,
            "the payee does not know this payment hash",
        ),
    }
}

/// What the cheapest route from `src` to the node with public key `dest` costs for `amount`.
pub(super) fn estimate(
    s: &State,
    src: usize,
    dest: &str,
    amount: Msat,
) -> Result<RouteFeeEstimate, NodeError> {
    let d = s
        .nodes
        .iter()
        .position(|n| n.pubkey.to_string() == dest)
        .ok_or_else(|| NodeError::Refused("the destination is not on this network".into()))?;
    if d == src {
        return Err(NodeError::Refused("the destination is our own node".into()));
    }
    if !s.nodes[d].online {
        return Err(NodeError::Refused(
            "no route: the destination is offline".into(),
        ));
    }
    let routes = routes_between(s, src, d);
    if routes.is_empty() {
        return Err(NodeError::Refused(
            "no route: no path to the destination".into(),
        ));
    }
    match best_route(s, routes, amount, Msat::MAX) {
        Ok((_, fee, time_lock_delay)) => Ok(RouteFeeEstimate {
            fee,
            time_lock_delay,
        }),
        Err((_, reason)) => Err(NodeError::Refused(format!("no route: {reason}"))),
    }
}

/// Circular routes for a rebalance: out over channel `out` (ours), through the graph without
/// touching our node again, and back in over channel `inbound` (ours).
pub(super) fn circular_routes(s: &State, me: usize, out: usize, inbound: usize) -> Vec<Route> {
    let (co, ci) = (&s.channels[out], &s.channels[inbound]);
    let out_hop = (out, co.a == me);
    let first_peer = if co.a == me { co.b } else { co.a };
    let last_peer = if ci.a == me { ci.b } else { ci.a };
    let in_hop = (inbound, ci.b == me);
    let mut middles = Vec::new();
    let mut visited = vec![false; s.nodes.len()];
    visited[me] = true;
    enumerate_paths(
        s,
        first_peer,
        last_peer,
        MAX_HOPS.saturating_sub(2),
        &mut Vec::new(),
        &mut visited,
        &mut middles,
    );
    middles
        .into_iter()
        .map(|middle| {
            let mut route = Vec::with_capacity(middle.len() + 2);
            route.push(out_hop);
            route.extend(middle);
            route.push(in_hop);
            route
        })
        .collect()
}

/// Pays our own invoice `hash` over one of `routes` (a rebalance): the cheapest that fits.
pub(super) fn execute_circular(
    s: &mut State,
    me: usize,
    routes: Vec<Route>,
    hash: &PaymentHash,
    amount: Msat,
    fee_limit: Msat,
    now_ms: u64,
) -> PayState {
    if routes.is_empty() {
        return failed(
            FailureCode::NoRoute,
            "no circular route between these channels",
        );
    }
    match best_route(s, routes, amount, fee_limit) {
        Ok((path, fee, _)) => {
            apply_route(s, &path, amount, now_ms);
            settle_or_fail(s, me, hash, amount, now_ms, fee)
        }
        Err((code, reason)) => failed(code, &format!("no usable circular route: {reason}")),
    }
}
