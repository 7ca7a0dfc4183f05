//! Disputes of a claim's resolution, decided by an arbitrator before a deadline.
//!
//! **State machine** (a dispute moves once, by a guarded `UPDATE`):
//!
//! ```text
//! (new) --open (a denied or paid claim, none open for it)---------> open
//! open --arbitrate, the decision changes money--------------------> overturned (dispute_arbitration)
//! open --arbitrate, the resolution stands-------------------------> upheld     (dispute_arbitration)
//! open --the deadline passed undecided----------------------------> expired    (dispute_arbitration)
//! ```
//!
//! The arbitrator (scope `aegis:arbitrate`, not the identity that opened the dispute, resolved
//! the claim or claimed) decides `pay` and `provider_at_fault`. The money effects go through the
//! claim and bond paths, in the arbitration's transaction: `pay` on a denied claim moves it
//! `denied -> paying` (the payout reserved from the coverage left, then paid through Hydra exactly
//! as a resolved claim: [`crate::claim`]); `provider_at_fault` on a paid claim whose provider was
//! not found at fault draws the bond ([`crate::bond::draw_in`]; a bond is drawn at most once).
//! A paid claim is never clawed back: `pay = false` on a paid claim upholds it. Replaying an
//! arbitration (same key) re-drives a payout still in flight and changes nothing else.
//!
//! **Default at the deadline**: the claim's resolution stands (`expired`). Expired disputes are
//! closed by a background sweeper ([`Aegis::spawn_sweeper`], every `--sweep-interval-ms`, judged
//! by the service [`oa_service::Clock`]) and by the same bounded sweep at the start of every
//! dispute route, each with its receipt; so a dispute nobody touches still closes on time, and
//! an arbitration after the deadline finds the dispute closed (`DISPUTE_CLOSED`). The sweeper
//! and a route may race for one dispute: its guarded `UPDATE` lets one close it, the other's
//! transaction (and receipt) rolls back.
//!
//! Refusals: unknown claim or dispute (`CLAIM_NOT_FOUND`, `DISPUTE_NOT_FOUND`), a claim that is
//! open, paying or failed (`CLAIM_NOT_DISPUTABLE`), a second open dispute (`DISPUTE_EXISTS`), a
//! decided or expired dispute (`DISPUTE_CLOSED`), an arbitrator who is a party
//! (`403 NOT_INDEPENDENT`), `pay` with no coverage left (`COVERAGE_EXHAUSTED`), `pay` with no
//! Hydra configured (`503 HYDRA_NOT_CONFIGURED`).

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use oa_money::Msat;
use oa_proto::aegis;
use oa_store::{journal, receipt_log};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::{
    bond,
    claim::{self, Started, to_claim},
    error::{AegisError, conflict, corrupt, not_found},
    service::{Aegis, claim as claim_key, complete, new_id},
    uw_store::{self, DisputeRow},
    validate,
    warranty::{TOPIC, validate_id},
};

pub const ARBITRATION_SCHEMA: &str = "oa.aegis.dispute_arbitration_receipt.v1";
pub const OPEN: &str = "open";
pub const UPHELD: &str = "upheld";
pub const OVERTURNED: &str = "overturned";
pub const EXPIRED: &str = "expired";
/// Expired disputes closed per sweep: bounds the work a request does for others.
pub const SWEEP_BATCH: u32 = 100;
/// Who decides an expired dispute.
pub const DEADLINE: &str = "deadline";

#[derive(Serialize)]
struct ArbitrationBody<'a> {
    dispute_id: &'a str,
    claim_id: &'a str,
    outcome: &'static str,
    pay: &'static str,
    provider_at_fault: &'static str,
    decided_by: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bond_drawn_msat: Option<Msat>,
}

fn yes_no(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

fn to_dispute(d: &DisputeRow) -> aegis::Dispute {
    aegis::Dispute {
        dispute_id: d.dispute_id.clone(),
        claim_id: d.claim_id.clone(),
        opened_by: d.opened_by.clone(),
        reason: d.reason.clone(),
        state: d.state.clone(),
        deadline_at_ms: d.deadline_at_ms,
        decided_by: d.decided_by.clone().unwrap_or_default(),
        decision_reason: d.decision_reason.clone().unwrap_or_default(),
        pay: d.pay.unwrap_or(false),
        provider_at_fault: d.provider_at_fault.unwrap_or(false),
        created_at_ms: d.created_at_ms,
        updated_at_ms: d.updated_at_ms,
    }
}

impl Aegis {
    /// Closes open disputes whose deadline passed (the default: the resolution stands).
    pub async fn expire_disputes(&self) -> Result<u32, AegisError> {
        let now = self.clock.now_ms();
        let due = uw_store::due_disputes(&mut *self.conn().await?, now, SWEEP_BATCH).await?;
        let mut closed = 0;
        for id in due {
            let mut tx = self.db.begin().await?;
            let Some(d) = uw_store::get_dispute(&mut tx, &id).await? else {
                continue;
            };
            if d.state != OPEN || d.deadline_at_ms > now {
                continue;
            }
            if self
                .close_in(
                    &mut tx,
                    &d,
                    EXPIRED,
                    DEADLINE,
                    "the deadline passed undecided",
                    false,
                    false,
                    None,
                    &format!("{id}:expired"),
                    now,
                )
                .await?
            {
                tx.commit().await?;
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// Starts the background sweep of expired disputes: every `every`, [`Aegis::expire_disputes`]
    /// closes up to [`SWEEP_BATCH`] of them (a larger backlog drains over the next ticks). It
    /// holds only a weak reference, so it ends when the service is dropped or its database
    /// closed; a failed sweep is logged and retried on the next tick.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = every.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { break };
                if this.db.pool().is_closed() {
                    break;
                }
                match this.expire_disputes().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(closed = n, "expired disputes closed by the sweeper"),
                    Err(e) => tracing::warn!("dispute expiry sweep failed, will retry: {e}"),
                }
            }
        });
    }

    /// `open -> to` with the arbitration receipt, in the caller's transaction; `false` when the
    /// dispute was closed meanwhile.
    #[allow(clippy::too_many_arguments)]
    async fn close_in(
        &self,
        conn: &mut AnyConnection,
        d: &DisputeRow,
        to: &'static str,
        decided_by: &str,
        reason: &str,
        pay: bool,
        provider_at_fault: bool,
        drawn: Option<Msat>,
        idempotency_key: &str,
        now_ms: u64,
    ) -> Result<bool, AegisError> {
        let c = uw_store::get_claim(conn, &d.claim_id)
            .await?
            .ok_or_else(|| corrupt("a dispute's claim is missing"))?;
        let links = c
            .resolution_receipt_hash
            .as_deref()
            .map(oa_receipts::Hash::parse)
            .transpose()
            .map_err(|_| corrupt("stored claim receipt hash"))?
            .into_iter()
            .collect();
        let receipt = self
            .receipt(
                conn,
                ARBITRATION_SCHEMA,
                idempotency_key,
                links,
                &ArbitrationBody {
                    dispute_id: &d.dispute_id,
                    claim_id: &d.claim_id,
                    outcome: to,
                    pay: yes_no(pay),
                    provider_at_fault: yes_no(provider_at_fault),
                    decided_by,
                    bond_drawn_msat: drawn,
                },
                now_ms,
            )
            .await?;
        if !uw_store::decide_dispute(
            conn,
            &d.dispute_id,
            to,
            decided_by,
            reason,
            pay,
            provider_at_fault,
            &receipt.hash.to_string(),
            now_ms,
        )
        .await?
        {
            return Ok(false);
        }
        journal::append(
            conn,
            TOPIC,
            "dispute_closed",
            &serde_json::json!({"dispute_id": d.dispute_id, "claim_id": d.claim_id, "outcome": to}),
            now_ms,
        )
        .await?;
        Ok(true)
    }

    /// `POST /v1/aegis/dispute/open`.
    pub async fn open_dispute(
        &self,
        caller: &str,
        req: aegis::OpenDisputeRequest,
    ) -> Result<aegis::DisputeResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        validate_id("INVALID_CLAIM_ID", "claim_id", &req.claim_id)?;
        validate::text(
            "INVALID_REASON",
            "reason",
            &req.reason,
            1,
            validate::MAX_REASON_LEN,
        )?;
        self.expire_disputes().await?;
        let now = self.clock.now_ms();
        let scope = format!("aegis.dispute.open/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(replay) =
            claim_key(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(replay);
        }
        let c = uw_store::get_claim(&mut tx, &req.claim_id)
            .await?
            .ok_or_else(|| not_found("CLAIM_NOT_FOUND", "no such claim"))?;
        if c.state != claim::DENIED && c.state != claim::PAID {
            return Err(conflict(
                "CLAIM_NOT_DISPUTABLE",
                format!("a {} claim cannot be disputed", c.state),
            ));
        }
        if uw_store::open_disputes_of(&mut tx, &c.claim_id).await? > 0 {
            return Err(conflict("DISPUTE_EXISTS", "the claim has an open dispute"));
        }
        let row = DisputeRow {
            dispute_id: new_id("dsp"),
            claim_id: c.claim_id.clone(),
            opened_by: caller.to_owned(),
            reason: req.reason.clone(),
            state: OPEN.into(),
            deadline_at_ms: now.saturating_add(self.settings.dispute_window_ms),
            decided_by: None,
            decision_reason: None,
            pay: None,
            provider_at_fault: None,
            receipt_hash: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        uw_store::insert_dispute(&mut tx, &row).await?;
        journal::append(
            &mut tx,
            TOPIC,
            "dispute_opened",
            &serde_json::json!({"dispute_id": row.dispute_id, "claim_id": c.claim_id}),
            now,
        )
        .await?;
        let response = aegis::DisputeResponse {
            dispute: Some(to_dispute(&row)),
            receipt: None,
            claim: Some(to_claim(&c)),
        };
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `POST /v1/aegis/dispute/arbitrate`.
    pub async fn arbitrate(
        &self,
        caller: &str,
        req: aegis::ArbitrateDisputeRequest,
    ) -> Result<aegis::DisputeResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        validate_id("INVALID_DISPUTE_ID", "dispute_id", &req.dispute_id)?;
        validate::text(
            "INVALID_REASON",
            "reason",
            &req.reason,
            1,
            validate::MAX_REASON_LEN,
        )?;
        self.expire_disputes().await?;
        let now = self.clock.now_ms();
        let scope = format!("aegis.dispute.arbitrate/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if claim_key::<serde_json::Value>(&mut tx, &scope, &req.idempotency_key, &fingerprint, now)
            .await?
            .is_some()
        {
            drop(tx);
            return self.dispute_response(&req.dispute_id, true).await;
        }
        let d = uw_store::get_dispute(&mut tx, &req.dispute_id)
            .await?
            .ok_or_else(|| not_found("DISPUTE_NOT_FOUND", "no such dispute"))?;
        if d.state != OPEN || now >= d.deadline_at_ms {
            return Err(conflict(
                "DISPUTE_CLOSED",
                format!(
                    "the dispute is {}",
                    if d.state == OPEN { EXPIRED } else { &d.state }
                ),
            ));
        }
        let c = uw_store::get_claim(&mut tx, &d.claim_id)
            .await?
            .ok_or_else(|| corrupt("a dispute's claim is missing"))?;
        if caller == d.opened_by || caller == c.claimant || c.resolved_by.as_deref() == Some(caller)
        {
            return Err(AegisError::Forbidden {
                code: "NOT_INDEPENDENT",
                message: "the arbitrator cannot be a party to the dispute or the claim".into(),
            });
        }
        let mut paying = false;
        let mut drawn = None;
        if c.state == claim::DENIED && req.pay {
            if !self.payer.configured() {
                return Err(AegisError::Unavailable {
                    code: "HYDRA_NOT_CONFIGURED".into(),
                    message: "aegis has no --hydra-url; claims cannot be paid".into(),
                });
            }
            let w = uw_store::get_warranty(&mut tx, &c.warranty_id)
                .await?
                .ok_or_else(|| corrupt("a claim's warranty is missing"))?;
            let started = self
                .start_payout(
                    &mut tx,
                    &c,
                    &w,
                    claim::DENIED,
                    req.provider_at_fault,
                    caller,
                    &req.idempotency_key,
                    now,
                )
                .await?;
            paying = matches!(started, Started::Paying);
        } else if c.state == claim::PAID && req.provider_at_fault && !c.provider_at_fault {
            uw_store::set_fault(&mut tx, &c.claim_id, now).await?;
            let payout = c
                .payout
                .ok_or_else(|| corrupt("a paid claim without its payout"))?;
            drawn = bond::draw_in(&mut tx, &c.warranty_id, payout, now)
                .await?
                .map(|b| b.drawn);
        }
        let changed = paying
            || drawn.is_some()
            || (c.state == claim::PAID && req.provider_at_fault && !c.provider_at_fault);
        let outcome = if changed { OVERTURNED } else { UPHELD };
        if !self
            .close_in(
                &mut tx,
                &d,
                outcome,
                caller,
                &req.reason,
                req.pay,
                req.provider_at_fault,
                drawn,
                &req.idempotency_key,
                now,
            )
            .await?
        {
            return Err(conflict(
                "DISPUTE_CLOSED",
                "the dispute was closed meanwhile",
            ));
        }
        complete(
            &mut tx,
            &scope,
            &req.idempotency_key,
            &serde_json::json!({"dispute_id": d.dispute_id}),
            now,
        )
        .await?;
        tx.commit().await?;
        if paying {
            self.drive(&c.claim_id, true).await?;
        }
        self.dispute_response(&d.dispute_id, false).await
    }

    /// A dispute, its receipt and its claim; with `redrive`, a payout it started that is still
    /// in flight is driven again first.
    async fn dispute_response(
        &self,
        dispute_id: &str,
        redrive: bool,
    ) -> Result<aegis::DisputeResponse, AegisError> {
        let mut conn = self.conn().await?;
        let d = uw_store::get_dispute(&mut conn, dispute_id)
            .await?
            .ok_or_else(|| not_found("DISPUTE_NOT_FOUND", "no such dispute"))?;
        drop(conn);
        let claim = if redrive {
            self.drive(&d.claim_id, false).await?
        } else {
            self.claim_response(&d.claim_id, None).await?
        };
        let mut conn = self.conn().await?;
        let receipt = receipt_log::get_stored(&mut conn, d.receipt_hash.as_deref()).await?;
        Ok(aegis::DisputeResponse {
            dispute: Some(to_dispute(&d)),
            receipt: receipt.as_ref().map(oa_service::receipts::to_proto),
            claim: claim.claim,
        })
    }

    /// `GET /v1/aegis/dispute/{id}`.
    pub async fn get_dispute(&self, id: &str) -> Result<aegis::DisputeResponse, AegisError> {
        validate_id("INVALID_DISPUTE_ID", "dispute id", id)?;
        self.dispute_response(id, false).await
    }
}
