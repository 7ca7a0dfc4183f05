//! A double-entry ledger with two-phase transfers, on each service's own database.
//!
//! Budgets (treasury), pool and agent balances and credit-envelope reservations (hydra), bonds and
//! warranty reserves (aegis) are all accounts and transfers here. A service adds [`MIGRATIONS`]
//! to its migration sets and calls the functions of this crate with `&mut *tx`, so that ledger
//! rows commit in the same transaction as its own state and receipts; or it uses [`Ledger`],
//! which opens, retries and commits a transaction per call.
//!
//! # Semantics (TigerBeetle's, in SQL)
//!
//! - **Accounts** have an id, an asset code (`ledger`), a `code`, flags and four balances:
//!   debits and credits, each pending and posted. Flags `debits_must_not_exceed_credits`
//!   (no overdraft: `debits_pending + debits_posted <= credits_posted`) and
//!   `credits_must_not_exceed_debits` limit balances; `history` keeps a row of balances per
//!   change; a closed account refuses new transfers and posts.
//! - **Transfers** are immutable, with a client-chosen id that is also the idempotency key: the
//!   same request again is `Ok(Outcome::Exists(original))`, a different body under the same id is
//!   an `ExistsWithDifferent*` code. A transfer moves an amount (an [`oa_money::Msat`], never
//!   zero) from a debit account to a credit account of the same ledger.
//! - **Kinds**: single-phase (posted at once); pending (reserves the amount in the pending
//!   balances, with an optional timeout); post-pending (releases the reservation and posts all of
//!   it or a smaller amount; the rest returns); void-pending (releases it). A pending transfer is
//!   resolved exactly once: the loser of a race between post, void and expiry gets
//!   `PendingTransferAlreadyPosted` / `AlreadyVoided` / `Expired`.
//! - **Linked** transfers form a chain up to the first unlinked one; a chain applies as a whole
//!   or not at all.
//! - **Result codes** are [`TransferError`] and [`AccountError`]: one typed variant per cause
//!   with a stable `code()`. Infrastructure failures are [`LedgerError`].
//! - **Clock**: every call takes `now_ms` from the caller, so tests control time. A pending
//!   transfer created at `t` with `timeout_ms: Some(d)` is expired from `t + d` on: it can no
//!   longer be posted or voided. [`expire_pending`] releases expired reservations.
//!
//! # Invariants, and where they are enforced
//!
//! - Per ledger, total debits equal total credits (pending and posted separately): every write
//!   path changes both sides by the same amount; the batch path asserts the balanced deltas in
//!   code before writing; [`check_invariants`] and [`audit`] check the stored state.
//! - No flagged account crosses its limit, under any concurrency: each change happens under the
//!   account's row lock (PostgreSQL) or the database write lock (SQLite), by a guarded `UPDATE`
//!   whose WHERE clause is the limit; the new balances are asserted in code; and the table has
//!   CHECK constraints, so a bug would fail the transaction rather than overdraw.
//! - A transfer id lands at most once (primary key); a pending transfer is resolved at most once
//!   (unique index on `pending_id`, and the pending row lock).
//!
//! # Performance
//!
//! A lone transfer takes the fast path (module `fast`): a pending reservation is one guarded
//! `UPDATE` per account plus one `INSERT`, with no reads; refusals fall back to the batch path,
//! which decides the result code. A batch (up to [`MAX_BATCH_SIZE`]) loads and locks what it
//! touches, runs the reference state machine (module `engine`) in memory, and writes in a few multi-row statements. All writers
//! lock pending rows first, then accounts in id order, so they never deadlock each other
//! (PostgreSQL would otherwise abort one after a one-second `deadlock_timeout`).
//!
//! # Differences from TigerBeetle
//!
//! - Ids are strings (at most [`MAX_ID_LEN`] printable ASCII), not `u128`; `user_data` is a
//!   string plus an `i64` instead of three integers.
//! - Time is the caller's `now_ms`, not a cluster timestamp. The per-account order of transfers
//!   and history is the account's `version`, bumped under its row lock, so it is the commit order
//!   of the changes to that account and a safe paging cursor.
//! - Balances are 64-bit: each side of an account holds at most [`MAX_BALANCE_MSAT`]
//!   (`OverflowsDebits` / `OverflowsCredits` past it) instead of `u128`.
//! - Expiry is a sweep the service runs ([`expire_pending`]) rather than automatic; until it
//!   runs, an expired reservation still counts against its account's limit (conservative).
//! - Zero-amount transfers are refused; a post's amount is `Option<Msat>` (`None` = the full
//!   pending amount) and a void has none; posts and voids inherit accounts, ledger and code.
//! - `exists` is a success carrying the original, and it does not break a linked chain, so a
//!   replayed chain reports `Exists` for each transfer.
//! - Closing is an operation ([`close_account`] / [`reopen_account`]), not a closing transfer.
//!   No balancing, closing or imported transfers; no linked account creation.
//! - The pending state lives on the pending transfer's row (its one mutable column) rather than
//!   in a separate table, so resolving it is one guarded UPDATE of that row.

mod api;
mod codes;
mod engine;
mod error;
mod fast;
mod invariants;
mod sql;
mod statement;
mod types;

use std::time::Duration;

use oa_store::{Db, MigrationSet};

pub use api::{
    AccountResult, MAX_BATCH_SIZE, MAX_EXPIRE_PER_CALL, MAX_PAGE_SIZE, account_history,
    account_transfers, close_account, create_accounts, create_transfer, create_transfers,
    create_transfers_batched, expire_pending, get_account, get_accounts, get_transfer,
    get_transfers, reopen_account,
};
pub use codes::{AccountError, TransferError};
pub use engine::TransferResult;
pub use error::LedgerError;
pub use invariants::{MAX_VIOLATIONS, Violation, audit, check_invariants};
pub use statement::{MAX_STATEMENT_ACCOUNTS, StatementLine, statement, statement_csv};
pub use types::{
    Account, AccountFlags, BalanceChange, BalanceSnapshot, Balances, MAX_BALANCE_MSAT, MAX_ID_LEN,
    MAX_USER_DATA_LEN, Movement, NewAccount, NewTransfer, Outcome, Page, PendingState, Transfer,
    TransferKind, TransferOp, is_valid_id,
};

/// The ledger's tables, in the version range reserved for it (2,000,000,001 and up).
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "ledger",
    migrations: &[(
        2_000_000_001,
        "ledger accounts, transfers and history",
        include_str!("../migrations/2000000001_ledger.sql"),
    )],
};

/// How many times [`Ledger`] runs a transaction that failed with a retryable error (PostgreSQL
/// deadlock or serialization failure, SQLite busy). Deadlocks cannot come from this crate's own
/// lock order; they come from callers mixing ledger calls with their own locks, and are rare, so
/// a few attempts suffice.
pub const MAX_TX_ATTEMPTS: u32 = 5;

/// First pause before retrying a transaction; doubled each attempt (2, 4, 8, 16 ms): long enough
/// for the competing transaction to commit, short against a request's budget.
const RETRY_BASE_DELAY: Duration = Duration::from_millis(2);

/// The ledger on a database, one transaction per call. Use the free functions instead when the
/// ledger change must commit together with the service's own rows.
#[derive(Clone, Debug)]
pub struct Ledger {
    db: Db,
}

/// Runs `$body` (an expression using `$conn: &mut AnyConnection`) in a fresh transaction,
/// committing on success and retrying retryable failures.
macro_rules! in_tx {
    ($self:ident, |$conn:ident| $body:expr) => {{
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result: Result<_, LedgerError> = async {
                let mut tx = $self.db.begin().await?;
                let value = {
                    let $conn: &mut sqlx::AnyConnection = &mut tx;
                    $body.await?
                };
                tx.commit().await?;
                Ok(value)
            }
            .await;
            match result {
                Err(e) if e.is_retryable() && attempt < MAX_TX_ATTEMPTS => {
                    tracing::debug!(attempt, error = %e, "retrying ledger transaction");
                    tokio::time::sleep(RETRY_BASE_DELAY * 2u32.pow(attempt - 1)).await;
                }
                other => break other,
            }
        }
    }};
}

/// Runs `$body` on a pooled connection outside any transaction (lookups).
macro_rules! on_conn {
    ($self:ident, |$conn:ident| $body:expr) => {{
        let mut pooled = $self.db.pool().acquire().await?;
        let $conn: &mut sqlx::AnyConnection = &mut pooled;
        $body.await
    }};
}

impl Ledger {
    pub fn new(db: Db) -> Ledger {
        Ledger { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn create_accounts(
        &self,
        accounts: &[NewAccount],
        now_ms: u64,
    ) -> Result<Vec<AccountResult>, LedgerError> {
        in_tx!(self, |conn| create_accounts(conn, accounts, now_ms))
    }

    pub async fn close_account(
        &self,
        account_id: &str,
    ) -> Result<Result<Account, AccountError>, LedgerError> {
        in_tx!(self, |conn| close_account(conn, account_id))
    }

    pub async fn reopen_account(
        &self,
        account_id: &str,
    ) -> Result<Result<Account, AccountError>, LedgerError> {
        in_tx!(self, |conn| reopen_account(conn, account_id))
    }

    pub async fn create_transfers(
        &self,
        transfers: &[NewTransfer],
        now_ms: u64,
    ) -> Result<Vec<TransferResult>, LedgerError> {
        in_tx!(self, |conn| create_transfers(conn, transfers, now_ms))
    }

    pub async fn create_transfer(
        &self,
        transfer: &NewTransfer,
        now_ms: u64,
    ) -> Result<TransferResult, LedgerError> {
        in_tx!(self, |conn| create_transfer(conn, transfer, now_ms))
    }

    pub async fn expire_pending(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Transfer>, LedgerError> {
        in_tx!(self, |conn| expire_pending(conn, now_ms, limit))
    }

    pub async fn get_account(&self, account_id: &str) -> Result<Option<Account>, LedgerError> {
        on_conn!(self, |conn| get_account(conn, account_id))
    }

    pub async fn get_accounts<S: AsRef<str>>(
        &self,
        account_ids: &[S],
    ) -> Result<Vec<Account>, LedgerError> {
        on_conn!(self, |conn| get_accounts(conn, account_ids))
    }

    pub async fn get_transfer(&self, transfer_id: &str) -> Result<Option<Transfer>, LedgerError> {
        on_conn!(self, |conn| get_transfer(conn, transfer_id))
    }

    pub async fn get_transfers<S: AsRef<str>>(
        &self,
        transfer_ids: &[S],
    ) -> Result<Vec<Transfer>, LedgerError> {
        on_conn!(self, |conn| get_transfers(conn, transfer_ids))
    }

    pub async fn account_transfers(
        &self,
        account_id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Page<Transfer>, LedgerError> {
        on_conn!(self, |conn| account_transfers(
            conn,
            account_id,
            after_version,
            limit
        ))
    }

    pub async fn account_history(
        &self,
        account_id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Page<BalanceSnapshot>, LedgerError> {
        on_conn!(self, |conn| account_history(
            conn,
            account_id,
            after_version,
            limit
        ))
    }

    pub async fn check_invariants(&self) -> Result<Vec<Violation>, LedgerError> {
        on_conn!(self, |conn| check_invariants(conn))
    }

    pub async fn audit(&self) -> Result<Vec<Violation>, LedgerError> {
        on_conn!(self, |conn| audit(conn))
    }
}
