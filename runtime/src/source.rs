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

use crate::error::ProjectionError;
pub use crate::store::{Batch, Cursor};
#[cfg(feature = "dynamodb")]
pub use crate::store::{DynamoDbStreamSource, ShardCursor};
use crate::store::{EventFilter, EventLog, WakeUps};

/// Where a runner's events come from, read in batches from a cursor.
///
/// Implement it to feed projections and reactors from another system (a broker, a change
/// feed): decode each message into a [`RecordedEvent`](crate::store::RecordedEvent) (the stored type name, version and
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

    /// How far the source reaches now, in the same unit as [`Checkpoint::position`](crate::store::Checkpoint::position) (for
    /// status and lag).
    fn head(&self) -> impl Future<Output = Result<u64, ProjectionError>> + Send + '_;

    /// Waits until what the source had received when called can be read: a
    /// [`Runner::catch_up`](crate::Runner::catch_up) settles first, so that it processes
    /// everything committed before it was called. Nothing by default.
    fn settle(&mut self) -> impl Future<Output = Result<(), ProjectionError>> + Send + '_ {
        async { Ok(()) }
    }

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
    type Cursor = S::Cursor;

    async fn read<'a>(
        &'a mut self,
        after: &'a S::Cursor,
        limit: usize,
        filter: &'a EventFilter,
    ) -> Result<Batch<S::Cursor>, ProjectionError> {
        Ok(self.store.read_log(after, limit, filter).await?)
    }

    async fn head(&self) -> Result<u64, ProjectionError> {
        Ok(self.store.head().await?)
    }

    async fn settle(&mut self) -> Result<(), ProjectionError> {
        Ok(self.store.settle().await?)
    }
}

impl<S: WakeUps> LiveSource for LogSource<S> {
    async fn wait<'a>(
        &'a mut self,
        after: &'a S::Cursor,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        Ok(self.store.wait_for_events(after, timeout).await?)
    }
}
