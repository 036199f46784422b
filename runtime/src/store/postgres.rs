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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Executor, Postgres, Row};
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

use super::migrate::{self, AppliedMigration, Migration, MigrationTarget};
use super::Sql;
use super::{
    load_through_read_stream, now_micros, stored_event_version, stored_u64, validate_stream,
    AppendOutcome, CommitMeta, EventFilter, EventMeta, EventStore, ExpectedVersion, Headers,
    NewEvent, RecordedEvent, Snapshot, SnapshotStore, StreamEvent, StreamRange,
};
use crate::error::StoreError;
use crate::projection::CheckpointStore;

/// The embedded schema history, applied in order.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "checkpoints",
        sql: include_str!("../../migrations/postgres/0002_checkpoints.sql"),
    },
];

/// How long a lease's connection may take to answer a ping before the lease counts as lost.
const LEASE_PING_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The longest schema name accepted: PostgreSQL names hold 63 bytes, and the notification
/// channel `<schema>_events` must fit too.
const MAX_SCHEMA_LEN: usize = 56;

/// How many times an append whose transaction lost a serialization race (possible when the
/// database's default isolation is above read committed) is run again.
const SERIALIZATION_RETRIES: u32 = 3;

/// A PostgreSQL [`EventStore`], [`SnapshotStore`] and [`CheckpointStore`], in one schema
/// of one database. Clones share the connection pool and the notification listener.
///
/// ```no_run
/// # async fn demo() -> Result<(), annals::StoreError> {
/// let store = annals::PgStore::connect("postgres://app@localhost/bank").await?;
/// let tenant = annals::PgStore::options()
///     .schema("tenant_a")
///     .max_connections(20)
///     .connect("postgres://app@localhost/bank")
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
    migrate: bool,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        PgStoreOptions {
            schema: PgStore::DEFAULT_SCHEMA.to_owned(),
            max_connections: 10,
            migrate: true,
        }
    }
}

impl PgStoreOptions {
    /// The defaults: schema `annals`, 10 connections, migrate on connect.
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

    /// The pool's size when [`Self::connect`] creates it (at least 1).
    #[must_use]
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
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
    pub async fn connect(self, url: &str) -> Result<PgStore, StoreError> {
        validate_schema(&self.schema)?;
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .connect(url)
            .await
            .map_err(|e| StoreError::database("connect", e))?;
        self.with_pool(pool).await
    }

    /// Opens the store on an existing pool (`max_connections` does not apply).
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

    /// Connects to `url` and opens the store in schema `annals`, creating and migrating it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        PgStoreOptions::new().connect(url).await
    }

    /// Connects to `url` and opens the store in `schema`, creating and migrating it.
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        PgStoreOptions::new().schema(schema).connect(url).await
    }

    /// Opens the store in `schema` on an existing pool, creating and migrating it.
    pub async fn from_pool(pool: PgPool, schema: &str) -> Result<Self, StoreError> {
        PgStoreOptions::new().schema(schema).with_pool(pool).await
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
        const OP: &str = "migrate";
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

    /// Appends inside a transaction the caller owns: the events commit (and become
    /// readable) with the caller's other writes, or not at all.
    ///
    /// Same contract as [`EventStore::append`]. The append runs in a savepoint, so an
    /// error leaves the caller's transaction usable. The store's append lock is held until
    /// the transaction ends, and other appends to the schema wait for it: keep the
    /// transaction short.
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream_type: &str,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        const OP: &str = "append";
        validate_stream(stream_type, stream_id)?;
        let batch = Batch::new(events, meta)?;
        if batch.is_empty() {
            return self
                .append_nothing(conn, stream_type, stream_id, expected, meta)
                .await;
        }
        let mut savepoint = conn
            .begin()
            .await
            .map_err(|e| StoreError::database(OP, e))?;
        match self
            .run_append(&mut *savepoint, stream_type, stream_id, expected, &batch)
            .await
        {
            Ok(row) => {
                savepoint
                    .commit()
                    .await
                    .map_err(|e| StoreError::database(OP, e))?;
                match row {
                    Some(row) => appended(&row),
                    None => {
                        self.mismatch(conn, stream_type, stream_id, expected, meta.command_id)
                            .await
                    }
                }
            }
            Err(e) => {
                savepoint
                    .rollback()
                    .await
                    .map_err(|e| StoreError::database(OP, e))?;
                self.append_failed(conn, e, stream_type, stream_id, expected, &batch)
                    .await
            }
        }
    }

    /// Runs the append statement; `None` when the stream's version did not match (or the
    /// command id was recorded meanwhile).
    async fn run_append<'c>(
        &self,
        conn: impl sqlx::PgExecutor<'c>,
        stream_type: &str,
        stream_id: &str,
        expected: ExpectedVersion,
        batch: &Batch<'_>,
    ) -> Result<Option<PgRow>, sqlx::Error> {
        let sql = &self.inner.sql;
        let (statement, exact) = match expected {
            ExpectedVersion::Any => (&sql.append_any, None),
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => (&sql.append_new, None),
            ExpectedVersion::Exists => (&sql.append_exists, None),
            ExpectedVersion::Exact(n) => match i64::try_from(n) {
                Ok(n) => (&sql.append_exact, Some(n)),
                // No stream reaches that version: a plain version mismatch.
                Err(_) => return Ok(None),
            },
        };
        let mut query = sqlx::query(statement)
            .bind(stream_type)
            .bind(stream_id)
            .bind(batch.count)
            .bind(&batch.types[..])
            .bind(&batch.versions[..])
            .bind(&batch.ids[..])
            .bind(&batch.payloads[..])
            .bind(batch.meta.command_id)
            .bind(batch.meta.correlation_id)
            .bind(batch.meta.causation_id)
            .bind(batch.recorded_at)
            .bind(batch.headers.as_str())
            .bind(self.inner.append_lock)
            .bind(self.inner.channel.as_str());
        if let Some(n) = exact {
            query = query.bind(n);
        }
        query.fetch_optional(conn).await
    }

    /// The append statement failed: a concurrent writer recorded the same command id, a
    /// writer bypassing `annals_streams` took the version, or a payload is not JSON.
    async fn append_failed(
        &self,
        conn: &mut PgConnection,
        error: sqlx::Error,
        stream_type: &str,
        stream_id: &str,
        expected: ExpectedVersion,
        batch: &Batch<'_>,
    ) -> Result<AppendOutcome, StoreError> {
        let Some(db) = error.as_database_error() else {
            return Err(StoreError::database("append", error));
        };
        match (db.code().as_deref(), db.constraint()) {
            (Some("23505"), Some("annals_commands_pkey" | "annals_events_stream_version_key")) => {
                self.mismatch(
                    conn,
                    stream_type,
                    stream_id,
                    expected,
                    batch.meta.command_id,
                )
                .await
            }
            (Some("23505"), Some("annals_events_event_id_key")) => {
                let event_id = self.taken_event_id(conn, batch).await?;
                Err(StoreError::DuplicateEventId {
                    stream_type: stream_type.to_owned(),
                    stream_id: stream_id.to_owned(),
                    event_id,
                })
            }
            (Some("22P02" | "22P05" | "22021" | "22025"), _) => {
                Err(match batch.invalid_payload() {
                    Some(invalid) => StoreError::database("append", invalid),
                    None => StoreError::database("append", error),
                })
            }
            _ => Err(StoreError::database("append", error)),
        }
    }

    /// The id that made an append fail on the unique event id: one repeated within the
    /// batch, or the first already stored.
    async fn taken_event_id(
        &self,
        conn: &mut PgConnection,
        batch: &Batch<'_>,
    ) -> Result<Uuid, StoreError> {
        let mut seen = std::collections::HashSet::with_capacity(batch.ids.len());
        if let Some(repeated) = batch.ids.iter().find(|id| !seen.insert(**id)) {
            return Ok(*repeated);
        }
        let stored: Option<Uuid> = sqlx::query_scalar(&self.inner.sql.taken_event_id)
            .bind(&batch.ids)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| StoreError::database("append", e))?;
        // Taken by a concurrent append that has since rolled back: name the batch's first.
        Ok(stored.unwrap_or(batch.ids[0]))
    }

    /// Nothing was appended: the command id was recorded by another append (return that
    /// outcome), or the stream is not at the expected version.
    async fn mismatch(
        &self,
        conn: &mut PgConnection,
        stream_type: &str,
        stream_id: &str,
        expected: ExpectedVersion,
        command_id: Option<Uuid>,
    ) -> Result<AppendOutcome, StoreError> {
        if let Some(id) = command_id {
            if let Some(first) = self.query_command_outcome(&mut *conn, id).await? {
                return Ok(first);
            }
        }
        let actual = self
            .query_stream_version(&mut *conn, stream_type, stream_id)
            .await?;
        Err(StoreError::WrongExpectedVersion {
            stream_type: stream_type.to_owned(),
            stream_id: stream_id.to_owned(),
            expected,
            actual,
        })
    }

    /// An append without events: checks the version and records the command id.
    async fn append_nothing(
        &self,
        conn: &mut PgConnection,
        stream_type: &str,
        stream_id: &str,
        expected: ExpectedVersion,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        if let Some(id) = meta.command_id {
            if let Some(first) = self.query_command_outcome(&mut *conn, id).await? {
                return Ok(first);
            }
        }
        let actual = self
            .query_stream_version(&mut *conn, stream_type, stream_id)
            .await?;
        if !expected.accepts(actual) {
            return Err(StoreError::WrongExpectedVersion {
                stream_type: stream_type.to_owned(),
                stream_id: stream_id.to_owned(),
                expected,
                actual,
            });
        }
        let current = actual.unwrap_or(0);
        if let Some(id) = meta.command_id {
            let recorded = sqlx::query(&self.inner.sql.record_command)
                .bind(id)
                .bind(stream_type)
                .bind(stream_id)
                .bind(to_i64(current, "stream version")?)
                .execute(&mut *conn)
                .await
                .map_err(|e| StoreError::database("append", e))?;
            if recorded.rows_affected() == 0 {
                // Recorded meanwhile by another append, which was first. (A conflicting row
                // is visible here: under snapshot isolation the insert fails instead.)
                return self
                    .query_command_outcome(&mut *conn, id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt {
                        position: 0,
                        reason: format!("command {id} is recorded but cannot be read"),
                    });
            }
        }
        Ok(AppendOutcome {
            first_version: current,
            last_version: current,
            last_position: 0,
            duplicate: false,
        })
    }

    async fn query_stream_version<'c>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
        stream_type: &str,
        stream_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(&self.inner.sql.stream_version)
            .bind(stream_type)
            .bind(stream_id)
            .fetch_optional(executor)
            .await
            .map_err(|e| StoreError::database("read stream version", e))?;
        version
            .map(|v| stored_u64(v, "stream version", 0))
            .transpose()
    }

    async fn query_command_outcome<'c>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
        command_id: Uuid,
    ) -> Result<Option<AppendOutcome>, StoreError> {
        let row = sqlx::query(&self.inner.sql.command_outcome)
            .bind(command_id)
            .fetch_optional(executor)
            .await
            .map_err(|e| StoreError::database("read command outcome", e))?;
        row.map(|row| {
            Ok(AppendOutcome {
                first_version: stored_u64(column(&row, 0, "first_version", 0)?, "version", 0)?,
                last_version: stored_u64(column(&row, 1, "last_version", 0)?, "version", 0)?,
                last_position: stored_u64(column(&row, 2, "last_position", 0)?, "position", 0)?,
                duplicate: true,
            })
        })
        .transpose()
    }

    async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<Postgres>, StoreError> {
        self.inner
            .pool
            .acquire()
            .await
            .map_err(|e| StoreError::database("acquire a connection", e))
    }
}

impl EventStore for PgStore {
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        validate_stream(stream_type, stream_id)?;
        let batch = Batch::new(events, meta)?;
        if batch.is_empty() {
            let mut conn = self.acquire().await?;
            return self
                .append_nothing(&mut conn, stream_type, stream_id, expected, meta)
                .await;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .run_append(&self.inner.pool, stream_type, stream_id, expected, &batch)
                .await
            {
                Ok(Some(row)) => return appended(&row),
                Ok(None) => {
                    let mut conn = self.acquire().await?;
                    return self
                        .mismatch(&mut conn, stream_type, stream_id, expected, meta.command_id)
                        .await;
                }
                // One statement in its own transaction: safe to run again.
                Err(e) if is_serialization_failure(&e) && attempt <= SERIALIZATION_RETRIES => {}
                Err(e) => {
                    let mut conn = self.acquire().await?;
                    return self
                        .append_failed(&mut conn, e, stream_type, stream_id, expected, &batch)
                        .await;
                }
            }
        }
    }

    async fn read_stream(
        &self,
        stream_type: &str,
        stream_id: &str,
        range: StreamRange,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        validate_stream(stream_type, stream_id)?;
        let Some((from, to)) = range.sql_bounds() else {
            return Ok(Vec::new());
        };
        let sql = &self.inner.sql;
        let query = match range.until {
            None => sqlx::query(&sql.read_stream),
            Some(until) => sqlx::query(&sql.read_stream_until).bind(until),
        };
        let rows = query
            .bind(stream_type)
            .bind(stream_id)
            .bind(from)
            .bind(to)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database("read stream", e))?;
        rows.iter().map(decode_event).collect()
    }

    async fn load_stream(
        &self,
        stream_type: &str,
        stream_id: &str,
        range: StreamRange,
    ) -> Result<Vec<StreamEvent>, StoreError> {
        if range.until.is_some() {
            return load_through_read_stream(self, stream_type, stream_id, range).await;
        }
        validate_stream(stream_type, stream_id)?;
        let Some((from, to)) = range.sql_bounds() else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(&self.inner.sql.load_stream)
            .bind(stream_type)
            .bind(stream_id)
            .bind(from)
            .bind(to)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database("stream read", e))?;
        rows.iter()
            .map(|row| {
                let position = stored_u64(column(row, 0, "position", 0)?, "position", 0)?;
                let version: i64 = column(row, 1, "version", position)?;
                let event_version: i32 = column(row, 3, "event_version", position)?;
                Ok(StreamEvent {
                    position,
                    version: stored_u64(version, "version", position)?,
                    event_type: column(row, 2, "event_type", position)?,
                    event_version: stored_event_version(event_version, position)?,
                    payload: column(row, 4, "payload", position)?,
                })
            })
            .collect()
    }

    async fn read_all(
        &self,
        after: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = &self.inner.sql;
        let query = match &filter.event_types {
            None => sqlx::query(&sql.read_all),
            Some(types) => sqlx::query(&sql.read_all_types).bind(&types[..]),
        };
        let rows = query
            .bind(after)
            .bind(limit)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database("read all", e))?;
        rows.iter().map(decode_event).collect()
    }

    async fn stream_version(
        &self,
        stream_type: &str,
        stream_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        validate_stream(stream_type, stream_id)?;
        self.query_stream_version(&self.inner.pool, stream_type, stream_id)
            .await
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar(&self.inner.sql.head)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database("read head", e))?;
        stored_u64(head, "position", 0)
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<AppendOutcome>, StoreError> {
        self.query_command_outcome(&self.inner.pool, command_id)
            .await
    }
}

impl SnapshotStore for PgStore {
    async fn save_snapshot(
        &self,
        stream_type: &str,
        stream_id: &str,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        validate_stream(stream_type, stream_id)?;
        sqlx::query(&self.inner.sql.save_snapshot)
            .bind(stream_type)
            .bind(stream_id)
            .bind(to_i64(snapshot.version, "snapshot stream version")?)
            .bind(to_i32(snapshot.snapshot_version, "snapshot version")?)
            .bind(snapshot.state)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database("save snapshot", e))?;
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream_type: &str,
        stream_id: &str,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, StoreError> {
        validate_stream(stream_type, stream_id)?;
        let max = max_version.map_or(i64::MAX, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let row = sqlx::query(&self.inner.sql.load_snapshot)
            .bind(stream_type)
            .bind(stream_id)
            .bind(max)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database("load snapshot", e))?;
        row.map(|row| {
            let version: i64 = column(&row, 0, "version", 0)?;
            let snapshot_version: i32 = column(&row, 1, "snapshot_version", 0)?;
            Ok(Snapshot {
                version: stored_u64(version, "snapshot stream version", 0)?,
                snapshot_version: u32::try_from(snapshot_version).map_err(|_| {
                    StoreError::Corrupt {
                        position: 0,
                        reason: format!(
                            "snapshot of {stream_type}/{stream_id} at version {version} has \
                             snapshot version {snapshot_version}"
                        ),
                    }
                })?,
                state: column(&row, 2, "state", 0)?,
            })
        })
        .transpose()
    }
}

impl CheckpointStore for PgStore {
    type Tx = PgTx;
    type Lease = PgLease;

    async fn begin(&self) -> Result<PgTx, StoreError> {
        self.inner
            .pool
            .begin()
            .await
            .map_err(|e| StoreError::database("begin", e))
    }

    async fn commit(&self, tx: PgTx) -> Result<(), StoreError> {
        tx.commit()
            .await
            .map_err(|e| StoreError::database("commit", e))
    }

    async fn append_in<'a>(
        &'a self,
        tx: &'a mut PgTx,
        stream_type: &'a str,
        stream_id: &'a str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &'a CommitMeta,
    ) -> Result<(AppendOutcome, Vec<RecordedEvent>), StoreError> {
        // The inherent `append_in`: the same statement as every other append.
        let outcome =
            PgStore::append_in(self, tx, stream_type, stream_id, expected, events, meta).await?;
        if outcome.duplicate || outcome.last_position == 0 {
            return Ok((outcome, Vec::new()));
        }
        // Read back inside the transaction: the events exactly as stored (positions, time).
        let rows = sqlx::query(&self.inner.sql.read_stream)
            .bind(stream_type)
            .bind(stream_id)
            .bind(to_i64(outcome.first_version, "stream version")?)
            .bind(to_i64(outcome.last_version, "stream version")?)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| StoreError::database("read back appended events", e))?;
        let recorded = rows
            .iter()
            .map(decode_event)
            .collect::<Result<Vec<_>, _>>()?;
        let expected_count = outcome.last_version - outcome.first_version + 1;
        if recorded.len() as u64 != expected_count {
            return Err(StoreError::Corrupt {
                position: outcome.last_position,
                reason: format!(
                    "appended versions {}..={} of {stream_type}/{stream_id} but read back {} \
                     events",
                    outcome.first_version,
                    outcome.last_version,
                    recorded.len()
                ),
            });
        }
        Ok((outcome, recorded))
    }

    async fn checkpoint(&self, name: &str) -> Result<u64, StoreError> {
        let position: Option<i64> = sqlx::query_scalar(&self.inner.sql.checkpoint)
            .bind(name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database("read checkpoint", e))?;
        position.map_or(Ok(0), |p| stored_u64(p, "checkpoint", 0))
    }

    async fn advance_checkpoint<'a>(
        &'a self,
        tx: &'a mut PgTx,
        name: &'a str,
        expected: u64,
        position: u64,
    ) -> Result<bool, StoreError> {
        sqlx::query_scalar(&self.inner.sql.advance_checkpoint)
            .bind(name)
            .bind(to_i64(expected, "checkpoint")?)
            .bind(to_i64(position, "checkpoint")?)
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| StoreError::database("advance checkpoint", e))
    }

    async fn wait_for_events(&self, after: u64, timeout: Duration) -> Result<(), StoreError> {
        let mut wake_ups = self.wake_ups().await?;
        // Mark what was seen before looking at the head: an append committed after the look
        // notifies the listener, which is already listening, and changes the value.
        wake_ups.borrow_and_update();
        if self.head().await? > after {
            return Ok(());
        }
        // A closed channel (the listener stopped) returns at once: the caller reads again and
        // its next wait starts a new listener.
        let _ = tokio::time::timeout(timeout, wake_ups.changed()).await;
        Ok(())
    }

    async fn try_lease(&self, name: &str) -> Result<Option<PgLease>, StoreError> {
        const OP: &str = "take projection lease";
        let key = lock_key("projection", &format!("{}/{name}", self.inner.schema));
        let spare = self
            .inner
            .spare_lease_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let kept = match spare {
            // `Err`: the kept connection went away meanwhile; try on a new one.
            Some(mut connection) => try_advisory_lock(&mut connection, key)
                .await
                .ok()
                .map(|held| (connection, held)),
            None => None,
        };
        let (connection, held) = match kept {
            Some(kept) => kept,
            None => {
                let mut connection = self.lease_connection().await?;
                let held = try_advisory_lock(&mut connection, key)
                    .await
                    .map_err(|e| StoreError::database(OP, e))?;
                (connection, held)
            }
        };
        if !held {
            *self
                .inner
                .spare_lease_connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(connection);
            return Ok(None);
        }
        Ok(Some(PgLease {
            connection,
            projection: name.to_owned(),
        }))
    }

    async fn lease_alive<'a>(&'a self, lease: &'a mut PgLease) -> Result<bool, StoreError> {
        // A session lock lives as long as its session: a live connection still holds it.
        let ping = tokio::time::timeout(LEASE_PING_TIMEOUT, lease.connection.ping()).await;
        Ok(matches!(ping, Ok(Ok(()))))
    }
}

/// The lease of a projection on a [`PgStore`]: a session advisory lock held on a
/// connection of its own (keyed by schema and projection name). Dropping the lease closes
/// the connection, which releases the lock; so does the death of the holding process.
pub struct PgLease {
    connection: PgConnection,
    projection: String,
}

impl PgLease {
    /// The projection this lease is for.
    pub fn projection(&self) -> &str {
        &self.projection
    }
}

impl fmt::Debug for PgLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLease")
            .field("projection", &self.projection)
            .finish_non_exhaustive()
    }
}

async fn try_advisory_lock(connection: &mut PgConnection, key: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(connection)
        .await
}

impl PgStore {
    /// A connection outside the pool, for a lease: it must not go back to the pool while
    /// holding the lock, and closing it must release the lock.
    async fn lease_connection(&self) -> Result<PgConnection, StoreError> {
        let options = (*self.inner.pool.connect_options())
            .clone()
            .application_name("annals projection lease");
        PgConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::database("take projection lease", e))
    }

    /// The wake-ups of this store's notification listener, starting it if none runs.
    async fn wake_ups(&self) -> Result<watch::Receiver<u64>, StoreError> {
        let mut slot = self.inner.wake_ups.lock().await;
        if let Some(wake_ups) = slot.as_ref() {
            if wake_ups.has_changed().is_ok() {
                return Ok(wake_ups.clone());
            }
        }
        // A pool of its own, so the listener never takes one of the store's connections.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with((*self.inner.pool.connect_options()).clone());
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(|e| StoreError::database("listen for appends", e))?;
        listener
            .listen(&self.inner.channel)
            .await
            .map_err(|e| StoreError::database("listen for appends", e))?;
        let (sender, receiver) = watch::channel(0);
        tokio::spawn(follow_notifications(listener, sender));
        *slot = Some(receiver.clone());
        Ok(receiver)
    }
}

/// Counts notifications (and reconnections, after which some may have been missed) until
/// the store is dropped or the listener fails.
async fn follow_notifications(mut listener: PgListener, wake_ups: watch::Sender<u64>) {
    loop {
        tokio::select! {
            () = wake_ups.closed() => return,
            received = listener.try_recv() => match received {
                // `None`: the connection was lost and re-established; appends committed
                // meanwhile notified no one.
                Ok(_) => wake_ups.send_modify(|n| *n = n.wrapping_add(1)),
                // Dropping the sender wakes the waiters; the next wait starts a new listener.
                Err(_) => return,
            },
        }
    }
}

/// The outcome the append statement returned.
fn appended(row: &PgRow) -> Result<AppendOutcome, StoreError> {
    Ok(AppendOutcome {
        duplicate: column(row, 0, "duplicate", 0)?,
        first_version: stored_u64(column(row, 1, "first_version", 0)?, "version", 0)?,
        last_version: stored_u64(column(row, 2, "last_version", 0)?, "version", 0)?,
        last_position: stored_u64(column(row, 3, "last_position", 0)?, "position", 0)?,
    })
}

/// The events of one append, as the array parameters of the append statement.
struct Batch<'m> {
    count: i64,
    types: Vec<String>,
    versions: Vec<i32>,
    ids: Vec<Uuid>,
    payloads: Vec<String>,
    headers: String,
    recorded_at: OffsetDateTime,
    meta: &'m CommitMeta,
}

impl<'m> Batch<'m> {
    fn new(events: Vec<NewEvent>, meta: &'m CommitMeta) -> Result<Self, StoreError> {
        let count = i64::try_from(events.len()).map_err(|_| StoreError::OutOfRange {
            what: "event count",
            value: u64::MAX,
        })?;
        let mut batch = Batch {
            count,
            types: Vec::with_capacity(events.len()),
            versions: Vec::with_capacity(events.len()),
            ids: Vec::with_capacity(events.len()),
            payloads: Vec::with_capacity(events.len()),
            headers: serde_json::to_string(&meta.headers)
                .map_err(|e| StoreError::database("header encoding", e))?,
            recorded_at: now_micros(),
            meta,
        };
        for event in events {
            if event.event_type.contains('\0') {
                // PostgreSQL text cannot hold NUL; refuse it rather than fail in the server.
                return Err(StoreError::InvalidStream {
                    what: "event type",
                    value: event.event_type.escape_debug().take(64).collect(),
                    reason: "contains a NUL character",
                });
            }
            batch
                .versions
                .push(to_i32(event.event_version, "event version")?);
            batch.types.push(event.event_type);
            batch.ids.push(event.event_id);
            batch.payloads.push(event.payload);
        }
        Ok(batch)
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The first payload that is not JSON, to name it when the server refuses the batch.
    fn invalid_payload(&self) -> Option<InvalidPayload> {
        self.types.iter().zip(&self.payloads).enumerate().find_map(
            |(index, (event_type, payload))| {
                serde_json::from_str::<serde::de::IgnoredAny>(payload)
                    .err()
                    .map(|reason| InvalidPayload {
                        index,
                        event_type: event_type.clone(),
                        reason,
                    })
            },
        )
    }
}

/// A payload the store refused because it is not JSON.
#[derive(Debug)]
struct InvalidPayload {
    index: usize,
    event_type: String,
    reason: serde_json::Error,
}

impl fmt::Display for InvalidPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the payload of event {} (`{}`) is not valid JSON: {}",
            self.index,
            self.event_type.escape_debug(),
            self.reason
        )
    }
}

impl std::error::Error for InvalidPayload {}

/// The store's SQL, with the schema name quoted in once.
struct Statements {
    append_any: Sql,
    append_new: Sql,
    append_exists: Sql,
    append_exact: Sql,
    record_command: Sql,
    stream_version: Sql,
    command_outcome: Sql,
    read_stream: Sql,
    load_stream: Sql,
    taken_event_id: Sql,
    read_stream_until: Sql,
    read_all: Sql,
    read_all_types: Sql,
    head: Sql,
    save_snapshot: Sql,
    load_snapshot: Sql,
    checkpoint: Sql,
    advance_checkpoint: Sql,
}

const EVENT_COLUMNS: &str = "position, stream_type, stream_id, version, event_type, \
    event_version, event_id, command_id, correlation_id, causation_id, recorded_at, \
    headers::text, payload::text";

/// Names of [`EVENT_COLUMNS`], for errors.
const EVENT_COLUMN_NAMES: [&str; 13] = [
    "position",
    "stream_type",
    "stream_id",
    "version",
    "event_type",
    "event_version",
    "event_id",
    "command_id",
    "correlation_id",
    "causation_id",
    "recorded_at",
    "headers",
    "payload",
];

impl Statements {
    fn new(schema: &str) -> Self {
        let schema = quote_ident(schema);
        let events = format!("{schema}.annals_events");
        let streams = format!("{schema}.annals_streams");
        let commands = format!("{schema}.annals_commands");
        let snapshots = format!("{schema}.annals_snapshots");
        let checkpoints = format!("{schema}.annals_checkpoints");
        let insert_stream = format!(
            "INSERT INTO {streams} AS s (stream_type, stream_id, version) \
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT FROM prior) \
             ON CONFLICT (stream_type, stream_id)"
        );
        let update_stream = format!(
            "UPDATE {streams} AS s SET version = s.version + $3 \
             WHERE s.stream_type = $1 AND s.stream_id = $2 AND NOT EXISTS (SELECT FROM prior)"
        );
        let append = |stream: String| append_sql(&events, &commands, &stream);
        Statements {
            append_any: append(format!(
                "{insert_stream} DO UPDATE SET version = s.version + $3 RETURNING s.version"
            )).into(),
            append_new: append(format!("{insert_stream} DO NOTHING RETURNING s.version")).into(),
            append_exists: append(format!("{update_stream} RETURNING s.version")).into(),
            append_exact: append(format!(
                "{update_stream} AND s.version = $15 RETURNING s.version"
            )).into(),
            record_command: format!(
                "INSERT INTO {commands} \
                 (command_id, stream_type, stream_id, first_version, last_version, last_position) \
                 VALUES ($1, $2, $3, $4, $4, 0) ON CONFLICT (command_id) DO NOTHING"
            ).into(),
            stream_version: format!(
                "SELECT version FROM {streams} WHERE stream_type = $1 AND stream_id = $2"
            ).into(),
            command_outcome: format!(
                "SELECT first_version, last_version, last_position FROM {commands} \
                 WHERE command_id = $1"
            ).into(),
            read_stream: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} \
                 WHERE stream_type = $1 AND stream_id = $2 AND version BETWEEN $3 AND $4 \
                 ORDER BY version"
            ).into(),
            taken_event_id: format!(
                "SELECT event_id FROM {events} WHERE event_id = ANY($1) ORDER BY position LIMIT 1"
            ).into(),
            load_stream: format!(
                "SELECT position, version, event_type, event_version, payload::text FROM {events} \
                 WHERE stream_type = $1 AND stream_id = $2 AND version BETWEEN $3 AND $4 \
                 ORDER BY version"
            ).into(),
            // Like the other stores.into(), stop at the first event recorded after `until` (clocks
            // of several writers need not agree): the result is always a prefix.
            read_stream_until: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} \
                 WHERE stream_type = $2 AND stream_id = $3 AND version BETWEEN $4 AND $5 \
                 AND version < coalesce((SELECT min(version) FROM {events} \
                     WHERE stream_type = $2 AND stream_id = $3 AND version >= $4 \
                     AND recorded_at > $1), 9223372036854775807) \
                 ORDER BY version"
            ).into(),
            read_all: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} WHERE position > $1 \
                 ORDER BY position LIMIT $2"
            ).into(),
            read_all_types: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} \
                 WHERE event_type = ANY($1) AND position > $2 ORDER BY position LIMIT $3"
            ).into(),
            head: format!("SELECT coalesce(max(position), 0) FROM {events}").into(),
            save_snapshot: format!(
                "INSERT INTO {snapshots} \
                 (stream_type, stream_id, version, snapshot_version, state) \
                 VALUES ($1, $2, $3, $4, $5::json) \
                 ON CONFLICT (stream_type, stream_id, version) DO UPDATE \
                 SET snapshot_version = excluded.snapshot_version, state = excluded.state, \
                     recorded_at = now()"
            ).into(),
            load_snapshot: format!(
                "SELECT version, snapshot_version, state::text FROM {snapshots} \
                 WHERE stream_type = $1 AND stream_id = $2 AND version <= $3 \
                 ORDER BY version DESC LIMIT 1"
            ).into(),
            checkpoint: format!("SELECT position FROM {checkpoints} WHERE name = $1").into(),
            // Compare-and-set.into(), a missing row reading as 0. A concurrent mover holds the row
            // (or the key, for a first insert) until it commits; this statement then sees the
            // committed position and does nothing.
            advance_checkpoint: format!(
                "WITH moved AS ( \
                     UPDATE {checkpoints} SET position = $3, updated_at = now() \
                     WHERE name = $1 AND position = $2 RETURNING 1 \
                 ), \
                 created AS ( \
                     INSERT INTO {checkpoints} (name, position) \
                     SELECT $1, $3 WHERE $2 = 0 AND NOT EXISTS (SELECT FROM moved) \
                     ON CONFLICT (name) DO NOTHING RETURNING 1 \
                 ) \
                 SELECT EXISTS (SELECT FROM moved) OR EXISTS (SELECT FROM created)"
            ).into(),
        }
    }
}

/// One statement per append (one round trip): look up the command id, move the stream's
/// version (the variant `stream` decides how, per expected version; no row = mismatch),
/// take the append lock, insert the events, record the command, notify.
///
/// Parameters: $1 stream type, $2 stream id, $3 event count, $4..$7 arrays of event type,
/// event version, event id and payload, $8 command id, $9 correlation id, $10 causation id,
/// $11 recorded at, $12 headers, $13 append lock key, $14 channel, $15 expected version.
///
/// The CTEs run in data-dependency order: `claim` reads `stream`'s row, so the stream row
/// is locked before the append lock is taken, and the events are inserted from `claim`'s
/// row, so their positions are drawn after it.
fn append_sql(events: &str, commands: &str, stream: &str) -> String {
    format!(
        "WITH prior AS ( \
             SELECT first_version, last_version, last_position FROM {commands} \
             WHERE command_id = $8 \
         ), \
         stream AS ({stream}), \
         claim AS ( \
             SELECT s.version FROM stream s CROSS JOIN LATERAL pg_advisory_xact_lock($13) \
         ), \
         appended AS ( \
             INSERT INTO {events} (stream_type, stream_id, version, event_type, event_version, \
                 event_id, command_id, correlation_id, causation_id, recorded_at, headers, \
                 payload) \
             SELECT $1, $2, c.version - $3 + u.ord, u.event_type, u.event_version, u.event_id, \
                 $8, $9, $10, $11, $12::json, u.payload::json \
             FROM claim c, \
                 unnest($4::text[], $5::int4[], $6::uuid[], $7::text[]) WITH ORDINALITY \
                     AS u(event_type, event_version, event_id, payload, ord) \
             ORDER BY u.ord \
             RETURNING position \
         ), \
         last AS (SELECT max(position) AS position FROM appended), \
         command AS ( \
             INSERT INTO {commands} (command_id, stream_type, stream_id, first_version, \
                 last_version, last_position) \
             SELECT $8, $1, $2, c.version - $3 + 1, c.version, l.position \
             FROM claim c, last l WHERE $8::uuid IS NOT NULL \
         ) \
         SELECT false AS duplicate, c.version - $3 + 1, c.version, l.position, \
             (SELECT count(*) FROM pg_notify($14, l.position::text)) AS notified \
         FROM claim c, last l \
         UNION ALL \
         SELECT true, first_version, last_version, last_position, 0 FROM prior"
    )
}

/// Runs on a transaction that holds the migration lock and has the store's schema first on
/// its search path.
impl MigrationTarget for PgConnection {
    async fn applied(&mut self) -> Result<Vec<AppliedMigration>, StoreError> {
        const OP: &str = "migrate";
        self.execute(
            "CREATE TABLE IF NOT EXISTS annals_migrations ( \
                 version    integer     NOT NULL PRIMARY KEY, \
                 name       text        NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now() \
             )",
        )
        .await
        .map_err(|e| StoreError::database(OP, e))?;
        let rows = sqlx::query("SELECT version, name FROM annals_migrations ORDER BY version")
            .fetch_all(&mut *self)
            .await
            .map_err(|e| StoreError::database(OP, e))?;
        rows.iter()
            .map(|row| {
                let version: i32 = column(row, 0, "annals_migrations.version", 0)?;
                Ok(AppliedMigration {
                    version: u32::try_from(version).map_err(|_| StoreError::Corrupt {
                        position: 0,
                        reason: format!("annals_migrations records version {version}"),
                    })?,
                    name: column(row, 1, "annals_migrations.name", 0)?,
                })
            })
            .collect()
    }

    async fn apply(&mut self, migration: &Migration) -> Result<(), StoreError> {
        let failed = |e: sqlx::Error| StoreError::Migration {
            version: migration.version,
            source: Box::new(e),
        };
        // A query without parameters runs as a simple query: several statements are fine.
        self.execute(migration.sql).await.map_err(failed)?;
        sqlx::query("INSERT INTO annals_migrations (version, name) VALUES ($1, $2)")
            .bind(to_i32(migration.version, "migration version")?)
            .bind(migration.name)
            .execute(&mut *self)
            .await
            .map_err(failed)?;
        Ok(())
    }
}

fn decode_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let position = stored_u64(column(row, 0, EVENT_COLUMN_NAMES[0], 0)?, "position", 0)?;
    let version: i64 = column_at(row, 3, position)?;
    let event_version: i32 = column_at(row, 5, position)?;
    let headers: String = column_at(row, 11, position)?;
    Ok(RecordedEvent {
        meta: EventMeta {
            position,
            stream_type: column_at(row, 1, position)?,
            stream_id: column_at(row, 2, position)?,
            version: stored_u64(version, "version", position)?,
            event_type: column_at(row, 4, position)?,
            event_version: stored_event_version(event_version, position)?,
            event_id: column_at(row, 6, position)?,
            command_id: column_at(row, 7, position)?,
            correlation_id: column_at(row, 8, position)?,
            causation_id: column_at(row, 9, position)?,
            recorded_at: column_at(row, 10, position)?,
            headers: serde_json::from_str::<Headers>(&headers).map_err(|e| {
                StoreError::Corrupt {
                    position,
                    reason: format!("headers are not a map of strings: {e}"),
                }
            })?,
        },
        payload: column_at(row, 12, position)?,
    })
}

fn column_at<'r, T>(row: &'r PgRow, index: usize, position: u64) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    column(row, index, EVENT_COLUMN_NAMES[index], position)
}

fn column<'r, T>(row: &'r PgRow, index: usize, name: &str, position: u64) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(index).map_err(|e| StoreError::Corrupt {
        position,
        reason: format!("column {name}: {e}"),
    })
}

fn to_i64(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

fn to_i32(value: u32, what: &'static str) -> Result<i32, StoreError> {
    i32::try_from(value).map_err(|_| StoreError::OutOfRange {
        what,
        value: u64::from(value),
    })
}

fn is_serialization_failure(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40001" || code == "40P01")
}

/// Refuses schema names that are not plain lowercase identifiers, so the name can be
/// quoted into SQL and used in a notification channel as is.
fn validate_schema(schema: &str) -> Result<(), StoreError> {
    let bytes = schema.as_bytes();
    let well_formed = matches!(bytes.first(), Some(b'a'..=b'z' | b'_'))
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && bytes.len() <= MAX_SCHEMA_LEN;
    let shown = || schema.chars().take(64).collect::<String>();
    if !well_formed {
        return Err(StoreError::Config(format!(
            "schema name `{}` is not a lowercase identifier of at most {MAX_SCHEMA_LEN} bytes \
             ([a-z_][a-z0-9_]*)",
            shown().escape_debug()
        )));
    }
    if schema.starts_with("pg_") || schema == "information_schema" {
        return Err(StoreError::Config(format!(
            "schema name `{schema}` is reserved by PostgreSQL"
        )));
    }
    Ok(())
}

/// Quotes an identifier already checked by [`validate_schema`].
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A stable advisory lock key for `purpose` in `schema` (FNV-1a), the same in every process.
fn lock_key(purpose: &str, schema: &str) -> i64 {
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
