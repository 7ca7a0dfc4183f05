//! SQL for Hydra's quotes; the submodules hold the SQL of the other concerns.

pub mod credit;
pub mod funds;
pub mod fx;
pub mod routing;

use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

pub const OPEN: &str = "open";
pub const PAYING: &str = "paying";
pub const PAID: &str = "paid";
pub const FAILED: &str = "failed";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteRow {
    pub quote_id: String,
    pub payment_hash: String,
    pub invoice: String,
    pub amount: Msat,
    pub fee_limit: Msat,
    pub payer_ref: String,
    pub state: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub pay_idempotency_key: Option<String>,
    pub pay_idempotency_scope: Option<String>,
    pub fee: Msat,
    pub preimage: Option<String>,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub executor_receipt: Option<String>,
    pub receipt_hash: Option<String>,
}

const COLUMNS: &str = "quote_id, payment_hash, invoice, amount_msat, fee_limit_msat, payer_ref, state, created_at_ms, \
    expires_at_ms, pay_idempotency_key, pay_idempotency_scope, fee_msat, preimage, failure_code, failure_reason, \
    executor_receipt, receipt_hash";

pub(crate) fn i(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt("integer overflow".into()))
}

pub(crate) fn u(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative integer".into()))
}

pub(crate) fn msat(v: i64) -> Result<Msat, StoreError> {
    Msat::from_i64(v).map_err(|e| StoreError::Corrupt(format!("amount: {e}")))
}

pub(crate) fn opt_u(v: Option<i64>) -> Result<Option<u64>, StoreError> {
    v.map(u).transpose()
}

pub(crate) fn opt_msat(v: Option<i64>) -> Result<Option<Msat>, StoreError> {
    v.map(msat).transpose()
}

fn decode(r: &AnyRow) -> Result<QuoteRow, StoreError> {
    Ok(QuoteRow {
        quote_id: r.try_get("quote_id")?,
        payment_hash: r.try_get("payment_hash")?,
        invoice: r.try_get("invoice")?,
        amount: msat(r.try_get("amount_msat")?)?,
        fee_limit: msat(r.try_get("fee_limit_msat")?)?,
        payer_ref: r.try_get("payer_ref")?,
        state: r.try_get("state")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        expires_at_ms: u(r.try_get("expires_at_ms")?)?,
        pay_idempotency_key: r.try_get("pay_idempotency_key")?,
        pay_idempotency_scope: r.try_get("pay_idempotency_scope")?,
        fee: msat(r.try_get("fee_msat")?)?,
        preimage: r.try_get("preimage")?,
        failure_code: r.try_get("failure_code")?,
        failure_reason: r.try_get("failure_reason")?,
        executor_receipt: r.try_get("executor_receipt")?,
        receipt_hash: r.try_get("receipt_hash")?,
    })
}

/// The idempotency record a quote carries: who asked (`scope`), their key, and the fingerprint
/// of their request.
pub struct QuoteKey {
    pub scope: String,
    pub key: String,
    pub fingerprint: String,
}

/// Inserts a new open quote under its caller's idempotency key, in one statement. Returns
/// `false`, inserting nothing, when the key already named a quote.
pub async fn insert(
    conn: &mut AnyConnection,
    q: &QuoteRow,
    key: &QuoteKey,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO hydra_quotes (quote_id, payment_hash, invoice, amount_msat, fee_limit_msat, payer_ref, state,
            created_at_ms, expires_at_ms, fee_msat, updated_at_ms,
            quote_idempotency_scope, quote_idempotency_key, quote_fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8, 0, $7, $9, $10, $11)
         ON CONFLICT (quote_idempotency_scope, quote_idempotency_key) DO NOTHING",
    )
    .bind(&q.quote_id)
    .bind(&q.payment_hash)
    .bind(&q.invoice)
    .bind(q.amount.as_i64())
    .bind(q.fee_limit.as_i64())
    .bind(&q.payer_ref)
    .bind(i(q.created_at_ms)?)
    .bind(i(q.expires_at_ms)?)
    .bind(key.scope.as_str())
    .bind(key.key.as_str())
    .bind(key.fingerprint.as_str())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// The quote created under a quote_pay key, with the fingerprint of the request that created it.
pub async fn by_quote_key(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
) -> Result<Option<(QuoteRow, String)>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, quote_fingerprint FROM hydra_quotes
         WHERE quote_idempotency_scope = $1 AND quote_idempotency_key = $2"
    ));
    let Some(r) = sqlx::query::<Any>(sql)
        .bind(scope)
        .bind(key)
        .fetch_optional(conn)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some((decode(&r)?, r.try_get("quote_fingerprint")?)))
}

/// The quote a pay key started paying.
pub async fn by_pay_key(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
) -> Result<Option<QuoteRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM hydra_quotes WHERE pay_idempotency_scope = $1 AND pay_idempotency_key = $2"
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

pub async fn get(conn: &mut AnyConnection, quote_id: &str) -> Result<Option<QuoteRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM hydra_quotes WHERE quote_id = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(quote_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Starts paying a quote: `open -> paying`, only while it is unexpired. The guard makes this the
/// single point where a quote's payment starts, however many callers race for it. Returns the
/// quote as it now is when this call started it. The pay key is unique per scope: a key that
/// already started another quote fails with a unique violation.
pub async fn start_paying(
    conn: &mut AnyConnection,
    quote_id: &str,
    scope: &str,
    key: &str,
    now_ms: u64,
) -> Result<Option<QuoteRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE hydra_quotes SET state = 'paying', pay_idempotency_scope = $2, pay_idempotency_key = $3, updated_at_ms = $4
         WHERE quote_id = $1 AND state = 'open' AND expires_at_ms > $4
         RETURNING {COLUMNS}"
    ));
    sqlx::query::<Any>(sql)
        .bind(quote_id)
        .bind(scope)
        .bind(key)
        .bind(i(now_ms)?)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// `paying -> paid|failed` with its receipt, once.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    conn: &mut AnyConnection,
    quote_id: &str,
    state: &str,
    fee: Msat,
    preimage: Option<&str>,
    failure_code: Option<&str>,
    failure_reason: Option<&str>,
    executor_receipt: Option<&str>,
    receipt_hash: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_quotes SET state = $2, fee_msat = $3, preimage = $4, failure_code = $5, failure_reason = $6,
            executor_receipt = $7, receipt_hash = $8, updated_at_ms = $9
         WHERE quote_id = $1 AND state = 'paying'",
    )
    .bind(quote_id)
    .bind(state)
    .bind(fee.as_i64())
    .bind(preimage)
    .bind(failure_code)
    .bind(failure_reason)
    .bind(executor_receipt)
    .bind(receipt_hash)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn paying(
    conn: &mut AnyConnection,
    updated_before_ms: u64,
    limit: u32,
) -> Result<Vec<QuoteRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM hydra_quotes WHERE state = 'paying' AND updated_at_ms <= $2 \
         ORDER BY created_at_ms LIMIT $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(i64::from(limit))
        .bind(i64::try_from(updated_before_ms).unwrap_or(i64::MAX))
        .fetch_all(conn)
        .await?
        .iter()
        .map(decode)
        .collect()
}

pub async fn count_open(conn: &mut AnyConnection, now_ms: u64) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar::<Any, i64>(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM hydra_quotes WHERE state = 'open' AND expires_at_ms > $1",
    )
    .bind(i(now_ms)?)
    .fetch_one(conn)
    .await?;
    u(n)
}
