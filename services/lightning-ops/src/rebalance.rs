//! Rebalances: a planned move of liquidity executed with the custody channel's `Rebalance`,
//! within the policy's `[rebalance]` budget, its cost charged to the channel that received the
//! liquidity (see `report.rs`).
//!
//! **Budget.** `budget_msat_per_day` bounds the routing fees of the rebalances *started* in one
//! UTC day (by the service clock): a rebalance counts its fee limit while it is unfinished (its
//! fee is unknown but at most that), then the fee the executor reported (0 if it failed). A
//! rebalance whose fee limit does not fit in what is left is not started: its result is
//! `deferred` with reason `BUDGET_EXHAUSTED` and `not_before_ms` at the next UTC midnight, when
//! the next apply or tick plans afresh. Nothing is stored for it (the next day's balances decide
//! what to move), and it is never cut to fit: shrinking the amount would leave the channel
//! outside its band anyway. The check and the recording of the new rebalance (with its fee limit)
//! are one transaction.
//!
//! **Execution.** The action is recorded `pending` before the executor is asked, under the key
//! `ops-rebalance-<chan_id>-<generation>-<digest of the move>`. The executor answers:
//! - ended (succeeded or failed) with its signed `rebalance_receipt`: checked (genuine, same
//!   channels, amount and fee limit, fee within the limit), then in one transaction the action
//!   ends (`applied`, or `failed` with the node's failure code), its fee is recorded, a succeeded
//!   rebalance's cost goes to the P&L ([`crate::report::record_rebalance_in`], charged to the
//!   channel it came *in* over) and lightning-ops's `oa.ops.rebalance_receipt.v1` links the
//!   executor's;
//! - in flight: the action stays `pending` and the next run asks again with the same key (the
//!   executor tracks the payment; it never pays twice);
//! - `IDEMPOTENCY_IN_PROGRESS` (in doubt): the action stays `pending`, its fee limit counted, until
//!   an operator settles it at the executor (runbook).
//!
//! A channel whose last rebalance failed waits `--min-update-interval-secs` before the next one
//! (deferred), so a rebalance that cannot find a route is not retried on every tick.

use oa_money::Msat;
use oa_proto::ops;
use oa_receipts::Receipt;
use serde::Serialize;
use serde_json::json;

use crate::{
    apply::{
        Finish, corrupt, deferred, expect_fields, key_for, new_action_id, result, row_result,
        status,
    },
    error::OpsError,
    executor::{RebalanceAsk, RebalanceState, Rebalanced},
    ops::Ops,
    plan::Action,
    policy::Policy,
    store::{self, ActionRow, Subject},
};

/// Schema of lightning-ops's receipt for an executed rebalance.
pub const REBALANCE_RECEIPT_SCHEMA: &str = "oa.ops.rebalance_receipt.v1";
/// Schema of the executor's receipt for a rebalance, which ours links.
pub const EXECUTOR_REBALANCE_SCHEMA: &str = "oa.wallet_executor.rebalance_receipt.v1";
/// A budget day: the UTC calendar day.
pub const DAY_MS: u64 = 24 * 3_600_000;

/// The UTC day `[start, end)` containing `now_ms`.
pub fn budget_day(now_ms: u64) -> (u64, u64) {
    let start = now_ms - now_ms % DAY_MS;
    (start, start.saturating_add(DAY_MS))
}

/// The executor key of a rebalance of channel `chan_id` (the one outside its band).
pub fn rebalance_key(
    chan_id: u64,
    generation: u64,
    ask: &RebalanceAsk,
) -> Result<String, OpsError> {
    key_for("rebalance", &chan_id.to_string(), generation, ask)
}

#[derive(Serialize)]
struct RebalanceReceiptBody<'a> {
    action: &'a str,
    action_id: &'a str,
    /// The channel outside its band that the rebalance was for.
    channel_id: &'a str,
    /// The channel the liquidity left by, and the one it came back in over (which the P&L
    /// charges the fee to), in decimal as the executor's receipt names them.
    out_chan_id: String,
    in_chan_id: String,
    payment_hash: &'a str,
    /// `succeeded` or `failed`, as the executor's receipt says.
    status: &'a str,
    amount_msat: Msat,
    fee_msat: Msat,
    fee_limit_msat: Msat,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_code: Option<&'a str>,
    /// Hash of the executor's `rebalance_receipt` (also in `links`).
    executor_receipt: String,
}

impl Ops {
    /// A planned rebalance: skipped without a move or a budget, deferred after a failure or
    /// over budget, else recorded and executed (see the module docs).
    pub(crate) async fn rebalance(
        &self,
        a: &Action,
        chan_id: u64,
        now: u64,
        dry_run: bool,
        policy: &Policy,
    ) -> Result<ops::ActionResult, OpsError> {
        let Action::Rebalance {
            channel_id,
            local_pct,
            min_pct,
            max_pct,
            liquidity,
            why_not,
        } = a
        else {
            return Err(corrupt("rebalance", "not a rebalance action"));
        };
        let Some(mv) = liquidity else {
            return Ok(result(a, status::SKIPPED, why_not.unwrap_or_default()));
        };
        let (Some(budget), Some(fee_limit_msat)) = (&policy.rebalance, mv.fee_limit_msat) else {
            return Ok(result(
                a,
                status::SKIPPED,
                "the policy has no [rebalance] section: lightning-ops rebalances only within a max_fee_ppm and a budget_msat_per_day",
            ));
        };
        let (history, wait) = self
            .retry_wait(store::REBALANCE, Subject::Channel(chan_id), now)
            .await?;
        if let Some(not_before) = wait {
            return Ok(deferred(
                a,
                not_before,
                format!(
                    "the channel's last rebalance failed less than {} s ago",
                    self.settings.min_update_interval.as_secs()
                ),
            ));
        }
        let ask = RebalanceAsk {
            out_chan_id: mv.out_chan_id,
            in_chan_id: mv.in_chan_id,
            amount_msat: mv.amount_msat,
            fee_limit_msat,
        };
        let row = ActionRow {
            action_id: new_action_id(),
            idempotency_key: rebalance_key(chan_id, history.finished, &ask)?,
            kind: store::REBALANCE.into(),
            chan_id,
            channel_id: channel_id.clone(),
            previous: json!({"local_pct": local_pct, "min_pct": min_pct, "max_pct": max_pct})
                .to_string(),
            desired: serde_json::to_string(&ask).map_err(|e| corrupt("rebalance", e))?,
            source: "band".into(),
            description: a.to_string(),
            status: store::PENDING.into(),
            created_at_ms: now,
            fee_limit_msat: Some(fee_limit_msat),
            ..ActionRow::default()
        };
        let (day_start, day_end) = budget_day(now);
        let mut tx = self.db.begin().await?;
        let held = store::rebalance_spent(&mut tx, day_start, day_end).await?;
        let needed = held.checked_add(Msat::new(fee_limit_msat)?)?;
        if needed.as_u64() > budget.budget_msat_per_day {
            tx.rollback().await?;
            return Ok(deferred(
                a,
                day_end,
                format!(
                    "BUDGET_EXHAUSTED: today's (UTC) rebalances hold {} msat of the {} msat daily budget and this one's fee limit of {fee_limit_msat} msat does not fit; planned again from the next UTC day",
                    held.as_u64(),
                    budget.budget_msat_per_day
                ),
            ));
        }
        if dry_run {
            tx.rollback().await?;
            return Ok(result(a, status::PLANNED, ""));
        }
        let inserted = store::insert_action(&mut tx, &row).await?;
        tx.commit().await?;
        self.drive_recorded(row, inserted).await
    }

    pub(crate) async fn drive_rebalance(
        &self,
        row: &ActionRow,
    ) -> Result<ops::ActionResult, OpsError> {
        let ask: RebalanceAsk =
            serde_json::from_str(&row.desired).map_err(|e| corrupt("desired", e))?;
        let answer = match self.channels()?.rebalance(&row.idempotency_key, &ask).await {
            Ok(a) => a,
            Err(e) => return self.executor_refused(row, &e).await,
        };
        let succeeded = match answer.state {
            RebalanceState::InFlight => {
                return Ok(row_result(
                    row,
                    status::PENDING,
                    format!(
                        "IN_FLIGHT: the rebalance payment {} is in flight at the node; the executor tracks it to its end and the next apply or tick asks again with the same key",
                        answer.payment_hash
                    ),
                ));
            }
            RebalanceState::Succeeded => true,
            RebalanceState::Failed => false,
        };
        let Some(executor_receipt) = &answer.receipt else {
            return self
                .bad_receipt(row, "an ended rebalance came without a receipt")
                .await;
        };
        if let Err(why) = self.check_rebalance_receipt(executor_receipt, &ask, &answer) {
            return self.bad_receipt(row, &why).await;
        }
        let fee = Msat::new(answer.fee_msat)?;
        let amount = Msat::new(ask.amount_msat)?;
        let status_text = if succeeded { "succeeded" } else { "failed" };
        let failure_code = (!succeeded).then_some(answer.failure_code.as_str());
        let body = RebalanceReceiptBody {
            action: store::REBALANCE,
            action_id: &row.action_id,
            channel_id: &row.channel_id,
            out_chan_id: ask.out_chan_id.to_string(),
            in_chan_id: ask.in_chan_id.to_string(),
            payment_hash: &answer.payment_hash,
            status: status_text,
            amount_msat: amount,
            fee_msat: fee,
            fee_limit_msat: Msat::new(ask.fee_limit_msat)?,
            failure_code,
            executor_receipt: executor_receipt.hash.to_string(),
        };
        self.finish_receipted(
            row,
            executor_receipt,
            Finish {
                row_status: if succeeded {
                    store::APPLIED
                } else {
                    store::FAILED
                },
                error_code: failure_code.map(str::to_owned),
                result_status: if succeeded {
                    status::APPLIED
                } else {
                    status::FAILED
                },
                reason: if succeeded {
                    format!(
                        "moved {} msat for a fee of {} msat",
                        ask.amount_msat,
                        fee.as_u64()
                    )
                } else {
                    format!("{}: {}", answer.failure_code, answer.failure_reason)
                },
                event: if succeeded {
                    "rebalance_applied"
                } else {
                    "rebalance_failed"
                },
                event_body: json!({
                    "action_id": row.action_id,
                    "channel_id": row.channel_id,
                    "out_chan_id": ask.out_chan_id.to_string(),
                    "in_chan_id": ask.in_chan_id.to_string(),
                    "amount_msat": ask.amount_msat.to_string(),
                    "fee_msat": fee.as_u64().to_string(),
                    "status": status_text,
                    "executor_receipt": executor_receipt.hash.to_string(),
                }),
                schema: REBALANCE_RECEIPT_SCHEMA,
                body: oa_receipts::body_from(&body)?,
                fee_msat: Some(fee),
                moved: succeeded.then_some((ask.out_chan_id, ask.in_chan_id, amount)),
            },
        )
        .await
    }

    /// A genuine rebalance receipt about this rebalance, agreeing with the executor's answer,
    /// whose fee is within its limit.
    fn check_rebalance_receipt(
        &self,
        r: &Receipt,
        ask: &RebalanceAsk,
        answer: &Rebalanced,
    ) -> Result<(), String> {
        self.check_genuine(r, EXECUTOR_REBALANCE_SCHEMA)?;
        let status = if answer.state == RebalanceState::Succeeded {
            "succeeded"
        } else {
            "failed"
        };
        expect_fields(
            r,
            &[
                ("out_chan_id", ask.out_chan_id.to_string()),
                ("in_chan_id", ask.in_chan_id.to_string()),
                ("amount_msat", ask.amount_msat.to_string()),
                ("fee_limit_msat", ask.fee_limit_msat.to_string()),
                ("payment_hash", answer.payment_hash.clone()),
                ("status", status.to_owned()),
                ("fee_msat", answer.fee_msat.to_string()),
            ],
        )?;
        // The money invariant: a rebalance never pays more than the limit it was asked with.
        if answer.fee_msat > ask.fee_limit_msat {
            return Err(format!(
                "its fee {} msat is above the fee limit {} msat",
                answer.fee_msat, ask.fee_limit_msat
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_day_is_the_utc_calendar_day() {
        // 2023-11-14 22:00 UTC.
        let t = 1_699_999_200_000;
        let (start, end) = budget_day(t);
        assert_eq!(start, 1_699_920_000_000);
        assert_eq!(end - start, DAY_MS);
        assert_eq!(end, t + 2 * 3_600_000);
        assert_eq!(budget_day(end).0, end);
    }
}
