//! Receiving: invoices our node issues, and one signed receipt per settlement.
//!
//! - `CreateInvoice` claims the idempotency key, asks the node for the invoice, records it and
//!   stores the answer, in one transaction (a retry replays the same invoice).
//! - A background follower ([`Invoices::follow`]) subscribes to the node's settlements from the
//!   highest settle index recorded, and records each settlement with its receipt in one
//!   transaction (guarded, so a settlement is recorded once). The recorded settle indexes are
//!   therefore a gapless prefix of the node's, and the follower resumes from the last one after
//!   a restart or a dropped subscription, missing nothing.
//! - `SubscribeInvoiceSettlements` reads the recorded settlements (each with its receipt) after
//!   the caller's index, then follows new ones as the follower commits them. It reads the table
//!   every time it wakes, so it is gapless too.

use std::{collections::VecDeque, sync::Arc};

use futures::{StreamExt, stream::BoxStream};
use oa_money::Msat;
use oa_proto::wallet;
use oa_service::{Clock, tracker};
use oa_store::{
    Db,
    idempotency::{self, Claim},
    receipt_log::{self, ReceiptLog},
};
use serde::Serialize;
use tokio::sync::watch;

use crate::{
    error::WalletError,
    node::{InvoiceRequest, InvoiceStatus, LightningNode, NodeError, NodeInvoice},
    receipt,
    store::invoices::{self as store, InvoiceRow},
    validate,
};

/// Expiry of an invoice when the caller gives none.
pub const DEFAULT_EXPIRY_SECS: u32 = 3600;
/// Longest invoice expiry accepted (a week), as wallets usually cap it.
pub const MAX_EXPIRY_SECS: u32 = 7 * 24 * 3600;
/// Longest description: what fits BOLT11's description field (639 bytes).
pub const MAX_DESCRIPTION_BYTES: usize = 639;
/// Settlements a subscription reads from the table at a time.
const SUBSCRIBE_PAGE: u32 = 100;

pub struct Invoices {
    db: Db,
    node: Arc<dyn LightningNode>,
    log: ReceiptLog,
    clock: Arc<dyn Clock>,
    /// The highest settle index recorded, for live subscribers.
    recorded: watch::Sender<u64>,
    /// Set at shutdown: the follower and the subscriptions stop.
    closing: watch::Sender<bool>,
}

/// The body of an invoice settlement receipt (schema [`receipt::INVOICE_SETTLEMENT_SCHEMA`]).
#[derive(Serialize)]
struct SettlementReceiptBody<'a> {
    payment_hash: &'a str,
    /// The invoice's amount (`"0"` for an amountless invoice).
    amount_msat: Msat,
    amount_paid_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    add_index: u64,
    #[serde(with = "oa_receipts::u64_string")]
    settle_index: u64,
    #[serde(with = "oa_receipts::u64_string")]
    created_at_ms: u64,
    #[serde(with = "oa_receipts::u64_string")]
    settled_at_ms: u64,
    backend: &'a str,
}

fn status_to_proto(s: InvoiceStatus) -> wallet::InvoiceStatus {
    match s {
        InvoiceStatus::Open => wallet::InvoiceStatus::Open,
        InvoiceStatus::Settled => wallet::InvoiceStatus::Settled,
        InvoiceStatus::Cancelled => wallet::InvoiceStatus::Cancelled,
        InvoiceStatus::Expired => wallet::InvoiceStatus::Expired,
    }
}

fn node_invoice_to_proto(i: &NodeInvoice) -> wallet::Invoice {
    wallet::Invoice {
        payment_hash: i.payment_hash.to_string(),
        bolt11: i.bolt11.clone(),
        amount_msat: i.amount.as_u64(),
        amount_paid_msat: i.amount_paid.as_u64(),
        status: status_to_proto(i.status) as i32,
        add_index: i.add_index,
        settle_index: i.settle_index,
        created_at_ms: i.created_at_ms,
        settled_at_ms: i.settled_at_ms,
    }
}

fn settled_row_to_proto(r: &InvoiceRow) -> wallet::Invoice {
    wallet::Invoice {
        payment_hash: r.payment_hash.clone(),
        bolt11: r.bolt11.clone(),
        amount_msat: r.amount.as_u64(),
        amount_paid_msat: r.amount_paid.unwrap_or(Msat::ZERO).as_u64(),
        status: wallet::InvoiceStatus::Settled as i32,
        add_index: r.add_index,
        settle_index: r.settle_index.unwrap_or(0),
        created_at_ms: r.created_at_ms,
        settled_at_ms: r.settled_at_ms.unwrap_or(0),
    }
}

impl Invoices {
    pub fn new(
        db: Db,
        node: Arc<dyn LightningNode>,
        log: ReceiptLog,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            db,
            node,
            log,
            clock,
            recorded: watch::channel(0).0,
            closing: watch::channel(false).0,
        }
    }

    /// Issues an invoice once per idempotency key.
    pub async fn create(
        &self,
        caller: &str,
        req: wallet::CreateInvoiceRequest,
    ) -> Result<wallet::InvoiceResponse, WalletError> {
        idempotency::validate_key(&req.idempotency_key)?;
        let amount = validate::amount("amount_msat", req.amount_msat, true)?;
        if req.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(WalletError::bad_input(
                "INVALID_DESCRIPTION",
                format!("description must be at most {MAX_DESCRIPTION_BYTES} bytes"),
            ));
        }
        let expiry_secs = match req.expiry_secs {
            0 => DEFAULT_EXPIRY_SECS,
            s if s > MAX_EXPIRY_SECS => {
                return Err(WalletError::bad_input(
                    "INVALID_EXPIRY",
                    format!("expiry_secs must be at most {MAX_EXPIRY_SECS}"),
                ));
            }
            s => s,
        };
        let now = self.clock.now_ms();
        let scope = format!("wallet.invoice/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        match idempotency::claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await? {
            Claim::Conflict => return Err(WalletError::IdempotencyConflict),
            Claim::Replay { response, .. } => {
                tx.rollback().await?;
                return receipt::from_json(&response);
            }
            Claim::InProgress { .. } => return Err(WalletError::IdempotencyInProgress),
            Claim::New => {}
        }
        // Issuing an invoice moves no money: if this transaction fails after the node issued
        // it, the invoice stays unused at the node (and is recorded if it is ever paid).
        let issued = self
            .node
            .add_invoice(&InvoiceRequest {
                amount,
                description: req.description.clone(),
                expiry_secs,
            })
            .await?;
        let hash = issued.payment_hash.to_string();
        store::insert_if_absent(
            &mut tx,
            &InvoiceRow {
                payment_hash: hash,
                idempotency_scope: Some(scope.clone()),
                idempotency_key: Some(req.idempotency_key.clone()),
                bolt11: issued.bolt11.clone(),
                amount: issued.amount,
                add_index: issued.add_index,
                created_at_ms: issued.created_at_ms,
                settle_index: None,
                amount_paid: None,
                settled_at_ms: None,
                receipt_hash: None,
            },
        )
        .await?;
        let response = wallet::InvoiceResponse {
            invoice: Some(node_invoice_to_proto(&issued)),
            receipt: None,
        };
        let json = receipt::to_json(&response)?;
        idempotency::complete(&mut tx, &scope, &req.idempotency_key, 200, &json, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// One of our invoices as the node sees it now, with its settlement receipt once recorded.
    pub async fn lookup(&self, payment_hash: &str) -> Result<wallet::InvoiceResponse, WalletError> {
        let hash = validate::payment_hash(payment_hash)?;
        let invoice = match self.node.lookup_invoice(&hash).await {
            Ok(i) => i,
            Err(NodeError::NotFound) => return Err(WalletError::InvoiceNotFound),
            Err(e) => return Err(e.into()),
        };
        let mut conn = self.db.reader().await?;
        let row = store::get(&mut conn, payment_hash).await?;
        let receipt = receipt_log::get_stored(
            &mut conn,
            row.as_ref().and_then(|r| r.receipt_hash.as_deref()),
        )
        .await?;
        Ok(wallet::InvoiceResponse {
            invoice: Some(node_invoice_to_proto(&invoice)),
            receipt: receipt.as_ref().map(oa_service::receipts::to_proto),
        })
    }

    /// Stops the follower and ends every subscription (at shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Follows the node's settlements and records each one, until [`Invoices::close`]. A dropped
    /// subscription or a failed write is retried from the last recorded settle index, with the
    /// kit's shared backoff. A backend that cannot subscribe stops the follower.
    pub async fn follow(self: Arc<Self>) {
        let mut closing = self.closing.subscribe();
        let mut backoff = tracker::BACKOFF_MIN;
        loop {
            if *closing.borrow_and_update() {
                return;
            }
            let outcome = tokio::select! {
                r = self.follow_once() => r,
                _ = closing.wait_for(|c| *c) => return,
            };
            match outcome {
                Ok(progress) => {
                    if progress {
                        backoff = tracker::BACKOFF_MIN;
                    }
                }
                Err(WalletError::NotSupported(what)) => {
                    tracing::info!("the node cannot stream settlements ({what}): not following");
                    return;
                }
                Err(e) => tracing::warn!("following invoice settlements, will resubscribe: {e}"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = closing.wait_for(|c| *c) => return,
            }
            backoff = (backoff * 2).min(tracker::BACKOFF_MAX);
        }
    }

    /// One subscription, from the last recorded settle index until it ends or fails. Returns
    /// whether it recorded anything.
    async fn follow_once(&self) -> Result<bool, WalletError> {
        let after = {
            let mut conn = self.db.reader().await?;
            store::last_settle_index(&mut conn).await?
        };
        self.recorded.send_if_modified(|v| {
            let changed = *v < after;
            *v = (*v).max(after);
            changed
        });
        let mut stream = self.node.subscribe_settled_invoices(after).await?;
        let mut last = after;
        let mut progress = false;
        while let Some(item) = stream.next().await {
            let inv = item?;
            if inv.settle_index <= last {
                continue;
            }
            if inv.settle_index != last + 1 {
                tracing::error!(
                    expected = last + 1,
                    got = inv.settle_index,
                    "the node skipped settle indexes; recording what it sent"
                );
            }
            self.record(&inv).await?;
            last = inv.settle_index;
            progress = true;
        }
        Ok(progress)
    }

    /// Records one settlement with its receipt (once).
    async fn record(&self, inv: &NodeInvoice) -> Result<(), WalletError> {
        let now = self.clock.now_ms();
        let hash = inv.payment_hash.to_string();
        let mut tx = self.db.begin().await?;
        store::insert_if_absent(
            &mut tx,
            &InvoiceRow {
                payment_hash: hash.clone(),
                idempotency_scope: None,
                idempotency_key: None,
                bolt11: inv.bolt11.clone(),
                amount: inv.amount,
                add_index: inv.add_index,
                created_at_ms: inv.created_at_ms,
                settle_index: None,
                amount_paid: None,
                settled_at_ms: None,
                receipt_hash: None,
            },
        )
        .await?;
        if !store::record_settlement(
            &mut tx,
            &hash,
            inv.settle_index,
            inv.amount_paid,
            inv.settled_at_ms,
        )
        .await?
        {
            tx.rollback().await?;
            return Ok(());
        }
        let row = store::get(&mut tx, &hash).await?;
        let key = row
            .as_ref()
            .and_then(|r| r.idempotency_key.clone())
            .unwrap_or_else(|| format!("invoice:{hash}"));
        let body = SettlementReceiptBody {
            payment_hash: &hash,
            amount_msat: inv.amount,
            amount_paid_msat: inv.amount_paid,
            add_index: inv.add_index,
            settle_index: inv.settle_index,
            created_at_ms: inv.created_at_ms,
            settled_at_ms: inv.settled_at_ms,
            backend: self.node.backend(),
        };
        let draft = receipt::draft(receipt::INVOICE_SETTLEMENT_SCHEMA, &key, &body)?;
        let sealed = self.log.append(&mut tx, draft, now).await?;
        store::set_receipt_hash(&mut tx, &hash, &sealed.hash.to_string()).await?;
        tx.commit().await?;
        self.recorded.send_if_modified(|v| {
            let changed = *v < inv.settle_index;
            *v = (*v).max(inv.settle_index);
            changed
        });
        Ok(())
    }

    /// Recorded settlements after `after`, then each new one (see the module docs). The stream
    /// ends at shutdown, or after reporting a database error.
    pub fn subscribe(
        self: &Arc<Self>,
        after: u64,
    ) -> BoxStream<'static, Result<wallet::InvoiceSettlement, tonic::Status>> {
        struct Follow {
            invoices: Arc<Invoices>,
            cursor: u64,
            recorded: watch::Receiver<u64>,
            closing: watch::Receiver<bool>,
            buf: VecDeque<wallet::InvoiceSettlement>,
            done: bool,
        }
        let start = Follow {
            invoices: Arc::clone(self),
            cursor: after,
            recorded: self.recorded.subscribe(),
            closing: self.closing.subscribe(),
            buf: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(start, |mut f| async move {
            loop {
                if let Some(s) = f.buf.pop_front() {
                    return Some((Ok(s), f));
                }
                if f.done || *f.closing.borrow() {
                    return None;
                }
                // Seen before reading: a commit after the read wakes the wait below.
                f.recorded.borrow_and_update();
                match f.invoices.page_after(f.cursor).await {
                    Ok(page) if !page.is_empty() => {
                        f.cursor = page
                            .last()
                            .and_then(|s| s.invoice.as_ref())
                            .map_or(f.cursor, |i| i.settle_index);
                        f.buf.extend(page);
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        f.done = true;
                        return Some((Err(e.into()), f));
                    }
                }
                tokio::select! {
                    r = f.recorded.changed() => if r.is_err() { return None },
                    _ = f.closing.wait_for(|c| *c) => return None,
                }
            }
        })
        .boxed()
    }

    async fn page_after(&self, after: u64) -> Result<Vec<wallet::InvoiceSettlement>, WalletError> {
        let mut conn = self.db.reader().await?;
        let rows = store::settled_after(&mut conn, after, SUBSCRIBE_PAGE).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let receipt = receipt_log::get_stored(&mut conn, row.receipt_hash.as_deref()).await?;
            out.push(wallet::InvoiceSettlement {
                invoice: Some(settled_row_to_proto(row)),
                receipt: receipt.as_ref().map(oa_service::receipts::to_proto),
            });
        }
        Ok(out)
    }
}
