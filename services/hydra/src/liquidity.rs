//! Liquidity: quote and pay BOLT11 invoices from the pool, exactly once per quote.
//!
//! A quote fixes the invoice, the amount and a fee limit for a bounded time. Paying it moves it
//! `open -> paying` with a guarded update (one winner however many callers race), sends it through
//! the wallet-executor under an idempotency key derived from the quote (so every retry, and the
//! tracker after a crash, asks for the same payment), and on the executor's terminal answer
//! records `paid` or `failed` with Hydra's receipt, which links the executor's, in one transaction.
//!
//! The pool pays: starting a payment reserves its amount + fee limit from the pool in the ledger
//! (a pending transfer in the same transaction as `open -> paying`; a pool without room refuses
//! with `INSUFFICIENT_LIQUIDITY`), and the outcome posts amount + routing fee or voids it in the
//! transaction that records it. `payer_ref` is only recorded: treasury keeps the agents' budgets
//! and calls Hydra for them, so drawing on an agent's Hydra balance here would spend it twice.
//!
//! Fee limit rule (deterministic): `min(max_fee_msat, max(fee_floor, ceil(amount * fee_ppm / 1e6)))`.

use std::{sync::Arc, time::Duration};

use oa_invoice::{InvoicePolicy, Network};
use oa_money::Msat;
use oa_proto::{hydra, wallet};
use oa_receipts::{Receipt, ReceiptDraft};
use oa_service::{ApiError, Clock, tracker::Tracker};
use oa_store::{
    Db,
    group::{Committer, GroupCommit},
    idempotency, journal,
    receipt_log::{self, Batch, ReceiptLog},
};
use serde::Serialize;

use crate::error::corrupt;
use crate::{
    book,
    error::HydraError,
    executor::Executor,
    routing::Routing,
    store::{self, FAILED, OPEN, PAID, PAYING, QuoteRow},
};

pub const RECEIPT_SCHEMA: &str = "oa.hydra.invoice_pay_receipt.v1";
/// The executor's receipt schema that an invoice-pay receipt links.
pub const EXECUTOR_SCHEMA: &str = crate::executor::EXECUTOR_SCHEMA;
/// Longest quote lifetime accepted in configuration.
pub const MAX_QUOTE_TTL: Duration = Duration::from_secs(600);
/// How long a pay call waits at the executor before answering that the payment is in flight.
const PAY_WAIT_MS: u32 = 20_000;
/// Quotes in `paying` re-driven per batch at start-up.
const RECOVERY_BATCH: u32 = 500;
/// The payment-outcome source of liquidity quotes.
const OUTCOME_SOURCE: &str = "liquidity";
/// Longest `payer_ref`.
const MAX_PAYER_REF_LEN: usize = 128;
/// Most steps committed in one transaction (bounds how long the writer, or on PostgreSQL the
/// receipt and journal heads, are held, and the work redone when a batch fails).
const MAX_BATCH: usize = 64;
/// Most steps waiting for the writer; callers beyond wait to submit.
const MAX_QUEUED: usize = 1_024;

#[derive(Clone, Debug)]
pub struct LiquidityConfig {
    pub network: Network,
    pub quote_ttl: Duration,
    pub max_invoice: Msat,
    pub fee_floor: Msat,
    pub fee_ppm: u32,
}

pub struct Liquidity {
    pub db: Db,
    pub executor: Arc<dyn Executor>,
    pub clock: Arc<dyn Clock>,
    pub config: LiquidityConfig,
    /// Trusted executor receipt key ids (hex); empty trusts the key the receipt names, after
    /// checking its signature (development).
    pub executor_keys: Vec<String>,
    /// Learns from payment outcomes (see `routing`).
    pub routing: Arc<Routing>,
    tracker: Arc<Tracker>,
    /// Quote, pay and result writes (see [`Steps`]), group-committed.
    writes: GroupCommit<Steps>,
}

#[derive(Serialize)]
struct InvoicePayBody<'a> {
    quote_id: &'a str,
    payment_hash: &'a str,
    status: &'a str,
    amount_msat: Msat,
    fee_msat: Msat,
    fee_limit_msat: Msat,
    payer_ref: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    preimage: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_code: Option<&'a str>,
    executor_receipt: String,
}

impl Liquidity {
    pub fn new(
        db: Db,
        executor: Arc<dyn Executor>,
        log: ReceiptLog,
        clock: Arc<dyn Clock>,
        config: LiquidityConfig,
        executor_keys: Vec<String>,
        routing: Arc<Routing>,
    ) -> Self {
        let steps = Steps {
            db: db.clone(),
            log,
            routing: routing.clone(),
        };
        // On PostgreSQL too: every result locks the receipt log's head and the journal's until
        // COMMIT, so replicas would otherwise end payments one at a time.
        let writes = GroupCommit::spawn(steps, MAX_BATCH, MAX_QUEUED);
        Self {
            db,
            executor,
            clock,
            config,
            executor_keys,
            routing,
            tracker: Arc::new(Tracker::new()),
            writes,
        }
    }

    /// The fee limit of a quote (see the module docs).
    pub fn fee_limit(&self, amount: Msat, max_fee: Msat) -> Msat {
        let proportional = amount.ppm_ceil(self.config.fee_ppm).unwrap_or(Msat::MAX);
        proportional.max(self.config.fee_floor).min(max_fee)
    }

    pub async fn quote(
        &self,
        caller: &str,
        req: hydra::QuotePayRequest,
    ) -> Result<hydra::QuotePayResponse, HydraError> {
        idempotency::validate_key(&req.idempotency_key)?;
        if req.payer_ref.len() > MAX_PAYER_REF_LEN {
            return Err(HydraError::InvalidRequest(format!(
                "payer_ref is longer than {MAX_PAYER_REF_LEN} characters"
            )));
        }
        let now = self.clock.now_ms();
        let amount_override = match req.amount_msat {
            0 => None,
            v => Some(
                Msat::new(v)
                    .map_err(|e| HydraError::InvalidRequest(format!("amount_msat: {e}")))?,
            ),
        };
        let max_fee = Msat::new(req.max_fee_msat)
            .map_err(|e| HydraError::InvalidRequest(format!("max_fee_msat: {e}")))?;
        let policy = InvoicePolicy {
            network: self.config.network,
            max_amount: self.config.max_invoice,
            // The invoice must outlive the quote, so a payment of a live quote is never refused
            // for an expired invoice.
            min_expiry_remaining: self.config.quote_ttl,
        };
        let invoice = oa_invoice::validate(&req.invoice, &policy, now, amount_override)?;
        let ttl_ms = u64::try_from(self.config.quote_ttl.as_millis()).unwrap_or(u64::MAX);
        let row = QuoteRow {
            quote_id: format!("q_{}", uuid::Uuid::now_v7().simple()),
            payment_hash: invoice.payment_hash.to_string(),
            invoice: invoice.bolt11,
            amount: invoice.amount,
            fee_limit: self.fee_limit(invoice.amount, max_fee),
            payer_ref: req.payer_ref.clone(),
            state: OPEN.into(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms),
            pay_idempotency_key: None,
            pay_idempotency_scope: None,
            fee: Msat::ZERO,
            preimage: None,
            failure_code: None,
            failure_reason: None,
            executor_receipt: None,
            receipt_hash: None,
        };
        let key = store::QuoteKey {
            scope: format!("hydra.quote_pay/{caller}"),
            key: req.idempotency_key.clone(),
            fingerprint: idempotency::fingerprint(&req)?,
        };
        match self
            .writes
            .submit(Write::Quote(Box::new((row, key))))
            .await?
        {
            Written::Quote(answer) => answer,
            _ => Err(corrupt("the quote's write answered for another step")),
        }
    }

    pub async fn pay(
        self: &Arc<Self>,
        caller: &str,
        req: hydra::PayRequest,
    ) -> Result<hydra::PayResponse, HydraError> {
        idempotency::validate_key(&req.idempotency_key)?;
        if req.quote_id.is_empty() || req.quote_id.len() > 64 {
            return Err(HydraError::InvalidRequest("quote_id is required".into()));
        }
        let now = self.clock.now_ms();
        let scope = format!("hydra.pay/{caller}");
        let quote = match self
            .writes
            .submit(Write::Pay {
                quote_id: req.quote_id.clone(),
                scope: scope.clone(),
                key: req.idempotency_key.clone(),
                now,
            })
            .await
        {
            Ok(Written::Pay(Some(quote))) => quote,
            Ok(Written::Pay(None)) => return self.not_started(&scope, &req).await,
            Ok(_) => return Err(corrupt("the pay's write answered for another step")),
            Err(HydraError::Store(e)) if e.is_unique_violation() => {
                return self.not_started(&scope, &req).await;
            }
            Err(e) => return Err(e),
        };
        match self.drive(&quote).await? {
            Some(done) => Ok(done),
            None => self.current(&req.quote_id).await,
        }
    }

    /// Answers a pay that did not start the quote's payment: a retry of the key that did (the
    /// payment as it is now), another quote's key (conflict), or why the quote cannot be paid.
    async fn not_started(
        &self,
        scope: &str,
        req: &hydra::PayRequest,
    ) -> Result<hydra::PayResponse, HydraError> {
        let mut conn = self.conn().await?;
        if let Some(q) = store::by_pay_key(&mut conn, scope, &req.idempotency_key).await? {
            drop(conn);
            return if q.quote_id == req.quote_id {
                self.current(&q.quote_id).await
            } else {
                Err(HydraError::IdempotencyConflict)
            };
        }
        Err(match store::get(&mut conn, &req.quote_id).await? {
            None => HydraError::QuoteNotFound,
            Some(q) if q.state == OPEN => HydraError::QuoteExpired,
            Some(_) => HydraError::QuoteAlreadyUsed,
        })
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, HydraError> {
        Ok(self.db.reader().await?)
    }

    /// Drives a quote in `paying`: one attempt now, then the tracker if it is not terminal yet.
    /// Returns the answer when this attempt recorded the end.
    async fn drive(
        self: &Arc<Self>,
        quote: &QuoteRow,
    ) -> Result<Option<hydra::PayResponse>, HydraError> {
        match self.attempt_row(quote).await {
            Ok(Attempt::Recorded(resp)) => Ok(Some(*resp)),
            Ok(Attempt::Ended) => Ok(None),
            Ok(Attempt::InFlight) => {
                self.spawn_tracker(quote.quote_id.clone());
                Ok(None)
            }
            Err(HydraError::Executor(e)) => {
                let quote_id = &quote.quote_id;
                tracing::warn!(%quote_id, code = %e.code, "executor did not answer; tracking");
                self.spawn_tracker(quote_id.clone());
                Ok(None)
            }
            // Anything else (the database went away mid-attempt): the quote is `paying`, so
            // the tracker takes it over; the caller hears the error and retries its key.
            Err(e) => {
                self.spawn_tracker(quote.quote_id.clone());
                Err(e)
            }
        }
    }

    /// Reads the quote and, if it is still `paying`, makes one attempt. Returns whether the quote
    /// is now terminal.
    async fn attempt(&self, quote_id: &str) -> Result<bool, HydraError> {
        let mut conn = self.conn().await?;
        let quote = store::get(&mut conn, quote_id)
            .await?
            .ok_or(HydraError::QuoteNotFound)?;
        drop(conn);
        if quote.state != PAYING {
            return Ok(true);
        }
        Ok(!matches!(
            self.attempt_row(&quote).await?,
            Attempt::InFlight
        ))
    }

    /// Asks the executor for the quote's payment and records a terminal answer. Asking again is
    /// always safe: the idempotency key is derived from the quote, and the executor answers a
    /// repeated key with the same payment.
    async fn attempt_row(&self, quote: &QuoteRow) -> Result<Attempt, HydraError> {
        let req = wallet::PayInvoiceRequest {
            idempotency_key: format!("hydra:{}", quote.quote_id),
            invoice: quote.invoice.clone(),
            amount_msat: quote.amount.as_u64(),
            fee_limit_msat: quote.fee_limit.as_u64(),
            timeout_ms: PAY_WAIT_MS,
        };
        let recorded = match self.executor.pay(req).await {
            Ok(resp) => match resp.payment.as_ref().map(wallet::WalletPayment::status) {
                Some(wallet::PaymentStatus::Succeeded | wallet::PaymentStatus::Failed) => {
                    self.finish(quote, &resp).await?
                }
                _ => return Ok(Attempt::InFlight),
            },
            // The executor refused the payment itself (its caps, a hash paid before, ...): nothing
            // was sent under this key, so the quote fails with the executor's code.
            Err(e)
                if !e.retryable && e.status.is_client_error() && e.code != "PAYMENT_IN_FLIGHT" =>
            {
                self.fail_refused(quote, &e).await?
            }
            Err(e) => return Err(HydraError::Executor(e)),
        };
        Ok(recorded.map_or(Attempt::Ended, |r| Attempt::Recorded(Box::new(r))))
    }

    async fn fail_refused(
        &self,
        quote: &QuoteRow,
        e: &ApiError,
    ) -> Result<Option<hydra::PayResponse>, HydraError> {
        self.record(
            quote,
            FAILED,
            Msat::ZERO,
            None,
            Some(&e.code),
            Some(&e.message),
            None,
        )
        .await
    }

    async fn finish(
        &self,
        quote: &QuoteRow,
        resp: &wallet::PaymentResponse,
    ) -> Result<Option<hydra::PayResponse>, HydraError> {
        let payment = resp
            .payment
            .as_ref()
            .ok_or_else(|| HydraError::BadExecutorReceipt("no payment".into()))?;
        let proto = resp.receipt.as_ref().ok_or_else(|| {
            HydraError::BadExecutorReceipt("terminal payment without a receipt".into())
        })?;
        let receipt = self.check_executor_receipt(quote, payment, proto)?;
        let (state, preimage, code, reason) =
            if payment.status() == wallet::PaymentStatus::Succeeded {
                (PAID, Some(payment.preimage.as_str()), None, None)
            } else {
                (
                    FAILED,
                    None,
                    Some(payment.failure_code.as_str()),
                    Some(payment.failure_reason.as_str()),
                )
            };
        let fee = Msat::new(payment.fee_msat)
            .map_err(|e| HydraError::BadExecutorReceipt(e.to_string()))?;
        if fee > quote.fee_limit {
            return Err(HydraError::BadExecutorReceipt(format!(
                "routing fee {} msat above the fee limit {} msat",
                fee.as_u64(),
                quote.fee_limit.as_u64()
            )));
        }
        self.record(quote, state, fee, preimage, code, reason, Some(&receipt))
            .await
    }

    /// Verifies the executor's receipt: signature, trusted key, the schema, and that it is about
    /// this quote's payment (hash and amount).
    fn check_executor_receipt(
        &self,
        quote: &QuoteRow,
        payment: &wallet::WalletPayment,
        proto: &oa_proto::common::Receipt,
    ) -> Result<Receipt, HydraError> {
        crate::executor::check_receipt(
            &self.executor_keys,
            &quote.payment_hash,
            quote.amount,
            payment,
            proto,
        )
        .map_err(HydraError::BadExecutorReceipt)
    }

    /// Records the terminal state, Hydra's receipt and the pool's post or void, once, in one
    /// transaction. Returns the response, or `None` when another attempt recorded the end first.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        quote: &QuoteRow,
        state: &str,
        fee: Msat,
        preimage: Option<&str>,
        code: Option<&str>,
        reason: Option<&str>,
        executor_receipt: Option<&Receipt>,
    ) -> Result<Option<hydra::PayResponse>, HydraError> {
        let now = self.clock.now_ms();
        let exec_json = executor_receipt
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| corrupt(&e.to_string()))?;
        let used = if state == PAID {
            Some(
                quote
                    .amount
                    .checked_add(fee)
                    .map_err(|e| corrupt(&format!("amount + fee: {e}")))?,
            )
        } else {
            None
        };
        let body = InvoicePayBody {
            quote_id: &quote.quote_id,
            payment_hash: &quote.payment_hash,
            status: if state == PAID { "succeeded" } else { "failed" },
            amount_msat: quote.amount,
            fee_msat: fee,
            fee_limit_msat: quote.fee_limit,
            payer_ref: &quote.payer_ref,
            preimage,
            failure_code: code,
            executor_receipt: executor_receipt.map_or_else(String::new, |r| r.hash.to_string()),
        };
        let draft = ReceiptDraft {
            schema: RECEIPT_SCHEMA.into(),
            receipt_id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
            idempotency_key: quote.pay_idempotency_key.clone().unwrap_or_default(),
            links: executor_receipt.map(|r| vec![r.hash]).unwrap_or_default(),
            body: oa_receipts::body_from(&body)?,
        };
        let job = Record {
            quote_id: quote.quote_id.clone(),
            payment_hash: quote.payment_hash.clone(),
            amount: quote.amount,
            state: state.to_owned(),
            fee,
            preimage: preimage.map(str::to_owned),
            failure_code: code.map(str::to_owned),
            failure_reason: reason.map(str::to_owned),
            executor_receipt: exec_json.clone(),
            learn: executor_receipt.is_some(),
            used,
            draft,
            now,
        };
        let receipt = match self.writes.submit(Write::Record(Box::new(job))).await? {
            Written::Record(Some(receipt)) => receipt,
            Written::Record(None) => return Ok(None),
            _ => return Err(corrupt("the result's write answered for another step")),
        };
        let finished = QuoteRow {
            state: state.to_owned(),
            fee,
            preimage: preimage.map(str::to_owned),
            failure_code: code.map(str::to_owned),
            failure_reason: reason.map(str::to_owned),
            executor_receipt: exec_json,
            receipt_hash: Some(receipt.hash.to_string()),
            ..quote.clone()
        };
        Ok(Some(to_pay_response(
            &finished,
            Some(&receipt),
            executor_receipt,
        )))
    }

    /// The current state of a quote's payment.
    pub async fn current(&self, quote_id: &str) -> Result<hydra::PayResponse, HydraError> {
        let mut conn = self.conn().await?;
        let q = store::get(&mut conn, quote_id)
            .await?
            .ok_or(HydraError::QuoteNotFound)?;
        let receipt = receipt_log::get_stored(&mut conn, q.receipt_hash.as_deref()).await?;
        let exec: Option<Receipt> = q
            .executor_receipt
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(&e.to_string()))?;
        Ok(to_pay_response(&q, receipt.as_ref(), exec.as_ref()))
    }

    /// Keeps asking the executor about a quote in `paying` until it is terminal, with capped
    /// backoff. One tracker per quote.
    pub fn spawn_tracker(self: &Arc<Self>, quote_id: String) {
        let this = Arc::clone(self);
        let id = quote_id.clone();
        self.tracker.spawn(quote_id, move || {
            let (this, id) = (this.clone(), id.clone());
            async move { this.attempt(&id).await }
        });
    }

    /// After a restart: re-drive every quote left in `paying`.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, HydraError> {
        self.recover_before(u64::MAX).await
    }

    /// Tracks the quotes in `paying` last changed at or before `updated_before_ms` (those
    /// already tracked here are left alone).
    pub async fn recover_before(
        self: &Arc<Self>,
        updated_before_ms: u64,
    ) -> Result<usize, HydraError> {
        let mut conn = self.conn().await?;
        let rows = store::paying(&mut conn, updated_before_ms, RECOVERY_BATCH).await?;
        drop(conn);
        for q in &rows {
            self.spawn_tracker(q.quote_id.clone());
        }
        Ok(rows.len())
    }

    /// The liquidity part of `GET /v1/liquidity/status`, from the executor's `GetInfo` answer
    /// (the HTTP route adds breakers, the pool and the withdrawal throttle).
    pub async fn status(
        &self,
        info: Result<&wallet::GetInfoResponse, &ApiError>,
    ) -> Result<hydra::LiquidityStatusResponse, HydraError> {
        let now = self.clock.now_ms();
        let mut conn = self.conn().await?;
        let open_quotes = store::count_open(&mut conn, now).await?;
        let pool = book::pool(&mut conn).await?;
        drop(conn);
        let mut resp = hydra::LiquidityStatusResponse {
            executor_reachable: info.is_ok(),
            // The HTTP route fills in the breakers (they are `risk`'s).
            breaker_state: String::new(),
            open_quotes,
            pool_available_msat: pool.available_msat(),
            ..Default::default()
        };
        if let Ok(i) = info {
            resp.node_pubkey.clone_from(&i.node_pubkey);
            resp.network.clone_from(&i.network);
            resp.local_balance_msat = i.local_balance_msat;
            resp.remote_balance_msat = i.remote_balance_msat;
            resp.channel_count = i.channel_count;
        }
        Ok(resp)
    }
}

/// What one attempt at a quote's payment came to.
enum Attempt {
    /// This attempt recorded the end; the answer (boxed: it is large next to the others).
    Recorded(Box<hydra::PayResponse>),
    /// The quote ended, recorded by another attempt.
    Ended,
    /// The payment is still in flight.
    InFlight,
}

fn to_quote(q: &QuoteRow) -> hydra::Quote {
    let state = match q.state.as_str() {
        OPEN => hydra::QuoteState::Open,
        PAYING => hydra::QuoteState::Paying,
        PAID => hydra::QuoteState::Paid,
        _ => hydra::QuoteState::Failed,
    };
    hydra::Quote {
        quote_id: q.quote_id.clone(),
        payment_hash: q.payment_hash.clone(),
        amount_msat: q.amount.as_u64(),
        fee_limit_msat: q.fee_limit.as_u64(),
        created_at_ms: q.created_at_ms,
        expires_at_ms: q.expires_at_ms,
        state: state as i32,
        payer_ref: q.payer_ref.clone(),
    }
}

fn to_pay_response(
    q: &QuoteRow,
    receipt: Option<&Receipt>,
    executor_receipt: Option<&Receipt>,
) -> hydra::PayResponse {
    hydra::PayResponse {
        quote: Some(to_quote(q)),
        preimage: q.preimage.clone().unwrap_or_default(),
        fee_msat: q.fee.as_u64(),
        failure_code: q.failure_code.clone().unwrap_or_default(),
        failure_reason: q.failure_reason.clone().unwrap_or_default(),
        receipt: receipt.map(oa_service::receipts::to_proto),
        executor_receipt: executor_receipt.map(oa_service::receipts::to_proto),
    }
}

/// A terminal result to record (see [`Liquidity::record`]).
struct Record {
    quote_id: String,
    payment_hash: String,
    amount: Msat,
    state: String,
    fee: Msat,
    preimage: Option<String>,
    failure_code: Option<String>,
    failure_reason: Option<String>,
    /// The executor's receipt (JSON), when the network answered.
    executor_receipt: Option<String>,
    /// Whether the outcome counts for the breakers and the routing lessons (the network
    /// answered; a refusal by the executor's own caps sent nothing).
    learn: bool,
    /// Amount + fee to post from the reservation when paid; `None` voids it.
    used: Option<Msat>,
    draft: ReceiptDraft,
    now: u64,
}

/// The writes of a quote and its payment: each a few statements in the transaction it is given.
enum Write {
    Quote(Box<(QuoteRow, store::QuoteKey)>),
    Pay {
        quote_id: String,
        scope: String,
        key: String,
        now: u64,
    },
    Record(Box<Record>),
}

enum Written {
    /// The quote (new, or the one the key made before), or why not; nothing written for a
    /// refusal.
    Quote(Result<hydra::QuotePayResponse, HydraError>),
    /// The quote this pay started, or `None`: it did not start it, and wrote nothing.
    Pay(Option<QuoteRow>),
    /// Hydra's receipt of the result, or `None`: another attempt recorded the end first, and
    /// nothing was written.
    Record(Option<Receipt>),
}

/// The steps of a quote and its payment. In a group commit, the steps of many payments share the
/// one writer's transaction, its commit and the pages every payment touches (the pool's account,
/// the receipt and journal heads).
struct Steps {
    db: Db,
    log: ReceiptLog,
    routing: Arc<Routing>,
}

impl Committer for Steps {
    type Job = Write;
    type Out = Written;
    type Error = HydraError;

    /// Every step in one transaction. A step that is refused before writing answers its refusal
    /// and the others go on; one that must undo a write fails the batch, whose steps are then
    /// retried one transaction each (see `oa_store::group`).
    async fn commit(&self, jobs: &[Write]) -> Result<Vec<Written>, HydraError> {
        let mut tx = self.db.begin().await?;
        let mut shared = Shared::default();
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.step(&mut tx, job, &mut shared).await?);
        }
        // What the steps add, written once for the batch. A reservation the pool cannot cover
        // fails the batch (its `open -> paying` must be undone); its steps are retried alone.
        if let Err(book::Refusal::PoolExhausted) =
            book::apply_pays(&mut tx, &shared.moves, shared.now).await?
        {
            return Err(HydraError::PoolCannotPay);
        }
        if let Some(batch) = shared.receipts {
            batch.store(&mut tx).await?;
        }
        let learning: Vec<&Record> = shared
            .recorded
            .iter()
            .copied()
            .filter(|r| r.learn)
            .collect();
        let hashes: Vec<&str> = learning.iter().map(|r| r.payment_hash.as_str()).collect();
        let lessons = store::routing::with_lessons(&mut tx, &hashes).await?;
        for r in learning
            .iter()
            .filter(|r| lessons.contains(&r.payment_hash))
        {
            self.routing
                .learn(&mut tx, &r.payment_hash, r.amount, r.state == PAID, r.now)
                .await?;
        }
        let outcomes: Vec<store::credit::Outcome<'_>> = learning
            .iter()
            .map(|r| store::credit::Outcome {
                ref_id: &r.quote_id,
                payment_hash: &r.payment_hash,
                succeeded: r.state == PAID,
                amount: r.amount,
                at_ms: r.now,
            })
            .collect();
        store::credit::record_payment_outcomes(&mut tx, OUTCOME_SOURCE, &outcomes).await?;
        let events: Vec<(&str, serde_json::Value)> = shared
            .recorded
            .iter()
            .zip(&shared.receipt_hashes)
            .map(|(r, hash)| {
                (
                    if r.state == PAID { "invoice_paid" } else { "invoice_pay_failed" },
                    serde_json::json!({"quote_id": r.quote_id, "payment_hash": r.payment_hash, "receipt_hash": hash}),
                )
            })
            .collect();
        let now = shared.recorded.iter().map(|r| r.now).max().unwrap_or(0);
        journal::append_many(&mut tx, "hydra.liquidity", &events, now).await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// What a batch's steps share, written once at its end: the pool's reservations and their ends
/// (one ledger batch), the results' receipts (one insert), outcomes and journal events.
#[derive(Default)]
struct Shared<'a> {
    moves: Vec<book::PayMove<'a>>,
    receipts: Option<Batch<'a>>,
    recorded: Vec<&'a Record>,
    receipt_hashes: Vec<String>,
    /// The latest time of the batch's steps.
    now: u64,
}

impl Steps {
    async fn step<'a>(
        &'a self,
        tx: &mut sqlx::AnyConnection,
        job: &'a Write,
        shared: &mut Shared<'a>,
    ) -> Result<Written, HydraError> {
        match job {
            Write::Quote(quote) => {
                let (row, asked) = &**quote;
                // One statement: the quote carries its key, so it and its idempotency record
                // are one row.
                if store::insert(tx, row, asked).await? {
                    return Ok(Written::Quote(Ok(hydra::QuotePayResponse {
                        quote: Some(to_quote(row)),
                    })));
                }
                Ok(Written::Quote(
                    match store::by_quote_key(tx, &asked.scope, &asked.key).await? {
                        Some((_, stored)) if stored != asked.fingerprint => {
                            Err(HydraError::IdempotencyConflict)
                        }
                        // The quote as it was issued, whatever has happened to it since.
                        Some((issued, _)) => Ok(hydra::QuotePayResponse {
                            quote: Some(to_quote(&QuoteRow {
                                state: OPEN.into(),
                                ..issued
                            })),
                        }),
                        None => Err(corrupt("a quote key conflicted but names no quote")),
                    },
                ))
            }
            Write::Pay {
                quote_id,
                scope,
                key,
                now,
            } => {
                // The guarded `open -> paying` update stores the pay key on the quote: it is the
                // claim of the key (unique per scope) and of the quote's one payment at once.
                let Some(quote) = store::start_paying(tx, quote_id, scope, key, *now).await? else {
                    return Ok(Written::Pay(None));
                };
                let amount = quote
                    .amount
                    .checked_add(quote.fee_limit)
                    .map_err(|e| corrupt(&format!("quote amount + fee limit: {e}")))?;
                shared
                    .moves
                    .push(book::PayMove::Reserve { quote_id, amount });
                shared.now = shared.now.max(*now);
                Ok(Written::Pay(Some(quote)))
            }
            Write::Record(r) => {
                if shared.receipts.is_none() {
                    shared.receipts = Some(self.log.batch(tx).await?);
                }
                let batch = shared
                    .receipts
                    .as_mut()
                    .ok_or_else(|| corrupt("no receipt batch"))?;
                let receipt = batch.seal(r.draft.clone(), r.now)?.clone();
                let receipt_hash = receipt.hash.to_string();
                // The guarded `paying -> paid|failed` carries the receipt's hash; a lost race
                // takes the receipt back out of the batch and writes nothing.
                if !store::finish(
                    tx,
                    &r.quote_id,
                    &r.state,
                    r.fee,
                    r.preimage.as_deref(),
                    r.failure_code.as_deref(),
                    r.failure_reason.as_deref(),
                    r.executor_receipt.as_deref(),
                    &receipt_hash,
                    r.now,
                )
                .await?
                {
                    batch.unseal_last();
                    return Ok(Written::Record(None));
                }
                shared.moves.push(book::PayMove::Resolve {
                    quote_id: &r.quote_id,
                    used: r.used,
                });
                shared.now = shared.now.max(r.now);
                shared.recorded.push(r);
                shared.receipt_hashes.push(receipt_hash);
                Ok(Written::Record(Some(receipt)))
            }
        }
    }
}
