//! Payment attempts: budget check, then Hydra quote and pay, with a receipt for every outcome.
//!
//! State machine: `denied` (terminal, the budget refused) | `in_flight -> succeeded | failed`.
//! A payment reserves amount + max fee against the agent's budget (a pending ledger transfer)
//! before anything is sent, and on its outcome posts the actual amount + fee (the rest returns)
//! or voids it. Calls to Hydra use
//! idempotency keys derived from the payment id, so a retry, the tracker, or recovery after a
//! crash always asks Hydra for the same quote and payment.
//!
//! If Hydra cannot be reached before a quote exists, nothing can have been paid: the attempt, its
//! reservation and its idempotency key are given back and the caller gets a retryable
//! `HYDRA_UNAVAILABLE`.

use std::{sync::Arc, time::Duration};

use http::StatusCode;
use oa_invoice::{InvoicePolicy, Network};
use oa_money::Msat;
use oa_proto::{hydra, treasury};
use oa_receipts::{Receipt, ReceiptDraft};
use oa_service::{ApiError, Clock, tracker::Tracker};
use oa_store::{
    Db,
    idempotency::{self, Claim},
    journal,
    receipt_log::{self, ReceiptLog},
};
use serde::Serialize;

use crate::{
    budget,
    error::TreasuryError,
    hydra_client::Hydra,
    store::{self, DENIED, FAILED, IN_FLIGHT, PaymentRow, SUCCEEDED},
};

pub const RECEIPT_SCHEMA: &str = "oa.treasury.payment_attempt_receipt.v1";
/// The only rail of this version: pay directly from Hydra's liquidity.
pub const RAIL_DIRECT: &str = "direct_liquidity";
/// Event topic of payment attempts.
pub const TOPIC: &str = "treasury.payments";
const MAX_AGENT_ID_LEN: usize = 64;
const MAX_PURPOSE_LEN: usize = 256;
/// The invoice must stay payable at least this long, to cover Hydra's quote.
const MIN_EXPIRY_REMAINING: Duration = Duration::from_secs(60);
const RECOVERY_BATCH: u32 = 500;

#[derive(Clone, Debug)]
pub struct PaymentsConfig {
    pub network: Network,
    /// Largest invoice amount treasury pays.
    pub max_payment: Msat,
    /// Budget given to an agent on its first payment; zero means agents need an explicit budget.
    pub default_budget: Msat,
}

/// A response ready to send (and to replay): status and proto-JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

pub struct Payments {
    pub db: Db,
    pub hydra: Arc<dyn Hydra>,
    pub log: ReceiptLog,
    pub clock: Arc<dyn Clock>,
    pub config: PaymentsConfig,
    tracker: Arc<Tracker>,
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
    /// The rule that decided: `agent_budget` in this version.
    decision_rule: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hydra_receipt: Option<&'a str>,
}

fn valid_agent_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_AGENT_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

impl Payments {
    pub fn new(
        db: Db,
        hydra: Arc<dyn Hydra>,
        log: ReceiptLog,
        clock: Arc<dyn Clock>,
        config: PaymentsConfig,
    ) -> Self {
        Self {
            db,
            hydra,
            log,
            clock,
            config,
            tracker: Arc::new(Tracker::new()),
        }
    }

    pub async fn create(
        self: &Arc<Self>,
        caller: &str,
        req: treasury::CreatePaymentRequest,
    ) -> Result<Stored, TreasuryError> {
        idempotency::validate_key(&req.idempotency_key)?;
        if !valid_agent_id(&req.agent_id) {
            return Err(TreasuryError::InvalidRequest(format!(
                "agent_id must be 1..={MAX_AGENT_ID_LEN} characters of [A-Za-z0-9._:-]"
            )));
        }
        if req.purpose.chars().count() > MAX_PURPOSE_LEN {
            return Err(TreasuryError::InvalidRequest(format!(
                "purpose is longer than {MAX_PURPOSE_LEN} characters"
            )));
        }
        let now = self.clock.now_ms();
        let amount_override = match req.amount_msat {
            0 => None,
            v => Some(
                Msat::new(v)
                    .map_err(|e| TreasuryError::InvalidRequest(format!("amount_msat: {e}")))?,
            ),
        };
        let max_fee = Msat::new(req.max_fee_msat)
            .map_err(|e| TreasuryError::InvalidRequest(format!("max_fee_msat: {e}")))?;
        let policy = InvoicePolicy {
            network: self.config.network,
            max_amount: self.config.max_payment,
            min_expiry_remaining: MIN_EXPIRY_REMAINING,
        };
        let invoice = oa_invoice::validate(&req.invoice, &policy, now, amount_override)?;
        let reserve = invoice
            .amount
            .checked_add(max_fee)
            .map_err(|_| TreasuryError::InvalidRequest("amount plus max fee overflows".into()))?;

        let scope = format!("treasury.payments/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        match idempotency::claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await? {
            Claim::Conflict => return Err(TreasuryError::IdempotencyConflict),
            Claim::Replay {
                status_code,
                response,
            } => {
                tx.rollback().await?;
                let body = serde_json::from_str(&response).map_err(|e| corrupt(&e.to_string()))?;
                return Ok(Stored {
                    status: StatusCode::from_u16(status_code).unwrap_or(StatusCode::OK),
                    body,
                });
            }
            Claim::InProgress { resource_id } => {
                tx.rollback().await?;
                let id = resource_id.ok_or(TreasuryError::RequestInProgress)?;
                return self.stored(&id, StatusCode::ACCEPTED).await;
            }
            Claim::New => {}
        }
        if !self.config.default_budget.is_zero() {
            budget::ensure_default(&mut tx, &req.agent_id, self.config.default_budget, now).await?;
        }
        let mut row = PaymentRow {
            payment_id: format!("pay_{}", uuid::Uuid::now_v7().simple()),
            idempotency_scope: scope.clone(),
            idempotency_key: req.idempotency_key.clone(),
            agent_id: req.agent_id.clone(),
            invoice: invoice.bolt11.clone(),
            payment_hash: invoice.payment_hash.to_string(),
            amount: invoice.amount,
            max_fee,
            reserved: reserve,
            fee: Msat::ZERO,
            state: IN_FLIGHT.into(),
            rail: RAIL_DIRECT.into(),
            purpose: req.purpose.clone(),
            preimage: None,
            failure_code: None,
            failure_reason: None,
            quote_id: None,
            hydra_receipt_hash: None,
            receipt_hash: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        if let Err(refusal) =
            budget::reserve(&mut tx, &req.agent_id, &row.payment_id, reserve, now).await?
        {
            // Denied: recorded, with its receipt, and replayed for the same key.
            let reason = refusal.reason_code();
            row.state = DENIED.into();
            row.reserved = Msat::ZERO;
            row.failure_code = Some("BUDGET_EXCEEDED".into());
            row.failure_reason = Some(reason.into());
            store::insert(&mut tx, &row).await?;
            let receipt = self
                .append_receipt(&mut tx, &row, Some(reason), None, now)
                .await?;
            store::set_receipt_hash(&mut tx, &row.payment_id, &receipt.hash.to_string()).await?;
            journal::append(
                &mut tx,
                TOPIC,
                "payment.denied",
                &serde_json::json!({"payment_id": row.payment_id, "reason_code": reason}),
                now,
            )
            .await?;
            let err = ApiError::new(
                StatusCode::FORBIDDEN,
                "BUDGET_EXCEEDED",
                "the payment would exceed the agent's budget",
            )
            .with_reason(reason)
            .with_detail("payment_id", row.payment_id.clone())
            .with_detail("receipt_hash", receipt.hash.to_string());
            let body = err.to_json();
            idempotency::complete(
                &mut tx,
                &scope,
                &req.idempotency_key,
                403,
                &body.to_string(),
                now,
            )
            .await?;
            tx.commit().await?;
            return Ok(Stored {
                status: StatusCode::FORBIDDEN,
                body,
            });
        }
        store::insert(&mut tx, &row).await?;
        idempotency::set_resource(&mut tx, &scope, &req.idempotency_key, &row.payment_id).await?;
        journal::append(
            &mut tx,
            TOPIC,
            "payment.in_flight",
            &serde_json::json!({"payment_id": row.payment_id, "agent_id": row.agent_id}),
            now,
        )
        .await?;
        tx.commit().await?;

        match self.attempt(&row.payment_id).await {
            Ok(true) => self.stored(&row.payment_id, StatusCode::CREATED).await,
            Ok(false) => {
                self.spawn_tracker(row.payment_id.clone());
                self.stored(&row.payment_id, StatusCode::ACCEPTED).await
            }
            Err(TreasuryError::Hydra(e)) if self.quote_id(&row.payment_id).await?.is_none() => {
                // Nothing can have been paid: give everything back and let the caller retry.
                self.undo(&row, &scope).await?;
                Err(TreasuryError::Hydra(e))
            }
            Err(TreasuryError::Hydra(e)) => {
                tracing::warn!(payment_id = %row.payment_id, code = %e.code, "hydra did not answer the pay; tracking");
                self.spawn_tracker(row.payment_id.clone());
                self.stored(&row.payment_id, StatusCode::ACCEPTED).await
            }
            Err(e) => Err(e),
        }
    }

    async fn quote_id(&self, payment_id: &str) -> Result<Option<String>, TreasuryError> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(oa_store::StoreError::from)?;
        Ok(store::get(&mut conn, payment_id)
            .await?
            .and_then(|p| p.quote_id))
    }

    async fn undo(&self, row: &PaymentRow, scope: &str) -> Result<(), TreasuryError> {
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        budget::settle(&mut tx, &row.payment_id, None, now).await?;
        store::delete(&mut tx, &row.payment_id).await?;
        idempotency::release(&mut tx, scope, &row.idempotency_key).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One step towards a terminal state: quote (once), then pay. Returns whether the attempt is
    /// now terminal; a `Hydra` error means Hydra did not answer and the step may be retried.
    async fn attempt(&self, payment_id: &str) -> Result<bool, TreasuryError> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(oa_store::StoreError::from)?;
        let row = store::get(&mut conn, payment_id)
            .await?
            .ok_or(TreasuryError::PaymentNotFound)?;
        drop(conn);
        if row.state != IN_FLIGHT {
            return Ok(true);
        }
        let quote_id = match &row.quote_id {
            Some(q) => q.clone(),
            None => {
                let req = hydra::QuotePayRequest {
                    idempotency_key: format!("treasury:{}:quote", row.payment_id),
                    invoice: row.invoice.clone(),
                    amount_msat: row.amount.as_u64(),
                    max_fee_msat: row.max_fee.as_u64(),
                    payer_ref: row.agent_id.clone(),
                };
                match self.hydra.quote_pay(req).await {
                    Ok(resp) => {
                        let q = resp
                            .quote
                            .ok_or_else(|| corrupt("hydra quote without a quote"))?;
                        let mut tx = self.db.begin().await?;
                        store::set_quote(&mut tx, &row.payment_id, &q.quote_id).await?;
                        tx.commit().await?;
                        q.quote_id
                    }
                    Err(e) if e.retryable => return Err(TreasuryError::Hydra(e)),
                    Err(e) => {
                        self.finish(
                            &row,
                            FAILED,
                            Msat::ZERO,
                            None,
                            Some(&e.code),
                            Some(&e.message),
                            None,
                        )
                        .await?;
                        return Ok(true);
                    }
                }
            }
        };
        let req = hydra::PayRequest {
            idempotency_key: format!("treasury:{}:pay", row.payment_id),
            quote_id,
        };
        match self.hydra.pay(req).await {
            Ok(resp) => {
                let state = resp.quote.as_ref().map(hydra::Quote::state);
                match state {
                    Some(hydra::QuoteState::Paid | hydra::QuoteState::Failed) => {
                        let receipt = self.check_hydra_receipt(&row, &resp)?;
                        let fee = Msat::new(resp.fee_msat).map_err(|e| corrupt(&e.to_string()))?;
                        if state == Some(hydra::QuoteState::Paid) {
                            self.finish(
                                &row,
                                SUCCEEDED,
                                fee,
                                Some(&resp.preimage),
                                None,
                                None,
                                Some(&receipt),
                            )
                            .await?;
                        } else {
                            self.finish(
                                &row,
                                FAILED,
                                Msat::ZERO,
                                None,
                                Some(&resp.failure_code),
                                Some(&resp.failure_reason),
                                Some(&receipt),
                            )
                            .await?;
                        }
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            Err(e) if e.retryable => Err(TreasuryError::Hydra(e)),
            Err(e) => {
                self.finish(
                    &row,
                    FAILED,
                    Msat::ZERO,
                    None,
                    Some(&e.code),
                    Some(&e.message),
                    None,
                )
                .await?;
                Ok(true)
            }
        }
    }

    /// Hydra's receipt must verify and be about this payment.
    fn check_hydra_receipt(
        &self,
        row: &PaymentRow,
        resp: &hydra::PayResponse,
    ) -> Result<Receipt, TreasuryError> {
        let proto = resp
            .receipt
            .as_ref()
            .ok_or_else(|| corrupt("terminal hydra payment without a receipt"))?;
        let receipt = oa_service::receipts::from_proto(proto).map_err(|e| corrupt(&e))?;
        receipt
            .verify()
            .map_err(|e| corrupt(&format!("hydra receipt does not verify: {e}")))?;
        if receipt.body.get("payment_hash").and_then(|v| v.as_str())
            != Some(row.payment_hash.as_str())
        {
            return Err(corrupt("hydra receipt is about another payment"));
        }
        Ok(receipt)
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        row: &PaymentRow,
        state: &str,
        fee: Msat,
        preimage: Option<&str>,
        code: Option<&str>,
        reason: Option<&str>,
        hydra_receipt: Option<&Receipt>,
    ) -> Result<(), TreasuryError> {
        let now = self.clock.now_ms();
        let hydra_hash = hydra_receipt.map(|r| r.hash.to_string());
        let mut tx = self.db.begin().await?;
        if !store::finish(
            &mut tx,
            &row.payment_id,
            state,
            fee,
            preimage,
            code,
            reason,
            hydra_hash.as_deref(),
            now,
        )
        .await?
        {
            tx.rollback().await?;
            return Ok(());
        }
        let spent = if state == SUCCEEDED {
            row.amount
                .checked_add(fee)
                .map_err(|e| corrupt(&e.to_string()))?
        } else {
            Msat::ZERO
        };
        if spent > row.reserved {
            return Err(corrupt(
                "hydra charged more than the reserved amount plus max fee",
            ));
        }
        budget::settle(
            &mut tx,
            &row.payment_id,
            (state == SUCCEEDED).then_some(spent),
            now,
        )
        .await?;
        let mut done = row.clone();
        done.state = state.into();
        done.fee = fee;
        done.failure_code = code.map(str::to_owned);
        let receipt = self
            .append_receipt(&mut tx, &done, None, hydra_receipt, now)
            .await?;
        store::set_receipt_hash(&mut tx, &row.payment_id, &receipt.hash.to_string()).await?;
        journal::append(
            &mut tx,
            TOPIC,
            if state == SUCCEEDED { "payment.succeeded" } else { "payment.failed" },
            &serde_json::json!({"payment_id": row.payment_id, "receipt_hash": receipt.hash.to_string()}),
            now,
        )
        .await?;
        let finished = store::get(&mut tx, &row.payment_id)
            .await?
            .ok_or(TreasuryError::PaymentNotFound)?;
        let body = serde_json::to_value(to_response(&finished, Some(&receipt)))
            .map_err(|e| corrupt(&e.to_string()))?;
        idempotency::complete(
            &mut tx,
            &row.idempotency_scope,
            &row.idempotency_key,
            201,
            &body.to_string(),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn append_receipt(
        &self,
        tx: &mut sqlx::AnyConnection,
        row: &PaymentRow,
        reason: Option<&str>,
        hydra_receipt: Option<&Receipt>,
        now: u64,
    ) -> Result<Receipt, TreasuryError> {
        let hydra_hash = hydra_receipt.map(|r| r.hash.to_string());
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
            decision_rule: "agent_budget",
            reason_code: reason,
            failure_code: row.failure_code.as_deref().filter(|_| row.state == FAILED),
            hydra_receipt: hydra_hash.as_deref(),
        };
        let draft = ReceiptDraft {
            schema: RECEIPT_SCHEMA.into(),
            receipt_id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
            idempotency_key: row.idempotency_key.clone(),
            links: hydra_receipt.map(|r| vec![r.hash]).unwrap_or_default(),
            body: oa_receipts::body_from(&body)?,
        };
        Ok(self.log.append(tx, draft, now).await?)
    }

    async fn stored(&self, payment_id: &str, status: StatusCode) -> Result<Stored, TreasuryError> {
        let resp = self.get(payment_id).await?;
        let status = match resp.payment.as_ref().map(treasury::Payment::state) {
            Some(treasury::PaymentState::InFlight) => StatusCode::ACCEPTED,
            _ => status,
        };
        Ok(Stored {
            status,
            body: serde_json::to_value(resp).map_err(|e| corrupt(&e.to_string()))?,
        })
    }

    pub async fn get(&self, payment_id: &str) -> Result<treasury::PaymentResponse, TreasuryError> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(oa_store::StoreError::from)?;
        let row = store::get(&mut conn, payment_id)
            .await?
            .ok_or(TreasuryError::PaymentNotFound)?;
        let receipt = receipt_log::get_stored(&mut conn, row.receipt_hash.as_deref()).await?;
        Ok(to_response(&row, receipt.as_ref()))
    }

    pub fn spawn_tracker(self: &Arc<Self>, payment_id: String) {
        let this = Arc::clone(self);
        let id = payment_id.clone();
        self.tracker.spawn(payment_id, move || {
            let (this, id) = (this.clone(), id.clone());
            async move { this.attempt(&id).await }
        });
    }

    /// After a restart: drive every attempt left in flight to its end.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, TreasuryError> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(oa_store::StoreError::from)?;
        let rows = store::in_flight(&mut conn, RECOVERY_BATCH).await?;
        drop(conn);
        for r in &rows {
            self.spawn_tracker(r.payment_id.clone());
        }
        Ok(rows.len())
    }
}

fn corrupt(what: &str) -> TreasuryError {
    TreasuryError::Store(oa_store::StoreError::Corrupt(what.to_owned()))
}

pub fn to_response(p: &PaymentRow, receipt: Option<&Receipt>) -> treasury::PaymentResponse {
    let state = match p.state.as_str() {
        DENIED => treasury::PaymentState::Denied,
        SUCCEEDED => treasury::PaymentState::Succeeded,
        FAILED => treasury::PaymentState::Failed,
        _ => treasury::PaymentState::InFlight,
    };
    treasury::PaymentResponse {
        payment: Some(treasury::Payment {
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
        }),
        receipt: receipt.map(oa_service::receipts::to_proto),
    }
}
