//! Row mapping and the bulk statements of the batch path.
//!
//! Every statement is portable (SQLite and PostgreSQL): `$n` placeholders, BIGINT and TEXT
//! columns, row locks taken with `UPDATE ... RETURNING`. Multi-row statements are generated with
//! placeholders only, never with values, and are chunked to stay well under both databases'
//! limits on bound parameters (SQLite: 32,766; PostgreSQL: 65,535). The one difference by
//! backend is that generated statements use anonymous `?` placeholders on SQLite (see
//! [`oa_store::sql`]).

use sqlx::{Any, AnyConnection, AssertSqlSafe, Row, any::AnyRow, query::Query};

use crate::{
    error::{LedgerError, corrupt},
    types::{
        Account, AccountFlags, BalanceSnapshot, Balances, FLAG_CLOSED, PendingState,
        TRANSFER_FLAG_LINKED, TRANSFER_FLAG_POST_FULL, Transfer, TransferKind,
    },
};

/// Rows per multi-row statement: 18 parameters per transfer row gives 9,000 parameters, far
/// from either database's limit, while still writing a full batch in a handful of round trips.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

pub(crate) const ACCOUNT_COLUMNS: &str = "id, ledger, code, flags, debits_pending, debits_posted, \
     credits_pending, credits_posted, version, user_data, user_data_64, created_at_ms";

pub(crate) const TRANSFER_COLUMNS: &str = "id, debit_account_id, credit_account_id, amount, \
     pending_id, ledger, code, kind, flags, timeout_ms, expires_at_ms, pending_state, \
     pending_resolved_at_ms, user_data, user_data_64, created_at_ms, debit_version, credit_version";

const TRANSFER_COLUMN_COUNT: usize = 18;

pub(crate) use oa_store::sql::{is_sqlite, param, placeholders, row_placeholders};

pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64, LedgerError> {
    i64::try_from(v).map_err(|_| corrupt(format!("{what} {v} does not fit a BIGINT")))
}

fn to_u64(v: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(v).map_err(|_| corrupt(format!("{what} is negative: {v}")))
}

fn opt_u64(v: Option<i64>, what: &str) -> Result<Option<u64>, LedgerError> {
    v.map(|v| to_u64(v, what)).transpose()
}

fn opt_i64(v: Option<u64>, what: &str) -> Result<Option<i64>, LedgerError> {
    v.map(|v| to_i64(v, what)).transpose()
}

pub(crate) fn account_from_row(row: &AnyRow) -> Result<Account, LedgerError> {
    let flags: i64 = row.try_get("flags")?;
    let ledger: i64 = row.try_get("ledger")?;
    let code: i64 = row.try_get("code")?;
    Ok(Account {
        id: row.try_get("id")?,
        ledger: u32::try_from(ledger).map_err(|_| corrupt("account ledger out of range"))?,
        code: u16::try_from(code).map_err(|_| corrupt("account code out of range"))?,
        flags: AccountFlags::from_bits(flags),
        closed: flags & FLAG_CLOSED != 0,
        balances: Balances {
            debits_pending_msat: to_u64(row.try_get("debits_pending")?, "debits_pending")?,
            debits_posted_msat: to_u64(row.try_get("debits_posted")?, "debits_posted")?,
            credits_pending_msat: to_u64(row.try_get("credits_pending")?, "credits_pending")?,
            credits_posted_msat: to_u64(row.try_get("credits_posted")?, "credits_posted")?,
        },
        version: to_u64(row.try_get("version")?, "version")?,
        user_data: row.try_get("user_data")?,
        user_data_64: row.try_get("user_data_64")?,
        created_at_ms: to_u64(row.try_get("created_at_ms")?, "created_at_ms")?,
    })
}

pub(crate) fn transfer_from_row(row: &AnyRow) -> Result<Transfer, LedgerError> {
    let kind: String = row.try_get("kind")?;
    let state: Option<String> = row.try_get("pending_state")?;
    let flags: i64 = row.try_get("flags")?;
    let ledger: i64 = row.try_get("ledger")?;
    let code: i64 = row.try_get("code")?;
    let amount: i64 = row.try_get("amount")?;
    Ok(Transfer {
        id: row.try_get("id")?,
        kind: TransferKind::parse(&kind).ok_or_else(|| corrupt(format!("transfer kind {kind}")))?,
        debit_account_id: row.try_get("debit_account_id")?,
        credit_account_id: row.try_get("credit_account_id")?,
        amount_msat: oa_money::Msat::from_i64(amount)
            .map_err(|e| corrupt(format!("transfer amount {amount}: {e}")))?,
        pending_id: row.try_get("pending_id")?,
        ledger: u32::try_from(ledger).map_err(|_| corrupt("transfer ledger out of range"))?,
        code: u16::try_from(code).map_err(|_| corrupt("transfer code out of range"))?,
        linked: flags & TRANSFER_FLAG_LINKED != 0,
        post_full_amount: flags & TRANSFER_FLAG_POST_FULL != 0,
        timeout_ms: opt_u64(row.try_get("timeout_ms")?, "timeout_ms")?,
        expires_at_ms: opt_u64(row.try_get("expires_at_ms")?, "expires_at_ms")?,
        pending_state: state
            .map(|s| PendingState::parse(&s).ok_or_else(|| corrupt(format!("pending state {s}"))))
            .transpose()?,
        pending_resolved_at_ms: opt_u64(
            row.try_get("pending_resolved_at_ms")?,
            "pending_resolved_at_ms",
        )?,
        user_data: row.try_get("user_data")?,
        user_data_64: row.try_get("user_data_64")?,
        created_at_ms: to_u64(row.try_get("created_at_ms")?, "created_at_ms")?,
        debit_account_version: to_u64(row.try_get("debit_version")?, "debit_version")?,
        credit_account_version: to_u64(row.try_get("credit_version")?, "credit_version")?,
    })
}

fn dynamic(sql: String) -> Query<'static, Any, sqlx::any::AnyArguments> {
    // Only placeholders and fixed column lists are interpolated, never values.
    sqlx::query(AssertSqlSafe(sql))
}

/// Reads the accounts with these ids (any order; missing ones are left out).
pub(crate) async fn select_accounts(
    conn: &mut AnyConnection,
    ids: &[&str],
) -> Result<Vec<Account>, LedgerError> {
    let sqlite = is_sqlite(conn);
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts WHERE id IN ({})",
            placeholders(sqlite, 1, chunk.len())
        );
        let mut q = dynamic(sql);
        for id in chunk {
            q = q.bind(id.to_string());
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.push(account_from_row(&row)?);
        }
    }
    Ok(out)
}

/// Reads the transfers with these ids (any order; missing ones are left out).
pub(crate) async fn select_transfers(
    conn: &mut AnyConnection,
    ids: &[&str],
) -> Result<Vec<Transfer>, LedgerError> {
    let sqlite = is_sqlite(conn);
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE id IN ({})",
            placeholders(sqlite, 1, chunk.len())
        );
        let mut q = dynamic(sql);
        for id in chunk {
            q = q.bind(id.to_string());
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.push(transfer_from_row(&row)?);
        }
    }
    Ok(out)
}

/// Locks and reads accounts. `ids` must be sorted and distinct.
///
/// On PostgreSQL each row is locked by its own no-op `UPDATE ... RETURNING`, in id order: every
/// writer in this crate takes account locks in that one global order, which is what keeps
/// concurrent batches and single transfers from deadlocking. (One `UPDATE ... WHERE id IN (...)`
/// would lock in whatever order the plan visits rows; measured with pgbench it deadlocks.)
/// On SQLite the transaction already holds the database write lock, so one statement per chunk
/// suffices; it is still an UPDATE so that a deferred transaction takes the write lock here
/// rather than failing to upgrade a read lock later.
pub(crate) async fn lock_accounts(
    conn: &mut AnyConnection,
    ids: &[&str],
) -> Result<Vec<Account>, LedgerError> {
    let mut out = Vec::with_capacity(ids.len());
    if is_sqlite(conn) {
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE ledger_accounts SET version = version WHERE id IN ({}) \
                 RETURNING {ACCOUNT_COLUMNS}",
                placeholders(true, 1, chunk.len())
            );
            let mut q = dynamic(sql);
            for id in chunk {
                q = q.bind(id.to_string());
            }
            for row in q.fetch_all(&mut *conn).await? {
                out.push(account_from_row(&row)?);
            }
        }
    } else {
        for id in ids {
            // Row lock in global id order (see above); a no-op write, so nothing changes.
            let row = sqlx::query(
                "UPDATE ledger_accounts SET version = version WHERE id = $1 \
                 RETURNING id, ledger, code, flags, debits_pending, debits_posted, \
                 credits_pending, credits_posted, version, user_data, user_data_64, created_at_ms",
            )
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(row) = row {
                out.push(account_from_row(&row)?);
            }
        }
    }
    Ok(out)
}

/// Locks pending transfers that are still pending, so that a concurrent post, void or expiry of
/// the same one waits for this transaction. `ids` must be sorted and distinct. Pending rows are
/// locked before any account row, the same order as the fast path (pending row, then accounts).
/// A no-op on SQLite, whose transaction already holds the database write lock.
pub(crate) async fn lock_pending(
    conn: &mut AnyConnection,
    ids: &[&str],
) -> Result<(), LedgerError> {
    if is_sqlite(conn) {
        return Ok(());
    }
    for id in ids {
        // Row lock on a still-pending transfer; a no-op write. Resolved ones never change again.
        sqlx::query(
            "UPDATE ledger_transfers SET pending_state = pending_state \
             WHERE id = $1 AND pending_state = 'pending'",
        )
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Inserts transfers, skipping ids that already exist; returns how many were inserted.
pub(crate) async fn insert_transfers(
    conn: &mut AnyConnection,
    transfers: &[Transfer],
) -> Result<u64, LedgerError> {
    let sqlite = is_sqlite(conn);
    let mut inserted = 0;
    for chunk in transfers.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO ledger_transfers ({TRANSFER_COLUMNS}) VALUES {} \
             ON CONFLICT (id) DO NOTHING",
            row_placeholders(sqlite, chunk.len(), TRANSFER_COLUMN_COUNT)
        );
        let mut q = dynamic(sql);
        for t in chunk {
            let mut flags = 0;
            if t.linked {
                flags |= TRANSFER_FLAG_LINKED;
            }
            if t.post_full_amount {
                flags |= TRANSFER_FLAG_POST_FULL;
            }
            q = q
                .bind(t.id.clone())
                .bind(t.debit_account_id.clone())
                .bind(t.credit_account_id.clone())
                .bind(t.amount_msat.as_i64())
                .bind(t.pending_id.clone())
                .bind(i64::from(t.ledger))
                .bind(i64::from(t.code))
                .bind(t.kind.as_str())
                .bind(flags)
                .bind(opt_i64(t.timeout_ms, "timeout_ms")?)
                .bind(opt_i64(t.expires_at_ms, "expires_at_ms")?)
                .bind(t.pending_state.map(PendingState::as_str))
                .bind(opt_i64(t.pending_resolved_at_ms, "pending_resolved_at_ms")?)
                .bind(t.user_data.clone())
                .bind(t.user_data_64)
                .bind(to_i64(t.created_at_ms, "created_at_ms")?)
                .bind(to_i64(t.debit_account_version, "version")?)
                .bind(to_i64(t.credit_account_version, "version")?);
        }
        inserted += q.execute(&mut *conn).await?.rows_affected();
    }
    Ok(inserted)
}

/// Moves loaded pending transfers out of the pending state. They are locked (by `lock_pending`
/// on PostgreSQL, by the database write lock on SQLite), so every one must still be pending.
pub(crate) async fn resolve_pending(
    conn: &mut AnyConnection,
    resolved: &[(String, PendingState, u64)],
) -> Result<(), LedgerError> {
    let sqlite = is_sqlite(conn);
    for chunk in resolved.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE ledger_transfers SET pending_state = v.column2, pending_resolved_at_ms = v.column3 \
             FROM (VALUES {}) AS v \
             WHERE ledger_transfers.id = v.column1 AND ledger_transfers.pending_state = 'pending'",
            row_placeholders(sqlite, chunk.len(), 3)
        );
        let mut q = dynamic(sql);
        for (id, state, at) in chunk {
            q = q
                .bind(id.clone())
                .bind(state.as_str())
                .bind(to_i64(*at, "pending_resolved_at_ms")?);
        }
        let n = q.execute(&mut *conn).await?.rows_affected();
        if n != chunk.len() as u64 {
            return Err(corrupt(format!(
                "{} of {} locked pending transfers changed underneath",
                chunk.len() as u64 - n,
                chunk.len()
            )));
        }
    }
    Ok(())
}

/// Writes new balances and versions of accounts this transaction locked in `lock_accounts`,
/// guarded by the version read at lock time (a mismatch would mean the lock did not hold).
pub(crate) async fn update_accounts(
    conn: &mut AnyConnection,
    accounts: &[(Account, u64)],
) -> Result<(), LedgerError> {
    let sqlite = is_sqlite(conn);
    for chunk in accounts.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE ledger_accounts SET debits_pending = v.column2, debits_posted = v.column3, \
             credits_pending = v.column4, credits_posted = v.column5, version = v.column6 \
             FROM (VALUES {}) AS v \
             WHERE ledger_accounts.id = v.column1 AND ledger_accounts.version = v.column7",
            row_placeholders(sqlite, chunk.len(), 7)
        );
        let mut q = dynamic(sql);
        for (a, loaded_version) in chunk {
            let b = &a.balances;
            q = q
                .bind(a.id.clone())
                .bind(to_i64(b.debits_pending_msat, "balance")?)
                .bind(to_i64(b.debits_posted_msat, "balance")?)
                .bind(to_i64(b.credits_pending_msat, "balance")?)
                .bind(to_i64(b.credits_posted_msat, "balance")?)
                .bind(to_i64(a.version, "version")?)
                .bind(to_i64(*loaded_version, "version")?);
        }
        let n = q.execute(&mut *conn).await?.rows_affected();
        if n != chunk.len() as u64 {
            return Err(corrupt(format!(
                "{} of {} locked accounts changed underneath",
                chunk.len() as u64 - n,
                chunk.len()
            )));
        }
    }
    Ok(())
}

pub(crate) async fn insert_history(
    conn: &mut AnyConnection,
    history: &[BalanceSnapshot],
) -> Result<(), LedgerError> {
    let sqlite = is_sqlite(conn);
    for chunk in history.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO ledger_account_history (account_id, version, transfer_id, cause, \
             debits_pending, debits_posted, credits_pending, credits_posted, timestamp_ms) VALUES {}",
            row_placeholders(sqlite, chunk.len(), 9)
        );
        let mut q = dynamic(sql);
        for h in chunk {
            let b = &h.balances;
            q = q
                .bind(h.account_id.clone())
                .bind(to_i64(h.version, "version")?)
                .bind(h.transfer_id.clone())
                .bind(h.cause.as_str())
                .bind(to_i64(b.debits_pending_msat, "balance")?)
                .bind(to_i64(b.debits_posted_msat, "balance")?)
                .bind(to_i64(b.credits_pending_msat, "balance")?)
                .bind(to_i64(b.credits_posted_msat, "balance")?)
                .bind(to_i64(h.timestamp_ms, "timestamp_ms")?);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}
