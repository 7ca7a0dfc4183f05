//! Provider bonds: a provider's stake put behind a warranty of its work.
//!
//! **State machine** (a bond moves once, by a guarded `UPDATE` of its row):
//!
//! ```text
//! (new) --reserve----------------------------------------> reserved
//! reserved --release (no claim open, paying or disputed)--> released
//! reserved --a claim of its warranty is paid and the provider is at fault--> drawn
//! ```
//!
//! Money ([`crate::book`]): reserving credits `provider:<id>` from `external` with whatever part
//! of the stake the provider's account does not hold already (a released stake is reused), then
//! reserves the stake as a pending transfer `provider:<id> -> pool`, one linked chain. Release
//! voids it. A draw posts `min(stake, payout)` of it (the rest returns to the provider); the
//! draw happens in the transaction that records the paid claim ([`crate::claim`]) or the
//! arbitrator's finding of fault ([`crate::dispute`]), through [`draw_in`].
//!
//! Receipts: `oa.aegis.bond_reservation_receipt.v1` and `oa.aegis.bond_release_receipt.v1`;
//! a draw is stated in the claim-resolution or dispute-arbitration receipt that causes it.
//!
//! Refusals: unknown warranty (`WARRANTY_NOT_FOUND`) or bond (`BOND_NOT_FOUND`), a provider other
//! than the warranty's (`PROVIDER_MISMATCH`), an expired warranty (`WARRANTY_EXPIRED`), a second
//! bond for a warranty (`BOND_EXISTS`), a release of a bond that is not reserved
//! (`BOND_NOT_RESERVED`) or while a claim is open, being paid or disputed (`BOND_LOCKED`).

use oa_ledger::NewTransfer;
use oa_money::Msat;
use oa_proto::aegis;
use oa_store::{journal, receipt_log};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::{
    book,
    error::{AegisError, conflict, corrupt, invalid, not_found},
    service::{Aegis, claim, complete, new_id},
    uw_store::{self, BondRow},
    validate,
    warranty::{TOPIC, validate_id},
};

pub const RESERVATION_SCHEMA: &str = "oa.aegis.bond_reservation_receipt.v1";
pub const RELEASE_SCHEMA: &str = "oa.aegis.bond_release_receipt.v1";
pub const RESERVED: &str = "reserved";
pub const RELEASED: &str = "released";
pub const DRAWN: &str = "drawn";

#[derive(Serialize)]
struct ReserveBody<'a> {
    bond_id: &'a str,
    warranty_id: &'a str,
    provider_id: &'a str,
    amount_msat: Msat,
    deposited_msat: Msat,
    pending_transfer_id: &'a str,
}

#[derive(Serialize)]
struct ReleaseBody<'a> {
    bond_id: &'a str,
    warranty_id: &'a str,
    provider_id: &'a str,
    amount_msat: Msat,
    status: &'static str,
}

pub(crate) fn to_bond(b: &BondRow) -> aegis::Bond {
    aegis::Bond {
        bond_id: b.bond_id.clone(),
        warranty_id: b.warranty_id.clone(),
        provider_id: b.provider_id.clone(),
        amount_msat: b.amount.as_u64(),
        drawn_msat: b.drawn.as_u64(),
        state: b.state.clone(),
        pending_transfer_id: b.pending_transfer_id.clone(),
        created_at_ms: b.created_at_ms,
        updated_at_ms: b.updated_at_ms,
    }
}

/// Draws the reserved bond of `warranty_id` for a payout of `payout`, in the caller's
/// transaction: posts `min(stake, payout)` of its pending transfer to `pool`. `None` when the
/// warranty has no reserved bond (none, released, or drawn already: a bond is drawn once).
pub(crate) async fn draw_in(
    conn: &mut AnyConnection,
    warranty_id: &str,
    payout: Msat,
    now_ms: u64,
) -> Result<Option<BondRow>, AegisError> {
    let Some(b) = uw_store::bond_of_warranty(conn, warranty_id).await? else {
        return Ok(None);
    };
    if b.state != RESERVED {
        return Ok(None);
    }
    let drawn = b.amount.min(payout);
    if drawn.is_zero() {
        return Ok(None);
    }
    book::apply(
        conn,
        &[NewTransfer::post(
            format!("{}:draw", b.bond_id),
            &b.pending_transfer_id,
            Some(drawn),
        )],
        now_ms,
    )
    .await?
    .map_err(|e| book::refused("the bond draw", e))?;
    if !uw_store::finish_bond(conn, &b.bond_id, DRAWN, drawn, None, now_ms).await? {
        return Err(corrupt("a reserved bond changed under its draw"));
    }
    journal::append(
        conn,
        TOPIC,
        "bond_drawn",
        &serde_json::json!({"bond_id": b.bond_id, "warranty_id": warranty_id,
            "drawn_msat": drawn.as_u64().to_string()}),
        now_ms,
    )
    .await?;
    uw_store::get_bond(conn, &b.bond_id)
        .await?
        .ok_or_else(|| corrupt("a drawn bond disappeared"))
        .map(Some)
}

impl Aegis {
    /// `POST /v1/aegis/bond/reserve`.
    pub async fn reserve_bond(
        &self,
        caller: &str,
        req: aegis::ReserveBondRequest,
    ) -> Result<aegis::BondResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        validate_id("INVALID_WARRANTY_ID", "warranty_id", &req.warranty_id)?;
        validate::agent_id(&req.provider_id)
            .map_err(|_| invalid("INVALID_PROVIDER_ID", "provider_id must be an agent id"))?;
        let amount = validate::msat("INVALID_AMOUNT", "amount_msat", req.amount_msat)?;
        if amount.is_zero() {
            return Err(invalid("INVALID_AMOUNT", "amount_msat must be positive"));
        }
        let now = self.clock.now_ms();
        let scope = format!("aegis.bond.reserve/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(replay) =
            claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(replay);
        }
        let w = uw_store::get_warranty(&mut tx, &req.warranty_id)
            .await?
            .ok_or_else(|| not_found("WARRANTY_NOT_FOUND", "no such warranty"))?;
        if w.provider_id != req.provider_id {
            return Err(conflict(
                "PROVIDER_MISMATCH",
                "the bond's provider must be the warranty's provider",
            ));
        }
        if now >= w.expires_at_ms {
            return Err(conflict("WARRANTY_EXPIRED", "the warranty has expired"));
        }
        let bond_id = new_id("bond");
        let account = book::provider(&req.provider_id);
        book::ensure_provider(&mut tx, &req.provider_id, now).await?;
        let held = book::available(&mut tx, &account).await?;
        let deposit = amount.saturating_sub(held);
        let pending_id = format!("{bond_id}:stake");
        let mut transfers = Vec::new();
        if !deposit.is_zero() {
            transfers.push(NewTransfer::single(
                format!("{bond_id}:deposit"),
                book::EXTERNAL,
                account.as_str(),
                deposit,
                book::LEDGER_MSAT,
                book::T_STAKE_DEPOSIT,
            ));
        }
        transfers.push(NewTransfer::pending(
            pending_id.as_str(),
            account.as_str(),
            book::POOL,
            amount,
            book::LEDGER_MSAT,
            book::T_BOND,
            None,
        ));
        book::apply(&mut tx, &book::chain(transfers), now)
            .await?
            .map_err(|e| book::refused("the bond's transfers", e))?;
        let receipt = self
            .receipt(
                &mut tx,
                RESERVATION_SCHEMA,
                &req.idempotency_key,
                vec![],
                &ReserveBody {
                    bond_id: &bond_id,
                    warranty_id: &w.warranty_id,
                    provider_id: &req.provider_id,
                    amount_msat: amount,
                    deposited_msat: deposit,
                    pending_transfer_id: &pending_id,
                },
                now,
            )
            .await?;
        let row = BondRow {
            bond_id: bond_id.clone(),
            warranty_id: w.warranty_id.clone(),
            provider_id: req.provider_id.clone(),
            amount,
            drawn: Msat::ZERO,
            state: RESERVED.into(),
            pending_transfer_id: pending_id,
            reserve_receipt_hash: receipt.hash.to_string(),
            release_receipt_hash: None,
            reserved_by: caller.to_owned(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        if !uw_store::insert_bond(&mut tx, &row).await? {
            return Err(conflict("BOND_EXISTS", "this warranty has a bond already"));
        }
        journal::append(
            &mut tx,
            TOPIC,
            "bond_reserved",
            &serde_json::json!({"bond_id": bond_id, "warranty_id": w.warranty_id,
                "amount_msat": amount.as_u64().to_string()}),
            now,
        )
        .await?;
        let response = aegis::BondResponse {
            bond: Some(to_bond(&row)),
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
        };
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `POST /v1/aegis/bond/release`.
    pub async fn release_bond(
        &self,
        caller: &str,
        req: aegis::ReleaseBondRequest,
    ) -> Result<aegis::BondResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        validate_id("INVALID_BOND_ID", "bond_id", &req.bond_id)?;
        let now = self.clock.now_ms();
        let scope = format!("aegis.bond.release/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(replay) =
            claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(replay);
        }
        let b = uw_store::get_bond(&mut tx, &req.bond_id)
            .await?
            .ok_or_else(|| not_found("BOND_NOT_FOUND", "no such bond"))?;
        if b.state != RESERVED {
            return Err(conflict(
                "BOND_NOT_RESERVED",
                format!("the bond is {}", b.state),
            ));
        }
        if uw_store::busy_claims(&mut tx, &b.warranty_id).await? > 0 {
            return Err(conflict(
                "BOND_LOCKED",
                "a claim of the warranty is open, being paid or disputed",
            ));
        }
        book::apply(
            &mut tx,
            &[NewTransfer::void(
                format!("{}:release", b.bond_id),
                &b.pending_transfer_id,
            )],
            now,
        )
        .await?
        .map_err(|e| book::refused("the bond release", e))?;
        let receipt = self
            .receipt(
                &mut tx,
                RELEASE_SCHEMA,
                &req.idempotency_key,
                vec![],
                &ReleaseBody {
                    bond_id: &b.bond_id,
                    warranty_id: &b.warranty_id,
                    provider_id: &b.provider_id,
                    amount_msat: b.amount,
                    status: RELEASED,
                },
                now,
            )
            .await?;
        let hash = receipt.hash.to_string();
        // The guarded update is also the lock: a concurrent release or draw of this bond lost
        // (or will find it released) and its transaction rolls back.
        if !uw_store::finish_bond(&mut tx, &b.bond_id, RELEASED, Msat::ZERO, Some(&hash), now)
            .await?
        {
            return Err(conflict("BOND_NOT_RESERVED", "the bond changed meanwhile"));
        }
        journal::append(
            &mut tx,
            TOPIC,
            "bond_released",
            &serde_json::json!({"bond_id": b.bond_id, "warranty_id": b.warranty_id}),
            now,
        )
        .await?;
        let row = uw_store::get_bond(&mut tx, &b.bond_id)
            .await?
            .ok_or_else(|| corrupt("a released bond disappeared"))?;
        let response = aegis::BondResponse {
            bond: Some(to_bond(&row)),
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
        };
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// A bond and its latest receipt.
    pub async fn get_bond(&self, id: &str) -> Result<aegis::BondResponse, AegisError> {
        validate_id("INVALID_BOND_ID", "bond id", id)?;
        let mut conn = self.conn().await?;
        let b = uw_store::get_bond(&mut conn, id)
            .await?
            .ok_or_else(|| not_found("BOND_NOT_FOUND", "no such bond"))?;
        let hash = b
            .release_receipt_hash
            .as_deref()
            .unwrap_or(&b.reserve_receipt_hash);
        let receipt = receipt_log::get_stored(&mut conn, Some(hash)).await?;
        Ok(aegis::BondResponse {
            bond: Some(to_bond(&b)),
            receipt: receipt.as_ref().map(oa_service::receipts::to_proto),
        })
    }
}
