//! The store's error type. Constraint violations are told apart by kind, never by message text.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("receipt error: {0}")]
    Receipt(#[from] oa_receipts::ReceiptError),
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    #[error(transparent)]
    Stopped(#[from] crate::group::Stopped),
}

impl StoreError {
    /// True when the error is a unique-constraint violation (a concurrent insert won a race).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}
