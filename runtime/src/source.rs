//! Sources: where a [`Runner`](crate::Runner) takes its events from.
//!
//! A runner moves events from one source to one handler (a projection, a reactor, a
//! publisher) in batches, and stores the source's cursor as its checkpoint, in the
//! handler's store and in the same transaction as the handler's writes. The store's own
//! global log is one source ([`LogSource`]); a broker's durable consumer or a database's
//! change feed are others, and they plug into the same runner through [`Source`].

use std::any::Any;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use crate::error::{ProjectionError, StoreError};
pub use crate::store::{Batch, Cursor};
#[cfg(feature = "dynamodb")]
pub use crate::store::{DynamoDbStreamSource, ShardCursor};
use crate::store::{EventFilter, EventLog, RecordedEvent, WakeUps};

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

    /// How far the source reaches now, in the same unit as [`Checkpoint::position`](crate::store::Checkpoint::position) (for
    /// status and lag).
    fn head(&self) -> impl Future<Output = Result<u64, ProjectionError>> + Send + '_;

    /// Waits until what the source had received when called can be read: a
    /// [`Runner::catch_up`](crate::Runner::catch_up) settles first, so that it processes
    /// everything committed before it was called. Nothing by default.
    fn settle(&mut self) -> impl Future<Output = Result<(), ProjectionError>> + Send + '_ {
        async { Ok(()) }
    }

    /// Reads again an event this source handed over as
    /// [unreadable](crate::store::Batch::unreadable) and the runner parked, when it is
    /// retried ([`Runner::retry_parked`](crate::Runner::retry_parked)): the event as the
    /// source reads it now (a decoder deployed since, say), or why it still cannot.
    /// `None` for an event that is not such a placeholder of this source: it is retried as
    /// parked. `None` by default.
    fn reread(&self, parked: &RecordedEvent) -> Option<Result<RecordedEvent, String>> {
        let _ = parked;
        None
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
///
/// With [`LogSource::read_ahead`], each full batch it hands over starts the read of the
/// next one in the background, so that the read overlaps the handler's work on the batch
/// (a relay waiting for its broker's acknowledgements). The read-ahead batch is used only
/// when the runner asks for exactly that read next (same cursor, size and filter); it is
/// what a read at that moment returns, and a log read never skips an event that commits
/// later, so the events handed over are the same as without it.
pub struct LogSource<S> {
    store: S,
    read_ahead: bool,
    /// The read of the next batch under way: a [`ReadAhead`] of `S`'s cursor (kept as `Any`
    /// so the type needs no bound).
    ahead: Option<Box<dyn Any + Send + Sync>>,
}

/// A batch being read in the background, and what it was read for.
struct ReadAhead<C> {
    after: C,
    limit: usize,
    filter: EventFilter,
    read: tokio::task::JoinHandle<Result<Batch<C>, StoreError>>,
}

impl<C> Drop for ReadAhead<C> {
    fn drop(&mut self) {
        self.read.abort();
    }
}

impl<S: Clone> Clone for LogSource<S> {
    /// The same log; a read ahead under way is not shared.
    fn clone(&self) -> Self {
        LogSource {
            store: self.store.clone(),
            read_ahead: self.read_ahead,
            ahead: None,
        }
    }
}

impl<S: Debug> Debug for LogSource<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSource")
            .field("store", &self.store)
            .field("read_ahead", &self.read_ahead)
            .finish_non_exhaustive()
    }
}

impl<S: EventLog> LogSource<S> {
    /// The global log of `store`.
    pub fn new(store: S) -> Self {
        LogSource {
            store,
            read_ahead: false,
            ahead: None,
        }
    }

    /// Whether to read the next batch while the runner handles this one (see the type's
    /// docs); off by default. [`Runner::new`](crate::Runner::new) turns it on for handlers
    /// that ask for it ([`Projection::READ_AHEAD`](crate::Projection::READ_AHEAD)).
    #[must_use]
    pub fn read_ahead(mut self, on: bool) -> Self {
        self.read_ahead = on;
        self
    }

    /// The store read from.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The batch read ahead for this read, if there is one.
    async fn take_ahead(
        &mut self,
        after: &S::Cursor,
        limit: usize,
        filter: &EventFilter,
    ) -> Option<Result<Batch<S::Cursor>, StoreError>> {
        let ahead = self.ahead.take()?;
        let mut ahead = ahead.downcast::<ReadAhead<S::Cursor>>().ok()?;
        if ahead.after != *after || ahead.limit != limit || ahead.filter != *filter {
            return None;
        }
        match (&mut ahead.read).await {
            // Nothing new when it was read: read again now, the runner would stop there.
            Ok(Ok(batch)) if batch.events.is_empty() => None,
            Ok(batch) => Some(batch),
            // The read panicked or was cancelled: read again.
            Err(_) => None,
        }
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
        let batch = match self.take_ahead(after, limit, filter).await {
            Some(batch) => batch?,
            None => self.store.read_log(after, limit, filter).await?,
        };
        // Only after a full batch: a short one reached the head, and the next read waits
        // for new events anyway.
        if self.read_ahead && batch.events.len() >= limit {
            let (store, next, filter2) = (self.store.clone(), batch.end.clone(), filter.clone());
            let read = tokio::spawn(async move { store.read_log(&next, limit, &filter2).await });
            self.ahead = Some(Box::new(ReadAhead {
                after: batch.end.clone(),
                limit,
                filter: filter.clone(),
                read,
            }));
        }
        Ok(batch)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CommitMeta, EventStore, ExpectedVersion, MemoryStore, NewEvent, StreamRef};

    async fn append(store: &MemoryStore, n: usize) {
        for _ in 0..n {
            store
                .append(
                    StreamRef::new("a", "1"),
                    ExpectedVersion::Any,
                    vec![NewEvent::new("E", 1, "{}".to_owned())],
                    &CommitMeta::new(),
                )
                .await
                .unwrap();
        }
    }

    fn positions(batch: &Batch<u64>) -> Vec<u64> {
        batch.events.iter().map(|e| e.meta.position).collect()
    }

    #[tokio::test]
    async fn a_batch_read_ahead_is_the_read_that_follows_and_nothing_is_skipped() {
        let store = MemoryStore::new();
        append(&store, 6).await;
        let all = EventFilter::all();
        let mut source = LogSource::new(store.clone()).read_ahead(true);
        let first = source.read(&0, 3, &all).await.unwrap();
        assert_eq!(positions(&first), [1, 2, 3]);
        // Read ahead from 3 (a full batch); events appended meanwhile come in a later read.
        append(&store, 2).await;
        let second = source.read(&3, 3, &all).await.unwrap();
        assert_eq!(positions(&second), [4, 5, 6]);
        // Another read than the one read ahead (a smaller limit) reads afresh.
        let other = source.read(&6, 1, &all).await.unwrap();
        assert_eq!(positions(&other), [7]);
        let rest = source.read(&7, 3, &all).await.unwrap();
        assert_eq!(positions(&rest), [8]);
        // A short batch reads nothing ahead: the next read sees what came since.
        append(&store, 1).await;
        let last = source.read(&8, 3, &all).await.unwrap();
        assert_eq!(positions(&last), [9]);
        assert!(source.read(&9, 3, &all).await.unwrap().events.is_empty());
    }
}
