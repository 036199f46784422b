//! Sources: where a [`Runner`](crate::Runner) takes its events from.
//!
//! A runner moves events from one source to one handler (a projection, a reactor, a
//! publisher) in batches, and stores the source's cursor as its checkpoint, in the
//! handler's store and in the same transaction as the handler's writes. The store's own
//! global log is one source ([`LogSource`]); a broker's durable consumer or a database's
//! change feed are others, and they plug into the same runner through [`Source`].

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use crate::error::{ProjectionError, StoreError};
use crate::store::{Checkpoint, EventFilter, EventLog, RecordedEvent, WakeUps};

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

/// What [`Source::read`] returns: events in the source's order, and the cursor the source
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
}

impl<C> Batch<C> {
    /// A batch of `events` read through `end`.
    pub fn new(events: Vec<RecordedEvent>, end: C) -> Self {
        Batch { events, end }
    }
}

/// Where a runner's events come from, read in batches from a cursor.
///
/// Implement it to feed projections and reactors from another system (a broker, a change
/// feed): decode each message into a [`RecordedEvent`] (the stored type name, version and
/// JSON payload, and what metadata the message carries), so handlers decode it through
/// their `Events` enums and upcasters as usual.
pub trait Source: Send + 'static {
    /// The source's position.
    type Cursor: Cursor;

    /// Reads up to `limit` events after `after` that pass `filter`. Never returns an event
    /// while one before it may still arrive, so a runner following cursors skips nothing.
    fn read<'a>(
        &'a mut self,
        after: &'a Self::Cursor,
        limit: usize,
        filter: &'a EventFilter,
    ) -> impl Future<Output = Result<Batch<Self::Cursor>, ProjectionError>> + Send + 'a;

    /// How far the source reaches now, in the same unit as [`Checkpoint::position`] (for
    /// status and lag).
    fn head(&self) -> impl Future<Output = Result<u64, ProjectionError>> + Send + '_;

    /// Called once the checkpoint `through` has committed: a broker's consumer acknowledges
    /// its messages here. Nothing by default.
    fn committed<'a>(
        &'a mut self,
        through: &'a Self::Cursor,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send + 'a {
        let _ = through;
        async { Ok(()) }
    }
}

/// A source a live runner can wait on.
pub trait LiveSource: Source {
    /// Waits until events after `after` may be readable, or `timeout` passes.
    fn wait<'a>(
        &'a mut self,
        after: &'a Self::Cursor,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send + 'a;
}

/// The store's global log as a source: every stream's events in position order.
#[derive(Debug, Clone)]
pub struct LogSource<S> {
    store: S,
}

impl<S: EventLog> LogSource<S> {
    /// The global log of `store`.
    pub fn new(store: S) -> Self {
        LogSource { store }
    }

    /// The store read from.
    pub fn store(&self) -> &S {
        &self.store
    }
}

impl<S: EventLog> Source for LogSource<S> {
    type Cursor = u64;

    async fn read<'a>(
        &'a mut self,
        after: &'a u64,
        limit: usize,
        filter: &'a EventFilter,
    ) -> Result<Batch<u64>, ProjectionError> {
        let after = *after;
        // The head is read first: a read that comes back short has then returned every
        // matching event up to it, so the cursor can move past the events the filter
        // skipped and the lag reads true.
        let head = self.store.head().await?;
        let events = self.store.read_all(after, limit, filter).await?;
        let last = events.last().map_or(after, |e| e.meta.position);
        let end = if events.len() < limit {
            last.max(head)
        } else {
            last
        };
        Ok(Batch { events, end })
    }

    async fn head(&self) -> Result<u64, ProjectionError> {
        Ok(self.store.head().await?)
    }
}

impl<S: WakeUps> LiveSource for LogSource<S> {
    async fn wait<'a>(
        &'a mut self,
        after: &'a u64,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        Ok(self.store.wait_for_events(*after, timeout).await?)
    }
}
