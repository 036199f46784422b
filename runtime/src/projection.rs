//! Projections: read models kept up to date from the global event order, with a checkpoint
//! committed in the same transaction as the read model's writes.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::error::{BoxError, ProjectionError, StoreError};
use crate::retry::Backoff;
use crate::source::{Cursor, LiveSource, LogSource, Source};
use crate::store::{
    Checkpoint, CheckpointStore, EventFilter, EventLog, EventMeta, LeaseStore, ParkedEvent,
    ParkingStore, RecordedEvent, Resolution,
};

/// A read model fed by events, in position order.
///
/// Implemented by `#[projection(name = "..")]`. `Tx` is the transaction type the handlers
/// take: the store's own transaction for read models in the same database (exactly-once), or
/// any type for projections that keep their state elsewhere.
pub trait Projection<Tx>: Send + 'static {
    /// The projection's stable name (the checkpoint's key).
    const NAME: &'static str;

    /// The stored event types (names and aliases) the handlers take; the runner fetches only
    /// these.
    fn event_types() -> Vec<&'static str>;

    /// Which events the runner hands over: by default those of [`Self::event_types`]. A
    /// handler that takes every event (a publisher relaying the log) returns
    /// [`EventFilter::all`].
    fn event_filter() -> EventFilter {
        EventFilter::types(Self::event_types())
    }

    /// Whether a runner on the store's log ([`Runner::new`]) reads the next batch while
    /// this one is handled ([`LogSource::read_ahead`]): for handlers that spend their time
    /// waiting on something else, such as a relay waiting for its broker's
    /// acknowledgements. Off by default.
    const READ_AHEAD: bool = false;

    /// Feeds one event to its handler.
    fn handle<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        tx: &'a mut Tx,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send + 'a;

    /// Called with a batch's events before its transaction begins. A handler whose effects
    /// go through transactions of their own (a reactor's commands, executed by their
    /// repositories) does that work here, so that the runner's transaction, which may hold
    /// the store's one write lock, is not open meanwhile; [`Self::handle`] then writes what
    /// must commit with the checkpoint. An error here is the batch's error. Nothing by
    /// default.
    fn prepare<'a>(
        &'a mut self,
        events: &'a [RecordedEvent],
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send + 'a {
        let _ = events;
        async { Ok(()) }
    }

    /// Called when a turn finds no new events: work that comes due with time rather than
    /// with events (a process manager's deadlines) is done here, in transactions of its own.
    /// Returns how many pieces of work it did (the runner then takes another turn at once).
    /// Nothing by default.
    fn idle(&mut self) -> impl Future<Output = Result<u64, ProjectionError>> + Send + '_ {
        async { Ok(0) }
    }

    /// Called after the batch's events were handled, before the checkpoint moves in the
    /// same transaction: a handler that buffers work (a publisher waiting for its broker's
    /// acknowledgements) finishes it here. Nothing by default.
    fn finish_batch<'a>(
        &'a mut self,
        tx: &'a mut Tx,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send + 'a {
        let _ = tx;
        async { Ok(()) }
    }

    /// Empties the read model before a rebuild (`#[projection(reset = ..)]`).
    fn reset<'a>(
        &'a mut self,
        tx: &'a mut Tx,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send + 'a {
        let _ = tx;
        async { Ok(()) }
    }
}

/// Decodes an event for a projection handler, naming where it is stored on failure.
pub fn decode_for<E: crate::Event>(event: &RecordedEvent) -> Result<E, ProjectionError> {
    E::decode(event.meta.event_version, &event.payload)
        .map_err(|reason| ProjectionError::Decode(crate::Error::decode(&event.meta, reason)))
}

/// Wraps a handler's error with the event it failed on.
pub fn handler_error(
    projection: &'static str,
    meta: &EventMeta,
    source: impl Into<BoxError>,
) -> ProjectionError {
    ProjectionError::Handler {
        projection,
        event_type: meta.event_type.clone(),
        position: meta.position,
        source: source.into(),
    }
}

/// Where a projection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The last position the projection has processed (its checkpoint).
    pub position: u64,
    /// The store's readable head.
    pub head: u64,
}

impl Status {
    /// How many positions the projection is behind.
    pub fn lag(&self) -> u64 {
        self.head.saturating_sub(self.position)
    }
}

/// Progress reported during [`ProjectionRunner::rebuild`] and catch-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The position reached.
    pub position: u64,
    /// The head when the run started.
    pub head: u64,
    /// Events handled so far in this run.
    pub handled: u64,
}

/// How long [`ProjectionRunner::run`] waits before trying again after a transient error,
/// unless set with [`ProjectionRunner::retry_backoff`]: up to 100 ms before the first retry,
/// doubling each retry, never above 10 s.
pub const DEFAULT_RUN_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(10));

/// Called by [`Runner::run`] before it waits to retry: the error and the wait.
type OnRetry = Box<dyn FnMut(&ProjectionError, Duration) + Send + Sync>;

/// A [`Runner`] fed by its store's own global log: the usual way to keep a read model.
pub type ProjectionRunner<P, S, Src = LogSource<S>> = Runner<P, S, Src>;

/// What one batch did.
struct Advanced<C> {
    /// Events handled; `None` when there was nothing to do.
    handled: Option<u64>,
    /// The checkpoint's position after the batch.
    position: u64,
    /// The cursor after the batch.
    cursor: C,
}

/// Runs one handler (a projection, a reactor, a publisher) on the events of one
/// [`Source`]: catch-up in batches, then live, with the source's cursor as checkpoint.
///
/// `S` is the handler's store: it holds the checkpoint (moved in the same transaction as
/// the handler's writes) and the lease. `Src` is where the events come from: by default
/// the same store's global log ([`ProjectionRunner::new`]), or any other source
/// ([`Runner::with_source`]).
pub struct Runner<P, S, Src = LogSource<S>> {
    store: S,
    source: Src,
    projection: P,
    name: &'static str,
    batch_size: usize,
    idle_timeout: Duration,
    filter: EventFilter,
    backoff: Backoff,
    on_retry: Option<OnRetry>,
    parking: Option<Parking<S>>,
    /// Read at most this many events on the next turn: the events before a failing one,
    /// committed on their own before the failing one is tried alone.
    limit_once: Option<usize>,
}

/// Parks an event in a transaction of `S` handed over as `Any`; set by
/// [`Runner::park_after`], which knows `S: ParkingStore`, so the other methods need not.
type ParkFn<S> = for<'a> fn(
    &'a S,
    &'a mut (dyn Any + Send),
    &'a str,
    &'a RecordedEvent,
    &'a str,
    u32,
) -> Pin<Box<dyn Future<Output = Result<u64, StoreError>> + Send + 'a>>;

/// How a runner parks events its handler keeps failing on.
struct Parking<S> {
    attempts: u32,
    park: ParkFn<S>,
}

impl<S> Clone for Parking<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Parking<S> {}

fn park_in<'a, S: ParkingStore>(
    store: &'a S,
    tx: &'a mut (dyn Any + Send),
    runner: &'a str,
    event: &'a RecordedEvent,
    error: &'a str,
    attempts: u32,
) -> Pin<Box<dyn Future<Output = Result<u64, StoreError>> + Send + 'a>> {
    Box::pin(async move {
        let tx = tx
            .downcast_mut::<S::Tx>()
            .expect("the runner hands its store's own transaction");
        store.park(tx, runner, event, error, attempts).await
    })
}

/// The committed checkpoint of `name`, as a source's cursor. (Free functions rather than
/// methods: a future borrowing the whole runner would need the projection to be `Sync`.)
async fn load_cursor<S: CheckpointStore, C: Cursor>(
    store: &S,
    name: &str,
) -> Result<(Checkpoint, C), ProjectionError> {
    let stored = store.load_checkpoint(name).await?;
    let cursor = C::from_checkpoint(&stored)?;
    Ok((stored, cursor))
}

/// Moves checkpoint `name` from `stored` to `to` in `tx` and commits.
async fn commit_checkpoint<S: CheckpointStore>(
    store: &S,
    name: &'static str,
    mut tx: S::Tx,
    stored: &Checkpoint,
    to: &Checkpoint,
) -> Result<(), ProjectionError> {
    if !store.store_checkpoint(&mut tx, name, stored, to).await? {
        return Err(ProjectionError::Superseded {
            projection: name,
            expected: stored.position,
        });
    }
    store.commit(tx).await?;
    Ok(())
}

/// The error an event the source could not read fails with: not transient, so parking
/// takes it.
fn unreadable(reason: &str) -> ProjectionError {
    ProjectionError::Source {
        transient: false,
        source: reason.to_owned().into(),
    }
}

/// An error with its causes, as parking records it.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

impl<P, S> Runner<P, S, LogSource<S>>
where
    S: EventLog + CheckpointStore,
    P: Projection<S::Tx>,
{
    /// A runner on `store`'s global log, with batches of 500 events.
    pub fn new(store: S, projection: P) -> Self {
        let source = LogSource::new(store.clone()).read_ahead(P::READ_AHEAD);
        Runner::with_source(store, source, projection)
    }
}

impl<P, S, Src> Runner<P, S, Src>
where
    S: CheckpointStore,
    Src: Source,
    P: Projection<S::Tx>,
{
    /// A runner moving `source`'s events into `projection`, keeping its checkpoint (the
    /// source's cursor) and lease in `store`; batches of 500 events.
    pub fn with_source(store: S, source: Src, projection: P) -> Self {
        Runner {
            store,
            source,
            projection,
            name: P::NAME,
            batch_size: 500,
            idle_timeout: Duration::from_secs(1),
            filter: P::event_filter(),
            backoff: DEFAULT_RUN_BACKOFF,
            on_retry: None,
            parking: None,
            limit_once: None,
        }
    }

    /// Parks an event the handler keeps failing on instead of stopping: after `attempts`
    /// tries (at least 1; a wait of [`Self::retry_backoff`] between them), the event is set
    /// aside with its error ([`ParkingStore`]) in the transaction that moves the checkpoint
    /// past it, and the runner carries on with the next one. The events before it in its
    /// batch commit first, on their own.
    ///
    /// Only errors that retrying now cannot fix park an event: a handler's error or an event
    /// that does not decode. Transient ones ([`ProjectionError::is_transient`]) are retried
    /// by [`Self::run`] as without parking, and an error of the store itself stops as
    /// before. Parked events are listed with [`Self::parked`] and leave the parking through
    /// [`Self::retry_parked`] (handled then, after the events that came later) or
    /// [`Self::skip_parked`]. Without this option a failing event stops the runner, with
    /// the checkpoint before it.
    #[must_use]
    pub fn park_after(mut self, attempts: u32) -> Self
    where
        S: ParkingStore,
    {
        self.parking = Some(Parking {
            attempts: attempts.max(1),
            park: park_in::<S>,
        });
        self
    }

    /// The events this runner parked and that are still parked, oldest first.
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>, ProjectionError>
    where
        S: ParkingStore,
    {
        Ok(self.store.parked(Some(self.name), false).await?)
    }

    /// Hands parked event `id` to the handler again; on success the event leaves the
    /// parking in the handler's transaction. On failure it stays parked with the new error
    /// and one more attempt, and the error is returned.
    ///
    /// An event the source could not read (a broker message that made no event) is read
    /// again first ([`Source::reread`]): once it reads (a decoder deployed since), the
    /// handler gets the event; while it still cannot, the handler gets nothing, the error
    /// says so (`still unreadable`) and the event stays parked.
    pub async fn retry_parked(&mut self, id: u64) -> Result<(), ProjectionError>
    where
        S: ParkingStore,
    {
        let entry = self
            .store
            .parked(Some(self.name), false)
            .await?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or(ProjectionError::NotParked {
                runner: self.name,
                id,
            })?;
        // An event its source could not read is read again from what the source kept.
        let reread = match self.source.reread(&entry.event) {
            None => None,
            Some(Ok(event)) => Some(event),
            Some(Err(reason)) => {
                let error = ProjectionError::Source {
                    transient: false,
                    source: format!("parked event {id} is still unreadable: {reason}").into(),
                };
                self.store
                    .update_parked(id, &error_chain(&error), entry.attempts.saturating_add(1))
                    .await?;
                return Err(error);
            }
        };
        let event = reread.as_ref().unwrap_or(&entry.event);
        // Read now as an event of a type the handler does not take: nothing to hand over,
        // as when the runner reads past such an event.
        let takes = reread.is_none() || self.filter.matches(&event.meta.event_type);
        let prepared = if takes {
            self.projection.prepare(std::slice::from_ref(event)).await
        } else {
            Ok(())
        };
        let mut tx = self.store.begin().await?;
        let handled = match prepared {
            Ok(()) if takes => self.projection.handle(event, &mut tx).await,
            Ok(()) => Ok(()),
            Err(error) => Err(error),
        };
        let handled = match handled {
            Ok(()) => self.projection.finish_batch(&mut tx).await,
            Err(error) => Err(error),
        };
        if let Err(error) = handled {
            drop(tx);
            self.store
                .update_parked(id, &error_chain(&error), entry.attempts.saturating_add(1))
                .await?;
            return Err(error);
        }
        if !self
            .store
            .resolve_parked(&mut tx, id, Resolution::Retried)
            .await?
        {
            return Err(ProjectionError::NotParked {
                runner: self.name,
                id,
            });
        }
        self.store.commit(tx).await?;
        Ok(())
    }

    /// Takes parked event `id` out of the parking without handling it (an operator's
    /// decision; the entry stays listed as skipped with `parked(.., true)`).
    pub async fn skip_parked(&mut self, id: u64) -> Result<(), ProjectionError>
    where
        S: ParkingStore,
    {
        let mut tx = self.store.begin().await?;
        if !self
            .store
            .resolve_parked(&mut tx, id, Resolution::Skipped)
            .await?
        {
            return Err(ProjectionError::NotParked {
                runner: self.name,
                id,
            });
        }
        self.store.commit(tx).await?;
        Ok(())
    }

    /// Runs under another name than the projection's `NAME`: the name keys the checkpoint
    /// and the lease, so one handler type can follow several sources (one per shard, one
    /// per tenant) with a checkpoint each.
    #[must_use]
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The name the checkpoint and lease are kept under.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Which events the handler is given (by default the projection's
    /// [`Projection::event_filter`]): a publisher relaying only some types sets them here.
    #[must_use]
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Events per transaction (at least 1).
    #[must_use]
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// How long the live loop waits for a wake-up before polling anyway.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long [`Self::run`] waits before trying again after a transient error (default
    /// [`DEFAULT_RUN_BACKOFF`]): a random time up to a ceiling that doubles with each
    /// failure in a row and starts over once a turn (a batch, a wait for events, a try for
    /// the lease) goes through.
    #[must_use]
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Calls `report` with each transient error [`Self::run`] recovers from and the time it
    /// waits before trying again: to log or count outages, which `run` otherwise rides out
    /// silently.
    #[must_use]
    pub fn on_retry(
        mut self,
        report: impl FnMut(&ProjectionError, Duration) + Send + Sync + 'static,
    ) -> Self {
        self.on_retry = Some(Box::new(report));
        self
    }

    /// The projection (its in-memory state, if it keeps any).
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The projection, to change its state between runs.
    pub fn projection_mut(&mut self) -> &mut P {
        &mut self.projection
    }

    /// Gives the projection back.
    pub fn into_projection(self) -> P {
        self.projection
    }

    /// The source.
    pub fn source(&self) -> &Src {
        &self.source
    }

    /// The checkpoint and the head.
    pub async fn status(&self) -> Result<Status, ProjectionError> {
        Ok(Status {
            position: self.store.checkpoint(self.name).await?,
            head: self.source.head().await?,
        })
    }

    /// Processes one batch; returns `None` when there was nothing to do, else how many
    /// events it handled (possibly 0 when it only moved past events the filter skips).
    pub async fn step(&mut self) -> Result<Option<u64>, ProjectionError> {
        Ok(self.advance().await?.handled)
    }

    /// [`Self::step`], also returning the checkpoint's position it left, so callers need
    /// not read it back.
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(
            name = "annals.projection.batch",
            skip(self),
            fields(
                annals.projection = self.name,
                annals.from,
                annals.to,
                annals.events,
                annals.lag,
            ),
            err(Display)
        )
    )]
    async fn advance(&mut self) -> Result<Advanced<Src::Cursor>, ProjectionError> {
        let (stored, from) = load_cursor::<S, Src::Cursor>(&self.store, self.name).await?;
        let limit = self.limit_once.take().unwrap_or(self.batch_size);
        let batch = self.source.read(&from, limit, &self.filter).await?;
        let to = batch.end.to_checkpoint();
        #[cfg(feature = "tracing")]
        {
            let head = self.source.head().await.unwrap_or(to.position);
            tracing::Span::current()
                .record("annals.from", stored.position)
                .record("annals.to", to.position)
                .record("annals.events", batch.events.len())
                .record("annals.lag", head.saturating_sub(to.position));
        }
        if batch.events.is_empty() && batch.end == from {
            let done = self.projection.idle().await?;
            return Ok(Advanced {
                handled: (done > 0).then_some(0),
                position: stored.position,
                cursor: from,
            });
        }
        self.projection.prepare(&batch.events).await?;
        let mut tx = self.store.begin().await?;
        for (index, event) in batch.events.iter().enumerate() {
            let handled = match batch.unreadable(index) {
                Some(reason) => Err(unreadable(reason)),
                None => self.projection.handle(event, &mut tx).await,
            };
            if let Err(error) = handled {
                drop(tx);
                return self.failed(stored, from, index, error).await;
            }
        }
        self.projection.finish_batch(&mut tx).await?;
        commit_checkpoint(&self.store, self.name, tx, &stored, &to).await?;
        self.source.committed(&batch.end).await?;
        Ok(Advanced {
            handled: Some(batch.events.len() as u64),
            position: to.position,
            cursor: batch.end,
        })
    }

    /// The handler failed on the batch's event at `index` (the batch rolled back): without
    /// parking, or for an error retrying may fix, that is the batch's error. With parking,
    /// the events before it are committed first (next turn), then it is tried alone and
    /// parked if it keeps failing.
    async fn failed(
        &mut self,
        stored: Checkpoint,
        from: Src::Cursor,
        index: usize,
        error: ProjectionError,
    ) -> Result<Advanced<Src::Cursor>, ProjectionError> {
        let Some(parking) = self.parking else {
            return Err(error);
        };
        if error.is_transient() || matches!(error, ProjectionError::Store(_)) {
            return Err(error);
        }
        if index > 0 {
            self.limit_once = Some(index);
            return Ok(Advanced {
                handled: Some(0),
                position: stored.position,
                cursor: from,
            });
        }
        let single = self.source.read(&from, 1, &self.filter).await?;
        let Some(event) = single.events.first() else {
            return Err(error);
        };
        let to = single.end.to_checkpoint();
        let mut last = error;
        for failures in 1..parking.attempts {
            tokio::time::sleep(self.backoff.delay(failures - 1)).await;
            let prepared = self.projection.prepare(std::slice::from_ref(event)).await;
            let mut tx = self.store.begin().await?;
            let handled = match (single.unreadable(0), prepared) {
                (Some(reason), _) => Err(unreadable(reason)),
                (None, Err(error)) => Err(error),
                (None, Ok(())) => match self.projection.handle(event, &mut tx).await {
                    Ok(()) => self.projection.finish_batch(&mut tx).await,
                    Err(error) => Err(error),
                },
            };
            match handled {
                Ok(()) => {
                    commit_checkpoint(&self.store, self.name, tx, &stored, &to).await?;
                    self.source.committed(&single.end).await?;
                    return Ok(Advanced {
                        handled: Some(1),
                        position: to.position,
                        cursor: single.end,
                    });
                }
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => last = error,
            }
        }
        let reason = error_chain(&last);
        let mut tx = self.store.begin().await?;
        let id = (parking.park)(
            &self.store,
            &mut tx,
            self.name,
            event,
            &reason,
            parking.attempts,
        )
        .await?;
        commit_checkpoint(&self.store, self.name, tx, &stored, &to).await?;
        self.source.committed(&single.end).await?;
        #[cfg(feature = "tracing")]
        tracing::warn!(
            annals.projection = self.name,
            annals.parked = id,
            annals.position = event.meta.position,
            annals.event_type = %event.meta.event_type,
            error = %reason,
            "annals event parked"
        );
        let _ = id;
        Ok(Advanced {
            handled: Some(0),
            position: to.position,
            cursor: single.end,
        })
    }

    /// Processes every event committed before the call (and any that are readable by the
    /// time it gets there), then returns: for cron jobs, serverless triggers and tests.
    pub async fn catch_up(&mut self) -> Result<Progress, ProjectionError> {
        self.catch_up_with(|_| {}).await
    }

    /// [`Self::catch_up`], reporting progress after each batch.
    pub async fn catch_up_with(
        &mut self,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, ProjectionError> {
        self.source.settle().await?;
        let head = self.source.head().await?;
        let mut handled = 0;
        loop {
            let step = self.advance().await?;
            handled += step.handled.unwrap_or(0);
            let report = Progress {
                position: step.position,
                head,
                handled,
            };
            if step.handled.is_none() {
                return Ok(report);
            }
            progress(report);
        }
    }

    /// Empties the read model (the projection's reset hook) and sets the checkpoint back
    /// to the start of the source, in one transaction, without replaying: the next run
    /// replays. Returns the position the checkpoint had.
    pub async fn reset(&mut self) -> Result<u64, ProjectionError> {
        let (stored, _) = load_cursor::<S, Src::Cursor>(&self.store, self.name).await?;
        let mut tx = self.store.begin().await?;
        self.projection.reset(&mut tx).await?;
        let start = Src::Cursor::default().to_checkpoint();
        commit_checkpoint(&self.store, self.name, tx, &stored, &start).await?;
        Ok(stored.position)
    }

    /// Empties the read model (the projection's reset hook), resets the checkpoint and
    /// replays every event, reporting progress.
    pub async fn rebuild(
        &mut self,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, ProjectionError> {
        self.reset().await?;
        self.catch_up_with(progress).await
    }

    /// Catches up, then follows new events until `shutdown` completes. With several runners
    /// of one name on one database, only the one holding the lease works; the others wait
    /// and take over when it goes away.
    ///
    /// Outages are ridden out: a transient error ([`ProjectionError::is_transient`]: the
    /// database or the source unreachable, a connection dropped or terminated, a
    /// serialization failure, also when a handler returns it) rolls the batch back, and the
    /// runner waits ([`Self::retry_backoff`]), checks its lease (taking one again if the
    /// lease's connection died) and carries on from the checkpoint, as often and as long as
    /// it takes. Returns `Err` only for what retrying cannot fix: a handler error that is
    /// not transient, an event that cannot be decoded, or a store error that is not
    /// transient (a corrupt row, a missing table, refused SQL). The checkpoint then stays
    /// before the failing batch, so a new `run` starts there.
    pub async fn run(
        &mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProjectionError>
    where
        S: LeaseStore,
        Src: LiveSource,
    {
        let mut shutdown = std::pin::pin!(shutdown);
        let work = async {
            let mut lease = None;
            let mut failures = 0;
            loop {
                match self.run_once(&mut lease).await {
                    Ok(()) => failures = 0,
                    Err(error) if error.is_transient() => {
                        let delay = self.backoff.delay(failures);
                        failures = failures.saturating_add(1);
                        if let Some(report) = &mut self.on_retry {
                            report(&error, delay);
                        }
                        tokio::time::sleep(delay).await;
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        tokio::select! {
            result = work => result,
            () = &mut shutdown => Ok(()),
        }
    }

    /// One turn of [`Self::run`]: without a lease, tries to take it (or waits an idle
    /// timeout); with one, checks it still holds, then handles a batch or waits for events.
    async fn run_once(&mut self, lease: &mut Option<S::Lease>) -> Result<(), ProjectionError>
    where
        S: LeaseStore,
        Src: LiveSource,
    {
        let Some(held) = lease else {
            *lease = self.store.try_lease(self.name).await?;
            if lease.is_none() {
                tokio::time::sleep(self.idle_timeout).await;
            } else {
                #[cfg(feature = "tracing")]
                tracing::info!(annals.projection = self.name, "annals lease taken");
            }
            return Ok(());
        };
        // A lost lease may already be another runner's: stop before the next batch.
        if !self.store.lease_alive(held).await? {
            *lease = None;
            #[cfg(feature = "tracing")]
            tracing::warn!(annals.projection = self.name, "annals lease lost");
            return Ok(());
        }
        match self.advance().await {
            Ok(Advanced {
                handled: None,
                cursor,
                ..
            }) => self.source.wait(&cursor, self.idle_timeout).await,
            Ok(_) => Ok(()),
            // Moved by a runner that had not yet noticed losing its lease; the batch was
            // rolled back, so read on from the new checkpoint.
            Err(ProjectionError::Superseded { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Whether a stored type name is `E`'s name or one of its aliases.
#[doc(hidden)]
pub fn event_is<E: crate::Event>(event_type: &str) -> bool {
    event_type == E::NAME || E::ALIASES.contains(&event_type)
}

/// An `#[on]` handler's event type, with the fix in the message; a `#[derive(Event)]` struct
/// whose `Event` impl does not hold is reported at the struct instead.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event: derive `Event` on it, or make this `#[on]` handler take an event struct",
    label = "not an event",
    note = "a projection's `#[on]` handlers take `&E` where `E` is a `#[derive(Event)]` struct"
)]
pub trait ProjectedEvent {}

impl<T: crate::event::DeclaredEvent + ?Sized> ProjectedEvent for T {}

/// Checks at compile time that `T` derives `Event`.
#[doc(hidden)]
pub const fn assert_projected_event<T: ProjectedEvent + ?Sized>() {}

/// What a projection method may return: nothing, or a `Result<(), E>` whose error converts
/// into a boxed error.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a projection method must return `()` or `Result<(), E>` with `E: Into<Box<dyn Error + Send + Sync>>`",
    label = "found `{Self}`"
)]
pub trait ProjectionOutcome {
    /// The method's outcome.
    fn into_outcome(self) -> Result<(), BoxError>;
}

impl ProjectionOutcome for () {
    fn into_outcome(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> ProjectionOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}
