//! Underwriting: the credit Hydra offers an agent, from the agent's history. A pure function of
//! its inputs (no clock, no randomness), so an offer can be recomputed and audited.
//!
//! The rule (all integer arithmetic on msat and basis points; every division rounds down unless
//! named otherwise):
//! 1. **Weighted losses.** Each past default counts its lost amount halved once per full
//!    `loss_half_life_days` of age: `amount >> (age_days / half_life)`. A loss older than 63
//!    half-lives counts zero.
//! 2. **Limit.** `starter_limit + settled_volume × volume_share_bps / 10 000`, capped at
//!    `max_limit`; minus `loss_multiplier × weighted_losses`; minus the agent's open exposure (the
//!    caps of its open envelopes); never below zero.
//! 3. **Fee.** `base_fee_bps + loss_fee_bps_per_pct × loss_pct`, capped at `max_fee_bps`, where
//!    `loss_pct = 100 × weighted_losses / max(settled_volume, starter_limit)` (whole percent).
//! 4. **Offer.** The offered cap is `min(requested cap, limit)`; a limit of zero is a denial
//!    (`CREDIT_LIMIT_EXHAUSTED`). The fee is `ceil(cap × fee_bps / 10 000)`, due at settlement.

use oa_money::{MoneyError, Msat};
use serde::Serialize;

/// One past default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Loss {
    pub amount: Msat,
    pub age_days: u32,
}

/// What Hydra knows about an agent's credit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct History {
    /// What the agent's settled envelopes paid out, in total.
    pub settled_volume: Msat,
    pub settled_count: u64,
    pub losses: Vec<Loss>,
    /// Caps of the agent's open envelopes.
    pub open_exposure: Msat,
}

/// The knobs of the rule (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Terms {
    pub starter_limit: Msat,
    pub volume_share_bps: u32,
    pub max_limit: Msat,
    pub loss_half_life_days: u32,
    pub loss_multiplier: u32,
    pub base_fee_bps: u32,
    pub loss_fee_bps_per_pct: u32,
    pub max_fee_bps: u32,
}

impl Default for Terms {
    /// 100k sat to start, +10 % of settled volume, at most 0.1 BTC; losses halve every 30 days
    /// and weigh double; 1 % fee plus 0.5 % per percent of weighted losses, at most 20 %.
    fn default() -> Self {
        Terms {
            starter_limit: Msat::new(100_000_000).unwrap_or(Msat::ZERO),
            volume_share_bps: 1_000,
            max_limit: Msat::new(10_000_000_000).unwrap_or(Msat::ZERO),
            loss_half_life_days: 30,
            loss_multiplier: 2,
            base_fee_bps: 100,
            loss_fee_bps_per_pct: 50,
            max_fee_bps: 2_000,
        }
    }
}

/// How an offer was reached, for the receipt and the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Offer {
    pub weighted_losses: Msat,
    pub limit: Msat,
    pub cap: Msat,
    pub fee_bps: u32,
    pub fee: Msat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("the agent has no credit left (limit {limit} msat after losses and open envelopes)")]
    LimitExhausted { limit: Msat },
    #[error("amount arithmetic overflowed")]
    Overflow,
}

impl Denial {
    pub fn reason_code(&self) -> &'static str {
        match self {
            Denial::LimitExhausted { .. } => "CREDIT_LIMIT_EXHAUSTED",
            Denial::Overflow => "AMOUNT_OUT_OF_RANGE",
        }
    }
}

impl From<MoneyError> for Denial {
    fn from(_: MoneyError) -> Self {
        Denial::Overflow
    }
}

fn mul_div(a: Msat, num: u64, den: u64) -> Result<Msat, MoneyError> {
    let v = u128::from(a.as_u64()) * u128::from(num) / u128::from(den.max(1));
    Msat::new(u64::try_from(v).map_err(|_| MoneyError::AboveSupply)?)
}

/// Weighted losses (rule 1).
pub fn weighted_losses(terms: &Terms, losses: &[Loss]) -> Result<Msat, MoneyError> {
    let half_life = terms.loss_half_life_days.max(1);
    Msat::checked_sum(losses.iter().map(|l| {
        let halvings = l.age_days / half_life;
        if halvings > 63 {
            Msat::ZERO
        } else {
            // Shifting right only shrinks a valid amount.
            Msat::new(l.amount.as_u64() >> halvings).unwrap_or(Msat::ZERO)
        }
    }))
}

/// The offer for `requested` credit (rules 2-4).
pub fn offer(terms: &Terms, history: &History, requested: Msat) -> Result<Offer, Denial> {
    let weighted = weighted_losses(terms, &history.losses)?;
    let grown = terms.starter_limit.checked_add(mul_div(
        history.settled_volume,
        u64::from(terms.volume_share_bps),
        10_000,
    )?)?;
    let penalty = mul_div(weighted, u64::from(terms.loss_multiplier), 1)?;
    let limit = grown
        .min(terms.max_limit)
        .saturating_sub(penalty)
        .saturating_sub(history.open_exposure);
    if limit.is_zero() {
        return Err(Denial::LimitExhausted { limit });
    }
    let denominator = history.settled_volume.max(terms.starter_limit).as_u64();
    let loss_pct = u128::from(weighted.as_u64()) * 100 / u128::from(denominator.max(1));
    let fee_bps = u128::from(terms.base_fee_bps)
        .saturating_add(u128::from(terms.loss_fee_bps_per_pct).saturating_mul(loss_pct))
        .min(u128::from(terms.max_fee_bps));
    let fee_bps = u32::try_from(fee_bps).unwrap_or(terms.max_fee_bps);
    let cap = requested.min(limit);
    let fee = u128::from(cap.as_u64()) * u128::from(fee_bps);
    let fee = Msat::new(u64::try_from(fee.div_ceil(10_000)).map_err(|_| Denial::Overflow)?)?;
    Ok(Offer {
        weighted_losses: weighted,
        limit,
        cap,
        fee_bps,
        fee,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: u64) -> Msat {
        Msat::new(v).unwrap()
    }

    /// Golden cases: the inputs and the outputs worked by hand from the module's rule.
    #[test]
    fn offers_follow_the_rule_with_hand_worked_values() {
        let t = Terms::default();
        // A new agent: limit = starter 100 000 000; fee 100 bps; 50 000 000 requested.
        // fee = ceil(50 000 000 × 100 / 10 000) = 500 000.
        let o = offer(&t, &History::default(), m(50_000_000)).unwrap();
        assert_eq!(
            o,
            Offer {
                weighted_losses: Msat::ZERO,
                limit: m(100_000_000),
                cap: m(50_000_000),
                fee_bps: 100,
                fee: m(500_000),
            }
        );
        // Settled 2 000 000 000, one loss of 40 000 000 aged 65 days (2 half-lives -> 10 000 000),
        // open exposure 30 000 000:
        // limit = 100 000 000 + 200 000 000 - 2 × 10 000 000 - 30 000 000 = 250 000 000;
        // loss_pct = 100 × 10 000 000 / 2 000 000 000 = 0 (0.5 % rounds down) -> 100 bps.
        // Requested 300 000 000 is cut to the limit; fee = 250 000 000 × 100 / 10 000 = 2 500 000.
        let h = History {
            settled_volume: m(2_000_000_000),
            settled_count: 40,
            losses: vec![Loss {
                amount: m(40_000_000),
                age_days: 65,
            }],
            open_exposure: m(30_000_000),
        };
        let o = offer(&t, &h, m(300_000_000)).unwrap();
        assert_eq!(o.weighted_losses, m(10_000_000));
        assert_eq!(o.limit, m(250_000_000));
        assert_eq!(o.cap, m(250_000_000));
        assert_eq!(o.fee_bps, 100);
        assert_eq!(o.fee, m(2_500_000));
        // A fresh loss of 12 000 000 (age 0) and one of 8 000 000 aged 29 days (no halving yet):
        // weighted 20 000 000; limit = 100 000 000 + 20 000 000 (10 % of 200 000 000 settled)
        // - 40 000 000 = 80 000 000; loss_pct = 100 × 20 000 000 / 200 000 000 = 10 ->
        // 100 + 50 × 10 = 600 bps; requested 3 333 fee = ceil(3 333 × 600 / 10 000) = ceil(199.98) = 200.
        let h = History {
            settled_volume: m(200_000_000),
            settled_count: 3,
            losses: vec![
                Loss {
                    amount: m(12_000_000),
                    age_days: 0,
                },
                Loss {
                    amount: m(8_000_000),
                    age_days: 29,
                },
            ],
            open_exposure: Msat::ZERO,
        };
        let o = offer(&t, &h, m(3_333)).unwrap();
        assert_eq!((o.limit, o.fee_bps, o.fee), (m(80_000_000), 600, m(200)));
        // Heavy losses: the fee is capped at 2 000 bps, and the limit runs out.
        let h = History {
            losses: vec![Loss {
                amount: m(60_000_000),
                age_days: 1,
            }],
            ..History::default()
        };
        let err = offer(&t, &h, m(1)).unwrap_err();
        assert_eq!(err.reason_code(), "CREDIT_LIMIT_EXHAUSTED");
        let h = History {
            losses: vec![Loss {
                amount: m(40_000_000),
                age_days: 1,
            }],
            ..History::default()
        };
        // loss_pct = 40 -> 100 + 2 000 = 2 100, capped at 2 000; limit 100 M - 80 M = 20 M.
        let o = offer(&t, &h, m(30_000_000)).unwrap();
        assert_eq!(
            (o.limit, o.cap, o.fee_bps),
            (m(20_000_000), m(20_000_000), 2_000)
        );
    }

    #[test]
    fn old_losses_fade_and_the_limit_is_capped() {
        let t = Terms::default();
        let loss = |age_days| Loss {
            amount: m(64_000_000),
            age_days,
        };
        let w = |age| weighted_losses(&t, &[loss(age)]).unwrap().as_u64();
        assert_eq!(
            [w(0), w(30), w(59), w(60), w(180), w(30 * 64)],
            [64_000_000, 32_000_000, 32_000_000, 16_000_000, 1_000_000, 0]
        );
        let rich = History {
            settled_volume: Msat::MAX,
            ..History::default()
        };
        assert_eq!(offer(&t, &rich, Msat::MAX).unwrap().limit, t.max_limit);
    }
}
