//! The SQLite store: the embedded default. One database file (or memory), WAL journal, one
//! writer at a time, readers alongside.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::error::ErrorKind;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Decode, Executor, Row, Sqlite, Type};
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use super::migrate::{self, AppliedMigration, Migration, MigrationTarget};
use super::Sql;
use super::{
    load_through_read_stream, now_micros, stored_event_version, stored_u64, validate_stream,
    wait_for_append, AppendOutcome, CommitMeta, EventFilter, EventMeta, EventStore,
    ExpectedVersion, Headers, LocalLease, LocalLeases, NewEvent, RecordedEvent, Snapshot,
    SnapshotStore, StreamEvent, StreamRange,
};
use crate::error::{BoxError, StoreError};
use crate::projection::CheckpointStore;

/// The schema, in order. Append new files; never edit an applied one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "checkpoints",
        sql: include_str!("../../migrations/sqlite/0002_checkpoints.sql"),
    },
];

/// How long a writer waits for the write lock before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections of a file-backed pool: readers run in parallel under WAL, writers queue.
const MAX_CONNECTIONS: u32 = 8;

/// Above this many event types, a filtered global read scans positions instead of merging
/// one index range per type (a compound select is limited to 500 terms).
const MAX_MERGED_TYPES: usize = 16;

/// An [`EventStore`] and [`SnapshotStore`] in a SQLite database. Clones share the pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), annals::StoreError> {
/// let store = annals::SqliteStore::open("app.db").await?;
/// let version = annals::EventStore::stream_version(&store, "account", "42").await?;
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
    leases: LocalLeases,
}

/// The transaction [`SqliteStore`] projections write their read models in:
/// `sqlx::query(..).execute(&mut **tx)`.
pub type SqliteTx = sqlx::Transaction<'static, Sqlite>;

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and migrates its schema.
    ///
    /// The connections use the WAL journal, `synchronous = NORMAL` (durable across process
    /// crashes; a power loss may drop the last commits), a busy timeout and foreign keys.
    /// `":memory:"` opens a private in-memory database, like [`SqliteStore::in_memory`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if path == Path::new(":memory:") {
            return Self::in_memory().await;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let failed = |source: BoxError| {
            StoreError::database(
                "open",
                OpenFailed {
                    path: path.to_owned(),
                    source,
                },
            )
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|e| failed(e.into()))?;
        enable_wal(&pool).await.map_err(failed)?;
        Self::from_pool(pool).await
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
                    "open",
                    OpenFailed {
                        path: PathBuf::from(":memory:"),
                        source: source.into(),
                    },
                )
            })?;
        Self::from_pool(pool).await
    }

    /// A store over an existing pool (for read models kept in the same database), after
    /// migrating its schema. The store's tables are all named `annals_*`.
    ///
    /// The pool's options are kept as they are: set the WAL journal and a busy timeout
    /// (appends take the write lock with `BEGIN IMMEDIATE`, and wait for it only that long).
    /// Clones of the store queue their appends in-process; separate stores on one database
    /// are ordered by SQLite's lock alone.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        let store = SqliteStore {
            pool,
            write: Arc::default(),
            appended: Arc::default(),
            leases: LocalLeases::default(),
        };
        store.migrate().await?;
        Ok(store)
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
            .map_err(|e| StoreError::database("migration", e))?;
        migrate::migrate(&mut *tx, MIGRATIONS).await?;
        tx.commit()
            .await
            .map_err(|e| StoreError::database("migration", e))
    }
}

impl MigrationTarget for SqliteConnection {
    async fn applied(&mut self) -> Result<Vec<AppliedMigration>, StoreError> {
        self.execute(
            "CREATE TABLE IF NOT EXISTS annals_migrations (
                version    INTEGER PRIMARY KEY,
                name       TEXT    NOT NULL,
                applied_at INTEGER NOT NULL
            ) STRICT",
        )
        .await
        .map_err(|e| StoreError::database("migration", e))?;
        let rows = sqlx::query("SELECT version, name FROM annals_migrations ORDER BY version")
            .fetch_all(&mut *self)
            .await
            .map_err(|e| StoreError::database("migration", e))?;
        rows.iter()
            .map(|row| {
                let version: i64 = column(row, 0, 0)?;
                let version = u32::try_from(version).map_err(|_| StoreError::Corrupt {
                    position: 0,
                    reason: format!("annals_migrations records version {version}"),
                })?;
                Ok(AppliedMigration {
                    version,
                    name: column(row, 1, 0)?,
                })
            })
            .collect()
    }

    async fn apply(&mut self, migration: &Migration) -> Result<(), StoreError> {
        let failed = |e: sqlx::Error| StoreError::Migration {
            version: migration.version,
            source: Box::new(e),
        };
        // Several statements, run once: kept out of the connection's statement cache.
        sqlx::query(migration.sql)
            .persistent(false)
            .execute(&mut *self)
            .await
            .map_err(failed)?;
        sqlx::query(
            "INSERT INTO annals_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
        )
        .bind(i64::from(migration.version))
        .bind(migration.name)
        .bind(micros(now_micros()))
        .execute(&mut *self)
        .await
        .map_err(failed)?;
        Ok(())
    }
}

/// The columns [`decode_event`] reads, in its order.
macro_rules! event_columns {
    () => {
        "position, stream_type, stream_id, version, event_type, event_version, event_id, \
         command_id, correlation_id, causation_id, recorded_at, headers, payload"
    };
}

/// The names of [`event_columns!`], for error messages.
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

/// Looks up, in one statement, the stream's version and the outcome recorded for the
/// command id (`NULL` when the append carries none).
const APPEND_LOOKUP: &str = "\
    SELECT (SELECT version FROM annals_streams WHERE stream_type = ?1 AND stream_id = ?2), \
           c.first_version, c.last_version, c.last_position \
    FROM (SELECT 1) LEFT JOIN annals_commands c ON c.command_id = ?3";

// An append runs as few statements as it can: each is a round trip to the connection's
// worker thread. The statements of one string share the numbered parameters:
//   ?1 stream type, ?2 stream id, ?3 version, ?4 event type, ?5 event version, ?6 event id,
//   ?7 command id, ?8 correlation id, ?9 causation id, ?10 recorded at, ?11 headers,
//   ?12 payload, ?13 the append's first version, ?14 the version the stream must be at.

/// The columns an event insert fills.
macro_rules! insert_event_into {
    () => {
        "INSERT INTO annals_events (stream_type, stream_id, version, event_type, event_version, \
             event_id, command_id, correlation_id, causation_id, recorded_at, headers, payload) "
    };
}

/// Inserts an event.
macro_rules! insert_event {
    () => {
        concat!(
            insert_event_into!(),
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12);"
        )
    };
}

/// Inserts the first event of an append only if the stream is at version `?14` (0: no
/// stream) and the command id is new; otherwise inserts nothing.
macro_rules! insert_checked_event {
    () => {
        concat!(
            insert_event_into!(),
            "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 \
             WHERE COALESCE((SELECT version FROM annals_streams \
                              WHERE stream_type = ?1 AND stream_id = ?2), 0) = ?14 \
               AND NOT EXISTS (SELECT 1 FROM annals_commands WHERE command_id = ?7);"
        )
    };
}

/// After the last event's insert (if it inserted a row): the stream is at version `?3`.
macro_rules! then_stream_version {
    () => {
        "INSERT INTO annals_streams (stream_type, stream_id, version) \
         SELECT ?1, ?2, ?3 WHERE changes() = 1 \
         ON CONFLICT (stream_type, stream_id) DO UPDATE SET version = excluded.version;"
    };
}

/// After that (if it changed a row): the command's outcome. `annals_streams` is a
/// `WITHOUT ROWID` table, so `last_insert_rowid()` is still the event's position.
macro_rules! then_command_outcome {
    () => {
        "INSERT INTO annals_commands (command_id, stream_type, stream_id, first_version, \
             last_version, last_position) \
         SELECT ?7, ?1, ?2, ?13, ?3, last_insert_rowid() WHERE changes() = 1;"
    };
}

/// The statements for one event, by (is it the first, the last, is there a command id).
fn insert_statement(first: bool, last: bool, command: bool) -> &'static str {
    match (first, last, command) {
        (true, false, _) => insert_checked_event!(),
        (true, true, false) => concat!(insert_checked_event!(), then_stream_version!()),
        (true, true, true) => concat!(
            insert_checked_event!(),
            then_stream_version!(),
            then_command_outcome!()
        ),
        (false, false, _) => insert_event!(),
        (false, true, false) => concat!(insert_event!(), then_stream_version!()),
        (false, true, true) => concat!(
            insert_event!(),
            then_stream_version!(),
            then_command_outcome!()
        ),
    }
}

/// Records the outcome of an empty append.
const INSERT_EMPTY_COMMAND: &str = "\
    INSERT INTO annals_commands (command_id, stream_type, stream_id, first_version, \
        last_version, last_position) \
    VALUES (?1, ?2, ?3, ?4, ?4, 0)";

/// The columns of a [`StreamEvent`], for loading aggregates.
const LOAD_STREAM: &str = "SELECT position, version, event_type, event_version, payload \
     FROM annals_events WHERE stream_type = ? AND stream_id = ? AND version BETWEEN ? AND ? \
     ORDER BY version";

const READ_STREAM: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM annals_events \
      WHERE stream_type = ?1 AND stream_id = ?2 AND version BETWEEN ?3 AND ?4 \
      ORDER BY version"
);

/// Like [`READ_STREAM`], stopping before the first event recorded after `?5`, so a
/// temporal read is a prefix of the stream even if the clock went backwards. (The
/// uncorrelated subquery runs once.)
const READ_STREAM_UNTIL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM annals_events \
      WHERE stream_type = ?1 AND stream_id = ?2 \
        AND version BETWEEN ?3 AND COALESCE( \
            (SELECT MIN(version) - 1 FROM annals_events \
              WHERE stream_type = ?1 AND stream_id = ?2 AND version BETWEEN ?3 AND ?4 \
                AND recorded_at > ?5), \
            ?4) \
      ORDER BY version"
);

const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM annals_events WHERE position > ?1 ORDER BY position LIMIT ?2"
);

const READ_ALL_ONE_TYPE: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM annals_events WHERE event_type = ?3 AND position > ?1 ORDER BY position LIMIT ?2"
);

/// Many types: walk positions and test each event's type against the JSON array `?3` (the
/// unary `+` keeps the planner off the type index, which would sort every match).
const READ_ALL_MANY_TYPES: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM annals_events \
      WHERE position > ?1 AND +event_type IN (SELECT value FROM json_each(?3)) \
      ORDER BY position LIMIT ?2"
);

/// A few types: the first `limit` positions of each type from the type index, merged.
fn read_all_merged_sql(types: usize) -> String {
    let mut sql = String::from(concat!(
        "SELECT ",
        event_columns!(),
        " FROM annals_events WHERE position IN ("
    ));
    for i in 0..types {
        if i > 0 {
            sql.push_str(" UNION ALL ");
        }
        sql.push_str(&format!(
            "SELECT position FROM (SELECT position FROM annals_events \
             WHERE event_type = ?{} AND position > ?1 ORDER BY position LIMIT ?2)",
            i + 3
        ));
    }
    sql.push_str(") ORDER BY position LIMIT ?2");
    sql
}

impl EventStore for SqliteStore {
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        validate_stream(stream_type, stream_id)?;
        let queued = self.write.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| StoreError::database("append", e))?;
        let written = write(
            &mut tx,
            stream_type,
            stream_id,
            expected,
            events,
            meta,
            false,
        )
        .await;
        match written {
            Ok((outcome, _)) if outcome.duplicate => {
                rollback(tx).await?;
                Ok(outcome)
            }
            Ok((outcome, _)) => {
                tx.commit()
                    .await
                    .map_err(|e| StoreError::database("append", e))?;
                drop(queued);
                if outcome.last_position > 0 {
                    self.appended.notify_waiters();
                }
                Ok(outcome)
            }
            Err(error) => {
                rollback(tx).await?;
                Err(error)
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
        let query = match range.until {
            None => sqlx::query(READ_STREAM)
                .bind(stream_type)
                .bind(stream_id)
                .bind(from)
                .bind(to),
            Some(until) => sqlx::query(READ_STREAM_UNTIL)
                .bind(stream_type)
                .bind(stream_id)
                .bind(from)
                .bind(to)
                .bind(micros(until)),
        };
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::database("stream read", e))?;
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
        let rows = sqlx::query(LOAD_STREAM)
            .bind(stream_type)
            .bind(stream_id)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::database("stream read", e))?;
        rows.iter()
            .map(|row| {
                let position = stored_u64(column(row, 0, 0)?, "position", 0)?;
                let event_version: i64 = column(row, 3, position)?;
                Ok(StreamEvent {
                    position,
                    version: stored_u64(column(row, 1, position)?, "version", position)?,
                    event_type: column(row, 2, position)?,
                    event_version: stored_event_version(event_version, position)?,
                    payload: column(row, 4, position)?,
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
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match &filter.event_types {
            None => {
                sqlx::query(READ_ALL)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
            Some(types) => {
                let mut types: Vec<&str> = types.iter().map(String::as_str).collect();
                types.sort_unstable();
                types.dedup();
                match types.len() {
                    0 => return Ok(Vec::new()),
                    1 => {
                        sqlx::query(READ_ALL_ONE_TYPE)
                            .bind(after)
                            .bind(limit)
                            .bind(types[0])
                            .fetch_all(&self.pool)
                            .await
                    }
                    n if n <= MAX_MERGED_TYPES => {
                        let sql = Sql::from(read_all_merged_sql(n));
                        let mut query = sqlx::query(&sql).bind(after).bind(limit);
                        for t in &types {
                            query = query.bind(*t);
                        }
                        query.fetch_all(&self.pool).await
                    }
                    _ => {
                        let types = serde_json::to_string(&types)
                            .map_err(|e| StoreError::database("event filter encoding", e))?;
                        sqlx::query(READ_ALL_MANY_TYPES)
                            .bind(after)
                            .bind(limit)
                            .bind(types)
                            .fetch_all(&self.pool)
                            .await
                    }
                }
            }
        }
        .map_err(|e| StoreError::database("global read", e))?;
        rows.iter().map(decode_event).collect()
    }

    async fn stream_version(
        &self,
        stream_type: &str,
        stream_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        validate_stream(stream_type, stream_id)?;
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM annals_streams WHERE stream_type = ?1 AND stream_id = ?2",
        )
        .bind(stream_type)
        .bind(stream_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::database("stream version lookup", e))?;
        version
            .map(|v| stored_u64(v, "stream version", 0))
            .transpose()
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM annals_events")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::database("head lookup", e))?;
        stored_u64(head, "position", 0)
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<AppendOutcome>, StoreError> {
        let row = sqlx::query(
            "SELECT first_version, last_version, last_position \
             FROM annals_commands WHERE command_id = ?1",
        )
        .bind(command_id.hyphenated())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::database("command lookup", e))?;
        row.map(|row| {
            Ok(AppendOutcome {
                first_version: stored_u64(column(&row, 0, 0)?, "command first version", 0)?,
                last_version: stored_u64(column(&row, 1, 0)?, "command last version", 0)?,
                last_position: stored_u64(column(&row, 2, 0)?, "command last position", 0)?,
                duplicate: true,
            })
        })
        .transpose()
    }
}

impl CheckpointStore for SqliteStore {
    type Tx = SqliteTx;
    type Lease = LocalLease;

    /// Starts a write transaction (`BEGIN IMMEDIATE`): SQLite has one writer at a time,
    /// and taking the lock up front means a batch never fails half-way on an upgrade.
    async fn begin(&self) -> Result<SqliteTx, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| StoreError::database("begin", e))
    }

    async fn commit(&self, tx: SqliteTx) -> Result<(), StoreError> {
        tx.commit()
            .await
            .map_err(|e| StoreError::database("commit", e))?;
        self.appended.notify_waiters();
        Ok(())
    }

    async fn append_in<'a>(
        &'a self,
        tx: &'a mut SqliteTx,
        stream_type: &'a str,
        stream_id: &'a str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &'a CommitMeta,
    ) -> Result<(AppendOutcome, Vec<RecordedEvent>), StoreError> {
        validate_stream(stream_type, stream_id)?;
        write(tx, stream_type, stream_id, expected, events, meta, true).await
    }

    async fn checkpoint(&self, name: &str) -> Result<u64, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM annals_checkpoints WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| StoreError::database("checkpoint read", e))?;
        position.map_or(Ok(0), |p| stored_u64(p, "checkpoint", 0))
    }

    async fn advance_checkpoint<'a>(
        &'a self,
        tx: &'a mut SqliteTx,
        name: &'a str,
        expected: u64,
        position: u64,
    ) -> Result<bool, StoreError> {
        let expected = to_i64(expected, "checkpoint")?;
        let position = to_i64(position, "checkpoint")?;
        let now = micros(now_micros());
        // Compare-and-set: a missing row counts as position 0.
        let done = sqlx::query(
            "INSERT INTO annals_checkpoints (name, position, updated_at) \
             SELECT ?1, ?3, ?4 WHERE ?2 = 0 \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
             updated_at = excluded.updated_at WHERE annals_checkpoints.position = ?2",
        )
        .bind(name)
        .bind(expected)
        .bind(position)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|e| StoreError::database("checkpoint write", e))?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        if expected == 0 {
            return Ok(false);
        }
        let done = sqlx::query(
            "UPDATE annals_checkpoints SET position = ?3, updated_at = ?4 \
             WHERE name = ?1 AND position = ?2",
        )
        .bind(name)
        .bind(expected)
        .bind(position)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|e| StoreError::database("checkpoint write", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn wait_for_events(&self, after: u64, timeout: Duration) -> Result<(), StoreError> {
        // Writers in other processes do not notify: the timeout bounds how late they are seen.
        wait_for_append(&self.appended, after, timeout, self.head()).await
    }

    async fn try_lease(&self, name: &str) -> Result<Option<LocalLease>, StoreError> {
        Ok(self.leases.try_take(name))
    }
}

impl SnapshotStore for SqliteStore {
    async fn save_snapshot(
        &self,
        stream_type: &str,
        stream_id: &str,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        validate_stream(stream_type, stream_id)?;
        sqlx::query(
            "INSERT INTO annals_snapshots (stream_type, stream_id, version, snapshot_version, state) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (stream_type, stream_id, version) DO UPDATE \
             SET snapshot_version = excluded.snapshot_version, state = excluded.state",
        )
        .bind(stream_type)
        .bind(stream_id)
        .bind(to_i64(snapshot.version, "snapshot version")?)
        .bind(i64::from(snapshot.snapshot_version))
        .bind(snapshot.state)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::database("snapshot save", e))?;
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream_type: &str,
        stream_id: &str,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, StoreError> {
        validate_stream(stream_type, stream_id)?;
        let max = max_version.map_or(i64::MAX, |m| i64::try_from(m).unwrap_or(i64::MAX));
        let row = sqlx::query(
            "SELECT version, snapshot_version, state FROM annals_snapshots \
             WHERE stream_type = ?1 AND stream_id = ?2 AND version <= ?3 \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(stream_type)
        .bind(stream_id)
        .bind(max)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::database("snapshot load", e))?;
        row.map(|row| {
            let version: i64 = column(&row, 0, 0)?;
            let snapshot_version: i64 = column(&row, 1, 0)?;
            Ok(Snapshot {
                version: stored_u64(version, "snapshot version", 0)?,
                snapshot_version: u32::try_from(snapshot_version).map_err(|_| {
                    StoreError::Corrupt {
                        position: 0,
                        reason: format!(
                            "snapshot of {stream_type}/{stream_id} at version {version} has \
                             schema version {snapshot_version}"
                        ),
                    }
                })?,
                state: column(&row, 2, 0)?,
            })
        })
        .transpose()
    }
}

/// What an append's check found, under the write lock.
enum Checked {
    /// The command id was seen before: its first outcome.
    Duplicate(AppendOutcome),
    /// The stream's version does not satisfy the expectation.
    Conflict(Option<u64>),
    /// Go ahead: the stream is at this version (0: no stream).
    Accepted(u64),
}

impl Checked {
    /// The outcome of an append that will not write.
    fn refuse(
        self,
        stream_type: &str,
        stream_id: &str,
        expected: ExpectedVersion,
    ) -> Result<(AppendOutcome, Vec<RecordedEvent>), StoreError> {
        match self {
            Checked::Duplicate(first) => Ok((first, Vec::new())),
            Checked::Conflict(actual) => {
                Err(wrong_version(stream_type, stream_id, expected, actual))
            }
            // The insert's check and this one read the same rows under the same lock.
            Checked::Accepted(current) => Err(StoreError::Corrupt {
                position: 0,
                reason: format!(
                    "stream {stream_type}/{stream_id} at version {current} failed the \
                     version check for {expected}"
                ),
            }),
        }
    }
}

/// Appends inside an open write transaction, without ending it. A refused append (a
/// duplicate command id, a version conflict) writes nothing.
async fn write(
    tx: &mut SqliteConnection,
    stream_type: &str,
    stream_id: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    meta: &CommitMeta,
    keep: bool,
) -> Result<(AppendOutcome, Vec<RecordedEvent>), StoreError> {
    const OP: &str = "append";
    let headers = serde_json::to_string(&meta.headers)
        .map_err(|e| StoreError::database("header encoding", e))?;
    let command_id = meta.command_id.map(Uuid::hyphenated);
    // When the writer names the version (the repository always does), the first insert
    // checks it: no lookup round trip unless the check fails.
    let named = match expected {
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(n) => i64::try_from(n).is_ok().then_some(n),
        ExpectedVersion::Any | ExpectedVersion::Exists => None,
    };
    let current = match named.filter(|_| !events.is_empty()) {
        Some(current) => current,
        None => match check(tx, stream_type, stream_id, expected, command_id).await? {
            Checked::Accepted(current) => current,
            refused => return refused.refuse(stream_type, stream_id, expected),
        },
    };

    let Some(count) = u64::try_from(events.len()).ok().filter(|&n| n > 0) else {
        if let Some(command_id) = command_id {
            sqlx::query(INSERT_EMPTY_COMMAND)
                .bind(command_id)
                .bind(stream_type)
                .bind(stream_id)
                .bind(to_i64(current, "stream version")?)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::database(OP, e))?;
        }
        let outcome = AppendOutcome {
            first_version: current,
            last_version: current,
            last_position: 0,
            duplicate: false,
        };
        return Ok((outcome, Vec::new()));
    };
    let last_version = current.checked_add(count).ok_or(StoreError::OutOfRange {
        what: "stream version",
        value: current,
    })?;
    let at = to_i64(current, "stream version")?;
    let first = to_i64(current + 1, "stream version")?;
    let last = to_i64(last_version, "stream version")?;

    let now = now_micros();
    let recorded_at = micros(now);
    let mut last_position = 0;
    let mut recorded = Vec::with_capacity(if keep { events.len() } else { 0 });
    for (version, event) in (first..).zip(events) {
        // Inline projections need the events as stored; plain appends skip the copies.
        let kept = keep.then(|| {
            let copy = (event.event_type.clone(), event.payload.clone());
            (copy, event.event_version, event.event_id)
        });
        let sql = insert_statement(version == first, version == last, command_id.is_some());
        let inserted = sqlx::query(sql)
            .bind(stream_type)
            .bind(stream_id)
            .bind(version)
            .bind(event.event_type)
            .bind(i64::from(event.event_version))
            .bind(event.event_id.hyphenated())
            .bind(command_id)
            .bind(meta.correlation_id.map(Uuid::hyphenated))
            .bind(meta.causation_id.map(Uuid::hyphenated))
            .bind(recorded_at)
            .bind(headers.as_str())
            .bind(event.payload)
            .bind(first)
            .bind(at)
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(done) if done.rows_affected() == 0 => {
                // The first insert's check failed: say why.
                let checked = check(tx, stream_type, stream_id, expected, command_id).await?;
                return checked.refuse(stream_type, stream_id, expected);
            }
            Ok(done) => {
                last_position = stored_u64(done.last_insert_rowid(), "position", 0)?;
            }
            Err(e) if is_unique_violation(&e, "annals_events.event_id") => {
                return Err(StoreError::DuplicateEventId {
                    stream_type: stream_type.to_owned(),
                    stream_id: stream_id.to_owned(),
                    event_id: event.event_id,
                });
            }
            Err(e) if is_version_conflict(&e) => {
                // Only a writer bypassing `annals_streams` gets here: the check ran
                // under the write lock.
                let actual = match check(tx, stream_type, stream_id, expected, None).await? {
                    Checked::Conflict(actual) => actual,
                    Checked::Accepted(current) => Some(current),
                    Checked::Duplicate(first) => Some(first.last_version),
                };
                return Err(wrong_version(stream_type, stream_id, expected, actual));
            }
            Err(e) => return Err(StoreError::database(OP, e)),
        }
        if let Some(((event_type, payload), event_version, event_id)) = kept {
            recorded.push(RecordedEvent {
                meta: EventMeta {
                    position: last_position,
                    stream_type: stream_type.to_owned(),
                    stream_id: stream_id.to_owned(),
                    version: stored_u64(version, "stream version", last_position)?,
                    event_type,
                    event_version,
                    event_id,
                    command_id: meta.command_id,
                    correlation_id: meta.correlation_id,
                    causation_id: meta.causation_id,
                    recorded_at: now,
                    headers: meta.headers.clone(),
                },
                payload,
            });
        }
    }
    let outcome = AppendOutcome {
        first_version: current + 1,
        last_version,
        last_position,
        duplicate: false,
    };
    Ok((outcome, recorded))
}

/// Looks up the command id's outcome and the stream's version, and checks `expected`.
async fn check(
    tx: &mut SqliteConnection,
    stream_type: &str,
    stream_id: &str,
    expected: ExpectedVersion,
    command_id: Option<uuid::fmt::Hyphenated>,
) -> Result<Checked, StoreError> {
    let row = sqlx::query(APPEND_LOOKUP)
        .bind(stream_type)
        .bind(stream_id)
        .bind(command_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| StoreError::database("append", e))?;
    if let Some(first_version) = column::<Option<i64>>(&row, 1, 0)? {
        return Ok(Checked::Duplicate(AppendOutcome {
            first_version: stored_u64(first_version, "command first version", 0)?,
            last_version: stored_u64(column(&row, 2, 0)?, "command last version", 0)?,
            last_position: stored_u64(column(&row, 3, 0)?, "command last position", 0)?,
            duplicate: true,
        }));
    }
    let actual = column::<Option<i64>>(&row, 0, 0)?
        .map(|v| stored_u64(v, "stream version", 0))
        .transpose()?;
    Ok(if expected.accepts(actual) {
        Checked::Accepted(actual.unwrap_or(0))
    } else {
        Checked::Conflict(actual)
    })
}

/// Reads one row of [`event_columns!`]; anything out of range or malformed is
/// [`StoreError::Corrupt`] at the row's position.
fn decode_event(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let position: i64 = column(row, 0, 0)?;
    let position = stored_u64(position, "position", 0)?;
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };

    let version: i64 = column(row, 3, position)?;
    let event_version: i64 = column(row, 5, position)?;
    let recorded_at: i64 = column(row, 10, position)?;
    let headers: &str = column(row, 11, position)?;
    Ok(RecordedEvent {
        meta: EventMeta {
            position,
            stream_type: column(row, 1, position)?,
            stream_id: column(row, 2, position)?,
            version: stored_u64(version, "version", position)?,
            event_type: column(row, 4, position)?,
            event_version: stored_event_version(event_version, position)?,
            event_id: uuid_column(row, 6, position)?
                .ok_or_else(|| corrupt("event_id is null".to_owned()))?,
            command_id: uuid_column(row, 7, position)?,
            correlation_id: uuid_column(row, 8, position)?,
            causation_id: uuid_column(row, 9, position)?,
            recorded_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(recorded_at) * 1000)
                .map_err(|e| corrupt(format!("recorded_at {recorded_at}: {e}")))?,
            headers: decode_headers(headers).map_err(|e| corrupt(format!("headers: {e}")))?,
        },
        payload: column(row, 12, position)?,
    })
}

fn decode_headers(text: &str) -> Result<Headers, serde_json::Error> {
    if text == "{}" {
        return Ok(Headers::new());
    }
    serde_json::from_str(text)
}

/// A column of `row`, with a decoding failure (wrong type, bad UTF-8) reported as corrupt.
fn column<'r, T>(row: &'r SqliteRow, index: usize, position: u64) -> Result<T, StoreError>
where
    T: Decode<'r, Sqlite> + Type<Sqlite>,
{
    row.try_get(index).map_err(|e| StoreError::Corrupt {
        position,
        reason: match e {
            sqlx::Error::ColumnDecode { index, source } => format!("column {index}: {source}"),
            other => other.to_string(),
        },
    })
}

fn uuid_column(row: &SqliteRow, index: usize, position: u64) -> Result<Option<Uuid>, StoreError> {
    let Some(text) = column::<Option<&str>>(row, index, position)? else {
        return Ok(None);
    };
    Uuid::try_parse(text)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            position,
            reason: format!(
                "{} `{}` is not a UUID: {e}",
                EVENT_COLUMN_NAMES[index],
                text.escape_debug()
            ),
        })
}

/// A stored integer that must not be negative.
/// A number headed for an `INTEGER` column.
fn to_i64(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

/// Unix microseconds. `OffsetDateTime` stays within ±10,000 years, far inside `i64`.
fn micros(time: OffsetDateTime) -> i64 {
    let micros = time.unix_timestamp_nanos() / 1000;
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

fn wrong_version(
    stream_type: &str,
    stream_id: &str,
    expected: ExpectedVersion,
    actual: Option<u64>,
) -> StoreError {
    StoreError::WrongExpectedVersion {
        stream_type: stream_type.to_owned(),
        stream_id: stream_id.to_owned(),
        expected,
        actual,
    }
}

/// Whether an insert failed on `UNIQUE (stream_type, stream_id, version)`.
fn is_version_conflict(e: &sqlx::Error) -> bool {
    is_unique_violation(e, "annals_events.version")
}

/// Whether a statement failed on a unique constraint whose message names `column`.
fn is_unique_violation(e: &sqlx::Error, column: &str) -> bool {
    e.as_database_error()
        .is_some_and(|db| db.kind() == ErrorKind::UniqueViolation && db.message().contains(column))
}

async fn rollback(tx: sqlx::Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    tx.rollback()
        .await
        .map_err(|e| StoreError::database("rollback", e))
}

/// Switches the database file to the WAL journal unless it is in it already.
///
/// The mode is stored in the file, so this runs once, not on every new connection of the
/// pool: changing it takes a lock that SQLite's busy timeout does not wait for, which would
/// fail connections opened while another process writes.
async fn enable_wal(pool: &SqlitePool) -> Result<(), BoxError> {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
        .fetch_one(pool)
        .await?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(format!("the journal mode stayed `{mode}` instead of switching to `wal`").into())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every read walks an index in the order it returns: no full scan, no sort.
    #[tokio::test]
    async fn reads_walk_indexes_in_order() {
        let store = SqliteStore::in_memory().await.unwrap();
        for (sql, binds) in [
            (READ_ALL.to_owned(), 2),
            (READ_ALL_ONE_TYPE.to_owned(), 3),
            (read_all_merged_sql(3), 5),
            (read_all_merged_sql(MAX_MERGED_TYPES), MAX_MERGED_TYPES + 2),
            (READ_ALL_MANY_TYPES.to_owned(), 3),
            (READ_STREAM.to_owned(), 4),
            (READ_STREAM_UNTIL.to_owned(), 5),
            (APPEND_LOOKUP.to_owned(), 3),
        ] {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut query = sqlx::query(&Sql::from(explain));
            for _ in 0..binds {
                query = query.bind(1_i64);
            }
            let plan: Vec<String> = query
                .fetch_all(store.pool())
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(3))
                .collect();
            for step in &plan {
                assert!(
                    !step.contains("TEMP B-TREE") && !step.starts_with("SCAN annals_"),
                    "{sql}\n{}",
                    plan.join("\n")
                );
            }
        }
    }
}
