//! Warranty pricing: a deterministic price in two parts, from the amount, the verifiability
//! class, the independence tier, the agent's verified share and its claim history.
//!
//! **Verification fee** (what verifying at the tier costs; it depends on the tier only):
//! `fee = tier_base_msat + ceil(amount * tier_ppm / 1e6)`
//!
//! | tier | base msat | ppm of the amount |
//! |---|---|---|
//! | objective | 1 000 | 100 |
//! | heterogeneous | 10 000 | 1 000 |
//! | adjudicated | 50 000 | 5 000 |
//! | human | 200 000 | 10 000 |
//!
//! **Liability premium** (what carrying the risk costs; it depends on the class and the agent):
//! `premium_bps = min(MAX_PREMIUM_BPS, ceil(class_bps * experience_ppm * claims_ppm / 1e12))`
//! and `premium = ceil(coverage * premium_bps / 10 000)`, where
//!
//! - `class_bps`: objective 50, subjective 300, low 1 000;
//! - `experience_ppm` = `2e6 - verified_share_ppm` with at least [`MIN_RECORD`] decided
//!   verifications (a perfect record is 1.0x, half failed 1.5x, all failed 2.0x), or
//!   [`NEW_AGENT_PPM`] (1.25x) with fewer;
//! - `claims_ppm` = `1e6 + 100 000 * min(claims, 10)` (each paid claim +10%, at most +100%).
//!
//! All arithmetic is in integers (u128 intermediates); every rounding is up, in the insurer's
//! favour.

use oa_money::Msat;

use crate::model::{Class, Tier};

/// Decided verifications before the verified share sets the experience factor.
pub const MIN_RECORD: u64 = 5;
/// The experience factor of an agent with too short a record.
pub const NEW_AGENT_PPM: u32 = 1_250_000;
/// Paid claims beyond this add nothing more.
pub const MAX_CLAIMS_LOADING: u64 = 10;
/// Loading per paid claim.
pub const CLAIM_LOADING_PPM: u64 = 100_000;
/// The premium never exceeds half the coverage.
pub const MAX_PREMIUM_BPS: u32 = 5_000;

/// `(base msat, ppm of the amount)` of the verification fee per tier.
pub fn tier_fee(tier: Tier) -> (u64, u64) {
    match tier {
        Tier::Objective => (1_000, 100),
        Tier::Heterogeneous => (10_000, 1_000),
        Tier::Adjudicated => (50_000, 5_000),
        Tier::Human => (200_000, 10_000),
    }
}

/// The premium rate of a class before the agent's factors.
pub fn class_bps(class: Class) -> u64 {
    match class {
        Class::Objective => 50,
        Class::Subjective => 300,
        Class::Low => 1_000,
    }
}

/// What the price reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriceInputs {
    pub amount: Msat,
    pub coverage: Msat,
    pub class: Class,
    pub tier: Tier,
    /// The agent's decided and passed verifications.
    pub decided: u64,
    pub passed: u64,
    /// Paid claims against the agent's warranties.
    pub claims: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    pub verification_fee: Msat,
    pub premium: Msat,
    pub total: Msat,
    pub premium_bps: u32,
    pub verified_share_ppm: u32,
    pub experience_ppm: u32,
    pub claims_ppm: u32,
}

fn div_ceil(num: u128, den: u128) -> u128 {
    num.div_ceil(den)
}

fn to_msat(v: u128) -> Result<Msat, oa_money::MoneyError> {
    Msat::new(u64::try_from(v).unwrap_or(u64::MAX))
}

/// The price of the module docs. Fails only if a part exceeds the bitcoin supply.
pub fn price(i: &PriceInputs) -> Result<Price, oa_money::MoneyError> {
    let (base, ppm) = tier_fee(i.tier);
    let fee = to_msat(
        u128::from(base) + div_ceil(u128::from(i.amount.as_u64()) * u128::from(ppm), 1_000_000),
    )?;

    let passed = i.passed.min(i.decided);
    let verified_share_ppm = if i.decided == 0 {
        0
    } else {
        u32::try_from(u128::from(passed) * 1_000_000 / u128::from(i.decided)).unwrap_or(1_000_000)
    };
    let experience_ppm = if i.decided >= MIN_RECORD {
        2_000_000 - verified_share_ppm
    } else {
        NEW_AGENT_PPM
    };
    let claims_ppm = 1_000_000 + CLAIM_LOADING_PPM * i.claims.min(MAX_CLAIMS_LOADING);
    let bps = div_ceil(
        u128::from(class_bps(i.class)) * u128::from(experience_ppm) * u128::from(claims_ppm),
        1_000_000_000_000,
    );
    let premium_bps =
        u32::try_from(bps.min(u128::from(MAX_PREMIUM_BPS))).unwrap_or(MAX_PREMIUM_BPS);
    let premium = to_msat(div_ceil(
        u128::from(i.coverage.as_u64()) * u128::from(premium_bps),
        10_000,
    ))?;
    Ok(Price {
        verification_fee: fee,
        premium,
        total: fee.checked_add(premium)?,
        premium_bps,
        verified_share_ppm,
        experience_ppm,
        claims_ppm: u32::try_from(claims_ppm).unwrap_or(u32::MAX),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn m(v: u64) -> Msat {
        Msat::new(v).unwrap()
    }

    /// Golden prices: inputs and the price worked by hand (the arithmetic is in each comment).
    #[test]
    fn golden_prices() {
        let cases = [
            // fee = 10 000 + ceil(10 000 000 * 1 000 / 1e6) = 20 000.
            // share = 18/20 = 900 000; experience = 1 100 000; claims = 1 100 000;
            // bps = ceil(300 * 1.1 * 1.1) = ceil(363.0) = 363; premium = 10e6 * 363 / 1e4 = 363 000.
            (
                PriceInputs {
                    amount: m(10_000_000),
                    coverage: m(10_000_000),
                    class: Class::Subjective,
                    tier: Tier::Heterogeneous,
                    decided: 20,
                    passed: 18,
                    claims: 1,
                },
                (20_000, 363_000, 363, 900_000, 1_100_000, 1_100_000),
            ),
            // fee = 1 000 + ceil(1 234 567 * 100 / 1e6) = 1 000 + ceil(123.4567) = 1 124.
            // New agent (3 decided): experience 1 250 000; no claims: 1 000 000;
            // bps = ceil(50 * 1.25) = ceil(62.5) = 63; premium = ceil(1 234 567 * 63 / 1e4)
            // = ceil(7 777.7721) = 7 778.
            (
                PriceInputs {
                    amount: m(1_234_567),
                    coverage: m(1_234_567),
                    class: Class::Objective,
                    tier: Tier::Objective,
                    decided: 3,
                    passed: 3,
                    claims: 0,
                },
                (1_124, 7_778, 63, 1_000_000, 1_250_000, 1_000_000),
            ),
            // fee = 200 000 + ceil(500 000 000 * 10 000 / 1e6) = 200 000 + 5 000 000 = 5 200 000.
            // share 2/10 = 200 000: experience 1 800 000; claims 12 -> capped at 10: 2 000 000;
            // bps = ceil(1 000 * 1.8 * 2.0) = 3 600; coverage 100 000 000 (part of the amount):
            // premium = 100e6 * 3 600 / 1e4 = 36 000 000.
            (
                PriceInputs {
                    amount: m(500_000_000),
                    coverage: m(100_000_000),
                    class: Class::Low,
                    tier: Tier::Human,
                    decided: 10,
                    passed: 2,
                    claims: 12,
                },
                (5_200_000, 36_000_000, 3_600, 200_000, 1_800_000, 2_000_000),
            ),
            // All failed and many claims: 1 000 * 2.0 * 2.0 = 4 000 bps; still under the cap.
            // fee = 50 000 + ceil(1 000 * 5 000 / 1e6) = 50 000 + ceil(5.0) = 50 005.
            // premium = ceil(1 000 * 4 000 / 1e4) = 400.
            (
                PriceInputs {
                    amount: m(1_000),
                    coverage: m(1_000),
                    class: Class::Low,
                    tier: Tier::Adjudicated,
                    decided: 7,
                    passed: 0,
                    claims: 50,
                },
                (50_005, 400, 4_000, 0, 2_000_000, 2_000_000),
            ),
            // Zero amount: only the base fee; no premium.
            (
                PriceInputs {
                    amount: m(0),
                    coverage: m(0),
                    class: Class::Subjective,
                    tier: Tier::Adjudicated,
                    decided: 0,
                    passed: 0,
                    claims: 0,
                },
                (50_000, 0, 375, 0, 1_250_000, 1_000_000),
            ),
        ];
        for (i, (fee, premium, bps, share, exp, claims)) in cases {
            let p = price(&i).unwrap();
            assert_eq!(
                (
                    p.verification_fee.as_u64(),
                    p.premium.as_u64(),
                    p.premium_bps,
                    p.verified_share_ppm,
                    p.experience_ppm,
                    p.claims_ppm
                ),
                (fee, premium, bps, share, exp, claims),
                "{i:?}"
            );
            assert_eq!(p.total.as_u64(), fee + premium);
        }
    }

    #[test]
    fn premium_is_capped_and_large_amounts_do_not_overflow() {
        let p = price(&PriceInputs {
            amount: Msat::MAX,
            coverage: Msat::MAX,
            class: Class::Objective,
            tier: Tier::Objective,
            decided: 0,
            passed: 0,
            claims: 0,
        });
        // 1 000 + ceil(2.1e18 * 100 / 1e6) = 210 000 000 001 000 msat fee; premium
        // ceil(2.1e18 * 63 / 1e4): the total exceeds nothing (both are under the supply).
        let p = p.unwrap();
        assert_eq!(p.verification_fee.as_u64(), 210_000_000_001_000);
        assert_eq!(p.premium_bps, 63);
        assert!(p.total <= Msat::MAX);
    }
}
