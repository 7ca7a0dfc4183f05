//! `apply`: executes the current plan through the wallet-executor.
//!
//! Each run first re-drives actions an earlier run left pending, then observes the node, plans
//! (with what is under way, [`crate::plan::Known`]), and handles each planned action:
//!
//! - `set_policy` is executed with `UpdateChannelPolicy` (inbound fees included), unless the
//!   channel's last policy change finished less than `min_update_interval` ago: then it is
//!   *deferred*, stored in `ops_deferred` with `not_before_ms`, and executed by the first apply or
//!   reconcile tick at or after that time (with the policy desired then). A deferral whose channel
//!   already matches the policy when it comes due (or is gone) ends `satisfied`; none is dropped
//!   unseen.
//! - `rebalance` is executed with `Rebalance` within the policy's `[rebalance]` budget
//!   (`rebalance.rs`): its fee limit must fit in what the UTC day's rebalances left of
//!   `budget_msat_per_day`, else it is *deferred* to the next UTC day (`BUDGET_EXHAUSTED`, not
//!   stored: the next day's plan decides afresh). Its cost is recorded for the P&L with its receipt.
//! - `open` and `close` are executed with `OpenChannel` and `CloseChannel` (`lifecycle.rs`).
//! - A rebalance, open or close that the executor refused is tried again (re-planned, new key)
//!   no sooner than `min_update_interval` after it failed: deferred until then.
//! - Health flags, and rebalances without a counterpart or a budget, are `skipped`.
//!
//! Idempotency, end to end. An action's executor idempotency key is derived from what it acts on,
//! what it asks and the *generation* (how many actions of its kind on the same channel, or peer
//! for an open, finished before): `ops-policy-<chan_id>-<generation>-<digest>`,
//! `ops-rebalance-<chan_id>-...`, `ops-open-<peer>-...`, `ops-close-<chan_id>-...`. The same plan
//! retried gets the same key, so the executor acts once; a later change back to an earlier policy
//! (a rollback) or a second rebalance gets a new generation, hence a new key, so the executor does
//! not replay the old answer. The action row is committed `pending` before the executor is
//! called; if the process dies after the executor acted, the next run re-drives it with the same
//! key, the executor replays its answer and receipt, and the action finishes then. Once the node
//! matches the policy the plan is empty, so applying the same policy again changes nothing.
//!
//! An action the executor has not finished stays `pending` (result status `pending`): a rebalance
//! in flight (the executor tracks it; the next run asks again and gets its end), or an open or
//! rebalance *in doubt* (`IDEMPOTENCY_IN_PROGRESS`: the executor stopped while asking the node and
//! will not ask again, lest it open twice or pay twice). An operator settles those (runbook).
//!
//! Each executed action commits, in one transaction: the action's terminal state, the closing of
//! its deferral, a journal event (`ops.actions`), for a rebalance its cost
//! ([`crate::report::record_rebalance_in`]), and lightning-ops's receipt, which links the
//! executor's receipt (verified first: signature, trusted key, same channel and request):
//! `oa.ops.channel_action_receipt.v1` (policy change) links `channel_policy_receipt`,
//! `oa.ops.rebalance_receipt.v1` links `rebalance_receipt`, `oa.ops.channel_open_receipt.v1` and
//! `oa.ops.channel_close_receipt.v1` link `channel_action_receipt`.

use std::collections::{BTreeSet, HashMap};

use oa_money::Msat;
use oa_proto::ops;
use oa_receipts::{Receipt, ReceiptDraft};
use oa_service::ApiError;
use oa_store::{
    StoreError,
    idempotency::{self, Claim},
    journal,
};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{
    error::OpsError,
    ops::Ops,
    plan::{self, Action, Fees},
    report,
    store::{self, ActionRow, Subject},
};

/// Schema of lightning-ops's receipt for an executed policy change.
pub const ACTION_RECEIPT_SCHEMA: &str = "oa.ops.channel_action_receipt.v1";
/// Schema of the executor's receipt for a policy change, which ours links.
pub const EXECUTOR_POLICY_SCHEMA: &str = "oa.wallet_executor.channel_policy_receipt.v1";
/// Journal topic of executed, deferred and failed actions.
pub const ACTIONS_TOPIC: &str = "ops.actions";
/// The executor's code for a key whose first request has not finished (for an open or a
/// rebalance: its outcome is unknown, and the executor will not ask the node again).
pub const IN_PROGRESS: &str = "IDEMPOTENCY_IN_PROGRESS";

/// Statuses of an [`ops::ActionResult`].
pub mod status {
    pub const APPLIED: &str = "applied";
    pub const DEFERRED: &str = "deferred";
    pub const PLANNED: &str = "planned";
    pub const PENDING: &str = "pending";
    pub const NOT_SUPPORTED: &str = "not_supported";
    pub const SKIPPED: &str = "skipped";
    pub const FAILED: &str = "failed";
}

/// Serializes a signed integer as a decimal string (receipts hold no JSON numbers).
pub(crate) fn signed_string<S: serde::Serializer, T: std::fmt::Display>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[derive(Serialize)]
struct ActionReceiptBody<'a> {
    action: &'a str,
    action_id: &'a str,
    channel_id: &'a str,
    /// Decimal short channel id, as the executor's receipt names it.
    chan_id: String,
    /// Where the desired policy came from: `channel`, `group:<name>` or `default`.
    source: &'a str,
    base_fee_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    fee_rate_ppm: u64,
    min_htlc_msat: Msat,
    max_htlc_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    time_lock_delta: u64,
    /// Signed (a negative inbound fee is a discount), named as in the executor's receipt.
    #[serde(serialize_with = "signed_string")]
    inbound_base_fee_msat: i64,
    #[serde(serialize_with = "signed_string")]
    inbound_fee_rate_ppm: i32,
    previous_base_fee_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    previous_fee_rate_ppm: u64,
    #[serde(serialize_with = "signed_string")]
    previous_inbound_base_fee_msat: i64,
    #[serde(serialize_with = "signed_string")]
    previous_inbound_fee_rate_ppm: i32,
    /// Hash of the executor's `channel_policy_receipt` (also in `links`).
    executor_receipt: String,
}

/// An executor idempotency key: `ops-<kind>-<subject>-<generation>-<digest>`, deterministic in
/// what is acted on, how many actions of the kind on it finished before, and what is asked.
pub(crate) fn key_for(
    kind: &str,
    subject: &str,
    generation: u64,
    asked: &impl Serialize,
) -> Result<String, OpsError> {
    let digest = idempotency::fingerprint(asked)?;
    Ok(format!(
        "ops-{kind}-{subject}-{generation}-{}",
        digest.get(..16).unwrap_or(&digest)
    ))
}

/// The executor idempotency key of a policy change: deterministic in the channel, its
/// generation (finished changes before this one) and the desired policy.
pub fn action_key(chan_id: u64, generation: u64, to: &Fees) -> Result<String, OpsError> {
    key_for("policy", &chan_id.to_string(), generation, to)
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> OpsError {
    OpsError::Store(StoreError::Corrupt(format!("{what}: {e}")))
}

/// An executor error worth retrying with the same key (the executor may not have seen the call,
/// or may see it later); any other refusal is final for this action.
fn is_transient(e: &ApiError) -> bool {
    e.retryable
        || e.status.is_server_error()
        || matches!(e.status.as_u16(), 401 | 403 | 408 | 409 | 429)
}

pub(crate) fn result(a: &Action, status: &str, reason: impl Into<String>) -> ops::ActionResult {
    ops::ActionResult {
        action: a.kind().into(),
        channel_id: a.channel_id().to_owned(),
        description: a.to_string(),
        status: status.into(),
        reason: reason.into(),
        ..Default::default()
    }
}

pub(crate) fn deferred(a: &Action, not_before_ms: u64, reason: String) -> ops::ActionResult {
    let mut r = result(a, status::DEFERRED, reason);
    r.not_before_ms = not_before_ms;
    r
}

pub(crate) fn row_result(
    row: &ActionRow,
    status: &str,
    reason: impl Into<String>,
) -> ops::ActionResult {
    ops::ActionResult {
        action: row.kind.clone(),
        channel_id: row.channel_id.clone(),
        description: row.description.clone(),
        status: status.into(),
        reason: reason.into(),
        action_id: row.action_id.clone(),
        idempotency_key: row.idempotency_key.clone(),
        receipt_hash: row.receipt_hash.clone().unwrap_or_default(),
        executor_receipt_hash: row.executor_receipt_hash.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn api_reason(e: &ApiError) -> String {
    format!("{}: {}", e.code, e.message)
}

/// The prefix of an action kind's journal events (`policy_applied`, `rebalance_failed`, ...).
fn event_prefix(kind: &str) -> &str {
    if kind == store::SET_POLICY {
        "policy"
    } else {
        kind
    }
}

/// What the operator is told about an open or rebalance in doubt.
fn in_doubt_reason(row: &ActionRow) -> String {
    let what = if row.kind == store::OPEN {
        "opened this channel; the open intent is not proposed again while the action is pending"
    } else {
        "sent this rebalance; its fee limit stays counted against the day's budget and its channels \
         get no other rebalance while the action is pending"
    };
    format!(
        "{IN_PROGRESS}: the executor does not know whether the node {what}. The executor will not \
         ask the node again under this key: settle it at the executor (runbook lightning-ops, \
         section 6); every apply asks again with the same key until it ends"
    )
}

/// How an executed action ends, for [`Ops::finish_receipted`].
pub(crate) struct Finish {
    /// `applied`, or `failed` (with `error_code`) for a rebalance the node could not make.
    pub row_status: &'static str,
    pub error_code: Option<String>,
    /// What the result says (`applied` or `failed`) and why.
    pub result_status: &'static str,
    pub reason: String,
    pub event: &'static str,
    pub event_body: Value,
    pub schema: &'static str,
    pub body: Map<String, Value>,
    /// A rebalance's fee, and (when it succeeded) its move, recorded for the P&L:
    /// `(out_chan_id, in_chan_id, amount)`.
    pub fee_msat: Option<Msat>,
    pub moved: Option<(u64, u64, Msat)>,
}

impl Ops {
    /// `POST /v1/ops/apply`: the idempotent envelope around [`Ops::apply`]. The key is claimed
    /// before anything runs and the response stored once the run finished; a retry of a run that
    /// was interrupted (its claim still in progress) runs again, which is safe because every
    /// action is idempotent by its own key.
    pub async fn apply_request(
        &self,
        caller: &str,
        req: &ops::ApplyRequest,
    ) -> Result<ops::ApplyResponse, OpsError> {
        if req.dry_run {
            if !req.idempotency_key.is_empty() {
                idempotency::validate_key(&req.idempotency_key)?;
            }
            return Ok(ops::ApplyResponse {
                dry_run: true,
                results: self.apply(true).await?,
            });
        }
        idempotency::validate_key(&req.idempotency_key)?;
        self.policy()?;
        self.channels()?;
        // Held across the claim and the run: while this process holds it no other apply runs,
        // so a claim found in progress under it was interrupted (by a crash) and is resumed.
        let _running = self.apply_lock.lock().await;
        let scope = format!("ops.apply/{caller}");
        let fingerprint = idempotency::fingerprint(req)?;
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        match idempotency::claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await? {
            Claim::Conflict => return Err(OpsError::IdempotencyConflict),
            Claim::Replay { response, .. } => {
                tx.rollback().await?;
                return oa_service::parse_json(response.as_bytes())
                    .map_err(|e| corrupt("stored apply response", e.message));
            }
            Claim::InProgress { .. } => tx.rollback().await?,
            Claim::New => tx.commit().await?,
        }
        let response = ops::ApplyResponse {
            dry_run: false,
            results: self.apply_locked(false).await?,
        };
        let json = serde_json::to_string(&response).map_err(|e| corrupt("apply response", e))?;
        let mut tx = self.db.begin().await?;
        idempotency::complete(
            &mut tx,
            &scope,
            &req.idempotency_key,
            200,
            &json,
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Plans against the node as it is now and executes what is executable (see the module
    /// docs). A dry run changes nothing: it only observes and reports what it would do.
    pub async fn apply(&self, dry_run: bool) -> Result<Vec<ops::ActionResult>, OpsError> {
        let _running = self.apply_lock.lock().await;
        self.apply_locked(dry_run).await
    }

    async fn apply_locked(&self, dry_run: bool) -> Result<Vec<ops::ActionResult>, OpsError> {
        let policy = self.policy()?.clone();
        let mut results = Vec::new();
        // Channels whose earlier policy change is still unconfirmed: no new one is planned for
        // them until it is. (Unfinished rebalances, opens and closes are in the plan's `Known`.)
        let mut blocked = BTreeSet::new();
        let pending = store::pending_actions(&mut *self.conn().await?).await?;
        for row in pending {
            let r = if dry_run {
                row_result(
                    &row,
                    status::PENDING,
                    "left unfinished by an earlier run: the next apply asks the executor again with the same key",
                )
            } else {
                self.drive(&row).await
            };
            if row.kind == store::SET_POLICY && r.status != status::APPLIED {
                blocked.insert(row.chan_id);
            }
            results.push(r);
        }
        let observed = self.observe().await?;
        let known = self.known(&policy).await?;
        let by_id: HashMap<String, u64> = observed
            .iter()
            .map(|c| (plan::channel_id(c.chan_id), c.chan_id))
            .collect();
        let actions = plan::plan_with(&policy, &observed, &known);
        let now = self.clock.now_ms();
        let mut changing = BTreeSet::new();
        for a in &actions {
            let chan_id = by_id.get(a.channel_id()).copied().unwrap_or(0);
            if let Action::SetPolicy { .. } = a {
                changing.insert(chan_id);
                if blocked.contains(&chan_id) {
                    continue;
                }
            }
            let r = match a {
                Action::SetPolicy { .. } => self.set_policy(a, chan_id, now, dry_run).await,
                Action::Rebalance { .. } => self.rebalance(a, chan_id, now, dry_run, &policy).await,
                Action::Open { .. } => self.open(a, now, dry_run).await,
                Action::Close { .. } => self.close(a, chan_id, now, dry_run).await,
                Action::Flag { flag, .. } => {
                    Ok(result(a, status::SKIPPED, format!("health flag {flag}")))
                }
            };
            results.push(r.unwrap_or_else(|e| result(a, status::FAILED, api_reason(&e.to_api()))));
        }
        if !dry_run {
            self.close_satisfied(&changing, &blocked, now).await?;
        }
        Ok(results)
    }

    /// The time before which a new action of `kind` on `subject` waits after one failed, if
    /// that is after `now`.
    pub(crate) async fn retry_wait(
        &self,
        kind: &str,
        subject: Subject<'_>,
        now: u64,
    ) -> Result<(store::History, Option<u64>), OpsError> {
        let history = store::history(&mut *self.conn().await?, kind, subject).await?;
        let interval_ms = self.interval_ms();
        let not_before = history
            .last_failed_ms
            .map(|t| t.saturating_add(interval_ms))
            .filter(|t| now < *t);
        Ok((history, not_before))
    }

    pub(crate) fn interval_ms(&self) -> u64 {
        u64::try_from(self.settings.min_update_interval.as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a new action `pending` (before the executor is asked) and drives it; if its key
    /// is recorded already (planned again before it finished), drives that row instead.
    pub(crate) async fn record_and_drive(
        &self,
        row: ActionRow,
    ) -> Result<ops::ActionResult, OpsError> {
        let mut tx = self.db.begin().await?;
        let inserted = store::insert_action(&mut tx, &row).await?;
        tx.commit().await?;
        self.drive_recorded(row, inserted).await
    }

    /// Drives `row` just inserted (or, when `inserted` is false, the row already under its key).
    pub(crate) async fn drive_recorded(
        &self,
        row: ActionRow,
        inserted: bool,
    ) -> Result<ops::ActionResult, OpsError> {
        let row = if inserted {
            row
        } else {
            store::action_by_key(&mut *self.conn().await?, &row.idempotency_key)
                .await?
                .ok_or_else(|| corrupt("ops_actions", "a conflicting key has no row"))?
        };
        if row.status != store::PENDING {
            return Ok(row_result(&row, &row.status, "already finished"));
        }
        Ok(self.drive(&row).await)
    }

    async fn set_policy(
        &self,
        a: &Action,
        chan_id: u64,
        now: u64,
        dry_run: bool,
    ) -> Result<ops::ActionResult, OpsError> {
        let Action::SetPolicy {
            channel_id,
            from,
            to,
            source,
        } = a
        else {
            return Err(corrupt("set_policy", "not a set_policy action"));
        };
        let desired = serde_json::to_string(to).map_err(|e| corrupt("fees", e))?;
        let history = store::history(
            &mut *self.conn().await?,
            store::SET_POLICY,
            Subject::Channel(chan_id),
        )
        .await?;
        if let Some(not_before) = history
            .last_finished_ms
            .map(|l| l.saturating_add(self.interval_ms()))
            && now < not_before
        {
            if !dry_run {
                let mut tx = self.db.begin().await?;
                let changed = store::defer(
                    &mut tx,
                    &format!("def_{}", uuid::Uuid::now_v7().simple()),
                    chan_id,
                    channel_id,
                    &desired,
                    &a.to_string(),
                    not_before,
                    now,
                )
                .await?;
                if changed {
                    journal::append(
                        &mut tx,
                        ACTIONS_TOPIC,
                        "policy_deferred",
                        &json!({"channel_id": channel_id, "not_before_ms": not_before.to_string(), "desired": to}),
                        now,
                    )
                    .await?;
                }
                tx.commit().await?;
            }
            return Ok(deferred(
                a,
                not_before,
                format!(
                    "the channel's policy last changed less than {} s ago",
                    self.settings.min_update_interval.as_secs()
                ),
            ));
        }
        if dry_run {
            return Ok(result(a, status::PLANNED, ""));
        }
        self.record_and_drive(ActionRow {
            action_id: new_action_id(),
            idempotency_key: action_key(chan_id, history.finished, to)?,
            kind: store::SET_POLICY.into(),
            chan_id,
            channel_id: channel_id.clone(),
            previous: serde_json::to_string(from).map_err(|e| corrupt("fees", e))?,
            desired,
            source: source.clone(),
            description: a.to_string(),
            status: store::PENDING.into(),
            created_at_ms: now,
            ..ActionRow::default()
        })
        .await
    }

    /// Asks the executor to carry out a pending action and records the outcome.
    pub(crate) async fn drive(&self, row: &ActionRow) -> ops::ActionResult {
        let outcome = match row.kind.as_str() {
            store::SET_POLICY => self.drive_policy(row).await,
            store::REBALANCE => self.drive_rebalance(row).await,
            store::OPEN => self.drive_open(row).await,
            store::CLOSE => self.drive_close(row).await,
            other => Err(corrupt("ops_actions", format!("unknown kind {other}"))),
        };
        outcome.unwrap_or_else(|e| row_result(row, status::FAILED, api_reason(&e.to_api())))
    }

    /// What an executor error means for a pending action (see the module docs).
    pub(crate) async fn executor_refused(
        &self,
        row: &ActionRow,
        e: &ApiError,
    ) -> Result<ops::ActionResult, OpsError> {
        if e.code == IN_PROGRESS && (row.kind == store::OPEN || row.kind == store::REBALANCE) {
            return Ok(row_result(row, status::PENDING, in_doubt_reason(row)));
        }
        if e.code == "NOT_SUPPORTED" {
            // The executor's node backend cannot do this (it undid the request): final.
            let mut r = self
                .finish_failed(row, "NOT_SUPPORTED", &api_reason(e))
                .await?;
            r.status = status::NOT_SUPPORTED.into();
            return Ok(r);
        }
        if is_transient(e) {
            return Ok(row_result(
                row,
                status::FAILED,
                format!("{} (retried with the same key next time)", api_reason(e)),
            ));
        }
        self.finish_failed(row, &e.code, &api_reason(e)).await
    }

    async fn drive_policy(&self, row: &ActionRow) -> Result<ops::ActionResult, OpsError> {
        let to: Fees = serde_json::from_str(&row.desired).map_err(|e| corrupt("desired", e))?;
        let previous: Fees =
            serde_json::from_str(&row.previous).map_err(|e| corrupt("previous", e))?;
        let answer = self
            .channels()?
            .update_policy(&row.idempotency_key, row.chan_id, &to)
            .await;
        let executor_receipt = match answer {
            Ok(r) => r,
            Err(e) => return self.executor_refused(row, &e).await,
        };
        if let Err(why) = self.check_policy_receipt(&executor_receipt, row.chan_id, &to) {
            return self.bad_receipt(row, &why).await;
        }
        let body = ActionReceiptBody {
            action: &row.kind,
            action_id: &row.action_id,
            channel_id: &row.channel_id,
            chan_id: row.chan_id.to_string(),
            source: &row.source,
            base_fee_msat: Msat::new(to.base_fee_msat)?,
            fee_rate_ppm: u64::from(to.fee_rate_ppm),
            min_htlc_msat: Msat::new(to.min_htlc_msat)?,
            max_htlc_msat: Msat::new(to.max_htlc_msat)?,
            time_lock_delta: u64::from(to.time_lock_delta),
            inbound_base_fee_msat: to.inbound_base_fee_msat,
            inbound_fee_rate_ppm: to.inbound_fee_ppm,
            previous_base_fee_msat: Msat::new(previous.base_fee_msat)?,
            previous_fee_rate_ppm: u64::from(previous.fee_rate_ppm),
            previous_inbound_base_fee_msat: previous.inbound_base_fee_msat,
            previous_inbound_fee_rate_ppm: previous.inbound_fee_ppm,
            executor_receipt: executor_receipt.hash.to_string(),
        };
        self.finish_receipted(
            row,
            &executor_receipt,
            Finish {
                row_status: store::APPLIED,
                error_code: None,
                result_status: status::APPLIED,
                reason: String::new(),
                event: "policy_applied",
                event_body: json!({"action_id": row.action_id, "channel_id": row.channel_id, "desired": to, "executor_receipt": executor_receipt.hash.to_string()}),
                schema: ACTION_RECEIPT_SCHEMA,
                body: oa_receipts::body_from(&body)?,
                fee_msat: None,
                moved: None,
            },
        )
        .await
    }

    /// Ends a pending action with its receipt, linking the executor's, in one transaction: the
    /// action's state, its deferral (a policy change), a rebalance's fee and cost, the journal
    /// event and the receipt.
    pub(crate) async fn finish_receipted(
        &self,
        row: &ActionRow,
        executor_receipt: &Receipt,
        f: Finish,
    ) -> Result<ops::ActionResult, OpsError> {
        let now = self.clock.now_ms();
        let executor_hash = executor_receipt.hash.to_string();
        let mut tx = self.db.begin().await?;
        if !store::finish_action(
            &mut tx,
            &row.action_id,
            f.row_status,
            now,
            Some(&executor_hash),
            None,
            f.error_code.as_deref(),
        )
        .await?
        {
            tx.rollback().await?;
            let stored = store::action_by_key(&mut *self.conn().await?, &row.idempotency_key)
                .await?
                .ok_or_else(|| corrupt("ops_actions", "a finished action has no row"))?;
            return Ok(row_result(
                &stored,
                &stored.status,
                "finished by another run",
            ));
        }
        if row.kind == store::SET_POLICY {
            store::close_deferral(
                &mut tx,
                row.chan_id,
                store::APPLIED,
                Some(&row.action_id),
                now,
            )
            .await?;
        }
        if let Some(fee) = f.fee_msat {
            store::set_fee(&mut tx, &row.action_id, fee.as_u64()).await?;
            if let Some((chan_id_out, chan_id_in, amount_msat)) = f.moved {
                report::record_rebalance_in(
                    &mut tx,
                    &store::Rebalance {
                        rebalance_id: row.action_id.clone(),
                        at_ms: now,
                        chan_id_out,
                        chan_id_in,
                        amount_msat,
                        fee_msat: fee,
                        executor_receipt_hash: Some(executor_hash.clone()),
                    },
                    now,
                )
                .await?;
            }
        }
        journal::append(&mut tx, ACTIONS_TOPIC, f.event, &f.event_body, now).await?;
        let draft = ReceiptDraft {
            schema: f.schema.into(),
            receipt_id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
            idempotency_key: row.idempotency_key.clone(),
            links: vec![executor_receipt.hash],
            body: f.body,
        };
        let receipt = self.log.append(&mut tx, draft, now).await?;
        let receipt_hash = receipt.hash.to_string();
        store::set_receipt_hash(&mut tx, &row.action_id, &receipt_hash).await?;
        tx.commit().await?;
        let mut r = row_result(row, f.result_status, f.reason);
        r.receipt_hash = receipt_hash;
        r.executor_receipt_hash = executor_hash;
        Ok(r)
    }

    /// Ends a pending action whose executor receipt is not acceptable (no receipt of ours).
    pub(crate) async fn bad_receipt(
        &self,
        row: &ActionRow,
        why: &str,
    ) -> Result<ops::ActionResult, OpsError> {
        self.finish_failed(
            row,
            "BAD_EXECUTOR_RECEIPT",
            &format!("BAD_EXECUTOR_RECEIPT: {why}"),
        )
        .await
    }

    pub(crate) async fn finish_failed(
        &self,
        row: &ActionRow,
        code: &str,
        reason: &str,
    ) -> Result<ops::ActionResult, OpsError> {
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        if store::finish_action(
            &mut tx,
            &row.action_id,
            store::FAILED,
            now,
            None,
            None,
            Some(code),
        )
        .await?
        {
            journal::append(
                &mut tx,
                ACTIONS_TOPIC,
                &format!("{}_failed", event_prefix(&row.kind)),
                &json!({"action_id": row.action_id, "channel_id": row.channel_id, "code": code}),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(row_result(row, status::FAILED, reason))
    }

    /// The executor's receipt must be genuine: its signature verifies, with a trusted key, and
    /// it is of the expected class.
    pub(crate) fn check_genuine(&self, r: &Receipt, schema: &str) -> Result<(), String> {
        r.verify().map_err(|e| e.to_string())?;
        let keys = &self.settings.executor_receipt_keys;
        if !keys.is_empty() && !keys.contains(&r.issuer.key_id) {
            return Err("signed by an untrusted key".into());
        }
        if r.schema != schema {
            return Err(format!("schema {} is not {schema}", r.schema));
        }
        Ok(())
    }

    /// A genuine policy receipt about this change: same channel, same policy.
    fn check_policy_receipt(&self, r: &Receipt, chan_id: u64, to: &Fees) -> Result<(), String> {
        self.check_genuine(r, EXECUTOR_POLICY_SCHEMA)?;
        expect_fields(
            r,
            &[
                ("chan_id", chan_id.to_string()),
                ("base_fee_msat", to.base_fee_msat.to_string()),
                ("fee_rate_ppm", to.fee_rate_ppm.to_string()),
                ("min_htlc_msat", to.min_htlc_msat.to_string()),
                ("max_htlc_msat", to.max_htlc_msat.to_string()),
                ("time_lock_delta", to.time_lock_delta.to_string()),
                (
                    "inbound_base_fee_msat",
                    to.inbound_base_fee_msat.to_string(),
                ),
                ("inbound_fee_rate_ppm", to.inbound_fee_ppm.to_string()),
            ],
        )
    }

    /// Ends waiting deferrals of channels this run found nothing to change on.
    async fn close_satisfied(
        &self,
        changing: &BTreeSet<u64>,
        blocked: &BTreeSet<u64>,
        now: u64,
    ) -> Result<(), OpsError> {
        let waiting: Vec<store::DeferralRow> = store::deferrals(&mut *self.conn().await?)
            .await?
            .into_iter()
            .filter(|d| {
                d.status == store::WAITING
                    && !changing.contains(&d.chan_id)
                    && !blocked.contains(&d.chan_id)
            })
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        for d in waiting {
            if store::close_deferral(&mut tx, d.chan_id, store::SATISFIED, None, now).await? {
                journal::append(
                    &mut tx,
                    ACTIONS_TOPIC,
                    "deferral_satisfied",
                    &json!({"deferral_id": d.deferral_id, "channel_id": d.channel_id}),
                    now,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A new action id.
pub(crate) fn new_action_id() -> String {
    format!("act_{}", uuid::Uuid::now_v7().simple())
}

/// Each `(field, value)` is a string field of the receipt's body with that value.
pub(crate) fn expect_fields(r: &Receipt, expected: &[(&str, String)]) -> Result<(), String> {
    for (field, value) in expected {
        if r.body.get(*field).and_then(|v| v.as_str()) != Some(value.as_str()) {
            return Err(format!("its {field} is not {value}"));
        }
    }
    Ok(())
}
