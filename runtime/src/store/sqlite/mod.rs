//! The SQLite store: the embedded default. One database file (or memory), WAL journal, one
//! writer at a time, readers alongside.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Sqlite;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::error::{BoxError, Operation, StoreError};
use crate::store::sql::migrate;
use crate::store::sql::to_i64;

use schema::{enable_wal, MIGRATIONS};

mod append;
mod catalog;
mod checkpoints;
mod leases;
mod notifications;
mod parking;
mod processes;
mod reads;
mod schema;
mod snapshots;

/// How long a writer waits for the write lock before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections of a file-backed pool: readers run in parallel under WAL, writers queue.
const MAX_CONNECTIONS: u32 = 8;

/// A store with every capability (streams, snapshots, the global log, transactions,
/// checkpoints, leases and in-process wake-ups) in a SQLite database. Clones share the pool;
/// every store on one file shares its leases, across processes too (a lock file beside it).
///
/// ```no_run
/// # async fn demo() -> Result<(), annals::StoreError> {
/// use annals::store::EventStore;
/// let store = annals::SqliteStore::open("app.db").await?;
/// let version = store.stream_version(annals::StreamRef::new("account", "42")).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Queues this process's appends before they take SQLite's write lock: a writer finding
    /// that lock taken sleeps in SQLite's busy handler (1 ms, then longer), one waiting here
    /// is woken as soon as the previous append commits.
    write: Arc<tokio::sync::Mutex<()>>,
    /// Wakes this process's live projections after an append commits.
    appended: Arc<Notify>,
    leases: leases::FileLeases,
}

/// The transaction [`SqliteStore`] projections write their read models in:
/// `sqlx::query(..).execute(&mut **tx)`.
pub type SqliteTx = sqlx::Transaction<'static, Sqlite>;

/// How to open a [`SqliteStore`]: `SqliteStore::options().max_connections(4).open(path)`.
#[derive(Debug, Clone)]
pub struct SqliteStoreOptions {
    max_connections: u32,
    busy_timeout: Duration,
}

impl Default for SqliteStoreOptions {
    fn default() -> Self {
        SqliteStoreOptions {
            max_connections: MAX_CONNECTIONS,
            busy_timeout: BUSY_TIMEOUT,
        }
    }
}

impl SqliteStoreOptions {
    /// The defaults: 8 connections, a 10 s busy timeout.
    pub fn new() -> Self {
        SqliteStoreOptions::default()
    }

    /// The pool's size when [`Self::open`] creates it (at least 1). Readers run in
    /// parallel; writers take SQLite's one write lock in turn.
    #[must_use]
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long a writer waits for another process's write lock before failing.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Opens (creating if missing) the database file at `path` and migrates its schema.
    ///
    /// The connections use the WAL journal, `synchronous = NORMAL` (durable across process
    /// crashes; a power loss may drop the last commits), the busy timeout and foreign keys.
    /// `":memory:"` opens a private in-memory database, like [`SqliteStore::in_memory`].
    pub async fn open(self, path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        if path == Path::new(":memory:") {
            return SqliteStore::in_memory().await;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(self.busy_timeout)
            .foreign_keys(true);
        let failed = |source: BoxError| {
            StoreError::database(
                Operation::Open,
                OpenFailed {
                    path: path.to_owned(),
                    source,
                },
            )
        };
        // No ping before each statement (sqlx's default): a connection to a local file
        // has no server to lose, and the ping is a round trip to the connection's worker
        // thread before every statement.
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(self.max_connections)
            .connect_with(options)
            .await
            .map_err(|e| failed(e.into()))?;
        enable_wal(&pool).await.map_err(failed)?;
        self.with_pool(pool).await
    }

    /// A store over an existing pool (for read models kept in the same database), after
    /// migrating its schema. The store's tables are all named `annals_*`.
    ///
    /// The pool's options are kept as they are (`max_connections` and `busy_timeout` do
    /// not apply): set the WAL journal and a busy timeout (appends take the write lock with
    /// `BEGIN IMMEDIATE`, and wait for it only that long). Clones of the store queue their
    /// appends in-process; separate stores on one database are ordered by SQLite's lock
    /// alone.
    pub async fn with_pool(self, pool: SqlitePool) -> Result<SqliteStore, StoreError> {
        let store = SqliteStore {
            leases: leases::leases_of(&pool),
            pool,
            write: Arc::default(),
            appended: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` with the default options
    /// and migrates its schema: [`SqliteStoreOptions::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        SqliteStoreOptions::new().open(path).await
    }

    /// Options for opening a store: pool size, busy timeout, or an existing pool.
    pub fn options() -> SqliteStoreOptions {
        SqliteStoreOptions::new()
    }

    /// A new, empty database in memory; it lives as long as the store and its clones.
    ///
    /// The pool holds a single connection (an in-memory database is private to the
    /// connection that created it), so operations on the store run one at a time.
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // Closing the only connection would drop the database.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|source| {
                StoreError::database(
                    Operation::Open,
                    OpenFailed {
                        path: PathBuf::from(":memory:"),
                        source: source.into(),
                    },
                )
            })?;
        SqliteStoreOptions::new().with_pool(pool).await
    }

    /// The connection pool, for queries on read models kept in the same database.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // The write lock for the whole run: two processes opening one new file at once
        // apply the schema once, the second finds it recorded.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| StoreError::database(Operation::Migrate, e))?;
        migrate::migrate(&mut *tx, MIGRATIONS).await?;
        tx.commit()
            .await
            .map_err(|e| StoreError::database(Operation::Migrate, e))
    }
}

/// Unix microseconds. `OffsetDateTime` stays within ±10,000 years, far inside `i64`.
pub(super) fn micros(time: OffsetDateTime) -> i64 {
    let micros = time.unix_timestamp_nanos() / 1000;
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// Opening a database file failed.
#[derive(Debug)]
struct OpenFailed {
    path: PathBuf,
    source: BoxError,
}

impl fmt::Display for OpenFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot open `{}`", self.path.display())
    }
}

impl std::error::Error for OpenFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
