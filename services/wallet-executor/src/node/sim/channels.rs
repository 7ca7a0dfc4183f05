//! Our node's channel lifecycle on the simulated chain: opening, closing, and what is reported
//! about closed channels and fees.
//!
//! Opening: the funding transaction spends our confirmed wallet outputs into a 2-of-2 output of
//! the channel's capacity (plus change); the channel is pending until the funding transaction
//! has [`FUNDING_CONFIRMATIONS`], then it is listed and routes payments, with the short channel
//! id of its funding output (block, position, output). The peer must be a known node, online.
//!
//! Closing: the channel stops routing at once and its closing transaction waits in the mempool.
//! It pays each side its balance rounded down to whole satoshis (a side below the dust limit gets
//! no output; the sim charges no closing fee). A cooperative close needs the peer online and our
//! output is spendable as soon as the closing transaction confirms; a force close (ours) locks
//! our output for [`FORCE_CLOSE_CSV`] confirmations first. The channel is listed as closed once
//! its closing transaction confirms. Closing a channel again reports the same transaction.

use bitcoin::{Amount, OutPoint, TxOut};
use oa_money::Msat;

use super::{
    Channel, SimNetwork, State,
    chain::{self, FORCE_CLOSE_CSV, FUNDING_CONFIRMATIONS},
    default_policy,
};
use crate::node::{
    ChannelPoint, CloseType, ClosedChannel, ClosingChannel, FeeReport, NodeError,
    OpenChannelRequest,
};

/// Smallest channel the sim opens (LND's default `minchansize`).
pub const MIN_CHANNEL_SAT: u64 = 20_000;
/// Largest channel the sim opens (the limit without large-channel support, 2^24 - 1 sat).
pub const MAX_CHANNEL_SAT: u64 = 16_777_215;

const DAY_MS: u64 = 24 * 3600 * 1000;

/// A channel whose funding transaction has not enough confirmations yet.
pub(super) struct PendingOpen {
    pub peer: usize,
    pub capacity: Msat,
    pub push: Msat,
    /// The funding transaction (index into the chain's transactions).
    pub tx: usize,
    pub point: OutPoint,
}

/// A channel of ours being closed, or closed.
pub(super) struct Closed {
    pub chan_id: u64,
    pub peer: usize,
    pub capacity: Msat,
    /// What our side gets on chain.
    pub settled: Msat,
    pub close_type: crate::node::CloseType,
    /// The closing transaction (index into the chain's transactions).
    pub tx: usize,
}

/// A pending channel open, as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingChannel {
    pub funding_txid: String,
    pub remote_pubkey: String,
    pub capacity: Msat,
    pub confirmations: u32,
}

fn whole_sat(v: Msat, what: &str) -> Result<u64, NodeError> {
    if !v.as_u64().is_multiple_of(1_000) {
        return Err(NodeError::Refused(format!(
            "{what} must be whole satoshis (a multiple of 1000 msat)"
        )));
    }
    Ok(v.as_u64() / 1_000)
}

/// Starts opening a channel (see the module docs).
pub(super) fn open(s: &mut State, req: &OpenChannelRequest) -> Result<ChannelPoint, NodeError> {
    let me = SimNetwork::our_index(s);
    let peer = s
        .nodes
        .iter()
        .position(|n| n.pubkey.to_string() == req.remote_pubkey)
        .ok_or_else(|| NodeError::Refused("unknown peer: not a node of this network".into()))?;
    if peer == me {
        return Err(NodeError::Refused(
            "cannot open a channel to ourselves".into(),
        ));
    }
    if !s.nodes[peer].online {
        return Err(NodeError::Refused("the peer is offline".into()));
    }
    let funding_sat = whole_sat(req.local_funding, "local_funding")?;
    let push_sat = whole_sat(req.push, "push")?;
    if !(MIN_CHANNEL_SAT..=MAX_CHANNEL_SAT).contains(&funding_sat) {
        return Err(NodeError::Refused(format!(
            "the channel size must be between {MIN_CHANNEL_SAT} and {MAX_CHANNEL_SAT} sat"
        )));
    }
    if push_sat >= funding_sat {
        return Err(NodeError::Refused(
            "push must be below the funding amount".into(),
        ));
    }
    let script_pubkey = chain::funding_script(&s.nodes[me].pubkey, &s.nodes[peer].pubkey);
    let built = s.chain.spend(
        vec![TxOut {
            value: Amount::from_sat(funding_sat),
            script_pubkey,
        }],
        0,
        None,
    )?;
    let point = OutPoint {
        txid: built.txid,
        vout: 0,
    };
    s.pending_opens.push(PendingOpen {
        peer,
        capacity: req.local_funding,
        push: req.push,
        tx: built.tx,
        point,
    });
    Ok(ChannelPoint {
        funding_txid: built.txid.to_string(),
        output_index: 0,
    })
}

/// After a block: channels whose funding has enough confirmations become usable.
pub(super) fn on_block(s: &mut State) {
    let me = SimNetwork::our_index(s);
    let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut s.pending_opens)
        .into_iter()
        .partition(|p| s.chain.confirmations(p.tx) >= FUNDING_CONFIRMATIONS);
    s.pending_opens = waiting;
    for p in ready {
        let tx = &s.chain.txs[p.tx];
        let height = u64::from(tx.height.unwrap_or(s.chain.height));
        let chan_id = (height << 40) | (u64::from(tx.pos) << 16) | u64::from(p.point.vout);
        s.channels.push(Channel {
            chan_id,
            a: me,
            b: p.peer,
            capacity: p.capacity,
            balance_a: p.capacity.saturating_sub(p.push),
            balance_b: p.push,
            policy_a: default_policy(p.capacity),
            policy_b: default_policy(p.capacity),
            funding: p.point,
        });
    }
}

/// Starts closing our channel `chan_id`; closing it again reports the same transaction.
pub(super) fn close(
    s: &mut State,
    chan_id: u64,
    force: bool,
) -> Result<(ClosingChannel, bool), NodeError> {
    if let Some(c) = s.closed.iter().find(|c| c.chan_id == chan_id) {
        return Ok((
            ClosingChannel {
                closing_txid: s.chain.txs[c.tx].txid.to_string(),
            },
            false,
        ));
    }
    let me = SimNetwork::our_index(s);
    let i = s
        .channels
        .iter()
        .position(|c| c.chan_id == chan_id && (c.a == me || c.b == me))
        .ok_or(NodeError::UnknownChannel(chan_id))?;
    let c = &s.channels[i];
    let (peer, ours, theirs) = if c.a == me {
        (c.b, c.balance_a, c.balance_b)
    } else {
        (c.a, c.balance_b, c.balance_a)
    };
    if !force && !s.nodes[peer].online {
        return Err(NodeError::Refused(
            "a cooperative close needs the peer online; force close instead".into(),
        ));
    }
    let (funding, capacity) = (c.funding, c.capacity);
    let ours_sat = ours.as_u64() / 1_000;
    let theirs_sat = theirs.as_u64() / 1_000;
    let mut outputs = Vec::new();
    let settled_sat = if ours_sat >= chain::DUST_LIMIT_SAT {
        let script_pubkey = s.chain.change_script();
        outputs.push(TxOut {
            value: Amount::from_sat(ours_sat),
            script_pubkey,
        });
        ours_sat
    } else {
        0
    };
    if theirs_sat >= chain::DUST_LIMIT_SAT {
        let script_pubkey = s.chain.node_script(&s.nodes[peer].pubkey);
        outputs.push(TxOut {
            value: Amount::from_sat(theirs_sat),
            script_pubkey,
        });
    }
    let csv = if force { FORCE_CLOSE_CSV } else { 0 };
    let built = s.chain.broadcast(funding, outputs, csv);
    s.channels.remove(i);
    s.closed.push(Closed {
        chan_id,
        peer,
        capacity,
        settled: Msat::from_sat(settled_sat).unwrap_or(Msat::ZERO),
        close_type: if force {
            CloseType::LocalForce
        } else {
            CloseType::Cooperative
        },
        tx: built.tx,
    });
    Ok((
        ClosingChannel {
            closing_txid: built.txid.to_string(),
        },
        true,
    ))
}

/// Our channels whose closing transaction confirmed.
pub(super) fn closed_channels(s: &State) -> Vec<ClosedChannel> {
    s.closed
        .iter()
        .filter_map(|c| {
            let tx = &s.chain.txs[c.tx];
            tx.height.map(|close_height| ClosedChannel {
                chan_id: c.chan_id,
                remote_pubkey: s.nodes[c.peer].pubkey.to_string(),
                capacity: c.capacity,
                settled_balance: c.settled,
                close_type: c.close_type,
                closing_txid: tx.txid.to_string(),
                close_height,
            })
        })
        .collect()
}

/// Our policies and what our node earned forwarding in the last day, week and month (30 days)
/// before `now_ms`, by the sim's clock.
pub(super) fn fee_report(s: &State, now_ms: u64) -> FeeReport {
    let me = SimNetwork::our_index(s);
    let channels = s
        .channels
        .iter()
        .filter_map(|c| {
            if c.a == me {
                Some((c.chan_id, c.policy_a))
            } else if c.b == me {
                Some((c.chan_id, c.policy_b))
            } else {
                None
            }
        })
        .collect();
    let since = |days: u64| {
        let from = now_ms.saturating_sub(days.saturating_mul(DAY_MS));
        Msat::checked_sum(
            s.nodes[me]
                .forwards
                .iter()
                .filter(|e| e.timestamp_ms >= from && e.timestamp_ms <= now_ms)
                .map(|e| e.fee),
        )
        .unwrap_or(Msat::MAX)
    };
    FeeReport {
        channels,
        day_fee_sum: since(1),
        week_fee_sum: since(7),
        month_fee_sum: since(30),
    }
}

/// Channels of ours still waiting for funding confirmations.
pub(super) fn pending(s: &State) -> Vec<PendingChannel> {
    s.pending_opens
        .iter()
        .map(|p| PendingChannel {
            funding_txid: p.point.txid.to_string(),
            remote_pubkey: s.nodes[p.peer].pubkey.to_string(),
            capacity: p.capacity,
            confirmations: s.chain.confirmations(p.tx),
        })
        .collect()
}
