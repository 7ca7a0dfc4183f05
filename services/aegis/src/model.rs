//! Aegis's domain vocabulary: verifiability classes, independence tiers, verdicts and risk
//! states, with their stored spellings (lowercase words, stable) and their proto enums.

use oa_proto::aegis;

/// How well a work unit can be checked, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Objective,
    Subjective,
    Low,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Objective, Class::Subjective, Class::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Objective => "objective",
            Class::Subjective => "subjective",
            Class::Low => "low",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn to_proto(self) -> aegis::VerifiabilityClass {
        match self {
            Class::Objective => aegis::VerifiabilityClass::Objective,
            Class::Subjective => aegis::VerifiabilityClass::Subjective,
            Class::Low => aegis::VerifiabilityClass::Low,
        }
    }
}

/// Who must agree before a verdict is final, weakest first (the order is what raising means).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Objective,
    Heterogeneous,
    Adjudicated,
    Human,
}

impl Tier {
    pub const ALL: [Tier; 4] = [
        Tier::Objective,
        Tier::Heterogeneous,
        Tier::Adjudicated,
        Tier::Human,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Objective => "objective",
            Tier::Heterogeneous => "heterogeneous",
            Tier::Adjudicated => "adjudicated",
            Tier::Human => "human",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// This tier raised by `steps`, at most [`Tier::Human`].
    pub fn raised(self, steps: u32) -> Tier {
        let i = Tier::ALL.iter().position(|t| *t == self).unwrap_or(0);
        let j = i.saturating_add(usize::try_from(steps).unwrap_or(usize::MAX));
        Tier::ALL[j.min(Tier::ALL.len() - 1)]
    }

    pub fn to_proto(self) -> aegis::IndependenceTier {
        match self {
            Tier::Objective => aegis::IndependenceTier::Objective,
            Tier::Heterogeneous => aegis::IndependenceTier::Heterogeneous,
            Tier::Adjudicated => aegis::IndependenceTier::Adjudicated,
            Tier::Human => aegis::IndependenceTier::Human,
        }
    }

    /// `None` for UNSPECIFIED.
    pub fn from_proto(t: aegis::IndependenceTier) -> Option<Tier> {
        match t {
            aegis::IndependenceTier::Unspecified => None,
            aegis::IndependenceTier::Objective => Some(Tier::Objective),
            aegis::IndependenceTier::Heterogeneous => Some(Tier::Heterogeneous),
            aegis::IndependenceTier::Adjudicated => Some(Tier::Adjudicated),
            aegis::IndependenceTier::Human => Some(Tier::Human),
        }
    }
}

/// A final verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
}

impl Verdict {
    /// The spelling in receipts, statements and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        match s {
            "passed" => Some(Verdict::Passed),
            "failed" => Some(Verdict::Failed),
            _ => None,
        }
    }

    pub fn to_proto(self) -> aegis::VerificationVerdict {
        match self {
            Verdict::Passed => aegis::VerificationVerdict::Passed,
            Verdict::Failed => aegis::VerificationVerdict::Failed,
        }
    }

    /// `None` for UNSPECIFIED and PENDING (not a verdict anyone can give).
    pub fn from_proto(v: aegis::VerificationVerdict) -> Option<Verdict> {
        match v {
            aegis::VerificationVerdict::Passed => Some(Verdict::Passed),
            aegis::VerificationVerdict::Failed => Some(Verdict::Failed),
            _ => None,
        }
    }

    pub fn from_bool(passed: bool) -> Verdict {
        if passed {
            Verdict::Passed
        } else {
            Verdict::Failed
        }
    }
}

/// Where a subject stands under its risk budget, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RiskState {
    Unbudgeted,
    Normal,
    Elevated,
    Exhausted,
}

impl RiskState {
    pub fn to_proto(self) -> aegis::RiskState {
        match self {
            RiskState::Unbudgeted => aegis::RiskState::Unbudgeted,
            RiskState::Normal => aegis::RiskState::Normal,
            RiskState::Elevated => aegis::RiskState::Elevated,
            RiskState::Exhausted => aegis::RiskState::Exhausted,
        }
    }

    /// Tiers classification adds for a subject in this state.
    pub fn tier_raise(self) -> u32 {
        match self {
            RiskState::Unbudgeted | RiskState::Normal => 0,
            RiskState::Elevated => 1,
            RiskState::Exhausted => 2,
        }
    }
}

/// Who a risk budget is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Agent,
    Org,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Agent => "agent",
            Subject::Org => "org",
        }
    }

    pub fn parse(s: &str) -> Option<Subject> {
        match s {
            "agent" => Some(Subject::Agent),
            "org" => Some(Subject::Org),
            _ => None,
        }
    }

    pub fn to_proto(self) -> aegis::RiskSubjectType {
        match self {
            Subject::Agent => aegis::RiskSubjectType::Agent,
            Subject::Org => aegis::RiskSubjectType::Org,
        }
    }

    pub fn from_proto(t: aegis::RiskSubjectType) -> Option<Subject> {
        match t {
            aegis::RiskSubjectType::Agent => Some(Subject::Agent),
            aegis::RiskSubjectType::Org => Some(Subject::Org),
            aegis::RiskSubjectType::Unspecified => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_raise_in_order_and_stop_at_human() {
        assert_eq!(Tier::Objective.raised(0), Tier::Objective);
        assert_eq!(Tier::Objective.raised(1), Tier::Heterogeneous);
        assert_eq!(Tier::Heterogeneous.raised(2), Tier::Human);
        assert_eq!(Tier::Adjudicated.raised(9), Tier::Human);
        assert_eq!(Tier::Human.raised(u32::MAX), Tier::Human);
        for t in Tier::ALL {
            assert_eq!(Tier::parse(t.as_str()), Some(t));
            assert_eq!(Tier::from_proto(t.to_proto()), Some(t));
        }
        for c in Class::ALL {
            assert_eq!(Class::parse(c.as_str()), Some(c));
        }
    }
}
