//! Risk budgets: how much failed or unverified work an agent or an org may have before its
//! autonomy is throttled.
//!
//! A budget names `tolerated_msat` per `window_ms` and an autonomy `cap_msat`. What is *spent* is
//! the amount of the subject's verifications that failed within the window plus those still
//! pending (unverified exposure, whatever its age). Then ([`assess`]):
//!
//! | spent | state | classification | effective cap |
//! |---|---|---|---|
//! | nothing, or less than half the tolerance | normal | +0 | `cap` |
//! | at least half | elevated | +1 tier | `cap / 2` (floored) |
//! | all of it | exhausted | +2 tiers | 0 |
//!
//! A subject without a budget is *unbudgeted*: Aegis raises nothing and caps nothing (treasury
//! and Hydra apply their own limits). Treasury and Hydra read the state with
//! `GET /v1/aegis/risk_budget/status` (scope `aegis:read`).

use oa_money::Msat;
use oa_proto::aegis;

use crate::model::{RiskState, Subject};

/// Shortest window: a minute.
pub const MIN_WINDOW_MS: u64 = 60_000;
/// Longest window: 90 days.
pub const MAX_WINDOW_MS: u64 = 90 * 86_400_000;

/// A stored budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub tolerated: Msat,
    pub window_ms: u64,
    pub cap: Msat,
    pub updated_at_ms: u64,
}

/// A subject's position under its budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub state: RiskState,
    pub failed: Msat,
    pub unverified: Msat,
    pub spent: Msat,
    pub remaining: Msat,
    /// `None` when unbudgeted.
    pub effective_cap: Option<Msat>,
}

/// The table of the module docs. Amounts beyond the supply saturate at [`Msat::MAX`].
pub fn assess(budget: Option<&Budget>, failed: Msat, unverified: Msat) -> Assessment {
    let spent = failed.checked_add(unverified).unwrap_or(Msat::MAX);
    let Some(b) = budget else {
        return Assessment {
            state: RiskState::Unbudgeted,
            failed,
            unverified,
            spent,
            remaining: Msat::ZERO,
            effective_cap: None,
        };
    };
    let (s, t) = (spent.as_u64(), b.tolerated.as_u64());
    let state = if s > 0 && s >= t {
        RiskState::Exhausted
    } else if s > 0 && u128::from(s) * 2 >= u128::from(t) {
        RiskState::Elevated
    } else {
        RiskState::Normal
    };
    let effective_cap = match state {
        RiskState::Exhausted => Msat::ZERO,
        RiskState::Elevated => Msat::new(b.cap.as_u64() / 2).unwrap_or(Msat::ZERO),
        RiskState::Normal | RiskState::Unbudgeted => b.cap,
    };
    Assessment {
        state,
        failed,
        unverified,
        spent,
        remaining: b.tolerated.saturating_sub(spent),
        effective_cap: Some(effective_cap),
    }
}

pub fn to_proto(
    subject: Subject,
    subject_id: &str,
    budget: Option<&Budget>,
    a: &Assessment,
    now_ms: u64,
) -> aegis::RiskBudgetStatus {
    aegis::RiskBudgetStatus {
        subject_type: subject.to_proto().into(),
        subject_id: subject_id.to_owned(),
        state: a.state.to_proto().into(),
        tolerated_msat: budget.map_or(0, |b| b.tolerated.as_u64()),
        window_ms: budget.map_or(0, |b| b.window_ms),
        cap_msat: budget.map_or(0, |b| b.cap.as_u64()),
        failed_msat: a.failed.as_u64(),
        unverified_msat: a.unverified.as_u64(),
        spent_msat: a.spent.as_u64(),
        remaining_msat: a.remaining.as_u64(),
        effective_cap_msat: a.effective_cap.map_or(0, Msat::as_u64),
        tier_raise: a.state.tier_raise(),
        as_of_ms: now_ms,
        updated_at_ms: budget.map_or(0, |b| b.updated_at_ms),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn m(v: u64) -> Msat {
        Msat::new(v).unwrap()
    }

    #[test]
    fn states_degrade_at_half_and_all_of_the_tolerance() {
        let b = Budget {
            tolerated: m(1_000),
            window_ms: MIN_WINDOW_MS,
            cap: m(501),
            updated_at_ms: 0,
        };
        let st = |failed, unverified| {
            let a = assess(Some(&b), m(failed), m(unverified));
            (
                a.state,
                a.effective_cap.unwrap().as_u64(),
                a.remaining.as_u64(),
            )
        };
        assert_eq!(st(0, 0), (RiskState::Normal, 501, 1_000));
        assert_eq!(st(499, 0), (RiskState::Normal, 501, 501));
        // 300 failed + 200 pending = 500 = half: elevated, cap 501 / 2 = 250.
        assert_eq!(st(300, 200), (RiskState::Elevated, 250, 500));
        assert_eq!(st(999, 0), (RiskState::Elevated, 250, 1));
        assert_eq!(st(0, 1_000), (RiskState::Exhausted, 0, 0));
        assert_eq!(st(5_000, 0), (RiskState::Exhausted, 0, 0));
        // Zero tolerance: the first failure exhausts it; nothing spent is normal.
        let zero = Budget {
            tolerated: Msat::ZERO,
            ..b.clone()
        };
        assert_eq!(
            assess(Some(&zero), Msat::ZERO, Msat::ZERO).state,
            RiskState::Normal
        );
        assert_eq!(
            assess(Some(&zero), m(1), Msat::ZERO).state,
            RiskState::Exhausted
        );
        // Unbudgeted: no state, no cap, whatever was spent.
        let u = assess(None, m(10), m(10));
        assert_eq!(
            (u.state, u.effective_cap, u.spent),
            (RiskState::Unbudgeted, None, m(20))
        );
        // Saturates rather than overflowing.
        assert_eq!(assess(Some(&b), Msat::MAX, Msat::MAX).spent, Msat::MAX);
    }
}
