//! `plan`: what would change to bring the node to the policy, and why. A pure function of the
//! policy and the observed channels, so the same inputs always give the same plan.
//!
//! For each channel the desired fee policy is the first of: the channel's own `fees`, the peer
//! group containing its peer, `fees.default`; a channel matched by none is left alone. With the
//! `proportional` strategy the rate falls linearly from `max_ppm` (our side empty) to `min_ppm`
//! (our side full): `ppm = max - floor((max - min) * local / (local + remote))`. Channels outside
//! their balance band get a rebalance action; inactive channels and channels with an empty side
//! are flagged; open and close intents become actions unless already done.

use serde::{Deserialize, Serialize};

use crate::policy::{FeePolicy, Policy, Strategy};

/// A forwarding policy as the executor reports and applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fees {
    pub base_fee_msat: u64,
    pub fee_rate_ppm: u32,
    pub min_htlc_msat: u64,
    pub max_htlc_msat: u64,
    pub time_lock_delta: u32,
}

/// A channel as observed through the wallet-executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub chan_id: u64,
    pub remote_pubkey: String,
    pub local_balance_msat: u64,
    pub remote_balance_msat: u64,
    pub active: bool,
    pub local_policy: Fees,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    SetPolicy {
        channel_id: String,
        from: Fees,
        to: Fees,
        source: String,
    },
    Rebalance {
        channel_id: String,
        local_pct: u8,
        min_pct: u8,
        max_pct: u8,
    },
    Open {
        peer: String,
        capacity_sat: u64,
    },
    Close {
        channel_id: String,
        force: bool,
    },
    Flag {
        channel_id: String,
        flag: &'static str,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::SetPolicy {
                channel_id,
                from,
                to,
                source,
            } => write!(
                f,
                "set policy {channel_id} ({source}): base {} -> {} msat, rate {} -> {} ppm, htlc {}..{} -> {}..{} msat, cltv {} -> {}",
                from.base_fee_msat,
                to.base_fee_msat,
                from.fee_rate_ppm,
                to.fee_rate_ppm,
                from.min_htlc_msat,
                from.max_htlc_msat,
                to.min_htlc_msat,
                to.max_htlc_msat,
                from.time_lock_delta,
                to.time_lock_delta
            ),
            Action::Rebalance {
                channel_id,
                local_pct,
                min_pct,
                max_pct,
            } => {
                write!(
                    f,
                    "rebalance {channel_id}: local side {local_pct}% is outside {min_pct}-{max_pct}%"
                )
            }
            Action::Open { peer, capacity_sat } => {
                write!(f, "open a {capacity_sat} sat channel to {peer}")
            }
            Action::Close { channel_id, force } => write!(
                f,
                "close {channel_id}{}",
                if *force { " (force)" } else { "" }
            ),
            Action::Flag { channel_id, flag } => write!(f, "flag {channel_id}: {flag}"),
        }
    }
}

/// `block x tx x output`, as operators write channel ids.
pub fn channel_id(chan_id: u64) -> String {
    format!(
        "{}x{}x{}",
        chan_id >> 40,
        (chan_id >> 16) & 0xff_ffff,
        chan_id & 0xffff
    )
}

fn local_pct(c: &Observed) -> u8 {
    let total = u128::from(c.local_balance_msat) + u128::from(c.remote_balance_msat);
    (u128::from(c.local_balance_msat) * 100)
        .checked_div(total)
        .map_or(0, |pct| u8::try_from(pct).unwrap_or(100))
}

fn desired(f: &FeePolicy, c: &Observed) -> Fees {
    let fee_rate_ppm = match f.strategy {
        Strategy::Fixed => f.fee_ppm.unwrap_or(0),
        Strategy::Proportional => {
            let (lo, hi) = (f.min_ppm.unwrap_or(0), f.max_ppm.unwrap_or(0));
            let total = u128::from(c.local_balance_msat) + u128::from(c.remote_balance_msat);
            // An empty channel counts as our side empty: the highest rate.
            let drop = (u128::from(hi.saturating_sub(lo)) * u128::from(c.local_balance_msat))
                .checked_div(total)
                .unwrap_or(0);
            hi.saturating_sub(u32::try_from(drop).unwrap_or(u32::MAX))
        }
    };
    Fees {
        base_fee_msat: f.base_fee_msat,
        fee_rate_ppm,
        min_htlc_msat: f.min_htlc_msat,
        max_htlc_msat: f.max_htlc_msat,
        time_lock_delta: f.time_lock_delta,
    }
}

/// The plan for `observed` under `policy` (a validated policy).
pub fn plan(policy: &Policy, observed: &[Observed]) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut channels: Vec<&Observed> = observed.iter().collect();
    channels.sort_by_key(|c| c.chan_id);
    for c in &channels {
        let id = channel_id(c.chan_id);
        let own = policy.channels.iter().find(|p| p.channel_id == id);
        let chosen = own
            .and_then(|p| p.fees.as_ref().map(|f| (f, "channel".to_owned())))
            .or_else(|| {
                policy
                    .fees
                    .groups
                    .iter()
                    .find(|g| g.peers.contains(&c.remote_pubkey))
                    .map(|g| (&g.fees, format!("group:{}", g.name)))
            })
            .or_else(|| {
                policy
                    .fees
                    .default
                    .as_ref()
                    .map(|f| (f, "default".to_owned()))
            });
        if let Some((fees, source)) = chosen {
            let to = desired(fees, c);
            if to != c.local_policy {
                actions.push(Action::SetPolicy {
                    channel_id: id.clone(),
                    from: c.local_policy,
                    to,
                    source,
                });
            }
        }
        if let Some(p) = own
            && let (Some(min_pct), Some(max_pct)) =
                (p.local_balance_min_pct, p.local_balance_max_pct)
        {
            let pct = local_pct(c);
            if pct < min_pct || pct > max_pct {
                actions.push(Action::Rebalance {
                    channel_id: id.clone(),
                    local_pct: pct,
                    min_pct,
                    max_pct,
                });
            }
        }
        if !c.active {
            actions.push(Action::Flag {
                channel_id: id.clone(),
                flag: "inactive",
            });
        }
        if c.local_balance_msat == 0 || c.remote_balance_msat == 0 {
            actions.push(Action::Flag {
                channel_id: id,
                flag: "depleted_on_one_side",
            });
        }
    }
    for o in &policy.intents.open {
        if !observed.iter().any(|c| c.remote_pubkey == o.peer) {
            actions.push(Action::Open {
                peer: o.peer.clone(),
                capacity_sat: o.capacity_sat,
            });
        }
    }
    for cl in &policy.intents.close {
        if observed
            .iter()
            .any(|c| channel_id(c.chan_id) == cl.channel_id)
        {
            actions.push(Action::Close {
                channel_id: cl.channel_id.clone(),
                force: cl.force,
            });
        }
    }
    actions
}
