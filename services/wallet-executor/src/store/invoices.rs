//! SQL for our node's invoices and their recorded settlements.

use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

use super::{ms, msat, unsigned};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceRow {
    pub payment_hash: String,
    pub idempotency_scope: Option<String>,
    pub idempotency_key: Option<String>,
    pub bolt11: String,
    pub amount: Msat,
    pub add_index: u64,
    pub created_at_ms: u64,
    pub settle_index: Option<u64>,
    pub amount_paid: Option<Msat>,
    pub settled_at_ms: Option<u64>,
    pub receipt_hash: Option<String>,
}

const COLUMNS: &str = "payment_hash, idempotency_scope, idempotency_key, bolt11, amount_msat, add_index, \
    created_at_ms, settle_index, amount_paid_msat, settled_at_ms, receipt_hash";

fn decode(r: &AnyRow) -> Result<InvoiceRow, StoreError> {
    let opt = |name: &str| -> Result<Option<u64>, StoreError> {
        r.try_get::<Option<i64>, _>(name)?.map(unsigned).transpose()
    };
    Ok(InvoiceRow {
        payment_hash: r.try_get("payment_hash")?,
        idempotency_scope: r.try_get("idempotency_scope")?,
        idempotency_key: r.try_get("idempotency_key")?,
        bolt11: r.try_get("bolt11")?,
        amount: msat(r.try_get("amount_msat")?)?,
        add_index: unsigned(r.try_get("add_index")?)?,
        created_at_ms: unsigned(r.try_get("created_at_ms")?)?,
        settle_index: opt("settle_index")?,
        amount_paid: r
            .try_get::<Option<i64>, _>("amount_paid_msat")?
            .map(msat)
            .transpose()?,
        settled_at_ms: opt("settled_at_ms")?,
        receipt_hash: r.try_get("receipt_hash")?,
    })
}

/// Inserts an invoice row; returns false if a row for this payment hash exists already.
pub async fn insert_if_absent(
    conn: &mut AnyConnection,
    i: &InvoiceRow,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO wallet_invoices (payment_hash, idempotency_scope, idempotency_key, bolt11,
            amount_msat, add_index, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (payment_hash) DO NOTHING",
    )
    .bind(&i.payment_hash)
    .bind(i.idempotency_scope.as_deref())
    .bind(i.idempotency_key.as_deref())
    .bind(&i.bolt11)
    .bind(i.amount.as_i64())
    .bind(ms(i.add_index)?)
    .bind(ms(i.created_at_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn get(
    conn: &mut AnyConnection,
    payment_hash: &str,
) -> Result<Option<InvoiceRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wallet_invoices WHERE payment_hash = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(payment_hash)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Records a settlement once: false if this invoice's settlement was recorded before.
pub async fn record_settlement(
    conn: &mut AnyConnection,
    payment_hash: &str,
    settle_index: u64,
    amount_paid: Msat,
    settled_at_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE wallet_invoices SET settle_index = $2, amount_paid_msat = $3, settled_at_ms = $4
         WHERE payment_hash = $1 AND settle_index IS NULL",
    )
    .bind(payment_hash)
    .bind(ms(settle_index)?)
    .bind(amount_paid.as_i64())
    .bind(ms(settled_at_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn set_receipt_hash(
    conn: &mut AnyConnection,
    payment_hash: &str,
    hash: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE wallet_invoices SET receipt_hash = $2 WHERE payment_hash = $1")
        .bind(payment_hash)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// The highest settle index recorded (0 if none): where the settlement follower resumes.
pub async fn last_settle_index(conn: &mut AnyConnection) -> Result<u64, StoreError> {
    let v: i64 = sqlx::query_scalar::<Any, i64>(
        "SELECT CAST(COALESCE(MAX(settle_index), 0) AS BIGINT) FROM wallet_invoices",
    )
    .fetch_one(conn)
    .await?;
    unsigned(v)
}

/// Recorded settlements with a settle index above `after`, in order, at most `limit`.
pub async fn settled_after(
    conn: &mut AnyConnection,
    after: u64,
    limit: u32,
) -> Result<Vec<InvoiceRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wallet_invoices WHERE settle_index > $1 ORDER BY settle_index LIMIT $2"
    ));
    sqlx::query::<Any>(sql)
        .bind(ms(after)?)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?
        .iter()
        .map(decode)
        .collect()
}
