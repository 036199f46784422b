//! An in-process store: for tests, prototypes and the fixture. Nothing survives the process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedMutexGuard};
use uuid::Uuid;

use super::{
    now_micros, read_log_by_position, validate_events, validate_runner_name, validate_stream,
    wait_for_append, AppendOutcome, Batch, Checkpoint, CheckpointStore, CommitMeta, Deadline,
    EventFilter, EventLog, EventMeta, EventStore, ExpectedVersion, LeaseStore, LocalLease,
    LocalLeases, NewEvent, ParkedEvent, ParkingStore, ProcessState, ProcessStore, RecordedEvent,
    Resolution, Snapshot, SnapshotStore, StreamCatalog, StreamEvent, StreamInfo, StreamQuery,
    StreamRange, StreamRef, TxStore, WakeUps,
};
use crate::error::StoreError;

/// An in-memory [`EventStore`], [`SnapshotStore`] and [`CheckpointStore`]. Clones share the
/// same data.
///
/// Concurrent commands on one stream race as they do on a database: a writer whose loaded
/// version was taken meanwhile gets a version conflict, so conflict handling can be tested
/// in memory (with `Repository::max_attempts(1)`, some of several racing commands end in
/// `ExecuteError::Conflict`).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    appended: Arc<Notify>,
    leases: LocalLeases,
    /// Serializes transactions (and so appends): see [`MemoryTx`].
    writer: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every event; position `p` is at index `p - 1`.
    log: Vec<RecordedEvent>,
    /// Indexes into `log` per stream, in version order.
    streams: HashMap<(String, String), Vec<usize>>,
    commands: HashMap<Uuid, AppendOutcome>,
    /// The id of every event in `log`: the SQL stores refuse a repeated one, so this does too.
    event_ids: HashSet<Uuid>,
    /// Snapshots per stream, in version order.
    snapshots: HashMap<(String, String), Vec<Snapshot>>,
    checkpoints: HashMap<String, Checkpoint>,
    /// Parked events, in id order (id `n` at index `n - 1`).
    parked: Vec<ParkedEvent>,
    /// Process managers' states by (process, key).
    processes: HashMap<(String, String), ProcessState>,
    /// Deadlines by (process, key, name).
    deadlines: HashMap<(String, String, String), Deadline>,
}

/// The events of a stream within `range`, in version order.
fn stream_window<'a>(
    inner: &'a Inner,
    stream: StreamRef<'_>,
    range: StreamRange,
) -> Result<impl Iterator<Item = &'a RecordedEvent>, StoreError> {
    let StreamRef {
        stream_type,
        stream_id,
    } = stream;
    validate_stream(stream)?;
    let indexes: &[usize] = inner
        .streams
        .get(&key(stream_type, stream_id))
        .map_or(&[], Vec::as_slice);
    let from = usize::try_from(range.from.max(1) - 1).unwrap_or(usize::MAX);
    let to = range.to.map_or(indexes.len(), |to| {
        usize::try_from(to).unwrap_or(usize::MAX).min(indexes.len())
    });
    let window = indexes.get(from..to.max(from)).unwrap_or_default();
    Ok(window
        .iter()
        .map(|&i| &inner.log[i])
        .take_while(move |e| range.until.is_none_or(|until| e.meta.recorded_at <= until))
        .take(range.limit.map_or(usize::MAX, |limit| {
            usize::try_from(limit).unwrap_or(usize::MAX)
        })))
}

fn key(stream_type: &str, stream_id: &str) -> (String, String) {
    (stream_type.to_owned(), stream_id.to_owned())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated: every mutation
        // below happens after all checks, so the data is usable even if poisoned.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let (outcome, _) = self
            .append_in(&mut tx, stream, expected, events, meta)
            .await?;
        self.commit(tx).await?;
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: StreamRef<'_>,
        range: StreamRange,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let events = stream_window(&inner, stream, range)?.cloned().collect();
        Ok(events)
    }

    async fn load_stream(
        &self,
        stream: StreamRef<'_>,
        range: StreamRange,
    ) -> Result<Vec<StreamEvent>, StoreError> {
        // Only the fields a load needs are copied, not the metadata.
        let inner = self.lock();
        let events = stream_window(&inner, stream, range)?
            .map(|e| StreamEvent {
                position: e.meta.position,
                version: e.meta.version,
                event_type: e.meta.event_type.clone(),
                event_version: e.meta.event_version,
                payload: e.payload.clone(),
            })
            .collect();
        Ok(events)
    }

    async fn stream_version(&self, stream: StreamRef<'_>) -> Result<Option<u64>, StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        validate_stream(stream)?;
        let inner = self.lock();
        Ok(inner
            .streams
            .get(&key(stream_type, stream_id))
            .map(|v| v.len() as u64))
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<AppendOutcome>, StoreError> {
        Ok(self
            .lock()
            .commands
            .get(&command_id)
            .map(|first| AppendOutcome {
                duplicate: true,
                ..first.clone()
            }))
    }
}

impl SnapshotStore for MemoryStore {
    async fn save_snapshot(
        &self,
        stream: StreamRef<'_>,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        validate_stream(stream)?;
        let mut inner = self.lock();
        let list = inner
            .snapshots
            .entry(key(stream_type, stream_id))
            .or_default();
        match list.binary_search_by_key(&snapshot.version, |s| s.version) {
            Ok(i) => list[i] = snapshot,
            Err(i) => list.insert(i, snapshot),
        }
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: StreamRef<'_>,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        validate_stream(stream)?;
        let inner = self.lock();
        Ok(inner
            .snapshots
            .get(&key(stream_type, stream_id))
            .and_then(|list| {
                list.iter()
                    .rev()
                    .find(|s| max_version.is_none_or(|max| s.version <= max))
                    .cloned()
            }))
    }
}

impl EventLog for MemoryStore {
    type Cursor = u64;

    async fn read_log<'a>(
        &'a self,
        after: &'a u64,
        limit: usize,
        filter: &'a EventFilter,
    ) -> Result<Batch<u64>, StoreError> {
        read_log_by_position(self, *after, limit, filter).await
    }

    async fn read_all(
        &self,
        after: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let start = usize::try_from(after).unwrap_or(usize::MAX);
        Ok(inner
            .log
            .get(start..)
            .unwrap_or_default()
            .iter()
            .filter(|e| filter.matches(&e.meta.event_type))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.lock().log.len() as u64)
    }
}

impl TxStore for MemoryStore {
    type Tx = MemoryTx;

    async fn begin(&self) -> Result<MemoryTx, StoreError> {
        // Nothing here waits on I/O, so without this a command's load, handle and append
        // would run in one go and writers could never race: let the other ready tasks run
        // first, as a database round trip would, so that a writer that read a version may
        // find it taken (a conflict) as it would on a database.
        tokio::task::yield_now().await;
        Ok(MemoryTx {
            _writer: Arc::clone(&self.writer).lock_owned().await,
            checkpoints: Vec::new(),
            events: Vec::new(),
            commands: Vec::new(),
            parked: Vec::new(),
            resolved: Vec::new(),
            workflow: Vec::new(),
        })
    }

    async fn commit(&self, tx: MemoryTx) -> Result<(), StoreError> {
        let appended = !tx.events.is_empty();
        let mut inner = self.lock();
        for event in tx.events {
            let index = inner.log.len();
            debug_assert_eq!(index as u64 + 1, event.meta.position);
            let k = key(&event.meta.stream_type, &event.meta.stream_id);
            inner.streams.entry(k).or_default().push(index);
            inner.event_ids.insert(event.meta.event_id);
            inner.log.push(event);
        }
        inner.commands.extend(tx.commands);
        for (name, position) in tx.checkpoints {
            inner.checkpoints.insert(name, position);
        }
        for mut parked in tx.parked {
            parked.id = inner.parked.len() as u64 + 1;
            inner.parked.push(parked);
        }
        for (id, resolution) in tx.resolved {
            if let Some(parked) = parked_entry(&mut inner.parked, id) {
                parked.resolution = Some(resolution);
            }
        }
        for write in tx.workflow {
            match write {
                WorkflowWrite::Save(process, key, state) => {
                    inner.processes.insert((process, key), state);
                }
                WorkflowWrite::Schedule(deadline) => {
                    let k = (
                        deadline.process.clone(),
                        deadline.key.clone(),
                        deadline.name.clone(),
                    );
                    inner.deadlines.insert(k, deadline);
                }
                WorkflowWrite::Cancel(process, key, name) => inner.deadlines.retain(|k, _| {
                    !(k.0 == process && k.1 == key && name.as_ref().is_none_or(|n| *n == k.2))
                }),
                WorkflowWrite::Take(id) => inner.deadlines.retain(|_, d| d.id != id),
            }
        }
        drop(inner);
        if appended {
            self.appended.notify_waiters();
        }
        Ok(())
    }

    async fn append_in<'a>(
        &'a self,
        tx: &'a mut MemoryTx,
        stream: StreamRef<'a>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &'a CommitMeta,
    ) -> Result<(AppendOutcome, Vec<RecordedEvent>), StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        validate_stream(stream)?;
        validate_events(stream, &events)?;
        let inner = self.lock();
        if let Some(first) = meta.command_id.and_then(|id| tx.command(&inner, id)) {
            return Ok((first.repeated_by(stream, meta)?, Vec::new()));
        }
        let k = key(stream_type, stream_id);
        let actual = tx.version(&inner, &k);
        if !expected.accepts(actual) {
            return Err(StoreError::WrongExpectedVersion {
                stream_type: k.0,
                stream_id: k.1,
                expected,
                actual,
            });
        }
        let mut batch_ids = HashSet::with_capacity(events.len());
        let taken = |id: &Uuid| {
            inner.event_ids.contains(id) || tx.events.iter().any(|e| e.meta.event_id == *id)
        };
        if let Some(event) = events
            .iter()
            .find(|e| taken(&e.event_id) || !batch_ids.insert(e.event_id))
        {
            return Err(StoreError::DuplicateEventId {
                stream_type: k.0,
                stream_id: k.1,
                event_id: event.event_id,
            });
        }
        let current = actual.unwrap_or(0);
        let next_position = (inner.log.len() + tx.events.len()) as u64 + 1;
        drop(inner);
        let recorded_at = now_micros();
        let count = events.len() as u64;
        let recorded: Vec<RecordedEvent> = (0..)
            .zip(events)
            .map(|(offset, event)| RecordedEvent {
                meta: EventMeta {
                    position: next_position + offset,
                    stream_type: k.0.clone(),
                    stream_id: k.1.clone(),
                    version: current + offset + 1,
                    event_type: event.event_type,
                    event_version: event.event_version,
                    event_id: event.event_id,
                    command_id: meta.command_id,
                    correlation_id: meta.correlation_id,
                    causation_id: meta.causation_id,
                    recorded_at,
                    headers: meta.headers.clone(),
                },
                payload: event.payload,
            })
            .collect();
        let outcome = AppendOutcome {
            first_version: if count == 0 { current } else { current + 1 },
            last_version: current + count,
            last_position: recorded.last().map_or(0, |e| e.meta.position),
            duplicate: false,
            fingerprint: meta.fingerprint.clone(),
        };
        if let Some(id) = meta.command_id {
            tx.commands.push((id, outcome.clone()));
        }
        tx.events.extend(recorded.iter().cloned());
        Ok((outcome, recorded))
    }
}

impl CheckpointStore for MemoryStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Checkpoint, StoreError> {
        validate_runner_name(name)?;
        Ok(self
            .lock()
            .checkpoints
            .get(name)
            .cloned()
            .unwrap_or_default())
    }

    async fn store_checkpoint<'a>(
        &'a self,
        tx: &'a mut MemoryTx,
        name: &'a str,
        expected: &'a Checkpoint,
        checkpoint: &'a Checkpoint,
    ) -> Result<bool, StoreError> {
        validate_runner_name(name)?;
        let stored = self
            .lock()
            .checkpoints
            .get(name)
            .cloned()
            .unwrap_or_default();
        if stored != *expected {
            return Ok(false);
        }
        tx.checkpoints.push((name.to_owned(), checkpoint.clone()));
        Ok(true)
    }
}

/// The parked entry `id`, if any.
fn parked_entry(parked: &mut [ParkedEvent], id: u64) -> Option<&mut ParkedEvent> {
    let index = usize::try_from(id.checked_sub(1)?).ok()?;
    parked.get_mut(index)
}

impl ParkingStore for MemoryStore {
    async fn park<'a>(
        &'a self,
        tx: &'a mut MemoryTx,
        runner: &'a str,
        event: &'a RecordedEvent,
        error: &'a str,
        attempts: u32,
    ) -> Result<u64, StoreError> {
        validate_runner_name(runner)?;
        // Transactions run one at a time, so the id this entry gets at commit is known.
        let id = self.lock().parked.len() as u64 + tx.parked.len() as u64 + 1;
        tx.parked.push(ParkedEvent {
            id,
            runner: runner.to_owned(),
            event: event.clone(),
            error: error.to_owned(),
            attempts: attempts.max(1),
            parked_at: now_micros(),
            resolution: None,
        });
        Ok(id)
    }

    async fn parked(
        &self,
        runner: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<ParkedEvent>, StoreError> {
        if let Some(runner) = runner {
            validate_runner_name(runner)?;
        }
        Ok(self
            .lock()
            .parked
            .iter()
            .filter(|p| runner.is_none_or(|r| p.runner == r))
            .filter(|p| include_resolved || p.resolution.is_none())
            .cloned()
            .collect())
    }

    async fn resolve_parked<'a>(
        &'a self,
        tx: &'a mut MemoryTx,
        id: u64,
        resolution: Resolution,
    ) -> Result<bool, StoreError> {
        // Parked in this same transaction (a reactor recording an ignored refusal).
        if let Some(pending) = tx.parked.iter_mut().find(|p| p.id == id) {
            if pending.resolution.is_some() {
                return Ok(false);
            }
            pending.resolution = Some(resolution);
            return Ok(true);
        }
        let open =
            parked_entry(&mut self.lock().parked, id).is_some_and(|p| p.resolution.is_none());
        if !open || tx.resolved.iter().any(|(r, _)| *r == id) {
            return Ok(false);
        }
        tx.resolved.push((id, resolution));
        Ok(true)
    }

    async fn update_parked<'a>(
        &'a self,
        id: u64,
        error: &'a str,
        attempts: u32,
    ) -> Result<(), StoreError> {
        if let Some(parked) = parked_entry(&mut self.lock().parked, id) {
            parked.error = error.to_owned();
            parked.attempts = attempts.max(1);
        }
        Ok(())
    }
}

impl LeaseStore for MemoryStore {
    type Lease = LocalLease;

    async fn try_lease(&self, name: &str) -> Result<Option<LocalLease>, StoreError> {
        validate_runner_name(name)?;
        Ok(self.leases.try_take(name))
    }
}

impl WakeUps for MemoryStore {
    async fn wait_for_events<'a>(
        &'a self,
        after: &'a u64,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        wait_for_append(&self.appended, *after, timeout, async {
            Ok(self.lock().log.len() as u64)
        })
        .await
    }
}

impl StreamCatalog for MemoryStore {
    async fn list_streams(&self, query: &StreamQuery) -> Result<Vec<StreamInfo>, StoreError> {
        let inner = self.lock();
        let mut streams: Vec<(&(String, String), &Vec<usize>)> = inner
            .streams
            .iter()
            .filter(|((t, id), indexes)| {
                !indexes.is_empty() && query.matches(StreamRef::new(t, id))
            })
            .collect();
        streams.sort_unstable_by_key(|(k, _)| *k);
        Ok(streams
            .into_iter()
            .take(query.limit)
            .map(|((t, id), indexes)| {
                let count = indexes.len() as u64;
                let updated_at = indexes.last().map(|&i| inner.log[i].meta.recorded_at);
                StreamInfo::new(StreamRef::new(t, id), count, count, updated_at)
            })
            .collect())
    }
}

/// A [`MemoryStore`] transaction: checkpoint moves wait here until commit. A memory read
/// model lives in the projection itself, so it has nothing else to hold.
#[derive(Debug)]
pub struct MemoryTx {
    /// Held from `begin` to commit or drop: memory transactions run one at a time, so the
    /// positions staged here are the ones they get.
    _writer: OwnedMutexGuard<()>,
    checkpoints: Vec<(String, Checkpoint)>,
    /// Events appended in this transaction, in position order.
    events: Vec<RecordedEvent>,
    commands: Vec<(Uuid, AppendOutcome)>,
    /// Events parked in this transaction (ids given at commit).
    parked: Vec<ParkedEvent>,
    resolved: Vec<(u64, Resolution)>,
    /// Process states and deadlines written in this transaction, applied in order.
    workflow: Vec<WorkflowWrite>,
}

/// A process manager's write, staged until commit.
#[derive(Debug)]
enum WorkflowWrite {
    Save(String, String, ProcessState),
    Schedule(Deadline),
    Cancel(String, String, Option<String>),
    Take(Uuid),
}

impl MemoryTx {
    /// The version of a stream as this transaction sees it.
    fn version(&self, inner: &Inner, k: &(String, String)) -> Option<u64> {
        let committed = inner.streams.get(k).map_or(0, |v| v.len() as u64);
        let staged = self
            .events
            .iter()
            .filter(|e| e.meta.stream_type == k.0 && e.meta.stream_id == k.1)
            .count() as u64;
        Some(committed + staged).filter(|&n| n > 0)
    }

    fn command(&self, inner: &Inner, id: Uuid) -> Option<AppendOutcome> {
        inner
            .commands
            .get(&id)
            .or_else(|| self.commands.iter().find(|(c, _)| *c == id).map(|(_, o)| o))
            .cloned()
    }
}

impl ProcessStore for MemoryStore {
    async fn load_process<'a>(
        &'a self,
        process: &'a str,
        key: &'a str,
    ) -> Result<Option<ProcessState>, StoreError> {
        Ok(self
            .lock()
            .processes
            .get(&(process.to_owned(), key.to_owned()))
            .cloned())
    }

    async fn save_process<'a>(
        &'a self,
        tx: &'a mut MemoryTx,
        process: &'a str,
        key: &'a str,
        state: &'a str,
        expected: u64,
        ended: bool,
    ) -> Result<bool, StoreError> {
        validate_runner_name(process)?;
        let staged = tx.workflow.iter().rev().find_map(|w| match w {
            WorkflowWrite::Save(p, k, s) if p == process && k == key => Some(s.version),
            _ => None,
        });
        let current = match staged {
            Some(version) => version,
            None => self
                .lock()
                .processes
                .get(&(process.to_owned(), key.to_owned()))
                .map_or(0, |s| s.version),
        };
        if current != expected {
            return Ok(false);
        }
        tx.workflow.push(WorkflowWrite::Save(
            process.to_owned(),
            key.to_owned(),
            ProcessState::new(state.to_owned(), expected + 1, ended),
        ));
        Ok(true)
    }

    async fn schedule_deadline<'a>(
        &'a self,
        tx: &'a mut MemoryTx,
        deadline: &'a Deadline,
    ) -> Result<(), StoreError> {
        validate_runner_name(&deadline.process)?;
        tx.workflow.push(WorkflowWrite::Schedule(deadline.clone()));
        Ok(())
    }

    async fn cancel_deadline<'a>(
        &'a self,
        tx: &'a mut MemoryTx,
        process: &'a str,
        key: &'a str,
        name: Option<&'a str>,
    ) -> Result<(), StoreError> {
        tx.workflow.push(WorkflowWrite::Cancel(
            process.to_owned(),
            key.to_owned(),
            name.map(str::to_owned),
        ));
        Ok(())
    }

    async fn due_deadlines<'a>(
        &'a self,
        process: &'a str,
        now: time::OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Deadline>, StoreError> {
        let mut due = self.deadlines(process).await?;
        due.retain(|d| d.due_at <= now);
        due.truncate(limit);
        Ok(due)
    }

    async fn deadlines<'a>(&'a self, process: &'a str) -> Result<Vec<Deadline>, StoreError> {
        let mut all: Vec<Deadline> = self
            .lock()
            .deadlines
            .values()
            .filter(|d| d.process == process)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.due_at.cmp(&b.due_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    async fn take_deadline<'a>(
        &'a self,
        tx: &'a mut MemoryTx,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        let mut present = self.lock().deadlines.values().any(|d| d.id == id);
        for write in &tx.workflow {
            match write {
                WorkflowWrite::Schedule(d) if d.id == id => present = true,
                WorkflowWrite::Take(taken) if *taken == id => present = false,
                _ => {}
            }
        }
        if present {
            tx.workflow.push(WorkflowWrite::Take(id));
        }
        Ok(present)
    }
}
