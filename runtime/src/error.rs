//! Errors, one enum per layer.

use crate::event::DecodeError;
use crate::store::ExpectedVersion;

/// A boxed error from a storage backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from an [`crate::EventStore`] or [`crate::SnapshotStore`].
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
    /// Another runner moved the checkpoint; this batch was rolled back.
    #[error("projection `{projection}`: checkpoint moved by another runner (expected {expected})")]
    Superseded {
        /// The projection's name.
        projection: &'static str,
        /// The checkpoint this runner expected.
        expected: u64,
    },
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
