//! Migrations composed from several components into one sqlx `Migrator`.
//!
//! Each component owns a version range so that sets never collide: services use 1..999_999_999,
//! this crate 1_000_000_000.., the ledger 2_000_000_000... sqlx records a checksum per applied
//! migration and refuses to start if an applied migration was edited. Never edit an applied
//! migration: add a new one.

use std::borrow::Cow;

use sqlx::{
    AssertSqlSafe, SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
};

use crate::{Db, StoreError};

/// A component's migrations: `(version, description, sql)`, embedded with `include_str!`.
#[derive(Debug)]
pub struct MigrationSet {
    pub component: &'static str,
    pub migrations: &'static [(i64, &'static str, &'static str)],
}

/// This crate's own tables: idempotency records, the event journal and the receipt log.
pub static CORE: MigrationSet = MigrationSet {
    component: "store",
    migrations: &[
        (
            1_000_000_001,
            "core tables",
            include_str!("../migrations/1000000001_core.sql"),
        ),
        (
            1_000_000_002,
            "receipt checkpoints and event retention floors",
            include_str!("../migrations/1000000002_audit.sql"),
        ),
        (
            1_000_000_003,
            "checkpoint frontiers",
            include_str!("../migrations/1000000003_checkpoint_frontier.sql"),
        ),
    ],
};

/// Applies [`CORE`] and `sets` in version order. On PostgreSQL, sqlx holds an advisory lock
/// while migrating, so replicas starting together do not race.
pub async fn run(db: &Db, sets: &[&MigrationSet]) -> Result<(), StoreError> {
    let mut all = Vec::new();
    for set in std::iter::once(&&CORE).chain(sets.iter()) {
        for &(version, description, sql) in set.migrations {
            all.push(Migration::new(
                version,
                Cow::Owned(format!("{}: {description}", set.component)),
                MigrationType::Simple,
                AssertSqlSafe(sql).into_sql_str(),
                false,
            ));
        }
    }
    let mut versions: Vec<i64> = all.iter().map(|m| m.version).collect();
    versions.sort_unstable();
    if versions.windows(2).any(|w| w[0] == w[1]) {
        return Err(StoreError::Corrupt(
            "two migration sets use the same version".into(),
        ));
    }
    let mut conn = db.writer().await?;
    Migrator::with_migrations(all).run(&mut *conn).await?;
    Ok(())
}
