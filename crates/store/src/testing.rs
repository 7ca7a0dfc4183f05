//! Test databases: a fresh SQLite file, or a fresh PostgreSQL database that is dropped afterwards.
//!
//! PostgreSQL tests run when `OA_TEST_POSTGRES_URL` names a server (for example
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates its own database on it.

use std::time::Duration;

use crate::{Db, DbOptions, MigrationSet, StoreError};

/// The environment variable that enables PostgreSQL tests.
pub const POSTGRES_URL_ENV: &str = "OA_TEST_POSTGRES_URL";

/// A database for one test. Call [`TestDb::cleanup`] at the end of the test to drop a
/// PostgreSQL database; a SQLite file lives in a temporary directory that is removed on drop.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    admin_url: Option<String>,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A migrated SQLite database in a fresh temporary directory.
    pub async fn sqlite(sets: &[&MigrationSet]) -> Result<TestDb, StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let db = Db::connect_and_migrate(&url, &DbOptions::default(), sets).await?;
        Ok(TestDb {
            db,
            url,
            admin_url: None,
            name: None,
            _dir: Some(dir),
        })
    }

    /// A migrated, freshly created PostgreSQL database, or `None` if no server is configured.
    pub async fn postgres(sets: &[&MigrationSet]) -> Result<Option<TestDb>, StoreError> {
        let Some(admin_url) = std::env::var(POSTGRES_URL_ENV)
            .ok()
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let name = format!("oa_test_{}", uuid::Uuid::now_v7().simple());
        let admin = Db::connect(&admin_url, &small()).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(admin.pool())
            .await?;
        admin.close().await;
        let url = with_database(&admin_url, &name)?;
        let db = Db::connect_and_migrate(&url, &DbOptions::default(), sets).await?;
        Ok(Some(TestDb {
            db,
            url,
            admin_url: Some(admin_url),
            name: Some(name),
            _dir: None,
        }))
    }

    /// Closes the pool and drops the PostgreSQL database, if any.
    pub async fn cleanup(self) -> Result<(), StoreError> {
        self.db.close().await;
        if let (Some(admin_url), Some(name)) = (self.admin_url, self.name) {
            let admin = Db::connect(&admin_url, &small()).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(admin.pool())
            .await?;
            admin.close().await;
        }
        Ok(())
    }
}

/// Every backend a conformance test should run on: SQLite always, PostgreSQL when configured.
pub async fn all_backends(sets: &[&MigrationSet]) -> Result<Vec<TestDb>, StoreError> {
    let mut dbs = vec![TestDb::sqlite(sets).await?];
    match TestDb::postgres(sets).await? {
        Some(pg) => dbs.push(pg),
        None => eprintln!("{POSTGRES_URL_ENV} is not set: skipping the PostgreSQL run"),
    }
    Ok(dbs)
}

fn small() -> DbOptions {
    DbOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(10),
    }
}

/// Replaces the database name (the URL path) of a PostgreSQL URL.
pub fn with_database(url: &str, name: &str) -> Result<String, StoreError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .ok_or_else(|| StoreError::InvalidUrl("postgres url without scheme".into()))?
        + 3;
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}
