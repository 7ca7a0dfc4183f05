//! SQL of warranties, bonds, claims and disputes (the state machines in [`crate::warranty`],
//! [`crate::bond`], [`crate::claim`] and [`crate::dispute`]). Every state change is a guarded
//! `UPDATE ... WHERE state = <from>`: the row moves once, and on PostgreSQL the update holds the
//! row lock until commit, so racing requests serialize on it.

use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

use crate::store::{i, msat, u};

fn opt_msat(v: Option<i64>) -> Result<Option<Msat>, StoreError> {
    v.map(msat).transpose()
}
fn flag(v: i64) -> bool {
    v != 0
}

// ---- warranties ------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarrantyRow {
    pub warranty_id: String,
    pub verification_id: String,
    pub provider_id: String,
    pub beneficiary: String,
    pub coverage: Msat,
    pub verification_fee: Msat,
    pub premium: Msat,
    pub paid_out: Msat,
    pub expires_at_ms: u64,
    pub issued_by: String,
    pub receipt_hash: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

const WARRANTY_COLUMNS: &str = "warranty_id, verification_id, provider_id, beneficiary, coverage_msat, \
    verification_fee_msat, premium_msat, paid_out_msat, expires_at_ms, issued_by, receipt_hash, created_at_ms, updated_at_ms";

fn decode_warranty(r: &AnyRow) -> Result<WarrantyRow, StoreError> {
    Ok(WarrantyRow {
        warranty_id: r.try_get("warranty_id")?,
        verification_id: r.try_get("verification_id")?,
        provider_id: r.try_get("provider_id")?,
        beneficiary: r.try_get("beneficiary")?,
        coverage: msat(r.try_get("coverage_msat")?)?,
        verification_fee: msat(r.try_get("verification_fee_msat")?)?,
        premium: msat(r.try_get("premium_msat")?)?,
        paid_out: msat(r.try_get("paid_out_msat")?)?,
        expires_at_ms: u(r.try_get("expires_at_ms")?)?,
        issued_by: r.try_get("issued_by")?,
        receipt_hash: r.try_get("receipt_hash")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        updated_at_ms: u(r.try_get("updated_at_ms")?)?,
    })
}

/// Inserts a warranty; `false` if the verification has one already (unique constraint).
pub async fn insert_warranty(
    conn: &mut AnyConnection,
    w: &WarrantyRow,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO aegis_warranties (warranty_id, verification_id, provider_id, beneficiary, coverage_msat,
            verification_fee_msat, premium_msat, paid_out_msat, expires_at_ms, issued_by, receipt_hash, created_at_ms,
            updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (verification_id) DO NOTHING",
    )
    .bind(&w.warranty_id)
    .bind(&w.verification_id)
    .bind(&w.provider_id)
    .bind(&w.beneficiary)
    .bind(w.coverage.as_i64())
    .bind(w.verification_fee.as_i64())
    .bind(w.premium.as_i64())
    .bind(w.paid_out.as_i64())
    .bind(i(w.expires_at_ms)?)
    .bind(&w.issued_by)
    .bind(&w.receipt_hash)
    .bind(i(w.created_at_ms)?)
    .bind(i(w.updated_at_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn get_warranty(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<WarrantyRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {WARRANTY_COLUMNS} FROM aegis_warranties WHERE warranty_id = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode_warranty)
        .transpose()
}

/// Adds a payout to the warranty's total paid out.
pub async fn add_paid_out(
    conn: &mut AnyConnection,
    id: &str,
    paid_out: Msat,
    now_ms: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE aegis_warranties SET paid_out_msat = $2, updated_at_ms = $3 WHERE warranty_id = $1",
    )
    .bind(id)
    .bind(paid_out.as_i64())
    .bind(i(now_ms)?)
    .execute(conn)
    .await?;
    Ok(())
}

/// Paid claims against warranties of `provider_id` (the claim history pricing reads).
pub async fn paid_claims_of(
    conn: &mut AnyConnection,
    provider_id: &str,
) -> Result<u64, StoreError> {
    let r = sqlx::query(
        "SELECT COUNT(*) AS n FROM aegis_claims c JOIN aegis_warranties w ON w.warranty_id = c.warranty_id
         WHERE w.provider_id = $1 AND c.state = 'paid'",
    )
    .bind(provider_id)
    .fetch_one(conn)
    .await?;
    u(r.try_get::<i64, _>("n")?)
}

// ---- bonds -----------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BondRow {
    pub bond_id: String,
    pub warranty_id: String,
    pub provider_id: String,
    pub amount: Msat,
    pub drawn: Msat,
    pub state: String,
    pub pending_transfer_id: String,
    pub reserve_receipt_hash: String,
    pub release_receipt_hash: Option<String>,
    pub reserved_by: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

const BOND_COLUMNS: &str = "bond_id, warranty_id, provider_id, amount_msat, drawn_msat, state, pending_transfer_id, \
    reserve_receipt_hash, release_receipt_hash, reserved_by, created_at_ms, updated_at_ms";

fn decode_bond(r: &AnyRow) -> Result<BondRow, StoreError> {
    Ok(BondRow {
        bond_id: r.try_get("bond_id")?,
        warranty_id: r.try_get("warranty_id")?,
        provider_id: r.try_get("provider_id")?,
        amount: msat(r.try_get("amount_msat")?)?,
        drawn: msat(r.try_get("drawn_msat")?)?,
        state: r.try_get("state")?,
        pending_transfer_id: r.try_get("pending_transfer_id")?,
        reserve_receipt_hash: r.try_get("reserve_receipt_hash")?,
        release_receipt_hash: r.try_get("release_receipt_hash")?,
        reserved_by: r.try_get("reserved_by")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        updated_at_ms: u(r.try_get("updated_at_ms")?)?,
    })
}

/// Inserts a bond; `false` if the warranty has one already.
pub async fn insert_bond(conn: &mut AnyConnection, b: &BondRow) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO aegis_bonds (bond_id, warranty_id, provider_id, amount_msat, drawn_msat, state,
            pending_transfer_id, reserve_receipt_hash, release_receipt_hash, reserved_by, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (warranty_id) DO NOTHING",
    )
    .bind(&b.bond_id)
    .bind(&b.warranty_id)
    .bind(&b.provider_id)
    .bind(b.amount.as_i64())
    .bind(b.drawn.as_i64())
    .bind(&b.state)
    .bind(&b.pending_transfer_id)
    .bind(&b.reserve_receipt_hash)
    .bind(&b.release_receipt_hash)
    .bind(&b.reserved_by)
    .bind(i(b.created_at_ms)?)
    .bind(i(b.updated_at_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

async fn bond_where(
    conn: &mut AnyConnection,
    column: &str,
    value: &str,
) -> Result<Option<BondRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {BOND_COLUMNS} FROM aegis_bonds WHERE {column} = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(value)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode_bond)
        .transpose()
}

pub async fn get_bond(conn: &mut AnyConnection, id: &str) -> Result<Option<BondRow>, StoreError> {
    bond_where(conn, "bond_id", id).await
}

pub async fn bond_of_warranty(
    conn: &mut AnyConnection,
    warranty_id: &str,
) -> Result<Option<BondRow>, StoreError> {
    bond_where(conn, "warranty_id", warranty_id).await
}

/// `reserved -> released | drawn`, once.
pub async fn finish_bond(
    conn: &mut AnyConnection,
    id: &str,
    to: &str,
    drawn: Msat,
    release_receipt_hash: Option<&str>,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE aegis_bonds SET state = $2, drawn_msat = $3, release_receipt_hash = $4, updated_at_ms = $5
         WHERE bond_id = $1 AND state = 'reserved'",
    )
    .bind(id)
    .bind(to)
    .bind(drawn.as_i64())
    .bind(release_receipt_hash)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

// ---- claims ----------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRow {
    pub claim_id: String,
    pub warranty_id: String,
    pub claimant: String,
    pub requested: Msat,
    pub invoice: String,
    pub payment_hash: String,
    pub invoice_amount: Option<Msat>,
    pub evidence: String,
    pub state: String,
    pub payout: Option<Msat>,
    pub fee: Option<Msat>,
    pub provider_at_fault: bool,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub resolved_by: Option<String>,
    pub attempt: u64,
    pub lease_until_ms: u64,
    pub hydra_receipt_hash: Option<String>,
    pub open_receipt_hash: String,
    pub resolution_receipt_hash: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

const CLAIM_COLUMNS: &str = "claim_id, warranty_id, claimant, requested_msat, invoice, payment_hash, \
    invoice_amount_msat, evidence, state, payout_msat, fee_msat, provider_at_fault, reason_code, reason, resolved_by, \
    attempt, lease_until_ms, hydra_receipt_hash, open_receipt_hash, resolution_receipt_hash, created_at_ms, updated_at_ms";

fn decode_claim(r: &AnyRow) -> Result<ClaimRow, StoreError> {
    Ok(ClaimRow {
        claim_id: r.try_get("claim_id")?,
        warranty_id: r.try_get("warranty_id")?,
        claimant: r.try_get("claimant")?,
        requested: msat(r.try_get("requested_msat")?)?,
        invoice: r.try_get("invoice")?,
        payment_hash: r.try_get("payment_hash")?,
        invoice_amount: opt_msat(r.try_get("invoice_amount_msat")?)?,
        evidence: r.try_get("evidence")?,
        state: r.try_get("state")?,
        payout: opt_msat(r.try_get("payout_msat")?)?,
        fee: opt_msat(r.try_get("fee_msat")?)?,
        provider_at_fault: flag(r.try_get("provider_at_fault")?),
        reason_code: r.try_get("reason_code")?,
        reason: r.try_get("reason")?,
        resolved_by: r.try_get("resolved_by")?,
        attempt: u(r.try_get("attempt")?)?,
        lease_until_ms: u(r.try_get("lease_until_ms")?)?,
        hydra_receipt_hash: r.try_get("hydra_receipt_hash")?,
        open_receipt_hash: r.try_get("open_receipt_hash")?,
        resolution_receipt_hash: r.try_get("resolution_receipt_hash")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        updated_at_ms: u(r.try_get("updated_at_ms")?)?,
    })
}

/// Inserts a claim; `false` if a claim for the same payment hash exists.
pub async fn insert_claim(conn: &mut AnyConnection, c: &ClaimRow) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO aegis_claims (claim_id, warranty_id, claimant, requested_msat, invoice, payment_hash,
            invoice_amount_msat, evidence, state, payout_msat, fee_msat, provider_at_fault, reason_code, reason,
            resolved_by, attempt, lease_until_ms, hydra_receipt_hash, open_receipt_hash, resolution_receipt_hash,
            created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, 0, NULL, NULL, NULL, 0, 0, NULL, $10, NULL, $11, $11)
         ON CONFLICT (payment_hash) DO NOTHING",
    )
    .bind(&c.claim_id)
    .bind(&c.warranty_id)
    .bind(&c.claimant)
    .bind(c.requested.as_i64())
    .bind(&c.invoice)
    .bind(&c.payment_hash)
    .bind(c.invoice_amount.map(Msat::as_i64))
    .bind(&c.evidence)
    .bind(&c.state)
    .bind(&c.open_receipt_hash)
    .bind(i(c.created_at_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn get_claim(conn: &mut AnyConnection, id: &str) -> Result<Option<ClaimRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {CLAIM_COLUMNS} FROM aegis_claims WHERE claim_id = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode_claim)
        .transpose()
}

/// `from -> paying` with the payout, the fault finding and the driver's lease; once.
#[allow(clippy::too_many_arguments)]
pub async fn start_paying(
    conn: &mut AnyConnection,
    id: &str,
    from: &str,
    payout: Msat,
    provider_at_fault: bool,
    resolved_by: &str,
    lease_until_ms: u64,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE aegis_claims SET state = 'paying', payout_msat = $3, provider_at_fault = $4, resolved_by = $5,
            attempt = attempt + 1, lease_until_ms = $6, updated_at_ms = $7
         WHERE claim_id = $1 AND state = $2",
    )
    .bind(id)
    .bind(from)
    .bind(payout.as_i64())
    .bind(i64::from(provider_at_fault))
    .bind(resolved_by)
    .bind(i(lease_until_ms)?)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Takes the payment driver's lease of a `paying` claim whose lease ran out; `false` if another
/// driver holds it or the claim is not paying.
pub async fn take_lease(
    conn: &mut AnyConnection,
    id: &str,
    lease_until_ms: u64,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE aegis_claims SET lease_until_ms = $2, updated_at_ms = $3
         WHERE claim_id = $1 AND state = 'paying' AND lease_until_ms <= $3",
    )
    .bind(id)
    .bind(i(lease_until_ms)?)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Gives back the payment driver's lease of a `paying` claim (its outcome is unknown), so the
/// next resolve re-drives it at once.
pub async fn release_lease(conn: &mut AnyConnection, id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE aegis_claims SET lease_until_ms = 0 WHERE claim_id = $1 AND state = 'paying'",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends a claim: `from -> to` (`paid`, `payment_failed`, `denied`) with its resolution; once.
#[allow(clippy::too_many_arguments)]
pub async fn finish_claim(
    conn: &mut AnyConnection,
    id: &str,
    from: &str,
    to: &str,
    fee: Option<Msat>,
    reason_code: Option<&str>,
    reason: Option<&str>,
    resolved_by: &str,
    hydra_receipt_hash: Option<&str>,
    receipt_hash: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE aegis_claims SET state = $3, fee_msat = $4, reason_code = $5, reason = $6, resolved_by = $7,
            hydra_receipt_hash = $8, resolution_receipt_hash = $9, lease_until_ms = 0, updated_at_ms = $10
         WHERE claim_id = $1 AND state = $2",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .bind(fee.map(Msat::as_i64))
    .bind(reason_code)
    .bind(reason)
    .bind(resolved_by)
    .bind(hydra_receipt_hash)
    .bind(receipt_hash)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Sets the fault finding of a claim (an arbitrator's decision).
pub async fn set_fault(conn: &mut AnyConnection, id: &str, now_ms: u64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE aegis_claims SET provider_at_fault = 1, updated_at_ms = $2 WHERE claim_id = $1",
    )
    .bind(id)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?;
    Ok(())
}

/// Claims of a warranty that are open or being paid, plus open disputes of its claims: while any
/// exists, its bond stays reserved.
pub async fn busy_claims(conn: &mut AnyConnection, warranty_id: &str) -> Result<u64, StoreError> {
    let r = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM aegis_claims WHERE warranty_id = $1 AND state IN ('open', 'paying'))
              + (SELECT COUNT(*) FROM aegis_disputes d JOIN aegis_claims c ON c.claim_id = d.claim_id
                 WHERE c.warranty_id = $1 AND d.state = 'open') AS n",
    )
    .bind(warranty_id)
    .fetch_one(conn)
    .await?;
    u(r.try_get::<i64, _>("n")?)
}

// ---- disputes --------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisputeRow {
    pub dispute_id: String,
    pub claim_id: String,
    pub opened_by: String,
    pub reason: String,
    pub state: String,
    pub deadline_at_ms: u64,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub pay: Option<bool>,
    pub provider_at_fault: Option<bool>,
    pub receipt_hash: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

const DISPUTE_COLUMNS: &str = "dispute_id, claim_id, opened_by, reason, state, deadline_at_ms, decided_by, \
    decision_reason, pay, provider_at_fault, receipt_hash, created_at_ms, updated_at_ms";

fn decode_dispute(r: &AnyRow) -> Result<DisputeRow, StoreError> {
    Ok(DisputeRow {
        dispute_id: r.try_get("dispute_id")?,
        claim_id: r.try_get("claim_id")?,
        opened_by: r.try_get("opened_by")?,
        reason: r.try_get("reason")?,
        state: r.try_get("state")?,
        deadline_at_ms: u(r.try_get("deadline_at_ms")?)?,
        decided_by: r.try_get("decided_by")?,
        decision_reason: r.try_get("decision_reason")?,
        pay: r.try_get::<Option<i64>, _>("pay")?.map(flag),
        provider_at_fault: r.try_get::<Option<i64>, _>("provider_at_fault")?.map(flag),
        receipt_hash: r.try_get("receipt_hash")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        updated_at_ms: u(r.try_get("updated_at_ms")?)?,
    })
}

pub async fn insert_dispute(conn: &mut AnyConnection, d: &DisputeRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO aegis_disputes (dispute_id, claim_id, opened_by, reason, state, deadline_at_ms, decided_by,
            decision_reason, pay, provider_at_fault, receipt_hash, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, NULL, NULL, NULL, $7, $7)",
    )
    .bind(&d.dispute_id)
    .bind(&d.claim_id)
    .bind(&d.opened_by)
    .bind(&d.reason)
    .bind(&d.state)
    .bind(i(d.deadline_at_ms)?)
    .bind(i(d.created_at_ms)?)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_dispute(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<DisputeRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {DISPUTE_COLUMNS} FROM aegis_disputes WHERE dispute_id = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode_dispute)
        .transpose()
}

/// Open disputes of a claim.
pub async fn open_disputes_of(conn: &mut AnyConnection, claim_id: &str) -> Result<u64, StoreError> {
    let r = sqlx::query(
        "SELECT COUNT(*) AS n FROM aegis_disputes WHERE claim_id = $1 AND state = 'open'",
    )
    .bind(claim_id)
    .fetch_one(conn)
    .await?;
    u(r.try_get::<i64, _>("n")?)
}

/// Open disputes whose deadline passed, oldest first, at most `limit`.
pub async fn due_disputes(
    conn: &mut AnyConnection,
    now_ms: u64,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(
        "SELECT dispute_id FROM aegis_disputes WHERE state = 'open' AND deadline_at_ms <= $1
         ORDER BY deadline_at_ms, dispute_id LIMIT $2",
    )
    .bind(i(now_ms)?)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(|r| Ok(r.try_get("dispute_id")?)).collect()
}

/// `open -> upheld | overturned | expired`, once.
#[allow(clippy::too_many_arguments)]
pub async fn decide_dispute(
    conn: &mut AnyConnection,
    id: &str,
    to: &str,
    decided_by: &str,
    reason: &str,
    pay: bool,
    provider_at_fault: bool,
    receipt_hash: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE aegis_disputes SET state = $2, decided_by = $3, decision_reason = $4, pay = $5,
            provider_at_fault = $6, receipt_hash = $7, updated_at_ms = $8
         WHERE dispute_id = $1 AND state = 'open'",
    )
    .bind(id)
    .bind(to)
    .bind(decided_by)
    .bind(reason)
    .bind(i64::from(pay))
    .bind(i64::from(provider_at_fault))
    .bind(receipt_hash)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}
