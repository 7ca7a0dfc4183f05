//! Withdrawals: an agent's balance pays a BOLT11 invoice, exactly once, under the throttle.
//!
//! `POST /v1/liquidity/withdraw`:
//! 1. Validate (typed 400s, nothing written): agent id, the invoice (network, expiry at least
//!    [`MIN_INVOICE_REMAINING`] away, amount), the fee limit (the liquidity rule, capped by the
//!    caller's `max_fee_msat`). A replay or a conflicting reuse of the key is answered next.
//! 2. Judge the throttle (`throttle.rs`): halted refuses with `503 WITHDRAWALS_HALTED` and its
//!    reason code, recording nothing; delayed queues the withdrawal until `now + delay`; normal
//!    pays at once.
//! 3. In one transaction: claim the key, refuse an invoice already being withdrawn, reserve
//!    amount + fee limit from `agent:<id>:balance` (pending ledger transfer; the no-overdraft
//!    flag refuses what the balance cannot cover, with `409 INSUFFICIENT_BALANCE`), record the
//!    withdrawal `queued` or `paying`.
//! 4. Pay through the executor under the key `hydra:wd:<withdrawal_id>` (so every retry, the
//!    queue and the tracker after a restart all ask for the same payment), and on its terminal
//!    answer, in one transaction: `paid` (post amount + routing fee, release the rest) or
//!    `failed` (void), the `oa.hydra.withdraw_receipt.v1` linking the executor's receipt, the
//!    stored idempotent response.
//!
//! The queue task pays due queued withdrawals unless withdrawals are halted then (it pushes them
//! back by another delay), and fails those whose invoice expired meanwhile (voiding the
//! reservation, with a receipt). On-chain withdrawals are not offered: `SendCoins` needs
//! `wallet:send_onchain`, which the suite grants operators only.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use oa_invoice::{InvoicePolicy, Network};
use oa_money::Msat;
use oa_proto::{hydra, wallet};
use oa_receipts::{Receipt, ReceiptDraft};
use oa_service::{ApiError, Clock, tracker::Tracker};
use oa_store::{
    Db,
    idempotency::{self, Claim},
    journal,
    receipt_log::{self, ReceiptLog},
};
use serde::Serialize;
use tokio::sync::watch;

use crate::error::corrupt;
use crate::{
    book,
    error::HydraError,
    executor::Executor,
    liquidity::Liquidity,
    store::{
        credit as credit_store,
        funds::{self as store, WD_FAILED, WD_PAID, WD_PAYING, WD_QUEUED, WithdrawalRow},
    },
    throttle::{self, Posture, Throttle, ThrottleConfig},
    validate,
};

pub const RECEIPT_SCHEMA: &str = "oa.hydra.withdraw_receipt.v1";
/// An invoice must stay payable at least this long to be accepted for a withdrawal, so a
/// withdrawal paid at once never fails for an expired invoice.
pub const MIN_INVOICE_REMAINING: Duration = Duration::from_secs(60);
/// A queued withdrawal whose invoice expires within this margin when it comes due fails
/// instead of being sent (the payment could not complete in time).
const MIN_PAY_REMAINING_MS: u64 = 10_000;
/// How long a pay call waits at the executor before answering that the payment is in flight.
const PAY_WAIT_MS: u32 = 20_000;
/// Due withdrawals handled per queue pass, and in-flight ones re-driven per batch at start-up.
const BATCH: u32 = 100;
/// The payment-outcome source of withdrawals (for the payment-failure breaker).
const OUTCOME_SOURCE: &str = "withdrawal";

#[derive(Clone, Debug)]
pub struct WithdrawalsConfig {
    pub network: Network,
    pub max_amount: Msat,
    pub throttle: ThrottleConfig,
    /// How often the queue task looks for due withdrawals.
    pub queue_interval: Duration,
    /// Trusted executor receipt key ids (hex); empty trusts the key a receipt names, after its
    /// signature verifies (development).
    pub executor_keys: Vec<String>,
}

pub struct Withdrawals {
    db: Db,
    executor: Arc<dyn Executor>,
    log: ReceiptLog,
    clock: Arc<dyn Clock>,
    pub config: WithdrawalsConfig,
    /// For the fee limit rule, shared with quotes.
    liquidity: Arc<Liquidity>,
    tracker: Arc<Tracker>,
}

/// The throttle as measured now, with the executor's answers it was judged from.
pub struct Measurement {
    pub info: Result<wallet::GetInfoResponse, ApiError>,
    pub balance: Result<wallet::WalletBalanceResponse, ApiError>,
    pub throttle: Throttle,
}

#[derive(Serialize)]
struct WithdrawReceiptBody<'a> {
    withdrawal_id: &'a str,
    agent_id: &'a str,
    payment_hash: &'a str,
    status: &'a str,
    amount_msat: Msat,
    fee_msat: Msat,
    fee_limit_msat: Msat,
    reserved_msat: Msat,
    posted_msat: Msat,
    released_msat: Msat,
    reserve_transfer: String,
    /// `LIQUIDITY_TIGHT` when the throttle delayed it, else `""`.
    throttle_reason: &'a str,
    #[serde(with = "oa_receipts::u64_string")]
    not_before_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    preimage: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_code: Option<&'a str>,
    executor_receipt: String,
}

/// A terminal outcome to record.
struct Outcome<'a> {
    paid: bool,
    fee: Msat,
    preimage: Option<&'a str>,
    code: Option<&'a str>,
    reason: Option<&'a str>,
    executor_receipt: Option<&'a Receipt>,
}

impl Withdrawals {
    pub fn new(
        db: Db,
        executor: Arc<dyn Executor>,
        log: ReceiptLog,
        clock: Arc<dyn Clock>,
        config: WithdrawalsConfig,
        liquidity: Arc<Liquidity>,
    ) -> Self {
        Self {
            db,
            executor,
            log,
            clock,
            config,
            liquidity,
            tracker: Arc::new(Tracker::new()),
        }
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, HydraError> {
        Ok(self.db.reader().await?)
    }

    /// Measures liabilities and liquidity and judges the throttle.
    pub async fn measure(&self) -> Result<Measurement, HydraError> {
        let (info, balance) = tokio::join!(self.executor.info(), self.executor.wallet_balance());
        let mut conn = self.conn().await?;
        let balances = book::agent_liabilities(&mut conn).await?.as_u64();
        let (_, reservations) = credit_store::open_totals(&mut conn).await?;
        drop(conn);
        let liquidity = match (&info, &balance) {
            (Ok(i), Ok(b)) => Some(throttle::Liquidity {
                channel_local_msat: i.local_balance_msat,
                onchain_confirmed_msat: b.confirmed_balance_msat,
            }),
            _ => None,
        };
        let throttle = throttle::judge(
            &self.config.throttle,
            balances,
            reservations.as_u64(),
            liquidity,
        );
        Ok(Measurement {
            info,
            balance,
            throttle,
        })
    }

    /// The throttle as the status and observability routes show it.
    pub async fn throttle_proto(
        &self,
        t: &Throttle,
    ) -> Result<hydra::WithdrawThrottle, HydraError> {
        let (queued, queued_msat) = store::queued_totals(&mut *self.conn().await?).await?;
        Ok(t.to_proto(&self.config.throttle, queued, queued_msat.as_u64()))
    }

    /// `POST /v1/liquidity/withdraw` (see the module docs).
    pub async fn withdraw(
        self: &Arc<Self>,
        caller: &str,
        req: hydra::WithdrawRequest,
    ) -> Result<hydra::WithdrawResponse, HydraError> {
        idempotency::validate_key(&req.idempotency_key)?;
        validate::agent_id(&req.agent_id)?;
        let now = self.clock.now_ms();
        let amount_override = match req.amount_msat {
            0 => None,
            v => Some(validate::msat("INVALID_AMOUNT", "amount_msat", v)?),
        };
        let max_fee = validate::msat("INVALID_AMOUNT", "max_fee_msat", req.max_fee_msat)?;
        let policy = InvoicePolicy {
            network: self.config.network,
            max_amount: self.config.max_amount,
            min_expiry_remaining: MIN_INVOICE_REMAINING,
        };
        let invoice = oa_invoice::validate(&req.invoice, &policy, now, amount_override)?;
        let fee_limit = self.liquidity.fee_limit(invoice.amount, max_fee);
        let reserve = invoice
            .amount
            .checked_add(fee_limit)
            .map_err(|e| validate::invalid("INVALID_AMOUNT", format!("amount + fee limit: {e}")))?;
        let scope = format!("hydra.withdraw/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        // A replay, a conflict or a retry of a withdrawal in progress is answered without
        // judging the throttle again.
        {
            let mut tx = self.db.begin().await?;
            let claim =
                idempotency::claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now)
                    .await?;
            tx.rollback().await?;
            match claim {
                Claim::Conflict => return Err(HydraError::IdempotencyConflict),
                Claim::Replay { response, .. } => return parse(&response),
                Claim::InProgress {
                    resource_id: Some(id),
                } => return self.current(&id).await,
                Claim::InProgress { resource_id: None } => {
                    return Err(HydraError::RequestInProgress);
                }
                Claim::New => {}
            }
        }
        let throttle = self.measure().await?.throttle;
        let (state, not_before, throttle_reason) = match throttle.posture {
            Posture::Halted => {
                return Err(HydraError::WithdrawalsHalted {
                    reason_code: throttle.reason_code,
                    why: throttle.why,
                });
            }
            Posture::Delayed => {
                let delay_ms =
                    u64::try_from(self.config.throttle.delay.as_millis()).unwrap_or(u64::MAX);
                (
                    WD_QUEUED,
                    now.saturating_add(delay_ms),
                    Some(throttle::LIQUIDITY_TIGHT.to_owned()),
                )
            }
            Posture::Normal => (WD_PAYING, now, None),
        };
        let row = WithdrawalRow {
            withdrawal_id: format!("wd_{}", uuid::Uuid::now_v7().simple()),
            caller: caller.to_owned(),
            agent_id: req.agent_id.clone(),
            payment_hash: invoice.payment_hash.to_string(),
            invoice: invoice.bolt11.clone(),
            amount: invoice.amount,
            fee_limit,
            state: state.into(),
            created_at_ms: now,
            not_before_ms: not_before,
            throttle_reason,
            idempotency_scope: scope.clone(),
            idempotency_key: req.idempotency_key.clone(),
            fee: Msat::ZERO,
            preimage: None,
            failure_code: None,
            failure_reason: None,
            executor_receipt: None,
            receipt_hash: None,
        };
        let mut tx = self.db.begin().await?;
        match idempotency::claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await? {
            Claim::Conflict => return Err(HydraError::IdempotencyConflict),
            Claim::Replay { response, .. } => {
                tx.rollback().await?;
                return parse(&response);
            }
            Claim::InProgress { resource_id } => {
                tx.rollback().await?;
                return match resource_id {
                    Some(id) => self.current(&id).await,
                    None => Err(HydraError::RequestInProgress),
                };
            }
            Claim::New => {}
        }
        if store::hash_withdrawn(&mut tx, &row.payment_hash).await? {
            tx.rollback().await?;
            return Err(HydraError::InvoiceAlreadyWithdrawn);
        }
        if let Err(book::InsufficientBalance) =
            book::reserve_withdrawal(&mut tx, &row.agent_id, &row.withdrawal_id, reserve, now)
                .await?
        {
            let available = book::agent_balance(&mut tx, &row.agent_id)
                .await?
                .map_or(0, |b| b.available_msat());
            tx.rollback().await?;
            return Err(HydraError::InsufficientBalance {
                available_msat: available,
                needed_msat: reserve.as_u64(),
            });
        }
        store::insert_withdrawal(&mut tx, &row).await?;
        idempotency::set_resource(&mut tx, &scope, &req.idempotency_key, &row.withdrawal_id)
            .await?;
        journal::append(
            &mut tx,
            "hydra.withdrawals",
            if state == WD_QUEUED {
                "withdrawal_queued"
            } else {
                "withdrawal_started"
            },
            &serde_json::json!({"withdrawal_id": row.withdrawal_id, "agent_id": row.agent_id,
                "payment_hash": row.payment_hash, "reserved_msat": reserve.as_u64().to_string(),
                "not_before_ms": not_before.to_string()}),
            now,
        )
        .await?;
        tx.commit().await?;
        if state == WD_PAYING {
            self.drive(&row.withdrawal_id).await?;
        }
        self.current(&row.withdrawal_id).await
    }

    /// `GET /v1/liquidity/withdraw/{withdrawal_id}` and the answer to a withdraw call: the
    /// withdrawal now, with its receipts once terminal.
    pub async fn current(
        &self,
        withdrawal_id: &str,
    ) -> Result<hydra::WithdrawResponse, HydraError> {
        if withdrawal_id.is_empty() || withdrawal_id.len() > validate::MAX_ID_LEN {
            return Err(HydraError::WithdrawalNotFound);
        }
        let mut conn = self.conn().await?;
        let w = store::get_withdrawal(&mut conn, withdrawal_id)
            .await?
            .ok_or(HydraError::WithdrawalNotFound)?;
        let receipt = receipt_log::get_stored(&mut conn, w.receipt_hash.as_deref()).await?;
        let exec: Option<Receipt> = w
            .executor_receipt
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(&e.to_string()))?;
        Ok(to_response(&w, receipt.as_ref(), exec.as_ref()))
    }

    /// `GET /v1/liquidity/balance/{agent_id}`.
    pub async fn balance(&self, agent_id: &str) -> Result<hydra::AgentBalanceResponse, HydraError> {
        validate::agent_id(agent_id)?;
        let b = book::agent_balance(&mut *self.conn().await?, agent_id)
            .await?
            .unwrap_or_default();
        let balance = b.credits_posted_msat.saturating_sub(b.debits_posted_msat);
        Ok(hydra::AgentBalanceResponse {
            agent_id: agent_id.to_owned(),
            balance_msat: balance,
            reserved_msat: b.debits_pending_msat,
            available_msat: b.available_msat(),
        })
    }

    /// Drives a withdrawal in `paying`: one attempt now, then the tracker if it is not terminal.
    async fn drive(self: &Arc<Self>, withdrawal_id: &str) -> Result<(), HydraError> {
        match self.attempt(withdrawal_id).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.spawn_tracker(withdrawal_id.to_owned());
                Ok(())
            }
            Err(HydraError::Executor(e)) => {
                tracing::warn!(%withdrawal_id, code = %e.code, "executor did not answer; tracking");
                self.spawn_tracker(withdrawal_id.to_owned());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Asks the executor for the withdrawal's payment (always the same key) and records a
    /// terminal answer. Returns whether the withdrawal is now terminal.
    async fn attempt(&self, withdrawal_id: &str) -> Result<bool, HydraError> {
        let w = store::get_withdrawal(&mut *self.conn().await?, withdrawal_id)
            .await?
            .ok_or(HydraError::WithdrawalNotFound)?;
        if w.state != WD_PAYING {
            return Ok(true);
        }
        let req = wallet::PayInvoiceRequest {
            idempotency_key: format!("hydra:wd:{}", w.withdrawal_id),
            invoice: w.invoice.clone(),
            amount_msat: w.amount.as_u64(),
            fee_limit_msat: w.fee_limit.as_u64(),
            timeout_ms: PAY_WAIT_MS,
        };
        match self.executor.pay(req).await {
            Ok(resp) => match resp.payment.as_ref().map(wallet::WalletPayment::status) {
                Some(wallet::PaymentStatus::Succeeded | wallet::PaymentStatus::Failed) => {
                    self.finish(&w, &resp).await?;
                    Ok(true)
                }
                _ => Ok(false),
            },
            // The executor refused the payment itself (its caps, a hash paid before, ...): nothing
            // was sent under this key, so the withdrawal fails with the executor's code.
            Err(e)
                if !e.retryable && e.status.is_client_error() && e.code != "PAYMENT_IN_FLIGHT" =>
            {
                self.record(
                    &w,
                    &Outcome {
                        paid: false,
                        fee: Msat::ZERO,
                        preimage: None,
                        code: Some(&e.code),
                        reason: Some(&e.message),
                        executor_receipt: None,
                    },
                )
                .await?;
                Ok(true)
            }
            Err(e) => Err(HydraError::Executor(e)),
        }
    }

    async fn finish(
        &self,
        w: &WithdrawalRow,
        resp: &wallet::PaymentResponse,
    ) -> Result<(), HydraError> {
        let payment = resp
            .payment
            .as_ref()
            .ok_or_else(|| HydraError::BadExecutorReceipt("no payment".into()))?;
        let proto = resp.receipt.as_ref().ok_or_else(|| {
            HydraError::BadExecutorReceipt("terminal payment without a receipt".into())
        })?;
        let receipt = crate::executor::check_receipt(
            &self.config.executor_keys,
            &w.payment_hash,
            w.amount,
            payment,
            proto,
        )
        .map_err(HydraError::BadExecutorReceipt)?;
        let paid = payment.status() == wallet::PaymentStatus::Succeeded;
        let fee = Msat::new(payment.fee_msat)
            .map_err(|e| HydraError::BadExecutorReceipt(e.to_string()))?;
        if fee > w.fee_limit {
            return Err(HydraError::BadExecutorReceipt(format!(
                "routing fee {} msat above the fee limit {} msat",
                fee.as_u64(),
                w.fee_limit.as_u64()
            )));
        }
        let outcome = if paid {
            Outcome {
                paid: true,
                fee,
                preimage: Some(&payment.preimage),
                code: None,
                reason: None,
                executor_receipt: Some(&receipt),
            }
        } else {
            Outcome {
                paid: false,
                fee: Msat::ZERO,
                preimage: None,
                code: Some(&payment.failure_code),
                reason: Some(&payment.failure_reason),
                executor_receipt: Some(&receipt),
            }
        };
        self.record(w, &outcome).await
    }

    /// Records the terminal state, the ledger's post or void, Hydra's receipt and the idempotent
    /// response, once.
    async fn record(&self, w: &WithdrawalRow, o: &Outcome<'_>) -> Result<(), HydraError> {
        let now = self.clock.now_ms();
        let state = if o.paid { WD_PAID } else { WD_FAILED };
        let exec_json = o
            .executor_receipt
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| corrupt(&e.to_string()))?;
        let reserved = w
            .amount
            .checked_add(w.fee_limit)
            .map_err(|e| corrupt(&format!("amount + fee limit: {e}")))?;
        let posted = if o.paid {
            w.amount
                .checked_add(o.fee)
                .map_err(|e| corrupt(&format!("amount + fee: {e}")))?
        } else {
            Msat::ZERO
        };
        let released = reserved
            .checked_sub(posted)
            .map_err(|e| corrupt(&format!("reserved - posted: {e}")))?;
        let mut tx = self.db.begin().await?;
        if !store::finish_withdrawal(
            &mut tx,
            &w.withdrawal_id,
            state,
            o.fee,
            o.preimage,
            o.code,
            o.reason,
            exec_json.as_deref(),
            now,
        )
        .await?
        {
            tx.rollback().await?;
            return Ok(());
        }
        book::resolve_withdrawal(&mut tx, &w.withdrawal_id, o.paid.then_some(posted), now).await?;
        // Only the network's answers count for the payment-failure breaker.
        if o.executor_receipt.is_some() {
            credit_store::record_payment_outcome(
                &mut tx,
                OUTCOME_SOURCE,
                &w.withdrawal_id,
                &w.payment_hash,
                o.paid,
                w.amount,
                now,
            )
            .await?;
        }
        let body = WithdrawReceiptBody {
            withdrawal_id: &w.withdrawal_id,
            agent_id: &w.agent_id,
            payment_hash: &w.payment_hash,
            status: if o.paid { "succeeded" } else { "failed" },
            amount_msat: w.amount,
            fee_msat: o.fee,
            fee_limit_msat: w.fee_limit,
            reserved_msat: reserved,
            posted_msat: posted,
            released_msat: released,
            reserve_transfer: book::withdrawal_reservation_id(&w.withdrawal_id),
            throttle_reason: w.throttle_reason.as_deref().unwrap_or(""),
            not_before_ms: w.not_before_ms,
            preimage: o.preimage,
            failure_code: o.code,
            executor_receipt: o
                .executor_receipt
                .map_or_else(String::new, |r| r.hash.to_string()),
        };
        let draft = ReceiptDraft {
            schema: RECEIPT_SCHEMA.into(),
            receipt_id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
            idempotency_key: w.idempotency_key.clone(),
            links: o.executor_receipt.map(|r| vec![r.hash]).unwrap_or_default(),
            body: oa_receipts::body_from(&body)?,
        };
        let receipt = self.log.append(&mut tx, draft, now).await?;
        store::set_withdrawal_receipt(&mut tx, &w.withdrawal_id, &receipt.hash.to_string()).await?;
        journal::append(
            &mut tx,
            "hydra.withdrawals",
            if o.paid {
                "withdrawal_paid"
            } else {
                "withdrawal_failed"
            },
            &serde_json::json!({"withdrawal_id": w.withdrawal_id, "agent_id": w.agent_id,
                "payment_hash": w.payment_hash, "receipt_hash": receipt.hash.to_string()}),
            now,
        )
        .await?;
        let finished = store::get_withdrawal(&mut tx, &w.withdrawal_id)
            .await?
            .ok_or(HydraError::WithdrawalNotFound)?;
        let response = to_response(&finished, Some(&receipt), o.executor_receipt);
        let json = serde_json::to_string(&response).map_err(|e| corrupt(&e.to_string()))?;
        idempotency::complete(
            &mut tx,
            &w.idempotency_scope,
            &w.idempotency_key,
            200,
            &json,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One pass of the queue: due withdrawals are paid, pushed back (halted) or failed (their
    /// invoice expired). Returns how many it started paying.
    pub async fn process_due(self: &Arc<Self>) -> Result<usize, HydraError> {
        let now = self.clock.now_ms();
        let due =
            store::withdrawals_in(&mut *self.conn().await?, WD_QUEUED, Some(now), BATCH).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let throttle = self.measure().await?.throttle;
        let delay_ms = u64::try_from(self.config.throttle.delay.as_millis()).unwrap_or(u64::MAX);
        let mut started = 0;
        for w in due {
            let expires_at_ms = oa_invoice::decode(&w.invoice).map_or(0, |d| d.expires_at_ms);
            if expires_at_ms.saturating_sub(now) < MIN_PAY_REMAINING_MS {
                self.record(
                    &w,
                    &Outcome {
                        paid: false,
                        fee: Msat::ZERO,
                        preimage: None,
                        code: Some("INVOICE_EXPIRED"),
                        reason: Some("the invoice expired while the withdrawal was queued"),
                        executor_receipt: None,
                    },
                )
                .await?;
                continue;
            }
            if throttle.posture == Posture::Halted {
                let mut tx = self.db.begin().await?;
                store::requeue_withdrawal(
                    &mut tx,
                    &w.withdrawal_id,
                    now.saturating_add(delay_ms),
                    throttle.reason_code,
                    now,
                )
                .await?;
                tx.commit().await?;
                continue;
            }
            let mut tx = self.db.begin().await?;
            let mine = store::start_withdrawal(&mut tx, &w.withdrawal_id, now).await?;
            if mine {
                journal::append(
                    &mut tx,
                    "hydra.withdrawals",
                    "withdrawal_started",
                    &serde_json::json!({"withdrawal_id": w.withdrawal_id, "agent_id": w.agent_id,
                        "payment_hash": w.payment_hash, "queued_since_ms": w.created_at_ms.to_string()}),
                    now,
                )
                .await?;
            }
            tx.commit().await?;
            if mine {
                started += 1;
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    if let Err(e) = this.drive(&w.withdrawal_id).await {
                        tracing::warn!(withdrawal_id = %w.withdrawal_id, "paying a queued withdrawal: {e}");
                    }
                });
            }
        }
        Ok(started)
    }

    /// Runs [`Withdrawals::process_due`] every `queue_interval` until `stop` is set or Hydra is
    /// dropped. Time is the clock's, so tests move a delay with a manual clock.
    pub fn spawn_queue(self: &Arc<Self>, mut stop: watch::Receiver<bool>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = self.config.queue_interval.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let Some(this) = weak.upgrade() else { return };
                if this.db.pool().is_closed() {
                    return;
                }
                if let Err(e) = this.process_due().await {
                    tracing::warn!("withdrawal queue pass failed, will retry: {e}");
                }
            }
        });
    }

    /// Keeps asking the executor about a withdrawal in `paying` until it is terminal.
    pub fn spawn_tracker(self: &Arc<Self>, withdrawal_id: String) {
        let this = Arc::clone(self);
        let id = withdrawal_id.clone();
        self.tracker.spawn(withdrawal_id, move || {
            let (this, id) = (this.clone(), id.clone());
            async move { this.attempt(&id).await }
        });
    }

    /// After a restart: re-drive every withdrawal left in `paying` (never re-sent: the executor
    /// answers the same key with the same payment).
    pub async fn recover(self: &Arc<Self>) -> Result<usize, HydraError> {
        let rows = store::withdrawals_in(&mut *self.conn().await?, WD_PAYING, None, BATCH).await?;
        for w in &rows {
            self.spawn_tracker(w.withdrawal_id.clone());
        }
        Ok(rows.len())
    }
}

fn parse(response: &str) -> Result<hydra::WithdrawResponse, HydraError> {
    oa_service::parse_json(response.as_bytes()).map_err(|_| corrupt("stored withdraw response"))
}

fn to_response(
    w: &WithdrawalRow,
    receipt: Option<&Receipt>,
    executor_receipt: Option<&Receipt>,
) -> hydra::WithdrawResponse {
    let state = match w.state.as_str() {
        WD_QUEUED => hydra::WithdrawalState::Queued,
        WD_PAYING => hydra::WithdrawalState::Paying,
        WD_PAID => hydra::WithdrawalState::Paid,
        _ => hydra::WithdrawalState::Failed,
    };
    hydra::WithdrawResponse {
        withdrawal: Some(hydra::Withdrawal {
            withdrawal_id: w.withdrawal_id.clone(),
            agent_id: w.agent_id.clone(),
            state: state as i32,
            payment_hash: w.payment_hash.clone(),
            amount_msat: w.amount.as_u64(),
            fee_limit_msat: w.fee_limit.as_u64(),
            fee_msat: w.fee.as_u64(),
            created_at_ms: w.created_at_ms,
            not_before_ms: w.not_before_ms,
            throttle_reason: w.throttle_reason.clone().unwrap_or_default(),
            preimage: w.preimage.clone().unwrap_or_default(),
            failure_code: w.failure_code.clone().unwrap_or_default(),
            failure_reason: w.failure_reason.clone().unwrap_or_default(),
        }),
        receipt: receipt.map(oa_service::receipts::to_proto),
        executor_receipt: executor_receipt.map(oa_service::receipts::to_proto),
    }
}
