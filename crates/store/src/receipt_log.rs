//! The per-issuer receipt log: `log_index` 0, 1, 2, ... chained by `prev_hash`.
//!
//! A receipt is appended in the same transaction as the state change it records. The head row of
//! the issuer (`receipt_heads`) is read with a no-op upsert `... RETURNING`, which takes its row
//! lock on PostgreSQL (and SQLite holds the database write lock already), so appenders of one
//! issuer serialize there and the chain never forks, even across replicas. Append last in the
//! transaction to keep that lock short. [`ReceiptLog::batch`] appends many receipts with the
//! same three statements as one (group commit of several callers' results).
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
        let mut batch = self.batch(&mut *conn).await?;
        let receipt = batch.seal(draft, now_ms)?.clone();
        batch.store(conn).await?;
        Ok(receipt)
    }

    /// Starts appending several receipts in the caller's transaction: locks the issuer's head
    /// row (until the transaction ends) and reads it. Seal receipts with [`Batch::seal`], then
    /// write them all with [`Batch::store`]; a batch dropped without `store` leaves the log as
    /// it was. Costs two round trips however many receipts the batch holds (up to
    /// `RECEIPTS_PER_STATEMENT`).
    pub async fn batch(&self, conn: &mut sqlx::AnyConnection) -> Result<Batch<'_>, StoreError> {
        // Creates the head on the first append; otherwise a no-op update, which takes the head's
        // row lock on PostgreSQL (SQLite holds the database write lock already) and reads it, in
        // one statement either way.
        let row = sqlx::query::<Any>(
            "INSERT INTO receipt_heads (issuer, size, head_hash) VALUES ($1, 0, $2)
             ON CONFLICT (issuer) DO UPDATE SET size = receipt_heads.size
             RETURNING size, head_hash",
        )
        .bind(&self.service)
        .bind(Hash::ZERO.to_string())
        .fetch_one(&mut *conn)
        .await?;
        let size: i64 = row.try_get("size")?;
        let head: String = row.try_get("head_hash")?;
        let base = u64::try_from(size)
            .map_err(|_| StoreError::Corrupt("receipt log size below 0".into()))?;
        let head = Hash::parse(&head)
            .map_err(|e| StoreError::Corrupt(format!("receipt head hash: {e}")))?;
        Ok(Batch {
            log: self,
            base,
            head,
            sealed: Vec::new(),
        })
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

/// Receipts being appended to one issuer's log in one transaction (see [`ReceiptLog::batch`]).
pub struct Batch<'a> {
    log: &'a ReceiptLog,
    /// Log size when the batch started: the index of its first receipt.
    base: u64,
    /// Head hash when the batch started.
    head: Hash,
    sealed: Vec<Receipt>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("issuer", &self.log.service)
            .field("base", &self.base)
            .field("sealed", &self.sealed.len())
            .finish()
    }
}

/// Columns of one stored receipt row.
const RECEIPT_COLUMNS: usize = 8;
/// Receipt rows per multi-row statement (8 parameters each).
const RECEIPTS_PER_STATEMENT: usize = 256;

impl Batch<'_> {
    /// Seals `draft` as the next receipt of the batch (in memory; chained to the one before).
    pub fn seal(&mut self, draft: ReceiptDraft, now_ms: u64) -> Result<&Receipt, StoreError> {
        let count = u64::try_from(self.sealed.len())
            .map_err(|_| StoreError::Corrupt("receipt batch too large".into()))?;
        let prev = self.sealed.last().map_or(self.head, |r| r.hash);
        let receipt = draft.seal(
            &self.log.key,
            &self.log.service,
            self.base + count,
            prev,
            now_ms,
        )?;
        self.sealed.push(receipt);
        self.sealed
            .last()
            .ok_or_else(|| StoreError::Corrupt("sealed receipt vanished".into()))
    }

    /// Takes back the last sealed receipt (the change it recorded did not happen after all).
    pub fn unseal_last(&mut self) -> Option<Receipt> {
        self.sealed.pop()
    }

    /// How many receipts the batch holds.
    pub fn len(&self) -> usize {
        self.sealed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sealed.is_empty()
    }

    /// Writes the sealed receipts and moves the head past them, in the batch's transaction. The
    /// last (usually the only) insert and the head's update are one round trip: a
    /// data-modifying `WITH` on PostgreSQL, one command of two statements on SQLite.
    pub async fn store(self, conn: &mut sqlx::AnyConnection) -> Result<Vec<Receipt>, StoreError> {
        let Some(last) = self.sealed.last() else {
            return Ok(self.sealed);
        };
        let sqlite = crate::sql::is_sqlite(conn);
        let size = i64::try_from(last.log_index + 1)
            .map_err(|_| StoreError::Corrupt("receipt log size overflow".into()))?;
        let chunks = self.sealed.chunks(RECEIPTS_PER_STATEMENT);
        let n = chunks.len();
        for (i, chunk) in chunks.enumerate() {
            // The last chunk moves the head too.
            let last_chunk = i + 1 == n;
            let insert = format!(
                "INSERT INTO receipts
                   (issuer, log_index, receipt_id, hash, schema_name, idempotency_key, issued_at_ms, json)
                 VALUES {}",
                crate::sql::row_placeholders(sqlite, chunk.len(), RECEIPT_COLUMNS)
            );
            let sql = if !last_chunk {
                insert
            } else {
                let p = |k| crate::sql::param(sqlite, chunk.len() * RECEIPT_COLUMNS + k);
                let update = format!(
                    "UPDATE receipt_heads SET size = {}, head_hash = {} WHERE issuer = {}",
                    p(1),
                    p(2),
                    p(3)
                );
                if sqlite {
                    format!("{insert}; {update}")
                } else {
                    format!("WITH stored AS ({insert}) {update}")
                }
            };
            let mut q = sqlx::query::<Any>(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                let json = serde_json::to_string(r)
                    .map_err(|e| StoreError::Corrupt(format!("receipt json: {e}")))?;
                q =
                    q.bind(self.log.service.clone())
                        .bind(i64::try_from(r.log_index).map_err(|_| {
                            StoreError::Corrupt("receipt log index overflow".into())
                        })?)
                        .bind(r.receipt_id.clone())
                        .bind(r.hash.to_string())
                        .bind(r.schema.clone())
                        .bind(r.idempotency_key.clone())
                        .bind(
                            i64::try_from(r.issued_at_ms)
                                .map_err(|_| StoreError::Corrupt("time overflow".into()))?,
                        )
                        .bind(json);
            }
            if last_chunk {
                q = q
                    .bind(size)
                    .bind(last.hash.to_string())
                    .bind(self.log.service.clone());
            }
            q.execute(&mut *conn).await?;
        }
        Ok(self.sealed)
    }
}

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
