//! Exactly-once payments.
//!
//! 1. Validate the request and the executor's hard caps (they hold even if a caller is
//!    compromised): per-payment maximum, rolling-window maximum, optional payee allowlist.
//! 2. In one transaction: claim the idempotency key, check the payment hash was never used,
//!    record the payment as in flight and count it against the window. Commit: the intent is
//!    durable before anything is sent. Concurrent callers' intents are committed together
//!    (group commit, up to `GROUP_BATCH`, see [`oa_store::group`]); a refused one takes back
//!    what it wrote inside the transaction.
//! 3. Send through the node (idempotent per payment hash by the node trait's contract).
//! 4. On a terminal state, in one transaction: finish the payment (once, guarded by its status),
//!    append the signed receipt, store the idempotent response. The finisher task commits the
//!    results that are ready together (group commit, up to `GROUP_BATCH` results); each caller hears
//!    its result only after that commit. A payment still in flight is tracked in the background;
//!    after a restart every in-flight payment is tracked, never re-sent. A payment the node has
//!    no record of (the process died after recording the intent, before the node got it) is
//!    recorded as failed `NOT_SENT`: nothing was sent, nothing will be.

use std::{sync::Arc, time::Duration};

use oa_invoice::{InvoicePolicy, Network, PaymentHash};
use oa_money::Msat;
use oa_proto::wallet;
use oa_receipts::{Receipt, ReceiptDraft};
use oa_service::{Clock, tracker::Tracker};
use oa_store::{
    Db,
    group::{Committer, GroupCommit},
    idempotency::{self, Claim},
    receipt_log::{self, ReceiptLog},
};
use serde::Serialize;

use crate::{
    error::WalletError,
    node::{FailureCode, LightningNode, NodeError, PayState, SendRequest},
    store::{self, FAILED, IN_FLIGHT, PaymentRow, SUCCEEDED},
};

/// Longest a `PayInvoice` call waits for a terminal state before answering in flight.
pub const MAX_PAY_TIMEOUT: Duration = Duration::from_secs(60);
/// Used when the caller gives no timeout.
pub const DEFAULT_PAY_TIMEOUT: Duration = Duration::from_secs(30);
/// An invoice must stay valid this long after we accept it, to leave time to route.
pub const MIN_EXPIRY_REMAINING: Duration = Duration::from_secs(10);
/// The rolling window is counted in this many buckets; the oldest bucket counts whole, so the
/// cap errs on the strict side by at most one bucket.
const WINDOW_BUCKETS: u64 = 60;
/// In-flight payments re-tracked per batch at start-up.
const RECOVERY_BATCH: u32 = 500;

pub const RECEIPT_SCHEMA: &str = "oa.wallet_executor.payment_receipt.v1";

/// Hard caps from configuration. They bound Lightning payments (amount plus fee limit), on-chain
/// sends (amount plus a fee reserve) and rebalance fees alike, in one rolling window.
#[derive(Clone, Debug)]
pub struct Caps {
    pub max_payment: Msat,
    pub window_max: Msat,
    pub window: Duration,
    /// Payee node ids (hex) allowed; empty allows all.
    pub payee_allowlist: Vec<String>,
}

impl Caps {
    /// Refuses an amount committed by one operation above the per-payment maximum.
    pub(crate) fn check_per_payment(&self, committed: Msat) -> Result<(), WalletError> {
        if committed > self.max_payment {
            return Err(WalletError::CapExceeded {
                reason_code: "per_payment_max",
                message: format!(
                    "amount plus fee limit exceeds the per-payment maximum of {}",
                    self.max_payment
                ),
            });
        }
        Ok(())
    }

    fn window_exceeded(&self) -> WalletError {
        WalletError::CapExceeded {
            reason_code: "rolling_window_max",
            message: format!(
                "the rolling-window maximum of {} would be exceeded",
                self.window_max
            ),
        }
    }

    fn bucket_ms(&self) -> u64 {
        (u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX) / WINDOW_BUCKETS).max(1)
    }

    /// Counts `committed` in the rolling window at `now_ms`, inside the caller's transaction, or
    /// refuses it (`CapExceeded`, nothing written) if the window would go above its maximum.
    pub(crate) async fn reserve(
        &self,
        tx: &mut sqlx::AnyConnection,
        now_ms: u64,
        committed: Msat,
    ) -> Result<(), WalletError> {
        let bucket = now_ms / self.bucket_ms();
        let window_used =
            store::window_total(&mut *tx, bucket.saturating_sub(WINDOW_BUCKETS - 1)).await?;
        if window_used
            .checked_add(committed)
            .map_or(true, |t| t > self.window_max)
        {
            return Err(self.window_exceeded());
        }
        store::add_to_bucket(&mut *tx, bucket, committed.as_i64()).await?;
        Ok(())
    }

    /// Gives back to the window what an operation created at `created_at_ms` committed (it
    /// failed without spending it).
    pub(crate) async fn give_back(
        &self,
        tx: &mut sqlx::AnyConnection,
        created_at_ms: u64,
        committed: Msat,
    ) -> Result<(), WalletError> {
        store::add_to_bucket(
            &mut *tx,
            created_at_ms / self.bucket_ms(),
            -committed.as_i64(),
        )
        .await?;
        Ok(())
    }
}

pub struct Payments {
    pub db: Db,
    pub node: Arc<dyn LightningNode>,
    pub log: ReceiptLog,
    pub clock: Arc<dyn Clock>,
    pub caps: Caps,
    pub network: Network,
    tracker: Arc<Tracker>,
    intents: GroupCommit<IntentRecorder>,
    finisher: GroupCommit<Recorder>,
}

/// Most intents or results committed in one transaction: bounds the time the single SQLite
/// writer is held and the work redone one by one if a batch fails.
const GROUP_BATCH: usize = 64;
/// Jobs waiting for a group commit; callers wait (back-pressure) when it is full.
const GROUP_QUEUE: usize = 1_024;

/// One payment's intent, to record before anything is sent.
struct IntentJob {
    scope: String,
    key: String,
    fingerprint: String,
    row: PaymentRow,
    /// Amount plus fee limit, counted in the rolling window.
    committed: Msat,
}

/// What became of an intent.
enum Intent {
    /// Recorded: the payment may be sent.
    New,
    /// The key's request completed before: its stored response.
    Replay(String),
    /// The key's first request is still running.
    InProgress,
}

/// Records payment intents, many per transaction (group commit). Per intent: the idempotency
/// claim and the payment row; per batch: one read of the rolling window and one write per
/// bucket touched. A refused intent (hash already used, cap exceeded) takes back what it wrote,
/// inside the transaction, so it changes nothing.
struct IntentRecorder {
    db: Db,
    caps: Caps,
}

impl Committer for IntentRecorder {
    type Job = IntentJob;
    type Out = Result<Intent, WalletError>;
    type Error = WalletError;

    async fn commit(&self, jobs: &[IntentJob]) -> Result<Vec<Self::Out>, WalletError> {
        let bucket_ms = self.caps.bucket_ms();
        let mut tx = self.db.begin().await?;
        // The window is read once, from the oldest bucket any intent of the batch counts:
        // counting more buckets errs on the strict side.
        let from = jobs
            .iter()
            .map(|j| j.row.created_at_ms / bucket_ms)
            .min()
            .unwrap_or(0)
            .saturating_sub(WINDOW_BUCKETS - 1);
        let mut used = store::window_total(&mut tx, from).await?;
        let mut added: Vec<(u64, Msat)> = Vec::new();
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let row = &job.row;
            match idempotency::claim(
                &mut tx,
                &job.scope,
                &job.key,
                &job.fingerprint,
                row.created_at_ms,
            )
            .await?
            {
                Claim::Conflict => {
                    out.push(Err(WalletError::IdempotencyConflict));
                    continue;
                }
                Claim::Replay { response, .. } => {
                    out.push(Ok(Intent::Replay(response)));
                    continue;
                }
                Claim::InProgress { .. } => {
                    out.push(Ok(Intent::InProgress));
                    continue;
                }
                Claim::New => {}
            }
            // The primary key on payment_hash is the exactly-once guard: a second request for a
            // hash is refused, whatever its idempotency key.
            if !store::insert(&mut tx, row).await? {
                let existing = store::get(&mut tx, &row.payment_hash).await?;
                idempotency::release(&mut tx, &job.scope, &job.key).await?;
                out.push(Err(WalletError::HashAlreadyUsed(
                    match existing.as_ref().map(|r| r.status.as_str()) {
                        Some(SUCCEEDED) => "succeeded",
                        Some(FAILED) => "failed",
                        _ => "in_flight",
                    },
                )));
                continue;
            }
            match used.checked_add(job.committed) {
                Ok(total) if total <= self.caps.window_max => {
                    used = total;
                    let bucket = row.created_at_ms / bucket_ms;
                    match added.iter_mut().find(|(b, _)| *b == bucket) {
                        // Below the window maximum, as `used` is: cannot overflow.
                        Some((_, sum)) => *sum = sum.checked_add(job.committed).unwrap_or(total),
                        None => added.push((bucket, job.committed)),
                    }
                    out.push(Ok(Intent::New));
                }
                _ => {
                    store::delete(&mut tx, &row.payment_hash).await?;
                    idempotency::release(&mut tx, &job.scope, &job.key).await?;
                    out.push(Err(self.caps.window_exceeded()));
                }
            }
        }
        for (bucket, sum) in added {
            store::add_to_bucket(&mut tx, bucket, sum.as_i64()).await?;
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// What the result recorder needs to record a payment's end.
struct FinishJob {
    payment_hash: String,
    state: PayState,
    known: Option<PaymentRow>,
}

/// Records payments' ends, many per transaction (group commit).
struct Recorder {
    db: Db,
    log: ReceiptLog,
    clock: Arc<dyn Clock>,
    window: Duration,
    backend: &'static str,
}

impl Committer for Recorder {
    type Job = FinishJob;
    type Out = Option<wallet::PaymentResponse>;
    type Error = WalletError;

    async fn commit(
        &self,
        jobs: &[FinishJob],
    ) -> Result<Vec<Option<wallet::PaymentResponse>>, WalletError> {
        self.finish_batch(jobs).await
    }
}

impl Recorder {
    /// Records a run of results in one transaction: one receipt-log batch for all of them, so a
    /// result costs two statements (the guarded finish, the idempotent response).
    async fn finish_batch(
        &self,
        jobs: &[FinishJob],
    ) -> Result<Vec<Option<wallet::PaymentResponse>>, WalletError> {
        let mut tx = self.db.begin().await?;
        let mut receipts = self.log.batch(&mut tx).await?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.finish_in(&mut tx, &mut receipts, job).await?);
        }
        receipts.store(&mut tx).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// One result, inside the batch's transaction. The receipt is sealed first (its hash is
    /// written by the guarded finish) and taken back if someone else finished the payment.
    async fn finish_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        receipts: &mut receipt_log::Batch<'_>,
        job: &FinishJob,
    ) -> Result<Option<wallet::PaymentResponse>, WalletError> {
        let now = self.clock.now_ms();
        let payment_hash = job.payment_hash.as_str();
        let row = match &job.known {
            Some(row) => row.clone(),
            None => store::get(&mut *tx, payment_hash)
                .await?
                .ok_or(WalletError::NotFound)?,
        };
        let (status, fee, preimage, code, reason) = match &job.state {
            PayState::Succeeded { preimage, fee } => {
                (SUCCEEDED, *fee, Some(preimage.to_string()), None, None)
            }
            PayState::Failed { code, reason } => (
                FAILED,
                Msat::ZERO,
                None,
                Some(code.as_str()),
                Some(reason.as_str()),
            ),
            PayState::InFlight => return Ok(None),
        };
        let body = PaymentReceiptBody {
            payment_hash,
            status,
            amount_msat: row.amount,
            fee_msat: fee,
            fee_limit_msat: row.fee_limit,
            preimage: preimage.as_deref(),
            payee_pubkey: &row.payee_pubkey,
            failure_code: code,
            failure_reason: reason,
            backend: self.backend,
            created_at_ms: row.created_at_ms,
        };
        let draft = ReceiptDraft {
            schema: RECEIPT_SCHEMA.into(),
            receipt_id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
            idempotency_key: row.idempotency_key.clone(),
            links: vec![],
            body: oa_receipts::body_from(&body)?,
        };
        let receipt = receipts.seal(draft, now)?.clone();
        let receipt_hash = receipt.hash.to_string();
        // Guarded by `status = 'in_flight'` (on PostgreSQL a concurrent finisher blocks on the
        // row and then finds it finished): the payment ends once.
        if !store::finish(
            &mut *tx,
            payment_hash,
            &store::Finish {
                status,
                fee,
                preimage: preimage.as_deref(),
                failure_code: code,
                failure_reason: reason,
                resolved_at_ms: now,
                receipt_hash: &receipt_hash,
            },
        )
        .await?
        {
            receipts.unseal_last();
            return Ok(None);
        }
        if status == FAILED {
            let committed = row.amount.checked_add(row.fee_limit).unwrap_or(Msat::MAX);
            let bucket_ms = (u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
                / WINDOW_BUCKETS)
                .max(1);
            store::add_to_bucket(&mut *tx, row.created_at_ms / bucket_ms, -committed.as_i64())
                .await?;
        }
        let finished = PaymentRow {
            status: status.to_owned(),
            fee,
            preimage: preimage.clone(),
            failure_code: code.map(str::to_owned),
            failure_reason: reason.map(str::to_owned),
            resolved_at_ms: Some(now),
            receipt_hash: Some(receipt_hash),
            ..row.clone()
        };
        let response = to_response(&finished, Some(&receipt));
        let json = serde_json::to_string(&response)
            .map_err(|e| WalletError::Store(oa_store::StoreError::Corrupt(e.to_string())))?;
        idempotency::complete(
            &mut *tx,
            &row.idempotency_scope,
            &row.idempotency_key,
            200,
            &json,
            now,
        )
        .await?;
        Ok(Some(response))
    }
}

/// The body of a payment receipt (schema [`RECEIPT_SCHEMA`]). Absent values are omitted, never
/// `null`, so the body survives every JSON and protobuf `Struct` mapping unchanged.
#[derive(Serialize)]
struct PaymentReceiptBody<'a> {
    payment_hash: &'a str,
    status: &'a str,
    amount_msat: Msat,
    fee_msat: Msat,
    fee_limit_msat: Msat,
    #[serde(skip_serializing_if = "Option::is_none")]
    preimage: Option<&'a str>,
    payee_pubkey: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<&'a str>,
    backend: &'a str,
    #[serde(with = "oa_receipts::u64_string")]
    created_at_ms: u64,
}

impl Payments {
    pub fn new(
        db: Db,
        node: Arc<dyn LightningNode>,
        log: ReceiptLog,
        clock: Arc<dyn Clock>,
        caps: Caps,
        network: Network,
    ) -> Self {
        let finisher = GroupCommit::spawn(
            Recorder {
                db: db.clone(),
                log: log.clone(),
                clock: clock.clone(),
                window: caps.window,
                backend: node.backend(),
            },
            GROUP_BATCH,
            GROUP_QUEUE,
        );
        let intents = GroupCommit::spawn(
            IntentRecorder {
                db: db.clone(),
                caps: caps.clone(),
            },
            GROUP_BATCH,
            GROUP_QUEUE,
        );
        Self {
            db,
            node,
            log,
            clock,
            caps,
            network,
            tracker: Arc::new(Tracker::new()),
            intents,
            finisher,
        }
    }

    /// Pays an invoice at most once. `caller` is the authenticated subject; idempotency keys are
    /// scoped to it.
    pub async fn pay(
        self: &Arc<Self>,
        caller: &str,
        req: wallet::PayInvoiceRequest,
    ) -> Result<wallet::PaymentResponse, WalletError> {
        idempotency::validate_key(&req.idempotency_key)?;
        let now = self.clock.now_ms();
        let amount_override = match req.amount_msat {
            0 => None,
            v => Some(
                Msat::new(v)
                    .map_err(|e| WalletError::InvalidRequest(format!("amount_msat: {e}")))?,
            ),
        };
        let fee_limit = Msat::new(req.fee_limit_msat)
            .map_err(|e| WalletError::InvalidRequest(format!("fee_limit_msat: {e}")))?;
        let timeout = match req.timeout_ms {
            0 => DEFAULT_PAY_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_PAY_TIMEOUT),
        };
        let policy = InvoicePolicy {
            network: self.network,
            max_amount: Msat::MAX,
            min_expiry_remaining: MIN_EXPIRY_REMAINING,
        };
        let invoice = oa_invoice::validate(&req.invoice, &policy, now, amount_override)?;
        let committed = invoice
            .amount
            .checked_add(fee_limit)
            .map_err(|_| WalletError::InvalidRequest("amount plus fee limit overflows".into()))?;
        self.caps.check_per_payment(committed)?;
        if !self.caps.payee_allowlist.is_empty()
            && !self.caps.payee_allowlist.contains(&invoice.payee_pubkey)
        {
            return Err(WalletError::CapExceeded {
                reason_code: "payee_not_allowed",
                message: "the payee is not on the executor's allowlist".into(),
            });
        }

        let scope = format!("wallet.pay/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let hash_hex = invoice.payment_hash.to_string();
        let row = PaymentRow {
            payment_hash: hash_hex.clone(),
            idempotency_scope: scope.clone(),
            idempotency_key: req.idempotency_key.clone(),
            invoice: invoice.bolt11.clone(),
            payee_pubkey: invoice.payee_pubkey.clone(),
            amount: invoice.amount,
            fee_limit,
            status: IN_FLIGHT.into(),
            fee: Msat::ZERO,
            preimage: None,
            failure_code: None,
            failure_reason: None,
            created_at_ms: now,
            resolved_at_ms: None,
            receipt_hash: None,
        };
        let intent = self
            .intents
            .submit(IntentJob {
                scope: scope.clone(),
                key: req.idempotency_key.clone(),
                fingerprint,
                row: row.clone(),
                committed,
            })
            .await??;
        match intent {
            Intent::New => {}
            Intent::Replay(response) => {
                return oa_service::parse_json::<wallet::PaymentResponse>(response.as_bytes())
                    .map_err(|_| {
                        WalletError::Store(oa_store::StoreError::Corrupt("stored response".into()))
                    });
            }
            Intent::InProgress => return self.current(&scope, &req.idempotency_key).await,
        }

        let send = SendRequest {
            bolt11: invoice.bolt11,
            payment_hash: invoice.payment_hash,
            amount: invoice.amount,
            fee_limit,
            timeout,
        };
        let state = match tokio::time::timeout(timeout, self.node.pay(&send)).await {
            Ok(Ok(state)) => state,
            // Unknown outcome (node unreachable, or slow): never re-send; track it instead.
            Ok(Err(e)) => {
                tracing::warn!(payment_hash = %hash_hex, "pay returned an error, tracking: {e}");
                PayState::InFlight
            }
            Err(_) => PayState::InFlight,
        };
        if state.is_terminal() {
            if let Some(done) = self.finish(&hash_hex, state, Some(row)).await? {
                return Ok(done);
            }
        } else {
            self.spawn_tracker(invoice.payment_hash);
        }
        self.current(&scope, &req.idempotency_key).await
    }

    /// Records a terminal state once: payment row, window give-back, receipt and idempotent
    /// response commit together. Returns the stored response, or `None` if another task had
    /// already finished the payment. `known` is the row as the caller committed it (saves
    /// reading it back). The work is handed to the finisher task, which commits several
    /// payments' results in one transaction (group commit).
    async fn finish(
        &self,
        payment_hash: &str,
        state: PayState,
        known: Option<PaymentRow>,
    ) -> Result<Option<wallet::PaymentResponse>, WalletError> {
        self.finisher
            .submit(FinishJob {
                payment_hash: payment_hash.to_owned(),
                state,
                known,
            })
            .await
    }

    /// The current state of the payment created under an idempotency key.
    async fn current(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<wallet::PaymentResponse, WalletError> {
        let mut conn = self.db.reader().await?;
        let row = store::get_by_key(&mut conn, scope, key).await?;
        respond(&mut conn, row).await
    }

    /// What routing a payment to a node would cost, as the node estimates it.
    pub async fn estimate_route_fee(
        &self,
        req: &wallet::EstimateRouteFeeRequest,
    ) -> Result<wallet::EstimateRouteFeeResponse, WalletError> {
        let dest = crate::validate::pubkey("dest_pubkey", &req.dest_pubkey)?;
        let amount = crate::validate::amount("amount_msat", req.amount_msat, false)?;
        let estimate = self.node.estimate_route_fee(&dest, amount).await?;
        Ok(wallet::EstimateRouteFeeResponse {
            fee_msat: estimate.fee.as_u64(),
            time_lock_delay: estimate.time_lock_delay,
        })
    }

    /// A payment by hash.
    pub async fn get(&self, payment_hash: &str) -> Result<wallet::PaymentResponse, WalletError> {
        let mut conn = self.db.reader().await?;
        let row = store::get(&mut conn, payment_hash).await?;
        respond(&mut conn, row).await
    }

    /// Tracks a payment in flight until it is terminal (never re-sends), with the kit's shared
    /// capped backoff.
    pub fn spawn_tracker(self: &Arc<Self>, payment_hash: PaymentHash) {
        let this = Arc::clone(self);
        self.tracker.spawn(payment_hash.to_string(), move || {
            let this = this.clone();
            async move { this.track_once(&payment_hash).await }
        });
    }

    /// One look at a payment in flight; `true` once its terminal state is recorded.
    async fn track_once(&self, payment_hash: &PaymentHash) -> Result<bool, WalletError> {
        let state = match self.node.track(payment_hash).await {
            Ok(state) if state.is_terminal() => state,
            Ok(_) => return Ok(false),
            // The node's contract: NotFound means it never got the payment and never will from an
            // earlier call, so nothing was sent and nothing will be.
            Err(NodeError::NotFound) => PayState::Failed {
                code: FailureCode::NotSent,
                reason: "the node has no record of this payment: it was never sent".into(),
            },
            Err(e) => return Err(WalletError::NodeUnavailable(e.to_string())),
        };
        self.finish(&payment_hash.to_string(), state, None).await?;
        Ok(true)
    }

    /// After a restart: track every payment that was in flight. Returns how many.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, WalletError> {
        self.recover_before(u64::MAX).await
    }

    /// Tracks the payments in flight since at or before `created_before_ms` (those already
    /// tracked here are left alone).
    pub async fn recover_before(
        self: &Arc<Self>,
        created_before_ms: u64,
    ) -> Result<usize, WalletError> {
        let mut conn = self.db.reader().await?;
        let rows = store::in_flight(&mut conn, created_before_ms, RECOVERY_BATCH).await?;
        drop(conn);
        for row in &rows {
            match row.payment_hash.parse::<PaymentHash>() {
                Ok(h) => self.spawn_tracker(h),
                Err(_) => {
                    tracing::error!(payment_hash = %row.payment_hash, "stored payment hash is not hex")
                }
            }
        }
        Ok(rows.len())
    }
}

/// A stored payment (or `NotFound`) with its receipt, as the RPCs answer it.
async fn respond(
    conn: &mut sqlx::AnyConnection,
    row: Option<PaymentRow>,
) -> Result<wallet::PaymentResponse, WalletError> {
    let row = row.ok_or(WalletError::NotFound)?;
    let receipt = receipt_log::get_stored(conn, row.receipt_hash.as_deref()).await?;
    Ok(to_response(&row, receipt.as_ref()))
}

fn to_response(row: &PaymentRow, receipt: Option<&Receipt>) -> wallet::PaymentResponse {
    let status = match row.status.as_str() {
        SUCCEEDED => wallet::PaymentStatus::Succeeded,
        FAILED => wallet::PaymentStatus::Failed,
        _ => wallet::PaymentStatus::InFlight,
    };
    wallet::PaymentResponse {
        payment: Some(wallet::WalletPayment {
            payment_hash: row.payment_hash.clone(),
            status: status as i32,
            amount_msat: row.amount.as_u64(),
            fee_msat: row.fee.as_u64(),
            fee_limit_msat: row.fee_limit.as_u64(),
            preimage: row.preimage.clone().unwrap_or_default(),
            failure_code: row.failure_code.clone().unwrap_or_default(),
            failure_reason: row.failure_reason.clone().unwrap_or_default(),
            idempotency_key: row.idempotency_key.clone(),
            created_at_ms: row.created_at_ms,
            resolved_at_ms: row.resolved_at_ms.unwrap_or(0),
        }),
        receipt: receipt.map(oa_service::receipts::to_proto),
    }
}
