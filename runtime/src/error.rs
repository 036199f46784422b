//! Errors, one enum per layer.

use crate::event::DecodeError;
use crate::store::ExpectedVersion;

/// A boxed error from a storage backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a store (any of the [`crate::store`] capabilities).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream's version did not match what the writer expected; nothing was appended.
    #[error("stream {stream_type}/{stream_id} is at {}, expected {expected}", display_actual(*.actual))]
    WrongExpectedVersion {
        /// Stream type.
        stream_type: String,
        /// Stream id.
        stream_id: String,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's version (`None`: no stream).
        actual: Option<u64>,
    },
    /// An event's id is already stored, or appears twice in one append; nothing was
    /// appended.
    #[error("event id {event_id} appended to {stream_type}/{stream_id} is already taken")]
    DuplicateEventId {
        /// Stream type of the refused append.
        stream_type: String,
        /// Stream id of the refused append.
        stream_id: String,
        /// The repeated id.
        event_id: uuid::Uuid,
    },
    /// A stream type or id was refused before reaching storage.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidStream {
        /// "stream type" or "stream id".
        what: &'static str,
        /// The refused value (escaped, shortened).
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// An event type or a runner's name (projection, checkpoint, lease) was refused before
    /// reaching storage; nothing was written.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidName {
        /// "event type" or "runner name".
        what: &'static str,
        /// The refused value (escaped, shortened).
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// An event's schema version is 0 (versions start at 1); nothing was appended.
    #[error(
        "event `{event_type}` appended to {stream_type}/{stream_id} has schema version 0: \
         versions start at 1"
    )]
    ZeroEventVersion {
        /// Stream type of the refused append.
        stream_type: String,
        /// Stream id of the refused append.
        stream_id: String,
        /// The event's type.
        event_type: String,
    },
    /// An append repeated a command id already recorded for a different command (another
    /// fingerprint); nothing was appended and the first command's outcome stands.
    #[error(
        "command id {command_id} was already used by a different command; \
         refusing to append to {stream_type}/{stream_id} under it (give each command its own id)"
    )]
    CommandIdMismatch {
        /// The reused command id.
        command_id: uuid::Uuid,
        /// Stream type of the refused append.
        stream_type: String,
        /// Stream id of the refused append.
        stream_id: String,
    },
    /// A schema name or other configuration was refused.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A stored row could not be read back (a column out of range, corrupt metadata).
    #[error("corrupt record {}: {reason}", display_position(*.position))]
    Corrupt {
        /// The event's global position, when the row is an event's and its position is
        /// readable.
        position: Option<u64>,
        /// What is wrong.
        reason: String,
    },
    /// A value could not be encoded for storage (headers, a type filter); nothing was
    /// written.
    #[error("cannot encode {what} for the store")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A number does not fit the database's integer type.
    #[error("{what} {value} is out of range for the store")]
    OutOfRange {
        /// What the number is.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A commit, event or snapshot is larger than the store can take in one write (DynamoDB:
    /// 100 items or 4 MB per transaction, 400 KB per item); nothing was written.
    #[error("{what} is too large for the store: {limit}")]
    TooLarge {
        /// What was refused (a commit, an event, a snapshot) and where it was headed.
        what: String,
        /// The limit it exceeds.
        limit: &'static str,
    },
    /// Running the embedded schema migrations failed.
    #[error("migrating the schema to version {version} failed")]
    Migration {
        /// The migration that failed.
        version: u32,
        /// The database error.
        #[source]
        source: BoxError,
    },
    /// The database was migrated by a newer annals than this one; nothing was changed.
    #[error(
        "database schema is at version {found}, newer than the latest this build knows \
         ({known}): upgrade annals"
    )]
    SchemaTooNew {
        /// The newest migration the database records.
        found: u32,
        /// The newest migration this build embeds.
        known: u32,
    },
    /// The database reported an error.
    #[error("database error during {operation}")]
    Database {
        /// What the store was doing.
        operation: Operation,
        /// The database error.
        #[source]
        source: BoxError,
    },
}

fn display_position(position: Option<u64>) -> String {
    match position {
        Some(p) => format!("at position {p}"),
        None => "(position unknown)".to_owned(),
    }
}

fn display_actual(actual: Option<u64>) -> String {
    match actual {
        Some(v) => format!("version {v}"),
        None => "no stream".to_owned(),
    }
}

impl StoreError {
    /// Wraps a backend error with what the store was doing.
    pub fn database(operation: Operation, source: impl Into<BoxError>) -> Self {
        StoreError::Database {
            operation,
            source: source.into(),
        }
    }

    /// Whether trying again later may succeed: the database could not be reached or dropped
    /// the connection, or refused the work for now. Only [`StoreError::Database`] and
    /// [`StoreError::Migration`] can be transient, decided from the database error they
    /// wrap (see [`is_transient_cause`]). Everything else (corrupt rows, conflicts, refused
    /// input) stays the same however often it is retried.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database { source, .. } | StoreError::Migration { source, .. } => {
                is_transient_cause(source.as_ref())
            }
            _ => false,
        }
    }
}

/// Whether an error, or an error it wraps, is a transient database failure:
///
/// - an I/O error (connection refused, reset, closed mid-query);
/// - sqlx's pool timing out waiting for a connection (a closed pool is not transient: it
///   never reopens);
/// - PostgreSQL SQLSTATE class 08 (connection exception), 57P01 (terminated by an
///   administrator), 57P02 (crash shutdown), 57P03 (cannot connect now: starting up or
///   shutting down), 53300 (too many connections), and 40001 / 40P01 (serialization failure,
///   deadlock: the transaction was rolled back and may run again);
/// - SQLite `SQLITE_BUSY` and `SQLITE_LOCKED` (with their extended codes): another
///   connection held a lock beyond the busy timeout.
///
/// The chain of [`std::error::Error::source`]s is followed to the first error it
/// recognises (a [`StoreError`], a sqlx error or an I/O error), so a projection handler's
/// boxed sqlx error is classified too.
pub fn is_transient_cause(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(store) = error.downcast_ref::<StoreError>() {
            return store.is_transient();
        }
        #[cfg(any(feature = "sqlite", feature = "postgres"))]
        if let Some(sqlx) = error.downcast_ref::<sqlx::Error>() {
            return is_transient_sqlx(sqlx);
        }
        if error.is::<std::io::Error>() {
            return true;
        }
        next = error.source();
    }
    false
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn is_transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(database) => {
            #[cfg(feature = "postgres")]
            if let Some(pg) = database.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = pg.code();
                return code.starts_with("08")
                    || matches!(
                        code,
                        "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
                    );
            }
            #[cfg(feature = "sqlite")]
            if database
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .is_some()
            {
                // The extended result code; its low byte is the primary code.
                const SQLITE_BUSY: u32 = 5;
                const SQLITE_LOCKED: u32 = 6;
                let primary = database
                    .code()
                    .and_then(|code| code.parse::<u32>().ok())
                    .map(|code| code & 0xff);
                return matches!(primary, Some(SQLITE_BUSY | SQLITE_LOCKED));
            }
            let _ = database;
            false
        }
        _ => false,
    }
}

/// What a store was doing when its database failed: the same label on every store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Connecting to or opening the database.
    Open,
    /// Migrating the schema.
    Migrate,
    /// Appending events.
    Append,
    /// Reading a stream.
    ReadStream,
    /// Reading a stream's version.
    StreamVersion,
    /// Looking up a command id's outcome.
    CommandOutcome,
    /// Reading the global log.
    ReadAll,
    /// Reading the global log's head.
    Head,
    /// Saving a snapshot.
    SaveSnapshot,
    /// Loading a snapshot.
    LoadSnapshot,
    /// Starting a transaction.
    Begin,
    /// Committing a transaction.
    Commit,
    /// Rolling a transaction back.
    Rollback,
    /// Reading a checkpoint.
    ReadCheckpoint,
    /// Moving a checkpoint.
    AdvanceCheckpoint,
    /// Taking or checking a lease.
    Lease,
    /// Waiting for new events.
    WaitForEvents,
    /// Parking a failing event, or listing, retrying or skipping parked ones.
    Park,
    /// Listing streams.
    ListStreams,
    /// Reading or writing a process manager's state.
    ProcessState,
    /// Scheduling, listing or taking deadlines.
    Deadline,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Open => "open",
            Operation::Migrate => "migration",
            Operation::Append => "append",
            Operation::ReadStream => "stream read",
            Operation::StreamVersion => "stream version lookup",
            Operation::CommandOutcome => "command id lookup",
            Operation::ReadAll => "global read",
            Operation::Head => "head lookup",
            Operation::SaveSnapshot => "snapshot save",
            Operation::LoadSnapshot => "snapshot load",
            Operation::Begin => "begin",
            Operation::Commit => "commit",
            Operation::Rollback => "rollback",
            Operation::ReadCheckpoint => "checkpoint read",
            Operation::AdvanceCheckpoint => "checkpoint write",
            Operation::Lease => "lease",
            Operation::WaitForEvents => "wait for events",
            Operation::ProcessState => "process state",
            Operation::Deadline => "deadline",
            Operation::Park => "park events",
            Operation::ListStreams => "stream list",
        })
    }
}

/// An error loading, encoding or storing an aggregate's events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be decoded.
    #[error(
        "cannot decode event `{event_type}` v{event_version} in stream {stream_type}/{stream_id} \
         at version {version} (position {position}): {reason}"
    )]
    Decode {
        /// Stream type.
        stream_type: String,
        /// Stream id.
        stream_id: String,
        /// Version within the stream.
        version: u64,
        /// Global position.
        position: u64,
        /// Stored type name.
        event_type: String,
        /// Stored schema version.
        event_version: u32,
        /// Why it failed.
        reason: DecodeError,
    },
    /// An event could not be encoded.
    #[error("cannot encode event `{event_type}`: {reason}")]
    Encode {
        /// Type name of the event.
        event_type: &'static str,
        /// The JSON error.
        reason: serde_json::Error,
    },
    /// A stream's stored events contradict themselves or its recorded version: nothing was
    /// appended, and retrying will not help. Annals never writes such a stream; something
    /// changed the rows by hand or lost some.
    #[error("corrupt stream {stream_type}/{stream_id}: {problem}")]
    CorruptStream {
        /// Stream type.
        stream_type: String,
        /// Stream id.
        stream_id: String,
        /// What is wrong.
        problem: StreamCorruption,
    },
    /// An aggregate's state could not be encoded as a snapshot; the command's events are
    /// stored, the snapshot is not.
    #[error("cannot encode snapshot of {stream_type}/{stream_id} at version {version}: {reason}")]
    EncodeSnapshot {
        /// Stream type.
        stream_type: String,
        /// Stream id.
        stream_id: String,
        /// Version the snapshot was to be taken at.
        version: u64,
        /// The JSON error.
        reason: serde_json::Error,
    },
    /// A stored snapshot could not be decoded.
    #[error("cannot decode snapshot of {stream_type}/{stream_id} at version {version}: {reason}")]
    Snapshot {
        /// Stream type.
        stream_type: String,
        /// Stream id.
        stream_id: String,
        /// Version the snapshot was taken at.
        version: u64,
        /// The JSON error.
        reason: serde_json::Error,
    },
}

impl Error {
    /// Wraps a decoding failure with where the event is stored.
    pub fn decode(meta: &crate::EventMeta, reason: DecodeError) -> Self {
        Error::Decode {
            stream_type: meta.stream_type.clone(),
            stream_id: meta.stream_id.clone(),
            version: meta.version,
            position: meta.position,
            event_type: meta.event_type.clone(),
            event_version: meta.event_version,
            reason,
        }
    }
}

/// What is wrong with a corrupt stream ([`Error::CorruptStream`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamCorruption {
    /// The events' versions do not run 1, 2, 3, ..: one is missing or out of place (counting
    /// on from the snapshot's version when loading from a snapshot).
    #[error("expected version {expected}, found version {found}")]
    VersionGap {
        /// The version the next event should have had.
        expected: u64,
        /// The version it had.
        found: u64,
    },
    /// The stream's recorded version (what appends check) differs from its last readable
    /// event's, and no concurrent writer explains it.
    #[error("its recorded version is {recorded}, but its events end at version {last}")]
    VersionMismatch {
        /// The stream's recorded version (0: none recorded).
        recorded: u64,
        /// The version of its last readable event.
        last: u64,
    },
}

/// An error from a projection or its runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be decoded.
    #[error(transparent)]
    Decode(#[from] crate::Error),
    /// A handler returned an error; the batch was rolled back and the checkpoint not moved.
    #[error("projection `{projection}` failed on event `{event_type}` at position {position}")]
    Handler {
        /// The projection's name.
        projection: &'static str,
        /// The event's type.
        event_type: String,
        /// The event's position.
        position: u64,
        /// The handler's error.
        #[source]
        source: BoxError,
    },
    /// The projection's `#[reset]` hook failed; the rebuild did not start.
    #[error("projection `{projection}` failed to reset its read model")]
    Reset {
        /// The projection's name.
        projection: &'static str,
        /// The hook's error.
        #[source]
        source: BoxError,
    },
    /// The runner's source failed (a broker or change feed unreachable, a message it could
    /// not read); the batch was not handled and the checkpoint not moved.
    #[error("event source failed")]
    Source {
        /// Whether trying again later may succeed ([`ProjectionError::is_transient`]).
        transient: bool,
        /// The source's error.
        #[source]
        source: BoxError,
    },
    /// No event is parked under this id for this runner (never parked, or already retried
    /// or skipped).
    #[error("runner `{runner}` has no parked event {id}")]
    NotParked {
        /// The runner's name.
        runner: &'static str,
        /// The parked entry's id.
        id: u64,
    },
    /// A command a reactor sent for an event failed; the checkpoint stays before the
    /// event, so it is sent again (under the same command id) when the event is retried.
    #[error("`{runner}`: command `{command}` sent for event `{event_type}` at position {position} failed")]
    Command {
        /// The reactor's name.
        runner: &'static str,
        /// The command's type.
        command: &'static str,
        /// The triggering event's type.
        event_type: String,
        /// The triggering event's position.
        position: u64,
        /// Whether sending it again later may succeed (a version conflict past the
        /// repository's retries, the store unavailable).
        transient: bool,
        /// The dispatcher's error.
        #[source]
        source: DispatchError,
    },
    /// A reactor sends commands the dispatcher has no repository for; found when the
    /// reactor is set up, before any event.
    #[error("`{runner}` sends `{command}` to aggregate `{aggregate}`, which has no route in the dispatcher")]
    Unrouted {
        /// The reactor's name.
        runner: &'static str,
        /// The command's type.
        command: &'static str,
        /// The aggregate the command targets.
        aggregate: &'static str,
    },
    /// Another runner moved the checkpoint; this batch was rolled back.
    #[error("projection `{projection}`: checkpoint moved by another runner (expected {expected})")]
    Superseded {
        /// The projection's name.
        projection: &'static str,
        /// The checkpoint this runner expected.
        expected: u64,
    },
}

impl ProjectionError {
    /// Whether running the batch again later may succeed: a transient store error
    /// ([`StoreError::is_transient`]), or a handler error caused by one (a handler's sqlx
    /// error on a dropped connection). [`crate::ProjectionRunner::run`] retries these.
    pub fn is_transient(&self) -> bool {
        match self {
            ProjectionError::Store(error) | ProjectionError::Decode(Error::Store(error)) => {
                error.is_transient()
            }
            ProjectionError::Handler { source, .. } => is_transient_cause(source.as_ref()),
            ProjectionError::Source { transient, .. }
            | ProjectionError::Command { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// Why a [`crate::workflow::Dispatcher`] did not apply a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// No repository is routed for the command's aggregate.
    #[error("no route for command `{command}` (aggregate `{aggregate}`)")]
    NoRoute {
        /// The command's type.
        command: &'static str,
        /// The aggregate it targets.
        aggregate: &'static str,
    },
    /// The aggregate refused the command: its handler's error, or the stream policy not
    /// met (creating a stream that exists, changing one that does not).
    #[error("command `{command}` rejected")]
    Rejected {
        /// The command's type.
        command: &'static str,
        /// The refusal.
        #[source]
        source: BoxError,
    },
    /// The command failed in a way that trying again later may fix: concurrent writers
    /// past the repository's retries, the store unavailable.
    #[error("command `{command}` failed, for now")]
    Transient {
        /// The command's type.
        command: &'static str,
        /// The error.
        #[source]
        source: BoxError,
    },
    /// The command failed for good (a corrupt stream, an inline projection's error, a
    /// command id reused on another stream).
    #[error("command `{command}` failed")]
    Failed {
        /// The command's type.
        command: &'static str,
        /// The error.
        #[source]
        source: BoxError,
    },
}

impl DispatchError {
    /// Whether sending the command again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, DispatchError::Transient { .. })
    }
}

/// Why [`crate::Repository::execute`] did not apply a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The handler refused the command.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// The command's stream policy was not met.
    #[error("stream {stream_type}/{stream_id} {}", if *.exists { "already exists" } else { "does not exist" })]
    Policy {
        /// Stream type.
        stream_type: String,
        /// Stream id.
        stream_id: String,
        /// Whether the stream exists.
        exists: bool,
    },
    /// Concurrent writers kept changing the stream; gave up after `attempts` tries.
    #[error("stream {stream_type}/{stream_id} kept changing: gave up after {attempts} attempts")]
    Conflict {
        /// Stream type.
        stream_type: String,
        /// Stream id.
        stream_id: String,
        /// How many times the command was handled.
        attempts: u32,
    },
    /// The command id was first executed on another stream, so its recorded outcome is
    /// not this command's; nothing was appended.
    #[error("command id {command_id} was already executed on a stream other than {stream_type}/{stream_id}")]
    CommandIdReused {
        /// The command id.
        command_id: uuid::Uuid,
        /// Stream type of this command.
        stream_type: String,
        /// Stream id of this command.
        stream_id: String,
    },
    /// An inline projection failed (the error names the projection, event type and
    /// position); nothing was appended.
    #[error(transparent)]
    Projection(ProjectionError),
    /// Loading or storing failed.
    #[error(transparent)]
    Failed(#[from] Error),
}

impl<E> From<StoreError> for ExecuteError<E> {
    fn from(e: StoreError) -> Self {
        ExecuteError::Failed(Error::Store(e))
    }
}

impl<E> ExecuteError<E> {
    /// The handler's error, if the handler refused the command.
    pub fn rejected(&self) -> Option<&E> {
        match self {
            ExecuteError::Rejected(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(source: impl Into<BoxError>) -> StoreError {
        StoreError::database(Operation::ReadAll, source)
    }

    #[test]
    fn only_database_failures_can_be_transient() {
        let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(database(refused()).is_transient());
        assert!(!StoreError::Config("bad schema".into()).is_transient());
        assert!(!StoreError::Corrupt {
            position: Some(3),
            reason: "bad".into()
        }
        .is_transient());
        assert!(StoreError::Migration {
            version: 1,
            source: refused().into()
        }
        .is_transient());
        assert!(!StoreError::OutOfRange {
            what: "position",
            value: u64::MAX
        }
        .is_transient());
        assert!(!database("a plain message").is_transient());
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[test]
    fn sqlx_errors_by_kind() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(database(sqlx::Error::Io(reset)).is_transient());
        assert!(database(sqlx::Error::PoolTimedOut).is_transient());
        // A closed pool never reopens.
        assert!(!database(sqlx::Error::PoolClosed).is_transient());
        assert!(!database(sqlx::Error::RowNotFound).is_transient());
        assert!(!database(sqlx::Error::Protocol("unexpected message".into())).is_transient());
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[test]
    fn causes_are_followed_through_handlers() {
        let handler = |source: BoxError| ProjectionError::Handler {
            projection: "p",
            event_type: "E".into(),
            position: 1,
            source,
        };
        assert!(handler(Box::new(sqlx::Error::PoolTimedOut)).is_transient());
        assert!(handler(Box::new(database(sqlx::Error::PoolTimedOut))).is_transient());
        assert!(!handler("refusing the event".into()).is_transient());
        assert!(!handler(Box::new(sqlx::Error::RowNotFound)).is_transient());
        assert!(ProjectionError::Store(database(sqlx::Error::PoolTimedOut)).is_transient());
        assert!(!ProjectionError::Superseded {
            projection: "p",
            expected: 1
        }
        .is_transient());
    }
}
