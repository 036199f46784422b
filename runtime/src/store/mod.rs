//! The storage contract ([`EventStore`], [`SnapshotStore`]) and its implementations.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StoreError;

mod memory;
pub use memory::{MemoryStore, MemoryTx};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrate;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteTx};
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
pub use postgres::{PgLease, PgStore, PgStoreOptions, PgTx};

/// A statement assembled at run time from constant text and quoted identifiers (never from
/// values, which are bound): the only dynamic SQL the stores hand to sqlx.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug, Clone)]
pub(crate) struct Sql(std::sync::Arc<str>);

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<String> for Sql {
    fn from(sql: String) -> Self {
        Sql(sql.into())
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl sqlx::SqlSafeStr for &Sql {
    fn into_sql_str(self) -> sqlx::SqlStr {
        sqlx::AssertSqlSafe(std::sync::Arc::clone(&self.0)).into_sql_str()
    }
}

/// The longest stream id a store accepts, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 512;

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
}

/// An event to append, already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// Everything stored about an event except its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub recorded_at: OffsetDateTime,
    /// User headers.
    pub headers: Headers,
}

/// A stored event: metadata and JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Where and when it was stored.
    pub meta: EventMeta,
    /// JSON payload, as stored.
    pub payload: String,
}

/// The part of a stored event that rebuilding an aggregate needs: what
/// [`EventStore::load_stream`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// Which versions of a stream to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRange {
    /// First version to return (inclusive).
    pub from: u64,
    /// Last version to return (inclusive); `None` reads to the end.
    pub to: Option<u64>,
    /// Only events recorded at or before this time.
    pub until: Option<OffsetDateTime>,
}

impl StreamRange {
    /// The whole stream.
    pub const ALL: StreamRange = StreamRange {
        from: 1,
        to: None,
        until: None,
    };

    /// From `version` (inclusive) to the end.
    pub fn from(version: u64) -> Self {
        StreamRange {
            from: version,
            to: None,
            until: None,
        }
    }

    /// The inclusive version bounds as SQL integers; `None` when the range selects nothing.
    /// Versions are stored as `i64`, so bounds beyond it are clamped.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn sql_bounds(&self) -> Option<(i64, i64)> {
        let from = i64::try_from(self.from.max(1)).ok()?;
        let to = self
            .to
            .map_or(i64::MAX, |to| i64::try_from(to).unwrap_or(i64::MAX));
        (from <= to).then_some((from, to))
    }
}

/// Which events a global-order read returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
pub struct Snapshot {
    /// Stream version the snapshot was taken at.
    pub version: u64,
    /// The aggregate's declared snapshot schema version.
    pub snapshot_version: u32,
    /// JSON state.
    pub state: String,
}

/// An append-only log of events, grouped into streams and totally ordered by position.
///
/// All stores pass the same conformance suite (`tests/`).
pub trait EventStore: Clone + Send + Sync + 'static {
    /// Appends `events` to a stream if its version matches `expected`, atomically.
    ///
    /// When `meta.command_id` was already appended, appends nothing and returns the first
    /// append's outcome with `duplicate: true`.
    fn append(
        &self,
        stream_type: &str,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send;

    /// Reads a stream's events in version order.
    fn read_stream(
        &self,
        stream_type: &str,
        stream_id: &str,
        range: StreamRange,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Reads a stream like [`EventStore::read_stream`], with only what rebuilding an
    /// aggregate needs: the repository's load path, so stores skip the metadata columns.
    fn load_stream(
        &self,
        stream_type: &str,
        stream_id: &str,
        range: StreamRange,
    ) -> impl Future<Output = Result<Vec<StreamEvent>, StoreError>> + Send {
        load_through_read_stream(self, stream_type, stream_id, range)
    }

    /// Reads up to `limit` events with position greater than `after`, in position order,
    /// passing `filter`. Never returns an event while an earlier-positioned event may still
    /// commit, so a reader following positions never skips one.
    fn read_all(
        &self,
        after: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// The current version of a stream, `None` if it does not exist.
    fn stream_version(
        &self,
        stream_type: &str,
        stream_id: &str,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// The highest position a reader can safely read up to now.
    fn head(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The outcome of the first append that carried `command_id`, if any.
    fn command_outcome(
        &self,
        command_id: Uuid,
    ) -> impl Future<Output = Result<Option<AppendOutcome>, StoreError>> + Send;
}

/// Storage for aggregate snapshots, several per stream (temporal loads use older ones).
pub trait SnapshotStore: Clone + Send + Sync + 'static {
    /// Stores a snapshot (replacing one at the same stream version).
    fn save_snapshot(
        &self,
        stream_type: &str,
        stream_id: &str,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest snapshot of a stream at or below `max_version` (`None`: any version).
    fn load_snapshot(
        &self,
        stream_type: &str,
        stream_id: &str,
        max_version: Option<u64>,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;
}

/// Checks a stream type and id before they reach storage: not empty, at most
/// [`MAX_STREAM_ID_LEN`] bytes, no control characters.
pub fn validate_stream(stream_type: &str, stream_id: &str) -> Result<(), StoreError> {
    for (what, value) in [("stream type", stream_type), ("stream id", stream_id)] {
        let reason = if value.is_empty() {
            "is empty"
        } else if value.len() > MAX_STREAM_ID_LEN {
            "is longer than 512 bytes"
        } else if value.chars().any(char::is_control) {
            "contains a control character"
        } else {
            continue;
        };
        return Err(StoreError::InvalidStream {
            what,
            value: truncate_for_display(value),
            reason,
        });
    }
    Ok(())
}

fn truncate_for_display(value: &str) -> String {
    const SHOWN: usize = 64;
    if value.len() <= SHOWN {
        return value.escape_debug().to_string();
    }
    let mut end = SHOWN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", value[..end].escape_debug(), value.len())
}

/// The current time, truncated to microseconds: every store keeps that precision, so a
/// recorded-at time reads back equal whichever store wrote it.
pub fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let micros = now.microsecond();
    now.replace_microsecond(micros).unwrap_or(now)
}

/// A projection lease held within this process (memory and SQLite stores); released on
/// drop. Several processes on one SQLite file are not coordinated: run a projection in one
/// of them, or use PostgreSQL.
#[derive(Debug)]
pub struct LocalLease {
    leases: LocalLeases,
    name: String,
}

impl Drop for LocalLease {
    fn drop(&mut self) {
        self.leases.held().remove(&self.name);
    }
}

/// The projection names leased in this process, shared by a store's clones.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalLeases(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl LocalLeases {
    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lease of `name`, unless something in this process holds it.
    pub(crate) fn try_take(&self, name: &str) -> Option<LocalLease> {
        self.held().insert(name.to_owned()).then(|| LocalLease {
            leases: self.clone(),
            name: name.to_owned(),
        })
    }
}

/// Waits until `appended` fires or `timeout` passes, unless `head` is already past `after`.
/// Subscribes before reading the head, so an append between the two is not missed.
pub(crate) async fn wait_for_append(
    appended: &tokio::sync::Notify,
    after: u64,
    timeout: std::time::Duration,
    head: impl Future<Output = Result<u64, StoreError>>,
) -> Result<(), StoreError> {
    let notified = std::pin::pin!(appended.notified());
    let mut notified = notified;
    notified.as_mut().enable();
    if head.await? > after {
        return Ok(());
    }
    let _ = tokio::time::timeout(timeout, notified).await;
    Ok(())
}

/// [`EventStore::load_stream`] by way of [`EventStore::read_stream`]: the default, and what
/// the SQL stores do for the rare temporal (`until`) loads.
pub(crate) async fn load_through_read_stream<S: EventStore>(
    store: &S,
    stream_type: &str,
    stream_id: &str,
    range: StreamRange,
) -> Result<Vec<StreamEvent>, StoreError> {
    let events = store.read_stream(stream_type, stream_id, range).await?;
    Ok(events.into_iter().map(StreamEvent::from).collect())
}

/// A stored count (position, version) read back from a signed SQL integer; a negative one
/// means the row is corrupt.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn stored_u64(value: i64, what: &str, position: u64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        position,
        reason: format!("{what} {value} is negative"),
    })
}

/// An event's stored schema version read back from a SQL integer.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn stored_event_version<T>(value: T, position: u64) -> Result<u32, StoreError>
where
    T: TryInto<u32> + Copy + fmt::Display,
{
    value.try_into().map_err(|_| StoreError::Corrupt {
        position,
        reason: format!("event version {value} is out of range"),
    })
}
