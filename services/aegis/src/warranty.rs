//! Warranties: insurance of a verified work unit's outcome, up to a coverage cap until an expiry.
//!
//! **Issue** (`POST /v1/aegis/warranty/issue`) requires a *passed* verification (checked in
//! Aegis's own tables) and is priced by the same rule as a quote ([`crate::pricing`]),
//! recomputed now from the verification's class and tier and the agent's record; when the caller
//! names the total of the quote it accepted and the price moved, the issue is refused
//! (`QUOTE_CHANGED`) rather than charging another price. One warranty per verification.
//! In one transaction: the premium and the verification fee are collected and the coverage is
//! reserved in the ledger (accounts in [`crate::book`]), the warranty row is written and the
//! receipt `oa.aegis.warranty_issue_receipt.v1` (it links the verification's receipt) appended.
//!
//! **States**: `active` until `expires_at_ms`, then `expired` (claims are refused; the coverage
//! left stays in `reserve:<warranty_id>` until an operator returns it to `pool`, see the
//! runbook). Coverage left is the reserve account's available balance: claims being paid hold
//! their payout as a pending debit of it, paid claims post it, so the ledger's no-overdraft flag
//! is what keeps all claims of a warranty within its coverage, under any concurrency.
//!
//! Refusals: unknown verification (`VERIFICATION_NOT_FOUND`), not passed
//! (`VERIFICATION_NOT_PASSED`), a second warranty (`WARRANTY_EXISTS`), coverage above the
//! verified amount or zero (`INVALID_COVERAGE`), expiry not in `(now, now + 365 days]`
//! (`INVALID_EXPIRY`), a moved price (`QUOTE_CHANGED`).

use oa_ledger::NewTransfer;
use oa_money::Msat;
use oa_proto::aegis;
use oa_store::{journal, receipt_log};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::{
    book,
    error::{AegisError, conflict, corrupt, invalid, not_found},
    model::{Class, Tier},
    pricing,
    service::{Aegis, claim, complete, new_id},
    store, uw_store,
    uw_store::WarrantyRow,
    validate,
    verification::{self, State},
};

pub const ISSUE_SCHEMA: &str = "oa.aegis.warranty_issue_receipt.v1";
/// The journal topic of warranty, bond, claim and dispute events.
pub const TOPIC: &str = "aegis.underwriting";
/// Longest warranty: a year covers any work unit's useful life, and bounds the reserve's age.
pub const MAX_WARRANTY_TTL_MS: u64 = 365 * 86_400_000;

#[derive(Serialize)]
struct IssueBody<'a> {
    warranty_id: &'a str,
    verification_id: &'a str,
    verification_receipt: &'a str,
    provider_id: &'a str,
    beneficiary: &'a str,
    coverage_msat: Msat,
    premium_msat: Msat,
    verification_fee_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    expires_at_ms: u64,
    reserve_account: &'a str,
}

pub(crate) fn validate_id(code: &'static str, what: &str, id: &str) -> Result<(), AegisError> {
    validate::id(code, what, id, validate::MAX_ID_LEN)
}

/// The contract message of a stored warranty, with the coverage left as the ledger says.
pub(crate) async fn to_warranty(
    conn: &mut AnyConnection,
    w: &WarrantyRow,
    now_ms: u64,
) -> Result<aegis::Warranty, AegisError> {
    let remaining = book::available(conn, &book::reserve(&w.warranty_id)).await?;
    Ok(aegis::Warranty {
        warranty_id: w.warranty_id.clone(),
        verification_id: w.verification_id.clone(),
        provider_id: w.provider_id.clone(),
        beneficiary: w.beneficiary.clone(),
        coverage_msat: w.coverage.as_u64(),
        remaining_msat: remaining.as_u64(),
        paid_out_msat: w.paid_out.as_u64(),
        verification_fee_msat: w.verification_fee.as_u64(),
        premium_msat: w.premium.as_u64(),
        expires_at_ms: w.expires_at_ms,
        state: if now_ms < w.expires_at_ms {
            "active"
        } else {
            "expired"
        }
        .into(),
        created_at_ms: w.created_at_ms,
        receipt_hash: w.receipt_hash.clone(),
    })
}

impl Aegis {
    /// `POST /v1/aegis/warranty/issue`.
    pub async fn issue_warranty(
        &self,
        caller: &str,
        req: aegis::IssueWarrantyRequest,
    ) -> Result<aegis::WarrantyResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        verification::validate_id(&req.verification_id)?;
        let coverage_req = validate::msat("INVALID_COVERAGE", "coverage_msat", req.coverage_msat)?;
        let quoted = validate::msat("INVALID_QUOTE", "quoted_total_msat", req.quoted_total_msat)?;
        let beneficiary = if req.beneficiary.is_empty() {
            caller.to_owned()
        } else {
            validate_id("INVALID_BENEFICIARY", "beneficiary", &req.beneficiary)?;
            req.beneficiary.clone()
        };
        let now = self.clock.now_ms();
        if req.expires_at_ms <= now || req.expires_at_ms - now > MAX_WARRANTY_TTL_MS {
            return Err(invalid(
                "INVALID_EXPIRY",
                "expires_at_ms must be after now and at most 365 days ahead",
            ));
        }

        let scope = format!("aegis.warranty.issue/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(replay) =
            claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(replay);
        }
        let v = store::get_verification(&mut tx, &req.verification_id)
            .await?
            .ok_or(AegisError::VerificationNotFound)?;
        if State::parse(&v.state) != Some(State::Passed) {
            return Err(conflict(
                "VERIFICATION_NOT_PASSED",
                format!("the verification is {}, not passed", v.state),
            ));
        }
        let coverage = if coverage_req.is_zero() {
            v.amount
        } else {
            coverage_req
        };
        if coverage.is_zero() || coverage > v.amount {
            return Err(invalid(
                "INVALID_COVERAGE",
                "coverage_msat must be positive and at most the verified amount_msat",
            ));
        }
        let class = Class::parse(&v.class).ok_or_else(|| corrupt(format!("class {}", v.class)))?;
        let tier = Tier::parse(&v.tier).ok_or_else(|| corrupt(format!("tier {}", v.tier)))?;
        let since = now.saturating_sub(self.settings.history_window_ms);
        let (record, passed) = store::history(&mut tx, &v.agent_id, None, since).await?;
        let claims = uw_store::paid_claims_of(&mut tx, &v.agent_id).await?;
        let p = pricing::price(&pricing::PriceInputs {
            amount: v.amount,
            coverage,
            class,
            tier,
            decided: record.decided,
            passed,
            claims,
        })
        .map_err(|e| invalid("INVALID_AMOUNT", format!("the price is out of range: {e}")))?;
        if !quoted.is_zero() && quoted != p.total {
            return Err(conflict(
                "QUOTE_CHANGED",
                format!(
                    "the price is {} msat now, not the quoted {} msat; ask for a new quote",
                    p.total.as_u64(),
                    quoted.as_u64()
                ),
            ));
        }
        let quote = aegis::WarrantyQuote {
            verifiability_class: class.to_proto().into(),
            tier: tier.to_proto().into(),
            coverage_msat: coverage.as_u64(),
            verification_fee_msat: p.verification_fee.as_u64(),
            liability_premium_msat: p.premium.as_u64(),
            total_msat: p.total.as_u64(),
            premium_bps: p.premium_bps,
            verified_share_ppm: p.verified_share_ppm,
            decided_count: record.decided,
            claims_count: claims,
            experience_factor_ppm: p.experience_ppm,
            claims_factor_ppm: p.claims_ppm,
            priced_at_ms: now,
        };

        let warranty_id = new_id("wty");
        let reserve = book::reserve(&warranty_id);
        book::ensure_reserve(&mut tx, &warranty_id, now).await?;
        let mut transfers = Vec::new();
        if !p.premium.is_zero() {
            transfers.push(NewTransfer::single(
                format!("{warranty_id}:premium"),
                book::EXTERNAL,
                book::PREMIUMS,
                p.premium,
                book::LEDGER_MSAT,
                book::T_PREMIUM,
            ));
        }
        if !p.verification_fee.is_zero() {
            transfers.push(NewTransfer::single(
                format!("{warranty_id}:fee"),
                book::EXTERNAL,
                book::VERIFICATION_FEES,
                p.verification_fee,
                book::LEDGER_MSAT,
                book::T_FEE,
            ));
        }
        transfers.push(NewTransfer::single(
            format!("{warranty_id}:coverage"),
            book::POOL,
            reserve.as_str(),
            coverage,
            book::LEDGER_MSAT,
            book::T_COVERAGE,
        ));
        book::apply(&mut tx, &book::chain(transfers), now)
            .await?
            .map_err(|e| book::refused("the warranty's transfers", e))?;

        let vreceipt = v
            .receipt_hash
            .as_deref()
            .ok_or_else(|| corrupt("a passed verification without its receipt"))?;
        let vhash = oa_receipts::Hash::parse(vreceipt)
            .map_err(|_| corrupt("stored verification receipt hash"))?;
        let receipt = self
            .receipt(
                &mut tx,
                ISSUE_SCHEMA,
                &req.idempotency_key,
                vec![vhash],
                &IssueBody {
                    warranty_id: &warranty_id,
                    verification_id: &v.verification_id,
                    verification_receipt: vreceipt,
                    provider_id: &v.agent_id,
                    beneficiary: &beneficiary,
                    coverage_msat: coverage,
                    premium_msat: p.premium,
                    verification_fee_msat: p.verification_fee,
                    expires_at_ms: req.expires_at_ms,
                    reserve_account: &reserve,
                },
                now,
            )
            .await?;
        let row = WarrantyRow {
            warranty_id: warranty_id.clone(),
            verification_id: v.verification_id.clone(),
            provider_id: v.agent_id.clone(),
            beneficiary,
            coverage,
            verification_fee: p.verification_fee,
            premium: p.premium,
            paid_out: Msat::ZERO,
            expires_at_ms: req.expires_at_ms,
            issued_by: caller.to_owned(),
            receipt_hash: receipt.hash.to_string(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        if !uw_store::insert_warranty(&mut tx, &row).await? {
            return Err(conflict(
                "WARRANTY_EXISTS",
                "this verification has a warranty already",
            ));
        }
        journal::append(
            &mut tx,
            TOPIC,
            "warranty_issued",
            &serde_json::json!({"warranty_id": warranty_id, "verification_id": v.verification_id,
                "coverage_msat": coverage.as_u64().to_string(), "receipt_hash": row.receipt_hash}),
            now,
        )
        .await?;
        let response = aegis::WarrantyResponse {
            warranty: Some(to_warranty(&mut tx, &row, now).await?),
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
            quote: Some(quote),
        };
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// A warranty and its issue receipt (used by tests and the claim routes).
    pub async fn get_warranty(&self, id: &str) -> Result<aegis::WarrantyResponse, AegisError> {
        validate_id("INVALID_WARRANTY_ID", "warranty id", id)?;
        let now = self.clock.now_ms();
        let mut conn = self.conn().await?;
        let w = uw_store::get_warranty(&mut conn, id)
            .await?
            .ok_or_else(|| not_found("WARRANTY_NOT_FOUND", "no such warranty"))?;
        let receipt = receipt_log::get_stored(&mut conn, Some(&w.receipt_hash)).await?;
        Ok(aegis::WarrantyResponse {
            warranty: Some(to_warranty(&mut conn, &w, now).await?),
            receipt: receipt.as_ref().map(oa_service::receipts::to_proto),
            quote: None,
        })
    }
}
