//! Connection pools for SQLite and PostgreSQL behind one type.
//!
//! On PostgreSQL every connection comes from one pool. On SQLite, which admits one writer at a
//! time, one connection is the writer: it is held by the [`Db`] for its whole life and lent to one
//! transaction (or [`Db::writer`] user) at a time through a fair queue, with no pool check-out or
//! liveness `ping` per transaction (each a hand-off to SQLite's worker thread), and the pool's
//! connections only read (`PRAGMA query_only`), beside the writer, so a write that bypasses the
//! writer fails loudly instead of waiting in SQLite's busy handler.

use std::{
    ops::{Deref, DerefMut},
    sync::{
        Arc, Once, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{
    Any, AnyConnection, AnyPool, ConnectOptions, Connection, Database, Executor, SqlSafeStr,
    any::{AnyConnectOptions, AnyPoolOptions},
    pool::PoolConnection,
};
use sqlx_core::transaction::TransactionManager;
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::{MigrationSet, StoreError, migrate};

type Manager = <Any as Database>::TransactionManager;

/// A connection that may write: SQLite's writer or a pooled PostgreSQL connection. Its time
/// held counts towards [`Db::writer_use`] when it is dropped.
pub struct Writer {
    held: Held,
    since: Instant,
    counters: Arc<UseCounters>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.counters
            .held_ns
            .fetch_add(nanos(self.since.elapsed()), Ordering::Relaxed);
        self.counters.returned.fetch_add(1, Ordering::Release);
    }
}

/// How the connections that write have been used since the database was opened (what
/// `/metrics` reports as `oa_db_writer_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterUse {
    /// Transactions begun and [`Db::writer`] loans (those that got the connection).
    pub loans: u64,
    /// Time callers waited for the connection (on SQLite, queued behind other writes), also
    /// when the wait timed out.
    pub waited: Duration,
    /// Time the connection was held. On SQLite there is one writer: `held` growing by about a
    /// second each second means every write queues behind it.
    pub held: Duration,
}

#[derive(Debug, Default)]
struct UseCounters {
    loans: AtomicU64,
    waited_ns: AtomicU64,
    held_ns: AtomicU64,
    /// Loans ended (each write committed or rolled back by then).
    returned: AtomicU64,
    checkpoints: AtomicU64,
    wal_pages: AtomicU64,
    wal_pages_copied: AtomicU64,
}

/// The background checkpoints of a SQLite database's write-ahead log (none on PostgreSQL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoints {
    /// Checkpoints run.
    pub runs: u64,
    /// The log's size in pages at the last one.
    pub wal_pages: u64,
    /// Of those, the pages in the database file after it (all of them: nothing left to copy).
    pub wal_pages_copied: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

enum Held {
    Pooled(PoolConnection<Any>),
    Writer(OwnedMappedMutexGuard<Option<AnyConnection>, AnyConnection>),
}

impl Deref for Writer {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match &self.held {
            Held::Pooled(c) => c,
            Held::Writer(c) => c,
        }
    }
}

impl DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.held {
            Held::Pooled(c) => c,
            Held::Writer(c) => c,
        }
    }
}

/// A write transaction. The handler owns it: the state change, ledger rows, journal event and
/// receipt all commit together or not at all. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx {
    conn: Writer,
    open: bool,
}

impl Tx {
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        Manager::commit(&mut self.conn).await?;
        self.open = false;
        Ok(())
    }

    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        Manager::rollback(&mut self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            // Queued on the connection before it can serve anyone else (as sqlx's own
            // `Transaction` does).
            Manager::start_rollback(&mut self.conn);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Pool size. On SQLite, the readers' pool (at most [`MAX_SQLITE_READERS`]), beside the one
    /// writer: SQLite admits one writer at a time anyway, and one writing connection serializes
    /// writers in-process without the busy-wait sleeps of SQLite's lock handler, which is both
    /// faster and fairer under load.
    pub max_connections: u32,
    /// How long a caller waits for a pooled connection before a typed error.
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// A database: the pool, SQLite's writer, and which backend it talks to.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// SQLite's writer; `None` inside once the database is closed.
    writer: Option<Arc<WriterSlot>>,
    counters: Arc<UseCounters>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A SQLite database's one writing connection, lent to one user at a time.
type WriterSlot = Mutex<Option<AnyConnection>>;

static DRIVERS: Once = Once::new();

/// Most reading connections of a SQLite database (each is a thread).
pub const MAX_SQLITE_READERS: u32 = 4;

/// How often a SQLite database's write-ahead log is checkpointed, beside the writer (when
/// anything was written since the last time). Measured under payment load against 25, 100 and
/// 200 ms: the most payments a second with the shortest tail (BENCHMARKS.md, tenth session).
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
/// The WAL size (pages) at which the writer checkpoints at its own commit, should the
/// background checkpoints fall behind (SQLite's default is 1,000).
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Checkpoints a SQLite database's write-ahead log every [`CHECKPOINT_EVERY`] from a reading
/// connection, until the pool closes. Left to SQLite, the writer checkpoints at its own commit
/// every 1,000 pages, holding the write lock (so every queued write) while it copies pages into
/// the database and syncs. A `PASSIVE` checkpoint beside it copies what no reader still needs and
/// blocks no one; small and frequent, it keeps each one short.
async fn checkpoints(pool: AnyPool, writer: Weak<WriterSlot>, counters: Arc<UseCounters>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Writes ended by the last checkpoint that left nothing to copy: none since, none to do.
    let mut settled_at = None;
    loop {
        tick.tick().await;
        // Closed, or every `Db` handle dropped.
        if pool.is_closed() || writer.strong_count() == 0 {
            return;
        }
        let returned = counters.returned.load(Ordering::Acquire);
        if settled_at == Some(returned) {
            continue;
        }
        let done = async {
            let mut conn = pool.acquire().await?;
            sqlx::query_as::<Any, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut *conn)
                .await
        }
        .await;
        match done {
            // Another checkpoint held the lock (`busy`, with -1 for both counts): not done.
            Ok((busy, log, copied)) if busy != 0 || log < 0 || copied < 0 => {
                settled_at = None;
            }
            Ok((_, log, copied)) => {
                settled_at = (log == copied).then_some(returned);
                counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                counters
                    .wal_pages
                    .store(u64::try_from(log).unwrap_or(0), Ordering::Relaxed);
                counters
                    .wal_pages_copied
                    .store(u64::try_from(copied).unwrap_or(0), Ordering::Relaxed);
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => tracing::warn!(%error, "checkpointing the sqlite write-ahead log"),
        }
    }
}

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://...`). A SQLite file is created if it
    /// does not exist, in WAL mode with `synchronous=NORMAL` (durable at each checkpoint, never
    /// corrupt; the usual setting for an application database), and checkpointed beside the
    /// writer (see `checkpoints`); on the tokio runtime, which it needs.
    pub async fn connect(url: &str, opts: &DbOptions) -> Result<Db, StoreError> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::InvalidUrl(
                "expected a sqlite:// or postgres:// url".into(),
            ));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::InvalidUrl(e.to_string()))?;
        let (pool, writer, counters) = match backend {
            Backend::Sqlite => {
                // The writer first: it puts the file in WAL mode, which persists.
                let mut writer = options.connect().await?;
                writer.execute("PRAGMA journal_mode=WAL").await?;
                writer.execute("PRAGMA synchronous=NORMAL").await?;
                // Checkpoints run beside the writer (`checkpoints`); the writer's own is only
                // the backstop should they fall behind.
                writer
                    .execute(sqlx::AssertSqlSafe(format!(
                        "PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}"
                    )))
                    .await?;
                let pool = AnyPoolOptions::new()
                    .max_connections(opts.max_connections.clamp(1, MAX_SQLITE_READERS))
                    .acquire_timeout(opts.acquire_timeout)
                    // A local file: nothing to find broken before each use.
                    .test_before_acquire(false)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            conn.execute("PRAGMA query_only=1").await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?;
                let counters = Arc::<UseCounters>::default();
                let writer = Arc::new(Mutex::new(Some(writer)));
                tokio::spawn(checkpoints(
                    pool.clone(),
                    Arc::downgrade(&writer),
                    counters.clone(),
                ));
                (pool, Some(writer), counters)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(opts.acquire_timeout)
                    .connect_with(options)
                    .await?;
                (pool, None, Arc::default())
            }
        };
        Ok(Db {
            pool,
            backend,
            writer,
            counters,
        })
    }

    /// Connects and applies the given migration sets (this crate's core set is always included).
    pub async fn connect_and_migrate(
        url: &str,
        opts: &DbOptions,
        sets: &[&MigrationSet],
    ) -> Result<Db, StoreError> {
        let db = Db::connect(url, opts).await?;
        migrate::run(&db, sets).await?;
        Ok(db)
    }

    /// Connections for reading (on SQLite they cannot write: use [`Db::begin`] or
    /// [`Db::writer`]). On PostgreSQL they may also write.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A connection to read with (on SQLite one of the read-only pool's, beside the writer).
    pub async fn reader(&self) -> Result<PoolConnection<Any>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    /// A connection that may write, outside a transaction: each statement commits by itself.
    /// On SQLite it is the writer, so hold it briefly.
    pub async fn writer(&self) -> Result<Writer, StoreError> {
        let asked = Instant::now();
        let held = async {
            Ok::<_, StoreError>(match &self.writer {
                Some(w) => {
                    let guard =
                        tokio::time::timeout(self.acquire_timeout(), w.clone().lock_owned())
                            .await
                            .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))?;
                    let conn = OwnedMutexGuard::try_map(guard, Option::as_mut)
                        .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
                    Held::Writer(conn)
                }
                None => Held::Pooled(self.pool.acquire().await?),
            })
        }
        .await;
        // A wait that timed out counts too: it is the worst of them.
        let since = Instant::now();
        let c = &self.counters;
        c.waited_ns
            .fetch_add(nanos(since.duration_since(asked)), Ordering::Relaxed);
        let held = held?;
        c.loans.fetch_add(1, Ordering::Relaxed);
        Ok(Writer {
            held,
            since,
            counters: self.counters.clone(),
        })
    }

    /// How the connections that write have been used so far (clones of a `Db` share it).
    pub fn writer_use(&self) -> WriterUse {
        let c = &self.counters;
        WriterUse {
            loans: c.loans.load(Ordering::Relaxed),
            waited: Duration::from_nanos(c.waited_ns.load(Ordering::Relaxed)),
            held: Duration::from_nanos(c.held_ns.load(Ordering::Relaxed)),
        }
    }

    /// What the background checkpoints of a SQLite database have done so far.
    pub fn checkpoints(&self) -> Checkpoints {
        let c = &self.counters;
        Checkpoints {
            runs: c.checkpoints.load(Ordering::Relaxed),
            wal_pages: c.wal_pages.load(Ordering::Relaxed),
            wal_pages_copied: c.wal_pages_copied.load(Ordering::Relaxed),
        }
    }

    fn acquire_timeout(&self) -> Duration {
        self.pool.options().get_acquire_timeout()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Opens a write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let mut conn = self.writer().await?;
        let statement = match self.backend {
            Backend::Sqlite => Some("BEGIN IMMEDIATE".into_sql_str()),
            Backend::Postgres => None,
        };
        Manager::begin(&mut conn, statement).await?;
        Ok(Tx { conn, open: true })
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(w) = &self.writer {
            // Waits for the writer's current user; later callers find the database closed.
            let conn = w.lock().await.take();
            if let Some(conn) = conn
                && let Err(error) = conn.close().await
            {
                tracing::warn!(%error, "closing the sqlite writer");
            }
        }
    }
}
