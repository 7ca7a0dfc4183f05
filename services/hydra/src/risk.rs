//! Breakers: two failure rates over a sliding window of the clock, each with a threshold and a
//! minimum sample size, that halt risky new business while they are open.
//!
//! - `payment_failure_rate`: of the Lightning payments Hydra made (liquidity pays, envelope
//!   settlements and withdrawals; only the network's terminal answers, not the executor's own refusals) that
//!   ended in the window, the share that failed. Open, it halts new envelopes (offers and
//!   acceptances) and large settlements (an envelope payment of at least
//!   `large_settlement`), since paying large amounts into a failing network strands credit.
//! - `envelope_loss_rate`: of the envelopes that ended in the window (settled, defaulted or
//!   expired), the share lost (defaulted or expired). Open, it halts new envelopes.
//!
//! A breaker is open when it has at least `min_samples` outcomes in `(now - window, now]` and
//! `failures × 10 000 >= threshold_bps × samples`; it closes by itself as outcomes age out of
//! the window or new ones come in. State is computed from Hydra's own tables on each check (no
//! stored state to drift), so every replica agrees. Refusals are `503 BREAKER_OPEN`, retryable,
//! with the breaker's reason code; defaulting an envelope on a failed verification is never
//! halted (it only removes risk).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use oa_money::Msat;
use oa_proto::hydra;
use oa_service::Clock;
use oa_store::{Db, StoreError};
use sqlx::{Any, AnyConnection, Row};

use crate::{book, error::HydraError, store::credit as credit_store};

pub const PAYMENT_FAILURE_RATE: &str = "payment_failure_rate";
pub const ENVELOPE_LOSS_RATE: &str = "envelope_loss_rate";
pub const HALT_NEW_ENVELOPES: &str = "new_envelopes";
pub const HALT_LARGE_SETTLEMENTS: &str = "large_settlements";

#[derive(Clone, Debug)]
pub struct RiskConfig {
    pub window: Duration,
    pub min_samples: u64,
    pub payment_failure_bps: u32,
    pub loss_bps: u32,
    pub large_settlement: Msat,
}

/// One breaker as evaluated now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breaker {
    pub name: &'static str,
    pub open: bool,
    pub reason_code: &'static str,
    pub samples: u64,
    pub failures: u64,
    pub rate_bps: u32,
    pub threshold_bps: u32,
    pub halts: &'static [&'static str],
    pub why: String,
}

/// Breaker state changes kept for `/internal/v1/hydra/observability`: enough to see a flapping
/// breaker, small enough to be negligible memory.
const TRANSITIONS_KEPT: usize = 64;

/// A breaker state change this process saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub breaker: &'static str,
    pub open: bool,
    pub at_ms: u64,
    pub why: String,
}

pub struct Risk {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub config: RiskConfig,
    /// The last state seen per breaker, to log transitions once.
    last: Mutex<BTreeMap<&'static str, bool>>,
    /// The most recent transitions, oldest first (per process: each replica sees its own).
    transitions: Mutex<VecDeque<Transition>>,
}

fn rate_bps(failures: u64, samples: u64) -> u32 {
    if samples == 0 {
        return 0;
    }
    u32::try_from(u128::from(failures) * 10_000 / u128::from(samples)).unwrap_or(u32::MAX)
}

/// Evaluates one breaker from its counts (see the module docs for the rule).
pub fn judge(
    name: &'static str,
    what: &str,
    failures: u64,
    samples: u64,
    min_samples: u64,
    threshold_bps: u32,
    window: Duration,
) -> Breaker {
    let (reason_code, halts): (&'static str, &'static [&'static str]) = match name {
        PAYMENT_FAILURE_RATE => (
            "BREAKER_PAYMENT_FAILURE_RATE",
            &[HALT_NEW_ENVELOPES, HALT_LARGE_SETTLEMENTS],
        ),
        _ => ("BREAKER_ENVELOPE_LOSS_RATE", &[HALT_NEW_ENVELOPES]),
    };
    let rate = rate_bps(failures, samples);
    let enough = samples >= min_samples;
    let open =
        enough && u128::from(failures) * 10_000 >= u128::from(threshold_bps) * u128::from(samples);
    let secs = window.as_secs();
    let why = if !enough {
        format!(
            "{samples} {what} in the last {secs} s, fewer than the {min_samples} needed to judge"
        )
    } else if open {
        format!(
            "{failures} of {samples} {what} in the last {secs} s failed ({rate} bps), at or above the {threshold_bps} bps threshold"
        )
    } else {
        format!(
            "{failures} of {samples} {what} in the last {secs} s failed ({rate} bps), under the {threshold_bps} bps threshold"
        )
    };
    Breaker {
        name,
        open,
        reason_code,
        samples,
        failures,
        rate_bps: rate,
        threshold_bps,
        halts,
        why,
    }
}

async fn counts(
    conn: &mut AnyConnection,
    sql: &'static str,
    since_ms: u64,
) -> Result<(u64, u64), HydraError> {
    let row = sqlx::query::<Any>(sql)
        .bind(i64::try_from(since_ms).map_err(|_| StoreError::Corrupt("time".into()))?)
        .fetch_one(conn)
        .await
        .map_err(StoreError::from)?;
    let get = |c: &str| -> Result<u64, HydraError> {
        let v: i64 = row.try_get(c).map_err(StoreError::from)?;
        u64::try_from(v)
            .map_err(|_| HydraError::Store(StoreError::Corrupt("negative count".into())))
    };
    Ok((get("failures")?, get("samples")?))
}

impl Risk {
    pub fn new(db: Db, clock: Arc<dyn Clock>, config: RiskConfig) -> Self {
        Self {
            db,
            clock,
            config,
            last: Mutex::new(BTreeMap::new()),
            transitions: Mutex::new(VecDeque::new()),
        }
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Any>, HydraError> {
        Ok(self.db.reader().await?)
    }

    /// Both breakers at `now_ms`.
    pub async fn evaluate(
        &self,
        conn: &mut AnyConnection,
        now_ms: u64,
    ) -> Result<Vec<Breaker>, HydraError> {
        let window_ms = u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX);
        let since = now_ms.saturating_sub(window_ms);
        let (pf, ps) = counts(
            conn,
            "SELECT CAST(COALESCE(SUM(1 - succeeded), 0) AS BIGINT) AS failures,
                    CAST(COUNT(*) AS BIGINT) AS samples
             FROM hydra_payment_outcomes WHERE at_ms > $1",
            since,
        )
        .await?;
        let (lf, ls) = counts(
            conn,
            "SELECT CAST(COALESCE(SUM(CASE WHEN state IN ('defaulted', 'expired') THEN 1 ELSE 0 END), 0) AS BIGINT) AS failures,
                    CAST(COUNT(*) AS BIGINT) AS samples
             FROM hydra_envelopes WHERE ended_at_ms IS NOT NULL AND ended_at_ms > $1",
            since,
        )
        .await?;
        let c = &self.config;
        let breakers = vec![
            judge(
                PAYMENT_FAILURE_RATE,
                "payments",
                pf,
                ps,
                c.min_samples,
                c.payment_failure_bps,
                c.window,
            ),
            judge(
                ENVELOPE_LOSS_RATE,
                "envelopes ended",
                lf,
                ls,
                c.min_samples,
                c.loss_bps,
                c.window,
            ),
        ];
        self.note_transitions(&breakers, now_ms);
        Ok(breakers)
    }

    /// The breaker transitions this process saw, oldest first.
    pub fn transitions(&self) -> Vec<Transition> {
        self.transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn note_transitions(&self, breakers: &[Breaker], now_ms: u64) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        for b in breakers {
            let before = last.insert(b.name, b.open);
            if before.is_some_and(|was| was != b.open) || (before.is_none() && b.open) {
                let mut kept = self
                    .transitions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if kept.len() == TRANSITIONS_KEPT {
                    kept.pop_front();
                }
                kept.push_back(Transition {
                    breaker: b.name,
                    open: b.open,
                    at_ms: now_ms,
                    why: b.why.clone(),
                });
                if b.open {
                    tracing::warn!(breaker = b.name, why = %b.why, "breaker opened");
                } else {
                    tracing::info!(breaker = b.name, why = %b.why, "breaker closed");
                }
            }
        }
    }

    fn refusal(b: &Breaker, what: &str) -> HydraError {
        HydraError::BreakerOpen {
            reason_code: b.reason_code,
            why: format!("{what} are halted: {}", b.why),
        }
    }

    /// Refuses new envelopes (offers, acceptances) while a breaker that halts them is open.
    /// Runs on the caller's connection (inside its transaction).
    pub async fn allow_new_envelopes(
        &self,
        conn: &mut AnyConnection,
        now_ms: u64,
    ) -> Result<(), HydraError> {
        let breakers = self.evaluate(conn, now_ms).await?;
        match breakers
            .iter()
            .find(|b| b.open && b.halts.contains(&HALT_NEW_ENVELOPES))
        {
            Some(b) => Err(Self::refusal(b, "new envelopes")),
            None => Ok(()),
        }
    }

    /// Refuses a settlement payment of `amount` when it is large and a breaker that halts large
    /// settlements is open.
    pub async fn allow_settlement(&self, amount: Msat) -> Result<(), HydraError> {
        if amount < self.config.large_settlement {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let breakers = self.evaluate(&mut *self.conn().await?, now).await?;
        match breakers
            .iter()
            .find(|b| b.open && b.halts.contains(&HALT_LARGE_SETTLEMENTS))
        {
            Some(b) => Err(Self::refusal(
                b,
                &format!(
                    "settlements of {} msat or more",
                    self.config.large_settlement.as_u64()
                ),
            )),
            None => Ok(()),
        }
    }

    /// The breakers as the status and health routes show them.
    pub async fn breakers(&self) -> Result<Vec<hydra::Breaker>, HydraError> {
        let now = self.clock.now_ms();
        let breakers = self.evaluate(&mut *self.conn().await?, now).await?;
        Ok(breakers.iter().map(|b| self.to_proto(b)).collect())
    }

    pub fn to_proto(&self, b: &Breaker) -> hydra::Breaker {
        hydra::Breaker {
            name: b.name.into(),
            state: if b.open { "open" } else { "closed" }.into(),
            reason_code: b.reason_code.into(),
            samples: b.samples,
            failures: b.failures,
            min_samples: self.config.min_samples,
            rate_bps: b.rate_bps,
            threshold_bps: b.threshold_bps,
            window_ms: u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX),
            halts: b.halts.iter().map(|h| (*h).to_owned()).collect(),
            why: b.why.clone(),
        }
    }

    /// `GET /internal/v1/hydra/risk/health`.
    pub async fn health(&self) -> Result<hydra::RiskHealthResponse, HydraError> {
        let now = self.clock.now_ms();
        let mut conn = self.conn().await?;
        let breakers = self.evaluate(&mut conn, now).await?;
        let mut halted: Vec<String> = breakers
            .iter()
            .filter(|b| b.open)
            .flat_map(|b| b.halts.iter().map(|h| (*h).to_owned()))
            .collect();
        halted.sort();
        halted.dedup();
        let (open_envelopes, exposure) = credit_store::open_totals(&mut conn).await?;
        let pool = book::pool(&mut conn).await?;
        Ok(hydra::RiskHealthResponse {
            state: if halted.is_empty() { "ok" } else { "halted" }.into(),
            breakers: breakers.iter().map(|b| self.to_proto(b)).collect(),
            halted,
            large_settlement_msat: self.config.large_settlement.as_u64(),
            open_envelopes,
            open_exposure_msat: exposure.as_u64(),
            pool_available_msat: pool.available_msat(),
            pool_reserved_msat: pool.debits_pending_msat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_breaker_needs_enough_samples_and_opens_at_its_threshold() {
        // 5 of 9 failed: below the sample minimum of 10, closed whatever the rate.
        let b = judge(PAYMENT_FAILURE_RATE, "payments", 5, 9, 10, 2_500, HOUR);
        assert!(!b.open);
        assert!(b.why.contains("fewer than the 10 needed"), "{}", b.why);
        // 3 of 12 = 2 500 bps exactly: open (the threshold is inclusive).
        let b = judge(PAYMENT_FAILURE_RATE, "payments", 3, 12, 10, 2_500, HOUR);
        assert!(b.open);
        assert_eq!(
            (b.rate_bps, b.reason_code),
            (2_500, "BREAKER_PAYMENT_FAILURE_RATE")
        );
        assert_eq!(b.halts, [HALT_NEW_ENVELOPES, HALT_LARGE_SETTLEMENTS]);
        // 1 of 3 = 3 333.3 bps: the comparison is exact, not on the rounded rate.
        let b = judge(ENVELOPE_LOSS_RATE, "envelopes ended", 1, 3, 3, 3_334, HOUR);
        assert!(!b.open, "{b:?}");
        let b = judge(ENVELOPE_LOSS_RATE, "envelopes ended", 1, 3, 3, 3_333, HOUR);
        assert!(b.open);
        assert_eq!(b.halts, [HALT_NEW_ENVELOPES]);
        assert_eq!(rate_bps(0, 0), 0);
    }
}
