//! Loading aggregates and executing commands against a store.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::aggregate::{Aggregate, Command, Handle, StreamPolicy};
use crate::error::{Error, ExecuteError, ProjectionError, StoreError, StreamCorruption};
use crate::event::Events;
use crate::projection::Projection;
use crate::retry::Backoff;
use crate::store::{
    validate_stream, AppendOutcome, CommitMeta, EventStore, ExpectedVersion, NewEvent,
    RecordedEvent, Snapshot, SnapshotStore, StreamEvent, StreamRange, StreamRef, TxStore,
};

/// How many times [`Repository::execute`] handles a command before reporting a conflict.
///
/// With [`DEFAULT_RETRY_BACKOFF`], a command that keeps conflicting waits about a quarter of
/// a second in all (at most half a second) before it is reported: long enough for a burst
/// of writers on one stream to drain. (32 writers on one stream, 10 commands each: with 5
/// attempts 78% of the commands on SQLite and 57% on PostgreSQL still ended in a conflict,
/// with 10 attempts 10 to 30%.)
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// How long [`Repository::execute`] waits before handling a command again after a conflict,
/// unless set with [`Repository::retry_backoff`]: a random time up to 4 ms before the first
/// retry, up to 8, 16, 32, 64 ms before the next ones, then up to 100 ms.
pub const DEFAULT_RETRY_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(4), Duration::from_millis(100));

/// How many events a load reads from the store at a time, unless set with
/// [`Repository::load_page`]. Streams shorter than this load in one read.
pub const DEFAULT_LOAD_PAGE: u64 = 4096;

/// An aggregate rebuilt from its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The version of the last event applied; 0 when the stream does not exist.
    pub version: u64,
}

impl<A> Loaded<A> {
    /// The state `state` at stream version `version`.
    pub fn new(state: A, version: u64) -> Self {
        Loaded { state, version }
    }
}

/// The result of a command that was applied.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Executed<E> {
    /// The stream id the events went to.
    pub stream_id: String,
    /// The stream's version after the command.
    pub version: u64,
    /// The global position of the last event appended (for a duplicate, of the first
    /// execution's last event); 0 when nothing was appended.
    pub position: u64,
    /// The events the command produced.
    pub events: Vec<E>,
    /// True when the command id had been executed before: these are the first execution's
    /// events, and nothing new was appended.
    pub duplicate: bool,
}

/// How a repository takes and reads an aggregate's snapshots on store `S`: the aggregate's
/// [`Aggregate::Snapshots`] chooses, so only aggregates that declare `snapshot(..)` need a
/// [`SnapshotStore`].
#[diagnostic::on_unimplemented(
    message = "this aggregate takes snapshots, and `{S}` cannot store them",
    label = "the aggregate declares `snapshot(..)`",
    note = "use a store that implements `annals::store::SnapshotStore`, or remove `snapshot(..)` from `#[aggregate]`"
)]
pub trait SnapshotPolicy<S>: Send + Sync + 'static {
    /// The latest usable snapshot at or below `max_version`.
    fn load(
        store: &S,
        stream: StreamRef<'_>,
        max_version: Option<u64>,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Stores a snapshot.
    fn save(
        store: &S,
        stream: StreamRef<'_>,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The aggregate declares no snapshots: nothing is read or written, on any store.
#[derive(Debug)]
pub enum NoSnapshots {}

/// The aggregate declares `snapshot(every = .., version = ..)`: the store must keep them.
#[derive(Debug)]
pub enum Snapshots {}

impl<S: EventStore> SnapshotPolicy<S> for NoSnapshots {
    async fn load(_: &S, _: StreamRef<'_>, _: Option<u64>) -> Result<Option<Snapshot>, StoreError> {
        Ok(None)
    }

    async fn save(_: &S, _: StreamRef<'_>, _: Snapshot) -> Result<(), StoreError> {
        Ok(())
    }
}

impl<S: SnapshotStore> SnapshotPolicy<S> for Snapshots {
    fn load(
        store: &S,
        stream: StreamRef<'_>,
        max_version: Option<u64>,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send {
        store.load_snapshot(stream, max_version)
    }

    fn save(
        store: &S,
        stream: StreamRef<'_>,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        store.save_snapshot(stream, snapshot)
    }
}

/// Loads aggregates of type `A` from store `S` and executes their commands.
///
/// `S` needs only [`EventStore`]; [`SnapshotStore`] too when the aggregate declares
/// snapshots, and [`TxStore`] for [`Repository::with_inline`].
///
/// ```no_run
/// # async fn demo<A: annals::Aggregate<Services = (), Snapshots = annals::NoSnapshots>>() -> Result<(), Box<dyn std::error::Error>> {
/// let store = annals::SqliteStore::open("bank.db").await?;
/// let accounts = annals::Repository::<A, _>::new(store);
/// # Ok(()) }
/// ```
pub struct Repository<A: Aggregate, S: EventStore> {
    store: S,
    services: Arc<A::Services>,
    max_attempts: u32,
    backoff: Backoff,
    load_page: u64,
    inline: Option<Inline<A, S>>,
}

impl<A: Aggregate, S: EventStore> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            services: Arc::clone(&self.services),
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            load_page: self.load_page,
            inline: self.inline.clone(),
        }
    }
}

/// The inline projections, and the transactional append that runs them. The list is kept
/// type-erased (an `InlineList<S>`) so that `Repository` asks for [`TxStore`] only in
/// [`Repository::with_inline`], where both are made.
struct Inline<A: Aggregate, S: EventStore> {
    projections: Arc<dyn Any + Send + Sync>,
    append: InlineAppend<A, S>,
}

impl<A: Aggregate, S: EventStore> Clone for Inline<A, S> {
    fn clone(&self) -> Self {
        Inline {
            projections: Arc::clone(&self.projections),
            append: self.append,
        }
    }
}

type InlineAppend<A, S> = for<'a> fn(
    &'a Repository<A, S>,
    &'a str,
    ExpectedVersion,
    Vec<NewEvent>,
    &'a CommitMeta,
) -> Pin<
    Box<dyn Future<Output = Result<AppendOutcome, AppendError>> + Send + 'a>,
>;

type InlineList<S> = Vec<Arc<dyn InlineProjection<S>>>;

/// A projection run inside the append transaction (see [`Repository::with_inline`]).
trait InlineProjection<S: TxStore>: Send + Sync {
    fn apply<'a>(
        &'a self,
        tx: &'a mut S::Tx,
        events: &'a [RecordedEvent],
    ) -> Pin<Box<dyn Future<Output = Result<(), ProjectionError>> + Send + 'a>>;
}

impl<S, P> InlineProjection<S> for tokio::sync::Mutex<P>
where
    S: TxStore,
    P: Projection<S::Tx>,
{
    fn apply<'a>(
        &'a self,
        tx: &'a mut S::Tx,
        events: &'a [RecordedEvent],
    ) -> Pin<Box<dyn Future<Output = Result<(), ProjectionError>> + Send + 'a>> {
        Box::pin(async move {
            let mut projection = self.lock().await;
            for event in events {
                projection.handle(event, tx).await?;
            }
            Ok(())
        })
    }
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: TxStore,
{
    /// Runs `projection` inside every append's transaction: the read model changes commit
    /// with the events or not at all, and a failing handler fails the command
    /// ([`ExecuteError::Projection`]). Inline projections keep no checkpoint; to build one
    /// over events already stored, run it once with a [`crate::ProjectionRunner`].
    ///
    /// The projection is shared: keep a clone of the `Arc` to read an in-memory read model.
    #[must_use]
    pub fn with_inline<P>(mut self, projection: Arc<tokio::sync::Mutex<P>>) -> Self
    where
        P: Projection<S::Tx>,
    {
        let mut list: InlineList<S> = self
            .inline
            .as_ref()
            .and_then(|inline| inline.projections.downcast_ref::<InlineList<S>>())
            .cloned()
            .unwrap_or_default();
        list.push(projection);
        self.inline = Some(Inline {
            projections: Arc::new(list),
            append: |repository, stream_id, expected, events, meta| {
                Box::pin(repository.append_inline(stream_id, expected, events, meta))
            },
        });
        self
    }

    /// Appends in one transaction with the inline projections.
    async fn append_inline(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, AppendError> {
        let projections = self
            .inline
            .as_ref()
            .and_then(|inline| inline.projections.downcast_ref::<InlineList<S>>())
            .map_or(&[][..], Vec::as_slice);
        let stream = StreamRef::new(A::NAME, stream_id);
        let mut tx = self.store.begin().await?;
        let (outcome, recorded) = self
            .store
            .append_in(&mut tx, stream, expected, events, meta)
            .await?;
        for projection in projections {
            projection
                .apply(&mut tx, &recorded)
                .await
                .map_err(AppendError::Projection)?;
        }
        self.store.commit(tx).await?;
        Ok(outcome)
    }
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    A::Snapshots: SnapshotPolicy<S>,
    S: EventStore,
{
    /// A repository whose handlers take no services (or default ones).
    pub fn new(store: S) -> Self
    where
        A::Services: Default,
    {
        Self::with_services(store, A::Services::default())
    }

    /// A repository passing `services` to the handlers that take a services parameter.
    pub fn with_services(store: S, services: A::Services) -> Self {
        Repository {
            store,
            services: Arc::new(services),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: DEFAULT_RETRY_BACKOFF,
            load_page: DEFAULT_LOAD_PAGE,
            inline: None,
        }
    }

    /// How many times a command is handled when concurrent writers cause version conflicts
    /// (at least 1; default [`DEFAULT_MAX_ATTEMPTS`]).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long to wait before handling a command again after a version conflict
    /// (default [`DEFAULT_RETRY_BACKOFF`]): a random time up to a ceiling that doubles each
    /// retry, so writers that collided spread out instead of colliding again.
    /// [`Backoff::none`] retries at once.
    #[must_use]
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How many events a load reads at a time (at least 1; default
    /// [`DEFAULT_LOAD_PAGE`]). Events are applied page by page, so loading a long stream
    /// holds one page in memory, not the stream.
    #[must_use]
    pub fn load_page(mut self, events: u64) -> Self {
        self.load_page = events.max(1);
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The services handed to handlers.
    pub fn services(&self) -> &A::Services {
        &self.services
    }

    /// Loads the current state (snapshot, then newer events). A missing stream loads as the
    /// default state at version 0. The events' versions must run on from the snapshot's (or
    /// from 1) without a gap; otherwise [`Error::CorruptStream`] names the stream and the
    /// version expected and found.
    pub async fn load(&self, id: &A::Id) -> Result<Loaded<A>, Error> {
        self.load_stream(&id.to_string(), None).await
    }

    /// Loads the state as it was at stream version `version` (or the latest, if lower).
    pub async fn load_at_version(&self, id: &A::Id, version: u64) -> Result<Loaded<A>, Error> {
        self.load_stream(&id.to_string(), Some(version)).await
    }

    /// Loads the state from the events recorded at or before `at`.
    pub async fn load_as_of(&self, id: &A::Id, at: OffsetDateTime) -> Result<Loaded<A>, Error> {
        let stream_id = id.to_string();
        let stream = StreamRef::new(A::NAME, &stream_id);
        validate_stream(stream)?;
        let loaded = Loaded {
            state: A::default(),
            version: 0,
        };
        let (loaded, _) = self
            .fold_pages(stream, loaded, StreamRange::ALL.until(at))
            .await?;
        Ok(loaded)
    }

    /// Applies the events of `range` after `loaded`, reading at most a page at a time.
    /// Returns the state and how many events were applied.
    async fn fold_pages(
        &self,
        stream: StreamRef<'_>,
        mut loaded: Loaded<A>,
        range: StreamRange,
    ) -> Result<(Loaded<A>, u64), Error> {
        let mut applied = 0;
        loop {
            let page = StreamRange {
                from: loaded.version + 1,
                limit: Some(self.load_page),
                ..range
            };
            if page.to.is_some_and(|to| page.from > to) {
                break;
            }
            let events = self.store.load_stream(stream, page).await?;
            let count = u64::try_from(events.len()).unwrap_or(u64::MAX);
            loaded = fold(loaded, stream.stream_id, &events)?;
            applied += count;
            // A short page is the end; a store that ignores the limit returns the rest at
            // once, and the next page is empty.
            if count < self.load_page {
                break;
            }
        }
        Ok((loaded, applied))
    }

    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(
            name = "annals.load",
            skip(self),
            fields(annals.stream_type = A::NAME, annals.from_version, annals.events),
            err(Display)
        )
    )]
    async fn load_stream(&self, stream_id: &str, to: Option<u64>) -> Result<Loaded<A>, Error> {
        let stream = StreamRef::new(A::NAME, stream_id);
        validate_stream(stream)?;
        let mut loaded = Loaded {
            state: A::default(),
            version: 0,
        };
        if A::SNAPSHOT_EVERY > 0 {
            if let Some(snapshot) = A::Snapshots::load(&self.store, stream, to).await? {
                if snapshot.snapshot_version == A::SNAPSHOT_VERSION {
                    if let Some(state) = A::decode_snapshot(&snapshot.state) {
                        let state = state.map_err(|reason| Error::Snapshot {
                            stream_type: A::NAME.to_owned(),
                            stream_id: stream_id.to_owned(),
                            version: snapshot.version,
                            reason,
                        })?;
                        loaded = Loaded {
                            state,
                            version: snapshot.version,
                        };
                    }
                }
            }
        }
        #[cfg(feature = "tracing")]
        tracing::Span::current().record("annals.from_version", loaded.version);
        let range = StreamRange {
            to,
            ..StreamRange::ALL
        };
        let (loaded, _applied) = self.fold_pages(stream, loaded, range).await?;
        #[cfg(feature = "tracing")]
        tracing::Span::current().record("annals.events", _applied);
        Ok(loaded)
    }

    /// Executes a command: load, handle, append with the loaded version as the expected
    /// version. On a version conflict, waits a little ([`Self::retry_backoff`]), applies the
    /// events appended meanwhile and handles again, up to the configured number of attempts,
    /// then returns [`ExecuteError::Conflict`]. A stream whose recorded version disagrees
    /// with its events is reported as [`Error::CorruptStream`] instead, and nothing is
    /// appended.
    pub async fn execute<C>(&self, command: C) -> Result<Executed<A::Event>, ExecuteError<A::Error>>
    where
        C: Command<Aggregate = A>,
        A: Handle<C>,
    {
        self.execute_with(command, CommitMeta::default()).await
    }

    /// Executes a command with metadata: a command id (a second execution with the same id
    /// appends nothing and returns the first one's events; a different command under the
    /// same id, told apart by [`Command::fingerprint`], fails with
    /// [`StoreError::CommandIdMismatch`] and appends nothing), correlation and causation ids
    /// and headers stored with every event.
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(
            name = "annals.execute",
            skip_all,
            fields(
                annals.stream_type = A::NAME,
                annals.command = std::any::type_name::<C>(),
                annals.stream_id,
                annals.attempts,
                annals.conflicts,
            ),
            // Refused commands are part of a domain's normal life, not faults.
            err(level = "info", Display)
        )
    )]
    pub async fn execute_with<C>(
        &self,
        command: C,
        mut meta: CommitMeta,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Error>>
    where
        C: Command<Aggregate = A>,
        A: Handle<C>,
    {
        let stream_id = command.aggregate_id().to_string();
        #[cfg(feature = "tracing")]
        tracing::Span::current().record("annals.stream_id", stream_id.as_str());
        validate_stream(StreamRef::new(A::NAME, &stream_id))?;
        if let Some(command_id) = meta.command_id {
            if meta.fingerprint.is_none() {
                meta.fingerprint = command.fingerprint();
            }
            if let Some(first) = self.store.command_outcome(command_id).await? {
                return self
                    .replay_outcome(stream_id, command_id, &first, &meta)
                    .await;
            }
        }
        let policy = A::policy(&command);
        let mut loaded = self.load_stream(&stream_id, None).await?;
        for attempt in 1..=self.max_attempts {
            #[cfg(feature = "tracing")]
            tracing::Span::current()
                .record("annals.attempts", attempt)
                .record("annals.conflicts", attempt - 1);
            let version = loaded.version;
            let exists = version > 0;
            let refused = match policy {
                StreamPolicy::Create => exists,
                StreamPolicy::Existing => !exists,
                StreamPolicy::Any => false,
            };
            if refused {
                return Err(ExecuteError::Policy {
                    stream_type: A::NAME.to_owned(),
                    stream_id,
                    exists,
                });
            }
            let events = loaded
                .state
                .handle(command.clone(), &self.services)
                .await
                .map_err(ExecuteError::Rejected)?;
            if events.is_empty() && meta.command_id.is_none() {
                return Ok(Executed {
                    stream_id,
                    version,
                    position: 0,
                    events,
                    duplicate: false,
                });
            }
            let encoded = encode_all(&events)?;
            let expected = if exists {
                ExpectedVersion::Exact(version)
            } else {
                ExpectedVersion::NoStream
            };
            match self.append(&stream_id, expected, encoded, &meta).await {
                Ok(outcome) if outcome.duplicate => {
                    // Another execution with the same command id won the race (stores report
                    // duplicates only for appends that carry a command id).
                    let command_id = meta.command_id.unwrap_or_default();
                    return self
                        .replay_outcome(stream_id, command_id, &outcome, &meta)
                        .await;
                }
                Ok(outcome) => {
                    for event in &events {
                        loaded.state.apply(event);
                    }
                    // The events are stored: a snapshot that cannot be written must not
                    // turn the command into a failure a caller would retry. Loads replay
                    // from the previous snapshot until the next one is taken.
                    let snapshot = self
                        .maybe_snapshot(&stream_id, &loaded.state, version, outcome.last_version)
                        .await;
                    #[cfg(feature = "tracing")]
                    if let Err(error) = &snapshot {
                        tracing::warn!(%error, "annals snapshot not written");
                    }
                    drop(snapshot);
                    return Ok(Executed {
                        stream_id,
                        version: outcome.last_version,
                        position: outcome.last_position,
                        events,
                        duplicate: false,
                    });
                }
                Err(AppendError::Store(StoreError::WrongExpectedVersion { actual, .. })) => {
                    if attempt < self.max_attempts {
                        tokio::time::sleep(self.backoff.delay(attempt - 1)).await;
                    }
                    // Also on the last attempt: a corrupt stream is reported as such, not as
                    // a conflict.
                    loaded = self
                        .catch_up(&stream_id, loaded, actual.unwrap_or(0))
                        .await?;
                }
                Err(AppendError::Store(e)) => return Err(e.into()),
                Err(AppendError::Projection(e)) => return Err(ExecuteError::Projection(e)),
            }
        }
        Err(ExecuteError::Conflict {
            stream_type: A::NAME.to_owned(),
            stream_id,
            attempts: self.max_attempts,
        })
    }

    /// After a conflict: applies the events appended since `loaded` (the handler only read
    /// the state, so it is still the state at `loaded.version`). The conflict reported the
    /// stream's recorded version, `recorded`; the events up to it committed with it, so
    /// they are readable now. When they are not, or the loaded events already ran past it,
    /// no concurrent writer explains the difference: the stream is corrupt, and retrying
    /// would only report a conflict after every attempt.
    async fn catch_up(
        &self,
        stream_id: &str,
        mut loaded: Loaded<A>,
        recorded: u64,
    ) -> Result<Loaded<A>, Error> {
        let behind = recorded < loaded.version;
        if !behind {
            let stream = StreamRef::new(A::NAME, stream_id);
            (loaded, _) = self.fold_pages(stream, loaded, StreamRange::ALL).await?;
        }
        if behind || loaded.version < recorded {
            return Err(Error::CorruptStream {
                stream_type: A::NAME.to_owned(),
                stream_id: stream_id.to_owned(),
                problem: StreamCorruption::VersionMismatch {
                    recorded,
                    last: loaded.version,
                },
            });
        }
        Ok(loaded)
    }

    /// Appends, in one transaction with the inline projections when there are any.
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(
            name = "annals.append",
            skip(self, events, meta),
            fields(annals.stream_type = A::NAME, annals.events = events.len())
        )
    )]
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, AppendError> {
        match &self.inline {
            Some(inline) => (inline.append)(self, stream_id, expected, events, meta).await,
            None => Ok(self
                .store
                .append(StreamRef::new(A::NAME, stream_id), expected, events, meta)
                .await?),
        }
    }

    /// The events of the first execution of `command_id`, read back from this command's
    /// stream; refused when that execution was on another stream or, by its fingerprint,
    /// of another command.
    async fn replay_outcome(
        &self,
        stream_id: String,
        command_id: Uuid,
        first: &AppendOutcome,
        meta: &CommitMeta,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Error>> {
        // An empty append reports the stream's version as both first and last version, like
        // a one-event append does; only its position (0) tells them apart.
        let events = if first.last_position > 0 {
            let range = StreamRange::from(first.first_version).to(first.last_version);
            let stream = StreamRef::new(A::NAME, &stream_id);
            let recorded = self.store.read_stream(stream, range).await?;
            // The outcome does not say which stream it was on: the events tell.
            let expected = first.last_version.saturating_sub(first.first_version) + 1;
            let count = u64::try_from(recorded.len()).unwrap_or(u64::MAX);
            if count != expected
                || recorded
                    .iter()
                    .any(|e| e.meta.command_id != Some(command_id))
            {
                return Err(ExecuteError::CommandIdReused {
                    command_id,
                    stream_type: A::NAME.to_owned(),
                    stream_id,
                });
            }
            // Same stream: now whether it was the same command.
            first
                .clone()
                .repeated_by(StreamRef::new(A::NAME, &stream_id), meta)?;
            decode_all::<A::Event>(&recorded)?
        } else {
            first
                .clone()
                .repeated_by(StreamRef::new(A::NAME, &stream_id), meta)?;
            Vec::new()
        };
        Ok(Executed {
            stream_id,
            version: first.last_version,
            position: first.last_position,
            events,
            duplicate: true,
        })
    }

    async fn maybe_snapshot(
        &self,
        stream_id: &str,
        state: &A,
        before: u64,
        after: u64,
    ) -> Result<(), Error> {
        let every = A::SNAPSHOT_EVERY;
        if every == 0 || before / every == after / every {
            return Ok(());
        }
        let Some(encoded) = state.encode_snapshot() else {
            return Ok(());
        };
        let state = encoded.map_err(|reason| Error::EncodeSnapshot {
            stream_type: A::NAME.to_owned(),
            stream_id: stream_id.to_owned(),
            version: after,
            reason,
        })?;
        let snapshot = Snapshot::new(after, A::SNAPSHOT_VERSION, state);
        A::Snapshots::save(&self.store, StreamRef::new(A::NAME, stream_id), snapshot).await?;
        Ok(())
    }
}

fn fold<A: Aggregate>(
    mut loaded: Loaded<A>,
    stream_id: &str,
    events: &[StreamEvent],
) -> Result<Loaded<A>, Error> {
    for stored in events {
        let expected = loaded.version + 1;
        if stored.version != expected {
            return Err(Error::CorruptStream {
                stream_type: A::NAME.to_owned(),
                stream_id: stream_id.to_owned(),
                problem: StreamCorruption::VersionGap {
                    expected,
                    found: stored.version,
                },
            });
        }
        let event = A::Event::decode(&stored.event_type, stored.event_version, &stored.payload)
            .map_err(|reason| Error::Decode {
                stream_type: A::NAME.to_owned(),
                stream_id: stream_id.to_owned(),
                version: stored.version,
                position: stored.position,
                event_type: stored.event_type.clone(),
                event_version: stored.event_version,
                reason,
            })?;
        loaded.state.apply(&event);
        loaded.version = stored.version;
    }
    Ok(loaded)
}

/// Decodes one stored event, naming where it is stored on failure.
pub(crate) fn decode_one<E: Events>(recorded: &RecordedEvent) -> Result<E, Error> {
    E::decode(
        &recorded.meta.event_type,
        recorded.meta.event_version,
        &recorded.payload,
    )
    .map_err(|reason| Error::decode(&recorded.meta, reason))
}

fn decode_all<E: Events>(recorded: &[RecordedEvent]) -> Result<Vec<E>, Error> {
    recorded.iter().map(decode_one).collect()
}

/// Encodes events for appending.
pub(crate) fn encode_all<E: Events>(events: &[E]) -> Result<Vec<NewEvent>, Error> {
    events
        .iter()
        .map(|event| {
            let payload = event.encode().map_err(|reason| Error::Encode {
                event_type: event.event_type(),
                reason,
            })?;
            Ok(NewEvent::new(
                event.event_type(),
                event.event_version(),
                payload,
            ))
        })
        .collect()
}

enum AppendError {
    Store(StoreError),
    Projection(ProjectionError),
}

impl From<StoreError> for AppendError {
    fn from(e: StoreError) -> Self {
        AppendError::Store(e)
    }
}
