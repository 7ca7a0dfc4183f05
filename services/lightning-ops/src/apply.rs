//! `apply`: executes the current plan through the wallet-executor.
//!
//! Each run first re-drives actions an earlier run left pending, then observes the node, plans,
//! and handles each planned action:
//!
//! - `set_policy` is executed with `UpdateChannelPolicy`, unless the channel's last change
//!   finished less than `min_update_interval` ago: then it is *deferred*, stored in
//!   `ops_deferred` with `not_before_ms`, and executed by the first apply or reconcile tick at or
//!   after that time (with the policy desired then). A deferral whose channel already matches the
//!   policy when it comes due (or is gone) ends `satisfied`; none is dropped unseen.
//! - `rebalance`, `open` and `close` answer `not_supported` until the custody channel can execute
//!   them (each will be one arm of [`Ops::execute`]); health flags are `skipped`.
//!
//! Idempotency, end to end. An action's executor idempotency key is derived from the channel,
//! the desired policy and the channel's *generation* (how many of its changes finished before):
//! `ops-policy-<chan_id>-<generation>-<digest>`. The same plan retried gets the same key, so the
//! executor changes the node once; a later change back to an earlier policy (a rollback) gets a
//! new generation, hence a new key, so the executor does not replay the old answer. The action
//! row is committed `pending` before the executor is called; if the process dies after the
//! executor acted, the next run re-drives it with the same key, the executor replays its answer
//! and receipt, and the action finishes then. Once the node matches the policy the plan is empty,
//! so applying the same policy again changes nothing.
//!
//! Each executed action commits, in one transaction: the action's terminal state, the closing of
//! its deferral, a journal event (`ops.actions`) and lightning-ops's receipt
//! (`oa.ops.channel_action_receipt.v1`), which links the executor's
//! `channel_policy_receipt` (verified first: signature, trusted key, same channel and policy).

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
use serde_json::json;

use crate::{
    error::OpsError,
    ops::Ops,
    plan::{self, Action, Fees},
    store::{self, ActionRow},
};

/// Schema of lightning-ops's receipt for an executed channel action.
pub const ACTION_RECEIPT_SCHEMA: &str = "oa.ops.channel_action_receipt.v1";
/// Schema of the executor's receipt for a policy change, which ours links.
pub const EXECUTOR_POLICY_SCHEMA: &str = "oa.wallet_executor.channel_policy_receipt.v1";
/// Journal topic of executed, deferred and failed actions.
pub const ACTIONS_TOPIC: &str = "ops.actions";

/// Statuses of an [`ops::ActionResult`].
pub mod status {
    pub const APPLIED: &str = "applied";
    pub const DEFERRED: &str = "deferred";
    pub const PLANNED: &str = "planned";
    pub const NOT_SUPPORTED: &str = "not_supported";
    pub const SKIPPED: &str = "skipped";
    pub const FAILED: &str = "failed";
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
    previous_base_fee_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    previous_fee_rate_ppm: u64,
    /// Hash of the executor's `channel_policy_receipt` (also in `links`).
    executor_receipt: String,
}

/// The executor idempotency key of a policy change: deterministic in the channel, its
/// generation (finished changes before this one) and the desired policy.
pub fn action_key(chan_id: u64, generation: u64, to: &Fees) -> Result<String, OpsError> {
    let digest = idempotency::fingerprint(to)?;
    Ok(format!(
        "ops-policy-{chan_id}-{generation}-{}",
        digest.get(..16).unwrap_or(&digest)
    ))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> OpsError {
    OpsError::Store(StoreError::Corrupt(format!("{what}: {e}")))
}

/// An executor error worth retrying with the same key (the executor may not have seen the call,
/// or may see it later); any other refusal is final for this action.
fn is_transient(e: &ApiError) -> bool {
    e.retryable
        || e.status.is_server_error()
        || matches!(e.status.as_u16(), 401 | 403 | 408 | 409 | 429)
}

fn kind_and_channel(a: &Action) -> (&'static str, String) {
    match a {
        Action::SetPolicy { channel_id, .. } => ("set_policy", channel_id.clone()),
        Action::Rebalance { channel_id, .. } => ("rebalance", channel_id.clone()),
        Action::Open { .. } => ("open", String::new()),
        Action::Close { channel_id, .. } => ("close", channel_id.clone()),
        Action::Flag { channel_id, .. } => ("flag", channel_id.clone()),
    }
}

fn result(a: &Action, status: &str, reason: impl Into<String>) -> ops::ActionResult {
    let (action, channel_id) = kind_and_channel(a);
    ops::ActionResult {
        action: action.into(),
        channel_id,
        description: a.to_string(),
        status: status.into(),
        reason: reason.into(),
        ..Default::default()
    }
}

fn row_result(row: &ActionRow, status: &str, reason: impl Into<String>) -> ops::ActionResult {
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
        // Channels whose earlier change is still unconfirmed: nothing new is planned for them
        // until it is.
        let mut blocked = BTreeSet::new();
        if !dry_run {
            let pending = store::pending_actions(&mut *self.conn().await?).await?;
            for row in pending {
                let r = self.drive(&row).await;
                if r.status != status::APPLIED {
                    blocked.insert(row.chan_id);
                }
                results.push(r);
            }
        }
        let observed = self.observe().await?;
        let by_id: HashMap<String, u64> = observed
            .iter()
            .map(|c| (plan::channel_id(c.chan_id), c.chan_id))
            .collect();
        let actions = plan::plan(&policy, &observed);
        let now = self.clock.now_ms();
        let mut changing = BTreeSet::new();
        for a in &actions {
            if let Action::SetPolicy { channel_id, .. } = a
                && let Some(&chan_id) = by_id.get(channel_id)
            {
                changing.insert(chan_id);
                if blocked.contains(&chan_id) {
                    continue;
                }
                results.push(self.execute(a, chan_id, now, dry_run).await);
            } else {
                results.push(self.execute(a, 0, now, dry_run).await);
            }
        }
        if !dry_run {
            self.close_satisfied(&changing, &blocked, now).await?;
        }
        Ok(results)
    }

    /// One planned action. This is where actions become executable: open, close and rebalance
    /// (with its cost recorded by [`crate::report::record_rebalance_in`]) join `set_policy` here
    /// once the custody channel has their RPCs.
    async fn execute(
        &self,
        a: &Action,
        chan_id: u64,
        now: u64,
        dry_run: bool,
    ) -> ops::ActionResult {
        match a {
            Action::SetPolicy { .. } => match self.set_policy(a, chan_id, now, dry_run).await {
                Ok(r) => r,
                Err(e) => result(a, status::FAILED, api_reason(&e.to_api())),
            },
            Action::Rebalance { .. } => result(
                a,
                status::NOT_SUPPORTED,
                "rebalancing is not executable yet: the wallet-executor's custody channel has no rebalance RPC",
            ),
            Action::Open { .. } => result(
                a,
                status::NOT_SUPPORTED,
                "opening channels is not executable yet: the wallet-executor's custody channel has no open RPC",
            ),
            Action::Close { .. } => result(
                a,
                status::NOT_SUPPORTED,
                "closing channels is not executable yet: the wallet-executor's custody channel has no close RPC",
            ),
            Action::Flag { flag, .. } => result(a, status::SKIPPED, format!("health flag {flag}")),
        }
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
        let (generation, last) = store::finished_history(&mut *self.conn().await?, chan_id).await?;
        let interval_ms =
            u64::try_from(self.settings.min_update_interval.as_millis()).unwrap_or(u64::MAX);
        if let Some(not_before) = last.map(|l| l.saturating_add(interval_ms))
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
            let mut r = result(
                a,
                status::DEFERRED,
                format!(
                    "the channel's policy last changed less than {} s ago",
                    self.settings.min_update_interval.as_secs()
                ),
            );
            r.not_before_ms = not_before;
            return Ok(r);
        }
        if dry_run {
            return Ok(result(a, status::PLANNED, ""));
        }
        let row = ActionRow {
            action_id: format!("act_{}", uuid::Uuid::now_v7().simple()),
            idempotency_key: action_key(chan_id, generation, to)?,
            kind: "set_policy".into(),
            chan_id,
            channel_id: channel_id.clone(),
            previous: serde_json::to_string(from).map_err(|e| corrupt("fees", e))?,
            desired,
            source: source.clone(),
            description: a.to_string(),
            status: store::PENDING.into(),
            created_at_ms: now,
            finished_at_ms: None,
            executor_receipt_hash: None,
            receipt_hash: None,
            error_code: None,
        };
        let mut tx = self.db.begin().await?;
        let inserted = store::insert_action(&mut tx, &row).await?;
        tx.commit().await?;
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

    /// Asks the executor to carry out a pending action and records the outcome.
    async fn drive(&self, row: &ActionRow) -> ops::ActionResult {
        match self.try_drive(row).await {
            Ok(r) => r,
            Err(e) => row_result(row, status::FAILED, api_reason(&e.to_api())),
        }
    }

    async fn try_drive(&self, row: &ActionRow) -> Result<ops::ActionResult, OpsError> {
        let to: Fees = serde_json::from_str(&row.desired).map_err(|e| corrupt("desired", e))?;
        let previous: Fees =
            serde_json::from_str(&row.previous).map_err(|e| corrupt("previous", e))?;
        let answer = self
            .channels()?
            .update_policy(&row.idempotency_key, row.chan_id, &to)
            .await;
        let executor_receipt = match answer {
            Ok(r) => r,
            Err(e) if is_transient(&e) => {
                return Ok(row_result(
                    row,
                    status::FAILED,
                    format!("{} (retried with the same key next time)", api_reason(&e)),
                ));
            }
            Err(e) => return self.finish_failed(row, &e.code, &api_reason(&e)).await,
        };
        if let Err(why) = self.check_executor_receipt(&executor_receipt, row.chan_id, &to) {
            return self
                .finish_failed(
                    row,
                    "BAD_EXECUTOR_RECEIPT",
                    &format!("BAD_EXECUTOR_RECEIPT: {why}"),
                )
                .await;
        }
        let now = self.clock.now_ms();
        let executor_hash = executor_receipt.hash.to_string();
        let mut tx = self.db.begin().await?;
        if !store::finish_action(
            &mut tx,
            &row.action_id,
            store::APPLIED,
            now,
            Some(&executor_hash),
            None,
            None,
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
        store::close_deferral(
            &mut tx,
            row.chan_id,
            store::APPLIED,
            Some(&row.action_id),
            now,
        )
        .await?;
        journal::append(
            &mut tx,
            ACTIONS_TOPIC,
            "policy_applied",
            &json!({"action_id": row.action_id, "channel_id": row.channel_id, "desired": to, "executor_receipt": executor_hash}),
            now,
        )
        .await?;
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
            previous_base_fee_msat: Msat::new(previous.base_fee_msat)?,
            previous_fee_rate_ppm: u64::from(previous.fee_rate_ppm),
            executor_receipt: executor_hash.clone(),
        };
        let draft = ReceiptDraft {
            schema: ACTION_RECEIPT_SCHEMA.into(),
            receipt_id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
            idempotency_key: row.idempotency_key.clone(),
            links: vec![executor_receipt.hash],
            body: oa_receipts::body_from(&body)?,
        };
        let receipt = self.log.append(&mut tx, draft, now).await?;
        let receipt_hash = receipt.hash.to_string();
        store::set_receipt_hash(&mut tx, &row.action_id, &receipt_hash).await?;
        tx.commit().await?;
        let mut r = row_result(row, status::APPLIED, "");
        r.receipt_hash = receipt_hash;
        r.executor_receipt_hash = executor_hash;
        Ok(r)
    }

    async fn finish_failed(
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
                "policy_failed",
                &json!({"action_id": row.action_id, "channel_id": row.channel_id, "code": code}),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(row_result(row, status::FAILED, reason))
    }

    /// The executor's receipt must be genuine (signature, trusted key) and about this change.
    fn check_executor_receipt(&self, r: &Receipt, chan_id: u64, to: &Fees) -> Result<(), String> {
        r.verify().map_err(|e| e.to_string())?;
        let keys = &self.settings.executor_receipt_keys;
        if !keys.is_empty() && !keys.contains(&r.issuer.key_id) {
            return Err("signed by an untrusted key".into());
        }
        if r.schema != EXECUTOR_POLICY_SCHEMA {
            return Err(format!(
                "schema {} is not {EXECUTOR_POLICY_SCHEMA}",
                r.schema
            ));
        }
        let expected = [
            ("chan_id", chan_id.to_string()),
            ("base_fee_msat", to.base_fee_msat.to_string()),
            ("fee_rate_ppm", to.fee_rate_ppm.to_string()),
            ("min_htlc_msat", to.min_htlc_msat.to_string()),
            ("max_htlc_msat", to.max_htlc_msat.to_string()),
            ("time_lock_delta", to.time_lock_delta.to_string()),
        ];
        for (field, value) in expected {
            if r.body.get(field).and_then(|v| v.as_str()) != Some(value.as_str()) {
                return Err(format!("its {field} is not {value}"));
            }
        }
        Ok(())
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
