//! SQL for deposits, withdrawals and the stream cursors (migration 0005).

use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

use super::{i, msat, opt_msat, opt_u, u};

pub const DEPOSIT_OPEN: &str = "open";
pub const DEPOSIT_CREDITED: &str = "credited";

pub const WD_QUEUED: &str = "queued";
pub const WD_PAYING: &str = "paying";
pub const WD_PAID: &str = "paid";
pub const WD_FAILED: &str = "failed";

/// A time after every `not_before_ms` (about 146 million years from 1970), for "all, due or not".
const FAR_FUTURE_MS: u64 = 1 << 62;

/// The cursor of the executor's invoice settlement stream.
pub const CURSOR_SETTLEMENTS: &str = "invoice_settlements";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositRow {
    pub deposit_id: String,
    pub caller: String,
    pub agent_id: String,
    pub method: String,
    pub amount: Msat,
    pub payment_hash: String,
    pub invoice: String,
    pub state: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub idempotency_scope: String,
    pub idempotency_key: String,
    pub credited: Option<Msat>,
    pub settle_index: Option<u64>,
    pub credited_at_ms: Option<u64>,
    pub executor_receipt: Option<String>,
    pub receipt_hash: Option<String>,
}

const DEPOSIT_COLUMNS: &str = "deposit_id, caller, agent_id, method, amount_msat, payment_hash, invoice, state, \
    created_at_ms, expires_at_ms, idempotency_scope, idempotency_key, credited_msat, settle_index, credited_at_ms, \
    executor_receipt, receipt_hash";

fn decode_deposit(r: &AnyRow) -> Result<DepositRow, StoreError> {
    Ok(DepositRow {
        deposit_id: r.try_get("deposit_id")?,
        caller: r.try_get("caller")?,
        agent_id: r.try_get("agent_id")?,
        method: r.try_get("method")?,
        amount: msat(r.try_get("amount_msat")?)?,
        payment_hash: r.try_get("payment_hash")?,
        invoice: r.try_get("invoice")?,
        state: r.try_get("state")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        expires_at_ms: u(r.try_get("expires_at_ms")?)?,
        idempotency_scope: r.try_get("idempotency_scope")?,
        idempotency_key: r.try_get("idempotency_key")?,
        credited: opt_msat(r.try_get("credited_msat")?)?,
        settle_index: opt_u(r.try_get("settle_index")?)?,
        credited_at_ms: opt_u(r.try_get("credited_at_ms")?)?,
        executor_receipt: r.try_get("executor_receipt")?,
        receipt_hash: r.try_get("receipt_hash")?,
    })
}

/// Records an open deposit. A payment hash recorded before (the executor replayed the same
/// invoice) inserts nothing; returns whether the row is new.
pub async fn insert_deposit(conn: &mut AnyConnection, d: &DepositRow) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO hydra_deposits (deposit_id, caller, agent_id, method, amount_msat, payment_hash, invoice,
            state, created_at_ms, expires_at_ms, idempotency_scope, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8, $9, $10, $11)
         ON CONFLICT (payment_hash) DO NOTHING",
    )
    .bind(&d.deposit_id)
    .bind(&d.caller)
    .bind(&d.agent_id)
    .bind(&d.method)
    .bind(d.amount.as_i64())
    .bind(&d.payment_hash)
    .bind(&d.invoice)
    .bind(i(d.created_at_ms)?)
    .bind(i(d.expires_at_ms)?)
    .bind(&d.idempotency_scope)
    .bind(&d.idempotency_key)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn get_deposit(
    conn: &mut AnyConnection,
    deposit_id: &str,
) -> Result<Option<DepositRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {DEPOSIT_COLUMNS} FROM hydra_deposits WHERE deposit_id = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(deposit_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode_deposit)
        .transpose()
}

pub async fn deposit_by_hash(
    conn: &mut AnyConnection,
    payment_hash: &str,
) -> Result<Option<DepositRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {DEPOSIT_COLUMNS} FROM hydra_deposits WHERE payment_hash = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(payment_hash)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode_deposit)
        .transpose()
}

/// `open -> credited`, once.
pub async fn credit_deposit(
    conn: &mut AnyConnection,
    deposit_id: &str,
    credited: Msat,
    settle_index: u64,
    executor_receipt: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_deposits SET state = 'credited', credited_msat = $2, settle_index = $3, credited_at_ms = $4,
            executor_receipt = $5
         WHERE deposit_id = $1 AND state = 'open'",
    )
    .bind(deposit_id)
    .bind(credited.as_i64())
    .bind(i(settle_index)?)
    .bind(i(now_ms)?)
    .bind(executor_receipt)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn set_deposit_receipt(
    conn: &mut AnyConnection,
    deposit_id: &str,
    hash: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE hydra_deposits SET receipt_hash = $2 WHERE deposit_id = $1")
        .bind(deposit_id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalRow {
    pub withdrawal_id: String,
    pub caller: String,
    pub agent_id: String,
    pub payment_hash: String,
    pub invoice: String,
    pub amount: Msat,
    pub fee_limit: Msat,
    pub state: String,
    pub created_at_ms: u64,
    pub not_before_ms: u64,
    pub throttle_reason: Option<String>,
    pub idempotency_scope: String,
    pub idempotency_key: String,
    pub fee: Msat,
    pub preimage: Option<String>,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub executor_receipt: Option<String>,
    pub receipt_hash: Option<String>,
}

const WD_COLUMNS: &str = "withdrawal_id, caller, agent_id, payment_hash, invoice, amount_msat, fee_limit_msat, state, \
    created_at_ms, not_before_ms, throttle_reason, idempotency_scope, idempotency_key, fee_msat, preimage, failure_code, \
    failure_reason, executor_receipt, receipt_hash";

fn decode_withdrawal(r: &AnyRow) -> Result<WithdrawalRow, StoreError> {
    Ok(WithdrawalRow {
        withdrawal_id: r.try_get("withdrawal_id")?,
        caller: r.try_get("caller")?,
        agent_id: r.try_get("agent_id")?,
        payment_hash: r.try_get("payment_hash")?,
        invoice: r.try_get("invoice")?,
        amount: msat(r.try_get("amount_msat")?)?,
        fee_limit: msat(r.try_get("fee_limit_msat")?)?,
        state: r.try_get("state")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        not_before_ms: u(r.try_get("not_before_ms")?)?,
        throttle_reason: r.try_get("throttle_reason")?,
        idempotency_scope: r.try_get("idempotency_scope")?,
        idempotency_key: r.try_get("idempotency_key")?,
        fee: msat(r.try_get("fee_msat")?)?,
        preimage: r.try_get("preimage")?,
        failure_code: r.try_get("failure_code")?,
        failure_reason: r.try_get("failure_reason")?,
        executor_receipt: r.try_get("executor_receipt")?,
        receipt_hash: r.try_get("receipt_hash")?,
    })
}

pub async fn insert_withdrawal(
    conn: &mut AnyConnection,
    w: &WithdrawalRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO hydra_withdrawals (withdrawal_id, caller, agent_id, payment_hash, invoice, amount_msat,
            fee_limit_msat, state, created_at_ms, not_before_ms, throttle_reason, idempotency_scope, idempotency_key,
            fee_msat, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, $9)",
    )
    .bind(&w.withdrawal_id)
    .bind(&w.caller)
    .bind(&w.agent_id)
    .bind(&w.payment_hash)
    .bind(&w.invoice)
    .bind(w.amount.as_i64())
    .bind(w.fee_limit.as_i64())
    .bind(&w.state)
    .bind(i(w.created_at_ms)?)
    .bind(i(w.not_before_ms)?)
    .bind(&w.throttle_reason)
    .bind(&w.idempotency_scope)
    .bind(&w.idempotency_key)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_withdrawal(
    conn: &mut AnyConnection,
    withdrawal_id: &str,
) -> Result<Option<WithdrawalRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {WD_COLUMNS} FROM hydra_withdrawals WHERE withdrawal_id = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(withdrawal_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode_withdrawal)
        .transpose()
}

/// Whether a withdrawal of this payment hash is queued, paying or paid.
pub async fn hash_withdrawn(
    conn: &mut AnyConnection,
    payment_hash: &str,
) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar::<Any, i64>(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM hydra_withdrawals WHERE payment_hash = $1 AND state <> 'failed'",
    )
    .bind(payment_hash)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

/// `queued -> paying`, once, only when due.
pub async fn start_withdrawal(
    conn: &mut AnyConnection,
    withdrawal_id: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_withdrawals SET state = 'paying', updated_at_ms = $2
         WHERE withdrawal_id = $1 AND state = 'queued' AND not_before_ms <= $2",
    )
    .bind(withdrawal_id)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Pushes a queued withdrawal's not-before (withdrawals are halted now).
pub async fn requeue_withdrawal(
    conn: &mut AnyConnection,
    withdrawal_id: &str,
    not_before_ms: u64,
    reason: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_withdrawals SET not_before_ms = $2, throttle_reason = $3, updated_at_ms = $4
         WHERE withdrawal_id = $1 AND state = 'queued'",
    )
    .bind(withdrawal_id)
    .bind(i(not_before_ms)?)
    .bind(reason)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// `queued | paying -> paid | failed`, once.
#[allow(clippy::too_many_arguments)]
pub async fn finish_withdrawal(
    conn: &mut AnyConnection,
    withdrawal_id: &str,
    state: &str,
    fee: Msat,
    preimage: Option<&str>,
    failure_code: Option<&str>,
    failure_reason: Option<&str>,
    executor_receipt: Option<&str>,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_withdrawals SET state = $2, fee_msat = $3, preimage = $4, failure_code = $5, failure_reason = $6,
            executor_receipt = $7, updated_at_ms = $8
         WHERE withdrawal_id = $1 AND state IN ('queued', 'paying')",
    )
    .bind(withdrawal_id)
    .bind(state)
    .bind(fee.as_i64())
    .bind(preimage)
    .bind(failure_code)
    .bind(failure_reason)
    .bind(executor_receipt)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn set_withdrawal_receipt(
    conn: &mut AnyConnection,
    withdrawal_id: &str,
    hash: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE hydra_withdrawals SET receipt_hash = $2 WHERE withdrawal_id = $1")
        .bind(withdrawal_id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Withdrawals in `state`, due by `due_by_ms` (all when `None`), oldest first.
pub async fn withdrawals_in(
    conn: &mut AnyConnection,
    state: &str,
    due_by_ms: Option<u64>,
    limit: u32,
) -> Result<Vec<WithdrawalRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {WD_COLUMNS} FROM hydra_withdrawals WHERE state = $1 AND not_before_ms <= $2
         ORDER BY not_before_ms, created_at_ms LIMIT $3"
    ));
    sqlx::query::<Any>(sql)
        .bind(state)
        .bind(i(due_by_ms.unwrap_or(FAR_FUTURE_MS))?)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?
        .iter()
        .map(decode_withdrawal)
        .collect()
}

/// Queued withdrawals: how many, and their amounts + fee limits.
pub async fn queued_totals(conn: &mut AnyConnection) -> Result<(u64, Msat), StoreError> {
    let row = sqlx::query::<Any>(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n,
                CAST(COALESCE(SUM(amount_msat + fee_limit_msat), 0) AS BIGINT) AS total
         FROM hydra_withdrawals WHERE state = 'queued'",
    )
    .fetch_one(conn)
    .await?;
    Ok((u(row.try_get("n")?)?, msat(row.try_get("total")?)?))
}

/// Rows per state of `table` (`hydra_deposits` or `hydra_withdrawals`).
pub async fn count_by_state(
    conn: &mut AnyConnection,
    table: Table,
) -> Result<Vec<(String, u64)>, StoreError> {
    let sql = match table {
        Table::Deposits => {
            "SELECT state, CAST(COUNT(*) AS BIGINT) AS n FROM hydra_deposits GROUP BY state ORDER BY state"
        }
        Table::Withdrawals => {
            "SELECT state, CAST(COUNT(*) AS BIGINT) AS n FROM hydra_withdrawals GROUP BY state ORDER BY state"
        }
    };
    sqlx::query::<Any>(sql)
        .fetch_all(conn)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("state")?, u(r.try_get("n")?)?)))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Deposits,
    Withdrawals,
}

/// What Hydra owes agents, by a scan: the sum over agents' balance accounts (ledger code `code`)
/// of posted credits minus posted debits. Reads the ledger's table in Hydra's own database (the
/// ledger has no aggregate query). The throttle uses `book::agent_liabilities` (two account
/// reads); this scan is what the tests hold it to.
pub async fn sum_agent_balances(conn: &mut AnyConnection, code: u16) -> Result<u64, StoreError> {
    let v: i64 = sqlx::query_scalar::<Any, i64>(
        "SELECT CAST(COALESCE(SUM(credits_posted - debits_posted), 0) AS BIGINT)
         FROM ledger_accounts WHERE code = $1",
    )
    .bind(i64::from(code))
    .fetch_one(conn)
    .await?;
    u(v)
}

/// A stream cursor's position (0 when it never moved).
pub async fn cursor(conn: &mut AnyConnection, name: &str) -> Result<u64, StoreError> {
    let v: Option<i64> =
        sqlx::query_scalar::<Any, i64>("SELECT position FROM hydra_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    v.map_or(Ok(0), u)
}

/// Moves a cursor from `from` to `to`, only if it is still at `from`: two followers (replicas)
/// handling the same item cannot both commit it.
pub async fn advance_cursor(
    conn: &mut AnyConnection,
    name: &str,
    from: u64,
    to: u64,
    now_ms: u64,
) -> Result<bool, StoreError> {
    if from == 0 {
        let n = sqlx::query(
            "INSERT INTO hydra_cursors (name, position, updated_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(i(to)?)
        .bind(i(now_ms)?)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if n == 1 {
            return Ok(true);
        }
    }
    let n = sqlx::query(
        "UPDATE hydra_cursors SET position = $3, updated_at_ms = $4 WHERE name = $1 AND position = $2",
    )
    .bind(name)
    .bind(i(from)?)
    .bind(i(to)?)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}
