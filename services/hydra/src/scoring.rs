//! Routing score: ranks candidate rails and routes for a payment under a named policy. A pure
//! function of the candidates, what payment history taught us, and the time, so a decision can be
//! recomputed from its receipt's inputs.
//!
//! **Success probability** (in the spirit of Pickhardt-Richter and LDK's probabilistic scorer):
//! the liquidity of a hop is taken as uniformly distributed over what we still believe possible,
//! `[min, max]` (initially `[0, capacity]`). For an amount `a` the hop succeeds with probability
//! 1 if `a <= min`, 0 if `a > max`, else `(max + 1 - a) / (max + 1 - min)`. A route succeeds
//! with the product over its hops. Probabilities are integers in parts per million, each step
//! rounded down.
//!
//! **Learning.** A payment of `a` that went through a hop proves `min >= a`; one that failed at a
//! hop proves `max < a`. What we learned fades: both bounds drift back toward `[0, capacity]`,
//! their distance from it halving every `half_life_ms` since the hop was last observed.
//!
//! **Rails.** A candidate that is not a Lightning route (a credit envelope) carries its own success
//! estimate (Hydra derives it from envelope outcomes with Laplace smoothing:
//! `(settled + 1) / (settled + defaulted + 2)`).
//!
//! **Policies.** Ranking keys, compared in order; the candidate id breaks remaining ties:
//! - `lowest_cost`: fee, then higher probability.
//! - `reliability_first`: higher probability, then fee.
//! - `balanced`: `fee + ceil(amount × (1 - p))` (the fee plus the amount weighted by the chance it
//!   does not arrive), then higher probability.
//!
//! Candidates with probability zero are ranked last and marked unreachable.

use std::collections::BTreeMap;

use oa_money::Msat;
use serde::{Deserialize, Serialize};

pub const PPM: u64 = 1_000_000;
/// Most candidates one request may rank, and most hops per route.
pub const MAX_CANDIDATES: usize = 64;
pub const MAX_HOPS: usize = 27;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    LowestCost,
    Balanced,
    ReliabilityFirst,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "lowest_cost" => Some(Policy::LowestCost),
            "balanced" => Some(Policy::Balanced),
            "reliability_first" => Some(Policy::ReliabilityFirst),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::LowestCost => "lowest_cost",
            Policy::Balanced => "balanced",
            Policy::ReliabilityFirst => "reliability_first",
        }
    }
}

/// One hop of a Lightning route: a channel and its capacity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    pub chan_id: u64,
    pub capacity: Msat,
}

/// What a candidate's success rests on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// A Lightning route through these hops.
    Route(Vec<Hop>),
    /// A rail with its own success estimate (ppm).
    Estimate(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub id: String,
    pub fee: Msat,
    pub basis: Basis,
}

/// What we believe about one channel's liquidity in the payment's direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bounds {
    pub min: Msat,
    pub max: Msat,
    pub observed_at_ms: u64,
}

/// Learned bounds per channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Knowledge {
    pub bounds: BTreeMap<u64, Bounds>,
    pub half_life_ms: u64,
}

impl Knowledge {
    pub fn new(half_life_ms: u64) -> Self {
        Knowledge {
            bounds: BTreeMap::new(),
            half_life_ms: half_life_ms.max(1),
        }
    }

    /// The bounds for `hop` at `now_ms`, after decay.
    pub fn bounds(&self, hop: &Hop, now_ms: u64) -> (Msat, Msat) {
        let cap = hop.capacity;
        let Some(b) = self.bounds.get(&hop.chan_id) else {
            return (Msat::ZERO, cap);
        };
        let halvings = now_ms.saturating_sub(b.observed_at_ms) / self.half_life_ms;
        let fade = |distance: u64| {
            if halvings > 63 {
                0
            } else {
                distance >> halvings
            }
        };
        let min = Msat::new(fade(b.min.min(cap).as_u64())).unwrap_or(Msat::ZERO);
        let gap = cap.saturating_sub(b.max.min(cap)).as_u64();
        let max = cap.saturating_sub(Msat::new(fade(gap)).unwrap_or(Msat::ZERO));
        (min, max.max(min))
    }

    /// Learns from a payment of `amount` over `route`: every hop before `failed_at` passed it;
    /// the hop at `failed_at` (if any) could not. Hops after it taught us nothing.
    pub fn observe(&mut self, route: &[Hop], amount: Msat, failed_at: Option<usize>, now_ms: u64) {
        for (i, hop) in route.iter().enumerate() {
            let (min, max) = self.bounds(hop, now_ms);
            let (min, max) = match failed_at {
                Some(f) if i == f => {
                    let below = amount.saturating_sub(Msat::new(1).unwrap_or(Msat::ZERO));
                    let max = max.min(below);
                    (min.min(max), max)
                }
                Some(f) if i > f => break,
                _ => (min.max(amount.min(max)), max),
            };
            self.bounds.insert(
                hop.chan_id,
                Bounds {
                    min,
                    max,
                    observed_at_ms: now_ms,
                },
            );
        }
    }
}

/// Success probability (ppm) of `amount` over one hop with liquidity in `[min, max]`.
pub fn hop_ppm(amount: Msat, min: Msat, max: Msat) -> u64 {
    let (a, lo, hi) = (
        u128::from(amount.as_u64()),
        u128::from(min.as_u64()),
        u128::from(max.as_u64()),
    );
    if a <= lo {
        PPM
    } else if a > hi {
        0
    } else {
        // hi + 1 - lo >= hi + 1 - a > 0 here.
        u64::try_from(u128::from(PPM) * (hi + 1 - a) / (hi + 1 - lo)).unwrap_or(0)
    }
}

/// A candidate's probability (ppm) of carrying `amount`.
pub fn success_ppm(c: &Candidate, amount: Msat, k: &Knowledge, now_ms: u64) -> u64 {
    match &c.basis {
        Basis::Estimate(p) => u64::from(*p).min(PPM),
        Basis::Route(hops) => hops.iter().fold(PPM, |p, hop| {
            let (min, max) = k.bounds(hop, now_ms);
            p * hop_ppm(amount, min, max) / PPM
        }),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Scored {
    pub id: String,
    pub fee: Msat,
    pub success_ppm: u64,
    /// The policy's cost figure: the fee, or for `balanced` the fee plus the amount at risk.
    pub cost: Msat,
    pub reachable: bool,
}

/// Ranks `candidates` for `amount` under `policy`, best first.
pub fn rank(
    policy: Policy,
    amount: Msat,
    candidates: &[Candidate],
    k: &Knowledge,
    now_ms: u64,
) -> Vec<Scored> {
    let mut scored: Vec<Scored> = candidates
        .iter()
        .map(|c| {
            let p = success_ppm(c, amount, k, now_ms);
            let at_risk =
                (u128::from(amount.as_u64()) * u128::from(PPM - p)).div_ceil(u128::from(PPM));
            let cost = match policy {
                Policy::Balanced => u64::try_from(at_risk)
                    .ok()
                    .and_then(|r| Msat::new(r).ok())
                    .and_then(|r| c.fee.checked_add(r).ok())
                    .unwrap_or(Msat::MAX),
                _ => c.fee,
            };
            Scored {
                id: c.id.clone(),
                fee: c.fee,
                success_ppm: p,
                cost,
                reachable: p > 0,
            }
        })
        .collect();
    scored.sort_by(|a, b| {
        let tail = || a.id.cmp(&b.id);
        b.reachable.cmp(&a.reachable).then_with(|| match policy {
            Policy::ReliabilityFirst => b
                .success_ppm
                .cmp(&a.success_ppm)
                .then(a.fee.cmp(&b.fee))
                .then_with(tail),
            Policy::LowestCost | Policy::Balanced => a
                .cost
                .cmp(&b.cost)
                .then(b.success_ppm.cmp(&a.success_ppm))
                .then_with(tail),
        })
    });
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: u64) -> Msat {
        Msat::new(v).unwrap()
    }

    fn route(id: &str, fee: u64, hops: &[(u64, u64)]) -> Candidate {
        Candidate {
            id: id.into(),
            fee: m(fee),
            basis: Basis::Route(
                hops.iter()
                    .map(|&(chan_id, cap)| Hop {
                        chan_id,
                        capacity: m(cap),
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn hop_probability_is_uniform_over_the_bounds() {
        // [0, 999]: 500 -> (999 + 1 - 500) / 1000 = 0.5.
        assert_eq!(hop_ppm(m(500), m(0), m(999)), 500_000);
        assert_eq!(hop_ppm(m(100), m(100), m(999)), PPM);
        assert_eq!(hop_ppm(m(1_000), m(0), m(999)), 0);
        // [200, 599]: 300 -> (599 + 1 - 300) / (599 + 1 - 200) = 300 / 400 = 0.75.
        assert_eq!(hop_ppm(m(300), m(200), m(599)), 750_000);
    }

    /// Golden: three candidates, their inputs, and the ranking each policy gives, by hand.
    #[test]
    fn policies_rank_with_hand_worked_values() {
        let amount = m(400_000);
        let cands = vec![
            // Cheap but thin: two hops of capacity 1 000 000 -> each (1 000 001 - 400 000) /
            // 1 000 001 = 600 000.4 ppm -> 600 000; product 600 000 × 600 000 / 1e6 = 360 000.
            route("a-thin", 100, &[(1, 1_000_000), (2, 1_000_000)]),
            // Dear but deep: one hop of 4 000 000 -> 3 600 001 / 4 000 001 = 900 000.0 -> 900 000.
            route("b-deep", 2_000, &[(3, 4_000_000)]),
            // An envelope rail with its own estimate.
            Candidate {
                id: "c-envelope".into(),
                fee: m(4_000),
                basis: Basis::Estimate(990_000),
            },
        ];
        let k = Knowledge::new(3_600_000);
        let ids = |p| -> Vec<(String, u64, u64)> {
            rank(p, amount, &cands, &k, 0)
                .into_iter()
                .map(|s| (s.id, s.success_ppm, s.cost.as_u64()))
                .collect()
        };
        assert_eq!(
            ids(Policy::LowestCost),
            vec![
                ("a-thin".into(), 360_000, 100),
                ("b-deep".into(), 900_000, 2_000),
                ("c-envelope".into(), 990_000, 4_000),
            ]
        );
        assert_eq!(
            ids(Policy::ReliabilityFirst)
                .iter()
                .map(|x| x.0.as_str())
                .collect::<Vec<_>>(),
            ["c-envelope", "b-deep", "a-thin"]
        );
        // balanced: a = 100 + 400 000 × 0.64 = 256 100; b = 2 000 + 40 000 = 42 000;
        // c = 4 000 + ceil(400 000 × 0.01) = 8 000.
        assert_eq!(
            ids(Policy::Balanced),
            vec![
                ("c-envelope".into(), 990_000, 8_000),
                ("b-deep".into(), 900_000, 42_000),
                ("a-thin".into(), 360_000, 256_100),
            ]
        );
    }

    #[test]
    fn ties_break_by_id_and_unreachable_candidates_go_last() {
        let cands = vec![
            route("z", 10, &[(1, 1_000)]),
            route("y", 10, &[(2, 1_000)]),
            route("x-too-small", 1, &[(3, 10)]),
        ];
        let k = Knowledge::new(1);
        let r = rank(Policy::LowestCost, m(100), &cands, &k, 0);
        let ids: Vec<_> = r.iter().map(|s| (s.id.as_str(), s.reachable)).collect();
        assert_eq!(ids, [("y", true), ("z", true), ("x-too-small", false)]);
    }

    #[test]
    fn history_moves_the_bounds_and_the_lesson_fades() {
        let hops = [
            Hop {
                chan_id: 7,
                capacity: m(1_000_000),
            },
            Hop {
                chan_id: 8,
                capacity: m(1_000_000),
            },
        ];
        let mut k = Knowledge::new(1_000);
        // 300 000 passed hop 7 and failed at hop 8.
        k.observe(&hops, m(300_000), Some(1), 0);
        assert_eq!(k.bounds(&hops[0], 0), (m(300_000), m(1_000_000)));
        assert_eq!(k.bounds(&hops[1], 0), (m(0), m(299_999)));
        // Now 300 000 over hop 7 is certain, over hop 8 impossible.
        assert_eq!(
            success_ppm(&route("r", 0, &[(7, 1_000_000)]), m(300_000), &k, 0),
            PPM
        );
        assert_eq!(
            success_ppm(&route("r", 0, &[(8, 1_000_000)]), m(300_000), &k, 0),
            0
        );
        // Two half-lives later the lessons are a quarter as strong: hop 7 min 75 000; hop 8's
        // gap to capacity 700 001 -> 175 000 (rounded down), max 825 000.
        assert_eq!(k.bounds(&hops[0], 2_000), (m(75_000), m(1_000_000)));
        assert_eq!(k.bounds(&hops[1], 2_000), (m(0), m(825_000)));
        // A success after that raises the min again from the faded value.
        k.observe(&hops[..1], m(50_000), None, 2_000);
        assert_eq!(k.bounds(&hops[0], 2_000), (m(75_000), m(1_000_000)));
    }
}
