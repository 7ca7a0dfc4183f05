//! New attempts: the decision (shared with the read-ahead and `evaluate`) and the transaction
//! that records them, group-committed like their ends (see [`Creator`]).

use std::sync::Arc;

use oa_money::Msat;
use oa_service::Clock;
use oa_store::{
    Db,
    group::Committer,
    idempotency::{self, Claim},
    journal,
    receipt_log::ReceiptLog,
};
use sqlx::AnyConnection;

use super::{
    Context, Input, Stored, TOPIC, attempt_draft, denial_code, denial_error, enter_rail,
    event_payload, refusal_why, scores_rails, to_json,
};
use crate::{
    budget::{self, BudgetConfig, Kind},
    error::{TreasuryError, corrupt},
    known::KnownSet,
    policy::{self, Decision, Facts, Outcome, Rail},
    store::{
        self, DENIED, IN_FLIGHT, PENDING_APPROVAL, PaymentRow, STAGE_DIRECT, STAGE_NONE,
        STAGE_START,
    },
};

/// Decides new attempts: the policy over the request, the applicable budgets and whether the
/// payee was ever paid.
pub(super) struct Decider {
    /// Budget given to an agent on its first payment (`PaymentsConfig::default_budget`).
    pub(super) default_budget: Msat,
    /// Payees known to have been paid (never forgotten in the database): skips the lookup when
    /// deciding, and the insert when a payment to them succeeds.
    pub(super) payees: Arc<KnownSet>,
}

impl Decider {
    /// Whether a payment to `payee` has ever succeeded.
    async fn payee_known(
        &self,
        conn: &mut AnyConnection,
        payee: &str,
    ) -> Result<bool, TreasuryError> {
        if self.payees.contains(payee) {
            return Ok(true);
        }
        let known = store::is_known_payee(conn, payee).await?;
        if known {
            self.payees.insert(payee.to_owned());
        }
        Ok(known)
    }

    /// The budgets that apply (with the configured default for an agent that has none yet, as
    /// the payment would create it), whether the payee is known, and the policy's decision.
    pub(super) async fn decide_in(
        &self,
        conn: &mut AnyConnection,
        ctx: &Context,
        input: &Input,
    ) -> Result<(Decision, Vec<BudgetConfig>, bool), TreasuryError> {
        let budgets = budget::applicable(
            conn,
            &input.agent_id,
            ctx.org.as_deref(),
            input.host.as_deref(),
        )
        .await?;
        self.decide_with(conn, ctx, input, budgets).await
    }

    /// [`Decider::decide_in`] with the applicable `budgets` already read.
    pub(super) async fn decide_with(
        &self,
        conn: &mut AnyConnection,
        ctx: &Context,
        input: &Input,
        mut budgets: Vec<BudgetConfig>,
    ) -> Result<(Decision, Vec<BudgetConfig>, bool), TreasuryError> {
        if !self.default_budget.is_zero() && !budgets.iter().any(|b| b.kind == Kind::Agent) {
            let at = budgets
                .iter()
                .position(|b| b.kind == Kind::Host)
                .unwrap_or(budgets.len());
            budgets.insert(
                at,
                BudgetConfig::simple(Kind::Agent, &input.agent_id, self.default_budget),
            );
        }
        let payee = &input.invoice.payee_pubkey;
        let payee_known = ctx.policy.payees.known.iter().any(|p| p == payee)
            || budgets
                .iter()
                .any(|b| b.payee_allow.iter().any(|p| p == payee))
            || self.payee_known(conn, payee).await?;
        let facts = Facts {
            agent_id: &input.agent_id,
            org_id: ctx.org.as_deref(),
            host: input.host.as_deref(),
            payee,
            amount: input.invoice.amount,
            max_fee: input.max_fee,
            purpose: &input.purpose,
            source: input.source,
            payee_known,
            risk: ctx.risk.clone(),
        };
        let decision = policy::decide(&ctx.policy, &ctx.bundle_id, &facts, &budgets)?;
        Ok((decision, budgets, payee_known))
    }
}

/// A new request to record: its key, what it is decided on, and the quote asked for it first.
pub(super) struct CreateJob {
    pub(super) payment_id: String,
    /// The idempotency scope, key and request fingerprint.
    pub(super) claim: (String, String, String),
    pub(super) caller: String,
    pub(super) ctx: Context,
    pub(super) input: Input,
    /// Hydra's quote, asked before the transaction: the attempt's if it starts on the direct rail.
    pub(super) quote_id: Option<String>,
    /// When the request came: its row's creation, its approval's expiry, and the budget windows
    /// it reserves in (those its request prepared).
    pub(super) now: u64,
}

/// What recording a new request did.
pub(super) enum Created {
    /// Its key was used before (a replay, a conflict, or a request still running): nothing was
    /// written.
    Used(Claim),
    /// Denied: the stored answer (403).
    Denied(Stored),
    /// Waiting for an approval.
    Waiting,
    /// In flight, as written.
    InFlight(Box<PaymentRow>),
}

/// Records new attempts, many per transaction (group commit, [`oa_store::group`]), as
/// [`super::Finisher`] ends them. Each job's claim, decision, reservation, row and event are all
/// or nothing; a batch shares the `BEGIN` and `COMMIT`, one ledger batch for its reservations,
/// one insert of its rows, one journal append and (for denials) one receipt batch. Each job's
/// reservation sees those of the jobs before it, so budgets are checked as if the requests had
/// come one at a time.
///
/// Locks (on PostgreSQL) are taken in one order by every batch, so two replicas' batches do not
/// deadlock: the keys (claimed in key order), the budgets (one ledger batch, in account order),
/// then the receipt log's head and the journal's, as [`super::Finisher`] takes them. Two rare
/// cases step out of that order: capped reservations (degraded risk), taken one by one after the
/// batch's, and a budget window the request did not find created (its period rolled over, or a
/// budget appeared meanwhile). Should they deadlock, PostgreSQL fails one batch and its jobs are
/// retried one per transaction.
pub(super) struct Creator {
    pub(super) db: Db,
    pub(super) log: ReceiptLog,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) decider: Arc<Decider>,
    pub(super) windows: Arc<budget::KnownWindows>,
}

/// New requests recorded together at most; requests waiting at most before callers wait to queue.
pub(super) const CREATE_BATCH: usize = 64;
pub(super) const CREATE_QUEUE: usize = 1_024;

impl Committer for Creator {
    type Job = CreateJob;
    type Out = Created;
    type Error = TreasuryError;

    async fn commit(&self, jobs: &[CreateJob]) -> Result<Vec<Created>, TreasuryError> {
        let now = self.clock.now_ms();
        // Keys in key order (two requests with one key in arrival order: the sort is stable).
        let key = |i: usize| (&jobs[i].claim.0, &jobs[i].claim.1);
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by(|&a, &b| key(a).cmp(&key(b)));
        let mut tx = self.db.begin().await?;
        let mut out: Vec<Option<Created>> = (0..jobs.len()).map(|_| None).collect();
        let claims: Vec<idempotency::ClaimRequest<'_>> = order
            .iter()
            .map(|&i| {
                let (scope, key, fingerprint) = &jobs[i].claim;
                let id = Some(jobs[i].payment_id.as_str());
                (scope.as_str(), key.as_str(), fingerprint.as_str(), id)
            })
            .collect();
        let mut new = Vec::with_capacity(jobs.len());
        for (i, claim) in order
            .into_iter()
            .zip(idempotency::claim_many(&mut tx, &claims, now).await?)
        {
            match claim {
                Claim::New => new.push(i),
                used => out[i] = Some(Created::Used(used)),
            }
        }
        let payers: Vec<budget::Payer<'_>> = new
            .iter()
            .map(|&i| {
                let (ctx, input) = (&jobs[i].ctx, &jobs[i].input);
                let (org, host) = (ctx.org.as_deref(), input.host.as_deref());
                (input.agent_id.as_str(), org, host)
            })
            .collect();
        let applicable = budget::applicable_many(&mut tx, &payers).await?;
        let mut decided = Vec::with_capacity(new.len());
        for (i, budgets) in new.into_iter().zip(applicable) {
            let (ctx, input) = (&jobs[i].ctx, &jobs[i].input);
            let (decision, budgets, _) = self
                .decider
                .decide_with(&mut tx, ctx, input, budgets)
                .await?;
            decided.push((i, decision, budgets));
        }
        // Reservations: uncapped ones in one ledger batch, capped ones (degraded risk) one by one.
        let reserves = |d: &Decision| d.outcome != Outcome::Deny;
        let requests: Vec<(usize, budget::Request<'_>)> = decided
            .iter()
            .enumerate()
            .filter(|(_, (_, d, _))| reserves(d) && d.budget_cap_bps.is_none())
            .map(|(k, decided)| (k, request(jobs, decided)))
            .collect();
        let many: Vec<budget::Request<'_>> = requests.iter().map(|(_, r)| *r).collect();
        let mut reserved: Vec<Option<budget::Reserved>> =
            (0..decided.len()).map(|_| None).collect();
        let results = budget::reserve_many(&mut tx, &self.windows, &many, now).await?;
        for ((k, _), r) in requests.iter().zip(results) {
            reserved[*k] = Some(r);
        }
        for (k, decided) in decided.iter().enumerate() {
            if let Some(bps) = decided.1.budget_cap_bps.filter(|_| reserves(&decided.1)) {
                let r = budget::reserve_capped(
                    &mut tx,
                    &self.windows,
                    request(jobs, decided),
                    bps,
                    now,
                );
                reserved[k] = Some(r.await?);
            }
        }
        let mut written = Vec::with_capacity(decided.len());
        let mut denied = Vec::new();
        for ((i, decision, _), reserved) in decided.into_iter().zip(reserved) {
            let row = attempt(&jobs[i], decision, reserved)?;
            if row.state == DENIED {
                denied.push((i, row));
            } else {
                written.push((i, row));
            }
        }
        store::insert_many(&mut tx, written.iter().map(|(_, row)| row)).await?;
        let mut events = Vec::with_capacity(jobs.len());
        for (i, row) in written {
            let waiting = row.state == PENDING_APPROVAL;
            let kind = if waiting {
                "payment.pending_approval"
            } else {
                "payment.in_flight"
            };
            events.push((kind, event_payload(&row)));
            out[i] = Some(if waiting {
                Created::Waiting
            } else {
                Created::InFlight(Box::new(row))
            });
        }
        if !denied.is_empty() {
            let mut receipts = self.log.batch(&mut tx).await?;
            for (_, row) in &mut denied {
                let draft = attempt_draft(row, row.failure_reason.as_deref(), None)?;
                row.receipt_hash = Some(receipts.seal(draft, now)?.hash.to_string());
            }
            let sealed = receipts.store(&mut tx).await?;
            store::insert_many(&mut tx, denied.iter().map(|(_, row)| row)).await?;
            let mut answers = Vec::with_capacity(denied.len());
            for ((i, row), receipt) in denied.into_iter().zip(&sealed) {
                events.push(("payment.denied", event_payload(&row)));
                let body = denial_error(&row, receipt).to_json();
                answers.push((i, body.to_string()));
                out[i] = Some(Created::Denied(Stored {
                    status: http::StatusCode::FORBIDDEN,
                    body,
                }));
            }
            let completions: Vec<idempotency::Completion<'_>> = answers
                .iter()
                .map(|(i, body)| {
                    let (scope, key, _) = &jobs[*i].claim;
                    (scope.as_str(), key.as_str(), 403, body.as_str())
                })
                .collect();
            idempotency::complete_many(&mut tx, &completions, now).await?;
        }
        journal::append_many(&mut tx, TOPIC, &events, now).await?;
        tx.commit().await?;
        same_key_same_denial(jobs, &mut out);
        out.into_iter()
            .map(|o| o.ok_or_else(|| corrupt("a new request's job gave no answer")))
            .collect()
    }
}

/// What the job a decision is for asks its budgets to reserve.
fn request<'a>(
    jobs: &'a [CreateJob],
    (i, decision, budgets): &'a (usize, Decision, Vec<BudgetConfig>),
) -> budget::Request<'a> {
    let job = &jobs[*i];
    (
        job.payment_id.as_str(),
        budgets,
        decision.reserve_msat,
        job.now,
    )
}

/// A request whose key an earlier job of its batch claimed gets that job's denial, as a replay
/// would once it is stored (the attempt "in progress" it found is already final).
fn same_key_same_denial(jobs: &[CreateJob], out: &mut [Option<Created>]) {
    for i in 0..out.len() {
        let Some(Created::Used(Claim::InProgress {
            resource_id: Some(id),
        })) = &out[i]
        else {
            continue;
        };
        let first = jobs.iter().position(|j| &j.payment_id == id);
        if let Some(Some(Created::Denied(stored))) = first.map(|j| &out[j]) {
            out[i] = Some(Created::Denied(stored.clone()));
        }
    }
}

/// A new attempt's row as its `decision` and its reservation (`None` if it reserved nothing)
/// leave it: denied (with why), waiting for approval, or in flight on its first rail.
fn attempt(
    job: &CreateJob,
    mut decision: Decision,
    reserved: Option<budget::Reserved>,
) -> Result<PaymentRow, TreasuryError> {
    let now = job.now;
    let mut row = new_row(job, &decision, now);
    match reserved {
        Some(Ok(reservations)) => {
            row.reservations = reservations;
            row.reserved = decision.reserve_msat;
        }
        Some(Err(refusal)) => {
            decision.deny(refusal.rule(), refusal.reason_code(), refusal_why(&refusal));
        }
        None => {}
    }
    row.decision_rule = decision.rule.clone();
    row.decision_json = to_json(&decision)?;
    row.rails = decision
        .rails
        .iter()
        .map(|r| r.as_str().to_owned())
        .collect();
    if let Some(first) = row.rails.first() {
        row.rail = first.clone();
    }
    match decision.outcome {
        Outcome::Deny => {
            row.failure_reason = decision.reason_code.clone();
            row.failure_code = Some(denial_code(row.failure_reason.as_deref()).into());
        }
        Outcome::RequireApproval => {
            row.state = PENDING_APPROVAL.into();
            let ttl_ms = job.ctx.policy.approvals.ttl_secs.saturating_mul(1_000);
            row.approval_expires_at_ms = Some(now.saturating_add(ttl_ms));
        }
        Outcome::Pay => {
            row.state = IN_FLIGHT.into();
            row.stage = STAGE_START.into();
            if !scores_rails(&decision, row.rails.len()) {
                // The rule's order stands: go straight to the first rail (`choose_rail` without
                // a step of its own).
                if let Some(first) = row.rails.first().cloned() {
                    enter_rail(&mut row, &first, &decision, now);
                }
            }
            if row.stage == STAGE_DIRECT {
                row.quote_id.clone_from(&job.quote_id);
            }
        }
    }
    Ok(row)
}

/// A new attempt's row before its decision is applied: denied, on the direct rail, nothing
/// reserved.
fn new_row(job: &CreateJob, decision: &Decision, now: u64) -> PaymentRow {
    let (scope, key, _) = &job.claim;
    let (ctx, input) = (&job.ctx, &job.input);
    PaymentRow {
        payment_id: job.payment_id.clone(),
        idempotency_scope: scope.clone(),
        idempotency_key: key.clone(),
        agent_id: input.agent_id.clone(),
        org_id: ctx.org.clone(),
        host: input.host.clone(),
        payee_pubkey: input.invoice.payee_pubkey.clone(),
        source: input.source.as_str().into(),
        requested_by: job.caller.clone(),
        invoice: input.invoice.bolt11.clone(),
        payment_hash: input.invoice.payment_hash.to_string(),
        invoice_expires_at_ms: input.invoice.expires_at_ms,
        amount: input.invoice.amount,
        max_fee: input.max_fee,
        reserved: Msat::ZERO,
        fee: Msat::ZERO,
        state: DENIED.into(),
        rail: Rail::DirectLiquidity.as_str().into(),
        purpose: input.purpose.clone(),
        preimage: None,
        failure_code: None,
        failure_reason: None,
        quote_id: None,
        hydra_receipt_hash: None,
        receipt_hash: None,
        created_at_ms: now,
        updated_at_ms: now,
        policy_bundle_id: decision.policy_bundle_id.clone(),
        decision_rule: String::new(),
        decision_json: String::new(),
        rails: Vec::new(),
        stage: STAGE_NONE.into(),
        reservations: Vec::new(),
        approval_expires_at_ms: None,
        approver: None,
        envelope_id: None,
        envelope_expires_at_ms: None,
        credit_fee: Msat::ZERO,
        verification_id: None,
        verification_receipt_hash: None,
        linked_receipts: Vec::new(),
    }
}
