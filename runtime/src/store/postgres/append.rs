//! Appends: one statement per commit (stream lock, version check, command id, events),
//! in a savepoint inside a caller's transaction.

use std::fmt;

use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection, Postgres};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Operation, StoreError};
use crate::store::sql::stored_u64;
use crate::store::{
    now_micros, validate_events, validate_stream, AppendOutcome, CommitMeta, ExpectedVersion,
    NewEvent, RecordedEvent, StreamRef, TxStore,
};

use super::reads::decode_event;
use super::{lock_key, to_i32, to_i64, PgStore, PgTx};
use crate::store::sql::{column, command_outcome};

/// How many times an append whose transaction lost a serialization race (possible when the
/// database's default isolation is above read committed) is run again.
pub(super) const SERIALIZATION_RETRIES: u32 = 3;

impl PgStore {
    /// [`TxStore::append_in`] without reading the events back. The append runs in a
    /// savepoint, so an error leaves the caller's transaction usable.
    async fn append_on(
        &self,
        conn: &mut PgConnection,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        const OP: Operation = Operation::Append;
        validate_stream(stream)?;
        validate_events(stream, &events)?;
        let batch = Batch::new(events, meta)?;
        if batch.is_empty() {
            return self.append_nothing(conn, stream, expected, meta).await;
        }
        let mut savepoint = conn
            .begin()
            .await
            .map_err(|e| StoreError::database(OP, e))?;
        match self
            .run_append(&mut *savepoint, stream, expected, &batch)
            .await
        {
            Ok(row) => {
                savepoint
                    .commit()
                    .await
                    .map_err(|e| StoreError::database(OP, e))?;
                match row {
                    Some(row) => appended(&row),
                    None => self.mismatch(conn, stream, expected, meta.command_id).await,
                }
            }
            Err(e) => {
                // A savepoint that cannot be rolled back leaves the transaction unusable;
                // the caller learns why the append failed, not why the rollback did.
                if savepoint.rollback().await.is_err() {
                    return Err(StoreError::database(OP, e));
                }
                self.append_failed(conn, e, stream, expected, &batch).await
            }
        }
    }

    /// Runs the append statement; `None` when the stream's version did not match (or the
    /// command id was recorded meanwhile).
    async fn run_append<'c>(
        &self,
        conn: impl sqlx::PgExecutor<'c>,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        batch: &Batch<'_>,
    ) -> Result<Option<PgRow>, sqlx::Error> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
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
            .bind(stream_lock_key(&self.inner.schema, stream))
            .bind(batch.meta.fingerprint.as_deref());
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
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        batch: &Batch<'_>,
    ) -> Result<AppendOutcome, StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        let Some(db) = error.as_database_error() else {
            return Err(StoreError::database(Operation::Append, error));
        };
        match (db.code().as_deref(), db.constraint()) {
            (Some("23505"), Some("annals_commands_pkey" | "annals_events_stream_version_key")) => {
                self.mismatch(conn, stream, expected, batch.meta.command_id)
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
                    Some(invalid) => StoreError::database(Operation::Append, invalid),
                    None => StoreError::database(Operation::Append, error),
                })
            }
            _ => Err(StoreError::database(Operation::Append, error)),
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
            .map_err(|e| StoreError::database(Operation::Append, e))?;
        // Taken by a concurrent append that has since rolled back: name the batch's first.
        Ok(stored.unwrap_or(batch.ids[0]))
    }

    /// Nothing was appended: the command id was recorded by another append (return that
    /// outcome), or the stream is not at the expected version.
    async fn mismatch(
        &self,
        conn: &mut PgConnection,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        command_id: Option<Uuid>,
    ) -> Result<AppendOutcome, StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        if let Some(id) = command_id {
            if let Some(first) = self.query_command_outcome(&mut *conn, id).await? {
                return Ok(first);
            }
        }
        let actual = self.query_stream_version(&mut *conn, stream).await?;
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
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        if let Some(id) = meta.command_id {
            if let Some(first) = self.query_command_outcome(&mut *conn, id).await? {
                return Ok(first);
            }
        }
        let actual = self.query_stream_version(&mut *conn, stream).await?;
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
                .bind(meta.fingerprint.as_deref())
                .execute(&mut *conn)
                .await
                .map_err(|e| StoreError::database(Operation::Append, e))?;
            if recorded.rows_affected() == 0 {
                // Recorded meanwhile by another append, which was first. (A conflicting row
                // is visible here: under snapshot isolation the insert fails instead.)
                return self
                    .query_command_outcome(&mut *conn, id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt {
                        position: None,
                        reason: format!("command {id} is recorded but cannot be read"),
                    });
            }
        }
        Ok(AppendOutcome {
            first_version: current,
            last_version: current,
            last_position: 0,
            duplicate: false,
            fingerprint: meta.fingerprint.clone(),
        })
    }

    pub(super) async fn query_stream_version<'c>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
        stream: StreamRef<'_>,
    ) -> Result<Option<u64>, StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        let version: Option<i64> = sqlx::query_scalar(&self.inner.sql.stream_version)
            .bind(stream_type)
            .bind(stream_id)
            .fetch_optional(executor)
            .await
            .map_err(|e| StoreError::database(Operation::StreamVersion, e))?;
        version
            .map(|v| stored_u64(v, "stream version", None))
            .transpose()
    }

    pub(super) async fn query_command_outcome<'c>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
        command_id: Uuid,
    ) -> Result<Option<AppendOutcome>, StoreError> {
        let row = sqlx::query(&self.inner.sql.command_outcome)
            .bind(command_id)
            .fetch_optional(executor)
            .await
            .map_err(|e| StoreError::database(Operation::CommandOutcome, e))?;
        row.as_ref().map(command_outcome).transpose()
    }

    pub(super) async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<Postgres>, StoreError> {
        self.inner
            .pool
            .acquire()
            .await
            .map_err(|e| StoreError::database(Operation::Open, e))
    }
}

/// The advisory lock an append to `stream` takes before it writes: appends to one stream
/// take their transaction ids in the order they commit, so the log's (transaction id,
/// position) order keeps each stream's version order. Appends to other streams do not
/// wait (unless their keys collide, which only serializes them).
fn stream_lock_key(schema: &str, stream: StreamRef<'_>) -> i64 {
    lock_key(
        "stream",
        &format!(
            "{schema}\u{1f}{}\u{1f}{}",
            stream.stream_type, stream.stream_id
        ),
    )
}

impl TxStore for PgStore {
    type Tx = PgTx;

    async fn begin(&self) -> Result<PgTx, StoreError> {
        self.inner
            .pool
            .begin()
            .await
            .map_err(|e| StoreError::database(Operation::Begin, e))
    }

    async fn commit(&self, tx: PgTx) -> Result<(), StoreError> {
        tx.commit()
            .await
            .map_err(|e| StoreError::database(Operation::Commit, e))?;
        // The transaction may have appended: wake the live readers (coalesced, off the
        // commit path).
        self.wake_readers();
        Ok(())
    }

    async fn append_in<'a>(
        &'a self,
        tx: &'a mut PgTx,
        stream: StreamRef<'a>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &'a CommitMeta,
    ) -> Result<(AppendOutcome, Vec<RecordedEvent>), StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        let outcome = self.append_on(tx, stream, expected, events, meta).await?;
        if outcome.duplicate {
            return Ok((outcome.repeated_by(stream, meta)?, Vec::new()));
        }
        if outcome.last_position == 0 {
            return Ok((outcome, Vec::new()));
        }
        // Read back inside the transaction: the events exactly as stored (positions, time).
        let rows = sqlx::query(&self.inner.sql.read_stream)
            .bind(stream_type)
            .bind(stream_id)
            .bind(to_i64(outcome.first_version, "stream version")?)
            .bind(to_i64(outcome.last_version, "stream version")?)
            .bind(i64::MAX)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| StoreError::database(Operation::Append, e))?;
        let recorded = rows
            .iter()
            .map(decode_event)
            .collect::<Result<Vec<_>, _>>()?;
        let expected_count = outcome.last_version - outcome.first_version + 1;
        if recorded.len() as u64 != expected_count {
            return Err(StoreError::Corrupt {
                position: Some(outcome.last_position),
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
}

/// The outcome the append statement returned.
pub(super) fn appended(row: &PgRow) -> Result<AppendOutcome, StoreError> {
    Ok(AppendOutcome {
        duplicate: column(row, 0, "duplicate", None)?,
        first_version: stored_u64(column(row, 1, "first_version", None)?, "version", None)?,
        last_version: stored_u64(column(row, 2, "last_version", None)?, "version", None)?,
        last_position: stored_u64(column(row, 3, "last_position", None)?, "position", None)?,
        fingerprint: column(row, 4, "fingerprint", None)?,
    })
}

/// The events of one append, as the array parameters of the append statement.
pub(super) struct Batch<'m> {
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
            headers: serde_json::to_string(&meta.headers).map_err(|e| StoreError::Encode {
                what: "headers",
                source: e,
            })?,
            recorded_at: now_micros(),
            meta,
        };
        // Event types were checked by `validate_events`: no NUL, which PostgreSQL text
        // cannot hold, reaches the server.
        for event in events {
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

pub(super) fn is_serialization_failure(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40001" || code == "40P01")
}

impl PgStore {
    /// [`EventStore::append`]: one statement in its own transaction. A repeated command id
    /// returns the first append's outcome, or an error when it was another command's.
    pub(super) async fn append_committed(
        &self,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        let outcome = self
            .append_statement(stream, expected, events, meta)
            .await?;
        if outcome.duplicate {
            return outcome.repeated_by(stream, meta);
        }
        Ok(outcome)
    }

    async fn append_statement(
        &self,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        validate_stream(stream)?;
        validate_events(stream, &events)?;
        let batch = Batch::new(events, meta)?;
        if batch.is_empty() {
            let mut conn = self.acquire().await?;
            return self.append_nothing(&mut conn, stream, expected, meta).await;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .run_append(&self.inner.pool, stream, expected, &batch)
                .await
            {
                Ok(Some(row)) => {
                    let outcome = appended(&row)?;
                    if !outcome.duplicate {
                        self.wake_readers();
                    }
                    return Ok(outcome);
                }
                Ok(None) => {
                    let mut conn = self.acquire().await?;
                    return self
                        .mismatch(&mut conn, stream, expected, meta.command_id)
                        .await;
                }
                // One statement in its own transaction: safe to run again.
                Err(e) if is_serialization_failure(&e) && attempt <= SERIALIZATION_RETRIES => {}
                Err(e) => {
                    let mut conn = self.acquire().await?;
                    return self
                        .append_failed(&mut conn, e, stream, expected, &batch)
                        .await;
                }
            }
        }
    }
}
