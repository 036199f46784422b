//! The storage contract: one trait per capability a backend may have.
//!
//! | trait | what it offers | who needs it |
//! |---|---|---|
//! | [`EventStore`] | append to and read streams, command outcomes | [`Repository`](crate::Repository) |
//! | [`SnapshotStore`] | aggregate snapshots | a repository whose aggregate declares `snapshot(..)` |
//! | [`EventLog`] | the global order (`read_all`, `head`) | projection runners |
//! | [`TxStore`] | transactions, appends inside one | inline projections, exactly-once read models |
//! | [`CheckpointStore`] | checkpoints moved inside a transaction | projection runners |
//! | [`ParkingStore`] | events set aside after failing | runners with [`Runner::park_after`](crate::Runner::park_after) |
//! | [`ProcessStore`] | process managers' state and deadlines | [`Processes`](crate::workflow::Processes) |
//! | [`LeaseStore`] | one active runner per name | [`ProjectionRunner::run`](crate::ProjectionRunner::run) |
//! | [`WakeUps`] | waiting for new events | [`ProjectionRunner::run`](crate::ProjectionRunner::run) |
//! | [`StreamCatalog`](super::StreamCatalog) | listing streams, a page at a time | operators' tools (the admin CLI) |
//!
//! [`MemoryStore`](crate::MemoryStore), `SqliteStore` and `PgStore` implement them all. A
//! backend without interactive transactions or a global order implements the first two and
//! still runs every command.

use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AppendOutcome, Batch, Checkpoint, CommitMeta, Cursor, Deadline, EventFilter, ExpectedVersion,
    NewEvent, ParkedEvent, ProcessState, RecordedEvent, Resolution, Snapshot, StreamEvent,
    StreamRange, StreamRef,
};
use crate::error::StoreError;

/// Streams of events: append with an expected version, read back in version order.
///
/// All a [`Repository`](crate::Repository) needs. Every store passes the same conformance
/// suite (`tests/`).
pub trait EventStore: Clone + Send + Sync + 'static {
    /// Appends `events` to `stream` if its version matches `expected`, atomically.
    ///
    /// When `meta.command_id` was already appended, appends nothing and returns the first
    /// append's outcome with `duplicate: true`.
    fn append(
        &self,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send;

    /// Reads a stream's events in version order.
    fn read_stream(
        &self,
        stream: StreamRef<'_>,
        range: StreamRange,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Reads a stream like [`EventStore::read_stream`], with only what rebuilding an
    /// aggregate needs: the repository's load path, so stores skip the metadata columns.
    fn load_stream(
        &self,
        stream: StreamRef<'_>,
        range: StreamRange,
    ) -> impl Future<Output = Result<Vec<StreamEvent>, StoreError>> + Send {
        load_through_read_stream(self, stream, range)
    }

    /// The current version of a stream, `None` if it does not exist.
    fn stream_version(
        &self,
        stream: StreamRef<'_>,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

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
        stream: StreamRef<'_>,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest snapshot of a stream at or below `max_version` (`None`: any version).
    fn load_snapshot(
        &self,
        stream: StreamRef<'_>,
        max_version: Option<u64>,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;
}

/// The global order of every stream's events: what runners pull from.
///
/// Readers follow it with a [`Cursor`] ([`EventLog::read_log`]). Where positions are
/// handed out in commit order (memory, SQLite) the cursor is the position; where commits
/// land out of position order (PostgreSQL: concurrent writers), it is what the store needs
/// to never skip an event that commits late.
pub trait EventLog: Clone + Send + Sync + 'static {
    /// Where a reader of the log stands.
    type Cursor: Cursor;

    /// Reads up to `limit` events after `after` that pass `filter`, in the log's order, and
    /// the cursor read through. Never returns an event while one that comes before it in
    /// that order may still commit, so a reader following cursors skips nothing; within a
    /// stream the order is the version order.
    fn read_log<'a>(
        &'a self,
        after: &'a Self::Cursor,
        limit: usize,
        filter: &'a EventFilter,
    ) -> impl Future<Output = Result<Batch<Self::Cursor>, StoreError>> + Send + 'a;

    /// Reads up to `limit` committed events with position greater than `after`, in
    /// position order, passing `filter`: for tools and exports. On a store whose cursor is
    /// the position this is [`EventLog::read_log`]; elsewhere an event may still commit
    /// later at a lower position than one returned, so followers use `read_log`.
    fn read_all(
        &self,
        after: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// The highest position committed now (for status and lag).
    fn head(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Waits until every event committed before the call can be read by
    /// [`EventLog::read_log`]. Immediate where commits are readable at once (memory,
    /// SQLite); on PostgreSQL, until the transactions open at the call have ended (an event
    /// committed behind an older open transaction becomes readable when that one ends).
    fn settle(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }
}

/// [`EventLog::read_log`] for a store whose positions follow commit order: the cursor is
/// the position. The head is read first: a read that comes back short has then returned
/// every matching event up to it, so the cursor moves past the events the filter skipped.
pub(crate) async fn read_log_by_position<S: EventLog>(
    store: &S,
    after: u64,
    limit: usize,
    filter: &EventFilter,
) -> Result<Batch<u64>, StoreError> {
    let head = store.head().await?;
    let events = store.read_all(after, limit, filter).await?;
    let last = events.last().map_or(after, |e| e.meta.position);
    let end = if events.len() < limit {
        last.max(head)
    } else {
        last
    };
    Ok(Batch::new(events, end))
}

/// Transactions that read models are written in, and appends inside them.
pub trait TxStore: EventStore {
    /// The transaction handlers write in.
    type Tx: Send + 'static;

    /// Starts a transaction.
    fn begin(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;

    /// Commits a transaction. Dropping one uncommitted rolls it back.
    fn commit(&self, tx: Self::Tx) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends like [`EventStore::append`], inside `tx`: the events commit with it, and are
    /// returned as stored (positions, times) for inline projections to handle in the same
    /// transaction. A duplicate command id returns the first outcome and no events. An
    /// error leaves `tx` usable.
    fn append_in<'a>(
        &'a self,
        tx: &'a mut Self::Tx,
        stream: StreamRef<'a>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &'a CommitMeta,
    ) -> impl Future<Output = Result<(AppendOutcome, Vec<RecordedEvent>), StoreError>> + Send + 'a;
}

/// Checkpoints of named runners, moved in the same transaction as their writes.
///
/// A checkpoint is the runner's source's own cursor ([`Checkpoint`]): a global position for
/// the store's log, a stream sequence for a broker, a shard sequence for a change feed.
/// Backends implement [`CheckpointStore::load_checkpoint`] and
/// [`CheckpointStore::store_checkpoint`]; the position-only methods are built on them.
pub trait CheckpointStore: TxStore {
    /// The committed checkpoint of `name` ([`Checkpoint::default`], position 0 and no cursor,
    /// if it never ran).
    fn load_checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Checkpoint, StoreError>> + Send;

    /// Moves a checkpoint from `expected` to `checkpoint` inside `tx`; returns false (and
    /// changes nothing) when the stored checkpoint is not `expected` (position and cursor
    /// both compared; a missing one reads as the default).
    fn store_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Tx,
        name: &'a str,
        expected: &'a Checkpoint,
        checkpoint: &'a Checkpoint,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'a;

    /// The committed checkpoint's position (0 if it never ran).
    fn checkpoint(&self, name: &str) -> impl Future<Output = Result<u64, StoreError>> + Send {
        async move { Ok(self.load_checkpoint(name).await?.position) }
    }

    /// Whether runner `name`'s committed checkpoint has passed the event at `position` of
    /// this store's log (read-your-writes). By default, whether its position is at or past
    /// `position`; a store whose log order is not the position order decides by its cursor.
    fn checkpoint_reached<'a>(
        &'a self,
        name: &'a str,
        position: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'a {
        async move { Ok(self.checkpoint(name).await? >= position) }
    }

    /// Moves a position-only checkpoint from `expected` to `position` inside `tx`; returns
    /// false (and changes nothing) when the stored checkpoint is not `expected`.
    fn advance_checkpoint<'a>(
        &'a self,
        tx: &'a mut Self::Tx,
        name: &'a str,
        expected: u64,
        position: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'a {
        async move {
            self.store_checkpoint(
                tx,
                name,
                &Checkpoint::at(expected),
                &Checkpoint::at(position),
            )
            .await
        }
    }
}

/// Parking for events a runner's handler keeps failing on: set aside with the error in the
/// runner's transaction (which moves the checkpoint past them), listed, then retried or
/// skipped by an operator.
pub trait ParkingStore: TxStore {
    /// Parks `event` for `runner` inside `tx`, with the handler's `error` after `attempts`
    /// tries; returns the parked entry's id.
    fn park<'a>(
        &'a self,
        tx: &'a mut Self::Tx,
        runner: &'a str,
        event: &'a RecordedEvent,
        error: &'a str,
        attempts: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'a;

    /// The parked events, oldest first: of one runner or of all, still parked or also the
    /// resolved ones.
    fn parked(
        &self,
        runner: Option<&str>,
        include_resolved: bool,
    ) -> impl Future<Output = Result<Vec<ParkedEvent>, StoreError>> + Send;

    /// Marks parked entry `id` resolved inside `tx`; false if there is no such entry still
    /// parked (already resolved, or never parked).
    fn resolve_parked<'a>(
        &'a self,
        tx: &'a mut Self::Tx,
        id: u64,
        resolution: Resolution,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'a;

    /// Records another failed retry of parked entry `id`: its new error and attempt count.
    fn update_parked<'a>(
        &'a self,
        id: u64,
        error: &'a str,
        attempts: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;
}

/// Process managers' state per correlation key and their deadlines, written in the runner's
/// transaction with its checkpoint (exactly-once state transitions). A process manager
/// records the refusals it ignores in the parking table, hence [`ParkingStore`].
pub trait ProcessStore: ParkingStore {
    /// The committed state of `process` for `key`, if any.
    fn load_process<'a>(
        &'a self,
        process: &'a str,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<ProcessState>, StoreError>> + Send + 'a;

    /// Saves the state inside `tx` as version `expected + 1`; false (and nothing changed)
    /// when the stored version is not `expected` (0: no state yet).
    #[allow(clippy::too_many_arguments)]
    fn save_process<'a>(
        &'a self,
        tx: &'a mut Self::Tx,
        process: &'a str,
        key: &'a str,
        state: &'a str,
        expected: u64,
        ended: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'a;

    /// Schedules `deadline` inside `tx`, replacing one of the same process, key and name.
    fn schedule_deadline<'a>(
        &'a self,
        tx: &'a mut Self::Tx,
        deadline: &'a Deadline,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// Cancels the deadline `name` of `process` for `key` inside `tx` (all of the key's
    /// deadlines when `name` is `None`); nothing when there is none.
    fn cancel_deadline<'a>(
        &'a self,
        tx: &'a mut Self::Tx,
        process: &'a str,
        key: &'a str,
        name: Option<&'a str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// Up to `limit` committed deadlines of `process` due at `now`, earliest first.
    fn due_deadlines<'a>(
        &'a self,
        process: &'a str,
        now: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Deadline>, StoreError>> + Send + 'a;

    /// Every committed deadline of `process`, earliest first (for status and tests).
    fn deadlines<'a>(
        &'a self,
        process: &'a str,
    ) -> impl Future<Output = Result<Vec<Deadline>, StoreError>> + Send + 'a;

    /// Removes deadline `id` inside `tx`; false when it is gone (fired or cancelled).
    fn take_deadline<'a>(
        &'a self,
        tx: &'a mut Self::Tx,
        id: Uuid,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'a;
}

/// Leases that make one runner per name the active one.
pub trait LeaseStore: Clone + Send + Sync + 'static {
    /// Held while a runner is the active one for its name.
    type Lease: Send + 'static;

    /// Tries to become the one active runner of `name`; `None` if another holds it.
    /// Released when the lease is dropped or its holder dies.
    fn try_lease(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Self::Lease>, StoreError>> + Send;

    /// Whether `lease` still holds its name. A lease that can be lost while held (the
    /// connection holding a database lock dies) reports false, and the runner stops working
    /// and waits to take a lease again. By default a lease lasts until it is dropped.
    fn lease_alive<'a>(
        &'a self,
        lease: &'a mut Self::Lease,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'a {
        let _ = lease;
        async { Ok(true) }
    }
}

/// Wake-ups for live readers of the global log.
pub trait WakeUps: EventLog {
    /// Waits until events after `after` may be readable, or `timeout` passes.
    fn wait_for_events<'a>(
        &'a self,
        after: &'a Self::Cursor,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;
}

/// [`EventStore::load_stream`] by way of [`EventStore::read_stream`]: the default, and what
/// the SQL stores do for the rare temporal (`until`) loads.
pub(crate) async fn load_through_read_stream<S: EventStore>(
    store: &S,
    stream: StreamRef<'_>,
    range: StreamRange,
) -> Result<Vec<StreamEvent>, StoreError> {
    let events = store.read_stream(stream, range).await?;
    Ok(events.into_iter().map(StreamEvent::from).collect())
}
