//! Errors of the ledger as a component, as opposed to the per-request result codes in
//! [`crate::codes`]: the database failed, the caller misused the API, or stored data broke an
//! invariant. In every case the caller's transaction must be rolled back.

use oa_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store error: {0}")]
    Store(StoreError),
    /// Mutations must run inside the caller's transaction (pass `&mut *tx`), or the ledger
    /// rows could commit without the service's own state.
    #[error("ledger mutations must run inside a transaction")]
    NotInTransaction,
    #[error("a batch of {len} exceeds the limit of {max}")]
    BatchTooLarge { len: usize, max: usize },
    #[error("now_ms is beyond the range the ledger stores")]
    ClockOutOfRange,
    /// A stored row could not be read back (bad enum text, negative amount, missing account).
    #[error("stored ledger data is inconsistent: {0}")]
    Corrupt(String),
    /// A money invariant checked in code failed. This is a bug; nothing was written that
    /// survives, as long as the caller rolls back.
    #[error("ledger invariant violated: {0}")]
    InvariantViolated(String),
    /// Concurrent writers kept racing on the same transfer ids.
    #[error("gave up after {0} attempts under contention")]
    Contention(u32),
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(e) => LedgerError::Database(e),
            other => LedgerError::Store(other),
        }
    }
}

// PostgreSQL SQLSTATEs after which the whole transaction can simply be run again.
const PG_SERIALIZATION_FAILURE: &str = "40001";
const PG_DEADLOCK_DETECTED: &str = "40P01";
// SQLite primary result codes (the low byte of the extended code sqlx reports).
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;

impl LedgerError {
    /// True when running the same transaction again may succeed: a PostgreSQL deadlock or
    /// serialization failure, SQLite busy/locked, or id contention.
    pub fn is_retryable(&self) -> bool {
        match self {
            LedgerError::Database(sqlx::Error::Database(e)) => {
                let Some(code) = e.code() else { return false };
                if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    return code
                        .parse::<i64>()
                        .is_ok_and(|c| matches!(c & 0xff, SQLITE_BUSY | SQLITE_LOCKED));
                }
                code == PG_SERIALIZATION_FAILURE || code == PG_DEADLOCK_DETECTED
            }
            LedgerError::Contention(_) => true,
            _ => false,
        }
    }
}

pub(crate) fn corrupt(what: impl Into<String>) -> LedgerError {
    LedgerError::Corrupt(what.into())
}
