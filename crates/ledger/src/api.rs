//! The ledger's functions on a caller's connection: a service passes `&mut *tx` so that ledger
//! rows commit in the same transaction as its own state, journal event and receipt.
//!
//! Mutations refuse to run outside a transaction ([`LedgerError::NotInTransaction`]). On SQLite
//! open it with `oa_store::Db::begin` (`BEGIN IMMEDIATE`), so the write lock is taken up front.

use std::collections::{BTreeSet, HashSet};

use sqlx::{Any, AnyConnection, Connection, Row};

use crate::{
    codes::AccountError,
    engine::{Engine, TransferResult, validate_request},
    error::{LedgerError, corrupt},
    fast,
    sql::{self, ACCOUNT_COLUMNS, TRANSFER_COLUMNS, account_from_row, to_i64, transfer_from_row},
    types::{
        Account, BalanceChange, BalanceSnapshot, Balances, FLAG_CLOSED, MAX_USER_DATA_LEN,
        NewAccount, NewTransfer, Outcome, Page, Transfer, TransferOp, is_valid_id,
    },
};

/// Largest batch of transfers or accounts per call. TigerBeetle's batch limit (8,190 events in a
/// 1 MiB message); here it bounds the memory of one batch and how long its transaction holds
/// account locks, while being large enough that per-call overhead is negligible.
pub const MAX_BATCH_SIZE: usize = 8_190;

/// Largest page of a lookup: a page is read in one statement and held in memory.
pub const MAX_PAGE_SIZE: usize = 1_000;

/// Most pending transfers one `expire_pending` call expires. A sweep runs often; a bounded call
/// keeps its transaction (and the account locks it holds) short. Call again while it returns a
/// full batch.
pub const MAX_EXPIRE_PER_CALL: usize = 1_000;

/// How often a batch is re-run after a concurrent transaction inserted one of its ids between
/// the batch's read and its insert. Each re-run sees the winner and reports `Exists`, so more
/// than one re-run only happens under pathological id reuse.
const MAX_BATCH_ATTEMPTS: u32 = 4;

/// The result of one account request.
pub type AccountResult = Result<Outcome<Account>, AccountError>;

fn require_tx(conn: &AnyConnection) -> Result<(), LedgerError> {
    if conn.is_in_transaction() {
        Ok(())
    } else {
        Err(LedgerError::NotInTransaction)
    }
}

fn check_clock(now_ms: u64) -> Result<i64, LedgerError> {
    i64::try_from(now_ms).map_err(|_| LedgerError::ClockOutOfRange)
}

fn check_batch(len: usize) -> Result<(), LedgerError> {
    if len > MAX_BATCH_SIZE {
        Err(LedgerError::BatchTooLarge {
            len,
            max: MAX_BATCH_SIZE,
        })
    } else {
        Ok(())
    }
}

fn validate_account(a: &NewAccount) -> Result<(), AccountError> {
    if !is_valid_id(&a.id) {
        Err(AccountError::InvalidId)
    } else if a.user_data.len() > MAX_USER_DATA_LEN {
        Err(AccountError::UserDataTooLong)
    } else if a.ledger == 0 {
        Err(AccountError::LedgerMustNotBeZero)
    } else if a.code == 0 {
        Err(AccountError::CodeMustNotBeZero)
    } else if a.flags.debits_must_not_exceed_credits && a.flags.credits_must_not_exceed_debits {
        Err(AccountError::FlagsAreMutuallyExclusive)
    } else {
        Ok(())
    }
}

fn compare_account(a: &NewAccount, e: &Account) -> Option<AccountError> {
    if a.flags != e.flags {
        Some(AccountError::ExistsWithDifferentFlags)
    } else if a.user_data != e.user_data || a.user_data_64 != e.user_data_64 {
        Some(AccountError::ExistsWithDifferentUserData)
    } else if a.ledger != e.ledger {
        Some(AccountError::ExistsWithDifferentLedger)
    } else if a.code != e.code {
        Some(AccountError::ExistsWithDifferentCode)
    } else {
        None
    }
}

/// Creates accounts, each independently. An id that exists with the same fields is
/// `Ok(Outcome::Exists(stored))`.
pub async fn create_accounts(
    conn: &mut AnyConnection,
    accounts: &[NewAccount],
    now_ms: u64,
) -> Result<Vec<AccountResult>, LedgerError> {
    require_tx(conn)?;
    check_batch(accounts.len())?;
    let now = check_clock(now_ms)?;
    let valid: Vec<&NewAccount> = accounts
        .iter()
        .filter(|a| validate_account(a).is_ok())
        .collect();
    let mut inserted: HashSet<String> = HashSet::new();
    for chunk in valid.chunks(sql::ROWS_PER_STATEMENT) {
        let sqlite = sql::is_sqlite(conn);
        let values = (0..chunk.len())
            .map(|r| {
                let p = |i: usize| sql::param(sqlite, r * 7 + i);
                format!(
                    "({}, {}, {}, {}, 0, 0, 0, 0, 0, {}, {}, {})",
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5),
                    p(6),
                    p(7)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO ledger_accounts ({ACCOUNT_COLUMNS}) VALUES {values} \
             ON CONFLICT (id) DO NOTHING RETURNING id"
        );
        // Only placeholders are interpolated.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for a in chunk {
            q = q
                .bind(a.id.clone())
                .bind(i64::from(a.ledger))
                .bind(i64::from(a.code))
                .bind(a.flags.bits())
                .bind(a.user_data.clone())
                .bind(a.user_data_64)
                .bind(now);
        }
        for row in q.fetch_all(&mut *conn).await? {
            inserted.insert(row.try_get("id")?);
        }
    }
    let others: Vec<&str> = valid
        .iter()
        .map(|a| a.id.as_str())
        .filter(|id| !inserted.contains(*id))
        .collect();
    let mut existing: std::collections::HashMap<String, Account> = if others.is_empty() {
        std::collections::HashMap::new()
    } else {
        sql::select_accounts(conn, &others)
            .await?
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect()
    };
    let mut created_ids: HashSet<&str> = HashSet::new();
    let mut results = Vec::with_capacity(accounts.len());
    for a in accounts {
        if let Err(e) = validate_account(a) {
            results.push(Err(e));
            continue;
        }
        if inserted.contains(&a.id) && created_ids.insert(a.id.as_str()) {
            let account = Account {
                id: a.id.clone(),
                ledger: a.ledger,
                code: a.code,
                flags: a.flags,
                closed: false,
                balances: Balances::default(),
                version: 0,
                user_data: a.user_data.clone(),
                user_data_64: a.user_data_64,
                created_at_ms: now_ms,
            };
            existing.insert(a.id.clone(), account.clone());
            results.push(Ok(Outcome::Created(account)));
            continue;
        }
        let e = existing
            .get(&a.id)
            .ok_or_else(|| corrupt(format!("account {} neither inserted nor found", a.id)))?;
        results.push(match compare_account(a, e) {
            None => Ok(Outcome::Exists(e.clone())),
            Some(err) => Err(err),
        });
    }
    Ok(results)
}

/// Closes an account: it refuses new transfers and posts from now on; voids and expiries still
/// release its pending amounts. Closing a closed account is a no-op.
pub async fn close_account(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Result<Account, AccountError>, LedgerError> {
    // The UPDATE takes the row lock, so it waits for transfers in flight on this account; none
    // commits against it after this commits.
    set_closed(
        conn,
        account_id,
        "UPDATE ledger_accounts SET flags = flags | $2 WHERE id = $1 \
         RETURNING id, ledger, code, flags, debits_pending, debits_posted, credits_pending, \
         credits_posted, version, user_data, user_data_64, created_at_ms",
    )
    .await
}

/// Reopens a closed account. Reopening an open account is a no-op.
pub async fn reopen_account(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Result<Account, AccountError>, LedgerError> {
    // Takes the row lock like close_account; `(flags | bit) - bit` clears the bit portably.
    set_closed(
        conn,
        account_id,
        "UPDATE ledger_accounts SET flags = (flags | $2) - $2 \
         WHERE id = $1 \
         RETURNING id, ledger, code, flags, debits_pending, debits_posted, credits_pending, \
         credits_posted, version, user_data, user_data_64, created_at_ms",
    )
    .await
}

async fn set_closed(
    conn: &mut AnyConnection,
    account_id: &str,
    sql: &'static str,
) -> Result<Result<Account, AccountError>, LedgerError> {
    require_tx(conn)?;
    let row = sqlx::query(sql)
        .bind(account_id.to_owned())
        .bind(FLAG_CLOSED)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(Ok(account_from_row(&row)?)),
        None => Ok(Err(AccountError::AccountNotFound)),
    }
}

/// Creates one transfer; see [`create_transfers`].
pub async fn create_transfer(
    conn: &mut AnyConnection,
    transfer: &NewTransfer,
    now_ms: u64,
) -> Result<TransferResult, LedgerError> {
    let mut results = create_transfers(conn, std::slice::from_ref(transfer), now_ms).await?;
    results
        .pop()
        .ok_or_else(|| corrupt("one request gave no result"))
}

/// Creates transfers in order, one result per request. Unlinked transfers succeed or fail on
/// their own; a linked chain succeeds or fails as a whole. A lone unlinked transfer takes the
/// fast path (guarded updates, no reads); anything else is loaded, checked in memory and written
/// in bulk.
pub async fn create_transfers(
    conn: &mut AnyConnection,
    transfers: &[NewTransfer],
    now_ms: u64,
) -> Result<Vec<TransferResult>, LedgerError> {
    require_tx(conn)?;
    check_batch(transfers.len())?;
    check_clock(now_ms)?;
    if let [req] = transfers
        && !req.linked
    {
        if let Err(e) = validate_request(req, now_ms) {
            return Ok(vec![Err(e)]);
        }
        let decided = match &req.op {
            TransferOp::Single(m) => fast::try_movement(conn, req, m, None, now_ms).await?,
            TransferOp::Pending {
                movement,
                timeout_ms,
            } => fast::try_movement(conn, req, movement, Some(*timeout_ms), now_ms).await?,
            TransferOp::PostPending {
                pending_id,
                amount_msat,
            } => fast::try_resolve(conn, req, pending_id, Some(*amount_msat), now_ms).await?,
            TransferOp::VoidPending { pending_id } => {
                fast::try_resolve(conn, req, pending_id, None, now_ms).await?
            }
        };
        if let Some(result) = decided {
            return Ok(vec![result]);
        }
    }
    create_transfers_batched(conn, transfers, now_ms).await
}

/// Same results as [`create_transfers`], always by the batch path: load and lock what the batch
/// touches, check everything in memory, write the net effect in bulk. `create_transfers` uses it
/// for all but lone unlinked transfers, and as the fallback that decides every refusal of the
/// fast path; it is public so that tests can hold both paths to the same results.
pub async fn create_transfers_batched(
    conn: &mut AnyConnection,
    transfers: &[NewTransfer],
    now_ms: u64,
) -> Result<Vec<TransferResult>, LedgerError> {
    require_tx(conn)?;
    check_batch(transfers.len())?;
    check_clock(now_ms)?;
    for _ in 0..MAX_BATCH_ATTEMPTS {
        // A savepoint, so that losing an id race undoes only this batch.
        let mut sp = conn.begin().await?;
        let mut engine = load(&mut sp, transfers, now_ms).await?;
        let results = engine.apply_batch(transfers)?;
        let writes = engine.into_writes()?;
        let inserted = sql::insert_transfers(&mut sp, &writes.new_transfers).await?;
        if inserted != writes.new_transfers.len() as u64 {
            // Another transaction committed one of these ids after we read; run again to see it.
            sp.rollback().await?;
            continue;
        }
        sql::resolve_pending(&mut sp, &writes.resolved).await?;
        sql::update_accounts(&mut sp, &writes.accounts).await?;
        sql::insert_history(&mut sp, &writes.history).await?;
        sp.commit().await?;
        return Ok(results);
    }
    Err(LedgerError::Contention(MAX_BATCH_ATTEMPTS))
}

/// Loads and locks what a batch touches: pending transfers it resolves (locked first), stored
/// transfers with its ids, and its accounts (locked in id order).
async fn load(
    conn: &mut AnyConnection,
    transfers: &[NewTransfer],
    now_ms: u64,
) -> Result<Engine, LedgerError> {
    let valid: Vec<&NewTransfer> = transfers
        .iter()
        .filter(|t| validate_request(t, now_ms).is_ok())
        .collect();
    let pending_ids: BTreeSet<&str> = valid
        .iter()
        .filter_map(|t| match &t.op {
            TransferOp::PostPending { pending_id, .. } | TransferOp::VoidPending { pending_id } => {
                Some(pending_id.as_str())
            }
            _ => None,
        })
        .collect();
    let pending_ids: Vec<&str> = pending_ids.into_iter().collect();
    sql::lock_pending(conn, &pending_ids).await?;
    let ids: BTreeSet<&str> = valid
        .iter()
        .map(|t| t.id.as_str())
        .chain(pending_ids.iter().copied())
        .collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let stored = sql::select_transfers(conn, &ids).await?;
    let pending_set: HashSet<&str> = pending_ids.iter().copied().collect();
    let mut account_ids: BTreeSet<&str> = BTreeSet::new();
    for t in &valid {
        if let TransferOp::Single(m)
        | TransferOp::Pending {
            movement: m,
            timeout_ms: _,
        } = &t.op
        {
            account_ids.insert(&m.debit_account_id);
            account_ids.insert(&m.credit_account_id);
        }
    }
    for t in &stored {
        if pending_set.contains(t.id.as_str()) {
            account_ids.insert(&t.debit_account_id);
            account_ids.insert(&t.credit_account_id);
        }
    }
    let account_ids: Vec<&str> = account_ids.into_iter().collect();
    let accounts = sql::lock_accounts(conn, &account_ids).await?;
    Ok(Engine::new(now_ms, accounts, stored))
}

/// Expires up to `limit` (at most [`MAX_EXPIRE_PER_CALL`]) pending transfers whose timeout has
/// passed at `now_ms`, oldest deadline first, releasing their pending amounts. Returns them in
/// their new state. Until it runs, an expired reservation can no longer be posted or voided but
/// still counts against its account's limit: the sweep is what gives the money back.
pub async fn expire_pending(
    conn: &mut AnyConnection,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<Transfer>, LedgerError> {
    require_tx(conn)?;
    let now = check_clock(now_ms)?;
    let limit = limit.min(MAX_EXPIRE_PER_CALL);
    let rows = sqlx::query::<Any>(
        "SELECT id FROM ledger_transfers \
         WHERE pending_state = 'pending' AND expires_at_ms IS NOT NULL AND expires_at_ms <= $1 \
         ORDER BY expires_at_ms, id LIMIT $2",
    )
    .bind(now)
    .bind(to_i64(limit as u64, "limit")?)
    .fetch_all(&mut *conn)
    .await?;
    let due: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let mut sorted: Vec<&str> = due.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sql::lock_pending(conn, &sorted).await?;
    let stored = sql::select_transfers(conn, &sorted).await?;
    let account_ids: BTreeSet<&str> = stored
        .iter()
        .flat_map(|t| [t.debit_account_id.as_str(), t.credit_account_id.as_str()])
        .collect();
    let account_ids: Vec<&str> = account_ids.into_iter().collect();
    let accounts = sql::lock_accounts(conn, &account_ids).await?;
    let mut engine = Engine::new(now_ms, accounts, stored);
    let mut expired = Vec::new();
    for id in &due {
        // Another transaction may have posted or voided it since the SELECT: then it is skipped.
        if let Some(t) = engine.expire(id)? {
            expired.push(t);
        }
    }
    let writes = engine.into_writes()?;
    sql::resolve_pending(conn, &writes.resolved).await?;
    sql::update_accounts(conn, &writes.accounts).await?;
    sql::insert_history(conn, &writes.history).await?;
    Ok(expired)
}

pub async fn get_account(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Option<Account>, LedgerError> {
    Ok(sql::select_accounts(conn, &[account_id]).await?.pop())
}

/// The accounts with these ids that exist, in the order asked.
pub async fn get_accounts<S: AsRef<str>>(
    conn: &mut AnyConnection,
    account_ids: &[S],
) -> Result<Vec<Account>, LedgerError> {
    check_batch(account_ids.len())?;
    let ids: Vec<&str> = account_ids.iter().map(AsRef::as_ref).collect();
    let mut found: std::collections::HashMap<String, Account> = sql::select_accounts(conn, &ids)
        .await?
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    Ok(ids.iter().filter_map(|id| found.remove(*id)).collect())
}

pub async fn get_transfer(
    conn: &mut AnyConnection,
    transfer_id: &str,
) -> Result<Option<Transfer>, LedgerError> {
    Ok(sql::select_transfers(conn, &[transfer_id]).await?.pop())
}

/// The transfers with these ids that exist, in the order asked.
pub async fn get_transfers<S: AsRef<str>>(
    conn: &mut AnyConnection,
    transfer_ids: &[S],
) -> Result<Vec<Transfer>, LedgerError> {
    check_batch(transfer_ids.len())?;
    let ids: Vec<&str> = transfer_ids.iter().map(AsRef::as_ref).collect();
    let mut found: std::collections::HashMap<String, Transfer> = sql::select_transfers(conn, &ids)
        .await?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    Ok(ids.iter().filter_map(|id| found.remove(*id)).collect())
}

/// Transfers that debit or credit `account_id`, in the order they changed its balances, after
/// the account version `after_version` (0 for the start). At most `limit` (capped at
/// [`MAX_PAGE_SIZE`]). Expiries change balances without a transfer, so versions may skip.
pub async fn account_transfers(
    conn: &mut AnyConnection,
    account_id: &str,
    after_version: u64,
    limit: usize,
) -> Result<Page<Transfer>, LedgerError> {
    let limit = limit.clamp(1, MAX_PAGE_SIZE);
    let sql = format!(
        "SELECT * FROM ( \
           SELECT * FROM (SELECT {TRANSFER_COLUMNS}, debit_version AS account_version \
             FROM ledger_transfers WHERE debit_account_id = $1 AND debit_version > $2 \
             ORDER BY debit_version LIMIT $3) AS d \
           UNION ALL \
           SELECT * FROM (SELECT {TRANSFER_COLUMNS}, credit_version AS account_version \
             FROM ledger_transfers WHERE credit_account_id = $1 AND credit_version > $2 \
             ORDER BY credit_version LIMIT $3) AS c \
         ) AS t ORDER BY account_version LIMIT $3"
    );
    // Only fixed column lists are interpolated.
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(account_id.to_owned())
        .bind(to_i64(after_version, "after_version")?)
        .bind(to_i64(limit as u64, "limit")?)
        .fetch_all(&mut *conn)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in &rows {
        let v: i64 = row.try_get("account_version")?;
        last = Some(u64::try_from(v).map_err(|_| corrupt("negative version"))?);
        items.push(transfer_from_row(row)?);
    }
    Ok(Page {
        next_after_version: if items.len() == limit { last } else { None },
        items,
    })
}

/// Balances of `account_id` after each change past `after_version`, oldest first, for accounts
/// with the `history` flag (others have none). At most `limit` (capped at [`MAX_PAGE_SIZE`]).
pub async fn account_history(
    conn: &mut AnyConnection,
    account_id: &str,
    after_version: u64,
    limit: usize,
) -> Result<Page<BalanceSnapshot>, LedgerError> {
    let limit = limit.clamp(1, MAX_PAGE_SIZE);
    let rows = sqlx::query::<Any>(
        "SELECT account_id, version, transfer_id, cause, debits_pending, debits_posted, \
         credits_pending, credits_posted, timestamp_ms FROM ledger_account_history \
         WHERE account_id = $1 AND version > $2 ORDER BY version LIMIT $3",
    )
    .bind(account_id.to_owned())
    .bind(to_i64(after_version, "after_version")?)
    .bind(to_i64(limit as u64, "limit")?)
    .fetch_all(&mut *conn)
    .await?;
    let u = |v: i64| u64::try_from(v).map_err(|_| corrupt("negative value in history"));
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let cause: String = row.try_get("cause")?;
        items.push(BalanceSnapshot {
            account_id: row.try_get("account_id")?,
            version: u(row.try_get("version")?)?,
            transfer_id: row.try_get("transfer_id")?,
            cause: match cause.as_str() {
                "transfer" => BalanceChange::Transfer,
                "expiry" => BalanceChange::Expiry,
                other => return Err(corrupt(format!("history cause {other}"))),
            },
            balances: Balances {
                debits_pending_msat: u(row.try_get("debits_pending")?)?,
                debits_posted_msat: u(row.try_get("debits_posted")?)?,
                credits_pending_msat: u(row.try_get("credits_pending")?)?,
                credits_posted_msat: u(row.try_get("credits_posted")?)?,
            },
            timestamp_ms: u(row.try_get("timestamp_ms")?)?,
        });
    }
    let last = items.last().map(|h| h.version);
    Ok(Page {
        next_after_version: if items.len() == limit { last } else { None },
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::types::AccountFlags;

    #[test]
    fn account_validation_order() {
        let ok = NewAccount::new("a", 1, 1);
        assert_eq!(validate_account(&ok), Ok(()));
        assert_eq!(
            validate_account(&NewAccount::new("a b", 1, 1)),
            Err(AccountError::InvalidId)
        );
        assert_eq!(
            validate_account(&NewAccount::new("a", 0, 1)),
            Err(AccountError::LedgerMustNotBeZero)
        );
        assert_eq!(
            validate_account(&NewAccount::new("a", 1, 0)),
            Err(AccountError::CodeMustNotBeZero)
        );
        let both = AccountFlags {
            debits_must_not_exceed_credits: true,
            credits_must_not_exceed_debits: true,
            history: false,
        };
        assert_eq!(
            validate_account(&ok.clone().with_flags(both)),
            Err(AccountError::FlagsAreMutuallyExclusive)
        );
        assert_eq!(
            validate_account(&ok.with_user_data("x".repeat(MAX_USER_DATA_LEN + 1), 0)),
            Err(AccountError::UserDataTooLong)
        );
    }
}
