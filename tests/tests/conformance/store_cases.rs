//! The storage contract, exercised with raw events: streams and snapshots (`EventStore`,
//! `SnapshotStore`), the global log (`EventLog`), transactions (`TxStore`) and checkpoints
//! (`CheckpointStore`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use annals::store::MAX_STREAM_ID_LEN;
use annals::store::{
    AppendOutcome, EventFilter, EventLog, EventStore, Headers, NewEvent, Snapshot, StreamEvent,
    StreamRange,
};
use annals::{
    CommitMeta, ExpectedVersion, OffsetDateTime, RecordedEvent, StoreError, StreamRef, Uuid,
};
use serde_json::{json, Value};

use crate::{head_or, Log, Store, Streams};

const ACCOUNT: &str = "account";

/// A new event of type `event_type` (version 1) with a JSON payload.
pub fn event(event_type: &str, payload: &Value) -> NewEvent {
    NewEvent::new(event_type, 1, payload.to_string())
}

/// `count` events of type `Noted` with payloads `{"n": first}`, `{"n": first + 1}`, ...
pub fn numbered(first: u64, count: u64) -> Vec<NewEvent> {
    (first..first + count)
        .map(|n| event("Noted", &json!({ "n": n })))
        .collect()
}

/// Appends with no metadata, panicking on failure.
pub async fn append<S: EventStore>(
    store: &S,
    stream_type: &str,
    stream_id: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendOutcome {
    store
        .append(
            StreamRef::new(stream_type, stream_id),
            expected,
            events,
            &CommitMeta::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("append to {stream_type}/{stream_id} failed: {e}"))
}

pub async fn read<S: EventStore>(
    store: &S,
    stream_type: &str,
    stream_id: &str,
    range: StreamRange,
) -> Vec<RecordedEvent> {
    store
        .read_stream(StreamRef::new(stream_type, stream_id), range)
        .await
        .unwrap_or_else(|e| panic!("reading {stream_type}/{stream_id} failed: {e}"))
}

pub async fn read_all<S: EventLog>(store: &S) -> Vec<RecordedEvent> {
    store
        .read_all(0, 1_000_000, &EventFilter::all())
        .await
        .expect("read_all failed")
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.meta.version).collect()
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.meta.position).collect()
}

/// The `n` field of each `Noted` payload.
fn ns(events: &[RecordedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            let payload: Value = serde_json::from_str(&e.payload).expect("payload is JSON");
            payload["n"].as_u64().expect("payload has n")
        })
        .collect()
}

fn json_of(payload: &str) -> Value {
    serde_json::from_str(payload).unwrap_or_else(|e| panic!("stored payload {payload:?}: {e}"))
}

/// Everything a store would show about a stream and the log, to prove nothing changed.
#[derive(Debug, PartialEq)]
struct Observed {
    stream: Vec<RecordedEvent>,
    version: Option<u64>,
    log: Option<crate::GlobalLog>,
}

async fn observe<S: EventStore + Log>(store: &S, stream_type: &str, stream_id: &str) -> Observed {
    Observed {
        stream: read(store, stream_type, stream_id, StreamRange::ALL).await,
        version: store
            .stream_version(StreamRef::new(stream_type, stream_id))
            .await
            .expect("stream_version failed"),
        log: store.log().await,
    }
}

/// Appends expecting a refusal with exactly these fields, and checks nothing changed.
async fn assert_refused<S: EventStore + Log>(
    store: &S,
    stream_id: &str,
    expected: ExpectedVersion,
    actual: Option<u64>,
) {
    let before = observe(store, ACCOUNT, stream_id).await;
    let result = store
        .append(
            StreamRef::new(ACCOUNT, stream_id),
            expected,
            numbered(100, 2),
            &CommitMeta::default(),
        )
        .await;
    match result {
        Err(StoreError::WrongExpectedVersion {
            stream_type,
            stream_id: id,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(
                (stream_type.as_str(), id.as_str(), e, a),
                (ACCOUNT, stream_id, expected, actual)
            );
        }
        other => panic!("append expecting {expected:?} at {actual:?} returned {other:?}"),
    }
    assert_eq!(
        observe(store, ACCOUNT, stream_id).await,
        before,
        "a refused append changed the store"
    );
}

pub async fn append_any<S: Streams>(store: S) {
    let first = append(&store, ACCOUNT, "a", ExpectedVersion::Any, numbered(1, 2)).await;
    assert_eq!((first.first_version, first.last_version), (1, 2));
    let second = append(&store, ACCOUNT, "a", ExpectedVersion::Any, numbered(3, 1)).await;
    assert_eq!((second.first_version, second.last_version), (3, 3));
    let events = read(&store, ACCOUNT, "a", StreamRange::ALL).await;
    assert_eq!(versions(&events), [1, 2, 3]);
    assert_eq!(ns(&events), [1, 2, 3]);
}

pub async fn append_no_stream<S: Streams>(store: S) {
    let outcome = append(
        &store,
        ACCOUNT,
        "a",
        ExpectedVersion::NoStream,
        numbered(1, 1),
    )
    .await;
    assert_eq!((outcome.first_version, outcome.last_version), (1, 1));
    assert_refused(&store, "a", ExpectedVersion::NoStream, Some(1)).await;
    assert_eq!(
        versions(&read(&store, ACCOUNT, "a", StreamRange::ALL).await),
        [1]
    );
}

pub async fn append_exists<S: Streams>(store: S) {
    assert_refused(&store, "a", ExpectedVersion::Exists, None).await;
    assert_eq!(
        store
            .stream_version(StreamRef::new(ACCOUNT, "a"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(head_or(&store, 0).await, 0);

    append(
        &store,
        ACCOUNT,
        "a",
        ExpectedVersion::NoStream,
        numbered(1, 1),
    )
    .await;
    let outcome = append(
        &store,
        ACCOUNT,
        "a",
        ExpectedVersion::Exists,
        numbered(2, 2),
    )
    .await;
    assert_eq!((outcome.first_version, outcome.last_version), (2, 3));
}

pub async fn append_exact<S: Streams>(store: S) {
    // A missing stream is at version 0.
    assert_refused(&store, "a", ExpectedVersion::Exact(5), None).await;
    assert_refused(&store, "a", ExpectedVersion::Exact(u64::MAX), None).await;
    let outcome = append(
        &store,
        ACCOUNT,
        "a",
        ExpectedVersion::Exact(0),
        numbered(1, 1),
    )
    .await;
    assert_eq!((outcome.first_version, outcome.last_version), (1, 1));
    let outcome = append(
        &store,
        ACCOUNT,
        "a",
        ExpectedVersion::Exact(1),
        numbered(2, 1),
    )
    .await;
    assert_eq!((outcome.first_version, outcome.last_version), (2, 2));

    assert_refused(&store, "a", ExpectedVersion::Exact(1), Some(2)).await; // behind
    assert_refused(&store, "a", ExpectedVersion::Exact(3), Some(2)).await; // ahead
    assert_refused(&store, "a", ExpectedVersion::Exact(0), Some(2)).await;
    assert_refused(&store, "a", ExpectedVersion::Exact(u64::MAX), Some(2)).await;

    let outcome = append(
        &store,
        ACCOUNT,
        "a",
        ExpectedVersion::Exact(2),
        numbered(3, 2),
    )
    .await;
    assert_eq!((outcome.first_version, outcome.last_version), (3, 4));
    let events = read(&store, ACCOUNT, "a", StreamRange::ALL).await;
    assert_eq!(versions(&events), [1, 2, 3, 4]);
    assert_eq!(ns(&events), [1, 2, 3, 4]);
}

pub async fn wrong_expected_version_names_the_stream<S: Streams>(store: S) {
    append(
        &store,
        ACCOUNT,
        "acc-7",
        ExpectedVersion::Any,
        numbered(1, 2),
    )
    .await;
    let err = store
        .append(
            StreamRef::new(ACCOUNT, "acc-7"),
            ExpectedVersion::Exact(1),
            numbered(3, 1),
            &CommitMeta::default(),
        )
        .await
        .expect_err("a stale expected version must be refused");
    assert_eq!(
        err.to_string(),
        "stream account/acc-7 is at version 2, expected version 1"
    );
    let err = store
        .append(
            StreamRef::new(ACCOUNT, "acc-8"),
            ExpectedVersion::Exists,
            numbered(1, 1),
            &CommitMeta::default(),
        )
        .await
        .expect_err("a missing stream is not an existing one");
    assert_eq!(
        err.to_string(),
        "stream account/acc-8 is at no stream, expected an existing stream"
    );
}

pub async fn append_outcome_versions_and_positions<S: Streams>(store: S) {
    let a = append(&store, ACCOUNT, "a", ExpectedVersion::Any, numbered(1, 3)).await;
    let stored = read(&store, ACCOUNT, "a", StreamRange::ALL).await;
    assert_eq!((a.first_version, a.last_version), (1, 3));
    assert_eq!(a.last_position, stored[2].meta.position);
    assert!(!a.duplicate);

    let b = append(&store, ACCOUNT, "b", ExpectedVersion::Any, numbered(1, 2)).await;
    let stored = read(&store, ACCOUNT, "b", StreamRange::ALL).await;
    assert_eq!((b.first_version, b.last_version), (1, 2));
    assert_eq!(b.last_position, stored[1].meta.position);
    assert!(b.last_position > a.last_position);
    assert_eq!(head_or(&store, b.last_position).await, b.last_position);
}

pub async fn empty_append_without_command_id<S: Streams>(store: S) {
    // On a missing stream: checked, and the stream still does not exist.
    for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
        let outcome = append(&store, ACCOUNT, "a", expected, Vec::new()).await;
        assert_eq!(outcome, AppendOutcome::new(0, 0, 0), "{expected:?}");
    }
    let before = observe(&store, ACCOUNT, "a").await;
    let refused = store
        .append(
            StreamRef::new(ACCOUNT, "a"),
            ExpectedVersion::Exists,
            Vec::new(),
            &CommitMeta::default(),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::WrongExpectedVersion { actual: None, .. })
        ),
        "{refused:?}"
    );
    assert_eq!(observe(&store, ACCOUNT, "a").await, before);
    assert_eq!(
        store
            .stream_version(StreamRef::new(ACCOUNT, "a"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(head_or(&store, 0).await, 0);

    append(&store, ACCOUNT, "a", ExpectedVersion::Any, numbered(1, 2)).await;
    let outcome = append(&store, ACCOUNT, "a", ExpectedVersion::Exact(2), Vec::new()).await;
    assert_eq!(outcome, AppendOutcome::new(2, 2, 0));
    // An empty append still checks the expected version.
    let before = observe(&store, ACCOUNT, "a").await;
    let refused = store
        .append(
            StreamRef::new(ACCOUNT, "a"),
            ExpectedVersion::Exact(1),
            Vec::new(),
            &CommitMeta::default(),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::WrongExpectedVersion {
                actual: Some(2),
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(observe(&store, ACCOUNT, "a").await, before);
}

pub async fn stream_version_and_head<S: Store>(store: S) {
    assert_eq!(head_or(&store, 0).await, 0);
    assert_eq!(
        store
            .stream_version(StreamRef::new(ACCOUNT, "a"))
            .await
            .unwrap(),
        None
    );
    append(&store, ACCOUNT, "a", ExpectedVersion::Any, numbered(1, 3)).await;
    let last = append(&store, ACCOUNT, "b", ExpectedVersion::Any, numbered(1, 1)).await;
    assert_eq!(
        store
            .stream_version(StreamRef::new(ACCOUNT, "a"))
            .await
            .unwrap(),
        Some(3)
    );
    assert_eq!(
        store
            .stream_version(StreamRef::new(ACCOUNT, "b"))
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        store
            .stream_version(StreamRef::new(ACCOUNT, "c"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        head_or(&store, last.last_position).await,
        last.last_position
    );
}

pub async fn streams_are_isolated<S: Streams>(store: S) {
    // Same id under two stream types, and ids sharing a prefix.
    let streams = [
        (ACCOUNT, "a"),
        ("ledger", "a"),
        (ACCOUNT, "a1"),
        (ACCOUNT, "A"),
        (ACCOUNT, "a "),
    ];
    for (i, (stream_type, id)) in (1..).zip(streams) {
        append(
            &store,
            stream_type,
            id,
            ExpectedVersion::NoStream,
            numbered(i * 10, i),
        )
        .await;
    }
    for (i, (stream_type, id)) in (1..).zip(streams) {
        let events = read(&store, stream_type, id, StreamRange::ALL).await;
        assert_eq!(
            versions(&events),
            (1..=i).collect::<Vec<_>>(),
            "{stream_type}/{id}"
        );
        assert_eq!(ns(&events), (i * 10..i * 11).collect::<Vec<_>>());
        assert!(events
            .iter()
            .all(|e| e.meta.stream_type == stream_type && e.meta.stream_id == id));
        assert_eq!(
            store
                .stream_version(StreamRef::new(stream_type, id))
                .await
                .unwrap(),
            Some(i)
        );
    }
}

pub async fn read_stream_ranges<S: Streams>(store: S) {
    append(&store, ACCOUNT, "a", ExpectedVersion::Any, numbered(1, 5)).await;
    append(&store, ACCOUNT, "b", ExpectedVersion::Any, numbered(1, 5)).await;
    let range = |from, to: Option<u64>| {
        let range = StreamRange::from(from);
        match to {
            Some(to) => range.to(to),
            None => range,
        }
    };
    let cases: [(StreamRange, &[u64]); 12] = [
        (StreamRange::ALL, &[1, 2, 3, 4, 5]),
        (StreamRange::from(3), &[3, 4, 5]),
        (range(2, Some(4)), &[2, 3, 4]),
        (range(4, Some(4)), &[4]),
        (range(4, Some(2)), &[]),
        (range(6, None), &[]),
        (range(0, None), &[1, 2, 3, 4, 5]),
        (range(1, Some(0)), &[]),
        (range(3, Some(100)), &[3, 4, 5]),
        (range(1, Some(u64::MAX)), &[1, 2, 3, 4, 5]),
        (range(u64::MAX, None), &[]),
        (range(u64::MAX, Some(u64::MAX)), &[]),
    ];
    for (range, expected) in cases {
        let events = read(&store, ACCOUNT, "a", range).await;
        assert_eq!(versions(&events), expected, "{range:?}");
        assert_eq!(ns(&events), expected, "{range:?}");
        assert!(events.iter().all(|e| e.meta.stream_id == "a"));
    }
    assert!(read(&store, ACCOUNT, "missing", StreamRange::ALL)
        .await
        .is_empty());
}

pub async fn read_stream_until<S: Streams>(store: S) {
    for n in 1..=3 {
        append(&store, ACCOUNT, "a", ExpectedVersion::Any, numbered(n, 1)).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let events = read(&store, ACCOUNT, "a", StreamRange::ALL).await;
    let at: Vec<OffsetDateTime> = events.iter().map(|e| e.meta.recorded_at).collect();
    assert!(
        at[0] < at[1] && at[1] < at[2],
        "recorded_at must increase: {at:?}"
    );

    let until = |from, to: Option<u64>, until| {
        let range = StreamRange::from(from).until(until);
        match to {
            Some(to) => range.to(to),
            None => range,
        }
    };
    let micro = time::Duration::microseconds(1);
    let cases: [(StreamRange, &[u64]); 7] = [
        (until(1, None, at[0] - micro), &[]),
        (until(1, None, at[0]), &[1]),
        (until(1, None, at[1] - micro), &[1]),
        (until(1, None, at[1]), &[1, 2]),
        (until(1, None, at[2] + time::Duration::hours(1)), &[1, 2, 3]),
        (until(2, None, at[1]), &[2]),
        (until(1, Some(1), at[2]), &[1]),
    ];
    for (range, expected) in cases {
        assert_eq!(
            versions(&read(&store, ACCOUNT, "a", range).await),
            expected,
            "{range:?}"
        );
    }
}

pub async fn read_all_pages<S: Store>(store: S) {
    // Interleave three streams.
    for round in 0..4 {
        for id in ["a", "b", "c"] {
            if round < 3 || id == "a" {
                append(
                    &store,
                    ACCOUNT,
                    id,
                    ExpectedVersion::Any,
                    numbered(round, 1),
                )
                .await;
            }
        }
    }
    let all = read_all(&store).await;
    assert_eq!(all.len(), 10);
    let ids: Vec<&str> = all.iter().map(|e| e.meta.stream_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a"]);

    for limit in [1, 3, 4, 10, 11, usize::MAX] {
        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let page = store
                .read_all(after, limit, &EventFilter::all())
                .await
                .unwrap();
            assert!(page.len() <= limit);
            assert!(page.iter().all(|e| e.meta.position > after));
            let Some(last) = page.last() else { break };
            after = last.meta.position;
            paged.extend(page);
        }
        assert_eq!(paged, all, "paging by {limit}");
    }

    let after_fifth = store
        .read_all(all[4].meta.position, 2, &EventFilter::all())
        .await
        .unwrap();
    assert_eq!(after_fifth, all[5..7]);
    let head = store.head().await.unwrap();
    assert_eq!(head, all[9].meta.position);
    for (after, limit) in [(head, 10), (0, 0), (u64::MAX, 10)] {
        let page = store
            .read_all(after, limit, &EventFilter::all())
            .await
            .unwrap();
        assert!(page.is_empty(), "after {after} limit {limit}: {page:?}");
    }
}

pub async fn read_all_filters_event_types<S: Store>(store: S) {
    let types = [
        "Opened",
        "Deposited",
        "Withdrawn",
        "Deposited",
        "Closed",
        "Deposited",
    ];
    for (i, event_type) in (0..).zip(types) {
        let id = if i % 2 == 0 { "a" } else { "b" };
        append(
            &store,
            ACCOUNT,
            id,
            ExpectedVersion::Any,
            vec![event(event_type, &json!({ "i": i }))],
        )
        .await;
    }
    let all = read_all(&store).await;
    let pick = |wanted: &[&str]| -> Vec<RecordedEvent> {
        all.iter()
            .filter(|e| wanted.contains(&e.meta.event_type.as_str()))
            .cloned()
            .collect()
    };
    let filtered = |names: &[&str]| EventFilter::types(names.iter().copied());

    for wanted in [
        &["Deposited"][..],
        &["Opened", "Closed"],
        &["Withdrawn", "Deposited", "Opened"],
        &["Unknown"],
        &["Deposited%"],
        &["%"],
        &["deposited"],
        &[],
    ] {
        let got = store.read_all(0, 100, &filtered(wanted)).await.unwrap();
        assert_eq!(got, pick(wanted), "filter {wanted:?}");
    }

    // The limit counts matching events, and paging with a filter resumes after the last.
    let deposits = pick(&["Deposited"]);
    let first_two = store
        .read_all(0, 2, &filtered(&["Deposited"]))
        .await
        .unwrap();
    assert_eq!(first_two, deposits[..2]);
    let rest = store
        .read_all(first_two[1].meta.position, 2, &filtered(&["Deposited"]))
        .await
        .unwrap();
    assert_eq!(rest, deposits[2..]);
}

/// Paged reads through every shape of filter (one type, a few, more types than a store
/// may merge, repeated types, every type, an unknown type) return exactly the full log
/// filtered, whatever the page size.
pub async fn read_all_pages_through_every_filter<S: Store>(store: S) {
    let types = ["A", "B", "C", "D"];
    for i in 0..60_u64 {
        let event_type = types[usize::try_from(i * 7 % 11 % 4).unwrap()];
        append(
            &store,
            ACCOUNT,
            &(i % 5).to_string(),
            ExpectedVersion::Any,
            vec![event(event_type, &json!({ "n": i }))],
        )
        .await;
    }
    let all = read_all(&store).await;
    assert_eq!(all.len(), 60);
    assert!(positions(&all).windows(2).all(|w| w[0] < w[1]));
    assert_eq!(ns(&all), (0..60).collect::<Vec<_>>());

    let many: Vec<String> = (0..30)
        .map(|i| format!("Unused{i}"))
        .chain(["A".to_owned(), "C".to_owned()])
        .collect();
    let filters = [
        EventFilter::types(["B"]),
        EventFilter::types(["A", "C"]),
        EventFilter::types(["C", "A", "C"]),
        EventFilter::types(types),
        EventFilter::types(many),
        EventFilter::types(["Nope"]),
        EventFilter::all(),
    ];
    for filter in &filters {
        let expected: Vec<&RecordedEvent> = all
            .iter()
            .filter(|e| filter.matches(&e.meta.event_type))
            .collect();
        for page in [1, 3, 7, 100] {
            let mut got = Vec::new();
            let mut after = 0;
            loop {
                let batch = store.read_all(after, page, filter).await.unwrap();
                assert!(batch.len() <= page);
                let Some(last) = batch.last() else { break };
                after = last.meta.position;
                got.extend(batch);
            }
            assert_eq!(
                got.iter().collect::<Vec<_>>(),
                expected,
                "filter {filter:?}, page {page}"
            );
        }
    }
    let last_two = store
        .read_all(all[57].meta.position, usize::MAX, &EventFilter::all())
        .await
        .unwrap();
    assert_eq!(last_two, all[58..]);
    assert_eq!(store.head().await.unwrap(), all[59].meta.position);
}

pub async fn positions_strictly_increase<S: Store>(store: S) {
    // Sequential batches of various sizes across streams, then concurrent writers.
    for (i, size) in (0..12).zip([1, 3, 2, 5, 1, 1, 4, 2, 3, 1, 2, 1]) {
        let id = format!("seq-{}", i % 4);
        append(
            &store,
            ACCOUNT,
            &id,
            ExpectedVersion::Any,
            numbered(0, size),
        )
        .await;
    }
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("par-{w}");
                for n in 0..20 {
                    let size = 1 + n % 3;
                    append(
                        &store,
                        ACCOUNT,
                        &id,
                        ExpectedVersion::Any,
                        numbered(n, size),
                    )
                    .await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task panicked");
    }

    let all = read_all(&store).await;
    assert_eq!(all.len(), 26 + 4 * 39);
    assert!(
        positions(&all).windows(2).all(|w| w[0] < w[1]),
        "positions must strictly increase: {:?}",
        positions(&all)
    );
    assert_eq!(
        store.head().await.unwrap(),
        all.last().unwrap().meta.position
    );
    let by_id: BTreeMap<Uuid, u64> = all
        .iter()
        .map(|e| (e.meta.event_id, e.meta.position))
        .collect();
    assert_eq!(by_id.len(), all.len(), "event ids must be unique");

    // Each stream: versions 1..=n, positions increasing with versions and equal to the
    // global log's.
    let ids: BTreeSet<String> = all.iter().map(|e| e.meta.stream_id.clone()).collect();
    for id in ids {
        let stream = read(&store, ACCOUNT, &id, StreamRange::ALL).await;
        assert_eq!(
            versions(&stream),
            (1..=stream.len() as u64).collect::<Vec<_>>()
        );
        assert!(positions(&stream).windows(2).all(|w| w[0] < w[1]));
        for e in &stream {
            assert_eq!(by_id[&e.meta.event_id], e.meta.position);
        }
    }
}

pub async fn metadata_round_trips<S: Streams>(store: S) {
    let headers: Headers = [
        ("user", "zoë"),
        ("crab", "🦀 rust"),
        ("quote", "it's \"quoted\" \\ back"),
        ("ключ", "значение"),
        ("empty", ""),
        ("", "\u{0}\n\t"),
        ("nul", "a\0b"),
        ("quote'd", "{\"not\": \"json\"}"),
        ("multi\nline", "a\nb\tc"),
        ("sql", "'; DROP TABLE events; --"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let meta = {
        let mut meta = CommitMeta::new()
            .command_id(Uuid::new_v4())
            .correlation_id(Uuid::new_v4())
            .causation_id(Uuid::new_v4());
        meta.headers = headers.clone();
        meta
    };
    let events = vec![
        NewEvent::new("Opened", 1, json!({ "owner": "ada" }).to_string()),
        NewEvent::new("Deposited", 3, json!({ "amount": 5 }).to_string()),
    ];
    let event_ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();

    let before = OffsetDateTime::now_utc();
    let outcome = store
        .append(
            StreamRef::new(ACCOUNT, "a"),
            ExpectedVersion::NoStream,
            events,
            &meta,
        )
        .await
        .unwrap();
    let after = OffsetDateTime::now_utc();
    append(
        &store,
        ACCOUNT,
        "b",
        ExpectedVersion::NoStream,
        numbered(1, 1),
    )
    .await;

    let stream = read(&store, ACCOUNT, "a", StreamRange::ALL).await;
    assert_eq!(stream.len(), 2);
    for (e, (version, (event_id, (event_type, event_version)))) in stream
        .iter()
        .zip((1..).zip(event_ids.iter().zip([("Opened", 1), ("Deposited", 3)])))
    {
        let m = &e.meta;
        assert_eq!(m.stream_type, ACCOUNT);
        assert_eq!(m.stream_id, "a");
        assert_eq!(m.version, version);
        assert_eq!(m.event_id, *event_id);
        assert_eq!(
            (m.event_type.as_str(), m.event_version),
            (event_type, event_version)
        );
        assert_eq!(m.command_id, meta.command_id);
        assert_eq!(m.correlation_id, meta.correlation_id);
        assert_eq!(m.causation_id, meta.causation_id);
        assert_eq!(m.headers, headers);
        assert_eq!(m.recorded_at.offset(), time::UtcOffset::UTC);
        assert_eq!(
            m.recorded_at.nanosecond() % 1_000,
            0,
            "microsecond precision"
        );
        // Taken from this process's clock during the append (`now_micros`), truncated to
        // microseconds; one time for the whole batch.
        let micros = |t: OffsetDateTime| t.unix_timestamp_nanos() / 1_000;
        assert!(
            micros(before) <= micros(m.recorded_at) && m.recorded_at <= after,
            "recorded_at {} not within [{before}, {after}]",
            m.recorded_at
        );
        assert_eq!(m.recorded_at, stream[0].meta.recorded_at);
    }
    assert_eq!(outcome.last_position, stream[1].meta.position);

    // The global log shows the same metadata, and absent metadata reads back absent.
    let Some(log) = store.log().await else {
        return;
    };
    let all = log.events;
    assert_eq!(all[..2], stream[..]);
    let plain = &all[2].meta;
    assert_eq!(
        (plain.command_id, plain.correlation_id, plain.causation_id),
        (None, None, None)
    );
    assert!(plain.headers.is_empty());
}

pub async fn payloads_round_trip<S: Streams>(store: S) {
    let values = [
        json!({}),
        json!({ "text": "zoë 🦀 ключ 日本語", "escaped": "quote \" backslash \\ newline \n tab \t" }),
        json!({ "nested": { "list": [1, 2.5, -3, null, true, "x"], "empty": {} } }),
        json!({ "big": u64::MAX, "negative": i64::MIN, "float": 1.0e-7 }),
        json!({ "sql": "'); DROP TABLE events; --", "like": "%_" }),
        json!([1, 2, 3]),
        json!("a bare string"),
        json!({ "long": "x".repeat(200_000) }),
    ];
    // Payloads are kept as written: spacing, key order, duplicate keys, number spelling,
    // escapes (a `\u0000` escape too).
    let written = [
        r#"{ "b" : 1,   "a" : [1, 2.50, -0] }"#,
        r#"{"s":"\u0000 nul and \"quote\" and \\ backslash"}"#,
        r#"{"dup":1,"dup":2}"#,
        "[]",
        "42",
    ];
    let payloads: Vec<String> = values
        .iter()
        .map(Value::to_string)
        .chain(written.map(str::to_owned))
        .collect();
    for payload in &payloads {
        append(
            &store,
            ACCOUNT,
            "a",
            ExpectedVersion::Any,
            vec![NewEvent::new("Noted", 1, payload.clone())],
        )
        .await;
    }
    let stored = read(&store, ACCOUNT, "a", StreamRange::ALL).await;
    assert_eq!(stored.len(), payloads.len());
    for (e, payload) in stored.iter().zip(&payloads) {
        assert_eq!(&e.payload, payload);
    }
    for (e, value) in stored.iter().zip(&values) {
        assert_eq!(&json_of(&e.payload), value);
    }
    if let Some(log) = store.log().await {
        assert_eq!(log.events, stored);
    }
}

pub async fn command_id_appends_once<S: Streams>(store: S) {
    let command_id = Uuid::new_v4();
    let meta = CommitMeta::new().command_id(command_id);
    assert_eq!(store.command_outcome(command_id).await.unwrap(), None);

    // A refused append does not record the command id.
    append(
        &store,
        ACCOUNT,
        "a",
        ExpectedVersion::NoStream,
        numbered(1, 1),
    )
    .await;
    let refused = store
        .append(
            StreamRef::new(ACCOUNT, "a"),
            ExpectedVersion::Exact(7),
            numbered(2, 2),
            &meta,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::WrongExpectedVersion { .. })),
        "{refused:?}"
    );
    assert_eq!(store.command_outcome(command_id).await.unwrap(), None);

    let first = store
        .append(
            StreamRef::new(ACCOUNT, "a"),
            ExpectedVersion::Exact(1),
            numbered(2, 2),
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(
        (first.first_version, first.last_version, first.duplicate),
        (2, 3, false)
    );
    let snapshot = observe(&store, ACCOUNT, "a").await;

    // Whatever the expected version, events or stream, the same id appends nothing and
    // returns the first outcome.
    for (stream_id, expected) in [
        ("a", ExpectedVersion::Exact(3)),
        ("a", ExpectedVersion::Exact(1)),
        ("a", ExpectedVersion::NoStream),
        ("a", ExpectedVersion::Any),
        ("other", ExpectedVersion::NoStream),
    ] {
        let again = store
            .append(
                StreamRef::new(ACCOUNT, stream_id),
                expected,
                numbered(9, 3),
                &meta,
            )
            .await
            .unwrap_or_else(|e| panic!("repeated command id on {stream_id} {expected:?}: {e}"));
        assert_eq!(again, first.clone().into_duplicate());
    }
    assert_eq!(observe(&store, ACCOUNT, "a").await, snapshot);
    assert_eq!(
        store
            .stream_version(StreamRef::new(ACCOUNT, "other"))
            .await
            .unwrap(),
        None
    );

    assert_eq!(
        store.command_outcome(command_id).await.unwrap(),
        Some(first.clone().into_duplicate())
    );
    let stream = read(&store, ACCOUNT, "a", StreamRange::ALL).await;
    let command_ids: Vec<Option<Uuid>> = stream.iter().map(|e| e.meta.command_id).collect();
    assert_eq!(command_ids, [None, Some(command_id), Some(command_id)]);

    // Another command id is independent.
    let other = CommitMeta::new().command_id(Uuid::new_v4());
    let next = store
        .append(
            StreamRef::new(ACCOUNT, "a"),
            ExpectedVersion::Exact(3),
            numbered(4, 1),
            &other,
        )
        .await
        .unwrap();
    assert_eq!(
        (next.first_version, next.last_version, next.duplicate),
        (4, 4, false)
    );
}

pub async fn empty_append_records_command_id<S: Streams>(store: S) {
    append(
        &store,
        ACCOUNT,
        "a",
        ExpectedVersion::NoStream,
        numbered(1, 2),
    )
    .await;
    let meta = CommitMeta::new().command_id(Uuid::new_v4());
    let first = store
        .append(
            StreamRef::new(ACCOUNT, "a"),
            ExpectedVersion::Exact(2),
            Vec::new(),
            &meta,
        )
        .await
        .unwrap();
    let expected = AppendOutcome::new(2, 2, 0);
    assert_eq!(first, expected);
    let before = observe(&store, ACCOUNT, "a").await;
    let again = store
        .append(
            StreamRef::new(ACCOUNT, "a"),
            ExpectedVersion::Any,
            numbered(3, 1),
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(again, expected.clone().into_duplicate());
    assert_eq!(observe(&store, ACCOUNT, "a").await, before);
    let recorded = store
        .command_outcome(meta.command_id.unwrap())
        .await
        .unwrap()
        .expect("an empty append records its command id");
    assert_eq!(
        (
            recorded.first_version,
            recorded.last_version,
            recorded.last_position
        ),
        (2, 2, 0)
    );

    // On a missing stream: recorded, and the stream still does not exist.
    let meta = CommitMeta::new().command_id(Uuid::new_v4());
    let first = store
        .append(
            StreamRef::new(ACCOUNT, "new"),
            ExpectedVersion::NoStream,
            Vec::new(),
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(
        (first.first_version, first.last_version, first.last_position),
        (0, 0, 0)
    );
    assert_eq!(
        store
            .stream_version(StreamRef::new(ACCOUNT, "new"))
            .await
            .unwrap(),
        None
    );
    let again = store
        .append(
            StreamRef::new(ACCOUNT, "new"),
            ExpectedVersion::NoStream,
            numbered(1, 1),
            &meta,
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        store
            .stream_version(StreamRef::new(ACCOUNT, "new"))
            .await
            .unwrap(),
        None
    );

    // A refused empty append records nothing.
    let meta = CommitMeta::new().command_id(Uuid::new_v4());
    let refused = store
        .append(
            StreamRef::new(ACCOUNT, "a"),
            ExpectedVersion::NoStream,
            Vec::new(),
            &meta,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::WrongExpectedVersion { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store
            .command_outcome(meta.command_id.unwrap())
            .await
            .unwrap(),
        None
    );
}

/// Stream ids and types full of SQL, LIKE and GLOB metacharacters, quotes and unicode.
fn hostile_ids() -> Vec<String> {
    [
        "'; DROP TABLE events; --",
        "\" OR \"1\"=\"1",
        "Robert'); DELETE FROM snapshots; --",
        "' OR 1=1 --",
        "%",
        "_",
        "a%",
        "a_c",
        "abc",
        "%_\\*?[]",
        "\\",
        "\\'",
        "''",
        "$1",
        "?",
        ":name",
        "@p1",
        "/* comment",
        "-- comment",
        "a;b",
        "ä/ö/ü",
        "🦀🦀",
        "🦀 ünïcödé \u{202e}rtl",
        "zero\u{200b}width",
        "  padded  ",
        "NULL",
        "null",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        "x".repeat(MAX_STREAM_ID_LEN),
        "é".repeat(MAX_STREAM_ID_LEN / 2),
    ])
    .collect()
}

pub async fn hostile_ids_are_stored_verbatim<S: Streams>(store: S) {
    let ids = hostile_ids();
    let hostile_type = "'); DROP TABLE streams; --";
    // The hostile stream type's events have a hostile event type too.
    let event_type = |stream_type: &str| {
        if stream_type == ACCOUNT {
            "Noted"
        } else {
            "Odd'\"Type%_"
        }
    };
    for (i, id) in (1..).zip(&ids) {
        for stream_type in [ACCOUNT, hostile_type] {
            let events = (i..i + 2)
                .map(|n| event(event_type(stream_type), &json!({ "n": n })))
                .collect();
            let outcome = append(&store, stream_type, id, ExpectedVersion::NoStream, events).await;
            assert_eq!(outcome.last_version, 2, "{id:?}");
            store
                .save_snapshot(
                    StreamRef::new(stream_type, id),
                    Snapshot::new(2, 1, json!({ "id": id }).to_string()),
                )
                .await
                .unwrap_or_else(|e| panic!("snapshot of {id:?}: {e}"));
        }
    }
    for (i, id) in (1..).zip(&ids) {
        for stream_type in [ACCOUNT, hostile_type] {
            let events = read(&store, stream_type, id, StreamRange::ALL).await;
            assert_eq!(versions(&events), [1, 2], "{stream_type:?}/{id:?}");
            assert_eq!(ns(&events), [i, i + 1]);
            for e in &events {
                assert_eq!(&e.meta.stream_id, id);
                assert_eq!(e.meta.stream_type, stream_type);
                assert_eq!(e.meta.event_type, event_type(stream_type));
            }
            assert_eq!(
                store
                    .stream_version(StreamRef::new(stream_type, id))
                    .await
                    .unwrap(),
                Some(2)
            );
            let snapshot = store
                .load_snapshot(StreamRef::new(stream_type, id), None)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("no snapshot for {id:?}"));
            assert_eq!(json_of(&snapshot.state), json!({ "id": id }));
        }
    }
    let Some(log) = store.log().await else {
        return;
    };
    let all = log.events;
    assert_eq!(all.len(), ids.len() * 4);
    let stored: BTreeSet<&str> = all.iter().map(|e| e.meta.stream_id.as_str()).collect();
    let expected: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(stored, expected);
}

/// Stream ids every store must refuse, and the reason it gives.
fn invalid_ids() -> Vec<(String, &'static str)> {
    vec![
        (String::new(), "is empty"),
        (
            "x".repeat(MAX_STREAM_ID_LEN + 1),
            "is longer than 512 bytes",
        ),
        (
            "é".repeat(MAX_STREAM_ID_LEN / 2 + 1),
            "is longer than 512 bytes",
        ),
        ("x".repeat(1_000_000), "is longer than 512 bytes"),
        ("nul\0byte".to_owned(), "contains a control character"),
        ("line\nbreak".to_owned(), "contains a control character"),
        (
            "carriage\rreturn".to_owned(),
            "contains a control character",
        ),
        ("tab\there".to_owned(), "contains a control character"),
        (
            "escape\u{1b}[31mred".to_owned(),
            "contains a control character",
        ),
        ("delete\u{7f}".to_owned(), "contains a control character"),
        ("next\u{85}line".to_owned(), "contains a control character"),
    ]
}

fn assert_invalid<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    what: &str,
    reason: &str,
    operation: &str,
) {
    match result {
        Err(StoreError::InvalidStream {
            what: w,
            value,
            reason: r,
        }) => {
            assert_eq!((w, r), (what, reason), "{operation}");
            // The refused value is escaped and shortened for display.
            assert!(
                value.len() <= 100,
                "{operation}: value not shortened: {}",
                value.len()
            );
            assert!(
                !value.chars().any(char::is_control),
                "{operation}: {value:?}"
            );
        }
        other => panic!("{operation} with an invalid {what} returned {other:?}"),
    }
}

pub async fn invalid_ids_are_refused<S: Streams>(store: S) {
    let snapshot = Snapshot::new(1, 1, "{}".to_owned());
    for (bad, reason) in invalid_ids() {
        for (what, stream_type, stream_id) in [
            ("stream id", ACCOUNT, bad.as_str()),
            ("stream type", bad.as_str(), "a"),
        ] {
            let op = |name: &str| format!("{name}({stream_type:?}, {stream_id:?})");
            for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
                let result = store
                    .append(
                        StreamRef::new(stream_type, stream_id),
                        expected,
                        numbered(1, 1),
                        &CommitMeta::default(),
                    )
                    .await;
                assert_invalid(result, what, reason, &op("append"));
            }
            assert_invalid(
                store
                    .read_stream(StreamRef::new(stream_type, stream_id), StreamRange::ALL)
                    .await,
                what,
                reason,
                &op("read_stream"),
            );
            assert_invalid(
                store
                    .stream_version(StreamRef::new(stream_type, stream_id))
                    .await,
                what,
                reason,
                &op("stream_version"),
            );
            assert_invalid(
                store
                    .save_snapshot(StreamRef::new(stream_type, stream_id), snapshot.clone())
                    .await,
                what,
                reason,
                &op("save_snapshot"),
            );
            assert_invalid(
                store
                    .load_snapshot(StreamRef::new(stream_type, stream_id), None)
                    .await,
                what,
                reason,
                &op("load_snapshot"),
            );
        }
    }
    let err = store
        .append(
            StreamRef::new(ACCOUNT, "line\nbreak"),
            ExpectedVersion::Any,
            numbered(1, 1),
            &CommitMeta::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid stream id `line\\nbreak`: contains a control character"
    );
    assert_eq!(head_or(&store, 0).await, 0);
    if let Some(log) = store.log().await {
        assert!(log.events.is_empty());
    }
    assert_eq!(
        store
            .load_snapshot(StreamRef::new(ACCOUNT, "a"), None)
            .await
            .unwrap(),
        None
    );
}

pub async fn concurrent_appends_never_share_a_version<S: Streams>(store: S) {
    const TASKS: u64 = 8;
    const ATTEMPTS: u64 = 25;
    append(
        &store,
        ACCOUNT,
        "hot",
        ExpectedVersion::NoStream,
        numbered(0, 1),
    )
    .await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut won = Vec::new();
                for attempt in 0..ATTEMPTS {
                    let seen = store
                        .stream_version(StreamRef::new(ACCOUNT, "hot"))
                        .await
                        .unwrap()
                        .expect("the stream exists");
                    // Let the other writers read the same version.
                    tokio::task::yield_now().await;
                    let n = 1 + task * ATTEMPTS + attempt;
                    match store
                        .append(
                            StreamRef::new(ACCOUNT, "hot"),
                            ExpectedVersion::Exact(seen),
                            numbered(n, 1),
                            &CommitMeta::default(),
                        )
                        .await
                    {
                        Ok(outcome) => {
                            assert_eq!(outcome.first_version, seen + 1);
                            won.push((outcome.first_version, n));
                        }
                        Err(StoreError::WrongExpectedVersion {
                            expected, actual, ..
                        }) => {
                            assert_eq!(expected, ExpectedVersion::Exact(seen));
                            let actual = actual.expect("the stream exists");
                            assert!(actual > seen, "stream went back from {seen} to {actual}");
                        }
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
                won
            })
        })
        .collect();
    let mut won = BTreeMap::new();
    for task in tasks {
        for (version, n) in task.await.expect("writer task panicked") {
            assert!(
                won.insert(version, n).is_none(),
                "two appends won version {version}"
            );
        }
    }
    let stream = read(&store, ACCOUNT, "hot", StreamRange::ALL).await;
    let winners = won.len() as u64;
    assert!(winners >= 1);
    assert_eq!(versions(&stream), (1..=winners + 1).collect::<Vec<_>>());
    let stored: BTreeMap<u64, u64> = stream[1..]
        .iter()
        .map(|e| e.meta.version)
        .zip(ns(&stream[1..]))
        .collect();
    assert_eq!(stored, won, "the stream holds exactly the winning appends");
    if let Some(log) = store.log().await {
        assert_eq!(log.events, stream);
    }
}

pub async fn snapshots_save_and_load<S: Streams>(store: S) {
    assert_eq!(
        store
            .load_snapshot(StreamRef::new(ACCOUNT, "a"), None)
            .await
            .unwrap(),
        None
    );
    let snap = |version: u64, state: Value| Snapshot::new(version, 7, state.to_string());
    let neighbour = Snapshot::new(5, 2, json!({ "other": true }).to_string());
    store
        .save_snapshot(StreamRef::new(ACCOUNT, "c"), neighbour.clone())
        .await
        .unwrap();
    for version in [6, 3, 9] {
        store
            .save_snapshot(
                StreamRef::new(ACCOUNT, "a"),
                snap(version, json!({ "at": version, "name": "zoë 🦀" })),
            )
            .await
            .unwrap();
    }
    let load = |max: Option<u64>| {
        let store = store.clone();
        async move {
            store
                .load_snapshot(StreamRef::new(ACCOUNT, "a"), max)
                .await
                .unwrap()
                .map(|s| (s.version, s.snapshot_version, json_of(&s.state)))
        }
    };
    let at = |v: u64| Some((v, 7, json!({ "at": v, "name": "zoë 🦀" })));
    assert_eq!(load(None).await, at(9));
    assert_eq!(load(Some(u64::MAX)).await, at(9));
    assert_eq!(load(Some(9)).await, at(9));
    assert_eq!(load(Some(8)).await, at(6));
    assert_eq!(load(Some(6)).await, at(6));
    assert_eq!(load(Some(5)).await, at(3));
    assert_eq!(load(Some(2)).await, None);
    assert_eq!(load(Some(0)).await, None);

    // Saving at the same version replaces, snapshot version included.
    store
        .save_snapshot(
            StreamRef::new(ACCOUNT, "a"),
            Snapshot::new(6, 8, json!({ "replaced": true }).to_string()),
        )
        .await
        .unwrap();
    assert_eq!(
        load(Some(6)).await,
        Some((6, 8, json!({ "replaced": true })))
    );
    assert_eq!(load(None).await, at(9));

    // Snapshots belong to one stream.
    assert_eq!(
        store
            .load_snapshot(StreamRef::new(ACCOUNT, "c"), None)
            .await
            .unwrap(),
        Some(neighbour)
    );
    assert_eq!(
        store
            .load_snapshot(StreamRef::new(ACCOUNT, "b"), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .load_snapshot(StreamRef::new("ledger", "a"), None)
            .await
            .unwrap(),
        None
    );
    // And are not events.
    if let Some(log) = store.log().await {
        assert!(log.events.is_empty());
    }
}

pub async fn large_numbers_never_wrap<S: Streams>(store: S) {
    // The largest event version either round-trips or is refused as out of range; it
    // never comes back as something else.
    let result = store
        .append(
            StreamRef::new(ACCOUNT, "a"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Noted", u32::MAX, "{}".to_owned())],
            &CommitMeta::default(),
        )
        .await;
    let stream = read(&store, ACCOUNT, "a", StreamRange::ALL).await;
    match result {
        Ok(_) => assert_eq!(stream[0].meta.event_version, u32::MAX),
        Err(StoreError::OutOfRange { .. }) => assert!(stream.is_empty()),
        Err(e) => panic!("unexpected error: {e}"),
    }

    // Same for a snapshot at a version beyond what the database holds.
    let result = store
        .save_snapshot(
            StreamRef::new(ACCOUNT, "b"),
            Snapshot::new(u64::MAX, u32::MAX, "{}".to_owned()),
        )
        .await;
    let loaded = store
        .load_snapshot(StreamRef::new(ACCOUNT, "b"), None)
        .await
        .unwrap();
    match result {
        Ok(()) => {
            let loaded = loaded.expect("saved snapshot");
            assert_eq!(
                (loaded.version, loaded.snapshot_version),
                (u64::MAX, u32::MAX)
            );
        }
        Err(StoreError::OutOfRange { .. }) => assert_eq!(loaded, None),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

pub async fn duplicate_event_id_is_refused<S: Streams>(store: S) {
    let first = event("Noted", &json!({ "n": 1 }));
    append(
        &store,
        ACCOUNT,
        "a",
        ExpectedVersion::Any,
        vec![first.clone()],
    )
    .await;
    let before = observe(&store, ACCOUNT, "b").await;

    // Already stored (in another stream), and twice in one batch: the whole append is
    // refused, and records nothing of its command id.
    let meta = CommitMeta::new().command_id(Uuid::new_v4());
    let mut reused = event("Noted", &json!({ "n": 2 }));
    reused.event_id = first.event_id;
    let twice = event("Noted", &json!({ "n": 3 }));
    for (batch, expected_id) in [
        (
            vec![event("Noted", &json!({ "n": 4 })), reused],
            first.event_id,
        ),
        (vec![twice.clone(), twice.clone()], twice.event_id),
    ] {
        let result = store
            .append(
                StreamRef::new(ACCOUNT, "b"),
                ExpectedVersion::Any,
                batch,
                &meta,
            )
            .await;
        match &result {
            Err(StoreError::DuplicateEventId {
                stream_type,
                stream_id,
                event_id,
            }) => {
                assert_eq!((stream_type.as_str(), stream_id.as_str()), (ACCOUNT, "b"));
                assert_eq!(*event_id, expected_id, "names the repeated id");
            }
            other => panic!("expected DuplicateEventId, got {other:?}"),
        }
        assert_eq!(observe(&store, ACCOUNT, "b").await, before);
        assert_eq!(
            store
                .command_outcome(meta.command_id.unwrap())
                .await
                .unwrap(),
            None
        );
    }
    // The store and the command id are still usable.
    let landed = store
        .append(
            StreamRef::new(ACCOUNT, "b"),
            ExpectedVersion::NoStream,
            numbered(5, 1),
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(
        (landed.first_version, landed.last_version, landed.duplicate),
        (1, 1, false)
    );
}

/// `load_stream` (the repository's narrow read) returns exactly the fields `read_stream`
/// returns for every range, with and without `until`.
pub async fn load_stream_matches_read_stream<S: Streams>(store: S) {
    append(&store, ACCOUNT, "a", ExpectedVersion::Any, numbered(1, 3)).await;
    append(&store, ACCOUNT, "b", ExpectedVersion::Any, numbered(1, 2)).await;
    tokio::time::sleep(Duration::from_millis(15)).await;
    append(&store, ACCOUNT, "a", ExpectedVersion::Any, numbered(4, 2)).await;
    let all = read(&store, ACCOUNT, "a", StreamRange::ALL).await;
    let cut = all[2].meta.recorded_at;
    let ranges = [
        StreamRange::ALL,
        StreamRange::from(2),
        StreamRange::from(2).to(4),
        StreamRange::from(5).to(1),
        StreamRange::from(u64::MAX),
        StreamRange::from(1).until(cut),
    ];
    for range in ranges {
        let full: Vec<StreamEvent> = read(&store, ACCOUNT, "a", range)
            .await
            .into_iter()
            .map(StreamEvent::from)
            .collect();
        let narrow = store
            .load_stream(StreamRef::new(ACCOUNT, "a"), range)
            .await
            .unwrap();
        assert_eq!(narrow, full, "{range:?}");
    }
    let until_cut = store
        .load_stream(
            StreamRef::new(ACCOUNT, "a"),
            StreamRange::from(1).until(cut),
        )
        .await
        .unwrap();
    assert_eq!(
        until_cut.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(store
        .load_stream(StreamRef::new(ACCOUNT, "missing"), StreamRange::ALL)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        store
            .load_stream(StreamRef::new(ACCOUNT, "bad\u{0}id"), StreamRange::ALL)
            .await,
        Err(StoreError::InvalidStream { .. })
    ));
}

/// Appends inside a transaction: invisible until it commits, gone if it is dropped, each
/// seeing the versions and command ids the transaction itself wrote, and returned as
/// stored.
pub async fn appends_in_a_transaction_commit_or_roll_back_with_it<S: Store>(store: S) {
    let a = || StreamRef::new(ACCOUNT, "a");
    let command_id = Uuid::new_v4();
    let meta = CommitMeta::new().command_id(command_id);
    let nothing = CommitMeta::default();

    let mut tx = store.begin().await.unwrap();
    store
        .append_in(
            &mut tx,
            a(),
            ExpectedVersion::NoStream,
            numbered(1, 2),
            &nothing,
        )
        .await
        .unwrap();
    store
        .append_in(&mut tx, a(), ExpectedVersion::Exact(2), Vec::new(), &meta)
        .await
        .unwrap();
    assert!(read_all(&store).await.is_empty(), "visible before commit");
    drop(tx);
    assert!(read_all(&store).await.is_empty(), "kept after a rollback");
    assert_eq!(store.head().await.unwrap(), 0);
    assert_eq!(store.stream_version(a()).await.unwrap(), None);
    assert_eq!(store.command_outcome(command_id).await.unwrap(), None);

    let mut tx = store.begin().await.unwrap();
    let (first, first_events) = store
        .append_in(
            &mut tx,
            a(),
            ExpectedVersion::NoStream,
            numbered(1, 2),
            &nothing,
        )
        .await
        .unwrap();
    assert_eq!((first.first_version, first.last_version), (1, 2));
    // A refused append leaves the transaction usable, and reports the version the
    // transaction itself wrote.
    let refused = store
        .append_in(
            &mut tx,
            a(),
            ExpectedVersion::NoStream,
            numbered(9, 1),
            &nothing,
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::WrongExpectedVersion {
                actual: Some(2),
                ..
            })
        ),
        "{refused:?}"
    );
    let (second, second_events) = store
        .append_in(
            &mut tx,
            a(),
            ExpectedVersion::Exact(2),
            numbered(3, 1),
            &nothing,
        )
        .await
        .unwrap();
    assert_eq!((second.first_version, second.last_version), (3, 3));
    let (empty, none) = store
        .append_in(&mut tx, a(), ExpectedVersion::Exact(3), Vec::new(), &meta)
        .await
        .unwrap();
    assert_eq!(empty, AppendOutcome::new(3, 3, 0));
    assert!(none.is_empty());
    // The command id, recorded in this transaction, already counts in it.
    let (again, no_events) = store
        .append_in(&mut tx, a(), ExpectedVersion::Any, numbered(9, 1), &meta)
        .await
        .unwrap();
    assert_eq!(again, empty.clone().into_duplicate());
    assert!(no_events.is_empty());
    store.commit(tx).await.unwrap();

    let stream = read(&store, ACCOUNT, "a", StreamRange::ALL).await;
    assert_eq!(versions(&stream), [1, 2, 3]);
    assert_eq!(ns(&stream), [1, 2, 3]);
    let returned: Vec<RecordedEvent> = first_events.into_iter().chain(second_events).collect();
    assert_eq!(returned, stream, "append_in returns the events as stored");
    assert_eq!(read_all(&store).await, stream);
    assert_eq!(
        store.command_outcome(command_id).await.unwrap(),
        Some(empty.into_duplicate())
    );
}

/// Checkpoints move by compare-and-set inside a transaction: only from the committed
/// position, visible when the transaction commits, and not at all if it is dropped. Of
/// two transactions moving from the same position, the second waits for the first and
/// then refuses.
pub async fn checkpoints_move_by_compare_and_set<S: Store>(store: S) {
    assert_eq!(store.checkpoint("cas").await.unwrap(), 0);

    let mut first = store.begin().await.unwrap();
    assert!(store
        .advance_checkpoint(&mut first, "cas", 0, 5)
        .await
        .unwrap());
    assert_eq!(
        store.checkpoint("cas").await.unwrap(),
        0,
        "not before commit"
    );
    let racing = store.clone();
    let second = tokio::spawn(async move {
        let mut tx = racing.begin().await.unwrap();
        let moved = racing
            .advance_checkpoint(&mut tx, "cas", 0, 3)
            .await
            .unwrap();
        racing.commit(tx).await.unwrap();
        moved
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "the second mover waits for the first"
    );
    store.commit(first).await.unwrap();
    assert!(!second.await.unwrap());
    assert_eq!(store.checkpoint("cas").await.unwrap(), 5);

    let mut tx = store.begin().await.unwrap();
    assert!(!store
        .advance_checkpoint(&mut tx, "cas", 4, 9)
        .await
        .unwrap());
    assert!(!store
        .advance_checkpoint(&mut tx, "absent", 2, 9)
        .await
        .unwrap());
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    assert!(store
        .advance_checkpoint(&mut tx, "cas", 5, 9)
        .await
        .unwrap());
    drop(tx); // rolled back
    assert_eq!(store.checkpoint("cas").await.unwrap(), 5);

    // Back to 0 (a rebuild), and another name moved in the same transaction.
    let mut tx = store.begin().await.unwrap();
    assert!(store
        .advance_checkpoint(&mut tx, "cas", 5, 0)
        .await
        .unwrap());
    assert!(store
        .advance_checkpoint(&mut tx, "other", 0, 3)
        .await
        .unwrap());
    store.commit(tx).await.unwrap();
    assert_eq!(store.checkpoint("cas").await.unwrap(), 0);
    assert_eq!(store.checkpoint("other").await.unwrap(), 3);
    assert_eq!(store.checkpoint("absent").await.unwrap(), 0);
}

/// A checkpoint may carry a cursor beside its position: both are compared and both are
/// stored, a missing checkpoint reads as the default (position 0, no cursor), and a
/// position-only move refuses a checkpoint that has a cursor.
pub async fn checkpoints_carry_a_cursor<S: Store>(store: S) {
    use annals::Checkpoint;

    assert_eq!(
        store.load_checkpoint("feed").await.unwrap(),
        Checkpoint::default()
    );
    let first = Checkpoint::with_cursor(7, "shard-1:0042");
    let mut tx = store.begin().await.unwrap();
    assert!(!store
        .store_checkpoint(&mut tx, "feed", &Checkpoint::with_cursor(0, "x"), &first)
        .await
        .unwrap());
    assert!(store
        .store_checkpoint(&mut tx, "feed", &Checkpoint::default(), &first)
        .await
        .unwrap());
    store.commit(tx).await.unwrap();
    assert_eq!(store.load_checkpoint("feed").await.unwrap(), first);
    assert_eq!(store.checkpoint("feed").await.unwrap(), 7);

    // Same position, another cursor: refused; the stored one: moved.
    let next = Checkpoint::with_cursor(9, "shard-1:0050");
    let mut tx = store.begin().await.unwrap();
    assert!(!store
        .store_checkpoint(
            &mut tx,
            "feed",
            &Checkpoint::with_cursor(7, "shard-1:0041"),
            &next
        )
        .await
        .unwrap());
    assert!(!store
        .advance_checkpoint(&mut tx, "feed", 7, 8)
        .await
        .unwrap());
    assert!(store
        .store_checkpoint(&mut tx, "feed", &first, &next)
        .await
        .unwrap());
    store.commit(tx).await.unwrap();
    assert_eq!(store.load_checkpoint("feed").await.unwrap(), next);

    // Back to a position alone.
    let mut tx = store.begin().await.unwrap();
    assert!(store
        .store_checkpoint(&mut tx, "feed", &next, &Checkpoint::at(10))
        .await
        .unwrap());
    store.commit(tx).await.unwrap();
    assert_eq!(
        store.load_checkpoint("feed").await.unwrap(),
        Checkpoint::at(10)
    );
}

/// A command id repeated with another fingerprint is refused, naming the id; the same
/// fingerprint, or none on either side (records from before fingerprints), is a repeat.
pub async fn command_id_with_another_fingerprint_is_refused<S: Streams>(store: S) {
    let command_id = Uuid::new_v4();
    let meta = |fingerprint: Option<&str>| {
        let meta = CommitMeta::new().command_id(command_id);
        match fingerprint {
            Some(f) => meta.fingerprint(f),
            None => meta,
        }
    };
    let stream = StreamRef::new(ACCOUNT, "a");
    let first = store
        .append(
            stream,
            ExpectedVersion::NoStream,
            numbered(1, 2),
            &meta(Some("f1")),
        )
        .await
        .unwrap();
    assert_eq!(first.fingerprint.as_deref(), Some("f1"));
    let snapshot = observe(&store, ACCOUNT, "a").await;

    for expected in [ExpectedVersion::Exact(2), ExpectedVersion::Any] {
        let refused = store
            .append(stream, expected, numbered(3, 1), &meta(Some("f2")))
            .await;
        match &refused {
            Err(StoreError::CommandIdMismatch {
                command_id: reused,
                stream_type,
                stream_id,
            }) => assert_eq!(
                (*reused, stream_type.as_str(), stream_id.as_str()),
                (command_id, ACCOUNT, "a")
            ),
            other => panic!("another command under {command_id} returned {other:?}"),
        }
        let message = refused.unwrap_err().to_string();
        assert!(
            message.contains(&command_id.to_string()),
            "the error names the id: {message}"
        );
    }
    assert_eq!(observe(&store, ACCOUNT, "a").await, snapshot);

    for fingerprint in [Some("f1"), None] {
        let again = store
            .append(
                stream,
                ExpectedVersion::Any,
                numbered(3, 1),
                &meta(fingerprint),
            )
            .await
            .unwrap_or_else(|e| panic!("repeat with fingerprint {fingerprint:?}: {e}"));
        assert_eq!(again, first.clone().into_duplicate());
    }
    assert_eq!(
        store.command_outcome(command_id).await.unwrap(),
        Some(first.clone().into_duplicate())
    );

    // A record without a fingerprint (written before fingerprints existed) accepts any.
    let legacy = Uuid::new_v4();
    let plain = CommitMeta::new().command_id(legacy);
    let recorded = store
        .append(stream, ExpectedVersion::Exact(2), numbered(3, 1), &plain)
        .await
        .unwrap();
    let again = store
        .append(
            stream,
            ExpectedVersion::Any,
            numbered(4, 1),
            &plain.clone().fingerprint("f9"),
        )
        .await
        .unwrap();
    assert_eq!(again, recorded.into_duplicate());

    // An append without events records its fingerprint too.
    let empty = CommitMeta::new().command_id(Uuid::new_v4());
    store
        .append(
            stream,
            ExpectedVersion::Any,
            Vec::new(),
            &empty.clone().fingerprint("e1"),
        )
        .await
        .unwrap();
    let refused = store
        .append(
            stream,
            ExpectedVersion::Any,
            Vec::new(),
            &empty.fingerprint("e2"),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::CommandIdMismatch { .. })),
        "{refused:?}"
    );
}
