//! On-chain: the wallet's balance, receive addresses, and sends that happen exactly once.
//!
//! A send:
//! 1. Validate (typed 400s, nothing written): whole-satoshi amount, an address of our network, a
//!    bounded fee rate. Check the per-payment cap against the amount plus a fee reserve.
//! 2. In one transaction: claim the idempotency key, record the send `pending` under a fresh id,
//!    count it against the rolling window. Commit: the intent is durable before the send.
//! 3. Ask the node to send with the send's id as its label. The node's contract makes a send
//!    idempotent per label, so asking again (a retry of the same key, or recovery after a
//!    restart) finds the transaction instead of sending a second one.
//! 4. With the txid, in one transaction: mark the send `sent` (once, guarded by its status),
//!    append the signed receipt, store the answer for replays.
//!
//! If the node refuses (insufficient funds, an address it rejects), nothing was sent: the row is
//! deleted, the window given back and the key released, in one transaction, so the caller can
//! retry with the same key. If the node cannot be reached, the outcome is unknown: the row stays
//! `pending`, a retry (or recovery at start-up) asks the node again under the same label.

use std::sync::Arc;

use oa_invoice::Network;
use oa_money::Msat;
use oa_proto::wallet;
use oa_service::{Clock, tracker::Tracker};
use oa_store::{
    Db,
    idempotency::{self, Claim},
    receipt_log::{self, ReceiptLog},
};
use serde::Serialize;

use crate::{
    error::WalletError,
    node::{LightningNode, SendCoinsRequest},
    payments::Caps,
    receipt,
    store::onchain::{self as store, SendRow},
    validate,
};

/// Highest fee rate accepted: far above any real fee market, low enough that a compromised
/// caller cannot burn the wallet in fees.
pub const MAX_SAT_PER_VBYTE: u64 = 1_000;
/// Size counted for a send's fee in the caps (vbytes): room for about 14 inputs.
pub const FEE_RESERVE_VBYTES: u64 = 1_000;
/// Fee rate assumed for that reserve when the node chooses the rate.
pub const DEFAULT_RESERVE_SAT_PER_VBYTE: u64 = 50;
/// Pending sends re-driven per batch at start-up.
const RECOVERY_BATCH: u32 = 500;

pub struct Onchain {
    pub db: Db,
    pub node: Arc<dyn LightningNode>,
    pub log: ReceiptLog,
    pub clock: Arc<dyn Clock>,
    pub caps: Caps,
    pub network: Network,
    tracker: Arc<Tracker>,
}

/// The body of an on-chain send receipt (schema [`receipt::ONCHAIN_SEND_SCHEMA`]).
#[derive(Serialize)]
struct SendReceiptBody<'a> {
    txid: &'a str,
    address: &'a str,
    amount_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    sat_per_vbyte: u64,
    /// The label the node knows the send by.
    label: &'a str,
    requested_by: &'a str,
    backend: &'a str,
    #[serde(with = "oa_receipts::u64_string")]
    created_at_ms: u64,
}

/// The fee counted in the caps for a send at `sat_per_vbyte` (0: the node's choice).
pub fn fee_reserve(sat_per_vbyte: u64) -> Result<Msat, WalletError> {
    let rate = if sat_per_vbyte == 0 {
        DEFAULT_RESERVE_SAT_PER_VBYTE
    } else {
        sat_per_vbyte
    };
    Msat::from_sat(rate.saturating_mul(FEE_RESERVE_VBYTES))
        .map_err(|e| WalletError::bad_input("INVALID_FEE_RATE", e.to_string()))
}

impl Onchain {
    pub fn new(
        db: Db,
        node: Arc<dyn LightningNode>,
        log: ReceiptLog,
        clock: Arc<dyn Clock>,
        caps: Caps,
        network: Network,
    ) -> Self {
        Self {
            db,
            node,
            log,
            clock,
            caps,
            network,
            tracker: Arc::new(Tracker::new()),
        }
    }

    pub async fn balance(&self) -> Result<wallet::WalletBalanceResponse, WalletError> {
        let b = self.node.wallet_balance().await?;
        Ok(wallet::WalletBalanceResponse {
            confirmed_balance_msat: b.confirmed.as_u64(),
            unconfirmed_balance_msat: b.unconfirmed.as_u64(),
        })
    }

    /// A fresh receive address. Not idempotent: asking twice gives two addresses (receiving
    /// moves no money until someone pays).
    pub async fn new_address(&self) -> Result<wallet::NewAddressResponse, WalletError> {
        let address = self.node.new_address().await?;
        Ok(wallet::NewAddressResponse { address })
    }

    /// Sends on-chain exactly once per idempotency key (see the module docs).
    pub async fn send(
        self: &Arc<Self>,
        caller: &str,
        req: wallet::SendCoinsRequest,
    ) -> Result<wallet::SendCoinsResponse, WalletError> {
        idempotency::validate_key(&req.idempotency_key)?;
        let amount = validate::whole_sat("amount_msat", req.amount_msat, false)?;
        if req.sat_per_vbyte > MAX_SAT_PER_VBYTE {
            return Err(WalletError::bad_input(
                "INVALID_FEE_RATE",
                format!("sat_per_vbyte must be at most {MAX_SAT_PER_VBYTE}"),
            ));
        }
        validate::address(&req.address, self.network)?;
        let committed = amount
            .checked_add(fee_reserve(req.sat_per_vbyte)?)
            .map_err(|e| WalletError::bad_input("INVALID_AMOUNT", e.to_string()))?;
        self.caps.check_per_payment(committed)?;

        let now = self.clock.now_ms();
        let scope = format!("wallet.send_coins/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        match idempotency::claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await? {
            Claim::Conflict => return Err(WalletError::IdempotencyConflict),
            Claim::Replay { response, .. } => {
                tx.rollback().await?;
                return receipt::from_json(&response);
            }
            Claim::InProgress { .. } => {
                tx.rollback().await?;
                // The first attempt recorded its intent and did not finish (it is running, or
                // its process died, or the node did not answer): ask the node again under the
                // same label, which finds the transaction if it was sent.
                let row = self.by_key(&scope, &req.idempotency_key).await?;
                return self.drive(&row).await;
            }
            Claim::New => {}
        }
        let row = SendRow {
            id: format!("oa-send-{}", uuid::Uuid::now_v7().simple()),
            idempotency_scope: scope,
            idempotency_key: req.idempotency_key.clone(),
            requested_by: caller.to_owned(),
            address: req.address.clone(),
            amount,
            sat_per_vbyte: req.sat_per_vbyte,
            committed,
            status: store::PENDING.into(),
            txid: None,
            created_at_ms: now,
            sent_at_ms: None,
            receipt_hash: None,
        };
        store::insert(&mut tx, &row).await?;
        if let Err(e) = self.caps.reserve(&mut tx, now, committed).await {
            tx.rollback().await?;
            return Err(e);
        }
        tx.commit().await?;
        self.drive(&row).await
    }

    async fn by_key(&self, scope: &str, key: &str) -> Result<SendRow, WalletError> {
        let mut conn = self.db.reader().await?;
        store::get_by_key(&mut conn, scope, key)
            .await?
            .ok_or(WalletError::IdempotencyInProgress)
    }

    /// Asks the node to send `row` (idempotent per label) and records the outcome.
    async fn drive(&self, row: &SendRow) -> Result<wallet::SendCoinsResponse, WalletError> {
        if row.status == store::SENT {
            return self.respond(row).await;
        }
        let sent = self
            .node
            .send_coins(&SendCoinsRequest {
                address: row.address.clone(),
                amount: row.amount,
                sat_per_vbyte: row.sat_per_vbyte,
                label: row.id.clone(),
            })
            .await;
        match sent {
            Ok(txid) => self.record_sent(row, &txid).await,
            Err(e) => {
                let e = WalletError::from(e);
                if e.is_definite_node_refusal() {
                    self.undo(row).await?;
                }
                Err(e)
            }
        }
    }

    /// The txid, the receipt and the stored answer, in one transaction, once.
    async fn record_sent(
        &self,
        row: &SendRow,
        txid: &str,
    ) -> Result<wallet::SendCoinsResponse, WalletError> {
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        if !store::mark_sent(&mut tx, &row.id, txid, now).await? {
            // Another attempt recorded it first.
            tx.rollback().await?;
            let current = self
                .by_key(&row.idempotency_scope, &row.idempotency_key)
                .await?;
            return self.respond(&current).await;
        }
        let body = SendReceiptBody {
            txid,
            address: &row.address,
            amount_msat: row.amount,
            sat_per_vbyte: row.sat_per_vbyte,
            label: &row.id,
            requested_by: &row.requested_by,
            backend: self.node.backend(),
            created_at_ms: row.created_at_ms,
        };
        let draft = receipt::draft(receipt::ONCHAIN_SEND_SCHEMA, &row.idempotency_key, &body)?;
        let sealed = self.log.append(&mut tx, draft, now).await?;
        store::set_receipt_hash(&mut tx, &row.id, &sealed.hash.to_string()).await?;
        let response = wallet::SendCoinsResponse {
            txid: txid.to_owned(),
            receipt: Some(oa_service::receipts::to_proto(&sealed)),
        };
        idempotency::complete(
            &mut tx,
            &row.idempotency_scope,
            &row.idempotency_key,
            200,
            &receipt::to_json(&response)?,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Undoes a send the node refused: row, window and key, in one transaction.
    async fn undo(&self, row: &SendRow) -> Result<(), WalletError> {
        let mut tx = self.db.begin().await?;
        if store::delete_pending(&mut tx, &row.id).await? {
            self.caps
                .give_back(&mut tx, row.created_at_ms, row.committed)
                .await?;
            idempotency::release(&mut tx, &row.idempotency_scope, &row.idempotency_key).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn respond(&self, row: &SendRow) -> Result<wallet::SendCoinsResponse, WalletError> {
        let Some(txid) = row.txid.clone() else {
            return Err(WalletError::IdempotencyInProgress);
        };
        let mut conn = self.db.reader().await?;
        let sealed = receipt_log::get_stored(&mut conn, row.receipt_hash.as_deref()).await?;
        Ok(wallet::SendCoinsResponse {
            txid,
            receipt: sealed.as_ref().map(oa_service::receipts::to_proto),
        })
    }

    /// After a restart: asks the node again about every send whose outcome was not recorded
    /// (same label: found if sent, sent once if not), in the background. Returns how many.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, WalletError> {
        let mut conn = self.db.reader().await?;
        let rows = store::pending(&mut conn, RECOVERY_BATCH).await?;
        drop(conn);
        for row in &rows {
            let (this, row) = (Arc::clone(self), row.clone());
            self.tracker.spawn(row.id.clone(), move || {
                let (this, row) = (this.clone(), row.clone());
                async move {
                    match this.drive(&row).await {
                        Ok(_) => Ok(true),
                        Err(e) if e.is_definite_node_refusal() => {
                            tracing::warn!(id = %row.id, "recovered on-chain send refused by the node: {e}");
                            Ok(true)
                        }
                        Err(e) => Err(e),
                    }
                }
            });
        }
        Ok(rows.len())
    }
}
