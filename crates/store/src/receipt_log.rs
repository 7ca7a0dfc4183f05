//! The per-issuer receipt log: `log_index` 0, 1, 2, ... chained by `prev_hash`.
//!
//! A receipt is appended in the same transaction as the state change it records. The head row of
//! the issuer (`receipt_heads`) is bumped with `UPDATE ... RETURNING`, which takes its row lock on
//! PostgreSQL (and SQLite holds the database write lock already), so appenders of one issuer
//! serialize there and the chain never forks, even across replicas. Append it last in the
//! transaction to keep that lock short.
//!
//! The log is also an RFC 6962 Merkle tree whose leaves are the receipt hashes in `log_index`
//! order: [`ReceiptLog::checkpoint`] signs its head into `receipt_checkpoints`, and
//! [`leaf_hashes`] gives what inclusion and consistency proofs are computed from.

use std::sync::Arc;

use oa_receipts::{Checkpoint, Hash, Receipt, ReceiptDraft, ReceiptKey, merkle};
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

    /// Signs and stores a checkpoint of the log as it is now, unless the latest checkpoint
    /// already covers every receipt (then `None`). Replicas may race: the primary key keeps one
    /// checkpoint per size, and both candidates sign the same root, so losing is harmless.
    pub async fn checkpoint(
        &self,
        conn: &mut sqlx::AnyConnection,
        now_ms: u64,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let size = size(&mut *conn, &self.service).await?;
        let last = latest_checkpoint(&mut *conn, &self.service).await?;
        if size == 0 || last.as_ref().is_some_and(|c| c.tree_size >= size) {
            return Ok(None);
        }
        // Resume from the last checkpoint's frontier when it is there and reproduces its root,
        // so a checkpoint costs the receipts since the last one, not the whole log.
        let mut acc = match &last {
            Some(c) => latest_frontier(&mut *conn, &self.service, c.tree_size)
                .await?
                .filter(|acc| Hash::from_bytes(acc.root()) == c.root_hash)
                .unwrap_or_default(),
            None => merkle::Accumulator::default(),
        };
        for leaf in leaf_hashes_from(&mut *conn, &self.service, acc.size(), size).await? {
            acc.push(leaf);
        }
        let root = acc.root();
        let frontier = acc
            .frontier()
            .iter()
            .map(hex::encode)
            .collect::<Vec<_>>()
            .join(",");
        let cp = Checkpoint::sign(&self.key, &self.service, size, root);
        let stored = StoredCheckpoint {
            service: self.service.clone(),
            tree_size: size,
            root_hash: Hash::from_bytes(root),
            key_id: self.key.key_id().to_owned(),
            note: cp.note,
            created_at_ms: now_ms,
        };
        sqlx::query(
            "INSERT INTO receipt_checkpoints
               (issuer, tree_size, root_hash, key_id, note, created_at_ms, frontier)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (issuer, tree_size) DO NOTHING",
        )
        .bind(&self.service)
        .bind(to_i64(size)?)
        .bind(stored.root_hash.to_string())
        .bind(&stored.key_id)
        .bind(&stored.note)
        .bind(to_i64(now_ms)?)
        .bind(frontier)
        .execute(&mut *conn)
        .await?;
        Ok(Some(stored))
    }
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub service: String,
    pub tree_size: u64,
    pub root_hash: Hash,
    pub key_id: String,
    pub note: String,
    pub created_at_ms: u64,
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt("integer beyond i64".into()))
}

fn decode_checkpoint(row: &sqlx::any::AnyRow) -> Result<StoredCheckpoint, StoreError> {
    let num = |v: i64| {
        u64::try_from(v).map_err(|_| StoreError::Corrupt("negative checkpoint column".into()))
    };
    let root: String = row.try_get("root_hash")?;
    Ok(StoredCheckpoint {
        service: row.try_get("issuer")?,
        tree_size: num(row.try_get("tree_size")?)?,
        root_hash: Hash::parse(&root)
            .map_err(|e| StoreError::Corrupt(format!("checkpoint root: {e}")))?,
        key_id: row.try_get("key_id")?,
        note: row.try_get("note")?,
        created_at_ms: num(row.try_get("created_at_ms")?)?,
    })
}

const CHECKPOINT_COLUMNS: &str = "issuer, tree_size, root_hash, key_id, note, created_at_ms";

/// The newest checkpoint of `issuer`, if any.
pub async fn latest_checkpoint(
    conn: &mut sqlx::AnyConnection,
    issuer: &str,
) -> Result<Option<StoredCheckpoint>, StoreError> {
    let row = sqlx::query::<Any>(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints WHERE issuer = $1
         ORDER BY tree_size DESC LIMIT 1"
    )))
    .bind(issuer)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(decode_checkpoint).transpose()
}

/// Checkpoints of `issuer` with `tree_size > after_size`, oldest first, at most `limit` (capped).
pub async fn list_checkpoints(
    conn: &mut sqlx::AnyConnection,
    issuer: &str,
    after_size: u64,
    limit: u32,
) -> Result<Vec<StoredCheckpoint>, StoreError> {
    let rows = sqlx::query::<Any>(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints WHERE issuer = $1 AND tree_size > $2
         ORDER BY tree_size LIMIT $3"
    )))
    .bind(issuer)
    .bind(i64::try_from(after_size).unwrap_or(i64::MAX))
    .bind(i64::from(limit.min(MAX_PAGE)))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode_checkpoint).collect()
}

/// The stored frontier of `issuer`'s checkpoint at `tree_size`, if it has a well-formed one.
async fn latest_frontier(
    conn: &mut sqlx::AnyConnection,
    issuer: &str,
    tree_size: u64,
) -> Result<Option<merkle::Accumulator>, StoreError> {
    let text: Option<Option<String>> = sqlx::query_scalar::<Any, Option<String>>(
        "SELECT frontier FROM receipt_checkpoints WHERE issuer = $1 AND tree_size = $2",
    )
    .bind(issuer)
    .bind(to_i64(tree_size)?)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(text) = text.flatten() else {
        return Ok(None);
    };
    let digests: Option<Vec<merkle::Digest>> = text
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|h| {
            let mut d = [0u8; 32];
            hex::decode_to_slice(h, &mut d).ok().map(|()| d)
        })
        .collect();
    Ok(digests.and_then(|d| merkle::Accumulator::from_frontier(tree_size, &d)))
}

/// Merkle leaf hashes of `issuer`'s receipts with `from <= log_index < to`, in order. Fails if
/// any is missing.
async fn leaf_hashes_from(
    conn: &mut sqlx::AnyConnection,
    issuer: &str,
    from: u64,
    to: u64,
) -> Result<Vec<merkle::Digest>, StoreError> {
    let hashes: Vec<String> = sqlx::query_scalar::<Any, String>(
        "SELECT hash FROM receipts WHERE issuer = $1 AND log_index >= $2 AND log_index < $3
         ORDER BY log_index",
    )
    .bind(issuer)
    .bind(to_i64(from)?)
    .bind(to_i64(to)?)
    .fetch_all(&mut *conn)
    .await?;
    if hashes.len() as u64 != to.saturating_sub(from) {
        return Err(StoreError::Corrupt(format!(
            "log of {issuer} has {} receipts in {from}..{to}",
            hashes.len()
        )));
    }
    hashes
        .iter()
        .map(|h| {
            Hash::parse(h)
                .map(|h| merkle::leaf_hash(h.as_bytes()))
                .map_err(|e| StoreError::Corrupt(format!("stored hash: {e}")))
        })
        .collect()
}

/// The Merkle leaf hashes of `issuer`'s log: `SHA-256(0x00 || hash)` of the raw bytes of each of
/// the first `tree_size` receipt hashes, in `log_index` order. Fails if the log is shorter.
pub async fn leaf_hashes(
    conn: &mut sqlx::AnyConnection,
    issuer: &str,
    tree_size: u64,
) -> Result<Vec<merkle::Digest>, StoreError> {
    leaf_hashes_from(conn, issuer, 0, tree_size).await
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

/// The receipt a row recorded by hash, if it has one yet (`None` while the work is in flight).
pub async fn get_stored(
    conn: &mut sqlx::AnyConnection,
    hash: Option<&str>,
) -> Result<Option<Receipt>, StoreError> {
    let Some(hash) = hash else {
        return Ok(None);
    };
    let hash =
        Hash::parse(hash).map_err(|e| StoreError::Corrupt(format!("stored receipt hash: {e}")))?;
    get_by_hash(conn, &hash).await
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
