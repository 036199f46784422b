//! A store with only the stream and snapshot capabilities, written the way a backend
//! author outside annals would write one: no global log, no transactions, no checkpoints,
//! leases or wake-ups. The repository cases run on it unchanged, which shows that
//! `Repository` asks for nothing more.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use annals::store::{
    now_micros, validate_events, validate_stream, AppendOutcome, EventStore, NewEvent, Snapshot,
    SnapshotStore, StreamRange,
};
use annals::{CommitMeta, EventMeta, ExpectedVersion, RecordedEvent, StoreError, StreamRef, Uuid};

type Key = (String, String);

#[derive(Debug, Clone, Default)]
pub struct StreamOnlyStore(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    streams: HashMap<Key, Vec<RecordedEvent>>,
    commands: HashMap<Uuid, AppendOutcome>,
    event_ids: HashSet<Uuid>,
    /// Positions are unique and increasing across streams, as the contract asks, even
    /// though this store cannot read them back in global order.
    last_position: u64,
    snapshots: HashMap<Key, Vec<Snapshot>>,
}

fn key(stream: StreamRef<'_>) -> Key {
    (stream.stream_type.to_owned(), stream.stream_id.to_owned())
}

impl StreamOnlyStore {
    pub fn new() -> Self {
        StreamOnlyStore::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EventStore for StreamOnlyStore {
    async fn append(
        &self,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        validate_stream(stream)?;
        validate_events(stream, &events)?;
        let mut state = self.state();
        if let Some(first) = meta.command_id.and_then(|id| state.commands.get(&id)) {
            return first.clone().repeated_by(stream, meta);
        }
        let k = key(stream);
        let current = state.streams.get(&k).map_or(0, Vec::len) as u64;
        let actual = (current > 0).then_some(current);
        if !expected.accepts(actual) {
            return Err(StoreError::WrongExpectedVersion {
                stream_type: k.0,
                stream_id: k.1,
                expected,
                actual,
            });
        }
        let mut seen = HashSet::new();
        if let Some(taken) = events
            .iter()
            .find(|e| state.event_ids.contains(&e.event_id) || !seen.insert(e.event_id))
        {
            return Err(StoreError::DuplicateEventId {
                stream_type: k.0,
                stream_id: k.1,
                event_id: taken.event_id,
            });
        }
        let recorded_at = now_micros();
        let first_position = state.last_position + 1;
        let recorded: Vec<RecordedEvent> = (0..)
            .zip(&events)
            .map(|(offset, event)| {
                let meta = EventMeta::recorded(
                    stream,
                    current + offset + 1,
                    first_position + offset,
                    event,
                    meta,
                    recorded_at,
                );
                RecordedEvent::new(meta, event.payload.clone())
            })
            .collect();
        let count = recorded.len() as u64;
        let outcome = AppendOutcome::new(
            if count == 0 { current } else { current + 1 },
            current + count,
            recorded.last().map_or(0, |e| e.meta.position),
        )
        .with_fingerprint(meta.fingerprint.clone());
        state.last_position += count;
        state.event_ids.extend(events.iter().map(|e| e.event_id));
        if count > 0 {
            state.streams.entry(k).or_default().extend(recorded);
        }
        if let Some(id) = meta.command_id {
            state.commands.insert(id, outcome.clone());
        }
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: StreamRef<'_>,
        range: StreamRange,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        validate_stream(stream)?;
        let state = self.state();
        let events = state
            .streams
            .get(&key(stream))
            .map_or(&[][..], Vec::as_slice);
        Ok(events
            .iter()
            .filter(|e| e.meta.version >= range.from)
            .filter(|e| range.to.is_none_or(|to| e.meta.version <= to))
            .take_while(|e| range.until.is_none_or(|until| e.meta.recorded_at <= until))
            .take(
                range
                    .limit
                    .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            )
            .cloned()
            .collect())
    }

    async fn stream_version(&self, stream: StreamRef<'_>) -> Result<Option<u64>, StoreError> {
        validate_stream(stream)?;
        let state = self.state();
        Ok(state.streams.get(&key(stream)).map(|e| e.len() as u64))
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<AppendOutcome>, StoreError> {
        let state = self.state();
        Ok(state
            .commands
            .get(&command_id)
            .map(|first| first.clone().into_duplicate()))
    }
}

impl SnapshotStore for StreamOnlyStore {
    async fn save_snapshot(
        &self,
        stream: StreamRef<'_>,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        validate_stream(stream)?;
        let mut state = self.state();
        let list = state.snapshots.entry(key(stream)).or_default();
        list.retain(|s| s.version != snapshot.version);
        list.push(snapshot);
        list.sort_by_key(|s| s.version);
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: StreamRef<'_>,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, StoreError> {
        validate_stream(stream)?;
        let state = self.state();
        Ok(state.snapshots.get(&key(stream)).and_then(|list| {
            list.iter()
                .rev()
                .find(|s| max_version.is_none_or(|max| s.version <= max))
                .cloned()
        }))
    }
}
