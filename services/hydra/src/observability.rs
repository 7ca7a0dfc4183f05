//! `GET /internal/v1/hydra/observability`: the routing and risk signals seed 004 asks for
//! (selected-route mix, confidence buckets, breaker transitions, withdrawal throttle posture),
//! read from Hydra's own records.
//!
//! - **Selected rail** and **policy**: the routing decisions of the breakers' window (the most
//!   recent [`MAX_DECISIONS`]), counted by the rail of the chosen candidate (`route`,
//!   `envelope`, or `none` when nothing was reachable) and by policy.
//! - **Confidence**: the chosen candidates' success probability in four buckets (`lt_50`,
//!   `50_80`, `80_95`, `95_100`, in percent; bounds are integer ppm, the lower one inclusive).
//! - **Breakers** now, and the transitions this process saw (in memory, the most recent 64).
//! - **Withdrawal throttle**, withdrawals and deposits per state, and the settlement cursor.

use std::{collections::BTreeMap, sync::Arc};

use oa_proto::hydra;
use oa_store::{Db, StoreError};
use serde::Deserialize;
use sqlx::{Any, Row};

use crate::{
    deposits::Deposits,
    error::HydraError,
    risk::Risk,
    store::funds::{self, Table},
    withdrawals::Withdrawals,
};

/// Most routing decisions read per call: bounds the work of one request.
pub const MAX_DECISIONS: u32 = 1_000;

/// Confidence buckets: (label, lowest success ppm included).
const BUCKETS: [(&str, u64); 4] = [
    ("95_100", 950_000),
    ("80_95", 800_000),
    ("50_80", 500_000),
    ("lt_50", 0),
];

pub struct Observability {
    pub db: Db,
    pub risk: Arc<Risk>,
    pub withdrawals: Arc<Withdrawals>,
    pub deposits: Arc<Deposits>,
}

/// One entry of a stored ranking (see `routing.rs`); only what is counted here.
#[derive(Deserialize)]
struct Ranked {
    candidate_id: String,
    rail: String,
    success_ppm: String,
}

/// The chosen candidate's bucket label.
pub fn bucket(success_ppm: u64) -> &'static str {
    BUCKETS
        .iter()
        .find(|(_, low)| success_ppm >= *low)
        .map_or("lt_50", |(label, _)| label)
}

fn counts(map: BTreeMap<String, u64>) -> Vec<hydra::LabeledCount> {
    map.into_iter()
        .map(|(label, count)| hydra::LabeledCount { label, count })
        .collect()
}

impl Observability {
    pub async fn report(&self) -> Result<hydra::ObservabilityResponse, HydraError> {
        let now = self.risk.clock.now_ms();
        let window_ms = u64::try_from(self.risk.config.window.as_millis()).unwrap_or(u64::MAX);
        let since = now.saturating_sub(window_ms);
        let mut conn = self.db.reader().await?;
        let rows = sqlx::query::<Any>(
            "SELECT policy, ranking, chosen_candidate_id FROM hydra_routing_decisions
             WHERE created_at_ms > $1 ORDER BY created_at_ms DESC LIMIT $2",
        )
        .bind(i64::try_from(since).map_err(|_| StoreError::Corrupt("time".into()))?)
        .bind(i64::from(MAX_DECISIONS))
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::from)?;
        let mut rails = BTreeMap::new();
        let mut policies = BTreeMap::new();
        let mut confidence: BTreeMap<String, u64> =
            BUCKETS.iter().map(|(l, _)| ((*l).to_owned(), 0)).collect();
        for r in &rows {
            let policy: String = r.try_get("policy").map_err(StoreError::from)?;
            let ranking: String = r.try_get("ranking").map_err(StoreError::from)?;
            let chosen: Option<String> =
                r.try_get("chosen_candidate_id").map_err(StoreError::from)?;
            *policies.entry(policy).or_insert(0) += 1;
            let ranked: Vec<Ranked> = serde_json::from_str(&ranking)
                .map_err(|e| StoreError::Corrupt(format!("stored ranking: {e}")))?;
            let pick = chosen
                .as_deref()
                .and_then(|c| ranked.iter().find(|x| x.candidate_id == c));
            match pick {
                Some(p) => {
                    *rails.entry(p.rail.clone()).or_insert(0) += 1;
                    let ppm: u64 = p.success_ppm.parse().unwrap_or(0);
                    *confidence.entry(bucket(ppm).to_owned()).or_insert(0) += 1;
                }
                None => *rails.entry("none".to_owned()).or_insert(0) += 1,
            }
        }
        let withdrawals = funds::count_by_state(&mut conn, Table::Withdrawals).await?;
        let deposits = funds::count_by_state(&mut conn, Table::Deposits).await?;
        let breakers = self.risk.evaluate(&mut conn, now).await?;
        drop(conn);
        let m = self.withdrawals.measure().await?;
        let throttle = self.withdrawals.throttle_proto(&m.throttle).await?;
        Ok(hydra::ObservabilityResponse {
            window_ms,
            decisions: u64::try_from(rows.len()).unwrap_or(u64::MAX),
            selected_rail: counts(rails),
            policy: counts(policies),
            confidence: counts(confidence),
            breakers: breakers.iter().map(|b| self.risk.to_proto(b)).collect(),
            breaker_transitions: self
                .risk
                .transitions()
                .into_iter()
                .map(|t| hydra::BreakerTransition {
                    breaker: t.breaker.into(),
                    to: if t.open { "open" } else { "closed" }.into(),
                    at_ms: t.at_ms,
                    why: t.why,
                })
                .collect(),
            withdraw_throttle: Some(throttle),
            withdrawals: counts(withdrawals.into_iter().collect()),
            deposits: counts(deposits.into_iter().collect()),
            deposit_settle_index: self.deposits.cursor().await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_include_their_lower_bound() {
        for (ppm, label) in [
            (0, "lt_50"),
            (499_999, "lt_50"),
            (500_000, "50_80"),
            (799_999, "50_80"),
            (800_000, "80_95"),
            (949_999, "80_95"),
            (950_000, "95_100"),
            (1_000_000, "95_100"),
        ] {
            assert_eq!(bucket(ppm), label, "{ppm}");
        }
    }
}
