//! SQL for channel actions (open, close, rebalance).

use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

use super::{ms, msat, unsigned};

pub const PENDING: &str = "pending";
pub const IN_FLIGHT: &str = "in_flight";
pub const DONE: &str = "done";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionRow {
    pub id: String,
    pub idempotency_scope: String,
    pub idempotency_key: String,
    /// `open`, `close` or `rebalance`.
    pub kind: String,
    pub requested_by: String,
    /// The request as the caller sent it (proto JSON), to re-drive or report it.
    pub request_json: String,
    /// What the action counts against the spending window (a rebalance's fee limit).
    pub committed: Msat,
    pub status: String,
    pub payment_hash: Option<String>,
    pub created_at_ms: u64,
    pub resolved_at_ms: Option<u64>,
    pub receipt_hash: Option<String>,
    pub response_json: Option<String>,
    pub outcome: Option<String>,
}

const COLUMNS: &str = "id, idempotency_scope, idempotency_key, kind, requested_by, request_json, \
    committed_msat, status, payment_hash, created_at_ms, resolved_at_ms, receipt_hash, response_json, outcome";

fn decode(r: &AnyRow) -> Result<ActionRow, StoreError> {
    Ok(ActionRow {
        id: r.try_get("id")?,
        idempotency_scope: r.try_get("idempotency_scope")?,
        idempotency_key: r.try_get("idempotency_key")?,
        kind: r.try_get("kind")?,
        requested_by: r.try_get("requested_by")?,
        request_json: r.try_get("request_json")?,
        committed: msat(r.try_get("committed_msat")?)?,
        status: r.try_get("status")?,
        payment_hash: r.try_get("payment_hash")?,
        created_at_ms: unsigned(r.try_get("created_at_ms")?)?,
        resolved_at_ms: r
            .try_get::<Option<i64>, _>("resolved_at_ms")?
            .map(unsigned)
            .transpose()?,
        receipt_hash: r.try_get("receipt_hash")?,
        response_json: r.try_get("response_json")?,
        outcome: r.try_get("outcome")?,
    })
}

pub async fn insert(conn: &mut AnyConnection, row: &ActionRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO wallet_channel_actions (id, idempotency_scope, idempotency_key, kind,
            requested_by, request_json, committed_msat, status, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&row.id)
    .bind(&row.idempotency_scope)
    .bind(&row.idempotency_key)
    .bind(&row.kind)
    .bind(&row.requested_by)
    .bind(&row.request_json)
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
) -> Result<Option<ActionRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wallet_channel_actions WHERE idempotency_scope = $1 AND idempotency_key = $2"
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

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<ActionRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wallet_channel_actions WHERE id = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Actions in `status` (for recovery after a restart), oldest first.
pub async fn with_status(
    conn: &mut AnyConnection,
    status: &str,
    limit: u32,
) -> Result<Vec<ActionRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wallet_channel_actions WHERE status = $1 ORDER BY created_at_ms LIMIT $2"
    ));
    sqlx::query::<Any>(sql)
        .bind(status)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// A rebalance the node left in flight: recorded with its payment hash, to be tracked.
pub async fn set_in_flight(
    conn: &mut AnyConnection,
    id: &str,
    payment_hash: &str,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE wallet_channel_actions SET status = 'in_flight', payment_hash = $2
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(payment_hash)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Ends an action once: false if it had ended (or been undone) already. The receipt follows in
/// the same transaction ([`set_result`]).
pub async fn finish(
    conn: &mut AnyConnection,
    id: &str,
    payment_hash: Option<&str>,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE wallet_channel_actions
         SET status = 'done', payment_hash = COALESCE($2, payment_hash), resolved_at_ms = $3
         WHERE id = $1 AND status <> 'done'",
    )
    .bind(id)
    .bind(payment_hash)
    .bind(ms(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Stores the receipt hash and the final answer of an action that just ended.
pub async fn set_result(
    conn: &mut AnyConnection,
    id: &str,
    receipt_hash: &str,
    response_json: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE wallet_channel_actions SET receipt_hash = $2, response_json = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(receipt_hash)
    .bind(response_json)
    .execute(conn)
    .await?;
    Ok(())
}

/// The action of `kind` that was receipted for `outcome`, if any.
pub async fn by_outcome(
    conn: &mut AnyConnection,
    kind: &str,
    outcome: &str,
) -> Result<Option<ActionRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wallet_channel_actions WHERE kind = $1 AND outcome = $2"
    ));
    sqlx::query::<Any>(sql)
        .bind(kind)
        .bind(outcome)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Claims `outcome` for action `id`; the unique index on (kind, outcome) makes a second claim
/// fail (a unique violation), so one action per outcome carries its receipt.
pub async fn set_outcome(
    conn: &mut AnyConnection,
    id: &str,
    outcome: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE wallet_channel_actions SET outcome = $2 WHERE id = $1")
        .bind(id)
        .bind(outcome)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes an action the node refused (nothing happened); false if it was no longer pending.
pub async fn delete_pending(conn: &mut AnyConnection, id: &str) -> Result<bool, StoreError> {
    let n = sqlx::query("DELETE FROM wallet_channel_actions WHERE id = $1 AND status = 'pending'")
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}
