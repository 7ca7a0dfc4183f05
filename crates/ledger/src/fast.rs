//! The single-transfer fast path: a transfer that touches a hot account must not read before it
//! writes, or every writer would queue behind the reads as well as the row lock.
//!
//! A single-phase or pending transfer is one guarded `UPDATE ... RETURNING` per account (the
//! guard is the whole set of checks for that account: exists, same ledger, not closed, no
//! overflow, within its limit), then one `INSERT ... ON CONFLICT DO NOTHING` of the transfer row
//! carrying both accounts' new versions. A post or void first moves the pending row out of the
//! pending state with a guarded UPDATE (which also locks it), then updates the two accounts, then
//! inserts.
//!
//! If any guard fails (or the id already exists), the statements already applied are undone
//! exactly (the rows are still locked by this transaction, so nothing else saw them) and the
//! request is handed to the batch path, whose engine decides the result code. The fast path thus
//! only ever decides successes, and a success here is one the engine would also have allowed:
//! each guard is the engine's check written in SQL.
//!
//! Lock order is the same as the batch path's: the pending row first, then accounts in id order,
//! then the new transfer id. Two rows are never locked by one statement, because PostgreSQL then
//! locks them in plan order and concurrent writers deadlock.

use oa_money::Msat;
use sqlx::AnyConnection;

use crate::{
    engine::TransferResult,
    error::{LedgerError, corrupt},
    sql::{self, account_from_row, to_i64, transfer_from_row},
    types::{
        Account, BalanceChange, BalanceSnapshot, FLAG_CLOSED, FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS,
        FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS, MAX_BALANCE_MSAT, Movement, NewTransfer, Outcome,
        PendingState, Transfer, TransferKind,
    },
};

// Guarded account updates of a new single-phase or pending transfer. Parameters: $1 account id,
// $2 amount, $3 ledger, $4 the closed flag bit, $5 MAX_BALANCE_MSAT, $6 the limit flag bit.
// Each locks the account row (the UPDATE), and only if every check of that side passes.
// `total + amount <= ceiling` is written as `total <= ceiling - amount` so nothing can overflow.
const DEBIT_PENDING: &str = "UPDATE ledger_accounts \
    SET debits_pending = debits_pending + $2, version = version + 1 \
    WHERE id = $1 AND ledger = $3 AND (flags & $4) = 0 \
      AND debits_pending + debits_posted <= $5 - $2 \
      AND ((flags & $6) = 0 OR debits_pending + debits_posted + $2 <= credits_posted) \
    RETURNING id, ledger, code, flags, debits_pending, debits_posted, credits_pending, \
      credits_posted, version, user_data, user_data_64, created_at_ms";
const DEBIT_POSTED: &str = "UPDATE ledger_accounts \
    SET debits_posted = debits_posted + $2, version = version + 1 \
    WHERE id = $1 AND ledger = $3 AND (flags & $4) = 0 \
      AND debits_pending + debits_posted <= $5 - $2 \
      AND ((flags & $6) = 0 OR debits_pending + debits_posted + $2 <= credits_posted) \
    RETURNING id, ledger, code, flags, debits_pending, debits_posted, credits_pending, \
      credits_posted, version, user_data, user_data_64, created_at_ms";
const CREDIT_PENDING: &str = "UPDATE ledger_accounts \
    SET credits_pending = credits_pending + $2, version = version + 1 \
    WHERE id = $1 AND ledger = $3 AND (flags & $4) = 0 \
      AND credits_pending + credits_posted <= $5 - $2 \
      AND ((flags & $6) = 0 OR credits_pending + credits_posted + $2 <= debits_posted) \
    RETURNING id, ledger, code, flags, debits_pending, debits_posted, credits_pending, \
      credits_posted, version, user_data, user_data_64, created_at_ms";
const CREDIT_POSTED: &str = "UPDATE ledger_accounts \
    SET credits_posted = credits_posted + $2, version = version + 1 \
    WHERE id = $1 AND ledger = $3 AND (flags & $4) = 0 \
      AND credits_pending + credits_posted <= $5 - $2 \
      AND ((flags & $6) = 0 OR credits_pending + credits_posted + $2 <= debits_posted) \
    RETURNING id, ledger, code, flags, debits_pending, debits_posted, credits_pending, \
      credits_posted, version, user_data, user_data_64, created_at_ms";

// Resolution of a pending transfer: releases $2 from pending and posts $3 (0 for a void). $4 is
// the closed flag bit for a post and 0 for a void (a void may release money of a closed account).
// Locks the account row; the pending guard can only fail on corrupt data.
const RESOLVE_DEBIT: &str = "UPDATE ledger_accounts \
    SET debits_pending = debits_pending - $2, debits_posted = debits_posted + $3, \
        version = version + 1 \
    WHERE id = $1 AND (flags & $4) = 0 AND debits_pending >= $2 \
    RETURNING id, ledger, code, flags, debits_pending, debits_posted, credits_pending, \
      credits_posted, version, user_data, user_data_64, created_at_ms";
const RESOLVE_CREDIT: &str = "UPDATE ledger_accounts \
    SET credits_pending = credits_pending - $2, credits_posted = credits_posted + $3, \
        version = version + 1 \
    WHERE id = $1 AND (flags & $4) = 0 AND credits_pending >= $2 \
    RETURNING id, ledger, code, flags, debits_pending, debits_posted, credits_pending, \
      credits_posted, version, user_data, user_data_64, created_at_ms";

// Moves a pending transfer out of the pending state if it is pending, unexpired at $3 and, for a
// partial post, at least $4. This is the row lock that serializes concurrent posts, voids and
// expiries of one pending transfer: the loser finds it no longer pending.
const RESOLVE_PENDING: &str = "UPDATE ledger_transfers \
    SET pending_state = $2, pending_resolved_at_ms = $3 \
    WHERE id = $1 AND kind = 'pending' AND pending_state = 'pending' \
      AND (expires_at_ms IS NULL OR expires_at_ms > $3) AND amount >= $4 \
    RETURNING id, debit_account_id, credit_account_id, amount, pending_id, ledger, code, kind, \
      flags, timeout_ms, expires_at_ms, pending_state, pending_resolved_at_ms, user_data, \
      user_data_64, created_at_ms, debit_version, credit_version";

// Undo of RESOLVE_PENDING; the row is still locked by this transaction.
const UNRESOLVE_PENDING: &str = "UPDATE ledger_transfers \
    SET pending_state = 'pending', pending_resolved_at_ms = NULL WHERE id = $1";

// Undo of an account update: restores the exact previous balances and version of a row this
// transaction has locked since it changed it.
const RESTORE_ACCOUNT: &str = "UPDATE ledger_accounts \
    SET debits_pending = $2, debits_posted = $3, credits_pending = $4, credits_posted = $5, \
        version = $6 \
    WHERE id = $1";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Debit,
    Credit,
}

/// Tries a single-phase (`timeout: None`) or pending transfer. `Ok(None)`: not decided here,
/// use the batch path. The request must have passed `validate_request`.
pub(crate) async fn try_movement(
    conn: &mut AnyConnection,
    req: &NewTransfer,
    m: &Movement,
    timeout: Option<Option<u64>>,
    now_ms: u64,
) -> Result<Option<TransferResult>, LedgerError> {
    let pending = timeout.is_some();
    let amount = m.amount_msat.as_i64();
    let order = if m.debit_account_id < m.credit_account_id {
        [Side::Debit, Side::Credit]
    } else {
        [Side::Credit, Side::Debit]
    };
    let debit_delta = if pending {
        [amount, 0, 0, 0]
    } else {
        [0, amount, 0, 0]
    };
    let credit_delta = if pending {
        [0, 0, amount, 0]
    } else {
        [0, 0, 0, amount]
    };
    let mut applied: Vec<(Account, [i64; 4])> = Vec::with_capacity(2);
    let mut debit: Option<Account> = None;
    let mut credit: Option<Account> = None;
    for side in order {
        let (sql, id, limit_flag) = match (side, pending) {
            (Side::Debit, true) => (
                DEBIT_PENDING,
                &m.debit_account_id,
                FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS,
            ),
            (Side::Debit, false) => (
                DEBIT_POSTED,
                &m.debit_account_id,
                FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS,
            ),
            (Side::Credit, true) => (
                CREDIT_PENDING,
                &m.credit_account_id,
                FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS,
            ),
            (Side::Credit, false) => (
                CREDIT_POSTED,
                &m.credit_account_id,
                FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS,
            ),
        };
        let row = sqlx::query(sql)
            .bind(id.clone())
            .bind(amount)
            .bind(i64::from(m.ledger))
            .bind(FLAG_CLOSED)
            .bind(to_i64(MAX_BALANCE_MSAT, "ceiling")?)
            .bind(limit_flag)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else {
            undo(conn, &applied).await?;
            return Ok(None);
        };
        let account = account_from_row(&row)?;
        let delta = if side == Side::Debit {
            debit_delta
        } else {
            credit_delta
        };
        applied.push((account.clone(), delta));
        match side {
            Side::Debit => debit = Some(account),
            Side::Credit => credit = Some(account),
        }
    }
    let (Some(debit), Some(credit)) = (debit, credit) else {
        return Err(corrupt("fast path lost an account row"));
    };
    let timeout_ms = timeout.flatten();
    let transfer = Transfer {
        id: req.id.clone(),
        kind: if pending {
            TransferKind::Pending
        } else {
            TransferKind::Single
        },
        debit_account_id: m.debit_account_id.clone(),
        credit_account_id: m.credit_account_id.clone(),
        amount_msat: m.amount_msat,
        pending_id: None,
        ledger: m.ledger,
        code: m.code,
        linked: req.linked,
        post_full_amount: false,
        timeout_ms,
        expires_at_ms: timeout_ms.map(|t| now_ms.saturating_add(t)),
        pending_state: pending.then_some(PendingState::Pending),
        pending_resolved_at_ms: None,
        user_data: req.user_data.clone(),
        user_data_64: req.user_data_64,
        created_at_ms: now_ms,
        debit_account_version: debit.version,
        credit_account_version: credit.version,
    };
    if sql::insert_transfers(conn, std::slice::from_ref(&transfer)).await? != 1 {
        // The id exists: undo, and let the engine compare the bodies.
        undo(conn, &applied).await?;
        return Ok(None);
    }
    finish(conn, &transfer.id, [&debit, &credit], now_ms).await?;
    Ok(Some(Ok(Outcome::Created(transfer))))
}

/// Tries a post (`post: Some(amount)`) or a void (`post: None`) of a pending transfer.
/// `Ok(None)`: not decided here, use the batch path. The request must have passed
/// `validate_request`.
pub(crate) async fn try_resolve(
    conn: &mut AnyConnection,
    req: &NewTransfer,
    pending_id: &str,
    post: Option<Option<Msat>>,
    now_ms: u64,
) -> Result<Option<TransferResult>, LedgerError> {
    let new_state = if post.is_some() {
        PendingState::Posted
    } else {
        PendingState::Voided
    };
    let now = to_i64(now_ms, "now_ms")?;
    let min_pending_amount = match post {
        Some(Some(amount)) => amount.as_i64(),
        _ => 0,
    };
    let row = sqlx::query(RESOLVE_PENDING)
        .bind(pending_id.to_owned())
        .bind(new_state.as_str())
        .bind(now)
        .bind(min_pending_amount)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let p = transfer_from_row(&row)?;
    let released = p.amount_msat.as_i64();
    let posted = match post {
        Some(amount) => amount.unwrap_or(p.amount_msat),
        None => Msat::ZERO,
    };
    // A post refuses closed accounts; a void only releases money and goes through.
    let closed_guard = if post.is_some() { FLAG_CLOSED } else { 0 };
    let debit_delta = [-released, posted.as_i64(), 0, 0];
    let credit_delta = [0, 0, -released, posted.as_i64()];
    let order = if p.debit_account_id < p.credit_account_id {
        [Side::Debit, Side::Credit]
    } else {
        [Side::Credit, Side::Debit]
    };
    let mut applied: Vec<(Account, [i64; 4])> = Vec::with_capacity(2);
    let mut debit = None;
    let mut credit = None;
    for side in order {
        let (sql, id, delta) = match side {
            Side::Debit => (RESOLVE_DEBIT, &p.debit_account_id, debit_delta),
            Side::Credit => (RESOLVE_CREDIT, &p.credit_account_id, credit_delta),
        };
        let row = sqlx::query(sql)
            .bind(id.clone())
            .bind(released)
            .bind(posted.as_i64())
            .bind(closed_guard)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else {
            undo(conn, &applied).await?;
            unresolve(conn, pending_id).await?;
            return Ok(None);
        };
        let account = account_from_row(&row)?;
        applied.push((account.clone(), delta));
        match side {
            Side::Debit => debit = Some(account),
            Side::Credit => credit = Some(account),
        }
    }
    let (Some(debit), Some(credit)) = (debit, credit) else {
        return Err(corrupt("fast path lost an account row"));
    };
    let transfer = Transfer {
        id: req.id.clone(),
        kind: if post.is_some() {
            TransferKind::PostPending
        } else {
            TransferKind::VoidPending
        },
        debit_account_id: p.debit_account_id.clone(),
        credit_account_id: p.credit_account_id.clone(),
        amount_msat: if post.is_some() {
            posted
        } else {
            p.amount_msat
        },
        pending_id: Some(pending_id.to_owned()),
        ledger: p.ledger,
        code: p.code,
        linked: req.linked,
        post_full_amount: matches!(post, Some(None)),
        timeout_ms: None,
        expires_at_ms: None,
        pending_state: None,
        pending_resolved_at_ms: None,
        user_data: req.user_data.clone(),
        user_data_64: req.user_data_64,
        created_at_ms: now_ms,
        debit_account_version: debit.version,
        credit_account_version: credit.version,
    };
    if sql::insert_transfers(conn, std::slice::from_ref(&transfer)).await? != 1 {
        undo(conn, &applied).await?;
        unresolve(conn, pending_id).await?;
        return Ok(None);
    }
    finish(conn, &transfer.id, [&debit, &credit], now_ms).await?;
    Ok(Some(Ok(Outcome::Created(transfer))))
}

async fn unresolve(conn: &mut AnyConnection, pending_id: &str) -> Result<(), LedgerError> {
    sqlx::query(UNRESOLVE_PENDING)
        .bind(pending_id.to_owned())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Restores accounts changed by this fast-path attempt, given each one's row after the change
/// and the change (`[debits_pending, debits_posted, credits_pending, credits_posted]`).
async fn undo(
    conn: &mut AnyConnection,
    applied: &[(Account, [i64; 4])],
) -> Result<(), LedgerError> {
    for (after, delta) in applied {
        let b = &after.balances;
        let now = [
            to_i64(b.debits_pending_msat, "balance")?,
            to_i64(b.debits_posted_msat, "balance")?,
            to_i64(b.credits_pending_msat, "balance")?,
            to_i64(b.credits_posted_msat, "balance")?,
        ];
        let mut before = [0i64; 4];
        for i in 0..4 {
            before[i] = now[i]
                .checked_sub(delta[i])
                .ok_or_else(|| corrupt("balance out of range while undoing"))?;
        }
        let version = to_i64(after.version, "version")? - 1;
        sqlx::query(RESTORE_ACCOUNT)
            .bind(after.id.clone())
            .bind(before[0])
            .bind(before[1])
            .bind(before[2])
            .bind(before[3])
            .bind(version)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// After a fast-path success: asserts the limits on the rows the database returned, and writes
/// history rows for accounts that keep it.
async fn finish(
    conn: &mut AnyConnection,
    transfer_id: &str,
    accounts: [&Account; 2],
    now_ms: u64,
) -> Result<(), LedgerError> {
    for a in accounts {
        if !a.balances.within_limits(a.flags) {
            return Err(LedgerError::InvariantViolated(format!(
                "account {} crossed its limit: {:?}",
                a.id, a.balances
            )));
        }
    }
    let history: Vec<BalanceSnapshot> = accounts
        .iter()
        .filter(|a| a.flags.history)
        .map(|a| BalanceSnapshot {
            account_id: a.id.clone(),
            version: a.version,
            transfer_id: transfer_id.to_owned(),
            cause: BalanceChange::Transfer,
            balances: a.balances,
            timestamp_ms: now_ms,
        })
        .collect();
    if !history.is_empty() {
        sql::insert_history(conn, &history).await?;
    }
    Ok(())
}
