//! The per-issuer receipt log: `log_index` 0, 1, 2, ... chained by `prev_hash`.
//!
//! A receipt is appended in the same transaction as the state change it records. The head row of
//! the issuer (`receipt_heads`) is bumped with `UPDATE ... RETURNING`, which takes its row lock on
//! PostgreSQL (and SQLite holds the database write lock already), so appenders of one issuer
//! serialize there and the chain never forks, even across replicas. Append it last in the
//! transaction to keep that lock short.

use std::sync::Arc;

use oa_receipts::{Hash, Receipt, ReceiptDraft, ReceiptKey};
use sqlx::{Any, Row};

use crate::StoreError;

/// Largest page of receipts one read returns.
pub const MAX_PAGE: u32 = 1_000;

/// Appends receipts for one issuer (a service) signed with its key.
#[derive(Clone)]
pub struct ReceiptLog {
    service: String,
    key: Arc<ReceiptKey>,
}

impl std::fmt::Debug for ReceiptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptLog")
            .field("service", &self.service)
            .field("key_id", &self.key.key_id())
            .finish()
    }
}

impl ReceiptLog {
    pub fn new(service: impl Into<String>, key: Arc<ReceiptKey>) -> Self {
        Self {
            service: service.into(),
            key,
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn key_id(&self) -> String {
        self.key.key_id().to_owned()
    }

    /// Seals `draft` as the issuer's next receipt and stores it, in the caller's transaction.
    pub async fn append(
        &self,
        conn: &mut sqlx::AnyConnection,
        draft: ReceiptDraft,
        now_ms: u64,
    ) -> Result<Receipt, StoreError> {
        sqlx::query(
            "INSERT INTO receipt_heads (issuer, size, head_hash) VALUES ($1, 0, $2)
             ON CONFLICT (issuer) DO NOTHING",
        )
        .bind(&self.service)
        .bind(Hash::ZERO.to_string())
        .execute(&mut *conn)
        .await?;
        let row = sqlx::query::<Any>(
            "UPDATE receipt_heads SET size = size + 1 WHERE issuer = $1 RETURNING size, head_hash",
        )
        .bind(&self.service)
        .fetch_one(&mut *conn)
        .await?;
        let size: i64 = row.try_get("size")?;
        let head: String = row.try_get("head_hash")?;
        let log_index = u64::try_from(size - 1)
            .map_err(|_| StoreError::Corrupt("receipt log size below 1".into()))?;
        let prev_hash = Hash::parse(&head)
            .map_err(|e| StoreError::Corrupt(format!("receipt head hash: {e}")))?;
        let receipt = draft.seal(&self.key, &self.service, log_index, prev_hash, now_ms)?;
        let json = serde_json::to_string(&receipt)
            .map_err(|e| StoreError::Corrupt(format!("receipt json: {e}")))?;
        sqlx::query(
            "INSERT INTO receipts
               (issuer, log_index, receipt_id, hash, schema_name, idempotency_key, issued_at_ms, json)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&self.service)
        .bind(size - 1)
        .bind(&receipt.receipt_id)
        .bind(receipt.hash.to_string())
        .bind(&receipt.schema)
        .bind(&receipt.idempotency_key)
        .bind(i64::try_from(now_ms).map_err(|_| StoreError::Corrupt("time overflow".into()))?)
        .bind(json)
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE receipt_heads SET head_hash = $2 WHERE issuer = $1")
            .bind(&self.service)
            .bind(receipt.hash.to_string())
            .execute(&mut *conn)
            .await?;
        Ok(receipt)
    }
}

/// Receipts of `issuer` from `from_log_index` on, oldest first, at most `limit` (capped).
pub async fn list(
    conn: &mut sqlx::AnyConnection,
    issuer: &str,
    from_log_index: u64,
    limit: u32,
) -> Result<Vec<Receipt>, StoreError> {
    let rows = sqlx::query::<Any>(
        "SELECT json FROM receipts WHERE issuer = $1 AND log_index >= $2 ORDER BY log_index LIMIT $3",
    )
    .bind(issuer)
    .bind(i64::try_from(from_log_index).unwrap_or(i64::MAX))
    .bind(i64::from(limit.min(MAX_PAGE)))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode).collect()
}

/// The receipt with this hash, if this store issued it.
pub async fn get_by_hash(
    conn: &mut sqlx::AnyConnection,
    hash: &Hash,
) -> Result<Option<Receipt>, StoreError> {
    let row = sqlx::query::<Any>("SELECT json FROM receipts WHERE hash = $1")
        .bind(hash.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(decode).transpose()
}

/// Number of receipts `issuer` has logged.
pub async fn size(conn: &mut sqlx::AnyConnection, issuer: &str) -> Result<u64, StoreError> {
    let size: Option<i64> =
        sqlx::query_scalar::<Any, i64>("SELECT size FROM receipt_heads WHERE issuer = $1")
            .bind(issuer)
            .fetch_optional(&mut *conn)
            .await?;
    u64::try_from(size.unwrap_or(0)).map_err(|_| StoreError::Corrupt("negative size".into()))
}

fn decode(row: &sqlx::any::AnyRow) -> Result<Receipt, StoreError> {
    let json: String = row.try_get("json")?;
    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("stored receipt: {e}")))
}
