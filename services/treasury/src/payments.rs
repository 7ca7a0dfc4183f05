//! Payment attempts: decide (policy, budgets, risk), reserve, then pay through Hydra on the
//! chosen rail, with a receipt for every end.
//!
//! **State machine** (each move is one guarded `UPDATE` in `store::update`, in the transaction
//! that also writes its ledger rows, journal event and receipt):
//!
//! ```text
//! (request) --deny--------------------------------------------------------> denied
//! (request) --require approval--> pending_approval --deny | expire-------> denied
//!                                 pending_approval --approve--+
//! (request) --pay---------------------------------------------+--> in_flight --> succeeded | failed
//! ```
//!
//! New attempts and ends are group-committed (see `create::Creator` and `Finisher`): attempts
//! created, or ending, at the same time share one transaction, each still all or nothing within
//! it.
//!
//! Inside `in_flight` the `stage` says what happens next: `start` (choose the rail: in the
//! rule's order, or by Hydra's routing score; a new attempt in the rule's order skips it and is
//! created on its first rail), `direct` (Hydra `quote_pay` then `pay`), `envelope` (Hydra credit
//! `intent`, `offer`, `envelope`), `envelope_issued` (waiting for the
//! caller to settle with an Aegis verification, or for the envelope to expire), and
//! `envelope_settling` (Hydra `credit/settle`).
//!
//! **Budgets.** The decision's `reserve_msat` (amount + max fee, plus the credit-fee allowance
//! when the envelope rail may be used) is reserved in every applicable budget when the attempt is
//! created, including while it waits for approval (so an approval can never overdraw a budget,
//! and what waits counts against the budget until it is decided or expires). The end posts what
//! was actually spent (amount + routing fee + credit fee) and voids the rest, or voids it all.
//!
//! **Fallback.** When the rule allows it, a rail that Hydra refuses before the payment hash
//! reached the wallet-executor (a refused quote or pay, a refused credit intent, offer or
//! envelope, or an offer whose terms exceed the policy) passes the attempt to the next rail. A
//! payment Hydra attempted and that failed is final: a payment hash is attempted at most once.
//!
//! **Quote first.** A new request (its key unused) that the policy, read before any transaction,
//! sends straight to Hydra's liquidity asks for its quote first and is created with it, so its
//! first step pays: one write transaction fewer per payment. A quote reserves nothing, so one the
//! transaction's own decision does not use (the policy or budgets changed meanwhile) is left to
//! expire. It is asked under a key of its own (`:first-quote`), so that if the attempt reaches
//! the direct rail later (after an approval, or by fallback) its step asks for a fresh quote
//! rather than being answered this one, by then perhaps expired.
//!
//! **Hydra down.** Calls to Hydra use idempotency keys derived from the payment id, so retries,
//! the tracker and recovery after a restart always ask for the same quote, payment or envelope. If
//! Hydra does not answer the first quote, no attempt is written. A new attempt whose Hydra calls
//! failed before any quote or envelope existed is undone (its reservations voided, its row and
//! idempotency key given back). Either way the caller gets a retryable `HYDRA_UNAVAILABLE`, with
//! nothing reserved. Later in the attempt, or after an approval, the tracker keeps trying until
//! the invoice expires.

use std::{sync::Arc, time::Duration};

use http::StatusCode;
use oa_invoice::{InvoicePolicy, Network, ValidInvoice};
use oa_money::Msat;
use oa_proto::{hydra, treasury};
use oa_receipts::{Hash, Receipt, ReceiptDraft};
use oa_service::{ApiError, Clock, tracker::Tracker};
use oa_store::{
    Db, Tx,
    group::{Committer, GroupCommit},
    idempotency::{self, Claim},
    journal,
    receipt_log::{self, ReceiptLog},
};
use serde::Serialize;
use sqlx::AnyConnection;

mod create;

use create::{CREATE_BATCH, CREATE_QUEUE, CreateJob, Created, Creator, Decider};

use crate::{
    budget::{self, Kind, Refusal},
    error::{TreasuryError, corrupt},
    hydra_client::Hydra,
    known::KnownSet,
    l402,
    policies::Policies,
    policy::{Choose, Decision, Outcome, Policy, Rail, RiskView, Source},
    risk::Assessor,
    store::{
        self, DENIED, FAILED, IN_FLIGHT, PENDING_APPROVAL, PaymentRow, STAGE_DIRECT,
        STAGE_ENVELOPE, STAGE_ENVELOPE_ISSUED, STAGE_ENVELOPE_SETTLING, STAGE_NONE, STAGE_START,
        SUCCEEDED,
    },
};

pub const RECEIPT_SCHEMA: &str = "oa.treasury.payment_attempt_receipt.v1";
/// The receipt of an attempt that issued a credit envelope: it links Hydra's envelope receipts
/// rather than an invoice pay receipt, so it is its own class.
pub const ENVELOPE_RECEIPT_SCHEMA: &str = "oa.treasury.envelope_attempt_receipt.v1";
/// Event topic of payment attempts.
pub const TOPIC: &str = "treasury.payments";
const MAX_PURPOSE_LEN: usize = 256;
/// Longest approval note and verification id.
const MAX_NOTE_LEN: usize = 256;
const MAX_VERIFICATION_ID_LEN: usize = 128;
/// The invoice must stay payable at least this long, to cover Hydra's quote.
const MIN_EXPIRY_REMAINING: Duration = Duration::from_secs(60);
const MIN_EXPIRY_REMAINING_MS: u64 = 60_000;
const RECOVERY_BATCH: u32 = 500;
/// Attempts ended per sweep (expired approvals, expired envelopes).
pub const SWEEP_BATCH: u32 = 200;
/// Steps one drive takes at most: start, a rail, a fallback, the other rail, its second call.
const MAX_STEPS: u32 = 8;
/// Pending approvals listed at most per request.
pub const MAX_APPROVALS_LISTED: u32 = 500;
/// The routing-score candidate that stands for Hydra's pooled outbound liquidity. Treasury knows
/// no channel graph: it offers Hydra one single-hop "route" whose capacity is the pool's local
/// balance (so the score's success estimate is the prior of paying the amount from it), under a
/// channel id no real channel has, and never names the payment hash, so Hydra learns nothing
/// from this synthetic route.
const POOL_CHAN_ID: u64 = 0;

#[derive(Clone, Debug)]
pub struct PaymentsConfig {
    pub network: Network,
    /// Largest invoice amount treasury pays.
    pub max_payment: Msat,
    /// Budget given to an agent on its first payment; zero means agents need an explicit budget.
    pub default_budget: Msat,
    /// New attempts are recorded many per transaction (see [`Creator`]); else each in its own.
    pub group_creates: bool,
}

/// What claiming an idempotency key leaves the caller with.
enum Claimed {
    New(Tx),
    Answer(Stored),
}

/// A response ready to send (and to replay): status and proto-JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

/// What [`Payments::create`] reads before its transaction.
struct Ahead {
    /// The agent has a budget (or needs none), and every applicable budget's current window is
    /// known to exist: nothing to create first.
    prepared: bool,
    /// The key is new and the policy would send the attempt straight to Hydra's liquidity, so
    /// its quote is asked for before anything is written (see the module docs).
    direct: bool,
}

/// What asking Hydra for a new attempt's quote, before its transaction, gave.
enum FirstQuote {
    /// Not asked: the attempt does not start on Hydra's liquidity, or its key was used.
    NotAsked,
    /// Recorded with the attempt, so its first step pays.
    Quoted(String),
    /// Refused (nothing was sent): the attempt's first step takes the refusal as its own.
    Refused(ApiError),
}

/// What one step of an attempt did.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Progress {
    /// Moved on; take the next step.
    Continue,
    /// Terminal.
    Done,
    /// Terminal, ended by this call: the answer to the request that started it, as a replay of
    /// that request gets it.
    Ended(serde_json::Value),
    /// Waiting for something outside treasury (a verification, an approval).
    Parked,
    /// Hydra is still working on it; ask again later.
    Pending,
}

pub struct Payments {
    pub db: Db,
    pub hydra: Arc<dyn Hydra>,
    pub log: ReceiptLog,
    pub clock: Arc<dyn Clock>,
    pub config: PaymentsConfig,
    pub policies: Arc<Policies>,
    pub risk: Arc<Assessor>,
    tracker: Arc<Tracker>,
    windows: Arc<budget::KnownWindows>,
    decider: Arc<Decider>,
    /// Where new attempts are recorded (see [`Creator`]).
    creates: GroupCommit<Creator>,
    /// Where attempts end (see [`Finisher`]).
    ends: GroupCommit<Finisher>,
}

/// Most payees [`Payments`] remembers as known; past that it forgets them all and relearns.
const MAX_KNOWN_PAYEES: usize = 100_000;

/// A validated payment request.
#[derive(Clone, Debug)]
pub struct Input {
    pub agent_id: String,
    pub host: Option<String>,
    pub source: Source,
    pub invoice: ValidInvoice,
    pub max_fee: Msat,
    pub purpose: String,
}

/// What a decision needs besides the request.
pub struct Context {
    pub bundle_id: String,
    pub policy: Arc<Policy>,
    pub org: Option<String>,
    pub risk: RiskView,
}

/// How an attempt ends.
#[derive(Default)]
struct End {
    state: &'static str,
    fee: Msat,
    preimage: Option<String>,
    failure_code: Option<String>,
    failure_reason: Option<String>,
    /// Hydra's receipt that decided the end (pay, envelope settlement or default).
    receipt: Option<Receipt>,
    approver: Option<String>,
    reason_code: Option<String>,
}

#[derive(Serialize)]
struct AttemptBody<'a> {
    payment_id: &'a str,
    agent_id: &'a str,
    state: &'a str,
    payment_hash: &'a str,
    amount_msat: Msat,
    fee_msat: Msat,
    max_fee_msat: Msat,
    rail: &'a str,
    purpose: &'a str,
    /// The rule that decided (a policy rule id, `budget:...`, `risk:...`, `approvals:...`).
    decision_rule: &'a str,
    policy_bundle_id: &'a str,
    source: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    payee_pubkey: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    org_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_code: Option<&'a str>,
    /// Who approved or denied the payment.
    #[serde(skip_serializing_if = "Option::is_none")]
    approver: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hydra_receipt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    envelope_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credit_fee_msat: Option<Msat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification_id: Option<&'a str>,
}

/// The journal payload of an attempt's event.
fn event_payload(row: &PaymentRow) -> serde_json::Value {
    let mut payload = serde_json::json!({
        "payment_id": row.payment_id,
        "agent_id": row.agent_id,
        "state": row.state,
        "stage": row.stage,
        "rail": row.rail,
        "policy_bundle_id": row.policy_bundle_id,
        "decision_rule": row.decision_rule,
    });
    let extra = [
        ("reason_code", row.failure_reason.as_deref()),
        ("failure_code", row.failure_code.as_deref()),
        ("receipt_hash", row.receipt_hash.as_deref()),
        ("envelope_id", row.envelope_id.as_deref()),
        ("approver", row.approver.as_deref()),
    ];
    for (k, v) in extra {
        if let Some(v) = v {
            payload[k] = v.into();
        }
    }
    if let Some(at) = row
        .approval_expires_at_ms
        .filter(|_| row.state == PENDING_APPROVAL)
    {
        payload["approval_expires_at_ms"] = at.to_string().into();
    }
    payload
}

/// The receipt of an ended attempt (or of a denial), before it is sealed into the log.
fn attempt_draft(
    row: &PaymentRow,
    reason: Option<&str>,
    hydra_receipt: Option<&Receipt>,
) -> Result<ReceiptDraft, TreasuryError> {
    let hydra_hash = hydra_receipt.map(|r| r.hash.to_string());
    let envelope = row.envelope_id.is_some();
    let body = AttemptBody {
        payment_id: &row.payment_id,
        agent_id: &row.agent_id,
        state: &row.state,
        payment_hash: &row.payment_hash,
        amount_msat: row.amount,
        fee_msat: row.fee,
        max_fee_msat: row.max_fee,
        rail: &row.rail,
        purpose: &row.purpose,
        decision_rule: &row.decision_rule,
        policy_bundle_id: &row.policy_bundle_id,
        source: &row.source,
        payee_pubkey: &row.payee_pubkey,
        org_id: row.org_id.as_deref(),
        host: row.host.as_deref(),
        reason_code: reason,
        failure_code: row.failure_code.as_deref().filter(|_| row.state == FAILED),
        approver: row.approver.as_deref(),
        hydra_receipt: hydra_hash.as_deref(),
        envelope_id: row.envelope_id.as_deref(),
        credit_fee_msat: envelope.then_some(row.credit_fee),
        verification_id: row.verification_id.as_deref(),
    };
    let mut links: Vec<Hash> = hydra_receipt.map(|r| vec![r.hash]).unwrap_or_default();
    for h in &row.linked_receipts {
        let h = Hash::parse(h).map_err(|e| corrupt(&e.to_string()))?;
        if !links.contains(&h) {
            links.push(h);
        }
    }
    Ok(ReceiptDraft {
        schema: if envelope {
            ENVELOPE_RECEIPT_SCHEMA
        } else {
            RECEIPT_SCHEMA
        }
        .into(),
        receipt_id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
        idempotency_key: row.idempotency_key.clone(),
        links,
        body: oa_receipts::body_from(&body)?,
    })
}

/// `row` as `end` leaves it (without its receipt hash yet), and what it spent (`None`: nothing,
/// its reservations are voided).
fn ended(
    row: &PaymentRow,
    end: &End,
    now: u64,
) -> Result<(PaymentRow, Option<Msat>), TreasuryError> {
    let mut done = row.clone();
    done.state = end.state.into();
    done.stage = STAGE_NONE.into();
    done.fee = end.fee;
    done.preimage = end.preimage.clone().filter(|p| !p.is_empty());
    done.failure_code = end.failure_code.clone().filter(|c| !c.is_empty());
    done.failure_reason = end.failure_reason.clone().filter(|c| !c.is_empty());
    if end.state == SUCCEEDED {
        done.failure_code = None;
        done.failure_reason = None;
    }
    done.hydra_receipt_hash = end.receipt.as_ref().map(|r| r.hash.to_string());
    if end.approver.is_some() {
        done.approver.clone_from(&end.approver);
    }
    done.reserved = Msat::ZERO;
    done.updated_at_ms = now;
    let spent = if end.state == SUCCEEDED {
        Some(
            Msat::checked_sum([done.amount, done.fee, done.credit_fee])
                .map_err(|e| corrupt(&e.to_string()))?,
        )
    } else {
        None
    };
    if spent.is_some_and(|s| s > row.reserved) {
        return Err(corrupt(
            "hydra charged more than was reserved (amount + max fee + credit-fee allowance)",
        ));
    }
    Ok((done, spent))
}

/// An attempt to end: the row as the caller last saw it, and how it ends.
struct FinishJob {
    row: PaymentRow,
    end: End,
}

/// Ends attempts, many per transaction (group commit, [`oa_store::group`]). Each end is still
/// all or nothing (state, ledger, receipt, event, stored answer); a batch shares the `BEGIN` and
/// `COMMIT`, one ledger batch, and one lock of the receipt log's head and of the journal's, the
/// two rows every end writes (on PostgreSQL, replicas queue on them until COMMIT).
struct Finisher {
    db: Db,
    log: ReceiptLog,
    clock: Arc<dyn Clock>,
    payees: Arc<KnownSet>,
}

/// Ends committed together at most; ends waiting at most before callers wait to queue.
const FINISH_BATCH: usize = 64;
const FINISH_QUEUE: usize = 1_024;

impl Committer for Finisher {
    type Job = FinishJob;
    /// The stored answer, if this job ended the attempt (else someone else had).
    type Out = Option<serde_json::Value>;
    type Error = TreasuryError;

    async fn commit(
        &self,
        jobs: &[FinishJob],
    ) -> Result<Vec<Option<serde_json::Value>>, TreasuryError> {
        let now = self.clock.now_ms();
        // Rows are locked in payment id order, so two replicas' batches cannot deadlock on them.
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by(|&a, &b| jobs[a].row.payment_id.cmp(&jobs[b].row.payment_id));
        let mut tx = self.db.begin().await?;
        let mut done = Vec::with_capacity(jobs.len());
        for i in order {
            let job = &jobs[i];
            let (row, spent) = ended(&job.row, &job.end, now)?;
            // Guarded: an attempt ends once, whoever else tries (a tracker, a sweep, a replica).
            if store::update(&mut tx, &row, &job.row.state, &job.row.stage).await? {
                done.push((i, row, spent));
            }
        }
        budget::settle_many(
            &mut tx,
            done.iter()
                .map(|(i, _, spent)| (jobs[*i].row.reservations.as_slice(), *spent)),
            now,
        )
        .await?;
        let new_payees: std::collections::BTreeSet<String> = done
            .iter()
            .filter(|(_, row, _)| {
                row.state == SUCCEEDED
                    && !row.payee_pubkey.is_empty()
                    && !self.payees.contains(&row.payee_pubkey)
            })
            .map(|(_, row, _)| row.payee_pubkey.clone())
            .collect();
        for payee in &new_payees {
            store::add_known_payee(&mut tx, payee, now).await?;
        }
        // From here on the receipt log's head is locked until COMMIT: only what needs the
        // receipts' hashes follows.
        let mut receipts = self.log.batch(&mut tx).await?;
        for (i, row, _) in &mut done {
            let end = &jobs[*i].end;
            let reason = end.reason_code.clone().or_else(|| {
                (end.state == DENIED)
                    .then(|| row.failure_reason.clone())
                    .flatten()
            });
            let draft = attempt_draft(row, reason.as_deref(), end.receipt.as_ref())?;
            row.receipt_hash = Some(receipts.seal(draft, now)?.hash.to_string());
        }
        let sealed = receipts.store(&mut tx).await?;
        let events: Vec<(&str, serde_json::Value)> = done
            .iter()
            .map(|(_, row, _)| {
                let kind = match row.state.as_str() {
                    SUCCEEDED => "payment.succeeded",
                    DENIED => "payment.denied",
                    _ => "payment.failed",
                };
                (kind, event_payload(row))
            })
            .collect();
        journal::append_many(&mut tx, TOPIC, &events, now).await?;
        let mut out = vec![None; jobs.len()];
        let mut hashes = Vec::with_capacity(done.len());
        let mut answers = Vec::with_capacity(done.len());
        for ((i, row, _), receipt) in done.iter().zip(&sealed) {
            hashes.push((row.payment_id.as_str(), receipt.hash.to_string()));
            let answer = serde_json::to_value(to_response(row, Some(receipt))?)
                .map_err(|e| corrupt(&e.to_string()))?;
            answers.push((*i, answer.to_string()));
            out[*i] = Some(answer);
        }
        store::set_receipt_hashes(&mut tx, &hashes).await?;
        let completions: Vec<idempotency::Completion<'_>> = answers
            .iter()
            .map(|(i, answer)| {
                let row = &jobs[*i].row;
                let (scope, key) = (&row.idempotency_scope, &row.idempotency_key);
                (scope.as_str(), key.as_str(), 201, answer.as_str())
            })
            .collect();
        idempotency::complete_many(&mut tx, &completions, now).await?;
        tx.commit().await?;
        for payee in new_payees {
            self.payees.insert(payee);
        }
        Ok(out)
    }
}

/// Whether Hydra's routing score orders the attempt's rails (else the rule's order stands).
fn scores_rails(decision: &Decision, rails: usize) -> bool {
    decision.choose == Choose::Score && rails >= 2
}

/// Whether a decision sends a new attempt straight to Hydra's liquidity (its first rail, in the
/// rule's order).
fn goes_direct(decision: &Decision) -> bool {
    decision.outcome == Outcome::Pay
        && !scores_rails(decision, decision.rails.len())
        && decision.rails.first() == Some(&Rail::DirectLiquidity)
}

/// Hydra's quote for an attempt, under `key` (`quote` for the direct step, `first-quote` for the
/// one asked before the attempt exists): each ask under one key gets the same quote.
fn quote_request(
    (payment_id, key): (&str, &str),
    invoice: &str,
    amount: Msat,
    max_fee: Msat,
    payer: &str,
) -> hydra::QuotePayRequest {
    hydra::QuotePayRequest {
        idempotency_key: format!("treasury:{payment_id}:{key}"),
        invoice: invoice.to_owned(),
        amount_msat: amount.as_u64(),
        max_fee_msat: max_fee.as_u64(),
        payer_ref: payer.to_owned(),
    }
}

fn rail_stage(rail: &str) -> &'static str {
    match Rail::parse(rail) {
        Some(Rail::CreditEnvelope) => STAGE_ENVELOPE,
        _ => STAGE_DIRECT,
    }
}

/// Moves an attempt onto `rail`. The envelope rail fixes its envelope's expiry now, so that
/// every retry of the credit intent asks for the same one.
fn enter_rail(next: &mut PaymentRow, rail: &str, decision: &Decision, now_ms: u64) {
    next.stage = rail_stage(rail).into();
    next.rail = rail.to_owned();
    if next.stage == STAGE_ENVELOPE {
        next.envelope_expires_at_ms = Some(now_ms.saturating_add(decision.envelope_ttl_ms));
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String, TreasuryError> {
    serde_json::to_string(v).map_err(|e| corrupt(&e.to_string()))
}

fn decision_of(row: &PaymentRow) -> Result<Decision, TreasuryError> {
    serde_json::from_str(&row.decision_json)
        .map_err(|e| corrupt(&format!("decision of {}: {e}", row.payment_id)))
}

fn refusal_why(r: &Refusal) -> String {
    match r {
        Refusal::NoBudget => "no budget applies to this payment".into(),
        Refusal::Exceeded {
            label,
            capped: false,
            ..
        } => format!("budget {label} has no room for this payment"),
        Refusal::Exceeded {
            label,
            capped: true,
            ..
        } => format!("budget {label} has no room for this payment under the degraded-risk cap"),
    }
}

/// The stable code of a denial: a budget without room (or none at all) is `BUDGET_EXCEEDED`;
/// anything else the policy or a budget's lists refuse is `POLICY_DENIED`.
fn denial_code(reason: Option<&str>) -> &'static str {
    match reason {
        Some(r) if r.ends_with("_budget_exceeded") || r == "no_budget" => "BUDGET_EXCEEDED",
        _ => "POLICY_DENIED",
    }
}

/// The error a caller gets for a denial.
fn denial_error(row: &PaymentRow, receipt: &Receipt) -> ApiError {
    let code = denial_code(row.failure_reason.as_deref());
    let message = if code == "BUDGET_EXCEEDED" {
        "the payment would exceed a budget"
    } else {
        "the spending policy denies the payment"
    };
    ApiError::new(StatusCode::FORBIDDEN, code, message)
        .with_reason(row.failure_reason.clone().unwrap_or_default())
        .with_detail("payment_id", row.payment_id.clone())
        .with_detail("receipt_hash", receipt.hash.to_string())
        .with_detail("rule", row.decision_rule.clone())
        .with_detail("policy_bundle_id", row.policy_bundle_id.clone())
}

/// Checks the fields of a payment (or evaluate) request. Every failure is a typed 400.
#[allow(clippy::too_many_arguments)]
pub fn check_input(
    config: &PaymentsConfig,
    now_ms: u64,
    agent_id: &str,
    invoice: &str,
    l402_challenge: &str,
    amount_msat: u64,
    max_fee_msat: u64,
    purpose: &str,
    host: &str,
) -> Result<Input, TreasuryError> {
    if !budget::valid_id(agent_id) {
        return Err(TreasuryError::InvalidRequest(format!(
            "agent_id must be 1..={} characters of [A-Za-z0-9._:-]",
            budget::MAX_SUBJECT_LEN
        )));
    }
    if purpose.chars().count() > MAX_PURPOSE_LEN {
        return Err(TreasuryError::InvalidRequest(format!(
            "purpose is longer than {MAX_PURPOSE_LEN} characters"
        )));
    }
    let host = match host {
        "" => None,
        h if budget::valid_host(h) => Some(h.to_owned()),
        _ => {
            return Err(TreasuryError::InvalidRequest(format!(
                "host must be 1..={} characters of lowercase [a-z0-9.-]",
                budget::MAX_SUBJECT_LEN
            )));
        }
    };
    let amount_override = match amount_msat {
        0 => None,
        v => Some(
            Msat::new(v).map_err(|e| TreasuryError::InvalidRequest(format!("amount_msat: {e}")))?,
        ),
    };
    let max_fee = Msat::new(max_fee_msat)
        .map_err(|e| TreasuryError::InvalidRequest(format!("max_fee_msat: {e}")))?;
    let (bolt11, source) = match (invoice.is_empty(), l402_challenge.is_empty()) {
        (false, false) => {
            return Err(TreasuryError::InvalidRequest(
                "give invoice or l402_challenge, not both".into(),
            ));
        }
        (true, false) => (
            l402::parse(l402_challenge)
                .map_err(|e| TreasuryError::invalid("INVALID_L402_CHALLENGE", e.to_string()))?
                .invoice,
            Source::L402,
        ),
        _ => (invoice.to_owned(), Source::Bolt11),
    };
    let policy = InvoicePolicy {
        network: config.network,
        max_amount: config.max_payment,
        min_expiry_remaining: MIN_EXPIRY_REMAINING,
    };
    let invoice = oa_invoice::validate(&bolt11, &policy, now_ms, amount_override)?;
    invoice
        .amount
        .checked_add(max_fee)
        .map_err(|_| TreasuryError::InvalidRequest("amount plus max fee overflows".into()))?;
    Ok(Input {
        agent_id: agent_id.to_owned(),
        host,
        source,
        invoice,
        max_fee,
        purpose: purpose.to_owned(),
    })
}

impl Payments {
    pub fn new(
        db: Db,
        hydra: Arc<dyn Hydra>,
        log: ReceiptLog,
        clock: Arc<dyn Clock>,
        config: PaymentsConfig,
        policies: Arc<Policies>,
        risk: Arc<Assessor>,
    ) -> Self {
        let payees = Arc::new(KnownSet::new(MAX_KNOWN_PAYEES));
        let ends = GroupCommit::spawn(
            Finisher {
                db: db.clone(),
                log: log.clone(),
                clock: clock.clone(),
                payees: payees.clone(),
            },
            FINISH_BATCH,
            FINISH_QUEUE,
        );
        let decider = Arc::new(Decider {
            default_budget: config.default_budget,
            payees,
        });
        let windows = Arc::new(budget::KnownWindows::default());
        let creates = GroupCommit::spawn(
            Creator {
                db: db.clone(),
                log: log.clone(),
                clock: clock.clone(),
                decider: decider.clone(),
                windows: windows.clone(),
            },
            CREATE_BATCH,
            CREATE_QUEUE,
        );
        Self {
            db,
            hydra,
            log,
            clock,
            config,
            policies,
            risk,
            tracker: Arc::new(Tracker::new()),
            windows,
            decider,
            creates,
            ends,
        }
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, TreasuryError> {
        Ok(self.db.reader().await?)
    }

    async fn load(&self, payment_id: &str) -> Result<PaymentRow, TreasuryError> {
        let mut conn = self.conn().await?;
        store::get(&mut conn, payment_id)
            .await?
            .ok_or(TreasuryError::PaymentNotFound)
    }

    /// The active policy, the agent's org and the risk view: read before any transaction, since
    /// risk may ask Aegis.
    pub async fn context(&self, agent: &str) -> Result<Context, TreasuryError> {
        let (bundle_id, policy) = self.policies.current().await?;
        let org = policy.org_of(agent).map(str::to_owned);
        let risk = self.risk.view(&policy, agent, org.as_deref()).await;
        Ok(Context {
            bundle_id,
            policy,
            org,
            risk,
        })
    }

    /// What a new request needs before its transaction (see [`Ahead`]). Read outside any
    /// transaction, so that the common case leaves the writer alone.
    async fn read_ahead(
        &self,
        ctx: &Context,
        input: &Input,
        (scope, key): (&str, &str),
        now: u64,
    ) -> Result<Ahead, TreasuryError> {
        let mut conn = self.conn().await?;
        let budgets = budget::applicable(
            &mut conn,
            &input.agent_id,
            ctx.org.as_deref(),
            input.host.as_deref(),
        )
        .await?;
        let has_default =
            self.config.default_budget.is_zero() || budgets.iter().any(|b| b.kind == Kind::Agent);
        let prepared = has_default && self.windows.all_known(&budgets, now)?;
        let direct = if idempotency::is_claimed(&mut conn, scope, key).await? {
            false
        } else {
            let (decision, _, _) = self
                .decider
                .decide_with(&mut conn, ctx, input, budgets)
                .await?;
            goes_direct(&decision)
        };
        Ok(Ahead { prepared, direct })
    }

    pub async fn create(
        self: &Arc<Self>,
        caller: &str,
        req: treasury::CreatePaymentRequest,
    ) -> Result<Stored, TreasuryError> {
        idempotency::validate_key(&req.idempotency_key)?;
        let now = self.clock.now_ms();
        let input = check_input(
            &self.config,
            now,
            &req.agent_id,
            &req.invoice,
            &req.l402_challenge,
            req.amount_msat,
            req.max_fee_msat,
            &req.purpose,
            &req.host,
        )?;
        let ctx = self.context(&input.agent_id).await?;
        let scope = format!("treasury.payments/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let ahead = self
            .read_ahead(&ctx, &input, (&scope, &req.idempotency_key), now)
            .await?;
        if !ahead.prepared {
            // The agent's default budget and the current windows of every applicable budget,
            // committed on their own (see `budget::prepare_windows`); not for a key already
            // used, whose replay or conflict must change nothing.
            let mut tx = self.db.begin().await?;
            let used: Option<String> = sqlx::query_scalar::<sqlx::Any, String>(
                "SELECT key FROM idempotency_keys WHERE scope = $1 AND key = $2",
            )
            .bind(&scope)
            .bind(&req.idempotency_key)
            .fetch_optional(&mut *tx)
            .await?;
            if used.is_none() && !self.config.default_budget.is_zero() {
                budget::ensure_default(&mut tx, &input.agent_id, self.config.default_budget, now)
                    .await?;
            }
            let budgets = budget::applicable(
                &mut tx,
                &input.agent_id,
                ctx.org.as_deref(),
                input.host.as_deref(),
            )
            .await?;
            if used.is_none() {
                budget::prepare_windows(&mut tx, &budgets, now).await?;
            }
            tx.commit().await?;
            if used.is_none() {
                self.windows.remember(&budgets, now)?;
            }
        }
        let payment_id = format!("pay_{}", uuid::Uuid::now_v7().simple());
        let first = if ahead.direct {
            let req = quote_request(
                (&payment_id, "first-quote"),
                &input.invoice.bolt11,
                input.invoice.amount,
                input.max_fee,
                &input.agent_id,
            );
            match self.hydra.quote_pay(req).await {
                Ok(resp) => FirstQuote::Quoted(
                    resp.quote
                        .ok_or_else(|| corrupt("hydra quote without a quote"))?
                        .quote_id,
                ),
                // Nothing is written yet: the caller retries with the same key.
                Err(e) if e.retryable => return Err(TreasuryError::Hydra(e)),
                Err(e) => FirstQuote::Refused(e),
            }
        } else {
            FirstQuote::NotAsked
        };
        let (quote_id, refused) = match first {
            FirstQuote::NotAsked => (None, None),
            FirstQuote::Quoted(id) => (Some(id), None),
            FirstQuote::Refused(e) => (None, Some(e)),
        };
        let job = CreateJob {
            payment_id: payment_id.clone(),
            claim: (scope, req.idempotency_key, fingerprint),
            caller: caller.to_owned(),
            ctx,
            input,
            quote_id,
            now,
        };
        let created = if self.config.group_creates {
            self.creates.submit(job).await?
        } else {
            self.creates.commit_alone(job).await?
        };
        let row = match created {
            // Our own attempt: recorded by a batch whose COMMIT went through but was reported
            // failed, then retried alone. Nobody drives it yet.
            Created::Used(Claim::InProgress {
                resource_id: Some(id),
            }) if id == payment_id => {
                self.spawn_tracker(payment_id.clone());
                return self.stored(&payment_id, StatusCode::ACCEPTED).await;
            }
            Created::Used(used) => return self.answer_used(used, StatusCode::ACCEPTED).await,
            Created::Denied(stored) => return Ok(stored),
            Created::Waiting => return self.stored(&payment_id, StatusCode::ACCEPTED).await,
            Created::InFlight(row) => *row,
        };
        // A refused first quote is the first step's only if the attempt starts on the direct rail.
        let progress = match refused.filter(|_| row.stage == STAGE_DIRECT) {
            // The refusal the first step would get: the next rail or the end, without asking
            // again.
            Some(e) => match self.rail_refused(&row, row.clone(), &e).await {
                Ok(Progress::Continue) => self.run(&payment_id).await,
                other => other,
            },
            None => self.run_from(row).await,
        };
        match progress {
            Ok(Progress::Pending) => {
                self.spawn_tracker(payment_id.clone());
                self.stored(&payment_id, StatusCode::ACCEPTED).await
            }
            // Answered from what `finish` stored, without reading it back.
            Ok(Progress::Ended(body)) => Ok(Stored {
                status: StatusCode::CREATED,
                body,
            }),
            Ok(_) => self.stored(&payment_id, StatusCode::CREATED).await,
            Err(TreasuryError::Hydra(e)) => {
                let withdrawn = async {
                    let current = self.load(&payment_id).await?;
                    let unsent = current.state == IN_FLIGHT
                        && current.quote_id.is_none()
                        && current.envelope_id.is_none();
                    if unsent {
                        // Nothing can have been paid: give everything back; the caller retries.
                        self.undo(&current).await?;
                    }
                    Ok::<_, TreasuryError>(unsent)
                };
                match withdrawn.await {
                    Ok(true) => Err(TreasuryError::Hydra(e)),
                    Ok(false) => {
                        tracing::warn!(%payment_id, code = %e.code, "hydra did not answer; tracking");
                        self.spawn_tracker(payment_id.clone());
                        self.stored(&payment_id, StatusCode::ACCEPTED).await
                    }
                    Err(db) => {
                        self.spawn_tracker(payment_id.clone());
                        Err(db)
                    }
                }
            }
            // Anything else (the database went away mid-step): the attempt is in flight, so
            // the tracker takes it over; the caller hears the error and replays its key.
            Err(e) => {
                self.spawn_tracker(payment_id.clone());
                Err(e)
            }
        }
    }

    /// Gives back an attempt that never reached Hydra's money: its reservations, its row, its
    /// idempotency key. If another step got further meanwhile, nothing is undone.
    async fn undo(&self, row: &PaymentRow) -> Result<(), TreasuryError> {
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        if !store::delete(&mut tx, &row.payment_id).await? {
            tx.rollback().await?;
            return Ok(());
        }
        budget::settle(&mut tx, &row.reservations, None, now).await?;
        idempotency::release(&mut tx, &row.idempotency_scope, &row.idempotency_key).await?;
        journal::append(
            &mut tx,
            TOPIC,
            "payment.withdrawn",
            &serde_json::json!({"payment_id": row.payment_id, "agent_id": row.agent_id, "reason": "HYDRA_UNAVAILABLE"}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Drives an attempt until it ends, parks, waits on Hydra, or Hydra fails.
    async fn run(&self, payment_id: &str) -> Result<Progress, TreasuryError> {
        let row = self.load(payment_id).await?;
        self.run_from(row).await
    }

    /// [`Payments::run`] from `row`, the attempt as this process just stored it; each later
    /// step reads it again.
    async fn run_from(&self, row: PaymentRow) -> Result<Progress, TreasuryError> {
        let payment_id = row.payment_id.clone();
        let mut row = Some(row);
        for _ in 0..MAX_STEPS {
            let current = match row.take() {
                Some(r) => r,
                None => self.load(&payment_id).await?,
            };
            match self.step(&current).await? {
                Progress::Continue => {}
                other => return Ok(other),
            }
        }
        Ok(Progress::Pending)
    }

    /// One step of an in-flight attempt (module docs).
    async fn step(&self, row: &PaymentRow) -> Result<Progress, TreasuryError> {
        if row.state != IN_FLIGHT {
            return Ok(if row.state == PENDING_APPROVAL {
                Progress::Parked
            } else {
                Progress::Done
            });
        }
        let now = self.clock.now_ms();
        let unsent = match row.stage.as_str() {
            STAGE_START => true,
            STAGE_DIRECT => row.quote_id.is_none(),
            STAGE_ENVELOPE => row.envelope_id.is_none(),
            _ => false,
        };
        if unsent
            && row.invoice_expires_at_ms != 0
            && now.saturating_add(MIN_EXPIRY_REMAINING_MS) >= row.invoice_expires_at_ms
        {
            self.finish(
                row,
                End {
                    state: FAILED,
                    failure_code: Some("INVOICE_EXPIRED".into()),
                    failure_reason: Some("the invoice expired before it could be paid".into()),
                    ..End::default()
                },
            )
            .await?;
            return Ok(Progress::Done);
        }
        match row.stage.as_str() {
            STAGE_START => self.choose_rail(row).await,
            STAGE_DIRECT => self.direct(row).await,
            STAGE_ENVELOPE => self.envelope(row).await,
            STAGE_ENVELOPE_ISSUED => Ok(Progress::Parked),
            STAGE_ENVELOPE_SETTLING => self.settling(row).await,
            other => Err(corrupt(&format!("stage {other} of an in-flight payment"))),
        }
    }

    /// Writes `next` if `row` is still where it was.
    async fn advance(
        &self,
        row: &PaymentRow,
        mut next: PaymentRow,
        event: Option<&str>,
    ) -> Result<bool, TreasuryError> {
        let now = self.clock.now_ms();
        next.updated_at_ms = now;
        let mut tx = self.db.begin().await?;
        if !store::update(&mut tx, &next, &row.state, &row.stage).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(kind) = event {
            self.event(&mut tx, kind, &next, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// `start`: orders the rails (by Hydra's routing score when the rule says so) and moves to
    /// the first.
    async fn choose_rail(&self, row: &PaymentRow) -> Result<Progress, TreasuryError> {
        let decision = decision_of(row)?;
        let mut next = row.clone();
        let mut event = None;
        if scores_rails(&decision, row.rails.len()) {
            let status = self
                .hydra
                .liquidity_status()
                .await
                .map_err(TreasuryError::Hydra)?;
            let capacity = status.local_balance_msat.max(1);
            let req = hydra::RoutingScoreRequest {
                idempotency_key: format!("treasury:{}:score", row.payment_id),
                amount_msat: row.amount.as_u64(),
                policy: decision.routing_policy.clone(),
                routes: vec![hydra::RouteCandidate {
                    candidate_id: Rail::DirectLiquidity.as_str().into(),
                    fee_msat: row.max_fee.as_u64(),
                    hops: vec![hydra::RouteHop {
                        chan_id: POOL_CHAN_ID,
                        capacity_msat: capacity,
                    }],
                }],
                envelope_rail: Some(hydra::EnvelopeRail {
                    candidate_id: Rail::CreditEnvelope.as_str().into(),
                    fee_msat: decision.credit_fee_allowance_msat.as_u64(),
                    agent_id: row.agent_id.clone(),
                }),
                payment_hash: String::new(),
            };
            let resp = self
                .hydra
                .routing_score(req)
                .await
                .map_err(TreasuryError::Hydra)?;
            let mut ranked: Vec<String> = resp
                .ranking
                .iter()
                .map(|c| c.candidate_id.clone())
                .filter(|id| row.rails.contains(id))
                .collect();
            for r in &row.rails {
                if !ranked.contains(r) {
                    ranked.push(r.clone());
                }
            }
            if let Some(proto) = &resp.receipt {
                let receipt = self.verified(proto, "routing decision")?;
                next.linked_receipts.push(receipt.hash.to_string());
            }
            next.rails = ranked;
            event = Some("payment.rail_chosen");
        }
        let first = next
            .rails
            .first()
            .cloned()
            .ok_or_else(|| corrupt("an in-flight payment without rails"))?;
        enter_rail(&mut next, &first, &decision, self.clock.now_ms());
        self.advance(row, next, event).await?;
        Ok(Progress::Continue)
    }

    /// A rail failed before the payment hash reached the executor: the next rail if the rule
    /// allows fallback, else the attempt fails.
    async fn rail_refused(
        &self,
        row: &PaymentRow,
        mut next: PaymentRow,
        e: &ApiError,
    ) -> Result<Progress, TreasuryError> {
        let decision = decision_of(row)?;
        if decision.fallback && next.rails.len() > 1 {
            next.rails.remove(0);
            let rail = next.rails[0].clone();
            enter_rail(&mut next, &rail, &decision, self.clock.now_ms());
            next.failure_code = Some(e.code.to_string());
            next.failure_reason = Some(e.message.clone());
            self.advance(row, next, Some("payment.fallback")).await?;
            return Ok(Progress::Continue);
        }
        self.finish(
            &next,
            End {
                state: FAILED,
                failure_code: Some(e.code.to_string()),
                failure_reason: Some(e.message.clone()),
                ..End::default()
            },
        )
        .await?;
        Ok(Progress::Done)
    }

    /// Hydra's liquidity: quote (once), then pay.
    async fn direct(&self, row: &PaymentRow) -> Result<Progress, TreasuryError> {
        let quote_id = match &row.quote_id {
            Some(q) => q.clone(),
            None => {
                let req = quote_request(
                    (&row.payment_id, "quote"),
                    &row.invoice,
                    row.amount,
                    row.max_fee,
                    &row.agent_id,
                );
                match self.hydra.quote_pay(req).await {
                    Ok(resp) => {
                        let q = resp
                            .quote
                            .ok_or_else(|| corrupt("hydra quote without a quote"))?;
                        let mut next = row.clone();
                        next.quote_id = Some(q.quote_id.clone());
                        if !self.advance(row, next, None).await? {
                            return Ok(Progress::Continue);
                        }
                        q.quote_id
                    }
                    Err(e) if e.retryable => return Err(TreasuryError::Hydra(e)),
                    Err(e) => return self.rail_refused(row, row.clone(), &e).await,
                }
            }
        };
        let mut row = row.clone();
        row.quote_id = Some(quote_id.clone());
        let req = hydra::PayRequest {
            idempotency_key: format!("treasury:{}:pay", row.payment_id),
            quote_id,
        };
        match self.hydra.pay(req).await {
            Ok(resp) => {
                let state = resp.quote.as_ref().map(hydra::Quote::state);
                match state {
                    Some(hydra::QuoteState::Paid | hydra::QuoteState::Failed) => {
                        let receipt = self.check_pay_receipt(&row, &resp)?;
                        let end = if state == Some(hydra::QuoteState::Paid) {
                            End {
                                state: SUCCEEDED,
                                fee: Msat::new(resp.fee_msat)
                                    .map_err(|e| corrupt(&e.to_string()))?,
                                preimage: Some(resp.preimage.clone()),
                                receipt: Some(receipt),
                                ..End::default()
                            }
                        } else {
                            End {
                                state: FAILED,
                                failure_code: Some(resp.failure_code.clone()),
                                failure_reason: Some(resp.failure_reason.clone()),
                                receipt: Some(receipt),
                                ..End::default()
                            }
                        };
                        Ok(match self.finish_answer(&row, end).await? {
                            Some(answer) => Progress::Ended(answer),
                            None => Progress::Done,
                        })
                    }
                    _ => Ok(Progress::Pending),
                }
            }
            Err(e) if e.retryable => Err(TreasuryError::Hydra(e)),
            // Refused without paying (the quote expired or was used): the hash was never sent.
            Err(e) => {
                let mut next = row.clone();
                next.quote_id = None;
                self.rail_refused(&row, next, &e).await
            }
        }
    }

    /// A credit envelope: intent, offer (checked against the policy's terms), envelope.
    async fn envelope(&self, row: &PaymentRow) -> Result<Progress, TreasuryError> {
        let decision = decision_of(row)?;
        let cap = row
            .amount
            .checked_add(row.max_fee)
            .map_err(|e| corrupt(&e.to_string()))?;
        let intent = hydra::CreditIntentRequest {
            idempotency_key: format!("treasury:{}:intent", row.payment_id),
            agent_id: row.agent_id.clone(),
            provider: Some(hydra::Provider {
                provider_id: row.host.clone().unwrap_or_else(|| row.payee_pubkey.clone()),
                invoice: row.invoice.clone(),
                node_pubkey: row.payee_pubkey.clone(),
            }),
            scope: if row.purpose.is_empty() {
                format!("treasury:{}", row.payment_id)
            } else {
                row.purpose.clone()
            },
            cap_msat: cap.as_u64(),
            // Fixed when the attempt entered this rail, so a retry replays the same intent.
            expires_at_ms: row.envelope_expires_at_ms.unwrap_or(0),
        };
        let envelope = match self.hydra.credit_intent(intent).await {
            Ok(r) => r
                .envelope
                .ok_or_else(|| corrupt("hydra intent without an envelope"))?,
            Err(e) if e.retryable => return Err(TreasuryError::Hydra(e)),
            Err(e) => return self.rail_refused(row, row.clone(), &e).await,
        };
        let offer = match self
            .hydra
            .credit_offer(hydra::CreditOfferRequest {
                idempotency_key: format!("treasury:{}:offer", row.payment_id),
                envelope_id: envelope.envelope_id.clone(),
            })
            .await
        {
            Ok(r) => r
                .envelope
                .and_then(|e| e.offer)
                .ok_or_else(|| corrupt("hydra offer without an offer"))?,
            Err(e) if e.retryable => return Err(TreasuryError::Hydra(e)),
            Err(e) => return self.rail_refused(row, row.clone(), &e).await,
        };
        if offer.cap_msat < row.amount.as_u64()
            || offer.fee_msat > decision.credit_fee_allowance_msat.as_u64()
        {
            let e = ApiError::conflict(
                "CREDIT_TERMS_REFUSED",
                format!(
                    "the offer (cap {}, fee {}) does not cover amount {} within the credit-fee allowance {}",
                    offer.cap_msat,
                    offer.fee_msat,
                    row.amount.as_u64(),
                    decision.credit_fee_allowance_msat.as_u64()
                ),
            );
            return self.rail_refused(row, row.clone(), &e).await;
        }
        // Accepting the offer may issue the envelope even if the answer is lost: from here on the
        // attempt is never undone, and retries replay the same keys.
        let mut marked = row.clone();
        if row.envelope_id.is_none() {
            marked.envelope_id = Some(envelope.envelope_id.clone());
            if !self.advance(row, marked.clone(), None).await? {
                return Ok(Progress::Continue);
            }
        }
        let issued = match self
            .hydra
            .credit_envelope(hydra::CreditEnvelopeRequest {
                idempotency_key: format!("treasury:{}:envelope", row.payment_id),
                offer_id: offer.offer_id.clone(),
            })
            .await
        {
            Ok(r) => r,
            Err(e) if e.retryable => return Err(TreasuryError::Hydra(e)),
            Err(e) => {
                let mut next = marked.clone();
                next.envelope_id = None;
                return self.rail_refused(&marked, next, &e).await;
            }
        };
        let env = issued
            .envelope
            .ok_or_else(|| corrupt("hydra issued no envelope"))?;
        let mut next = marked.clone();
        if let Some(proto) = &issued.receipt {
            let receipt = self.verified(proto, "envelope issue")?;
            if receipt
                .body
                .get("envelope_id")
                .and_then(|v| v.as_str())
                .is_some_and(|id| id != env.envelope_id)
            {
                return Err(corrupt("hydra's issue receipt is about another envelope"));
            }
            next.linked_receipts.push(receipt.hash.to_string());
        }
        next.envelope_id = Some(env.envelope_id.clone());
        next.envelope_expires_at_ms = Some(env.expires_at_ms);
        next.credit_fee = Msat::new(offer.fee_msat).map_err(|e| corrupt(&e.to_string()))?;
        next.stage = STAGE_ENVELOPE_ISSUED.into();
        next.failure_code = None;
        next.failure_reason = None;
        self.advance(&marked, next, Some("payment.envelope_issued"))
            .await?;
        Ok(Progress::Parked)
    }

    /// `envelope_settling`: Hydra settles the envelope against the verification.
    async fn settling(&self, row: &PaymentRow) -> Result<Progress, TreasuryError> {
        let envelope_id = row
            .envelope_id
            .clone()
            .ok_or_else(|| corrupt("settling without an envelope"))?;
        let verification_id = row.verification_id.clone().unwrap_or_default();
        let req = hydra::CreditSettleRequest {
            idempotency_key: format!("treasury:{}:settle:{verification_id}", row.payment_id),
            envelope_id,
            verification_id,
            verification_receipt_hash: row.verification_receipt_hash.clone().unwrap_or_default(),
            invoice: String::new(),
            amount_msat: 0,
        };
        let resp = match self.hydra.credit_settle(req).await {
            Ok(r) => r,
            Err(e) if e.code == "ENVELOPE_EXPIRED" => {
                self.finish(
                    row,
                    End {
                        state: FAILED,
                        failure_code: Some(e.code.to_string()),
                        failure_reason: Some(e.message.clone()),
                        ..End::default()
                    },
                )
                .await?;
                return Ok(Progress::Done);
            }
            // Hydra may have started paying the provider: keep asking with the same key until it
            // answers (after the envelope's expiry it answers ENVELOPE_EXPIRED if it never
            // started), never give the reservation back on a guess.
            Err(e) if e.retryable => return Err(TreasuryError::Hydra(e)),
            Err(e) => {
                // Refused (a verification that does not match, ...): back to issued, so the caller
                // can settle with another verification.
                let mut back = row.clone();
                back.stage = STAGE_ENVELOPE_ISSUED.into();
                back.verification_id = None;
                back.verification_receipt_hash = None;
                self.advance(row, back, None).await?;
                return Err(TreasuryError::Hydra(e));
            }
        };
        let env = resp
            .envelope
            .as_ref()
            .ok_or_else(|| corrupt("hydra settled no envelope"))?;
        let receipt = resp
            .receipt
            .as_ref()
            .map(|p| self.verified(p, "envelope settlement"))
            .transpose()?;
        match env.state() {
            hydra::EnvelopeState::Settled => {
                let mut done = row.clone();
                done.amount =
                    Msat::new(env.paid_amount_msat).map_err(|e| corrupt(&e.to_string()))?;
                self.finish(
                    &done,
                    End {
                        state: SUCCEEDED,
                        fee: Msat::new(env.routing_fee_msat)
                            .map_err(|e| corrupt(&e.to_string()))?,
                        preimage: Some(env.preimage.clone()),
                        receipt,
                        ..End::default()
                    },
                )
                .await?;
                Ok(Progress::Done)
            }
            hydra::EnvelopeState::Defaulted | hydra::EnvelopeState::Expired => {
                self.finish(
                    row,
                    End {
                        state: FAILED,
                        failure_code: Some(
                            if env.default_reason == "verification_failed" {
                                "VERIFICATION_FAILED"
                            } else {
                                "ENVELOPE_EXPIRED"
                            }
                            .into(),
                        ),
                        failure_reason: Some(env.default_reason.clone()),
                        receipt,
                        ..End::default()
                    },
                )
                .await?;
                Ok(Progress::Done)
            }
            hydra::EnvelopeState::Issued => {
                // The provider payment failed; Hydra keeps the envelope, treasury ends the attempt.
                self.finish(
                    row,
                    End {
                        state: FAILED,
                        failure_code: Some(if env.failure_code.is_empty() {
                            "PROVIDER_PAYMENT_FAILED".into()
                        } else {
                            env.failure_code.clone()
                        }),
                        failure_reason: Some(env.failure_reason.clone()),
                        ..End::default()
                    },
                )
                .await?;
                Ok(Progress::Done)
            }
            _ => Ok(Progress::Pending),
        }
    }

    /// A Hydra receipt that verifies.
    fn verified(
        &self,
        proto: &oa_proto::common::Receipt,
        what: &str,
    ) -> Result<Receipt, TreasuryError> {
        let receipt = oa_service::receipts::from_proto(proto).map_err(|e| corrupt(&e))?;
        receipt
            .verify()
            .map_err(|e| corrupt(&format!("hydra's {what} receipt does not verify: {e}")))?;
        Ok(receipt)
    }

    /// Hydra's pay receipt must verify and be about this payment.
    fn check_pay_receipt(
        &self,
        row: &PaymentRow,
        resp: &hydra::PayResponse,
    ) -> Result<Receipt, TreasuryError> {
        let proto = resp
            .receipt
            .as_ref()
            .ok_or_else(|| corrupt("terminal hydra payment without a receipt"))?;
        let receipt = self.verified(proto, "pay")?;
        if receipt.body.get("payment_hash").and_then(|v| v.as_str())
            != Some(row.payment_hash.as_str())
        {
            return Err(corrupt("hydra receipt is about another payment"));
        }
        Ok(receipt)
    }

    /// Ends an attempt: its state, the ledger (post what was spent or void), the receipt, the
    /// event and the stored answer, in one transaction. Returns whether this call ended it.
    async fn finish(&self, row: &PaymentRow, end: End) -> Result<bool, TreasuryError> {
        Ok(self.finish_answer(row, end).await?.is_some())
    }

    /// [`Payments::finish`], returning the stored answer if this call ended the attempt.
    async fn finish_answer(
        &self,
        row: &PaymentRow,
        end: End,
    ) -> Result<Option<serde_json::Value>, TreasuryError> {
        self.ends
            .submit(FinishJob {
                row: row.clone(),
                end,
            })
            .await
    }

    async fn event(
        &self,
        tx: &mut AnyConnection,
        kind: &str,
        row: &PaymentRow,
        now: u64,
    ) -> Result<(), TreasuryError> {
        journal::append(tx, TOPIC, kind, &event_payload(row), now).await?;
        Ok(())
    }

    /// Claims the request's idempotency key (scope, key, fingerprint) inside `tx`, recording
    /// the attempt it creates if already known. A new request gets the transaction back to do
    /// its work in; otherwise the caller's answer: the stored response, or the attempt as it
    /// stands (with `in_progress`) while its first request is still running.
    async fn claim(
        &self,
        mut tx: Tx,
        (scope, key, fingerprint): (&str, &str, &str),
        resource: Option<&str>,
        now: u64,
        in_progress: StatusCode,
    ) -> Result<Claimed, TreasuryError> {
        match idempotency::claim_for(&mut tx, scope, key, fingerprint, resource, now).await? {
            Claim::New => Ok(Claimed::New(tx)),
            used => {
                // Give the connection back before reading the attempt (SQLite has one).
                tx.rollback().await?;
                self.answer_used(used, in_progress)
                    .await
                    .map(Claimed::Answer)
            }
        }
    }

    /// The answer to a request whose key was used before: the stored response, or the attempt
    /// as it stands (with `in_progress`) while its first request is still running.
    async fn answer_used(
        &self,
        used: Claim,
        in_progress: StatusCode,
    ) -> Result<Stored, TreasuryError> {
        match used {
            Claim::New => Err(corrupt("a new claim has no answer")),
            Claim::Conflict => Err(TreasuryError::IdempotencyConflict),
            Claim::Replay {
                status_code,
                response,
            } => {
                let body = serde_json::from_str(&response).map_err(|e| corrupt(&e.to_string()))?;
                Ok(Stored {
                    status: StatusCode::from_u16(status_code).unwrap_or(StatusCode::OK),
                    body,
                })
            }
            Claim::InProgress { resource_id } => {
                let id = resource_id.ok_or(TreasuryError::RequestInProgress)?;
                self.stored(&id, in_progress).await
            }
        }
    }

    /// The current answer for a payment; in-flight and waiting attempts answer 202.
    pub async fn stored(
        &self,
        payment_id: &str,
        status: StatusCode,
    ) -> Result<Stored, TreasuryError> {
        let resp = self.get(payment_id).await?;
        let status = match resp.payment.as_ref().map(treasury::Payment::state) {
            Some(treasury::PaymentState::InFlight | treasury::PaymentState::PendingApproval) => {
                StatusCode::ACCEPTED
            }
            _ => status,
        };
        Ok(Stored {
            status,
            body: serde_json::to_value(resp).map_err(|e| corrupt(&e.to_string()))?,
        })
    }

    pub async fn get(&self, payment_id: &str) -> Result<treasury::PaymentResponse, TreasuryError> {
        let mut conn = self.conn().await?;
        let row = store::get(&mut conn, payment_id)
            .await?
            .ok_or(TreasuryError::PaymentNotFound)?;
        let receipt = receipt_log::get_stored(&mut conn, row.receipt_hash.as_deref()).await?;
        to_response(&row, receipt.as_ref())
    }

    /// Payments waiting for approval, oldest first.
    pub async fn pending_approvals(&self) -> Result<Vec<treasury::Payment>, TreasuryError> {
        let mut conn = self.conn().await?;
        store::pending_approvals(&mut conn, MAX_APPROVALS_LISTED)
            .await?
            .iter()
            .map(to_payment)
            .collect()
    }

    /// `POST /v1/treasury/approvals/{id}/approve` (`approve = true`) or `.../deny`.
    pub async fn decide_approval(
        self: &Arc<Self>,
        caller: &str,
        payment_id: &str,
        approve: bool,
        req: treasury::ApprovalRequest,
    ) -> Result<Stored, TreasuryError> {
        idempotency::validate_key(&req.idempotency_key)?;
        if req.note.chars().count() > MAX_NOTE_LEN {
            return Err(TreasuryError::InvalidRequest(format!(
                "note is longer than {MAX_NOTE_LEN} characters"
            )));
        }
        let (_, policy) = self.policies.current().await?;
        let now = self.clock.now_ms();
        let scope = format!("treasury.approvals/{caller}");
        let fingerprint = idempotency::fingerprint(&(payment_id, approve, &req))?;
        let tx = self.db.begin().await?;
        let mut tx = match self
            .claim(
                tx,
                (&scope, &req.idempotency_key, &fingerprint),
                None,
                now,
                StatusCode::OK,
            )
            .await?
        {
            Claimed::New(tx) => tx,
            Claimed::Answer(stored) => return Ok(stored),
        };
        let row = store::get(&mut tx, payment_id)
            .await?
            .ok_or(TreasuryError::PaymentNotFound)?;
        if row.state != PENDING_APPROVAL {
            return Err(TreasuryError::NotPendingApproval { state: row.state });
        }
        if !policy.approvals.allow_self_approval && row.requested_by == caller {
            return Err(TreasuryError::SelfApproval);
        }
        if row.approval_expires_at_ms.is_some_and(|at| now >= at) {
            // Expired but not swept yet: the sweeper's work, done now; the caller learns why.
            tx.rollback().await?;
            self.expire_approval(&row).await?;
            return Err(TreasuryError::ApprovalExpired);
        }
        if !approve {
            tx.rollback().await?;
            self.finish(
                &row,
                End {
                    state: DENIED,
                    failure_code: Some("APPROVAL_DENIED".into()),
                    failure_reason: Some("denied_by_approver".into()),
                    approver: Some(caller.to_owned()),
                    reason_code: Some("denied_by_approver".into()),
                    ..End::default()
                },
            )
            .await?;
            return self
                .complete_decision(&scope, &req.idempotency_key, &fingerprint, payment_id)
                .await;
        }
        let mut next = row.clone();
        next.state = IN_FLIGHT.into();
        next.stage = STAGE_START.into();
        next.approver = Some(caller.to_owned());
        next.updated_at_ms = now;
        if !store::update(&mut tx, &next, &row.state, &row.stage).await? {
            return Err(TreasuryError::NotPendingApproval {
                state: "changing".into(),
            });
        }
        idempotency::set_resource(&mut tx, &scope, &req.idempotency_key, payment_id).await?;
        self.event(&mut tx, "payment.approved", &next, now).await?;
        self.event(&mut tx, "payment.in_flight", &next, now).await?;
        tx.commit().await?;
        match self.run(payment_id).await {
            Ok(Progress::Pending) | Err(TreasuryError::Hydra(_)) => {
                self.spawn_tracker(payment_id.to_owned());
            }
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        let stored = self.stored(payment_id, StatusCode::OK).await?;
        let mut tx = self.db.begin().await?;
        idempotency::complete(
            &mut tx,
            &scope,
            &req.idempotency_key,
            stored.status.as_u16(),
            &stored.body.to_string(),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Claims the approver's key again (in its own transaction, the decision being committed)
    /// and stores the answer.
    async fn complete_decision(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        payment_id: &str,
    ) -> Result<Stored, TreasuryError> {
        let stored = self.stored(payment_id, StatusCode::OK).await?;
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        if let Claim::New = idempotency::claim(&mut tx, scope, key, fingerprint, now).await? {
            idempotency::complete(
                &mut tx,
                scope,
                key,
                stored.status.as_u16(),
                &stored.body.to_string(),
                now,
            )
            .await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(stored)
    }

    async fn expire_approval(&self, row: &PaymentRow) -> Result<bool, TreasuryError> {
        self.finish(
            row,
            End {
                state: DENIED,
                failure_code: Some("APPROVAL_EXPIRED".into()),
                failure_reason: Some("approval_expired".into()),
                reason_code: Some("approval_expired".into()),
                ..End::default()
            },
        )
        .await
    }

    /// Ends what waited too long at the service clock: approvals past their expiry are denied
    /// (`approval_expired`) and issued envelopes past theirs fail (`ENVELOPE_EXPIRED`), their
    /// reservations voided. Returns how many attempts it ended.
    pub async fn sweep(&self) -> Result<usize, TreasuryError> {
        let now = self.clock.now_ms();
        let (approvals, envelopes) = {
            let mut conn = self.conn().await?;
            (
                store::expired_approvals(&mut conn, now, SWEEP_BATCH).await?,
                store::expired_envelopes(&mut conn, now, SWEEP_BATCH).await?,
            )
        };
        let mut ended = 0;
        for row in &approvals {
            if self.expire_approval(row).await? {
                ended += 1;
            }
        }
        for row in &envelopes {
            let end = End {
                state: FAILED,
                failure_code: Some("ENVELOPE_EXPIRED".into()),
                failure_reason: Some(
                    "the credit envelope was not settled before it expired".into(),
                ),
                ..End::default()
            };
            if self.finish(row, end).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Sweeps every `interval` for the life of the process.
    pub fn spawn_sweeper(self: &Arc<Self>, interval: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if let Err(e) = this.sweep().await {
                    tracing::warn!("approval and envelope sweep failed: {e}");
                }
            }
        });
    }

    /// `POST /v1/treasury/payments/{id}/settle`: settles the payment's issued credit envelope
    /// with the Aegis verification of its work.
    pub async fn settle(
        self: &Arc<Self>,
        caller: &str,
        payment_id: &str,
        req: treasury::SettlePaymentRequest,
    ) -> Result<Stored, TreasuryError> {
        idempotency::validate_key(&req.idempotency_key)?;
        if !budget::valid_id(&req.verification_id)
            || req.verification_id.len() > MAX_VERIFICATION_ID_LEN
        {
            return Err(TreasuryError::InvalidRequest(format!(
                "verification_id must be 1..={MAX_VERIFICATION_ID_LEN} characters of [A-Za-z0-9._:-]"
            )));
        }
        Hash::parse(&req.verification_receipt_hash).map_err(|_| {
            TreasuryError::InvalidRequest(
                "verification_receipt_hash must be sha256: and 64 lowercase hex digits".into(),
            )
        })?;
        let now = self.clock.now_ms();
        let scope = format!("treasury.settle/{caller}");
        let fingerprint = idempotency::fingerprint(&(payment_id, &req))?;
        let tx = self.db.begin().await?;
        let mut tx = match self
            .claim(
                tx,
                (&scope, &req.idempotency_key, &fingerprint),
                None,
                now,
                StatusCode::ACCEPTED,
            )
            .await?
        {
            Claimed::New(tx) => tx,
            Claimed::Answer(stored) => return Ok(stored),
        };
        let row = store::get(&mut tx, payment_id)
            .await?
            .ok_or(TreasuryError::PaymentNotFound)?;
        if row.state != IN_FLIGHT || row.stage != STAGE_ENVELOPE_ISSUED {
            return Err(TreasuryError::NotSettleable {
                state: row.state,
                stage: row.stage,
            });
        }
        let mut next = row.clone();
        next.stage = STAGE_ENVELOPE_SETTLING.into();
        next.verification_id = Some(req.verification_id.clone());
        next.verification_receipt_hash = Some(req.verification_receipt_hash.clone());
        next.updated_at_ms = now;
        if !store::update(&mut tx, &next, &row.state, &row.stage).await? {
            return Err(TreasuryError::NotSettleable {
                state: row.state,
                stage: "changing".into(),
            });
        }
        idempotency::set_resource(&mut tx, &scope, &req.idempotency_key, payment_id).await?;
        self.event(&mut tx, "payment.settling", &next, now).await?;
        tx.commit().await?;
        match self.run(payment_id).await {
            Ok(Progress::Pending) => {
                self.spawn_tracker(payment_id.to_owned());
                self.stored(payment_id, StatusCode::ACCEPTED).await
            }
            Ok(_) => {
                let stored = self.stored(payment_id, StatusCode::CREATED).await?;
                let mut tx = self.db.begin().await?;
                idempotency::complete(
                    &mut tx,
                    &scope,
                    &req.idempotency_key,
                    stored.status.as_u16(),
                    &stored.body.to_string(),
                    self.clock.now_ms(),
                )
                .await?;
                tx.commit().await?;
                Ok(stored)
            }
            Err(TreasuryError::Hydra(e)) if !e.retryable => {
                // Refused: the attempt is back to `envelope_issued`; the key is given back.
                let mut tx = self.db.begin().await?;
                idempotency::release(&mut tx, &scope, &req.idempotency_key).await?;
                tx.commit().await?;
                Err(TreasuryError::Hydra(e))
            }
            Err(TreasuryError::Hydra(_)) => {
                self.spawn_tracker(payment_id.to_owned());
                self.stored(payment_id, StatusCode::ACCEPTED).await
            }
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/treasury/policy/evaluate`: the decision a payment would get now, and whether its
    /// reservation would fit each budget. Reads only.
    pub async fn evaluate(
        &self,
        req: &treasury::EvaluateRequest,
    ) -> Result<treasury::EvaluateResponse, TreasuryError> {
        let now = self.clock.now_ms();
        let input = check_input(
            &self.config,
            now,
            &req.agent_id,
            &req.invoice,
            &req.l402_challenge,
            req.amount_msat,
            req.max_fee_msat,
            &req.purpose,
            &req.host,
        )?;
        let ctx = self.context(&input.agent_id).await?;
        let mut conn = self.conn().await?;
        let (mut decision, budgets, payee_known) =
            self.decider.decide_in(&mut conn, &ctx, &input).await?;
        let mut checks = Vec::new();
        let mut refusal = None;
        for b in &budgets {
            let status = budget::status(&mut conn, b, now).await?;
            let fits = budget::fits(&status, decision.reserve_msat, decision.budget_cap_bps);
            if !fits && refusal.is_none() {
                refusal = Some(Refusal::Exceeded {
                    kind: b.kind,
                    label: b.label(),
                    capped: decision.budget_cap_bps.is_some(),
                });
            }
            checks.push(treasury::BudgetCheck {
                budget: b.label(),
                window: status.window.key.clone(),
                available_msat: status.available.as_u64(),
                needed_msat: decision.reserve_msat.as_u64(),
                fits,
                period_end_ms: status.window.end_ms.unwrap_or(0),
            });
        }
        if decision.outcome != Outcome::Deny
            && let Some(r) = refusal
        {
            decision.deny(r.rule(), r.reason_code(), refusal_why(&r));
        }
        Ok(treasury::EvaluateResponse {
            decision: Some(decision_to_proto(&decision)),
            budgets: checks,
            org_id: ctx.org.unwrap_or_default(),
            payee_known,
            payee_pubkey: input.invoice.payee_pubkey,
        })
    }

    /// New requests waiting to be recorded by group commit (queued, or in the transaction being
    /// committed); always 0 without `--group-creates`.
    pub fn creates_pending(&self) -> usize {
        self.creates.pending()
    }

    /// Transactions that recorded new requests so far (see [`Creator`]).
    pub fn create_transactions(&self) -> u64 {
        self.creates.committed()
    }

    pub fn spawn_tracker(self: &Arc<Self>, payment_id: String) {
        let this = Arc::clone(self);
        let id = payment_id.clone();
        self.tracker.spawn(payment_id, move || {
            let (this, id) = (this.clone(), id.clone());
            async move {
                match this.run(&id).await {
                    Ok(p) => Ok(matches!(
                        p,
                        Progress::Done | Progress::Ended(_) | Progress::Parked
                    )),
                    // Withdrawn (`undo` deleted it, e.g. by a commit whose answer was lost):
                    // nothing is left to drive.
                    Err(TreasuryError::PaymentNotFound) => Ok(true),
                    Err(e) => Err(e),
                }
            }
        });
    }

    /// How many attempts this process is tracking.
    pub fn tracked(&self) -> usize {
        self.tracker.len()
    }

    /// After a restart: drive every attempt left in flight to its end (or to where it waits).
    pub async fn recover(self: &Arc<Self>) -> Result<usize, TreasuryError> {
        // Timestamps are stored as i64: this is "any time".
        self.recover_before(i64::MAX.unsigned_abs()).await
    }

    /// Tracks the attempts in flight last changed at or before `updated_before_ms` (those
    /// already tracked here are left alone).
    pub async fn recover_before(
        self: &Arc<Self>,
        updated_before_ms: u64,
    ) -> Result<usize, TreasuryError> {
        let rows = {
            let mut conn = self.conn().await?;
            store::in_flight(&mut conn, updated_before_ms, RECOVERY_BATCH).await?
        };
        for r in &rows {
            self.spawn_tracker(r.payment_id.clone());
        }
        Ok(rows.len())
    }
}

pub fn decision_to_proto(d: &Decision) -> treasury::PolicyDecision {
    treasury::PolicyDecision {
        outcome: d.outcome.as_str().into(),
        policy_bundle_id: d.policy_bundle_id.clone(),
        rule: d.rule.clone(),
        reason_code: d.reason_code.clone().unwrap_or_default(),
        reasons: d.reasons.clone(),
        rails: d.rails.iter().map(|r| r.as_str().to_owned()).collect(),
        choose: match d.choose {
            Choose::Order => "order",
            Choose::Score => "score",
        }
        .into(),
        fallback: d.fallback,
        risk: d.risk.clone(),
        budget_cap_bps: d.budget_cap_bps.unwrap_or(0),
        reserve_msat: d.reserve_msat.as_u64(),
    }
}

fn to_payment(p: &PaymentRow) -> Result<treasury::Payment, TreasuryError> {
    let state = match p.state.as_str() {
        DENIED => treasury::PaymentState::Denied,
        PENDING_APPROVAL => treasury::PaymentState::PendingApproval,
        SUCCEEDED => treasury::PaymentState::Succeeded,
        FAILED => treasury::PaymentState::Failed,
        _ => treasury::PaymentState::InFlight,
    };
    // Attempts from before policies have no decision to show.
    let decision = serde_json::from_str::<Decision>(&p.decision_json)
        .ok()
        .map(|d| decision_to_proto(&d));
    Ok(treasury::Payment {
        payment_id: p.payment_id.clone(),
        idempotency_key: p.idempotency_key.clone(),
        agent_id: p.agent_id.clone(),
        state: state as i32,
        payment_hash: p.payment_hash.clone(),
        amount_msat: p.amount.as_u64(),
        max_fee_msat: p.max_fee.as_u64(),
        fee_msat: p.fee.as_u64(),
        preimage: p.preimage.clone().unwrap_or_default(),
        rail: p.rail.clone(),
        purpose: p.purpose.clone(),
        failure_code: p.failure_code.clone().unwrap_or_default(),
        failure_reason: p.failure_reason.clone().unwrap_or_default(),
        created_at_ms: p.created_at_ms,
        updated_at_ms: p.updated_at_ms,
        receipt_hash: p.receipt_hash.clone().unwrap_or_default(),
        org_id: p.org_id.clone().unwrap_or_default(),
        host: p.host.clone().unwrap_or_default(),
        payee_pubkey: p.payee_pubkey.clone(),
        source: p.source.clone(),
        decision,
        stage: p.stage.clone(),
        rails: p.rails.clone(),
        reserved_msat: p.reserved.as_u64(),
        approval_expires_at_ms: p.approval_expires_at_ms.unwrap_or(0),
        approver: p.approver.clone().unwrap_or_default(),
        envelope_id: p.envelope_id.clone().unwrap_or_default(),
        envelope_expires_at_ms: p.envelope_expires_at_ms.unwrap_or(0),
        credit_fee_msat: p.credit_fee.as_u64(),
        requested_by: p.requested_by.clone(),
    })
}

pub fn to_response(
    p: &PaymentRow,
    receipt: Option<&Receipt>,
) -> Result<treasury::PaymentResponse, TreasuryError> {
    Ok(treasury::PaymentResponse {
        payment: Some(to_payment(p)?),
        receipt: receipt.map(oa_service::receipts::to_proto),
    })
}
