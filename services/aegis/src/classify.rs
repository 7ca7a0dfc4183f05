//! Classification: a work unit's verifiability class and the independence tier its verification
//! needs. A pure function of its inputs, so the same work, history and risk state always give
//! the same answer (golden tests below, with the arithmetic worked by hand).
//!
//! # The rule
//!
//! **1. Class.** Each declared output has a checkability:
//!
//! | output | checkability |
//! |---|---|
//! | `ARTIFACT` with an expected sha256 (its own, or the work's `objective_hash`) | objective |
//! | `JSON` with a JSON Schema | objective |
//! | `TEST_REPORT` (threshold or the default "all pass, at least one") | objective |
//! | `ARTIFACT` without a hash, `JSON` without a schema, `TEXT` | reviewable |
//! | `ACTION` | opaque |
//!
//! The class is the weakest output's: all objective -> **objective**; all at least reviewable ->
//! **subjective**; any opaque, or no output at all -> **low**.
//!
//! **2. Base tier.** objective -> **objective**, subjective -> **heterogeneous**, low ->
//! **adjudicated**.
//!
//! **3. Raises**, added up (the tier stops at **human**):
//!
//! - *History* (the agent's verifications decided within the history window, counted once over
//!   all work and once for this `kind`; the worse of the two counts): with at least
//!   [`MIN_HISTORY`] decided, a failure rate of at least [`SEVERE_FAILURE_PPM`] adds 2 and of at
//!   least [`FAILURE_PPM`] adds 1 (`HISTORY_FAILURE_RATE`); otherwise [`MAX_FAILURES`] or more
//!   failures add 1 (`HISTORY_FAILURES`), so a new agent that fails repeatedly is not waved
//!   through for lack of samples.
//! - *Risk state* (the worse of the agent's and the org's budgets): elevated adds 1
//!   (`RISK_ELEVATED`), exhausted adds 2 (`RISK_EXHAUSTED`).
//! - *Risk cap*: an amount above a budgeted subject's effective cap adds 1 (`ABOVE_RISK_CAP`),
//!   unless a subject is exhausted (its cap of 0 is already what the +2 expresses).
//! - *Stakes*: an amount of at least the high-stakes threshold adds 1 (`AMOUNT_HIGH`).
//!
//! **4. Floors.** An amount of at least the critical-stakes threshold makes the tier **human**
//! (`AMOUNT_CRITICAL`); a caller's `min_tier` (verify only) is a floor too (`MIN_TIER`).
//!
//! A reason code is listed whenever its condition holds, even if the tier was at human already.

use oa_money::Msat;

use crate::model::{Class, RiskState, Tier};

/// Fewest decided verifications before a failure *rate* counts.
pub const MIN_HISTORY: u64 = 5;
/// Failure rate (ppm of decided) that raises the tier by one.
pub const FAILURE_PPM: u64 = 200_000;
/// Failure rate (ppm of decided) that raises the tier by two.
pub const SEVERE_FAILURE_PPM: u64 = 500_000;
/// Failures that raise the tier by one whatever the rate (few samples, many failures).
pub const MAX_FAILURES: u64 = 3;

/// How well one declared output can be checked, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Checkability {
    Objective,
    Reviewable,
    Opaque,
}

/// A count of decided verifications and how many of them failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub decided: u64,
    pub failed: u64,
}

impl History {
    /// Tier steps this record adds, and the reason code when it adds any.
    fn raise(self) -> (u32, Option<&'static str>) {
        let failed = self.failed.min(self.decided);
        if self.decided >= MIN_HISTORY {
            // u128: failed * 1e6 cannot overflow.
            let rate_ppm = u128::from(failed) * 1_000_000 / u128::from(self.decided);
            if rate_ppm >= u128::from(SEVERE_FAILURE_PPM) {
                return (2, Some("HISTORY_FAILURE_RATE"));
            }
            if rate_ppm >= u128::from(FAILURE_PPM) {
                return (1, Some("HISTORY_FAILURE_RATE"));
            }
        }
        if failed >= MAX_FAILURES {
            return (1, Some("HISTORY_FAILURES"));
        }
        (0, None)
    }
}

/// One subject's risk position as classification reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Risk {
    pub state: RiskState,
    /// `None` when unbudgeted.
    pub effective_cap: Option<Msat>,
}

impl Risk {
    pub const UNBUDGETED: Risk = Risk {
        state: RiskState::Unbudgeted,
        effective_cap: None,
    };
}

/// Thresholds of the rule that are deployment settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub high_stakes: Msat,
    pub critical_stakes: Msat,
}

/// Everything classification reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// One entry per declared output (an implicit artifact for a bare `objective_hash`).
    pub outputs: Vec<Checkability>,
    pub amount: Msat,
    pub overall: History,
    pub kind: History,
    pub agent_risk: Risk,
    pub org_risk: Option<Risk>,
    pub min_tier: Option<Tier>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    pub class: Class,
    pub base_tier: Tier,
    pub tier: Tier,
    pub raise_reasons: Vec<&'static str>,
}

pub fn class_of(outputs: &[Checkability]) -> Class {
    match outputs.iter().max() {
        None | Some(Checkability::Opaque) => Class::Low,
        Some(Checkability::Reviewable) => Class::Subjective,
        Some(Checkability::Objective) => Class::Objective,
    }
}

pub fn base_tier(class: Class) -> Tier {
    match class {
        Class::Objective => Tier::Objective,
        Class::Subjective => Tier::Heterogeneous,
        Class::Low => Tier::Adjudicated,
    }
}

/// The rule of the module docs.
pub fn classify(policy: &Policy, inputs: &Inputs) -> Classification {
    let class = class_of(&inputs.outputs);
    let base = base_tier(class);
    let mut steps = 0u32;
    let mut reasons = Vec::new();

    let (a, b) = (inputs.overall.raise(), inputs.kind.raise());
    let (history_steps, history_reason) = if b.0 > a.0 { b } else { a };
    steps += history_steps;
    reasons.extend(history_reason);

    let risks: Vec<Risk> = std::iter::once(inputs.agent_risk)
        .chain(inputs.org_risk)
        .collect();
    let worst = risks
        .iter()
        .map(|r| r.state)
        .max()
        .unwrap_or(RiskState::Unbudgeted);
    match worst {
        RiskState::Elevated => reasons.push("RISK_ELEVATED"),
        RiskState::Exhausted => reasons.push("RISK_EXHAUSTED"),
        RiskState::Unbudgeted | RiskState::Normal => {}
    }
    steps += worst.tier_raise();
    if worst != RiskState::Exhausted
        && risks
            .iter()
            .any(|r| r.effective_cap.is_some_and(|cap| inputs.amount > cap))
    {
        steps += 1;
        reasons.push("ABOVE_RISK_CAP");
    }

    if inputs.amount >= policy.high_stakes {
        steps += 1;
        reasons.push("AMOUNT_HIGH");
    }
    let mut tier = base.raised(steps);
    if inputs.amount >= policy.critical_stakes {
        tier = Tier::Human;
        reasons.push("AMOUNT_CRITICAL");
    }
    if let Some(min) = inputs.min_tier
        && min > tier
    {
        tier = min;
        reasons.push("MIN_TIER");
    }
    Classification {
        class,
        base_tier: base,
        tier,
        raise_reasons: reasons,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use Checkability::*;

    fn msat(v: u64) -> Msat {
        Msat::new(v).unwrap()
    }

    fn policy() -> Policy {
        Policy {
            high_stakes: msat(100_000_000),
            critical_stakes: msat(10_000_000_000),
        }
    }

    fn inputs(outputs: &[Checkability], amount: u64) -> Inputs {
        Inputs {
            outputs: outputs.to_vec(),
            amount: msat(amount),
            overall: History::default(),
            kind: History::default(),
            agent_risk: Risk::UNBUDGETED,
            org_risk: None,
            min_tier: None,
        }
    }

    fn budgeted(state: RiskState, cap: u64) -> Risk {
        Risk {
            state,
            effective_cap: Some(msat(cap)),
        }
    }

    /// Golden cases: (name, inputs, class, base tier, tier, reasons), each worked by hand.
    #[test]
    fn golden_classifications() {
        let h = |decided, failed| History { decided, failed };
        type Golden = (&'static str, Inputs, Class, Tier, Tier, Vec<&'static str>);
        let cases: Vec<Golden> = vec![
            // Every output checkable, small amount, clean record: objective at objective.
            (
                "all objective",
                inputs(&[Objective, Objective], 50_000),
                Class::Objective,
                Tier::Objective,
                Tier::Objective,
                vec![],
            ),
            // One TEXT output makes the class subjective: heterogeneous.
            (
                "one reviewable",
                inputs(&[Objective, Reviewable], 50_000),
                Class::Subjective,
                Tier::Heterogeneous,
                Tier::Heterogeneous,
                vec![],
            ),
            // An ACTION makes it low: adjudicated.
            (
                "one opaque",
                inputs(&[Objective, Opaque], 50_000),
                Class::Low,
                Tier::Adjudicated,
                Tier::Adjudicated,
                vec![],
            ),
            // Nothing declared: low.
            (
                "no outputs",
                inputs(&[], 1),
                Class::Low,
                Tier::Adjudicated,
                Tier::Adjudicated,
                vec![],
            ),
            // 2 of 10 failed = 200 000 ppm >= 200 000: +1.
            (
                "failure rate at the threshold",
                Inputs {
                    overall: h(10, 2),
                    ..inputs(&[Objective], 1_000)
                },
                Class::Objective,
                Tier::Objective,
                Tier::Heterogeneous,
                vec!["HISTORY_FAILURE_RATE"],
            ),
            // 1 of 6 = 166 666 ppm < 200 000, and 1 < 3 failures: no raise.
            (
                "failure rate below the threshold",
                Inputs {
                    overall: h(6, 1),
                    ..inputs(&[Objective], 1_000)
                },
                Class::Objective,
                Tier::Objective,
                Tier::Objective,
                vec![],
            ),
            // 3 of 4: under MIN_HISTORY, but 3 failures: +1.
            (
                "few samples, many failures",
                Inputs {
                    overall: h(4, 3),
                    ..inputs(&[Objective], 1_000)
                },
                Class::Objective,
                Tier::Objective,
                Tier::Heterogeneous,
                vec!["HISTORY_FAILURES"],
            ),
            // Overall 1 of 20 (50 000 ppm) is fine, but on this kind 3 of 5 = 600 000 ppm: +2.
            (
                "bad at this kind of work",
                Inputs {
                    overall: h(20, 1),
                    kind: h(5, 3),
                    ..inputs(&[Objective], 1_000)
                },
                Class::Objective,
                Tier::Objective,
                Tier::Adjudicated,
                vec!["HISTORY_FAILURE_RATE"],
            ),
            // The org's budget is elevated (+1) and the amount 600 is above the agent's
            // effective cap 500 (+1): objective + 2 = adjudicated.
            (
                "elevated org and above the agent's cap",
                Inputs {
                    agent_risk: budgeted(RiskState::Normal, 500),
                    org_risk: Some(budgeted(RiskState::Elevated, 10_000)),
                    ..inputs(&[Objective], 600)
                },
                Class::Objective,
                Tier::Objective,
                Tier::Adjudicated,
                vec!["RISK_ELEVATED", "ABOVE_RISK_CAP"],
            ),
            // Exhausted: +2 and no extra step for the cap of 0. Subjective: heterogeneous + 2.
            (
                "exhausted agent",
                Inputs {
                    agent_risk: budgeted(RiskState::Exhausted, 0),
                    ..inputs(&[Reviewable], 600)
                },
                Class::Subjective,
                Tier::Heterogeneous,
                Tier::Human,
                vec!["RISK_EXHAUSTED"],
            ),
            // 100 000 000 msat is the high-stakes threshold: +1.
            (
                "high stakes",
                inputs(&[Objective], 100_000_000),
                Class::Objective,
                Tier::Objective,
                Tier::Heterogeneous,
                vec!["AMOUNT_HIGH"],
            ),
            // Critical stakes: high (+1) and the human floor.
            (
                "critical stakes",
                inputs(&[Objective], 10_000_000_000),
                Class::Objective,
                Tier::Objective,
                Tier::Human,
                vec!["AMOUNT_HIGH", "AMOUNT_CRITICAL"],
            ),
            // Everything at once saturates at human: low (adjudicated) + 2 + 2 + 1.
            (
                "saturates",
                Inputs {
                    overall: h(10, 9),
                    agent_risk: budgeted(RiskState::Exhausted, 0),
                    ..inputs(&[Opaque], 200_000_000)
                },
                Class::Low,
                Tier::Adjudicated,
                Tier::Human,
                vec!["HISTORY_FAILURE_RATE", "RISK_EXHAUSTED", "AMOUNT_HIGH"],
            ),
            // A caller's floor above the rule's tier.
            (
                "min tier",
                Inputs {
                    min_tier: Some(Tier::Adjudicated),
                    ..inputs(&[Objective], 1)
                },
                Class::Objective,
                Tier::Objective,
                Tier::Adjudicated,
                vec!["MIN_TIER"],
            ),
            // A floor below the rule's tier changes nothing.
            (
                "min tier below",
                Inputs {
                    min_tier: Some(Tier::Objective),
                    ..inputs(&[Reviewable], 1)
                },
                Class::Subjective,
                Tier::Heterogeneous,
                Tier::Heterogeneous,
                vec![],
            ),
        ];
        for (name, input, class, base, tier, reasons) in cases {
            let got = classify(&policy(), &input);
            assert_eq!(
                got,
                Classification {
                    class,
                    base_tier: base,
                    tier,
                    raise_reasons: reasons
                },
                "{name}"
            );
        }
    }
}
