//! Loading aggregates and executing commands against a store.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::aggregate::{Aggregate, Command, Handle, StreamPolicy};
use crate::error::{Error, ExecuteError, StoreError};
use crate::event::Events;
use crate::projection::{CheckpointStore, Projection, ProjectionError};
use crate::store::{
    validate_stream, AppendOutcome, CommitMeta, EventStore, ExpectedVersion, NewEvent,
    RecordedEvent, Snapshot, SnapshotStore, StreamEvent, StreamRange,
};

/// How many times [`Repository::execute`] handles a command before reporting a conflict.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// An aggregate rebuilt from its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The version of the last event applied; 0 when the stream does not exist.
    pub version: u64,
}

/// The result of a command that was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed<E> {
    /// The stream id the events went to.
    pub stream_id: String,
    /// The stream's version after the command.
    pub version: u64,
    /// The events the command produced.
    pub events: Vec<E>,
    /// True when the command id had been executed before: these are the first execution's
    /// events, and nothing new was appended.
    pub duplicate: bool,
}

/// Loads aggregates of type `A` from store `S` and executes their commands.
///
/// ```no_run
/// # async fn demo<A: annals::Aggregate<Services = ()>>() -> Result<(), Box<dyn std::error::Error>> {
/// let store = annals::SqliteStore::open("bank.db").await?;
/// let accounts = annals::Repository::<A, _>::new(store);
/// # Ok(()) }
/// ```
pub struct Repository<A: Aggregate, S: CheckpointStore> {
    store: S,
    services: Arc<A::Services>,
    max_attempts: u32,
    inline: Vec<Arc<dyn InlineProjection<S>>>,
}

impl<A: Aggregate, S: CheckpointStore> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            services: Arc::clone(&self.services),
            max_attempts: self.max_attempts,
            inline: self.inline.clone(),
        }
    }
}

/// A projection run inside the append transaction (see [`Repository::with_inline`]).
trait InlineProjection<S: CheckpointStore>: Send + Sync {
    fn apply<'a>(
        &'a self,
        tx: &'a mut S::Tx,
        events: &'a [RecordedEvent],
    ) -> Pin<Box<dyn Future<Output = Result<(), ProjectionError>> + Send + 'a>>;
}

impl<S, P> InlineProjection<S> for tokio::sync::Mutex<P>
where
    S: CheckpointStore,
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
    S: EventStore + SnapshotStore + CheckpointStore,
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
            inline: Vec::new(),
        }
    }

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
        self.inline.push(projection);
        self
    }

    /// How many times a command is handled when concurrent writers cause version conflicts
    /// (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
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
    /// default state at version 0.
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
        validate_stream(A::NAME, &stream_id)?;
        let range = StreamRange {
            from: 1,
            to: None,
            until: Some(at),
        };
        let events = self.store.load_stream(A::NAME, &stream_id, range).await?;
        let loaded = Loaded {
            state: A::default(),
            version: 0,
        };
        fold(loaded, &stream_id, &events)
    }

    async fn load_stream(&self, stream_id: &str, to: Option<u64>) -> Result<Loaded<A>, Error> {
        validate_stream(A::NAME, stream_id)?;
        let mut loaded = Loaded {
            state: A::default(),
            version: 0,
        };
        if A::SNAPSHOT_EVERY > 0 {
            if let Some(snapshot) = self.store.load_snapshot(A::NAME, stream_id, to).await? {
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
        let range = StreamRange {
            from: loaded.version + 1,
            to,
            until: None,
        };
        let events = self.store.load_stream(A::NAME, stream_id, range).await?;
        fold(loaded, stream_id, &events)
    }

    /// Executes a command: load, handle, append with the loaded version as the expected
    /// version. On a version conflict, reloads and handles again, up to the configured number
    /// of attempts, then returns [`ExecuteError::Conflict`].
    pub async fn execute<C>(&self, command: C) -> Result<Executed<A::Event>, ExecuteError<A::Error>>
    where
        C: Command<Aggregate = A>,
        A: Handle<C>,
    {
        self.execute_with(command, CommitMeta::default()).await
    }

    /// Executes a command with metadata: a command id (a second execution with the same id
    /// appends nothing and returns the first one's events), correlation and causation ids and
    /// headers stored with every event.
    pub async fn execute_with<C>(
        &self,
        command: C,
        meta: CommitMeta,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Error>>
    where
        C: Command<Aggregate = A>,
        A: Handle<C>,
    {
        let stream_id = command.aggregate_id().to_string();
        validate_stream(A::NAME, &stream_id)?;
        if let Some(command_id) = meta.command_id {
            if let Some(first) = self.store.command_outcome(command_id).await? {
                return self.replay_outcome(stream_id, command_id, &first).await;
            }
        }
        let policy = A::policy(&command);
        for attempt in 1..=self.max_attempts {
            let Loaded { mut state, version } = self.load_stream(&stream_id, None).await?;
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
            let events = state
                .handle(command.clone(), &self.services)
                .await
                .map_err(ExecuteError::Rejected)?;
            if events.is_empty() && meta.command_id.is_none() {
                return Ok(Executed {
                    stream_id,
                    version,
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
                    return self.replay_outcome(stream_id, command_id, &outcome).await;
                }
                Ok(outcome) => {
                    for event in &events {
                        state.apply(event);
                    }
                    self.maybe_snapshot(&stream_id, &state, version, outcome.last_version)
                        .await?;
                    return Ok(Executed {
                        stream_id,
                        version: outcome.last_version,
                        events,
                        duplicate: false,
                    });
                }
                Err(AppendError::Store(StoreError::WrongExpectedVersion { .. }))
                    if attempt < self.max_attempts =>
                {
                    tokio::task::yield_now().await;
                }
                Err(AppendError::Store(StoreError::WrongExpectedVersion { .. })) => break,
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

    /// Appends, in one transaction with the inline projections when there are any.
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, AppendError> {
        if self.inline.is_empty() {
            return Ok(self
                .store
                .append(A::NAME, stream_id, expected, events, meta)
                .await?);
        }
        let mut tx = self.store.begin().await?;
        let (outcome, recorded) = self
            .store
            .append_in(&mut tx, A::NAME, stream_id, expected, events, meta)
            .await?;
        for projection in &self.inline {
            projection
                .apply(&mut tx, &recorded)
                .await
                .map_err(AppendError::Projection)?;
        }
        self.store.commit(tx).await?;
        Ok(outcome)
    }

    /// The events of the first execution of `command_id`, read back from this command's
    /// stream.
    async fn replay_outcome(
        &self,
        stream_id: String,
        command_id: Uuid,
        first: &AppendOutcome,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Error>> {
        // An empty append reports the stream's version as both first and last version, like
        // a one-event append does; only its position (0) tells them apart.
        let events = if first.last_position > 0 {
            let range = StreamRange {
                from: first.first_version,
                to: Some(first.last_version),
                until: None,
            };
            let recorded = self.store.read_stream(A::NAME, &stream_id, range).await?;
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
            decode_all::<A::Event>(&recorded)?
        } else {
            Vec::new()
        };
        Ok(Executed {
            stream_id,
            version: first.last_version,
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
        let state = encoded.map_err(|reason| Error::Encode {
            event_type: A::NAME,
            reason,
        })?;
        let snapshot = Snapshot {
            version: after,
            snapshot_version: A::SNAPSHOT_VERSION,
            state,
        };
        self.store
            .save_snapshot(A::NAME, stream_id, snapshot)
            .await?;
        Ok(())
    }
}

fn fold<A: Aggregate>(
    mut loaded: Loaded<A>,
    stream_id: &str,
    events: &[StreamEvent],
) -> Result<Loaded<A>, Error> {
    for stored in events {
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
pub fn decode_one<E: Events>(recorded: &RecordedEvent) -> Result<E, Error> {
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
pub fn encode_all<E: Events>(events: &[E]) -> Result<Vec<NewEvent>, Error> {
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
