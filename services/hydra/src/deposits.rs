//! Deposits: an agent pays an invoice of the executor's node, and Hydra credits the agent's
//! balance once the executor reports the settlement.
//!
//! - `POST /v1/liquidity/deposit` asks the executor for an invoice (`CreateInvoice`, under a key
//!   derived from the caller, its idempotency key and the request's fingerprint, so a retry gets
//!   the same invoice and a different request a different one), then records the deposit `open`
//!   and the idempotent response in one transaction. A replay or a conflicting reuse of the key is
//!   answered before the executor is asked.
//! - The follower ([`Deposits::follow`]) consumes the executor's settlement stream
//!   (`SubscribeInvoiceSettlements`) from Hydra's stored cursor. For each settlement, in one
//!   transaction: the cursor moves from the previous settle index to this one (a guarded update,
//!   so two replicas cannot both handle it), and if the invoice is an open deposit, after
//!   checking the executor's signed settlement receipt, the deposit becomes `credited`, the
//!   ledger credits what the payer paid (`deposits -> agent:<id>:balance`, transfer
//!   `dep:<deposit_id>`), and Hydra's `oa.hydra.deposit_receipt.v1` (linking the executor's) is
//!   appended. The stream is gapless and the cursor commits with the credit, so every settlement
//!   is handled exactly once, across dropped streams and restarts. Settlements of other
//!   invoices of the node (not Hydra's deposits) only move the cursor.
//! - On-chain deposits answer `501 NOT_SUPPORTED`: the custody channel offers `NewAddress` and
//!   the wallet's total balance, but nothing that says which address received what, so Hydra
//!   could not credit the right agent.

use std::sync::{Arc, Weak};

use futures::StreamExt;
use oa_invoice::Network;
use oa_money::Msat;
use oa_proto::{hydra, wallet};
use oa_receipts::{Receipt, ReceiptDraft};
use oa_service::{Clock, tracker};
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
    executor::{self, Executor},
    store::funds::{self as store, CURSOR_SETTLEMENTS, DEPOSIT_CREDITED, DEPOSIT_OPEN, DepositRow},
    validate,
};

pub const RECEIPT_SCHEMA: &str = "oa.hydra.deposit_receipt.v1";
pub const METHOD_INVOICE: &str = "invoice";
pub const METHOD_ONCHAIN: &str = "onchain";
/// Invoice lifetime when the caller gives none.
pub const DEFAULT_EXPIRY_SECS: u32 = 3_600;
/// Longest invoice lifetime: a deposit invoice is paid within minutes; a day bounds how long an
/// unpaid one stays in the open list.
pub const MAX_EXPIRY_SECS: u32 = 86_400;

pub struct DepositsConfig {
    pub network: Network,
    pub max_amount: Msat,
    /// Trusted executor receipt key ids (hex); empty trusts the key a receipt names, after its
    /// signature verifies (development).
    pub executor_keys: Vec<String>,
}

pub struct Deposits {
    db: Db,
    executor: Arc<dyn Executor>,
    log: ReceiptLog,
    clock: Arc<dyn Clock>,
    config: DepositsConfig,
}

#[derive(Serialize)]
struct DepositReceiptBody<'a> {
    deposit_id: &'a str,
    agent_id: &'a str,
    method: &'a str,
    status: &'a str,
    payment_hash: &'a str,
    amount_msat: Msat,
    amount_paid_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    settle_index: u64,
    ledger_transfer: &'a str,
    executor_receipt: String,
}

/// What handling one settlement did.
enum Handled {
    /// The cursor moved to the settlement's index.
    Advanced,
    /// Another follower moved the cursor first: resubscribe from the stored one.
    Lost,
}

impl Deposits {
    pub fn new(
        db: Db,
        executor: Arc<dyn Executor>,
        log: ReceiptLog,
        clock: Arc<dyn Clock>,
        config: DepositsConfig,
    ) -> Self {
        Self {
            db,
            executor,
            log,
            clock,
            config,
        }
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, HydraError> {
        Ok(self.db.reader().await?)
    }

    /// `POST /v1/liquidity/deposit` (see the module docs).
    pub async fn deposit(
        &self,
        caller: &str,
        req: hydra::DepositRequest,
    ) -> Result<hydra::DepositResponse, HydraError> {
        idempotency::validate_key(&req.idempotency_key)?;
        validate::agent_id(&req.agent_id)?;
        match req.method.as_str() {
            METHOD_INVOICE => {}
            METHOD_ONCHAIN => {
                return Err(HydraError::NotSupported(
                    "on-chain deposits are not supported: the executor's custody channel cannot tell which address received what"
                        .into(),
                ));
            }
            _ => {
                return Err(validate::invalid(
                    "INVALID_METHOD",
                    "method must be \"invoice\" or \"onchain\"",
                ));
            }
        }
        let amount = validate::positive_msat("INVALID_AMOUNT", "amount_msat", req.amount_msat)?;
        if amount > self.config.max_amount {
            return Err(validate::invalid(
                "INVALID_AMOUNT",
                format!(
                    "amount_msat must be at most {} msat",
                    self.config.max_amount.as_u64()
                ),
            ));
        }
        let expiry_secs = match req.expiry_secs {
            0 => DEFAULT_EXPIRY_SECS,
            s if s > MAX_EXPIRY_SECS => {
                return Err(validate::invalid(
                    "INVALID_EXPIRY",
                    format!("expiry_secs must be at most {MAX_EXPIRY_SECS}"),
                ));
            }
            s => s,
        };
        let scope = format!("hydra.deposit/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let now = self.clock.now_ms();
        // A replay or a conflict is answered without asking the executor.
        {
            let mut tx = self.db.begin().await?;
            let claim =
                idempotency::claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now)
                    .await?;
            tx.rollback().await?;
            match claim {
                Claim::Conflict => return Err(HydraError::IdempotencyConflict),
                Claim::Replay { response, .. } => return parse(&response),
                Claim::InProgress { .. } => return Err(HydraError::RequestInProgress),
                Claim::New => {}
            }
        }
        let executor_key = format!(
            "hydra-deposit:{}",
            idempotency::fingerprint(&(&scope, &req.idempotency_key, &fingerprint))?
        );
        let issued = self
            .executor
            .create_invoice(wallet::CreateInvoiceRequest {
                idempotency_key: executor_key,
                amount_msat: amount.as_u64(),
                description: format!("hydra deposit for {}", req.agent_id),
                expiry_secs,
            })
            .await
            .map_err(HydraError::Executor)?;
        let invoice = issued
            .invoice
            .ok_or_else(|| HydraError::BadExecutorReceipt("no invoice".into()))?;
        let decoded = oa_invoice::decode(&invoice.bolt11)
            .map_err(|e| HydraError::BadExecutorReceipt(format!("invoice: {e}")))?;
        if decoded.payment_hash.to_string() != invoice.payment_hash
            || decoded.amount != Some(amount)
            || decoded.network != self.config.network
        {
            return Err(HydraError::BadExecutorReceipt(
                "the invoice is not the one asked for".into(),
            ));
        }
        let row = DepositRow {
            deposit_id: format!("dep_{}", uuid::Uuid::now_v7().simple()),
            caller: caller.to_owned(),
            agent_id: req.agent_id.clone(),
            method: METHOD_INVOICE.into(),
            amount,
            payment_hash: invoice.payment_hash.clone(),
            invoice: invoice.bolt11.clone(),
            state: DEPOSIT_OPEN.into(),
            created_at_ms: now,
            expires_at_ms: decoded.expires_at_ms,
            idempotency_scope: scope.clone(),
            idempotency_key: req.idempotency_key.clone(),
            credited: None,
            settle_index: None,
            credited_at_ms: None,
            executor_receipt: None,
            receipt_hash: None,
        };
        let mut tx = self.db.begin().await?;
        match idempotency::claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await? {
            Claim::Conflict => return Err(HydraError::IdempotencyConflict),
            // A concurrent duplicate of this request finished first, with the same invoice.
            Claim::Replay { response, .. } => {
                tx.rollback().await?;
                return parse(&response);
            }
            Claim::InProgress { .. } => return Err(HydraError::RequestInProgress),
            Claim::New => {}
        }
        if !store::insert_deposit(&mut tx, &row).await? {
            return Err(corrupt("a deposit invoice issued twice"));
        }
        journal::append(
            &mut tx,
            "hydra.deposits",
            "deposit_opened",
            &serde_json::json!({"deposit_id": row.deposit_id, "agent_id": row.agent_id, "payment_hash": row.payment_hash, "amount_msat": amount.as_u64().to_string()}),
            now,
        )
        .await?;
        let response = hydra::DepositResponse {
            deposit: Some(to_deposit(&row, now)),
            receipt: None,
            executor_receipt: None,
        };
        let json = serde_json::to_string(&response).map_err(|e| corrupt(&e.to_string()))?;
        idempotency::complete(&mut tx, &scope, &req.idempotency_key, 200, &json, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `GET /v1/liquidity/deposit/{deposit_id}`: the deposit now, with its receipts once credited.
    pub async fn get(&self, deposit_id: &str) -> Result<hydra::DepositResponse, HydraError> {
        if deposit_id.is_empty() || deposit_id.len() > validate::MAX_ID_LEN {
            return Err(HydraError::DepositNotFound);
        }
        let mut conn = self.conn().await?;
        let row = store::get_deposit(&mut conn, deposit_id)
            .await?
            .ok_or(HydraError::DepositNotFound)?;
        let receipt = receipt_log::get_stored(&mut conn, row.receipt_hash.as_deref()).await?;
        let exec: Option<Receipt> = row
            .executor_receipt
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(&e.to_string()))?;
        Ok(hydra::DepositResponse {
            deposit: Some(to_deposit(&row, self.clock.now_ms())),
            receipt: receipt.as_ref().map(oa_service::receipts::to_proto),
            executor_receipt: exec.as_ref().map(oa_service::receipts::to_proto),
        })
    }

    /// The settle index consumed so far.
    pub async fn cursor(&self) -> Result<u64, HydraError> {
        Ok(store::cursor(&mut *self.conn().await?, CURSOR_SETTLEMENTS).await?)
    }

    /// Follows the executor's settlements until `stop` is set or Hydra is dropped; a stream that
    /// ends or fails is resubscribed from the stored cursor with the shared capped backoff.
    pub fn spawn_follower(self: &Arc<Self>, mut stop: watch::Receiver<bool>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = tracker::BACKOFF_MIN;
            loop {
                if *stop.borrow_and_update() {
                    return;
                }
                let Some(this) = weak.upgrade() else { return };
                if this.db.pool().is_closed() {
                    return;
                }
                let outcome = tokio::select! {
                    r = this.follow_once() => r,
                    _ = stop.wait_for(|s| *s) => return,
                };
                drop(this);
                match outcome {
                    Ok(true) => backoff = tracker::BACKOFF_MIN,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        "following the executor's settlements, will resubscribe: {e}"
                    ),
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(tracker::BACKOFF_MAX);
            }
        });
    }

    /// One subscription from the stored cursor until it ends. Returns whether it handled
    /// anything.
    pub async fn follow_once(&self) -> Result<bool, HydraError> {
        let mut cursor = self.cursor().await?;
        let mut stream = self
            .executor
            .subscribe_settlements(cursor)
            .await
            .map_err(HydraError::Executor)?;
        let mut progress = false;
        while let Some(item) = stream.next().await {
            let settlement = item.map_err(HydraError::Executor)?;
            let index = settlement.invoice.as_ref().map_or(0, |i| i.settle_index);
            if index <= cursor {
                continue;
            }
            if index != cursor.saturating_add(1) {
                tracing::error!(
                    expected = cursor.saturating_add(1),
                    got = index,
                    "the executor's settlement stream skipped settle indexes; handling what it sent"
                );
            }
            match self.handle(&settlement, cursor).await? {
                Handled::Advanced => {
                    cursor = index;
                    progress = true;
                }
                Handled::Lost => return Ok(progress),
            }
        }
        Ok(progress)
    }

    /// Handles one settlement in one transaction (see the module docs).
    async fn handle(
        &self,
        settlement: &wallet::InvoiceSettlement,
        cursor: u64,
    ) -> Result<Handled, HydraError> {
        let invoice = settlement.invoice.as_ref().ok_or_else(|| {
            HydraError::BadExecutorReceipt("a settlement without its invoice".into())
        })?;
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        if !store::advance_cursor(
            &mut tx,
            CURSOR_SETTLEMENTS,
            cursor,
            invoice.settle_index,
            now,
        )
        .await?
        {
            tx.rollback().await?;
            return Ok(Handled::Lost);
        }
        let deposit = store::deposit_by_hash(&mut tx, &invoice.payment_hash).await?;
        let Some(deposit) = deposit.filter(|d| d.state == DEPOSIT_OPEN) else {
            tx.commit().await?;
            return Ok(Handled::Advanced);
        };
        // A deposit is credited only on a receipt Hydra can show an auditor; a bad one stops
        // the follower here (retried with backoff) rather than skipping the credit.
        let exec = executor::check_settlement_receipt(&self.config.executor_keys, settlement)
            .map_err(HydraError::BadExecutorReceipt)?;
        let paid = Msat::new(invoice.amount_paid_msat)
            .ok()
            .filter(|p| !p.is_zero())
            .ok_or_else(|| {
                HydraError::BadExecutorReceipt("a settlement that paid nothing".into())
            })?;
        let exec_json = serde_json::to_string(&exec).map_err(|e| corrupt(&e.to_string()))?;
        if !store::credit_deposit(
            &mut tx,
            &deposit.deposit_id,
            paid,
            invoice.settle_index,
            &exec_json,
            now,
        )
        .await?
        {
            tx.commit().await?;
            return Ok(Handled::Advanced);
        }
        let transfer =
            book::credit_deposit(&mut tx, &deposit.agent_id, &deposit.deposit_id, paid, now)
                .await?;
        let body = DepositReceiptBody {
            deposit_id: &deposit.deposit_id,
            agent_id: &deposit.agent_id,
            method: &deposit.method,
            status: DEPOSIT_CREDITED,
            payment_hash: &deposit.payment_hash,
            amount_msat: deposit.amount,
            amount_paid_msat: paid,
            settle_index: invoice.settle_index,
            ledger_transfer: &transfer,
            executor_receipt: exec.hash.to_string(),
        };
        let draft = ReceiptDraft {
            schema: RECEIPT_SCHEMA.into(),
            receipt_id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
            idempotency_key: deposit.idempotency_key.clone(),
            links: vec![exec.hash],
            body: oa_receipts::body_from(&body)?,
        };
        let receipt = self.log.append(&mut tx, draft, now).await?;
        store::set_deposit_receipt(&mut tx, &deposit.deposit_id, &receipt.hash.to_string()).await?;
        journal::append(
            &mut tx,
            "hydra.deposits",
            "deposit_credited",
            &serde_json::json!({"deposit_id": deposit.deposit_id, "agent_id": deposit.agent_id,
                "amount_paid_msat": paid.as_u64().to_string(), "settle_index": invoice.settle_index.to_string(),
                "receipt_hash": receipt.hash.to_string()}),
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(deposit_id = %deposit.deposit_id, agent_id = %deposit.agent_id, amount_paid_msat = paid.as_u64(), "deposit credited");
        Ok(Handled::Advanced)
    }
}

fn parse(response: &str) -> Result<hydra::DepositResponse, HydraError> {
    oa_service::parse_json(response.as_bytes()).map_err(|_| corrupt("stored deposit response"))
}

fn to_deposit(d: &DepositRow, now_ms: u64) -> hydra::Deposit {
    let state = match d.state.as_str() {
        DEPOSIT_CREDITED => hydra::DepositState::Credited,
        _ if now_ms >= d.expires_at_ms => hydra::DepositState::Expired,
        _ => hydra::DepositState::Open,
    };
    hydra::Deposit {
        deposit_id: d.deposit_id.clone(),
        agent_id: d.agent_id.clone(),
        method: d.method.clone(),
        state: state as i32,
        amount_msat: d.amount.as_u64(),
        invoice: d.invoice.clone(),
        payment_hash: d.payment_hash.clone(),
        created_at_ms: d.created_at_ms,
        expires_at_ms: d.expires_at_ms,
        credited_msat: d.credited.map_or(0, Msat::as_u64),
        settle_index: d.settle_index.unwrap_or(0),
        credited_at_ms: d.credited_at_ms.unwrap_or(0),
    }
}
