//! Claims against a warranty, paid to the claimant's BOLT11 invoice through Hydra exactly once.
//!
//! **State machine** (each step a guarded `UPDATE` of the claim's row, with one receipt):
//!
//! ```text
//! (new) --open: beneficiary, before expiry, within the coverage left--> open      (claim_open)
//! open --resolve DENY (reason code)------------------------------------> denied    (claim_resolution)
//! open --resolve PAY, no coverage left for the invoice-----------------> denied COVERAGE_EXHAUSTED
//! open --resolve PAY---------------------------------------------------> paying
//! denied --an arbitrator decides it must be paid (crate::dispute)------> paying
//! paying --Hydra paid it------------------------------------------------> paid      (claim_resolution, links Hydra's invoice_pay)
//! paying --Hydra refused or the payment failed-------------------------> payment_failed (claim_resolution)
//! ```
//!
//! **Exactly once.** `open -> paying` is one guarded update: of any number of concurrent
//! resolves one wins, the others get `409 CLAIM_NOT_OPEN`. The move to `paying` also reserves the
//! payout (`min(requested, coverage left)`) as a pending ledger debit of `reserve:<warranty>`,
//! so concurrent claims of one warranty cannot together exceed its coverage. The payment is then
//! driven outside the transaction by whoever holds the claim's lease (the winner; later, any
//! resolve of a `paying` claim whose lease ran out, e.g. after a crash): `quote_pay` and `pay`
//! with idempotency keys derived from the claim, so Hydra answers a re-driven payment with the
//! same quote and the same payment, never a second one (and Hydra pays a payment hash at most
//! once). Paid: the pending payout is posted, the routing fee booked, the provider's bond drawn
//! when the resolver found the provider at fault ([`crate::bond::draw_in`]) and the receipt
//! links Hydra's `oa.hydra.invoice_pay_receipt.v1` (its signature, schema, payment hash, amount
//! and status checked first). Failed: the pending payout is voided; the claimant may open a new
//! claim with a new invoice. An unknown outcome (Hydra unreachable, payment in flight) leaves the
//! claim `paying`; resolving it again re-drives it.
//!
//! Refusals: unknown warranty or claim (`WARRANTY_NOT_FOUND`, `CLAIM_NOT_FOUND`), not the
//! beneficiary (`403 NOT_BENEFICIARY`), expired warranty (`WARRANTY_EXPIRED`), more than the
//! coverage left (`COVERAGE_EXCEEDED`), an invoice already claimed (`INVOICE_ALREADY_CLAIMED`),
//! a bad or expired invoice or one for another amount (`INVALID_INVOICE`, `INVOICE_EXPIRED`,
//! `INVOICE_AMOUNT_MISMATCH`), a resolve by the claimant (`403 NOT_INDEPENDENT`), a resolve of a
//! claim that is not open (`CLAIM_NOT_OPEN`), no Hydra configured (`503 HYDRA_NOT_CONFIGURED`).

use oa_ledger::NewTransfer;
use oa_money::Msat;
use oa_proto::{aegis, hydra};
use oa_receipts::Receipt;
use oa_store::{journal, receipt_log};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::{
    bond::{self, to_bond},
    book,
    error::{AegisError, conflict, corrupt, invalid, not_found},
    service::{Aegis, claim, complete, new_id},
    uw_store::{self, ClaimRow, WarrantyRow},
    validate,
    warranty::{TOPIC, validate_id},
};

pub const OPEN_SCHEMA: &str = "oa.aegis.claim_open_receipt.v1";
pub const RESOLUTION_SCHEMA: &str = "oa.aegis.claim_resolution_receipt.v1";
/// Hydra's receipt for a paid invoice (what a paid claim links).
pub const HYDRA_PAY_SCHEMA: &str = "oa.hydra.invoice_pay_receipt.v1";

pub const OPEN: &str = "open";
pub const PAYING: &str = "paying";
pub const PAID: &str = "paid";
pub const PAYMENT_FAILED: &str = "payment_failed";
pub const DENIED: &str = "denied";

/// Reason codes a resolver may deny a claim with.
pub const DENY_REASONS: [&str; 5] = [
    "NOT_COVERED",
    "EVIDENCE_INSUFFICIENT",
    "WARRANTY_EXPIRED",
    "FRAUD_SUSPECTED",
    "OTHER",
];
/// Longest claim evidence (a description and references; artifacts stay with the claimant).
pub const MAX_EVIDENCE_LEN: usize = 4_096;
/// How long the driver of a payout holds it before another resolve may re-drive it: longer than
/// two Hydra calls (2 x 45 s) so a slow but live driver is never doubled.
pub const PAYOUT_LEASE_MS: u64 = 120_000;
/// Routing fee limit of a payout: 1 % of it (ppm), at least [`MIN_FEE_LIMIT_MSAT`].
pub const PAYOUT_FEE_PPM: u32 = 10_000;
pub const MIN_FEE_LIMIT_MSAT: u64 = 10_000;

#[derive(Serialize)]
struct OpenBody<'a> {
    claim_id: &'a str,
    warranty_id: &'a str,
    claimant: &'a str,
    requested_msat: Msat,
    payment_hash: &'a str,
    evidence_sha256: String,
}

#[derive(Serialize)]
struct ResolutionBody<'a> {
    claim_id: &'a str,
    warranty_id: &'a str,
    status: &'static str,
    payment_hash: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_msat: Option<Msat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fee_msat: Option<Msat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<&'a str>,
    provider_at_fault: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hydra_receipt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bond_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bond_drawn_msat: Option<Msat>,
    resolved_by: &'a str,
}

fn yes_no(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

pub(crate) fn to_claim(c: &ClaimRow) -> aegis::Claim {
    aegis::Claim {
        claim_id: c.claim_id.clone(),
        warranty_id: c.warranty_id.clone(),
        claimant: c.claimant.clone(),
        requested_msat: c.requested.as_u64(),
        invoice: c.invoice.clone(),
        payment_hash: c.payment_hash.clone(),
        evidence: c.evidence.clone(),
        state: c.state.clone(),
        payout_msat: c.payout.map_or(0, Msat::as_u64),
        fee_msat: c.fee.map_or(0, Msat::as_u64),
        provider_at_fault: c.provider_at_fault,
        reason_code: c.reason_code.clone().unwrap_or_default(),
        reason: c.reason.clone().unwrap_or_default(),
        resolved_by: c.resolved_by.clone().unwrap_or_default(),
        created_at_ms: c.created_at_ms,
        updated_at_ms: c.updated_at_ms,
        hydra_receipt_hash: c.hydra_receipt_hash.clone().unwrap_or_default(),
    }
}

fn payout_id(c: &ClaimRow) -> String {
    format!("{}:payout:{}", c.claim_id, c.attempt)
}

/// What a claim resolution started in a transaction asks the caller to do after commit.
pub(crate) enum Started {
    /// The claim is `paying`: drive the payment (the caller holds the lease).
    Paying,
    /// No coverage is left for this invoice: the claim was denied `COVERAGE_EXHAUSTED`.
    Exhausted,
}

fn fee_limit(payout: Msat) -> u64 {
    payout
        .ppm_ceil(PAYOUT_FEE_PPM)
        .map_or(u64::MAX, Msat::as_u64)
        .max(MIN_FEE_LIMIT_MSAT)
}

impl Aegis {
    /// `POST /v1/aegis/claim/open`.
    pub async fn open_claim(
        &self,
        caller: &str,
        req: aegis::OpenClaimRequest,
    ) -> Result<aegis::ClaimResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        validate_id("INVALID_WARRANTY_ID", "warranty_id", &req.warranty_id)?;
        let requested = validate::msat("INVALID_AMOUNT", "requested_msat", req.requested_msat)?;
        if requested.is_zero() {
            return Err(invalid("INVALID_AMOUNT", "requested_msat must be positive"));
        }
        validate::text(
            "INVALID_EVIDENCE",
            "evidence",
            &req.evidence,
            1,
            MAX_EVIDENCE_LEN,
        )?;
        let invoice = oa_invoice::decode(&req.invoice)
            .map_err(|e| invalid("INVALID_INVOICE", format!("invoice: {e}")))?;
        if let Some(a) = invoice.amount
            && a != requested
        {
            return Err(invalid(
                "INVOICE_AMOUNT_MISMATCH",
                "the invoice must be amountless or for exactly requested_msat",
            ));
        }
        let now = self.clock.now_ms();
        if invoice.expires_at_ms <= now {
            return Err(invalid("INVOICE_EXPIRED", "the invoice has expired"));
        }
        let payment_hash = invoice.payment_hash.to_hex();

        let scope = format!("aegis.claim.open/{caller}");
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
        if w.beneficiary != caller {
            return Err(AegisError::Forbidden {
                code: "NOT_BENEFICIARY",
                message: "only the warranty's beneficiary may claim".into(),
            });
        }
        if now >= w.expires_at_ms {
            return Err(conflict("WARRANTY_EXPIRED", "the warranty has expired"));
        }
        let left = book::available(&mut tx, &book::reserve(&w.warranty_id)).await?;
        if requested > left {
            return Err(conflict(
                "COVERAGE_EXCEEDED",
                format!(
                    "requested {} msat but {} msat of coverage is left",
                    requested.as_u64(),
                    left.as_u64()
                ),
            ));
        }
        let claim_id = new_id("clm");
        let receipt = self
            .receipt(
                &mut tx,
                OPEN_SCHEMA,
                &req.idempotency_key,
                vec![],
                &OpenBody {
                    claim_id: &claim_id,
                    warranty_id: &w.warranty_id,
                    claimant: caller,
                    requested_msat: requested,
                    payment_hash: &payment_hash,
                    evidence_sha256: oa_receipts::Hash::of(req.evidence.as_bytes()).to_string(),
                },
                now,
            )
            .await?;
        let row = ClaimRow {
            claim_id: claim_id.clone(),
            warranty_id: w.warranty_id.clone(),
            claimant: caller.to_owned(),
            requested,
            invoice: req.invoice.clone(),
            payment_hash,
            invoice_amount: invoice.amount,
            evidence: req.evidence.clone(),
            state: OPEN.into(),
            payout: None,
            fee: None,
            provider_at_fault: false,
            reason_code: None,
            reason: None,
            resolved_by: None,
            attempt: 0,
            lease_until_ms: 0,
            hydra_receipt_hash: None,
            open_receipt_hash: receipt.hash.to_string(),
            resolution_receipt_hash: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        if !uw_store::insert_claim(&mut tx, &row).await? {
            return Err(conflict(
                "INVOICE_ALREADY_CLAIMED",
                "a claim with this invoice's payment hash exists",
            ));
        }
        journal::append(
            &mut tx,
            TOPIC,
            "claim_opened",
            &serde_json::json!({"claim_id": claim_id, "warranty_id": w.warranty_id,
                "requested_msat": requested.as_u64().to_string()}),
            now,
        )
        .await?;
        let response = aegis::ClaimResponse {
            claim: Some(to_claim(&row)),
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
            hydra_receipt: None,
            bond: None,
        };
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `POST /v1/aegis/claim/resolve`.
    pub async fn resolve_claim(
        &self,
        caller: &str,
        req: aegis::ResolveClaimRequest,
    ) -> Result<aegis::ClaimResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        validate_id("INVALID_CLAIM_ID", "claim_id", &req.claim_id)?;
        let decision: aegis::ClaimDecision =
            validate::enum_value("INVALID_DECISION", "decision", req.decision)?;
        validate::text(
            "INVALID_REASON",
            "reason",
            &req.reason,
            0,
            validate::MAX_REASON_LEN,
        )?;
        let pay = match decision {
            aegis::ClaimDecision::Pay => {
                if !req.reason_code.is_empty() {
                    return Err(invalid(
                        "INVALID_REASON_CODE",
                        "reason_code is only for DENY",
                    ));
                }
                true
            }
            aegis::ClaimDecision::Deny => {
                if !DENY_REASONS.contains(&req.reason_code.as_str()) {
                    return Err(invalid(
                        "INVALID_REASON_CODE",
                        format!("a denial needs a reason_code of {DENY_REASONS:?}"),
                    ));
                }
                if req.provider_at_fault {
                    return Err(invalid(
                        "INVALID_DECISION",
                        "provider_at_fault applies only to a paid claim",
                    ));
                }
                false
            }
            aegis::ClaimDecision::Unspecified => {
                return Err(invalid(
                    "INVALID_DECISION",
                    "decision must be CLAIM_DECISION_PAY or CLAIM_DECISION_DENY",
                ));
            }
        };
        if pay && !self.payer.configured() {
            return Err(AegisError::Unavailable {
                code: "HYDRA_NOT_CONFIGURED".into(),
                message: "aegis has no --hydra-url; claims cannot be paid".into(),
            });
        }
        let now = self.clock.now_ms();
        let scope = format!("aegis.claim.resolve/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if claim::<serde_json::Value>(&mut tx, &scope, &req.idempotency_key, &fingerprint, now)
            .await?
            .is_some()
        {
            drop(tx);
            return self.drive(&req.claim_id, false).await;
        }
        let c = uw_store::get_claim(&mut tx, &req.claim_id)
            .await?
            .ok_or_else(|| not_found("CLAIM_NOT_FOUND", "no such claim"))?;
        if c.claimant == caller {
            return Err(AegisError::Forbidden {
                code: "NOT_INDEPENDENT",
                message: "the claimant cannot resolve its own claim".into(),
            });
        }
        let marker = serde_json::json!({"claim_id": c.claim_id});
        if c.state == PAYING {
            // Resolving a claim being paid re-drives its payment (module docs).
            complete(&mut tx, &scope, &req.idempotency_key, &marker, now).await?;
            tx.commit().await?;
            return self.drive(&c.claim_id, false).await;
        }
        if c.state != OPEN {
            return Err(conflict(
                "CLAIM_NOT_OPEN",
                format!("the claim is {}", c.state),
            ));
        }
        let w = uw_store::get_warranty(&mut tx, &c.warranty_id)
            .await?
            .ok_or_else(|| corrupt("a claim's warranty is missing"))?;
        let paying = if pay {
            matches!(
                self.start_payout(
                    &mut tx,
                    &c,
                    &w,
                    OPEN,
                    req.provider_at_fault,
                    caller,
                    &req.idempotency_key,
                    now
                )
                .await?,
                Started::Paying
            )
        } else {
            self.deny_in(
                &mut tx,
                &c,
                OPEN,
                &req.reason_code,
                &req.reason,
                caller,
                &req.idempotency_key,
                now,
            )
            .await?;
            false
        };
        complete(&mut tx, &scope, &req.idempotency_key, &marker, now).await?;
        tx.commit().await?;
        if paying {
            self.drive(&c.claim_id, true).await
        } else {
            self.claim_response(&c.claim_id, None).await
        }
    }

    /// `from -> denied` with its receipt, in the caller's transaction.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn deny_in(
        &self,
        conn: &mut AnyConnection,
        c: &ClaimRow,
        from: &str,
        reason_code: &str,
        reason: &str,
        resolver: &str,
        idempotency_key: &str,
        now_ms: u64,
    ) -> Result<(), AegisError> {
        let receipt = self
            .receipt(
                conn,
                RESOLUTION_SCHEMA,
                idempotency_key,
                vec![],
                &ResolutionBody {
                    claim_id: &c.claim_id,
                    warranty_id: &c.warranty_id,
                    status: DENIED,
                    payment_hash: &c.payment_hash,
                    amount_msat: None,
                    fee_msat: None,
                    reason_code: Some(reason_code),
                    provider_at_fault: yes_no(false),
                    hydra_receipt: None,
                    bond_id: None,
                    bond_drawn_msat: None,
                    resolved_by: resolver,
                },
                now_ms,
            )
            .await?;
        if !uw_store::finish_claim(
            conn,
            &c.claim_id,
            from,
            DENIED,
            None,
            Some(reason_code),
            Some(reason),
            resolver,
            None,
            &receipt.hash.to_string(),
            now_ms,
        )
        .await?
        {
            return Err(conflict("CLAIM_NOT_OPEN", "the claim changed meanwhile"));
        }
        journal::append(
            conn,
            TOPIC,
            "claim_denied",
            &serde_json::json!({"claim_id": c.claim_id, "reason_code": reason_code}),
            now_ms,
        )
        .await?;
        Ok(())
    }

    /// `from -> paying`: reserves the payout from the warranty's coverage (or denies the claim
    /// `COVERAGE_EXHAUSTED` when none is left for its invoice, if `from` is open). The caller
    /// commits, then drives the payment with the lease this took.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start_payout(
        &self,
        conn: &mut AnyConnection,
        c: &ClaimRow,
        w: &WarrantyRow,
        from: &str,
        provider_at_fault: bool,
        resolver: &str,
        idempotency_key: &str,
        now_ms: u64,
    ) -> Result<Started, AegisError> {
        let left = book::available(conn, &book::reserve(&w.warranty_id)).await?;
        let payout = c.requested.min(left);
        let fixed_too_large = c.invoice_amount.is_some_and(|a| a > payout);
        if payout.is_zero() || fixed_too_large {
            if from != OPEN {
                return Err(conflict(
                    "COVERAGE_EXHAUSTED",
                    "the warranty has no coverage left for this claim's invoice",
                ));
            }
            self.deny_in(
                conn,
                c,
                from,
                "COVERAGE_EXHAUSTED",
                "no coverage left for this claim's invoice",
                resolver,
                idempotency_key,
                now_ms,
            )
            .await?;
            return Ok(Started::Exhausted);
        }
        let lease = now_ms.saturating_add(PAYOUT_LEASE_MS);
        if !uw_store::start_paying(
            conn,
            &c.claim_id,
            from,
            payout,
            provider_at_fault,
            resolver,
            lease,
            now_ms,
        )
        .await?
        {
            return Err(conflict("CLAIM_NOT_OPEN", "the claim changed meanwhile"));
        }
        let c = uw_store::get_claim(conn, &c.claim_id)
            .await?
            .ok_or_else(|| corrupt("a paying claim disappeared"))?;
        book::apply(
            conn,
            &[NewTransfer::pending(
                payout_id(&c),
                book::reserve(&w.warranty_id),
                book::CLAIMS_PAID,
                payout,
                book::LEDGER_MSAT,
                book::T_PAYOUT,
                None,
            )],
            now_ms,
        )
        .await?
        .map_err(|e| match e {
            oa_ledger::TransferError::ExceedsCredits => conflict(
                "COVERAGE_EXHAUSTED",
                "the warranty's coverage was taken by another claim meanwhile",
            ),
            e => book::refused("the payout reservation", e),
        })?;
        journal::append(
            conn,
            TOPIC,
            "claim_paying",
            &serde_json::json!({"claim_id": c.claim_id, "payout_msat": payout.as_u64().to_string()}),
            now_ms,
        )
        .await?;
        Ok(Started::Paying)
    }

    /// Drives the payout of a `paying` claim (module docs). Without `have_lease` it first takes
    /// the lease, and answers the claim as it stands when another driver holds it.
    pub(crate) async fn drive(
        &self,
        claim_id: &str,
        have_lease: bool,
    ) -> Result<aegis::ClaimResponse, AegisError> {
        let now = self.clock.now_ms();
        let c = {
            let mut tx = self.db.begin().await?;
            let c = uw_store::get_claim(&mut tx, claim_id)
                .await?
                .ok_or_else(|| not_found("CLAIM_NOT_FOUND", "no such claim"))?;
            if c.state != PAYING {
                drop(tx);
                return self.claim_response(claim_id, None).await;
            }
            if !have_lease
                && !uw_store::take_lease(
                    &mut tx,
                    claim_id,
                    now.saturating_add(PAYOUT_LEASE_MS),
                    now,
                )
                .await?
            {
                drop(tx);
                return self.claim_response(claim_id, None).await;
            }
            tx.commit().await?;
            c
        };
        let payout = c
            .payout
            .ok_or_else(|| corrupt("a paying claim without its payout"))?;
        let quote = self
            .payer
            .quote_pay(hydra::QuotePayRequest {
                idempotency_key: format!("aegis-{}-quote-{}", c.claim_id, c.attempt),
                invoice: c.invoice.clone(),
                amount_msat: if c.invoice_amount.is_some() {
                    0
                } else {
                    payout.as_u64()
                },
                max_fee_msat: fee_limit(payout),
                payer_ref: format!("aegis:{}", c.claim_id),
            })
            .await;
        let quote = match quote {
            Ok(q) => q
                .quote
                .ok_or_else(|| corrupt("hydra's quote answer without a quote"))?,
            Err(e) if e.retryable => return self.unknown_outcome(&c, &e.code).await,
            Err(e) => return self.payment_failed(&c, &e.code, &e.message).await,
        };
        let paid = self
            .payer
            .pay(hydra::PayRequest {
                idempotency_key: format!("aegis-{}-pay-{}", c.claim_id, c.attempt),
                quote_id: quote.quote_id.clone(),
            })
            .await;
        match paid {
            Err(e) if e.retryable => self.unknown_outcome(&c, &e.code).await,
            Err(e) => self.payment_failed(&c, &e.code, &e.message).await,
            Ok(resp) => {
                let state = resp
                    .quote
                    .as_ref()
                    .map_or(hydra::QuoteState::Unspecified, |q| q.state());
                match state {
                    hydra::QuoteState::Paid => self.payment_succeeded(&c, payout, resp).await,
                    hydra::QuoteState::Failed => {
                        let code = if resp.failure_code.is_empty() {
                            "PAYMENT_FAILED".to_owned()
                        } else {
                            resp.failure_code.clone()
                        };
                        self.payment_failed(&c, &code, &resp.failure_reason).await
                    }
                    _ => self.unknown_outcome(&c, "PAYMENT_IN_FLIGHT").await,
                }
            }
        }
    }

    /// The outcome is unknown: the claim stays `paying` and its lease is given back, so the next
    /// resolve re-drives it with the same keys.
    async fn unknown_outcome(
        &self,
        c: &ClaimRow,
        code: &str,
    ) -> Result<aegis::ClaimResponse, AegisError> {
        tracing::warn!(claim_id = %c.claim_id, code, "claim payout outcome unknown; it stays paying");
        let mut tx = self.db.begin().await?;
        uw_store::release_lease(&mut tx, &c.claim_id).await?;
        tx.commit().await?;
        self.claim_response(&c.claim_id, None).await
    }

    async fn payment_failed(
        &self,
        c: &ClaimRow,
        code: &str,
        message: &str,
    ) -> Result<aegis::ClaimResponse, AegisError> {
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        book::apply(
            &mut tx,
            &[NewTransfer::void(
                format!("{}:void:{}", c.claim_id, c.attempt),
                payout_id(c),
            )],
            now,
        )
        .await?
        .map_err(|e| book::refused("the payout void", e))?;
        let resolver = c.resolved_by.clone().unwrap_or_default();
        let code = code.chars().take(64).collect::<String>();
        let receipt = self
            .receipt(
                &mut tx,
                RESOLUTION_SCHEMA,
                &format!("{}:{}", c.claim_id, PAYMENT_FAILED),
                vec![],
                &ResolutionBody {
                    claim_id: &c.claim_id,
                    warranty_id: &c.warranty_id,
                    status: PAYMENT_FAILED,
                    payment_hash: &c.payment_hash,
                    amount_msat: None,
                    fee_msat: None,
                    reason_code: Some(&code),
                    provider_at_fault: yes_no(c.provider_at_fault),
                    hydra_receipt: None,
                    bond_id: None,
                    bond_drawn_msat: None,
                    resolved_by: &resolver,
                },
                now,
            )
            .await?;
        let reason = message
            .chars()
            .take(validate::MAX_REASON_LEN)
            .collect::<String>();
        if !uw_store::finish_claim(
            &mut tx,
            &c.claim_id,
            PAYING,
            PAYMENT_FAILED,
            None,
            Some(&code),
            Some(&reason),
            &resolver,
            None,
            &receipt.hash.to_string(),
            now,
        )
        .await?
        {
            drop(tx);
            return self.claim_response(&c.claim_id, None).await;
        }
        journal::append(
            &mut tx,
            TOPIC,
            "claim_payment_failed",
            &serde_json::json!({"claim_id": c.claim_id, "code": code}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.claim_response(&c.claim_id, None).await
    }

    async fn payment_succeeded(
        &self,
        c: &ClaimRow,
        payout: Msat,
        resp: hydra::PayResponse,
    ) -> Result<aegis::ClaimResponse, AegisError> {
        let proto = resp
            .receipt
            .as_ref()
            .ok_or_else(|| corrupt("hydra paid without its receipt"))?;
        let hydra_receipt = check_hydra_receipt(proto, c, payout)?;
        let fee = Msat::new(resp.fee_msat).map_err(|_| corrupt("hydra's fee is out of range"))?;
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        book::apply(
            &mut tx,
            &[NewTransfer::post(
                format!("{}:paid:{}", c.claim_id, c.attempt),
                payout_id(c),
                None,
            )],
            now,
        )
        .await?
        .map_err(|e| book::refused("the payout post", e))?;
        if !fee.is_zero() {
            book::apply(
                &mut tx,
                &[NewTransfer::single(
                    format!("{}:fee:{}", c.claim_id, c.attempt),
                    book::POOL,
                    book::ROUTING_FEES,
                    fee,
                    book::LEDGER_MSAT,
                    book::T_ROUTING_FEE,
                )],
                now,
            )
            .await?
            .map_err(|e| book::refused("the routing fee", e))?;
        }
        let drawn = if c.provider_at_fault {
            bond::draw_in(&mut tx, &c.warranty_id, payout, now).await?
        } else {
            None
        };
        let w = uw_store::get_warranty(&mut tx, &c.warranty_id)
            .await?
            .ok_or_else(|| corrupt("a claim's warranty is missing"))?;
        let paid_out = w
            .paid_out
            .checked_add(payout)
            .map_err(|_| corrupt("paid out overflows"))?;
        if paid_out > w.coverage {
            return Err(corrupt("a warranty paid out more than its coverage"));
        }
        uw_store::add_paid_out(&mut tx, &c.warranty_id, paid_out, now).await?;
        let resolver = c.resolved_by.clone().unwrap_or_default();
        let hydra_hash = hydra_receipt.hash.to_string();
        let receipt = self
            .receipt(
                &mut tx,
                RESOLUTION_SCHEMA,
                &format!("{}:{}", c.claim_id, PAID),
                vec![hydra_receipt.hash],
                &ResolutionBody {
                    claim_id: &c.claim_id,
                    warranty_id: &c.warranty_id,
                    status: PAID,
                    payment_hash: &c.payment_hash,
                    amount_msat: Some(payout),
                    fee_msat: Some(fee),
                    reason_code: None,
                    provider_at_fault: yes_no(c.provider_at_fault),
                    hydra_receipt: Some(hydra_hash.clone()),
                    bond_id: drawn.as_ref().map(|b| b.bond_id.as_str()),
                    bond_drawn_msat: drawn.as_ref().map(|b| b.drawn),
                    resolved_by: &resolver,
                },
                now,
            )
            .await?;
        if !uw_store::finish_claim(
            &mut tx,
            &c.claim_id,
            PAYING,
            PAID,
            Some(fee),
            None,
            None,
            &resolver,
            Some(&hydra_hash),
            &receipt.hash.to_string(),
            now,
        )
        .await?
        {
            // Another driver recorded it first (after a lease ran out): ours rolls back.
            drop(tx);
            return self.claim_response(&c.claim_id, None).await;
        }
        journal::append(
            &mut tx,
            TOPIC,
            "claim_paid",
            &serde_json::json!({"claim_id": c.claim_id, "payout_msat": payout.as_u64().to_string(),
                "receipt_hash": receipt.hash.to_string()}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.claim_response(&c.claim_id, Some(proto.clone())).await
    }

    /// A claim, its latest receipt and its warranty's bond.
    pub(crate) async fn claim_response(
        &self,
        claim_id: &str,
        hydra_receipt: Option<oa_proto::common::Receipt>,
    ) -> Result<aegis::ClaimResponse, AegisError> {
        let mut conn = self.conn().await?;
        let c = uw_store::get_claim(&mut conn, claim_id)
            .await?
            .ok_or_else(|| not_found("CLAIM_NOT_FOUND", "no such claim"))?;
        let hash = c
            .resolution_receipt_hash
            .as_deref()
            .unwrap_or(&c.open_receipt_hash);
        let receipt = receipt_log::get_stored(&mut conn, Some(hash)).await?;
        let bond = uw_store::bond_of_warranty(&mut conn, &c.warranty_id).await?;
        Ok(aegis::ClaimResponse {
            claim: Some(to_claim(&c)),
            receipt: receipt.as_ref().map(oa_service::receipts::to_proto),
            hydra_receipt,
            bond: bond.as_ref().map(to_bond),
        })
    }

    /// `GET /v1/aegis/claim/{id}`.
    pub async fn get_claim(&self, id: &str) -> Result<aegis::ClaimResponse, AegisError> {
        validate_id("INVALID_CLAIM_ID", "claim id", id)?;
        self.claim_response(id, None).await
    }
}

/// Hydra's receipt must be a valid, signed invoice-pay receipt of this claim's payment hash and
/// payout, with status succeeded: only then is the claim recorded as paid and linked to it.
fn check_hydra_receipt(
    proto: &oa_proto::common::Receipt,
    c: &ClaimRow,
    payout: Msat,
) -> Result<Receipt, AegisError> {
    let bad = |what: &str| {
        corrupt(format!(
            "hydra's receipt for claim {} is not acceptable: {what}",
            c.claim_id
        ))
    };
    let r = oa_service::receipts::from_proto(proto).map_err(|e| bad(&e))?;
    r.verify().map_err(|e| bad(&e.to_string()))?;
    let field = |k: &str| r.body.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if r.schema != HYDRA_PAY_SCHEMA {
        return Err(bad("another schema"));
    }
    if field("payment_hash") != c.payment_hash {
        return Err(bad("another payment hash"));
    }
    if field("status") != "succeeded" {
        return Err(bad("not succeeded"));
    }
    if field("amount_msat") != payout.as_u64().to_string() {
        return Err(bad("another amount"));
    }
    Ok(r)
}
