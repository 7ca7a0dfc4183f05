//! The withdrawal throttle: how hard Hydra's liabilities press on the node's liquidity, and what
//! that does to withdrawals.
//!
//! - **Liabilities** are what Hydra may have to pay out soon: the agents' balances (posted
//!   credits minus posted debits of every `agent:<id>:balance` account) plus the caps reserved by
//!   open credit envelopes.
//! - **Liquidity** is what the node can pay with: its channels' local balance (`GetInfo`) plus
//!   its on-chain wallet's confirmed balance (`WalletBalance`).
//! - `ratio_bps = floor(liabilities × 10 000 / liquidity)` (an empty node with liabilities is at
//!   the cap, `u32::MAX`; no liabilities is 0).
//!
//! Posture (thresholds are configuration, in integer basis points, `delay_bps <= halt_bps`):
//!
//! | condition | posture | reason code | new withdrawals |
//! |---|---|---|---|
//! | the executor did not answer | halted | `LIQUIDITY_UNKNOWN` | refused, `503 WITHDRAWALS_HALTED` |
//! | `ratio_bps >= halt_bps` | halted | `LIQUIDITY_HALT` | refused, `503 WITHDRAWALS_HALTED` |
//! | `ratio_bps >= delay_bps` | delayed | `LIQUIDITY_TIGHT` | queued: paid at `now + delay` unless halted then |
//! | otherwise | normal | `LIQUIDITY_OK` | paid at once |
//!
//! A queued withdrawal that comes due while withdrawals are halted is pushed back by another
//! delay; the reservation of its amount stays, so the agent cannot spend it twice meanwhile.
//! Every comparison is on integers; the rule is a pure function ([`judge`]) tested at each edge.

use std::time::Duration;

use oa_proto::hydra;

/// Highest threshold accepted in configuration: 100 000 bps is liabilities ten times the
/// liquidity, beyond any sensible setting (a ratio above 10 000 bps is already insolvent if
/// everyone withdrew).
pub const MAX_THRESHOLD_BPS: u32 = 100_000;

pub const NORMAL: &str = "normal";
pub const DELAYED: &str = "delayed";
pub const HALTED: &str = "halted";

pub const LIQUIDITY_OK: &str = "LIQUIDITY_OK";
pub const LIQUIDITY_TIGHT: &str = "LIQUIDITY_TIGHT";
pub const LIQUIDITY_HALT: &str = "LIQUIDITY_HALT";
pub const LIQUIDITY_UNKNOWN: &str = "LIQUIDITY_UNKNOWN";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// At or above this ratio, withdrawals are delayed.
    pub delay_bps: u32,
    /// At or above this ratio, withdrawals are halted.
    pub halt_bps: u32,
    /// How long a delayed withdrawal waits.
    pub delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posture {
    Normal,
    Delayed,
    Halted,
}

impl Posture {
    pub fn as_str(self) -> &'static str {
        match self {
            Posture::Normal => NORMAL,
            Posture::Delayed => DELAYED,
            Posture::Halted => HALTED,
        }
    }
}

/// What the node can pay with, as the executor reported it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Liquidity {
    pub channel_local_msat: u64,
    pub onchain_confirmed_msat: u64,
}

/// The throttle as judged now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttle {
    pub posture: Posture,
    pub reason_code: &'static str,
    pub agent_balances_msat: u64,
    pub envelope_reservations_msat: u64,
    pub liabilities_msat: u64,
    /// `None` when the executor did not answer.
    pub liquidity: Option<Liquidity>,
    pub liquidity_msat: u64,
    pub ratio_bps: u32,
    pub why: String,
}

/// `floor(liabilities × 10 000 / liquidity)`, capped at `u32::MAX`.
pub fn ratio_bps(liabilities_msat: u64, liquidity_msat: u64) -> u32 {
    if liabilities_msat == 0 {
        return 0;
    }
    if liquidity_msat == 0 {
        return u32::MAX;
    }
    let r = u128::from(liabilities_msat) * 10_000 / u128::from(liquidity_msat);
    u32::try_from(r).unwrap_or(u32::MAX)
}

/// Judges the posture (see the module docs).
pub fn judge(
    config: &ThrottleConfig,
    agent_balances_msat: u64,
    envelope_reservations_msat: u64,
    liquidity: Option<Liquidity>,
) -> Throttle {
    let liabilities = agent_balances_msat.saturating_add(envelope_reservations_msat);
    let liquidity_msat = liquidity.map_or(0, |l| {
        l.channel_local_msat
            .saturating_add(l.onchain_confirmed_msat)
    });
    let ratio = ratio_bps(liabilities, liquidity_msat);
    let (posture, reason_code, why) = match liquidity {
        None => (
            Posture::Halted,
            LIQUIDITY_UNKNOWN,
            "the executor did not report the node's liquidity; withdrawals wait until it does"
                .to_owned(),
        ),
        Some(_) if ratio >= config.halt_bps => (
            Posture::Halted,
            LIQUIDITY_HALT,
            format!(
                "liabilities of {liabilities} msat are {ratio} bps of liquidity ({liquidity_msat} msat), at or above the {} bps halt threshold",
                config.halt_bps
            ),
        ),
        Some(_) if ratio >= config.delay_bps => (
            Posture::Delayed,
            LIQUIDITY_TIGHT,
            format!(
                "liabilities of {liabilities} msat are {ratio} bps of liquidity ({liquidity_msat} msat), at or above the {} bps delay threshold: withdrawals wait {} s",
                config.delay_bps,
                config.delay.as_secs()
            ),
        ),
        Some(_) => (
            Posture::Normal,
            LIQUIDITY_OK,
            format!(
                "liabilities of {liabilities} msat are {ratio} bps of liquidity ({liquidity_msat} msat), under the {} bps delay threshold",
                config.delay_bps
            ),
        ),
    };
    Throttle {
        posture,
        reason_code,
        agent_balances_msat,
        envelope_reservations_msat,
        liabilities_msat: liabilities,
        liquidity,
        liquidity_msat,
        ratio_bps: ratio,
        why,
    }
}

impl Throttle {
    pub fn to_proto(
        &self,
        config: &ThrottleConfig,
        queued: u64,
        queued_msat: u64,
    ) -> hydra::WithdrawThrottle {
        hydra::WithdrawThrottle {
            state: self.posture.as_str().into(),
            reason_code: self.reason_code.into(),
            liabilities_msat: self.liabilities_msat,
            agent_balances_msat: self.agent_balances_msat,
            envelope_reservations_msat: self.envelope_reservations_msat,
            liquidity_msat: self.liquidity_msat,
            channel_local_msat: self.liquidity.map_or(0, |l| l.channel_local_msat),
            onchain_confirmed_msat: self.liquidity.map_or(0, |l| l.onchain_confirmed_msat),
            ratio_bps: self.ratio_bps,
            delay_bps: config.delay_bps,
            halt_bps: config.halt_bps,
            delay_ms: u64::try_from(config.delay.as_millis()).unwrap_or(u64::MAX),
            queued_withdrawals: queued,
            queued_msat,
            why: self.why.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            delay_bps: 5_000,
            halt_bps: 8_000,
            delay: Duration::from_secs(600),
        }
    }

    fn node(local: u64, onchain: u64) -> Option<Liquidity> {
        Some(Liquidity {
            channel_local_msat: local,
            onchain_confirmed_msat: onchain,
        })
    }

    #[test]
    fn each_threshold_is_inclusive_and_exact() {
        let c = config();
        // Liquidity 10 000 msat (6 000 in channels + 4 000 on chain).
        let cases = [
            (0, 0, Posture::Normal, LIQUIDITY_OK, 0),
            (4_999, 0, Posture::Normal, LIQUIDITY_OK, 4_999),
            // 5 000 bps exactly: delayed (inclusive), split between balances and envelopes.
            (3_000, 2_000, Posture::Delayed, LIQUIDITY_TIGHT, 5_000),
            (7_999, 0, Posture::Delayed, LIQUIDITY_TIGHT, 7_999),
            (8_000, 0, Posture::Halted, LIQUIDITY_HALT, 8_000),
            (20_000, 0, Posture::Halted, LIQUIDITY_HALT, 20_000),
        ];
        for (balances, envelopes, posture, reason, ratio) in cases {
            let t = judge(&c, balances, envelopes, node(6_000, 4_000));
            assert_eq!(
                (t.posture, t.reason_code, t.ratio_bps),
                (posture, reason, ratio),
                "{balances} + {envelopes}: {}",
                t.why
            );
            assert_eq!(t.liabilities_msat, balances + envelopes);
            assert_eq!(t.liquidity_msat, 10_000);
        }
        // The comparison is on the floored ratio: 4 999.9 bps is still under 5 000.
        let t = judge(&c, 49_999, 0, node(100_000, 0));
        assert_eq!((t.ratio_bps, t.posture), (4_999, Posture::Normal));
    }

    #[test]
    fn an_unknown_or_empty_node_halts_and_no_liabilities_never_do() {
        let c = config();
        let t = judge(&c, 0, 0, None);
        assert_eq!(
            (t.posture, t.reason_code),
            (Posture::Halted, LIQUIDITY_UNKNOWN)
        );
        let t = judge(&c, 1, 0, node(0, 0));
        assert_eq!(
            (t.posture, t.reason_code, t.ratio_bps),
            (Posture::Halted, LIQUIDITY_HALT, u32::MAX)
        );
        let t = judge(&c, 0, 0, node(0, 0));
        assert_eq!((t.posture, t.ratio_bps), (Posture::Normal, 0));
        // No overflow at the extremes.
        let t = judge(&c, u64::MAX, u64::MAX, node(u64::MAX, u64::MAX));
        assert_eq!(t.ratio_bps, 10_000);
        assert_eq!(ratio_bps(u64::MAX, 1), u32::MAX);
    }
}
