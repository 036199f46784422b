//! Appends: one write transaction per commit, the version check and the command id's
//! idempotency record in the same statements as the events.

use sqlx::error::ErrorKind;
use sqlx::sqlite::SqliteConnection;
use sqlx::Sqlite;
use uuid::Uuid;

use crate::error::{Operation, StoreError};
use crate::store::sql::{column, stored_u64};
use crate::store::{
    now_micros, validate_events, validate_stream, AppendOutcome, CommitMeta, EventMeta,
    ExpectedVersion, NewEvent, RecordedEvent, StreamRef, TxStore,
};

use super::{micros, to_i64, SqliteStore, SqliteTx};

/// Looks up, in one statement, the stream's version and the outcome recorded for the
/// command id (`NULL` when the append carries none).
pub(super) const APPEND_LOOKUP: &str = "\
    SELECT (SELECT MAX(version) FROM annals_events WHERE stream_type = ?1 AND stream_id = ?2), \
           c.first_version, c.last_version, c.last_position, c.fingerprint \
    FROM (SELECT 1) LEFT JOIN annals_commands c ON c.command_id = ?3";

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
/// stream) and the command id is new; otherwise inserts nothing. The stream's version is
/// its last event's, one seek in the `(stream_type, stream_id, version)` index: no
/// separate stream row to keep (migration 7).
macro_rules! insert_checked_event {
    () => {
        concat!(
            insert_event_into!(),
            "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 \
             WHERE COALESCE((SELECT MAX(version) FROM annals_events \
                              WHERE stream_type = ?1 AND stream_id = ?2), 0) = ?14 \
               AND NOT EXISTS (SELECT 1 FROM annals_commands WHERE command_id = ?7);"
        )
    };
}

/// After the last event's insert (if it inserted a row): the command's outcome, with the
/// event's position (`last_insert_rowid()`).
macro_rules! then_command_outcome {
    () => {
        "INSERT INTO annals_commands (command_id, stream_type, stream_id, first_version, \
             last_version, last_position, fingerprint) \
         SELECT ?7, ?1, ?2, ?13, ?3, last_insert_rowid(), ?15 WHERE changes() = 1;"
    };
}

/// The statements for one event, by (is it the first, the last, is there a command id).
fn insert_statement(first: bool, last: bool, command: bool) -> &'static str {
    match (first, last, command) {
        (true, _, false) | (true, false, true) => insert_checked_event!(),
        (true, true, true) => concat!(insert_checked_event!(), then_command_outcome!()),
        (false, true, true) => concat!(insert_event!(), then_command_outcome!()),
        (false, _, _) => insert_event!(),
    }
}

/// Records the outcome of an empty append.
const INSERT_EMPTY_COMMAND: &str = "\
    INSERT INTO annals_commands (command_id, stream_type, stream_id, first_version, \
        last_version, last_position, fingerprint) \
    VALUES (?1, ?2, ?3, ?4, ?4, 0, ?5)";

impl TxStore for SqliteStore {
    type Tx = SqliteTx;

    /// Starts a write transaction (`BEGIN IMMEDIATE`): SQLite has one writer at a time,
    /// and taking the lock up front means a batch never fails half-way on an upgrade.
    async fn begin(&self) -> Result<SqliteTx, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| StoreError::database(Operation::Begin, e))
    }

    async fn commit(&self, tx: SqliteTx) -> Result<(), StoreError> {
        tx.commit()
            .await
            .map_err(|e| StoreError::database(Operation::Commit, e))?;
        self.appended.notify_waiters();
        Ok(())
    }

    async fn append_in<'a>(
        &'a self,
        tx: &'a mut SqliteTx,
        stream: StreamRef<'a>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &'a CommitMeta,
    ) -> Result<(AppendOutcome, Vec<RecordedEvent>), StoreError> {
        validate_stream(stream)?;
        validate_events(stream, &events)?;
        write(tx, stream, expected, events, meta, true).await
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
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        meta: &CommitMeta,
    ) -> Result<(AppendOutcome, Vec<RecordedEvent>), StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        match self {
            Checked::Duplicate(first) => Ok((first.repeated_by(stream, meta)?, Vec::new())),
            Checked::Conflict(actual) => Err(wrong_version(stream, expected, actual)),
            // The insert's check and this one read the same rows under the same lock.
            Checked::Accepted(current) => Err(StoreError::Corrupt {
                position: None,
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
pub(super) async fn write(
    tx: &mut SqliteConnection,
    stream: StreamRef<'_>,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    meta: &CommitMeta,
    keep: bool,
) -> Result<(AppendOutcome, Vec<RecordedEvent>), StoreError> {
    let StreamRef {
        stream_type,
        stream_id,
    } = stream;
    const OP: Operation = Operation::Append;
    let headers = serde_json::to_string(&meta.headers).map_err(|e| StoreError::Encode {
        what: "headers",
        source: e,
    })?;
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
        None => match check(tx, stream, expected, command_id).await? {
            Checked::Accepted(current) => current,
            refused => return refused.refuse(stream, expected, meta),
        },
    };

    let Some(count) = u64::try_from(events.len()).ok().filter(|&n| n > 0) else {
        if let Some(command_id) = command_id {
            sqlx::query(INSERT_EMPTY_COMMAND)
                .bind(command_id)
                .bind(stream_type)
                .bind(stream_id)
                .bind(to_i64(current, "stream version")?)
                .bind(meta.fingerprint.as_deref())
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::database(OP, e))?;
        }
        let outcome = AppendOutcome {
            first_version: current,
            last_version: current,
            last_position: 0,
            duplicate: false,
            fingerprint: meta.fingerprint.clone(),
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
            .bind(meta.fingerprint.as_deref())
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(done) if done.rows_affected() == 0 => {
                // The first insert's check failed: say why.
                let checked = check(tx, stream, expected, command_id).await?;
                return checked.refuse(stream, expected, meta);
            }
            Ok(done) => {
                last_position = stored_u64(done.last_insert_rowid(), "position", None)?;
            }
            Err(e) if is_unique_violation(&e, "annals_events.event_id") => {
                return Err(StoreError::DuplicateEventId {
                    stream_type: stream_type.to_owned(),
                    stream_id: stream_id.to_owned(),
                    event_id: event.event_id,
                });
            }
            Err(e) if is_version_conflict(&e) => {
                // Only a writer outside the write lock (raw SQL) gets here: the check
                // ran under it.
                let actual = match check(tx, stream, expected, None).await? {
                    Checked::Conflict(actual) => actual,
                    Checked::Accepted(current) => Some(current),
                    Checked::Duplicate(first) => Some(first.last_version),
                };
                return Err(wrong_version(stream, expected, actual));
            }
            Err(e) => return Err(StoreError::database(OP, e)),
        }
        if let Some(((event_type, payload), event_version, event_id)) = kept {
            recorded.push(RecordedEvent {
                meta: EventMeta {
                    position: last_position,
                    stream_type: stream_type.to_owned(),
                    stream_id: stream_id.to_owned(),
                    version: stored_u64(version, "stream version", Some(last_position))?,
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
        fingerprint: meta.fingerprint.clone(),
    };
    Ok((outcome, recorded))
}

/// Looks up the command id's outcome and the stream's version, and checks `expected`.
async fn check(
    tx: &mut SqliteConnection,
    stream: StreamRef<'_>,
    expected: ExpectedVersion,
    command_id: Option<uuid::fmt::Hyphenated>,
) -> Result<Checked, StoreError> {
    let StreamRef {
        stream_type,
        stream_id,
    } = stream;
    let row = sqlx::query(APPEND_LOOKUP)
        .bind(stream_type)
        .bind(stream_id)
        .bind(command_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| StoreError::database(Operation::Append, e))?;
    if let Some(first_version) = column::<_, Option<i64>>(&row, 1, "first_version", None)? {
        let number = |index, name| -> Result<u64, StoreError> {
            stored_u64(column(&row, index, name, None)?, name, None)
        };
        return Ok(Checked::Duplicate(
            AppendOutcome::new(
                stored_u64(first_version, "first_version", None)?,
                number(2, "last_version")?,
                number(3, "last_position")?,
            )
            .with_fingerprint(column(&row, 4, "fingerprint", None)?)
            .into_duplicate(),
        ));
    }
    let actual = column::<_, Option<i64>>(&row, 0, "stream version", None)?
        .map(|v| stored_u64(v, "stream version", None))
        .transpose()?;
    Ok(if expected.accepts(actual) {
        Checked::Accepted(actual.unwrap_or(0))
    } else {
        Checked::Conflict(actual)
    })
}

fn wrong_version(
    stream: StreamRef<'_>,
    expected: ExpectedVersion,
    actual: Option<u64>,
) -> StoreError {
    let StreamRef {
        stream_type,
        stream_id,
    } = stream;
    StoreError::WrongExpectedVersion {
        stream_type: stream_type.to_owned(),
        stream_id: stream_id.to_owned(),
        expected,
        actual,
    }
}

/// Whether an insert failed on `UNIQUE (stream, version)`.
fn is_version_conflict(e: &sqlx::Error) -> bool {
    is_unique_violation(e, "annals_events.version")
}

/// Whether a statement failed on a unique constraint whose message names `column`.
fn is_unique_violation(e: &sqlx::Error, column: &str) -> bool {
    e.as_database_error()
        .is_some_and(|db| db.kind() == ErrorKind::UniqueViolation && db.message().contains(column))
}

pub(super) async fn rollback(tx: sqlx::Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    tx.rollback()
        .await
        .map_err(|e| StoreError::database(Operation::Rollback, e))
}

impl SqliteStore {
    /// [`EventStore::append`]: one write transaction, then a wake-up for live readers.
    pub(super) async fn append_committed(
        &self,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        validate_stream(stream)?;
        validate_events(stream, &events)?;
        let queued = self.write.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| StoreError::database(Operation::Append, e))?;
        let written = write(&mut tx, stream, expected, events, meta, false).await;
        match written {
            Ok((outcome, _)) if outcome.duplicate => {
                rollback(tx).await?;
                Ok(outcome)
            }
            Ok((outcome, _)) => {
                tx.commit()
                    .await
                    .map_err(|e| StoreError::database(Operation::Append, e))?;
                drop(queued);
                if outcome.last_position > 0 {
                    self.appended.notify_waiters();
                }
                Ok(outcome)
            }
            Err(error) => {
                // The append's error is the one to report: a rollback that fails too (the
                // connection broke) leaves nothing written either, and the pool discards it.
                let _ = tx.rollback().await;
                Err(error)
            }
        }
    }
}
