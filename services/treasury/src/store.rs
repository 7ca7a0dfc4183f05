//! SQL for payment attempts, policies and known payees. Budgets live in the ledger (`budget.rs`).

use oa_money::Msat;
use oa_store::{
    StoreError,
    sql::{is_sqlite, row_placeholders},
};
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

pub const DENIED: &str = "denied";
pub const PENDING_APPROVAL: &str = "pending_approval";
pub const IN_FLIGHT: &str = "in_flight";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

/// Where an in-flight attempt is.
pub const STAGE_START: &str = "start";
pub const STAGE_DIRECT: &str = "direct";
pub const STAGE_ENVELOPE: &str = "envelope";
pub const STAGE_ENVELOPE_ISSUED: &str = "envelope_issued";
pub const STAGE_ENVELOPE_SETTLING: &str = "envelope_settling";
/// Terminal attempts (and those waiting for approval) have no stage of their own.
pub const STAGE_NONE: &str = "none";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRow {
    pub payment_id: String,
    pub idempotency_scope: String,
    pub idempotency_key: String,
    pub agent_id: String,
    pub org_id: Option<String>,
    pub host: Option<String>,
    pub payee_pubkey: String,
    /// `bolt11` or `l402`.
    pub source: String,
    /// The token subject that asked for the payment.
    pub requested_by: String,
    pub invoice: String,
    pub payment_hash: String,
    pub invoice_expires_at_ms: u64,
    pub amount: Msat,
    pub max_fee: Msat,
    /// What is reserved in every applicable budget (zero once denied).
    pub reserved: Msat,
    pub fee: Msat,
    pub state: String,
    /// The rail in use (or last used).
    pub rail: String,
    pub purpose: String,
    pub preimage: Option<String>,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub quote_id: Option<String>,
    pub hydra_receipt_hash: Option<String>,
    pub receipt_hash: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub policy_bundle_id: String,
    pub decision_rule: String,
    /// The decision as evaluated (`policy::Decision` as JSON).
    pub decision_json: String,
    /// Rails left to try, in order (the first is `rail` once chosen).
    pub rails: Vec<String>,
    pub stage: String,
    /// Pending ledger transfers of the reservation, one per budget.
    pub reservations: Vec<String>,
    pub approval_expires_at_ms: Option<u64>,
    /// Who approved or denied the payment.
    pub approver: Option<String>,
    pub envelope_id: Option<String>,
    pub envelope_expires_at_ms: Option<u64>,
    /// The credit fee of the envelope's offer.
    pub credit_fee: Msat,
    pub verification_id: Option<String>,
    pub verification_receipt_hash: Option<String>,
    /// Hydra receipts the attempt depends on besides the final one (the routing decision, a
    /// failed direct payment before a fallback, the envelope's issue receipt).
    pub linked_receipts: Vec<String>,
}

fn i(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt("integer overflow".into()))
}
fn u(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative integer".into()))
}
fn msat(v: i64) -> Result<Msat, StoreError> {
    Msat::from_i64(v).map_err(|e| StoreError::Corrupt(format!("amount: {e}")))
}
fn list(s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("list column: {e}")))
}
fn json(v: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}
fn opt_u(v: Option<i64>) -> Result<Option<u64>, StoreError> {
    v.map(u).transpose()
}
fn opt_i(v: Option<u64>) -> Result<Option<i64>, StoreError> {
    v.map(i).transpose()
}

const COLUMNS: &str = "payment_id, idempotency_scope, idempotency_key, agent_id, org_id, host, payee_pubkey, \
    source, requested_by, invoice, payment_hash, invoice_expires_at_ms, amount_msat, max_fee_msat, \
    reserved_msat, fee_msat, state, rail, purpose, preimage, failure_code, failure_reason, quote_id, \
    hydra_receipt_hash, receipt_hash, created_at_ms, updated_at_ms, policy_bundle_id, decision_rule, \
    decision_json, rails, stage, reservations, approval_expires_at_ms, approver, envelope_id, \
    envelope_expires_at_ms, credit_fee_msat, verification_id, verification_receipt_hash, linked_receipts";

fn decode(r: &AnyRow) -> Result<PaymentRow, StoreError> {
    Ok(PaymentRow {
        payment_id: r.try_get("payment_id")?,
        idempotency_scope: r.try_get("idempotency_scope")?,
        idempotency_key: r.try_get("idempotency_key")?,
        agent_id: r.try_get("agent_id")?,
        org_id: r.try_get("org_id")?,
        host: r.try_get("host")?,
        payee_pubkey: r.try_get("payee_pubkey")?,
        source: r.try_get("source")?,
        requested_by: r.try_get("requested_by")?,
        invoice: r.try_get("invoice")?,
        payment_hash: r.try_get("payment_hash")?,
        invoice_expires_at_ms: u(r.try_get("invoice_expires_at_ms")?)?,
        amount: msat(r.try_get("amount_msat")?)?,
        max_fee: msat(r.try_get("max_fee_msat")?)?,
        reserved: msat(r.try_get("reserved_msat")?)?,
        fee: msat(r.try_get("fee_msat")?)?,
        state: r.try_get("state")?,
        rail: r.try_get("rail")?,
        purpose: r.try_get("purpose")?,
        preimage: r.try_get("preimage")?,
        failure_code: r.try_get("failure_code")?,
        failure_reason: r.try_get("failure_reason")?,
        quote_id: r.try_get("quote_id")?,
        hydra_receipt_hash: r.try_get("hydra_receipt_hash")?,
        receipt_hash: r.try_get("receipt_hash")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        updated_at_ms: u(r.try_get("updated_at_ms")?)?,
        policy_bundle_id: r.try_get("policy_bundle_id")?,
        decision_rule: r.try_get("decision_rule")?,
        decision_json: r.try_get("decision_json")?,
        rails: list(&r.try_get::<String, _>("rails")?)?,
        stage: r.try_get("stage")?,
        reservations: list(&r.try_get::<String, _>("reservations")?)?,
        approval_expires_at_ms: opt_u(r.try_get("approval_expires_at_ms")?)?,
        approver: r.try_get("approver")?,
        envelope_id: r.try_get("envelope_id")?,
        envelope_expires_at_ms: opt_u(r.try_get("envelope_expires_at_ms")?)?,
        credit_fee: msat(r.try_get("credit_fee_msat")?)?,
        verification_id: r.try_get("verification_id")?,
        verification_receipt_hash: r.try_get("verification_receipt_hash")?,
        linked_receipts: list(&r.try_get::<String, _>("linked_receipts")?)?,
    })
}

/// Columns of a row, as [`insert_many`] binds them.
const INSERT_COLUMNS: usize = 41;
/// Rows inserted per statement at most (SQLite binds at most 32 766 parameters).
const INSERT_BATCH: usize = 256;

/// Inserts `rows` in as few statements as fit (one, for up to 256 rows).
pub async fn insert_many<'a>(
    conn: &mut AnyConnection,
    rows: impl IntoIterator<Item = &'a PaymentRow>,
) -> Result<(), StoreError> {
    let rows: Vec<&PaymentRow> = rows.into_iter().collect();
    for chunk in rows.chunks(INSERT_BATCH) {
        let values = row_placeholders(is_sqlite(conn), chunk.len(), INSERT_COLUMNS);
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO treasury_payments ({COLUMNS}) VALUES {values}"
        ));
        let mut q = sqlx::query::<Any>(sql);
        for p in chunk {
            q = q
                .bind(&p.payment_id)
                .bind(&p.idempotency_scope)
                .bind(&p.idempotency_key)
                .bind(&p.agent_id)
                .bind(&p.org_id)
                .bind(&p.host)
                .bind(&p.payee_pubkey)
                .bind(&p.source)
                .bind(&p.requested_by)
                .bind(&p.invoice)
                .bind(&p.payment_hash)
                .bind(i(p.invoice_expires_at_ms)?)
                .bind(p.amount.as_i64())
                .bind(p.max_fee.as_i64())
                .bind(p.reserved.as_i64())
                .bind(p.fee.as_i64())
                .bind(&p.state)
                .bind(&p.rail)
                .bind(&p.purpose)
                .bind(&p.preimage)
                .bind(&p.failure_code)
                .bind(&p.failure_reason)
                .bind(&p.quote_id)
                .bind(&p.hydra_receipt_hash)
                .bind(&p.receipt_hash)
                .bind(i(p.created_at_ms)?)
                .bind(i(p.updated_at_ms)?)
                .bind(&p.policy_bundle_id)
                .bind(&p.decision_rule)
                .bind(&p.decision_json)
                .bind(json(&p.rails)?)
                .bind(&p.stage)
                .bind(json(&p.reservations)?)
                .bind(opt_i(p.approval_expires_at_ms)?)
                .bind(&p.approver)
                .bind(&p.envelope_id)
                .bind(opt_i(p.envelope_expires_at_ms)?)
                .bind(p.credit_fee.as_i64())
                .bind(&p.verification_id)
                .bind(&p.verification_receipt_hash)
                .bind(json(&p.linked_receipts)?);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes every mutable column of `p`, if the stored row is still in `(state, stage)`: the one
/// guarded transition of the attempt state machine. Returns whether it won.
pub async fn update(
    conn: &mut AnyConnection,
    p: &PaymentRow,
    state: &str,
    stage: &str,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE treasury_payments SET reserved_msat = $4, fee_msat = $5, state = $6, rail = $7, preimage = $8,
            failure_code = $9, failure_reason = $10, quote_id = $11, hydra_receipt_hash = $12, receipt_hash = $13,
            updated_at_ms = $14, decision_rule = $15, decision_json = $16, rails = $17, stage = $18,
            reservations = $19, approval_expires_at_ms = $20, approver = $21, envelope_id = $22,
            envelope_expires_at_ms = $23, credit_fee_msat = $24, verification_id = $25,
            verification_receipt_hash = $26, linked_receipts = $27
         WHERE payment_id = $1 AND state = $2 AND stage = $3",
    )
    .bind(&p.payment_id)
    .bind(state)
    .bind(stage)
    .bind(p.reserved.as_i64())
    .bind(p.fee.as_i64())
    .bind(&p.state)
    .bind(&p.rail)
    .bind(&p.preimage)
    .bind(&p.failure_code)
    .bind(&p.failure_reason)
    .bind(&p.quote_id)
    .bind(&p.hydra_receipt_hash)
    .bind(&p.receipt_hash)
    .bind(i(p.updated_at_ms)?)
    .bind(&p.decision_rule)
    .bind(&p.decision_json)
    .bind(json(&p.rails)?)
    .bind(&p.stage)
    .bind(json(&p.reservations)?)
    .bind(opt_i(p.approval_expires_at_ms)?)
    .bind(&p.approver)
    .bind(&p.envelope_id)
    .bind(opt_i(p.envelope_expires_at_ms)?)
    .bind(p.credit_fee.as_i64())
    .bind(&p.verification_id)
    .bind(&p.verification_receipt_hash)
    .bind(json(&p.linked_receipts)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn get(
    conn: &mut AnyConnection,
    payment_id: &str,
) -> Result<Option<PaymentRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM treasury_payments WHERE payment_id = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(payment_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

async fn select_where(
    conn: &mut AnyConnection,
    filter: &'static str,
    now_ms: Option<u64>,
    limit: u32,
) -> Result<Vec<PaymentRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM treasury_payments WHERE {filter} ORDER BY created_at_ms, payment_id LIMIT $1"
    ));
    let mut q = sqlx::query::<Any>(sql).bind(i64::from(limit));
    if let Some(now) = now_ms {
        q = q.bind(i(now)?);
    }
    q.fetch_all(conn).await?.iter().map(decode).collect()
}

/// Attempts in flight last changed at or before `updated_before_ms` (to re-drive).
pub async fn in_flight(
    conn: &mut AnyConnection,
    updated_before_ms: u64,
    limit: u32,
) -> Result<Vec<PaymentRow>, StoreError> {
    select_where(
        conn,
        "state = 'in_flight' AND updated_at_ms <= $2",
        Some(updated_before_ms),
        limit,
    )
    .await
}

/// Attempts whose approval expired at `now_ms`.
pub async fn expired_approvals(
    conn: &mut AnyConnection,
    now_ms: u64,
    limit: u32,
) -> Result<Vec<PaymentRow>, StoreError> {
    select_where(
        conn,
        "state = 'pending_approval' AND approval_expires_at_ms <= $2",
        Some(now_ms),
        limit,
    )
    .await
}

/// Attempts whose issued credit envelope expired unsettled at `now_ms`.
pub async fn expired_envelopes(
    conn: &mut AnyConnection,
    now_ms: u64,
    limit: u32,
) -> Result<Vec<PaymentRow>, StoreError> {
    select_where(
        conn,
        "state = 'in_flight' AND stage = 'envelope_issued' AND envelope_expires_at_ms <= $2",
        Some(now_ms),
        limit,
    )
    .await
}

/// Attempts waiting for approval, oldest first.
pub async fn pending_approvals(
    conn: &mut AnyConnection,
    limit: u32,
) -> Result<Vec<PaymentRow>, StoreError> {
    select_where(conn, "state = 'pending_approval'", None, limit).await
}

/// Forgets an attempt that never reached Hydra's money (so nothing can have been paid).
pub async fn delete(conn: &mut AnyConnection, payment_id: &str) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "DELETE FROM treasury_payments WHERE payment_id = $1 AND state = 'in_flight'
            AND quote_id IS NULL AND envelope_id IS NULL",
    )
    .bind(payment_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Receipt hashes set per statement at most (two parameters each).
const RECEIPT_HASH_BATCH: usize = 2_048;

/// Records the receipts of attempts that just ended (in the transaction that ended them): each
/// payment's receipt hash, `(payment_id, receipt_hash)`, in as few statements as fit
/// (one, for up to 2 048 payments).
pub async fn set_receipt_hashes(
    conn: &mut AnyConnection,
    hashes: &[(&str, String)],
) -> Result<(), StoreError> {
    for chunk in hashes.chunks(RECEIPT_HASH_BATCH) {
        // `VALUES` names its columns column1.. on both backends.
        let values = row_placeholders(is_sqlite(conn), chunk.len(), 2);
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE treasury_payments SET receipt_hash = v.column2 FROM (VALUES {values}) AS v \
             WHERE treasury_payments.payment_id = v.column1"
        ));
        let mut q = sqlx::query::<Any>(sql);
        for (id, hash) in chunk {
            q = q.bind(*id).bind(hash.as_str());
        }
        let updated = q.execute(&mut *conn).await?.rows_affected();
        if updated != chunk.len() as u64 {
            return Err(StoreError::Corrupt(format!(
                "{updated} of {} payments took their receipt hash",
                chunk.len()
            )));
        }
    }
    Ok(())
}

pub async fn add_known_payee(
    conn: &mut AnyConnection,
    payee: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO treasury_known_payees (payee_pubkey, first_paid_at_ms) VALUES ($1, $2)
         ON CONFLICT (payee_pubkey) DO NOTHING",
    )
    .bind(payee)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn is_known_payee(conn: &mut AnyConnection, payee: &str) -> Result<bool, StoreError> {
    let n: Option<i64> = sqlx::query_scalar::<Any, i64>(
        "SELECT first_paid_at_ms FROM treasury_known_payees WHERE payee_pubkey = $1",
    )
    .bind(payee)
    .fetch_optional(conn)
    .await?;
    Ok(n.is_some())
}

/// The active policy: bundle id, version, canonical JSON, TOML source, who and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivePolicy {
    pub bundle_id: String,
    pub version: u64,
    pub canonical_json: String,
    pub source_toml: String,
    pub activated_by: String,
    pub activated_at_ms: u64,
}

pub async fn active_bundle_id(conn: &mut AnyConnection) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar::<Any, String>(
        "SELECT bundle_id FROM treasury_policy_active WHERE id = 1",
    )
    .fetch_optional(conn)
    .await?)
}

pub async fn active_policy(conn: &mut AnyConnection) -> Result<Option<ActivePolicy>, StoreError> {
    let row = sqlx::query::<Any>(
        "SELECT a.bundle_id, a.version, a.activated_by, a.activated_at_ms, p.canonical_json, p.source_toml
         FROM treasury_policy_active a JOIN treasury_policies p ON p.bundle_id = a.bundle_id WHERE a.id = 1",
    )
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(ActivePolicy {
            bundle_id: r.try_get("bundle_id")?,
            version: u(r.try_get("version")?)?,
            canonical_json: r.try_get("canonical_json")?,
            source_toml: r.try_get("source_toml")?,
            activated_by: r.try_get("activated_by")?,
            activated_at_ms: u(r.try_get("activated_at_ms")?)?,
        })
    })
    .transpose()
}

/// Stores a policy (once per bundle id) and makes it the active one. Returns the new version.
pub async fn activate_policy(
    conn: &mut AnyConnection,
    bundle_id: &str,
    canonical_json: &str,
    source_toml: &str,
    by: &str,
    now_ms: u64,
) -> Result<u64, StoreError> {
    sqlx::query(
        "INSERT INTO treasury_policies (bundle_id, canonical_json, source_toml, created_at_ms)
         VALUES ($1, $2, $3, $4) ON CONFLICT (bundle_id) DO NOTHING",
    )
    .bind(bundle_id)
    .bind(canonical_json)
    .bind(source_toml)
    .bind(i(now_ms)?)
    .execute(&mut *conn)
    .await?;
    // The upsert also serializes concurrent activations on the single row.
    let v: i64 = sqlx::query_scalar::<Any, i64>(
        "INSERT INTO treasury_policy_active (id, bundle_id, version, activated_by, activated_at_ms)
         VALUES (1, $1, 1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET bundle_id = $1, version = treasury_policy_active.version + 1,
            activated_by = $2, activated_at_ms = $3
         RETURNING version",
    )
    .bind(bundle_id)
    .bind(by)
    .bind(i(now_ms)?)
    .fetch_one(&mut *conn)
    .await?;
    u(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_binds_one_parameter_per_column() {
        assert_eq!(COLUMNS.split(',').count(), INSERT_COLUMNS);
    }
}
