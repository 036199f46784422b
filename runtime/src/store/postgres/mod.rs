//! The PostgreSQL store: events, stream versions, command outcomes and snapshots in one
//! schema, created and migrated on connect.
//!
//! # Global order without gaps
//!
//! A reader following positions must never pass a position that a transaction still in
//! flight will commit later. Identity values are taken when a row is inserted, not when it
//! commits, so two concurrent appends can commit out of position order. Filtering reads
//! on the writing transaction's id (`tx_id < pg_snapshot_xmin(pg_current_snapshot())`) is
//! not enough on its own: a transaction gets its id at its first write and its positions
//! later, so a transaction with a *lower* id can take *higher* positions and commit while
//! the other is still open. The reader would see the higher position and skip the lower.
//!
//! Instead an append takes a transaction-scoped advisory lock (one per schema) just before
//! its events are inserted. Positions are therefore handed out in commit order: the lock is
//! released only after the commit is visible, and the next append takes its positions after
//! that. Every event a reader can see has every lower committed position visible too, so
//! `read_all` and `head` need no filter and a writer reads its own appends at once. The
//! lock is taken after the stream's row is locked, so appends wait on each other only for
//! the last step (insert and commit), which `pg_notify` serializes anyway.
//!
//! # Projections
//!
//! Checkpoints live in `annals_checkpoints` and move by compare-and-set in the projection's
//! own transaction ([`PgTx`]), so the read model's writes and the checkpoint commit
//! together. A runner waiting for events listens on [`PgStore::notify_channel`] (one
//! listening connection per store, shared by its clones). The lease that makes one runner
//! active among several processes is a session advisory lock held on a connection of its
//! own: it is released when the lease is dropped or when its process or connection dies.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Executor, Postgres};
use tokio::sync::watch;

use crate::error::{Operation, StoreError};
use crate::store::sql::migrate;
use crate::store::sql::to_i64;
use crate::store::sql::Sql;

use schema::{validate_schema, MIGRATIONS};
use statements::Statements;

mod append;
mod checkpoints;
mod leases;

pub use leases::PgLease;
mod notifications;
mod parking;
mod reads;
mod schema;
mod snapshots;
mod statements;

/// The transaction a [`PgStore`] gives projection handlers: write the read model with
/// `&mut **tx` as the executor, and it commits with the projection's checkpoint.
///
/// ```no_run
/// use annals::{projection, EventMeta, PgTx};
/// # #[derive(annals::Event, serde::Serialize, serde::Deserialize)]
/// # struct Deposited { amount: i64 }
///
/// struct Balances;
///
/// #[projection(name = "balances")]
/// impl Balances {
///     #[on]
///     async fn deposited(
///         &mut self,
///         e: &Deposited,
///         meta: &EventMeta,
///         tx: &mut PgTx,
///     ) -> Result<(), sqlx::Error> {
///         sqlx::query(
///             "INSERT INTO balances (account, balance) VALUES ($1, $2) \
///              ON CONFLICT (account) DO UPDATE SET balance = balances.balance + $2",
///         )
///         .bind(&meta.stream_id)
///         .bind(e.amount)
///         .execute(&mut **tx)
///         .await?;
///         Ok(())
///     }
/// }
/// ```
pub type PgTx = sqlx::Transaction<'static, Postgres>;

/// A PostgreSQL store with every capability (streams, snapshots, the global log,
/// transactions, checkpoints, leases, wake-ups), in one schema of one database. Clones
/// share the connection pool and the notification listener.
///
/// ```no_run
/// # async fn demo() -> Result<(), annals::StoreError> {
/// let store = annals::PgStore::open("postgres://app@localhost/bank").await?;
/// let tenant = annals::PgStore::options()
///     .schema("tenant_a")
///     .max_connections(20)
///     .open("postgres://app@localhost/bank")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    schema: String,
    channel: String,
    append_lock: i64,
    sql: Statements,
    /// Wake-ups from the notification listener, started by the first wait for events; its
    /// sender closes when the listener stops (and the next wait starts another).
    wake_ups: tokio::sync::Mutex<Option<watch::Receiver<u64>>>,
    /// A connection that failed to take a lease, kept for the next try: a standby runner
    /// retries every idle timeout.
    spare_lease_connection: Mutex<Option<PgConnection>>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.inner.schema)
            .field("pool", &self.inner.pool)
            .finish_non_exhaustive()
    }
}

/// How to open a [`PgStore`]: schema, pool size, whether to migrate.
#[derive(Debug, Clone)]
pub struct PgStoreOptions {
    schema: String,
    max_connections: u32,
    acquire_timeout: Duration,
    migrate: bool,
}

/// How long a PostgreSQL operation waits for a connection by default: long enough for a
/// busy pool, short enough that an outage surfaces as an error, not a hang.
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for PgStoreOptions {
    fn default() -> Self {
        PgStoreOptions {
            schema: PgStore::DEFAULT_SCHEMA.to_owned(),
            max_connections: 10,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            migrate: true,
        }
    }
}

impl PgStoreOptions {
    /// The defaults: schema `annals`, 10 connections, a 5 s acquire timeout, migrate on
    /// connect.
    pub fn new() -> Self {
        PgStoreOptions::default()
    }

    /// The schema holding the store's tables: a lowercase SQL identifier
    /// (`[a-z_][a-z0-9_]*`, at most 56 bytes, not `pg_*` or `information_schema`).
    /// Checked when connecting.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The pool's size when [`Self::open`] creates it (at least 1).
    #[must_use]
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long an operation waits for a free connection (or for a new one to connect)
    /// before failing with a database error: during an outage, `execute` and the runners
    /// fail after this instead of blocking (default 5 s).
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Whether to create the schema and apply pending migrations when opening (the
    /// default). Turn it off when migrations run as a separate deployment step
    /// ([`PgStore::migrate`]).
    #[must_use]
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Connects a new pool to `url` and opens the store on it.
    pub async fn open(self, url: &str) -> Result<PgStore, StoreError> {
        validate_schema(&self.schema)?;
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect(url)
            .await
            .map_err(|e| StoreError::database(Operation::Open, e))?;
        self.with_pool(pool).await
    }

    /// Opens the store on an existing pool (`max_connections` and `acquire_timeout` do not
    /// apply: they are the pool's own).
    pub async fn with_pool(self, pool: PgPool) -> Result<PgStore, StoreError> {
        validate_schema(&self.schema)?;
        let store = PgStore {
            inner: Arc::new(Inner {
                append_lock: lock_key("append", &self.schema),
                channel: format!("{}_events", self.schema),
                sql: Statements::new(&self.schema),
                schema: self.schema,
                pool,
                wake_ups: tokio::sync::Mutex::new(None),
                spare_lease_connection: Mutex::new(None),
            }),
        };
        if self.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }
}

impl PgStore {
    /// The schema used unless another is chosen.
    pub const DEFAULT_SCHEMA: &'static str = "annals";

    /// Connects to `url` and opens the store in schema `annals`, creating and migrating it:
    /// [`PgStoreOptions::open`] with the defaults.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        PgStoreOptions::new().open(url).await
    }

    /// Options for opening a store: schema, pool size, migrations.
    pub fn options() -> PgStoreOptions {
        PgStoreOptions::new()
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The channel every append notifies (`<schema>_events`, payload: the last position
    /// appended), for `LISTEN`.
    pub fn notify_channel(&self) -> &str {
        &self.inner.channel
    }

    /// Creates the schema if missing and applies the embedded migrations it lacks, in one
    /// transaction under an advisory lock: several processes may start at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        const OP: Operation = Operation::Migrate;
        let schema = quote_ident(&self.inner.schema);
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(|e| StoreError::database(OP, e))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key("migrate", &self.inner.schema))
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::database(OP, e))?;
        let setup = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema}, pg_temp"
        );
        tx.execute(&Sql::from(setup))
            .await
            .map_err(|e| StoreError::database(OP, e))?;
        migrate::migrate(&mut *tx, MIGRATIONS).await?;
        tx.commit().await.map_err(|e| StoreError::database(OP, e))
    }
}

pub(super) fn to_i32(value: u32, what: &'static str) -> Result<i32, StoreError> {
    i32::try_from(value).map_err(|_| StoreError::OutOfRange {
        what,
        value: u64::from(value),
    })
}

/// Quotes an identifier already checked by [`validate_schema`].
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A stable advisory lock key for `purpose` in `schema` (FNV-1a), the same in every process.
pub(super) fn lock_key(purpose: &str, schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "annals "
        .bytes()
        .chain(purpose.bytes())
        .chain([b' '])
        .chain(schema.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_be_bytes(hash.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::schema::{validate_schema, MAX_SCHEMA_LEN};
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["annals", "_x", "tenant_42", &"a".repeat(MAX_SCHEMA_LEN)] {
            assert!(validate_schema(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Annals",
            "1abc",
            "a-b",
            "a b",
            "a\"b",
            "a;drop schema public",
            "é",
            "pg_catalog",
            "pg_x",
            "information_schema",
            &"a".repeat(MAX_SCHEMA_LEN + 1),
        ] {
            assert!(
                matches!(validate_schema(bad), Err(StoreError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn lock_keys_differ_by_purpose_and_schema() {
        let keys = [
            lock_key("append", "a"),
            lock_key("append", "b"),
            lock_key("migrate", "a"),
            lock_key("appenda", ""),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(lock_key("append", "a"), lock_key("append", "a"));
    }
}
