//! The values that cross the storage contract: what is appended, what is read back, and
//! which part of a stream or of the global log a read selects.

use std::collections::BTreeMap;
use std::fmt::{self, Debug};

use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StoreError;

/// One stream: the aggregate's stream type and the aggregate's id.
///
/// ```
/// let account = annals::StreamRef::new("account", "42");
/// assert_eq!(account.to_string(), "account/42");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct StreamRef<'a> {
    /// The aggregate's stream type (`Aggregate::NAME`).
    pub stream_type: &'a str,
    /// The aggregate's id.
    pub stream_id: &'a str,
}

impl<'a> StreamRef<'a> {
    /// The stream `stream_id` of type `stream_type`.
    pub const fn new(stream_type: &'a str, stream_id: &'a str) -> Self {
        StreamRef {
            stream_type,
            stream_id,
        }
    }
}

impl fmt::Display for StreamRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream_type, self.stream_id)
    }
}

/// What the writer expects of a stream's current version when appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist.
    NoStream,
    /// The stream must exist, at any version.
    Exists,
    /// The stream must be exactly at this version (its last event's version).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` (`None`: no stream) satisfies this.
    pub fn accepts(self, actual: Option<u64>) -> bool {
        match (self, actual) {
            (ExpectedVersion::Any, _) => true,
            (ExpectedVersion::NoStream, None) => true,
            (ExpectedVersion::Exists, Some(_)) => true,
            (ExpectedVersion::Exact(n), Some(v)) => n == v,
            // `Exact(0)` means "at version 0", which is how an absent stream reads.
            (ExpectedVersion::Exact(0), None) => true,
            _ => false,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(n) => write!(f, "version {n}"),
        }
    }
}

/// User headers attached to every event of a commit.
pub type Headers = BTreeMap<String, String>;

/// Metadata shared by the events of one append.
///
/// ```
/// let meta = annals::CommitMeta::new()
///     .command_id(annals::Uuid::now_v7())
///     .header("tenant", "acme");
/// assert_eq!(meta.headers["tenant"], "acme");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitMeta {
    /// The id of the command that produced the events; appending twice with the same id
    /// appends once (idempotency).
    pub command_id: Option<Uuid>,
    /// Groups everything caused by one original request.
    pub correlation_id: Option<Uuid>,
    /// The message (command or event) that directly caused these events.
    pub causation_id: Option<Uuid>,
    /// Free-form headers.
    pub headers: Headers,
    /// What the command said, recorded with `command_id`: an append repeating the id with
    /// a different fingerprint is refused ([`StoreError::CommandIdMismatch`]) instead of
    /// returning the first command's outcome. The repository fills it from
    /// [`Command::fingerprint`](crate::Command::fingerprint); `None` compares equal to
    /// anything (records written before fingerprints existed).
    ///
    /// [`StoreError::CommandIdMismatch`]: crate::StoreError::CommandIdMismatch
    pub fingerprint: Option<String>,
}

impl CommitMeta {
    /// No ids, no headers.
    pub fn new() -> Self {
        CommitMeta::default()
    }

    /// With this command id (idempotency key).
    #[must_use]
    pub fn command_id(mut self, id: Uuid) -> Self {
        self.command_id = Some(id);
        self
    }

    /// With this correlation id.
    #[must_use]
    pub fn correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// With this causation id.
    #[must_use]
    pub fn causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// With this command fingerprint (see [`CommitMeta::fingerprint`](Self#structfield.fingerprint)).
    #[must_use]
    pub fn fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.fingerprint = Some(fingerprint.into());
        self
    }

    /// With one more header (replacing one of the same name).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// An event to append, already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewEvent {
    /// Unique id of this event.
    pub event_id: Uuid,
    /// Stored type name.
    pub event_type: String,
    /// Schema version the payload is encoded at.
    pub event_version: u32,
    /// JSON payload.
    pub payload: String,
}

impl NewEvent {
    /// A new event with a fresh, time-ordered (v7) id.
    pub fn new(event_type: impl Into<String>, event_version: u32, payload: String) -> Self {
        NewEvent {
            // Time-ordered (v7): the stores' unique index on event ids grows at its end
            // instead of taking each new id at a random place.
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            event_version,
            payload,
        }
    }

    /// The same event with the id `event_id` (an id chosen by the caller, to deduplicate).
    #[must_use]
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }
}

/// Everything stored about an event except its payload.
///
/// Serializes to JSON with field names as here and `recorded_at` in RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct EventMeta {
    /// Position in the global order (1-based, increasing, gaps possible).
    pub position: u64,
    /// The aggregate's stream type.
    pub stream_type: String,
    /// The aggregate's id.
    pub stream_id: String,
    /// Version within the stream (1-based, no gaps).
    pub version: u64,
    /// Stored type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub event_version: u32,
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The command that produced it, when the command carried an id.
    pub command_id: Option<Uuid>,
    /// Correlation id.
    pub correlation_id: Option<Uuid>,
    /// Causation id.
    pub causation_id: Option<Uuid>,
    /// When the store recorded it (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    /// User headers.
    #[serde(default)]
    pub headers: Headers,
}

impl EventMeta {
    /// The metadata a store records for `event`, appended at `version` of `stream`, at
    /// `position`, with the commit's ids and headers (for store implementations).
    pub fn recorded(
        stream: StreamRef<'_>,
        version: u64,
        position: u64,
        event: &NewEvent,
        commit: &CommitMeta,
        recorded_at: OffsetDateTime,
    ) -> Self {
        EventMeta {
            position,
            stream_type: stream.stream_type.to_owned(),
            stream_id: stream.stream_id.to_owned(),
            version,
            event_type: event.event_type.clone(),
            event_version: event.event_version,
            event_id: event.event_id,
            command_id: commit.command_id,
            correlation_id: commit.correlation_id,
            causation_id: commit.causation_id,
            recorded_at,
            headers: commit.headers.clone(),
        }
    }

    /// The stream the event belongs to.
    pub fn stream(&self) -> StreamRef<'_> {
        StreamRef::new(&self.stream_type, &self.stream_id)
    }
}

/// A stored event: metadata and JSON payload.
///
/// Serializes to JSON as `{"meta": {..}, "payload": "<the payload's JSON text>"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct RecordedEvent {
    /// Where and when it was stored.
    pub meta: EventMeta,
    /// JSON payload, as stored.
    pub payload: String,
}

impl RecordedEvent {
    /// A stored event (for store implementations).
    pub fn new(meta: EventMeta, payload: String) -> Self {
        RecordedEvent { meta, payload }
    }
}

/// The part of a stored event that rebuilding an aggregate needs: what
/// [`EventStore::load_stream`](crate::store::EventStore::load_stream) returns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamEvent {
    /// Position in the global order (for error messages).
    pub position: u64,
    /// Version within the stream.
    pub version: u64,
    /// Stored type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub event_version: u32,
    /// JSON payload, as stored.
    pub payload: String,
}

impl StreamEvent {
    /// An event as the load path sees it (for store implementations).
    pub fn new(
        position: u64,
        version: u64,
        event_type: String,
        event_version: u32,
        payload: String,
    ) -> Self {
        StreamEvent {
            position,
            version,
            event_type,
            event_version,
            payload,
        }
    }
}

impl From<RecordedEvent> for StreamEvent {
    fn from(event: RecordedEvent) -> Self {
        StreamEvent {
            position: event.meta.position,
            version: event.meta.version,
            event_type: event.meta.event_type,
            event_version: event.meta.event_version,
            payload: event.payload,
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendOutcome {
    /// Stream version of the first event appended (for an empty append, the current version).
    pub first_version: u64,
    /// Stream version after the append: the version of the last event.
    pub last_version: u64,
    /// Global position of the last event appended (0 if nothing was appended).
    pub last_position: u64,
    /// True when the commit's command id had been seen before: nothing was appended and the
    /// versions are those of the first append.
    pub duplicate: bool,
    /// The command fingerprint recorded with the command id, if any (for a duplicate: the
    /// first append's).
    pub fingerprint: Option<String>,
}

impl AppendOutcome {
    /// A fresh append's outcome (for store implementations).
    pub fn new(first_version: u64, last_version: u64, last_position: u64) -> Self {
        AppendOutcome {
            first_version,
            last_version,
            last_position,
            duplicate: false,
            fingerprint: None,
        }
    }

    /// The same outcome, recording `fingerprint` (for store implementations).
    #[must_use]
    pub fn with_fingerprint(mut self, fingerprint: Option<String>) -> Self {
        self.fingerprint = fingerprint;
        self
    }

    /// The first append's outcome, reported for an append that repeats its command id with
    /// `meta`; refused when both carry a fingerprint and they differ (for store
    /// implementations).
    pub fn repeated_by(
        self,
        stream: StreamRef<'_>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        match (&self.fingerprint, &meta.fingerprint, meta.command_id) {
            (Some(first), Some(now), Some(command_id)) if first != now => {
                Err(StoreError::CommandIdMismatch {
                    command_id,
                    stream_type: stream.stream_type.to_owned(),
                    stream_id: stream.stream_id.to_owned(),
                })
            }
            _ => Ok(self.into_duplicate()),
        }
    }

    /// The same outcome, reported for a repeated command id.
    #[must_use]
    pub fn into_duplicate(self) -> Self {
        AppendOutcome {
            duplicate: true,
            ..self
        }
    }
}

/// Which versions of a stream to read.
///
/// ```
/// use annals::store::StreamRange;
/// let range = StreamRange::from(3).to(5);
/// assert_eq!((range.from, range.to), (3, Some(5)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamRange {
    /// First version to return (inclusive).
    pub from: u64,
    /// Last version to return (inclusive); `None` reads to the end.
    pub to: Option<u64>,
    /// Only events recorded at or before this time (the read stops at the first event
    /// recorded later).
    pub until: Option<OffsetDateTime>,
    /// At most this many events (the first ones of the range); `None` for all of them.
    /// The repository loads long streams in pages this way, so a store must honour it
    /// for loads to stay in bounded memory.
    pub limit: Option<u64>,
}

impl StreamRange {
    /// The whole stream.
    pub const ALL: StreamRange = StreamRange {
        from: 1,
        to: None,
        until: None,
        limit: None,
    };

    /// From `version` (inclusive) to the end.
    pub fn from(version: u64) -> Self {
        StreamRange {
            from: version,
            to: None,
            until: None,
            limit: None,
        }
    }

    /// Up to `version` (inclusive).
    #[must_use]
    pub fn to(mut self, version: u64) -> Self {
        self.to = Some(version);
        self
    }

    /// Only events recorded at or before `at`.
    #[must_use]
    pub fn until(mut self, at: OffsetDateTime) -> Self {
        self.until = Some(at);
        self
    }

    /// At most `count` events.
    #[must_use]
    pub fn limit(mut self, count: u64) -> Self {
        self.limit = Some(count);
        self
    }
}

/// Where a named runner stands in its source, as stored by a
/// [`CheckpointStore`](super::CheckpointStore).
///
/// `position` is the global position (or broker sequence) reached, which status, lag and
/// [`wait_for_checkpoint`](crate::wait_for_checkpoint) read; `cursor` is whatever else the
/// source needs to resume exactly (a transaction id, a shard's sequence number), opaque to
/// the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The position reached (0: nothing processed).
    pub position: u64,
    /// The rest of the source's cursor, if the position alone does not say where to resume.
    pub cursor: Option<String>,
}

impl Checkpoint {
    /// A checkpoint that is a position alone.
    pub const fn at(position: u64) -> Self {
        Checkpoint {
            position,
            cursor: None,
        }
    }

    /// A checkpoint with a cursor beside its position.
    pub fn with_cursor(position: u64, cursor: impl Into<String>) -> Self {
        Checkpoint {
            position,
            cursor: Some(cursor.into()),
        }
    }
}

/// An event a runner set aside after its handler kept failing on it: the runner moved past
/// it, and it waits here, with its error, to be retried or skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// The parked entry's id (increasing in parking order).
    pub id: u64,
    /// The runner that parked it (its checkpoint's name).
    pub runner: String,
    /// The event, as the runner's source delivered it.
    pub event: RecordedEvent,
    /// The handler's last error, with its causes.
    pub error: String,
    /// How many times the handler was tried on it.
    pub attempts: u32,
    /// When it was parked.
    pub parked_at: OffsetDateTime,
    /// What became of it; `None` while it is parked.
    pub resolution: Option<Resolution>,
}

/// How a parked event left the parking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resolution {
    /// Handled on a retry.
    Retried,
    /// Skipped by an operator: never handled.
    Skipped,
    /// Recorded by a reactor whose command was refused and whose policy is to ignore
    /// refusals ([`crate::workflow::OnRejected::Ignore`]): listed, never parked.
    Ignored,
}

impl Resolution {
    /// The stored name: `retried`, `skipped` or `ignored`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Retried => "retried",
            Resolution::Skipped => "skipped",
            Resolution::Ignored => "ignored",
        }
    }

    /// The resolution a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "retried" => Some(Resolution::Retried),
            "skipped" => Some(Resolution::Skipped),
            "ignored" => Some(Resolution::Ignored),
            _ => None,
        }
    }
}

/// A source's position: what a runner stores as its checkpoint, and reads from next.
///
/// The global log's cursor is a position (`u64`); a broker's is its stream sequence; a
/// change feed's may need more than a number, which [`Checkpoint::cursor`] carries.
pub trait Cursor: Clone + Default + Debug + PartialEq + Send + Sync + 'static {
    /// The checkpoint that stores this cursor.
    fn to_checkpoint(&self) -> Checkpoint;

    /// The cursor a stored checkpoint holds; an error if the checkpoint was not written by
    /// this kind of cursor.
    fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self, StoreError>;
}

impl Cursor for u64 {
    fn to_checkpoint(&self) -> Checkpoint {
        Checkpoint::at(*self)
    }

    fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self, StoreError> {
        match &checkpoint.cursor {
            None => Ok(checkpoint.position),
            Some(cursor) => Err(StoreError::Corrupt {
                position: None,
                reason: format!(
                    "checkpoint at position {} carries cursor `{cursor}`, but its source \
                     resumes from a position alone: was the runner's name used with another \
                     source?",
                    checkpoint.position
                ),
            }),
        }
    }
}

/// What [`Source::read`](crate::source::Source::read) returns: events in the source's order, and the cursor the source
/// has been read through.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Batch<C> {
    /// The events, in order, passing the filter.
    pub events: Vec<RecordedEvent>,
    /// The cursor after this batch: the checkpoint once the events are handled. It may be
    /// past the last event (events the filter skipped); equal to the cursor read after when
    /// there was nothing new.
    pub end: C,
    /// Events the source could not read in full (a broker message without the headers
    /// that make it an event, or with a payload that is not text), by index in `events`,
    /// with the reason: the runner treats each as a handler failure, so it stops there or,
    /// with [`Runner::park_after`](crate::Runner::park_after), parks it with the reason.
    pub unreadable: BTreeMap<usize, String>,
}

impl<C> Batch<C> {
    /// A batch of `events` read through `end`.
    pub fn new(events: Vec<RecordedEvent>, end: C) -> Self {
        Batch {
            events,
            end,
            unreadable: BTreeMap::new(),
        }
    }

    /// Why the event at `index` could not be read, if it could not.
    pub fn unreadable(&self, index: usize) -> Option<&str> {
        self.unreadable.get(&index).map(String::as_str)
    }
}

/// Which events a global-order read returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventFilter {
    /// Only these stored type names; `None` for all.
    pub event_types: Option<Vec<String>>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        EventFilter::default()
    }

    /// Only events stored under one of these type names.
    pub fn types<I, T>(types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        EventFilter {
            event_types: Some(types.into_iter().map(Into::into).collect()),
        }
    }

    /// Whether an event of this type passes.
    pub fn matches(&self, event_type: &str) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|t| t.iter().any(|t| t == event_type))
    }
}

/// A stored snapshot of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Stream version the snapshot was taken at.
    pub version: u64,
    /// The aggregate's declared snapshot schema version.
    pub snapshot_version: u32,
    /// JSON state.
    pub state: String,
}

impl Snapshot {
    /// The state `state` (JSON) at stream version `version`, encoded at the aggregate's
    /// snapshot schema version `snapshot_version`.
    pub fn new(version: u64, snapshot_version: u32, state: String) -> Self {
        Snapshot {
            version,
            snapshot_version,
            state,
        }
    }
}

/// A process manager's stored state for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessState {
    /// The state, as JSON.
    pub state: String,
    /// How many times it was saved (1 after the first save).
    pub version: u64,
    /// Whether the process ended: later events for its key are ignored.
    pub ended: bool,
}

impl ProcessState {
    /// A stored state (for store implementations).
    pub fn new(state: String, version: u64, ended: bool) -> Self {
        ProcessState {
            state,
            version,
            ended,
        }
    }
}

/// A deadline a process manager scheduled: when `due_at` passes, its `#[deadline]` handler
/// named `name` runs for `key`, once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deadline {
    /// The process manager's name.
    pub process: String,
    /// The correlation key.
    pub key: String,
    /// The deadline handler's name; one deadline per (process, key, name).
    pub name: String,
    /// The deadline's id, from which the ids of the commands it sends derive.
    pub id: Uuid,
    /// When it fires.
    pub due_at: OffsetDateTime,
    /// The correlation id of the flow that scheduled it.
    pub correlation_id: Option<Uuid>,
    /// The event whose handler scheduled it.
    pub causation_id: Option<Uuid>,
}

impl Deadline {
    /// A deadline (for store implementations and handlers' contexts).
    pub fn new(
        process: impl Into<String>,
        key: impl Into<String>,
        name: impl Into<String>,
        id: Uuid,
        due_at: OffsetDateTime,
    ) -> Self {
        Deadline {
            process: process.into(),
            key: key.into(),
            name: name.into(),
            id,
            due_at,
            correlation_id: None,
            causation_id: None,
        }
    }

    /// With the flow's correlation id and the scheduling event's id.
    #[must_use]
    pub fn caused_by(mut self, correlation_id: Option<Uuid>, causation_id: Option<Uuid>) -> Self {
        self.correlation_id = correlation_id;
        self.causation_id = causation_id;
        self
    }
}
