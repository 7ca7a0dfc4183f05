//! SQL for payment attempts. Budgets live in the ledger (`budget.rs`).

use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

pub const DENIED: &str = "denied";
pub const IN_FLIGHT: &str = "in_flight";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRow {
    pub payment_id: String,
    pub idempotency_scope: String,
    pub idempotency_key: String,
    pub agent_id: String,
    pub invoice: String,
    pub payment_hash: String,
    pub amount: Msat,
    pub max_fee: Msat,
    pub reserved: Msat,
    pub fee: Msat,
    pub state: String,
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

const COLUMNS: &str = "payment_id, idempotency_scope, idempotency_key, agent_id, invoice, payment_hash, amount_msat, \
    max_fee_msat, reserved_msat, fee_msat, state, rail, purpose, preimage, failure_code, failure_reason, quote_id, \
    hydra_receipt_hash, receipt_hash, created_at_ms, updated_at_ms";

fn decode(r: &AnyRow) -> Result<PaymentRow, StoreError> {
    Ok(PaymentRow {
        payment_id: r.try_get("payment_id")?,
        idempotency_scope: r.try_get("idempotency_scope")?,
        idempotency_key: r.try_get("idempotency_key")?,
        agent_id: r.try_get("agent_id")?,
        invoice: r.try_get("invoice")?,
        payment_hash: r.try_get("payment_hash")?,
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
    })
}

pub async fn insert(conn: &mut AnyConnection, p: &PaymentRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO treasury_payments (payment_id, idempotency_scope, idempotency_key, agent_id, invoice, payment_hash,
            amount_msat, max_fee_msat, reserved_msat, fee_msat, state, rail, purpose, failure_code, failure_reason,
            created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, $12, $13, $14, $15, $15)",
    )
    .bind(&p.payment_id)
    .bind(&p.idempotency_scope)
    .bind(&p.idempotency_key)
    .bind(&p.agent_id)
    .bind(&p.invoice)
    .bind(&p.payment_hash)
    .bind(p.amount.as_i64())
    .bind(p.max_fee.as_i64())
    .bind(p.reserved.as_i64())
    .bind(&p.state)
    .bind(&p.rail)
    .bind(&p.purpose)
    .bind(&p.failure_code)
    .bind(&p.failure_reason)
    .bind(i(p.created_at_ms)?)
    .execute(conn)
    .await?;
    Ok(())
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

pub async fn in_flight(
    conn: &mut AnyConnection,
    limit: u32,
) -> Result<Vec<PaymentRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM treasury_payments WHERE state = 'in_flight' ORDER BY created_at_ms LIMIT $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?
        .iter()
        .map(decode)
        .collect()
}

pub async fn set_quote(
    conn: &mut AnyConnection,
    payment_id: &str,
    quote_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE treasury_payments SET quote_id = $2 WHERE payment_id = $1")
        .bind(payment_id)
        .bind(quote_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// `in_flight -> succeeded|failed`, once.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    conn: &mut AnyConnection,
    payment_id: &str,
    state: &str,
    fee: Msat,
    preimage: Option<&str>,
    failure_code: Option<&str>,
    failure_reason: Option<&str>,
    hydra_receipt_hash: Option<&str>,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE treasury_payments SET state = $2, fee_msat = $3, preimage = $4, failure_code = $5, failure_reason = $6,
            hydra_receipt_hash = $7, updated_at_ms = $8
         WHERE payment_id = $1 AND state = 'in_flight'",
    )
    .bind(payment_id)
    .bind(state)
    .bind(fee.as_i64())
    .bind(preimage)
    .bind(failure_code)
    .bind(failure_reason)
    .bind(hydra_receipt_hash)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn set_receipt_hash(
    conn: &mut AnyConnection,
    payment_id: &str,
    hash: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE treasury_payments SET receipt_hash = $2 WHERE payment_id = $1")
        .bind(payment_id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets an attempt that never reached Hydra (so nothing can have been paid).
pub async fn delete(conn: &mut AnyConnection, payment_id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM treasury_payments WHERE payment_id = $1 AND state = 'in_flight' AND quote_id IS NULL")
        .bind(payment_id)
        .execute(conn)
        .await?;
    Ok(())
}
