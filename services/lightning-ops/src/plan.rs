//! `plan`: what would change to bring the node to the policy, and why. A pure function of the
//! policy, the observed channels and what lightning-ops knows is under way ([`Known`]), so the
//! same inputs always give the same plan.
//!
//! **Fees.** For each channel the desired fee policy is the first of: the channel's own `fees`,
//! the peer group containing its peer, `fees.default`; a channel matched by none is left alone.
//! With the `proportional` strategy the rate falls linearly from `max_ppm` (our side empty) to
//! `min_ppm` (our side full): `ppm = max - floor((max - min) * local / (local + remote))`. Inbound
//! fees (`inbound_base_fee_msat`, `inbound_fee_ppm`, negative for a discount) are taken as written.
//!
//! **Rebalances.** Channels are visited in channel-id order. A channel whose local share
//! (`floor(100 * local / (local + remote))`) is outside its band gets a rebalance that brings its
//! local balance to the middle of the band, `floor(capacity * (min + max) / 200)`:
//! - below the band, liquidity comes *in* over it, *out* over the **source**: the active channel
//!   with the most local balance above its own band's top (`local - ceil(capacity * max / 100)`),
//!   or above half its capacity when it has no band; ties go to the lowest channel id;
//! - above the band, it goes *out* over it and comes back *in* over the **destination**: the
//!   active channel with the most room below its own band's bottom (`floor(capacity * min / 100)
//!   - local`), or below half its capacity when it has no band; ties to the lowest channel id;
//! - the amount is what the channel needs to reach the middle, bounded by the counterpart's
//!   excess (or room), and its fee limit is `ceil(amount * max_fee_ppm / 1e6)` from the policy's
//!   `[rebalance]` section (none without one: such a rebalance is planned but not executed).
//!
//! Each planned move is counted in the balances the later channels are judged by, so two
//! channels never both plan the same liquidity. A channel with no active counterpart (or that is
//! itself inactive) still gets its rebalance action, without a move, to say why nothing happens.
//!
//! **Open and close intents.** An open is planned while no channel to the peer is listed and no
//! open of lightning-ops to it is under way; a close while the channel is listed and is not
//! closing or closed. Channels closing, closed or named by a close intent get no policy change
//! and take no part in rebalances (their liquidity is about to leave the node).
//!
//! Inactive channels and channels with an empty side are flagged.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::policy::{FeePolicy, Policy, Strategy};

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// A forwarding policy as the executor reports and applies it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fees {
    pub base_fee_msat: u64,
    pub fee_rate_ppm: u32,
    pub min_htlc_msat: u64,
    pub max_htlc_msat: u64,
    pub time_lock_delta: u32,
    /// Inbound fee on HTLCs arriving over the channel; negative values are discounts. Left out of
    /// the JSON when zero, so a policy without inbound fees has the stored form (and executor
    /// key) it had before inbound fees existed.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub inbound_base_fee_msat: i64,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub inbound_fee_ppm: i32,
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

/// What lightning-ops knows is under way that the channel list does not show (from its own
/// action records and the executor's closed channels).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// Peers with an open of ours under way: asked of the executor, and its channel not listed
    /// yet (the funding transaction is waiting for confirmations), or its outcome in doubt.
    pub opening: BTreeSet<String>,
    /// Channels closing or closed: listed as closed by the executor, or closed by lightning-ops.
    pub closing: BTreeSet<u64>,
    /// Channels with a rebalance of lightning-ops still unfinished (in flight or in doubt): they
    /// are neither rebalanced nor a rebalance's counterpart until it ends.
    pub rebalancing: BTreeSet<u64>,
}

/// A rebalance's liquidity move: out over one of our channels, back in over another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub out_chan_id: u64,
    pub in_chan_id: u64,
    pub amount_msat: u64,
    /// `ceil(amount_msat * max_fee_ppm / 1e6)`; `None` when the policy has no `[rebalance]`.
    pub fee_limit_msat: Option<u64>,
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
        /// `None` when no counterpart can give (or take) the liquidity, or the channel is
        /// inactive; `why_not` says which.
        #[serde(rename = "move")]
        liquidity: Option<Move>,
        why_not: Option<&'static str>,
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

/// Why a rebalance has no move.
pub const NO_SOURCE: &str = "no active channel has local liquidity to spare beyond its own band";
pub const NO_DESTINATION: &str = "no active channel has room below its own band";
pub const INACTIVE_TARGET: &str = "the channel is inactive";
pub const EMPTY_TARGET: &str = "the channel has no capacity";

impl Action {
    /// The action's kind, as results and plans name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::SetPolicy { .. } => "set_policy",
            Action::Rebalance { .. } => "rebalance",
            Action::Open { .. } => "open",
            Action::Close { .. } => "close",
            Action::Flag { .. } => "flag",
        }
    }

    /// The channel it is about (`BLOCKxTXxOUTPUT`); empty for an open.
    pub fn channel_id(&self) -> &str {
        match self {
            Action::SetPolicy { channel_id, .. }
            | Action::Rebalance { channel_id, .. }
            | Action::Close { channel_id, .. }
            | Action::Flag { channel_id, .. } => channel_id,
            Action::Open { .. } => "",
        }
    }
}

fn fmt_inbound(f: &Fees) -> String {
    format!("{}/{}", f.inbound_base_fee_msat, f.inbound_fee_ppm)
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::SetPolicy {
                channel_id,
                from,
                to,
                source,
            } => {
                write!(
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
                )?;
                let no_inbound = |p: &Fees| p.inbound_base_fee_msat == 0 && p.inbound_fee_ppm == 0;
                if !(no_inbound(from) && no_inbound(to)) {
                    write!(
                        f,
                        ", inbound {} -> {} msat/ppm",
                        fmt_inbound(from),
                        fmt_inbound(to)
                    )?;
                }
                Ok(())
            }
            Action::Rebalance {
                channel_id,
                local_pct,
                min_pct,
                max_pct,
                liquidity,
                why_not,
            } => {
                write!(
                    f,
                    "rebalance {channel_id}: local side {local_pct}% is outside {min_pct}-{max_pct}%"
                )?;
                match (liquidity, why_not) {
                    (Some(m), _) => {
                        write!(
                            f,
                            ": move {} msat out over {} and back in over {}",
                            m.amount_msat,
                            self::channel_id(m.out_chan_id),
                            self::channel_id(m.in_chan_id)
                        )?;
                        match m.fee_limit_msat {
                            Some(limit) => write!(f, ", fee limit {limit} msat"),
                            None => write!(f, " (no [rebalance] budget in the policy)"),
                        }
                    }
                    (None, Some(why)) => write!(f, ": {why}"),
                    (None, None) => Ok(()),
                }
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

/// `floor(100 * local / capacity)`; 0 for an empty channel.
fn pct_of(local: u64, capacity: u64) -> u8 {
    (u128::from(local) * 100)
        .checked_div(u128::from(capacity))
        .map_or(0, |pct| u8::try_from(pct).unwrap_or(100))
}

/// `capacity * pct / 100`, floored or rounded up (never above `capacity`, as `pct <= 100`).
fn share(capacity: u64, pct: u8, round_up: bool) -> u64 {
    let product = u128::from(capacity) * u128::from(pct);
    let v = if round_up {
        product.div_ceil(100)
    } else {
        product / 100
    };
    u64::try_from(v).unwrap_or(capacity)
}

/// `ceil(amount * ppm / 1e6)`, the most a rebalance of `amount` may pay at `ppm`.
pub fn fee_limit(amount_msat: u64, ppm: u32) -> u64 {
    let v = (u128::from(amount_msat) * u128::from(ppm)).div_ceil(1_000_000);
    // At most `amount_msat` since ppm is at most 1e6 in a valid policy.
    u64::try_from(v).unwrap_or(u64::MAX)
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
        inbound_base_fee_msat: f.inbound_base_fee_msat,
        inbound_fee_ppm: f.inbound_fee_ppm,
    }
}

/// A channel as the rebalance planner sees it: capacity, the local balance after the moves
/// planned so far, its band, and whether it can take part.
struct Liquidity {
    chan_id: u64,
    capacity: u64,
    local: u64,
    band: Option<(u8, u8)>,
    usable: bool,
}

impl Liquidity {
    /// Local balance above its band's top (or half its capacity without a band).
    fn excess(&self) -> u64 {
        let top = self.band.map_or(50, |(_, hi)| hi);
        self.local.saturating_sub(share(self.capacity, top, true))
    }

    /// Room below its band's bottom (or half its capacity without a band).
    fn room(&self) -> u64 {
        let bottom = self.band.map_or(50, |(lo, _)| lo);
        share(self.capacity, bottom, false).saturating_sub(self.local)
    }
}

/// The move that brings channel `t` (index into `book`) to the middle of its band, if a
/// counterpart can take part; updates `book` with it.
fn plan_move(
    book: &mut [Liquidity],
    t: usize,
    (min_pct, max_pct): (u8, u8),
    max_fee_ppm: Option<u32>,
) -> Result<Move, &'static str> {
    if !book[t].usable {
        return Err(INACTIVE_TARGET);
    }
    let middle = u64::try_from(
        u128::from(book[t].capacity) * (u128::from(min_pct) + u128::from(max_pct)) / 200,
    )
    .unwrap_or(book[t].capacity);
    let below = book[t].local < middle;
    // What the channel needs to reach the middle (0 only for an empty channel).
    let needed = book[t].local.abs_diff(middle);
    if needed == 0 {
        return Err(EMPTY_TARGET);
    }
    // The counterpart with the most to give (or room to take); the first (lowest channel id)
    // on a tie.
    let mut best: Option<(usize, u64)> = None;
    for (i, c) in book.iter().enumerate() {
        if i == t || !c.usable {
            continue;
        }
        let available = if below { c.excess() } else { c.room() };
        if available > 0 && best.is_none_or(|(_, b)| available > b) {
            best = Some((i, available));
        }
    }
    let Some((other, available)) = best else {
        return Err(if below { NO_SOURCE } else { NO_DESTINATION });
    };
    let amount_msat = needed.min(available);
    let (out, inbound) = if below { (other, t) } else { (t, other) };
    // Neither saturates: the amount is at most the out channel's local balance (its excess, or
    // the target's surplus) and at most the in channel's remote balance (its room, or the
    // target's need).
    book[out].local = book[out].local.saturating_sub(amount_msat);
    book[inbound].local = book[inbound].local.saturating_add(amount_msat);
    Ok(Move {
        out_chan_id: book[out].chan_id,
        in_chan_id: book[inbound].chan_id,
        amount_msat,
        fee_limit_msat: max_fee_ppm.map(|ppm| fee_limit(amount_msat, ppm)),
    })
}

/// The plan for `observed` under `policy` (a validated policy), with nothing known under way.
pub fn plan(policy: &Policy, observed: &[Observed]) -> Vec<Action> {
    plan_with(policy, observed, &Known::default())
}

/// The plan for `observed` under `policy` (a validated policy), given what is under way.
pub fn plan_with(policy: &Policy, observed: &[Observed], known: &Known) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut channels: Vec<&Observed> = observed
        .iter()
        .filter(|c| !known.closing.contains(&c.chan_id))
        .collect();
    channels.sort_by_key(|c| c.chan_id);
    let band = |id: &str| {
        policy
            .channels
            .iter()
            .find(|p| p.channel_id == id)
            .and_then(|p| p.local_balance_min_pct.zip(p.local_balance_max_pct))
    };
    let to_close: BTreeSet<&str> = policy
        .intents
        .close
        .iter()
        .map(|c| c.channel_id.as_str())
        .collect();
    let mut book: Vec<Liquidity> = channels
        .iter()
        .map(|c| Liquidity {
            chan_id: c.chan_id,
            capacity: c.local_balance_msat.saturating_add(c.remote_balance_msat),
            local: c.local_balance_msat,
            band: band(&channel_id(c.chan_id)),
            usable: c.active
                && !known.rebalancing.contains(&c.chan_id)
                && !to_close.contains(channel_id(c.chan_id).as_str()),
        })
        .collect();
    let max_fee_ppm = policy.rebalance.as_ref().map(|r| r.max_fee_ppm);
    for (n, c) in channels.iter().enumerate() {
        let id = channel_id(c.chan_id);
        let closing_soon = to_close.contains(id.as_str());
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
        if let Some((fees, source)) = chosen.filter(|_| !closing_soon) {
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
        if let Some((min_pct, max_pct)) = book[n].band
            && !known.rebalancing.contains(&c.chan_id)
            && !closing_soon
        {
            let pct = pct_of(book[n].local, book[n].capacity);
            if pct < min_pct || pct > max_pct {
                let planned = plan_move(&mut book, n, (min_pct, max_pct), max_fee_ppm);
                actions.push(Action::Rebalance {
                    channel_id: id.clone(),
                    local_pct: pct,
                    min_pct,
                    max_pct,
                    liquidity: planned.ok(),
                    why_not: planned.err(),
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
        if !observed.iter().any(|c| c.remote_pubkey == o.peer) && !known.opening.contains(&o.peer) {
            actions.push(Action::Open {
                peer: o.peer.clone(),
                capacity_sat: o.capacity_sat,
            });
        }
    }
    for cl in &policy.intents.close {
        if channels
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `(chan_id, capacity, local, band, usable)` per channel.
    type Entry = (u64, u64, u64, Option<(u8, u8)>, bool);

    fn book(entries: &[Entry]) -> Vec<Liquidity> {
        entries
            .iter()
            .map(|&(chan_id, capacity, local, band, usable)| Liquidity {
                chan_id,
                capacity,
                local,
                band,
                usable,
            })
            .collect()
    }

    #[test]
    fn a_channel_below_its_band_is_filled_to_the_middle_from_the_largest_excess() {
        // Target 1: capacity 1000, local 100, band 40-60: middle 500, needs 400.
        // 2: no band, capacity 1000, local 800: excess 800 - 500 = 300.
        // 3: band 0-70, capacity 1000, local 900: excess 900 - 700 = 200.
        let mut b = book(&[
            (1, 1000, 100, Some((40, 60)), true),
            (2, 1000, 800, None, true),
            (3, 1000, 900, Some((0, 70)), true),
        ]);
        let m = plan_move(&mut b, 0, (40, 60), Some(500)).unwrap();
        // Bounded by the source's excess: 300; fee limit ceil(300 * 500 / 1e6) = 1.
        assert_eq!(
            m,
            Move {
                out_chan_id: 2,
                in_chan_id: 1,
                amount_msat: 300,
                fee_limit_msat: Some(1)
            }
        );
        assert_eq!((b[0].local, b[1].local), (400, 500));
    }

    #[test]
    fn a_channel_above_its_band_is_emptied_to_the_middle_into_the_most_room_ties_to_the_lowest_id()
    {
        // Target 7: capacity 2000, local 1900, band 20-40: middle 600, surplus 1300.
        // 5 and 6: no band, capacity 1000, local 0: room 500 each; the tie goes to 5.
        // 8: inactive, room 1000, not eligible.
        let mut b = book(&[
            (5, 1000, 0, None, true),
            (6, 1000, 0, None, true),
            (7, 2000, 1900, Some((20, 40)), true),
            (8, 2000, 0, None, false),
        ]);
        let m = plan_move(&mut b, 2, (20, 40), None).unwrap();
        assert_eq!(
            m,
            Move {
                out_chan_id: 7,
                in_chan_id: 5,
                amount_msat: 500,
                fee_limit_msat: None
            }
        );
        // The next move sees 5 full to its half: 6 is the destination now.
        let m = plan_move(&mut b, 2, (20, 40), None).unwrap();
        assert_eq!((m.in_chan_id, m.amount_msat), (6, 500));
        assert_eq!(plan_move(&mut b, 2, (20, 40), None), Err(NO_DESTINATION));
    }

    #[test]
    fn no_counterpart_or_an_inactive_target_gives_no_move() {
        let mut b = book(&[
            (1, 1000, 0, Some((40, 60)), true),
            (2, 1000, 500, None, true),
        ]);
        assert_eq!(plan_move(&mut b, 0, (40, 60), Some(1)), Err(NO_SOURCE));
        let mut b = book(&[
            (1, 1000, 0, Some((40, 60)), false),
            (2, 1000, 900, None, true),
        ]);
        assert_eq!(
            plan_move(&mut b, 0, (40, 60), Some(1)),
            Err(INACTIVE_TARGET)
        );
    }

    #[test]
    fn fee_limits_round_up() {
        assert_eq!(fee_limit(1_000_000, 1), 1);
        assert_eq!(fee_limit(1_000_001, 1), 2);
        assert_eq!(fee_limit(0, 500), 0);
        assert_eq!(fee_limit(10_000_000_000, 200), 2_000_000);
    }
}
