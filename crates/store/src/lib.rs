//! Storage shared by every service, on sqlx's `Any` driver so one set of SQL runs on SQLite (the
//! embedded default) and on PostgreSQL (production, several replicas).
//!
//! - [`Db`]: a pool plus the backend kind; [`Db::begin`] opens a write transaction that takes
//!   the SQLite write lock up front (`BEGIN IMMEDIATE`), so concurrent writers queue instead of
//!   failing with `SQLITE_BUSY` on a lock upgrade.
//! - [`migrate`]: each component (this crate, the ledger, each service) ships numbered
//!   migrations in its own version range; they run as one sqlx `Migrator`.
//! - [`group`]: group commit, many callers' small writes in one transaction.
//! - [`idempotency`]: the record behind every mutation's `idempotency_key`.
//! - [`journal`]: the per-topic event journal (`topic`, `seq`), with retention floors.
//! - [`receipt_log`]: the per-issuer receipt log (`log_index`, `prev_hash`), its Merkle leaves
//!   and its signed checkpoints.
//!
//! SQL conventions, so that the same text runs on both databases: `$1` placeholders, `BIGINT`
//! and `TEXT` columns only (no booleans or unsigned types), `CAST(SUM(x) AS BIGINT)` for sums,
//! and row locks taken by `UPDATE ... RETURNING` rather than `SELECT ... FOR UPDATE`.

mod db;
mod error;
pub mod group;
pub mod idempotency;
pub mod journal;
pub mod migrate;
pub mod receipt_log;
pub mod sql;
#[cfg(feature = "testing")]
pub mod testing;

pub use db::{Backend, CHECKPOINT_EVERY, Checkpoints, Db, DbOptions, Tx, WriterUse};
pub use error::StoreError;
pub use migrate::MigrationSet;
