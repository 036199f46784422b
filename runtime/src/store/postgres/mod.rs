//! The PostgreSQL store: events, stream versions, command outcomes and snapshots in one
//! schema, created and migrated on connect.
//!
//! # Global order without gaps, without a global lock
//!
//! A reader following the log must never pass an event that a transaction still in flight
//! will commit later. Positions are taken when a row is inserted, not when it commits, so
//! concurrent appends commit out of position order, and a reader following positions alone
//! would skip the late ones. Serializing appends behind one lock would fix that at the cost
//! of every writer waiting for every other's commit.
//!
//! Instead the log's order is (writing transaction's id, position), and a read returns only
//! events whose transaction id is below the oldest transaction still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`): every transaction below that horizon has
//! finished, and every later one gets a higher id, so what a reader has passed never grows.
//! The cursor a runner checkpoints ([`PgCursor`]) is that pair. Appends to one stream take
//! a per-stream advisory lock before they write (and so before they get their transaction
//! id), which keeps each stream's versions in that order; appends to different streams take
//! no common lock and commit in parallel, sharing WAL flushes.
//!
//! A transaction that stays open holds the horizon back: events committed after it began
//! wait until it ends (any transaction of the cluster with a transaction id counts, so keep
//! write transactions short). In a transaction that already wrote before it appends (its id
//! taken earlier), a concurrent append to the same stream may come before it in the log
//! order: append first in such transactions, as [`Repository`](crate::Repository) does.
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

pub use log::PgCursor;

mod append;
mod catalog;
mod checkpoints;
mod leases;
mod log;

pub use leases::PgLease;
mod notifications;
mod parking;
mod processes;
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
    sql: Statements,
    /// Pokes the task that notifies live readers after commits, started by the first poke.
    wake_readers: std::sync::OnceLock<tokio::sync::mpsc::Sender<()>>,
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
                wake_readers: std::sync::OnceLock::new(),
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

    /// The channel the store notifies after commits that may have appended
    /// (`<schema>_events`, empty payload), for `LISTEN`. Notifications are sent after the
    /// commit, from a task of the store, and coalesced: one may stand for several commits,
    /// and writers never wait for them.
    pub fn notify_channel(&self) -> &str {
        &self.inner.channel
    }

    /// Wakes live readers after a commit that may have appended: pokes the store's
    /// notifying task, which sends one `NOTIFY` for however many pokes arrive while it is
    /// sending the previous one. `NOTIFY` takes a cluster-wide lock at commit; sent from the
    /// appending transaction it would serialize every writer's commit.
    pub(super) fn wake_readers(&self) {
        let poke = self.inner.wake_readers.get_or_init(|| {
            let (poke, mut poked) = tokio::sync::mpsc::channel::<()>(1);
            let pool = self.inner.pool.clone();
            let channel = self.inner.channel.clone();
            tokio::spawn(async move {
                // Ends when the store (the sender) is dropped.
                while poked.recv().await.is_some() {
                    // Its own short transaction, not waiting for its WAL flush. A failure
                    // (the database unreachable) costs readers only the wait until their
                    // next poll.
                    let _ = sqlx::query(
                        "SELECT set_config('synchronous_commit', 'off', true), \
                         pg_notify($1, '')",
                    )
                    .bind(&channel)
                    .execute(&pool)
                    .await;
                }
            });
            poke
        });
        // Full: a notification is already due, which covers this commit too.
        let _ = poke.try_send(());
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
