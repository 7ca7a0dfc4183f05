//! SQL for the executor's payments and spending window; invoices, on-chain sends and channel
//! actions have their own submodules.

pub mod actions;
pub mod invoices;
pub mod onchain;

use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRow {
    pub payment_hash: String,
    pub idempotency_scope: String,
    pub idempotency_key: String,
    pub invoice: String,
    pub payee_pubkey: String,
    pub amount: Msat,
    pub fee_limit: Msat,
    pub status: String,
    pub fee: Msat,
    pub preimage: Option<String>,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at_ms: u64,
    pub resolved_at_ms: Option<u64>,
    pub receipt_hash: Option<String>,
}

pub const IN_FLIGHT: &str = "in_flight";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

const COLUMNS: &str = "payment_hash, idempotency_scope, idempotency_key, invoice, payee_pubkey, amount_msat, \
    fee_limit_msat, status, fee_msat, preimage, failure_code, failure_reason, created_at_ms, resolved_at_ms, receipt_hash";

pub(crate) fn ms(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt("timestamp overflow".into()))
}

pub(crate) fn msat(v: i64) -> Result<Msat, StoreError> {
    Msat::from_i64(v).map_err(|e| StoreError::Corrupt(format!("amount column: {e}")))
}

/// A non-negative BIGINT column as `u64`.
pub(crate) fn unsigned(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative value in an unsigned column".into()))
}

fn decode(r: &AnyRow) -> Result<PaymentRow, StoreError> {
    let u = |v: i64| u64::try_from(v).map_err(|_| StoreError::Corrupt("negative timestamp".into()));
    Ok(PaymentRow {
        payment_hash: r.try_get("payment_hash")?,
        idempotency_scope: r.try_get("idempotency_scope")?,
        idempotency_key: r.try_get("idempotency_key")?,
        invoice: r.try_get("invoice")?,
        payee_pubkey: r.try_get("payee_pubkey")?,
        amount: msat(r.try_get("amount_msat")?)?,
        fee_limit: msat(r.try_get("fee_limit_msat")?)?,
        status: r.try_get("status")?,
        fee: msat(r.try_get("fee_msat")?)?,
        preimage: r.try_get("preimage")?,
        failure_code: r.try_get("failure_code")?,
        failure_reason: r.try_get("failure_reason")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        resolved_at_ms: r
            .try_get::<Option<i64>, _>("resolved_at_ms")?
            .map(u)
            .transpose()?,
        receipt_hash: r.try_get("receipt_hash")?,
    })
}

/// Records a new payment; `false` (nothing written) if its payment hash is already recorded.
pub async fn insert(conn: &mut AnyConnection, p: &PaymentRow) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO wallet_payments (payment_hash, idempotency_scope, idempotency_key, invoice, payee_pubkey,
            amount_msat, fee_limit_msat, status, fee_msat, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)
         ON CONFLICT (payment_hash) DO NOTHING",
    )
    .bind(&p.payment_hash)
    .bind(&p.idempotency_scope)
    .bind(&p.idempotency_key)
    .bind(&p.invoice)
    .bind(&p.payee_pubkey)
    .bind(p.amount.as_i64())
    .bind(p.fee_limit.as_i64())
    .bind(&p.status)
    .bind(ms(p.created_at_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Removes a payment recorded in the current transaction (its intent was refused after all).
pub async fn delete(conn: &mut AnyConnection, payment_hash: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM wallet_payments WHERE payment_hash = $1")
        .bind(payment_hash)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get(
    conn: &mut AnyConnection,
    payment_hash: &str,
) -> Result<Option<PaymentRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wallet_payments WHERE payment_hash = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(payment_hash)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

pub async fn get_by_key(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
) -> Result<Option<PaymentRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wallet_payments WHERE idempotency_scope = $1 AND idempotency_key = $2"
    ));
    sqlx::query::<Any>(sql)
        .bind(scope)
        .bind(key)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

pub async fn in_flight(
    conn: &mut AnyConnection,
    created_before_ms: u64,
    limit: u32,
) -> Result<Vec<PaymentRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wallet_payments WHERE status = 'in_flight' AND created_at_ms <= $2 \
         ORDER BY created_at_ms LIMIT $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(i64::from(limit))
        .bind(i64::try_from(created_before_ms).unwrap_or(i64::MAX))
        .fetch_all(conn)
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// A terminal state to record.
pub struct Finish<'a> {
    pub status: &'a str,
    pub fee: Msat,
    pub preimage: Option<&'a str>,
    pub failure_code: Option<&'a str>,
    pub failure_reason: Option<&'a str>,
    pub resolved_at_ms: u64,
    /// The receipt that records this end.
    pub receipt_hash: &'a str,
}

/// Moves an in-flight payment to its terminal state. Returns false if it
/// was not in flight (another task finished it first): the `status = 'in_flight'` guard makes
/// finishing happen once.
pub async fn finish(
    conn: &mut AnyConnection,
    payment_hash: &str,
    f: &Finish<'_>,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE wallet_payments SET status = $2, fee_msat = $3, preimage = $4, failure_code = $5,
            failure_reason = $6, resolved_at_ms = $7, receipt_hash = $8
         WHERE payment_hash = $1 AND status = 'in_flight'",
    )
    .bind(payment_hash)
    .bind(f.status)
    .bind(f.fee.as_i64())
    .bind(f.preimage)
    .bind(f.failure_code)
    .bind(f.failure_reason)
    .bind(ms(f.resolved_at_ms)?)
    .bind(f.receipt_hash)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Adds `delta_msat` (negative to give back) to a spending bucket.
pub async fn add_to_bucket(
    conn: &mut AnyConnection,
    bucket: u64,
    delta_msat: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO wallet_spend_buckets (bucket, amount_msat) VALUES ($1, $2)
         ON CONFLICT (bucket) DO UPDATE SET amount_msat = wallet_spend_buckets.amount_msat + $2",
    )
    .bind(ms(bucket)?)
    .bind(delta_msat)
    .execute(conn)
    .await?;
    Ok(())
}

/// Total committed in buckets `>= from_bucket`.
pub async fn window_total(conn: &mut AnyConnection, from_bucket: u64) -> Result<Msat, StoreError> {
    let total: i64 = sqlx::query_scalar::<Any, i64>(
        "SELECT CAST(COALESCE(SUM(amount_msat), 0) AS BIGINT) FROM wallet_spend_buckets WHERE bucket >= $1",
    )
    .bind(ms(from_bucket)?)
    .fetch_one(conn)
    .await?;
    msat(total.max(0))
}
