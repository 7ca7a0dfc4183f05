//! SQL for on-chain sends.

use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

use super::{ms, msat, unsigned};

pub const PENDING: &str = "pending";
pub const SENT: &str = "sent";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendRow {
    /// Also the label the node knows the send by.
    pub id: String,
    pub idempotency_scope: String,
    pub idempotency_key: String,
    pub requested_by: String,
    pub address: String,
    pub amount: Msat,
    pub sat_per_vbyte: u64,
    /// What the send counts against the spending window.
    pub committed: Msat,
    pub status: String,
    pub txid: Option<String>,
    pub created_at_ms: u64,
    pub sent_at_ms: Option<u64>,
    pub receipt_hash: Option<String>,
}

const COLUMNS: &str = "id, idempotency_scope, idempotency_key, requested_by, address, amount_msat, \
    sat_per_vbyte, committed_msat, status, txid, created_at_ms, sent_at_ms, receipt_hash";

fn decode(r: &AnyRow) -> Result<SendRow, StoreError> {
    Ok(SendRow {
        id: r.try_get("id")?,
        idempotency_scope: r.try_get("idempotency_scope")?,
        idempotency_key: r.try_get("idempotency_key")?,
        requested_by: r.try_get("requested_by")?,
        address: r.try_get("address")?,
        amount: msat(r.try_get("amount_msat")?)?,
        sat_per_vbyte: unsigned(r.try_get("sat_per_vbyte")?)?,
        committed: msat(r.try_get("committed_msat")?)?,
        status: r.try_get("status")?,
        txid: r.try_get("txid")?,
        created_at_ms: unsigned(r.try_get("created_at_ms")?)?,
        sent_at_ms: r
            .try_get::<Option<i64>, _>("sent_at_ms")?
            .map(unsigned)
            .transpose()?,
        receipt_hash: r.try_get("receipt_hash")?,
    })
}

pub async fn insert(conn: &mut AnyConnection, row: &SendRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO wallet_onchain_sends (id, idempotency_scope, idempotency_key, requested_by,
            address, amount_msat, sat_per_vbyte, committed_msat, status, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&row.id)
    .bind(&row.idempotency_scope)
    .bind(&row.idempotency_key)
    .bind(&row.requested_by)
    .bind(&row.address)
    .bind(row.amount.as_i64())
    .bind(ms(row.sat_per_vbyte)?)
    .bind(row.committed.as_i64())
    .bind(&row.status)
    .bind(ms(row.created_at_ms)?)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_by_key(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
) -> Result<Option<SendRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wallet_onchain_sends WHERE idempotency_scope = $1 AND idempotency_key = $2"
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

/// Sends whose outcome is not recorded yet (for recovery after a restart), oldest first.
pub async fn pending(conn: &mut AnyConnection, limit: u32) -> Result<Vec<SendRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wallet_onchain_sends WHERE status = 'pending' ORDER BY created_at_ms LIMIT $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// Records the send's transaction once: false if it was recorded (or undone) before.
pub async fn mark_sent(
    conn: &mut AnyConnection,
    id: &str,
    txid: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE wallet_onchain_sends SET status = 'sent', txid = $2, sent_at_ms = $3
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(txid)
    .bind(ms(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn set_receipt_hash(
    conn: &mut AnyConnection,
    id: &str,
    hash: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE wallet_onchain_sends SET receipt_hash = $2 WHERE id = $1")
        .bind(id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes a send the node refused (nothing was sent); false if it was no longer pending.
pub async fn delete_pending(conn: &mut AnyConnection, id: &str) -> Result<bool, StoreError> {
    let n = sqlx::query("DELETE FROM wallet_onchain_sends WHERE id = $1 AND status = 'pending'")
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}
