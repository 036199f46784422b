//! What `annals::Repository` guarantees on top of a store: policies, upcasting, decode
//! errors, no lost update, snapshots, idempotent commands, temporal loads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use annals::store::{EventStore, NewEvent, Snapshot, StreamRange};
use annals::{
    Aggregate, CommitMeta, DecodeError, Error, ExecuteError, Executed, ExpectedVersion, Loaded,
    RecordedEvent, Repository, StoreError, StreamRef, Uuid,
};
use serde_json::{json, Value};

use crate::Streams;

use crate::domain::{
    Counter, CounterError, CounterEvent, CounterServices, CounterV2, Create, Created, Gate,
    Increment, Incremented, ReplayedCounter, Step, Stepped, Touch, COUNTER,
};
use crate::store_cases::{append, read};

fn counters<S: Streams>(store: &S) -> Repository<Counter, S> {
    Repository::new(store.clone())
}

fn gated<S: Streams>(store: &S, gate: Gate) -> Repository<Counter, S> {
    Repository::with_services(
        store.clone(),
        CounterServices {
            gate: Arc::new(gate),
        },
    )
}

fn id(s: &str) -> String {
    s.to_owned()
}

async fn create<S: Streams>(repo: &Repository<Counter, S>, counter: &str) {
    repo.execute(Create {
        id: id(counter),
        name: format!("counter {counter}"),
    })
    .await
    .unwrap_or_else(|e| panic!("creating {counter}: {e}"));
}

async fn increment<S: Streams>(
    repo: &Repository<Counter, S>,
    counter: &str,
    by: u64,
) -> Executed<CounterEvent> {
    repo.execute(Increment {
        id: id(counter),
        by,
    })
    .await
    .unwrap_or_else(|e| panic!("incrementing {counter}: {e}"))
}

async fn load<A: Aggregate, S: EventStore>(repo: &Repository<A, S>, counter: &str) -> Loaded<A>
where
    A::Id: From<String>,
    A::Snapshots: annals::SnapshotPolicy<S>,
{
    repo.load(&A::Id::from(id(counter)))
        .await
        .unwrap_or_else(|e| panic!("loading {counter}: {e}"))
}

/// The state a full replay of the stream gives, ignoring snapshots.
async fn replayed<S: Streams>(store: &S, counter: &str) -> Loaded<Counter> {
    let Loaded { state, version, .. } = load(
        &Repository::<ReplayedCounter, S>::new(store.clone()),
        counter,
    )
    .await;
    Loaded::new(state.0, version)
}

fn counter_state(name: &str, total: u64, events: u64) -> Counter {
    Counter {
        name: Some(format!("counter {name}")),
        total,
        events,
        lost_updates: 0,
    }
}

pub async fn execute_checks_policies<S: Streams>(store: S) {
    let repo = counters(&store);
    match repo.execute(Increment { id: id("c"), by: 1 }).await {
        Err(ExecuteError::Policy {
            stream_type,
            stream_id,
            exists: false,
        }) => assert_eq!((stream_type.as_str(), stream_id.as_str()), (COUNTER, "c")),
        other => panic!("increment on a missing counter returned {other:?}"),
    }
    let touched = repo.execute(Touch { id: id("c") }).await.unwrap();
    assert_eq!((touched.version, touched.events.len()), (0, 0));
    assert_eq!(
        store
            .stream_version(StreamRef::new(COUNTER, "c"))
            .await
            .unwrap(),
        None
    );

    let created = repo
        .execute(Create {
            id: id("c"),
            name: "counter c".into(),
        })
        .await
        .unwrap();
    assert!(created.position > 0, "the position of the created event");
    assert_eq!(
        summary(&created),
        Summary {
            stream_id: id("c"),
            version: 1,
            events: vec![Created {
                name: "counter c".into()
            }
            .into()],
            duplicate: false,
        }
    );
    let again = repo
        .execute(Create {
            id: id("c"),
            name: "again".into(),
        })
        .await;
    assert!(
        matches!(again, Err(ExecuteError::Policy { exists: true, .. })),
        "{again:?}"
    );
    let err = again.unwrap_err().to_string();
    assert_eq!(err, "stream counter/c already exists");

    let zero = repo.execute(Increment { id: id("c"), by: 0 }).await;
    assert_eq!(
        zero.as_ref().err().and_then(ExecuteError::rejected),
        Some(&CounterError::Zero)
    );
    assert_eq!(
        store
            .stream_version(StreamRef::new(COUNTER, "c"))
            .await
            .unwrap(),
        Some(1)
    );

    let five = increment(&repo, "c", 5).await;
    assert_eq!(
        (five.version, five.events.clone()),
        (2, vec![Incremented { by: 5 }.into()])
    );
    let touched = repo.execute(Touch { id: id("c") }).await.unwrap();
    assert_eq!((touched.version, touched.events.len()), (2, 0));
    assert_eq!(
        store
            .stream_version(StreamRef::new(COUNTER, "c"))
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        load(&repo, "c").await,
        Loaded::new(counter_state("c", 5, 2), 2)
    );
}

pub async fn upcasts_stored_old_versions<S: Streams>(store: S) {
    // Events as an older release wrote them: version 1 of `Incremented`, stored under its
    // former name `Added` and under the current name.
    let old = vec![
        NewEvent::new("Created", 1, json!({ "name": "counter old" }).to_string()),
        NewEvent::new("Added", 1, json!({ "amount": 4 }).to_string()),
        NewEvent::new("Incremented", 1, json!({ "amount": 3 }).to_string()),
        NewEvent::new("Incremented", 2, json!({ "by": 10 }).to_string()),
    ];
    append(&store, COUNTER, "old", ExpectedVersion::NoStream, old).await;
    let before = read(&store, COUNTER, "old", StreamRange::ALL).await;

    let repo = counters(&store);
    assert_eq!(
        load(&repo, "old").await,
        Loaded::new(counter_state("old", 17, 4), 4)
    );

    // New events are written at the current version; old ones stay as they were.
    increment(&repo, "old", 1).await;
    let after = read(&store, COUNTER, "old", StreamRange::ALL).await;
    assert_eq!(after[..4], before[..]);
    let new = &after[4];
    assert_eq!(
        (new.meta.event_type.as_str(), new.meta.event_version),
        ("Incremented", 2)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&new.payload).unwrap(),
        json!({ "by": 1 })
    );
    assert_eq!(load(&repo, "old").await.state.total, 18);
}

/// Plants a good event and then `bad` in stream `counter`, and checks that loading and
/// executing fail with a decode error naming the bad event, without touching the data.
async fn assert_decode_error<S: Streams>(
    store: &S,
    counter: &str,
    bad: NewEvent,
    check_reason: impl Fn(&DecodeError) -> bool,
) {
    let (event_type, event_version) = (bad.event_type.clone(), bad.event_version);
    let good = NewEvent::new("Created", 1, json!({ "name": "counter" }).to_string());
    append(
        store,
        COUNTER,
        counter,
        ExpectedVersion::NoStream,
        vec![good, bad],
    )
    .await;
    let before = read(store, COUNTER, counter, StreamRange::ALL).await;
    let log_before = store.log().await;
    let position = before[1].meta.position;

    let check = |error: &Error| match error {
        Error::Decode {
            stream_type,
            stream_id,
            version,
            position: p,
            event_type: t,
            event_version: v,
            reason,
        } => {
            assert_eq!(
                (
                    stream_type.as_str(),
                    stream_id.as_str(),
                    *version,
                    *p,
                    t.as_str(),
                    *v
                ),
                (
                    COUNTER,
                    counter,
                    2,
                    position,
                    event_type.as_str(),
                    event_version
                )
            );
            assert!(check_reason(reason), "unexpected reason {reason:?}");
            let message = error.to_string();
            for needle in [
                format!("`{event_type}` v{event_version}"),
                format!("stream {COUNTER}/{counter}"),
                "at version 2".to_owned(),
                format!("position {position}"),
            ] {
                assert!(message.contains(&needle), "{message:?} lacks {needle:?}");
            }
        }
        other => panic!("expected a decode error, got {other:?}"),
    };

    let repo = counters(store);
    let id = id(counter);
    check(&repo.load(&id).await.unwrap_err());
    check(&repo.load_at_version(&id, 2).await.unwrap_err());
    check(
        &repo
            .load_as_of(&id, annals::OffsetDateTime::now_utc())
            .await
            .unwrap_err(),
    );
    // The events before the bad one still load.
    assert_eq!(repo.load_at_version(&id, 1).await.unwrap().version, 1);
    match repo
        .execute(Increment {
            id: id.clone(),
            by: 1,
        })
        .await
    {
        Err(ExecuteError::Failed(error)) => check(&error),
        other => panic!("executing on a stream with a bad event returned {other:?}"),
    }
    assert_eq!(
        read(store, COUNTER, counter, StreamRange::ALL).await,
        before
    );
    assert_eq!(store.log().await, log_before);
}

pub async fn malformed_payload_is_a_decode_error<S: Streams>(store: S) {
    let bad = NewEvent::new("Incremented", 2, r#"{"by": 3,"#.to_owned());
    // A store may refuse a payload that is not JSON at all; if it does, nothing is stored.
    // If it stores it, loading must report it.
    let probe = store
        .append(
            StreamRef::new(COUNTER, "probe"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Incremented", 2, bad.payload.clone())],
            &CommitMeta::default(),
        )
        .await;
    if let Err(e) = probe {
        assert!(
            !matches!(e, annals::StoreError::WrongExpectedVersion { .. }),
            "{e}"
        );
        assert_eq!(
            store
                .stream_version(StreamRef::new(COUNTER, "probe"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(crate::head_or(&store, 0).await, 0);
        return;
    }
    assert_decode_error(&store, "bad", bad, |r| matches!(r, DecodeError::Payload(_))).await;
}

pub async fn mistyped_payload_is_a_decode_error<S: Streams>(store: S) {
    for (counter, payload) in [
        ("string", json!({ "by": "ten" })),
        ("negative", json!({ "by": -1 })),
        ("missing", json!({})),
        ("array", json!([])),
        ("null", Value::Null),
    ] {
        let bad = NewEvent::new("Incremented", 2, payload.to_string());
        assert_decode_error(&store, counter, bad, |r| {
            matches!(r, DecodeError::Payload(_))
        })
        .await;
    }
}

pub async fn unknown_event_type_is_a_decode_error<S: Streams>(store: S) {
    for (counter, event_type) in [("a", "Exploded"), ("b", "incremented"), ("c", "'; --")] {
        let bad = NewEvent::new(event_type, 1, json!({ "by": 1 }).to_string());
        assert_decode_error(&store, counter, bad, |r| {
            matches!(r, DecodeError::UnknownType)
        })
        .await;
    }
}

pub async fn unknown_event_version_is_a_decode_error<S: Streams>(store: S) {
    // Version 0 cannot be appended (see `validation_cases`); a stored one decodes as unknown
    // like any other version the event type does not know.
    for (counter, version) in [("future", 99), ("past_the_chain", 7)] {
        let bad = NewEvent::new("Incremented", version, json!({ "by": 1 }).to_string());
        assert_decode_error(
            &store,
            counter,
            bad,
            |r| matches!(r, DecodeError::UnknownVersion { found, current: 2 } if *found == version),
        )
        .await;
    }
}

pub async fn no_lost_update<S: Streams>(store: S) {
    const TASKS: u64 = 8;
    const COMMANDS: u64 = 25;
    let repo = counters(&store);
    create(&repo, "hot").await;

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let repo = repo.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for n in 0..COMMANDS {
                    let by = 1 + task * COMMANDS + n;
                    let result = repo.execute(Step { id: id("hot"), by }).await;
                    results.push((by, result));
                }
                results
            })
        })
        .collect();

    let mut applied = BTreeMap::new();
    let mut conflicts = 0;
    for task in tasks {
        for (by, result) in task.await.expect("task panicked") {
            match result {
                Ok(executed) => {
                    assert!(!executed.duplicate);
                    let [CounterEvent::Stepped(Stepped { by: b, .. })] = executed.events[..] else {
                        panic!("unexpected events {:?}", executed.events);
                    };
                    assert_eq!(b, by);
                    let previous = applied.insert(executed.version, by);
                    assert_eq!(
                        previous, None,
                        "two commands reported version {}",
                        executed.version
                    );
                }
                Err(ExecuteError::Conflict {
                    stream_type,
                    stream_id,
                    attempts,
                }) => {
                    assert_eq!((stream_type.as_str(), stream_id.as_str()), (COUNTER, "hot"));
                    assert_eq!(attempts, annals::DEFAULT_MAX_ATTEMPTS);
                    conflicts += 1;
                }
                Err(e) => panic!("step {by} failed: {e}"),
            }
        }
    }
    let succeeded = applied.len() as u64;
    assert_eq!(succeeded + conflicts, TASKS * COMMANDS);
    assert!(succeeded > 0);

    // The stream is exactly the successful commands, one version each, each decided on the
    // state right before it.
    let stream = read(&store, COUNTER, "hot", StreamRange::ALL).await;
    let stored: BTreeMap<u64, u64> = stream[1..]
        .iter()
        .map(|e| {
            let payload: Stepped = serde_json::from_str(&e.payload).expect("a Stepped payload");
            (e.meta.version, payload.by)
        })
        .collect();
    assert_eq!(stored, applied);
    assert_eq!(
        stream.iter().map(|e| e.meta.version).collect::<Vec<_>>(),
        (1..=succeeded + 1).collect::<Vec<_>>()
    );

    let loaded = load(&repo, "hot").await;
    let expected = Loaded::new(
        Counter {
            name: Some("counter hot".into()),
            total: applied.values().sum(),
            events: succeeded + 1,
            lost_updates: 0,
        },
        succeeded + 1,
    );
    assert_eq!(loaded, expected);
    // Snapshots written by the racing commands agree with a full replay.
    assert_eq!(replayed(&store, "hot").await, expected);
}

pub async fn conflicts_surface_after_max_attempts<S: Streams>(store: S) {
    create(&counters(&store), "c").await;

    // Two commands decide on the same version: with one attempt, exactly one wins.
    let repo = gated(&store, Gate::new(2)).max_attempts(1);
    let racers: Vec<_> = [3, 4]
        .into_iter()
        .map(|by| {
            let repo = repo.clone();
            tokio::spawn(async move { (by, repo.execute(Increment { id: id("c"), by }).await) })
        })
        .collect();
    let mut won = Vec::new();
    let mut lost = Vec::new();
    for racer in racers {
        match racer.await.expect("task panicked") {
            (by, Ok(executed)) => won.push((by, executed.version)),
            (by, Err(e)) => lost.push((by, e)),
        }
    }
    assert_eq!(won.len(), 1, "won {won:?}, lost {lost:?}");
    assert_eq!(won[0].1, 2);
    let (_, error) = &lost[0];
    assert!(
        matches!(error, ExecuteError::Conflict { attempts: 1, stream_type, stream_id } if stream_type == COUNTER && stream_id == "c"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "stream counter/c kept changing: gave up after 1 attempts"
    );
    let loaded = load(&counters(&store), "c").await;
    assert_eq!((loaded.version, loaded.state.total), (2, won[0].0));

    // With a second attempt the loser reloads, decides again and applies after the winner.
    let repo = gated(&store, Gate::new(2)).max_attempts(2);
    let racers: Vec<_> = [10, 20]
        .into_iter()
        .map(|by| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.execute(Increment { id: id("c"), by }).await })
        })
        .collect();
    let mut versions = Vec::new();
    for racer in racers {
        versions.push(
            racer
                .await
                .expect("task panicked")
                .expect("retried")
                .version,
        );
    }
    versions.sort_unstable();
    assert_eq!(versions, [3, 4]);
    let loaded = load(&counters(&store), "c").await;
    assert_eq!((loaded.version, loaded.state.total), (4, won[0].0 + 30));
}

/// Creates `counter` and increments it by 1, 2, ..., `increments`.
async fn history<S: Streams>(store: &S, counter: &str, increments: u64) {
    let repo = counters(store);
    create(&repo, counter).await;
    for by in 1..=increments {
        increment(&repo, counter, by).await;
    }
}

fn triangle(n: u64) -> u64 {
    n * (n + 1) / 2
}

pub async fn snapshot_every_n_events<S: Streams>(store: S) {
    history(&store, "c", 9).await; // 10 events: snapshots at 3, 6 and 9
    for (max, expected) in [
        (None, Some(9)),
        (Some(8), Some(6)),
        (Some(5), Some(3)),
        (Some(2), None),
    ] {
        let snapshot = store
            .load_snapshot(StreamRef::new(COUNTER, "c"), max)
            .await
            .unwrap();
        assert_eq!(
            snapshot.as_ref().map(|s| s.version),
            expected,
            "max {max:?}"
        );
        if let Some(snapshot) = snapshot {
            assert_eq!(snapshot.snapshot_version, Counter::SNAPSHOT_VERSION);
            let state: Counter = serde_json::from_str(&snapshot.state).unwrap();
            let replay = Repository::<ReplayedCounter, S>::new(store.clone())
                .load_at_version(&id("c"), snapshot.version)
                .await
                .unwrap();
            assert_eq!(state, replay.state.0);
        }
    }
}

pub async fn load_uses_snapshot_and_newer_events<S: Streams>(store: S) {
    history(&store, "c", 9).await;
    let repo = counters(&store);
    let full = replayed(&store, "c").await;
    assert_eq!(full.state, counter_state("c", triangle(9), 10));
    assert_eq!(load(&repo, "c").await, full);
    for version in 0..=11 {
        let at = repo.load_at_version(&id("c"), version).await.unwrap();
        let replay = Repository::<ReplayedCounter, S>::new(store.clone())
            .load_at_version(&id("c"), version)
            .await
            .unwrap();
        assert_eq!(
            (at.state, at.version),
            (replay.state.0, replay.version),
            "at {version}"
        );
    }

    // Overwrite the snapshot at 9 with a state no replay could produce: a load now shows
    // it plus event 10, which proves it starts from the snapshot.
    let mut forged = counter_state("c", 1_000_000, 9);
    forged.name = Some("forged".into());
    store
        .save_snapshot(
            StreamRef::new(COUNTER, "c"),
            Snapshot::new(
                9,
                Counter::SNAPSHOT_VERSION,
                serde_json::to_string(&forged).unwrap(),
            ),
        )
        .await
        .unwrap();
    let loaded = load(&repo, "c").await;
    assert_eq!(loaded.version, 10);
    assert_eq!(loaded.state.name.as_deref(), Some("forged"));
    assert_eq!(loaded.state.total, 1_000_000 + 9);
    assert_eq!(loaded.state.events, 10);
    // Loads before the forged snapshot start from the older one.
    assert_eq!(
        repo.load_at_version(&id("c"), 8).await.unwrap().state,
        counter_state("c", triangle(7), 8)
    );

    // A snapshot that does not decode is an error naming it, not a silent replay.
    store
        .save_snapshot(
            StreamRef::new(COUNTER, "c"),
            Snapshot::new(
                9,
                Counter::SNAPSHOT_VERSION,
                json!({ "total": "lots" }).to_string(),
            ),
        )
        .await
        .unwrap();
    match repo.load(&id("c")).await {
        Err(Error::Snapshot {
            stream_type,
            stream_id,
            version: 9,
            ..
        }) => assert_eq!((stream_type.as_str(), stream_id.as_str()), (COUNTER, "c")),
        other => panic!("loading from a bad snapshot returned {other:?}"),
    }
}

pub async fn snapshot_version_change_ignores_snapshot<S: Streams>(store: S) {
    history(&store, "c", 9).await;
    // Forge the version-1 snapshot so that using it would show.
    store
        .save_snapshot(
            StreamRef::new(COUNTER, "c"),
            Snapshot::new(
                9,
                1,
                serde_json::to_string(&counter_state("c", 1_000_000, 9)).unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(load(&counters(&store), "c").await.state.total, 1_000_009);

    // The aggregate now declares snapshot version 2 (and a different snapshot shape): the
    // version-1 snapshots are ignored and the stream replayed.
    let v2 = Repository::<CounterV2, S>::new(store.clone());
    let loaded = load(&v2, "c").await;
    assert_eq!(
        (loaded.state.state, loaded.version),
        (counter_state("c", triangle(9), 10), 10)
    );
    for version in [3, 7, 9] {
        let at = v2.load_at_version(&id("c"), version).await.unwrap();
        assert_eq!(at.state.state.total, triangle(version - 1), "at {version}");
    }

    // A version-2 snapshot is used by the new aggregate and ignored by the old one.
    let forged = serde_json::to_string(&json!({ "state": counter_state("c", 7, 10) })).unwrap();
    store
        .save_snapshot(StreamRef::new(COUNTER, "c"), Snapshot::new(10, 2, forged))
        .await
        .unwrap();
    assert_eq!(load(&v2, "c").await.state.state.total, 7);
    assert_eq!(replayed(&store, "c").await.state.total, triangle(9));
}

fn with_command_id(command_id: Uuid) -> CommitMeta {
    CommitMeta::new().command_id(command_id)
}

pub async fn command_id_executes_once<S: Streams>(store: S) {
    let repo = counters(&store);
    let create_id = Uuid::new_v4();
    let create = Create {
        id: id("c"),
        name: "counter c".into(),
    };
    let first = repo
        .execute_with(create.clone(), with_command_id(create_id))
        .await
        .unwrap();
    let again = repo
        .execute_with(create, with_command_id(create_id))
        .await
        .expect("a repeated create is not a policy error");
    assert_eq!((again.position, again.duplicate), (first.position, true));
    assert_eq!(
        summary(&again),
        Summary {
            duplicate: true,
            ..summary(&first)
        }
    );

    let command_id = Uuid::new_v4();
    let meta = {
        let mut meta = CommitMeta::new()
            .command_id(command_id)
            .correlation_id(Uuid::new_v4());
        meta.headers = [("by".to_owned(), "test".to_owned())].into();
        meta
    };
    let five = repo
        .execute_with(Increment { id: id("c"), by: 5 }, meta.clone())
        .await
        .unwrap();
    let expected = Summary {
        stream_id: id("c"),
        version: 2,
        events: vec![Incremented { by: 5 }.into()],
        duplicate: false,
    };
    assert_eq!(summary(&five), expected);
    let duplicate = Summary {
        duplicate: true,
        ..expected.clone()
    };
    assert_eq!(
        summary(
            &repo
                .execute_with(Increment { id: id("c"), by: 5 }, meta.clone())
                .await
                .unwrap()
        ),
        duplicate
    );

    // Other commands move the stream on; the command id still returns the first outcome,
    // and a different command under it is refused.
    increment(&repo, "c", 7).await;
    assert_eq!(
        summary(
            &repo
                .execute_with(Increment { id: id("c"), by: 5 }, meta.clone())
                .await
                .unwrap()
        ),
        duplicate
    );
    let refused = repo
        .execute_with(Increment { id: id("c"), by: 9 }, meta.clone())
        .await;
    assert!(
        matches!(
            refused,
            Err(ExecuteError::Failed(Error::Store(
                StoreError::CommandIdMismatch { .. }
            )))
        ),
        "{refused:?}"
    );
    let stream = read(&store, COUNTER, "c", StreamRange::ALL).await;
    assert_eq!(stream.len(), 3);
    assert_eq!(stream[1].meta.command_id, Some(command_id));
    assert_eq!(stream[1].meta.correlation_id, meta.correlation_id);
    assert_eq!(stream[1].meta.headers, meta.headers);
    assert_eq!(stream[2].meta.command_id, None);
    assert_eq!(load(&repo, "c").await.state.total, 12);

    // A rejected command does not consume its id.
    let rejected_id = Uuid::new_v4();
    let zero = repo
        .execute_with(
            Increment { id: id("c"), by: 0 },
            with_command_id(rejected_id),
        )
        .await;
    assert!(
        matches!(zero, Err(ExecuteError::Rejected(CounterError::Zero))),
        "{zero:?}"
    );
    let one = repo
        .execute_with(
            Increment { id: id("c"), by: 1 },
            with_command_id(rejected_id),
        )
        .await
        .unwrap();
    assert_eq!((one.version, one.duplicate), (4, false));
}

pub async fn command_id_without_events_executes_once<S: Streams>(store: S) {
    let repo = counters(&store);
    // On a missing stream: nothing appended, the stream still missing, the id recorded.
    let on_missing = Uuid::new_v4();
    let first = repo
        .execute_with(Touch { id: id("c") }, with_command_id(on_missing))
        .await
        .unwrap();
    assert_eq!(
        (first.version, first.events.len(), first.duplicate),
        (0, 0, false)
    );
    assert_eq!(
        store
            .stream_version(StreamRef::new(COUNTER, "c"))
            .await
            .unwrap(),
        None
    );

    create(&repo, "c").await;
    let touch_id = Uuid::new_v4();
    let first = repo
        .execute_with(Touch { id: id("c") }, with_command_id(touch_id))
        .await
        .unwrap();
    assert_eq!(
        (first.version, first.events.len(), first.duplicate),
        (1, 0, false)
    );
    increment(&repo, "c", 3).await;

    // Repeats return the first outcome: no events, at the version it saw.
    let again = repo
        .execute_with(Touch { id: id("c") }, with_command_id(touch_id))
        .await
        .unwrap();
    assert_eq!(
        summary(&again),
        Summary {
            stream_id: id("c"),
            version: 1,
            events: Vec::new(),
            duplicate: true
        }
    );
    let again = repo
        .execute_with(Touch { id: id("c") }, with_command_id(on_missing))
        .await
        .unwrap();
    assert_eq!(
        (again.version, again.events.len(), again.duplicate),
        (0, 0, true)
    );
    assert_eq!(
        store
            .stream_version(StreamRef::new(COUNTER, "c"))
            .await
            .unwrap(),
        Some(2)
    );
}

pub async fn concurrent_command_id_executes_once<S: Streams>(store: S) {
    create(&counters(&store), "c").await;
    for round in 0..3_u64 {
        // Both executions pass the "seen this id?" check and decide on the same version
        // before either appends.
        let repo = gated(&store, Gate::new(2));
        let command_id = Uuid::new_v4();
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let repo = repo.clone();
                tokio::spawn(async move {
                    repo.execute_with(
                        Increment { id: id("c"), by: 5 },
                        with_command_id(command_id),
                    )
                    .await
                })
            })
            .collect();
        let mut results = Vec::new();
        for racer in racers {
            results.push(racer.await.expect("task panicked").expect("execute failed"));
        }
        results.sort_by_key(|r| r.duplicate);
        let version = 2 + round;
        let first = Summary {
            stream_id: id("c"),
            version,
            events: vec![Incremented { by: 5 }.into()],
            duplicate: false,
        };
        assert_eq!(
            results.iter().map(summary).collect::<Vec<_>>(),
            [
                first.clone(),
                Summary {
                    duplicate: true,
                    ..first
                }
            ]
        );
        let stream = read(&store, COUNTER, "c", StreamRange::ALL).await;
        assert_eq!(
            stream.len() as u64,
            version,
            "exactly one append per command id"
        );
    }
    assert_eq!(load(&counters(&store), "c").await.state.total, 15);
}

pub async fn load_at_version<S: Streams>(store: S) {
    history(&store, "c", 7).await; // versions 1..=8, snapshots at 3 and 6
    let repo = counters(&store);
    for version in 0..=10 {
        let loaded = repo.load_at_version(&id("c"), version).await.unwrap();
        let expected = match version {
            0 => Loaded::new(Counter::default(), 0),
            v => {
                let v = v.min(8);
                Loaded::new(counter_state("c", triangle(v - 1), v), v)
            }
        };
        assert_eq!(loaded, expected, "at version {version}");
    }
    let latest = repo.load_at_version(&id("c"), u64::MAX).await.unwrap();
    assert_eq!(latest, load(&repo, "c").await);
    let missing = repo.load_at_version(&id("nothing"), 3).await.unwrap();
    assert_eq!(missing, Loaded::new(Counter::default(), 0));
}

pub async fn load_as_of<S: Streams>(store: S) {
    let repo = counters(&store);
    create(&repo, "c").await;
    for by in 1..=3 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        increment(&repo, "c", by).await;
    }
    let stream: Vec<RecordedEvent> = read(&store, COUNTER, "c", StreamRange::ALL).await;
    let at: Vec<_> = stream.iter().map(|e| e.meta.recorded_at).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");

    let micro = time::Duration::microseconds(1);
    let cases = [
        (at[0] - time::Duration::seconds(10), 0),
        (at[0] - micro, 0),
        (at[0], 1),
        (at[1] - micro, 1),
        (at[1], 2),
        (at[2], 3),
        (at[3] - micro, 3),
        (at[3], 4),
        (at[3] + time::Duration::days(1), 4),
    ];
    for (when, version) in cases {
        let loaded = repo.load_as_of(&id("c"), when).await.unwrap();
        let expected = if version == 0 {
            Loaded::new(Counter::default(), 0)
        } else {
            Loaded::new(counter_state("c", triangle(version - 1), version), version)
        };
        assert_eq!(loaded, expected, "as of {when}");
    }
    // As of a time in another offset: the same instant.
    let offset = time::UtcOffset::from_hms(5, 30, 0).unwrap();
    let loaded = repo
        .load_as_of(&id("c"), at[1].to_offset(offset))
        .await
        .unwrap();
    assert_eq!(loaded.version, 2);
}

pub async fn command_id_reused_on_another_stream_is_refused<S: Streams>(store: S) {
    let repo = counters(&store);
    // a and b at version 3, c at version 2.
    for (counter, increments) in [("a", 1), ("b", 2), ("c", 1)] {
        create(&repo, counter).await;
        for by in 1..=increments {
            increment(&repo, counter, by).await;
        }
    }
    let command_id = Uuid::new_v4();
    let first = repo
        .execute_with(
            Increment { id: id("a"), by: 5 },
            with_command_id(command_id),
        )
        .await
        .unwrap();
    assert_eq!(first.version, 3);

    // The first execution appended version 3 of a. Version 3 of b is another command's
    // event, and c has none: neither is this command's outcome.
    for counter in ["b", "c"] {
        let before = read(&store, COUNTER, counter, StreamRange::ALL).await;
        let result = repo
            .execute_with(
                Increment {
                    id: id(counter),
                    by: 5,
                },
                with_command_id(command_id),
            )
            .await;
        match &result {
            Err(ExecuteError::CommandIdReused {
                command_id: reused,
                stream_type,
                stream_id,
            }) => assert_eq!(
                (*reused, stream_type.as_str(), stream_id.as_str()),
                (command_id, COUNTER, counter)
            ),
            other => panic!("a command id reused on {counter} returned {other:?}"),
        }
        assert_eq!(
            result.unwrap_err().to_string(),
            format!(
                "command id {command_id} was already executed on a stream other than counter/{counter}"
            )
        );
        assert_eq!(
            read(&store, COUNTER, counter, StreamRange::ALL).await,
            before
        );
    }
    // On its own stream it is still an ordinary repeat.
    let again = repo
        .execute_with(
            Increment { id: id("a"), by: 5 },
            with_command_id(command_id),
        )
        .await
        .unwrap();
    assert_eq!(
        summary(&again),
        Summary {
            duplicate: true,
            ..summary(&first)
        }
    );
}

/// What a test compares of an [`Executed`] (its position is checked on its own).
#[derive(Debug, Clone, PartialEq)]
struct Summary<E> {
    stream_id: String,
    version: u64,
    events: Vec<E>,
    duplicate: bool,
}

fn summary<E: Clone>(executed: &Executed<E>) -> Summary<E> {
    Summary {
        stream_id: executed.stream_id.clone(),
        version: executed.version,
        events: executed.events.clone(),
        duplicate: executed.duplicate,
    }
}

pub async fn long_streams_load_in_pages<S: Streams>(store: S) {
    history(&store, "c", 40).await; // versions 1..=41
    let full = Loaded::new(counter_state("c", triangle(40), 41), 41);

    // A store honours a read's limit: the first events of the range, no more.
    let versions = |events: Vec<RecordedEvent>| -> Vec<u64> {
        events.iter().map(|e| e.meta.version).collect()
    };
    let page = read(&store, COUNTER, "c", StreamRange::from(5).limit(4)).await;
    assert_eq!(versions(page), [5, 6, 7, 8]);
    let page = read(&store, COUNTER, "c", StreamRange::from(5).to(6).limit(4)).await;
    assert_eq!(versions(page), [5, 6]);
    let page = read(&store, COUNTER, "c", StreamRange::from(40).limit(4)).await;
    assert_eq!(versions(page), [40, 41]);
    assert!(read(&store, COUNTER, "c", StreamRange::ALL.limit(0))
        .await
        .is_empty());
    let loaded = store
        .load_stream(StreamRef::new(COUNTER, "c"), StreamRange::from(2).limit(3))
        .await
        .unwrap();
    let loaded: Vec<u64> = loaded.iter().map(|e| e.version).collect();
    assert_eq!(loaded, [2, 3, 4]);

    // Pages that divide the stream evenly, unevenly, and one event at a time.
    for page in [1, 3, 41, 1000] {
        let replayed = Repository::<ReplayedCounter, S>::new(store.clone()).load_page(page);
        let Loaded { state, version, .. } = replayed.load(&id("c")).await.unwrap();
        assert_eq!(Loaded::new(state.0, version), full, "pages of {page}");
        let counters = counters(&store).load_page(page);
        assert_eq!(
            load(&counters, "c").await,
            full,
            "pages of {page}, snapshots"
        );
        for version in [1, 3, 4, 40] {
            let loaded = replayed.load_at_version(&id("c"), version).await.unwrap();
            assert_eq!(loaded.version, version, "pages of {page}");
            assert_eq!(loaded.state.0.total, triangle(version - 1));
        }
        let now = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
        let as_of = replayed.load_as_of(&id("c"), now).await.unwrap();
        assert_eq!(as_of.version, 41, "pages of {page}");
    }

    // Commands on a long stream see all of it, conflicts included.
    let counters = counters(&store).load_page(4);
    let executed = increment(&counters, "c", 41).await;
    assert_eq!(executed.version, 42);
    assert_eq!(load(&counters, "c").await.state.total, triangle(41));
}

/// A different command (other fields or another type) reusing a command id on the same
/// stream is refused with an error naming the id; the same command is still a repeat.
pub async fn command_id_reused_by_another_command_is_refused<S: Streams>(store: S) {
    let repo = counters(&store);
    create(&repo, "a").await;
    let command_id = Uuid::new_v4();
    let first = repo
        .execute_with(
            Increment { id: id("a"), by: 5 },
            with_command_id(command_id),
        )
        .await
        .unwrap();
    let before = read(&store, COUNTER, "a", StreamRange::ALL).await;

    let refused = repo
        .execute_with(
            Increment { id: id("a"), by: 7 },
            with_command_id(command_id),
        )
        .await;
    match &refused {
        Err(ExecuteError::Failed(Error::Store(StoreError::CommandIdMismatch {
            command_id: reused,
            stream_type,
            stream_id,
        }))) => assert_eq!(
            (*reused, stream_type.as_str(), stream_id.as_str()),
            (command_id, COUNTER, "a")
        ),
        other => panic!("another command under the same id returned {other:?}"),
    }
    assert_eq!(
        refused.unwrap_err().to_string(),
        format!(
            "command id {command_id} was already used by a different command; refusing to \
             append to counter/a under it (give each command its own id)"
        )
    );
    // Same fields, another command type.
    let refused = repo
        .execute_with(Step { id: id("a"), by: 5 }, with_command_id(command_id))
        .await;
    assert!(
        matches!(
            refused,
            Err(ExecuteError::Failed(Error::Store(
                StoreError::CommandIdMismatch { .. }
            )))
        ),
        "{refused:?}"
    );
    assert_eq!(read(&store, COUNTER, "a", StreamRange::ALL).await, before);

    let again = repo
        .execute_with(
            Increment { id: id("a"), by: 5 },
            with_command_id(command_id),
        )
        .await
        .unwrap();
    assert_eq!(
        summary(&again),
        Summary {
            duplicate: true,
            ..summary(&first)
        }
    );
}
