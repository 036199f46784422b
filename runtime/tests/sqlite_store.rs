//! SQLite-specific behaviour of `SqliteStore`, against real database files in a temp dir.
//! (The behaviour every store shares is the conformance suite's, in `tests/`.)
#![cfg(feature = "sqlite")]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use annals::store::MAX_STREAM_ID_LEN;
use annals::store::{
    EventFilter, EventLog, EventStore, Headers, NewEvent, Snapshot, SnapshotStore, StreamRange,
};
use annals::{
    CommitMeta, ExpectedVersion, RecordedEvent, SqliteStore, StoreError, StreamRef, Uuid,
};

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "annals-sqlite-{test}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("events.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn event(event_type: &str, n: u32) -> NewEvent {
    NewEvent::new(event_type, 1, format!(r#"{{"n":{n}}}"#))
}

fn no_meta() -> CommitMeta {
    CommitMeta::new()
}

async fn close(store: SqliteStore) {
    store.pool().close().await;
}

#[tokio::test]
async fn a_reopened_file_has_everything_written_before() {
    let dir = TempDir::new("reopen");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    assert!(dir.db().exists());
    store
        .append(
            StreamRef::new("account", "1"),
            ExpectedVersion::NoStream,
            vec![event("Opened", 1), event("Deposited", 2)],
            &no_meta(),
        )
        .await
        .unwrap();
    store
        .save_snapshot(
            StreamRef::new("account", "1"),
            Snapshot::new(2, 1, "{}".into()),
        )
        .await
        .unwrap();
    let before = store
        .read_stream(StreamRef::new("account", "1"), StreamRange::ALL)
        .await
        .unwrap();
    close(store).await;

    let store = SqliteStore::open(dir.db()).await.unwrap();
    let after = store
        .read_stream(StreamRef::new("account", "1"), StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(after, before);
    assert_eq!(after.len(), 2);
    assert_eq!(
        store
            .stream_version(StreamRef::new("account", "1"))
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(store.head().await.unwrap(), 2);
    assert_eq!(
        store
            .load_snapshot(StreamRef::new("account", "1"), None)
            .await
            .unwrap()
            .map(|s| s.version),
        Some(2)
    );
    // Positions continue after the reopen.
    let outcome = store
        .append(
            StreamRef::new("account", "1"),
            ExpectedVersion::Exact(2),
            vec![event("Deposited", 3)],
            &no_meta(),
        )
        .await
        .unwrap();
    assert_eq!((outcome.last_version, outcome.last_position), (3, 3));
}

#[tokio::test]
async fn migrations_run_once_and_are_recorded() {
    let dir = TempDir::new("migrations");
    for _ in 0..3 {
        let store = SqliteStore::open(dir.db()).await.unwrap();
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT version, name, applied_at FROM annals_migrations ORDER BY version",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0].0, rows[0].1.as_str()), (1, "initial"));
        assert_eq!((rows[1].0, rows[1].1.as_str()), (2, "checkpoints"));
        assert!(
            rows.iter().all(|r| r.2 > 1_600_000_000_000_000),
            "applied_at in micros"
        );
        close(store).await;
    }
}

#[tokio::test]
async fn concurrent_opens_of_a_new_file_migrate_once() {
    let dir = TempDir::new("concurrent-open");
    let opens: Vec<_> = (0..4)
        .map(|_| tokio::spawn(SqliteStore::open(dir.db())))
        .collect();
    for open in opens {
        let store = open.await.unwrap().unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM annals_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(count, 2);
    }
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused_untouched() {
    let dir = TempDir::new("newer");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    store
        .append(
            StreamRef::new("t", "1"),
            ExpectedVersion::Any,
            vec![event("E", 1)],
            &no_meta(),
        )
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO annals_migrations (version, name, applied_at) VALUES (99, 'future', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    close(store).await;

    let err = SqliteStore::open(dir.db()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                known: 2
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("version 99"), "{err}");

    // Still readable with the newer migration removed: nothing was changed.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.db().display()))
        .await
        .unwrap();
    sqlx::query("DELETE FROM annals_migrations WHERE version = 99")
        .execute(&pool)
        .await
        .unwrap();
    let store = SqliteStore::options().with_pool(pool).await.unwrap();
    assert_eq!(
        store
            .stream_version(StreamRef::new("t", "1"))
            .await
            .unwrap(),
        Some(1)
    );
}

#[tokio::test]
async fn a_renamed_migration_is_refused() {
    let dir = TempDir::new("renamed");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    sqlx::query("UPDATE annals_migrations SET name = 'something-else' WHERE version = 1")
        .execute(store.pool())
        .await
        .unwrap();
    close(store).await;
    let err = SqliteStore::open(dir.db()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Migration { version: 1, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn file_connections_use_wal_normal_sync_and_foreign_keys() {
    let dir = TempDir::new("pragmas");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(sync, 1, "NORMAL");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(busy >= 1000, "busy timeout {busy} ms");
    assert!(dir.0.join("events.db-wal").exists());
}

#[tokio::test]
async fn an_in_memory_store_is_shared_by_clones_and_private_to_itself() {
    for store in [
        SqliteStore::in_memory().await.unwrap(),
        SqliteStore::open(":memory:").await.unwrap(),
    ] {
        let clone = store.clone();
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .append(
                            StreamRef::new("t", &i.to_string()),
                            ExpectedVersion::NoStream,
                            vec![event("E", i)],
                            &no_meta(),
                        )
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(clone.head().await.unwrap(), 4);
        assert_eq!(
            clone
                .read_all(0, 100, &EventFilter::all())
                .await
                .unwrap()
                .len(),
            4
        );
    }
    let other = SqliteStore::in_memory().await.unwrap();
    assert_eq!(other.head().await.unwrap(), 0);
}

#[tokio::test]
async fn expected_version_modes() {
    let dir = TempDir::new("expected");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let append = |expected, n| {
        let store = store.clone();
        async move {
            store
                .append(
                    StreamRef::new("acc", "x"),
                    expected,
                    vec![event("E", n)],
                    &no_meta(),
                )
                .await
        }
    };
    let wrong = |result: Result<_, StoreError>, want_actual: Option<u64>| match result {
        Err(StoreError::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, want_actual),
        other => panic!("expected a version conflict, got {other:?}"),
    };

    wrong(append(ExpectedVersion::Exists, 0).await, None);
    wrong(append(ExpectedVersion::Exact(1), 0).await, None);
    wrong(append(ExpectedVersion::Exact(u64::MAX), 0).await, None);
    assert_eq!(
        store
            .stream_version(StreamRef::new("acc", "x"))
            .await
            .unwrap(),
        None
    );

    let first = append(ExpectedVersion::NoStream, 1).await.unwrap();
    assert_eq!((first.first_version, first.last_version), (1, 1));
    wrong(append(ExpectedVersion::NoStream, 0).await, Some(1));
    wrong(append(ExpectedVersion::Exact(0), 0).await, Some(1));
    wrong(append(ExpectedVersion::Exact(2), 0).await, Some(1));
    wrong(append(ExpectedVersion::Exact(u64::MAX), 0).await, Some(1));
    assert_eq!(
        append(ExpectedVersion::Exact(1), 2)
            .await
            .unwrap()
            .last_version,
        2
    );
    assert_eq!(
        append(ExpectedVersion::Exists, 3)
            .await
            .unwrap()
            .last_version,
        3
    );
    assert_eq!(
        append(ExpectedVersion::Any, 4).await.unwrap().last_version,
        4
    );

    let err = append(ExpectedVersion::Exact(9), 0).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "stream acc/x is at version 4, expected version 9"
    );

    // Exact(0) on a missing stream is "at version 0".
    let other = store
        .append(
            StreamRef::new("acc", "y"),
            ExpectedVersion::Exact(0),
            vec![event("E", 0)],
            &no_meta(),
        )
        .await
        .unwrap();
    assert_eq!(other.last_version, 1);

    let versions: Vec<u64> = store
        .read_stream(StreamRef::new("acc", "x"), StreamRange::ALL)
        .await
        .unwrap()
        .iter()
        .map(|e| e.meta.version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_never_both_succeed_from_one_version() {
    let dir = TempDir::new("race");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    // Stores opened separately share nothing in-process, like two processes: only SQLite's
    // write lock orders their appends.
    let stores = [
        store.clone(),
        SqliteStore::open(dir.db()).await.unwrap(),
        SqliteStore::open(dir.db()).await.unwrap(),
        SqliteStore::open(dir.db()).await.unwrap(),
    ];
    const TASKS: u32 = 8;
    const ROUNDS: u64 = 10;
    for round in 0..ROUNDS {
        let current = store
            .stream_version(StreamRef::new("race", "one"))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(current, round * 2);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS as usize));
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let store = stores[i as usize % stores.len()].clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .append(
                            StreamRef::new("race", "one"),
                            ExpectedVersion::Exact(current),
                            vec![event("E", i), event("F", i)],
                            &no_meta(),
                        )
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(outcome) => {
                    winners += 1;
                    assert_eq!(
                        (outcome.first_version, outcome.last_version),
                        (current + 1, current + 2)
                    );
                }
                Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                    assert_eq!(actual, Some(current + 2));
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let events = store
        .read_stream(StreamRef::new("race", "one"), StreamRange::ALL)
        .await
        .unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.meta.version).collect();
    assert_eq!(versions, (1..=ROUNDS * 2).collect::<Vec<_>>());
    // Each round's two events come from one winner.
    for pair in events.chunks(2) {
        assert_eq!(pair[0].payload, pair[1].payload);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_read_modify_append_loses_no_update() {
    let dir = TempDir::new("no-lost-update");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let other = SqliteStore::open(dir.db()).await.unwrap();
    const TASKS: u32 = 8;
    const PER_TASK: u32 = 15;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = if t % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move {
                let mut conflicts = 0u32;
                for n in 0..PER_TASK {
                    loop {
                        let version = store
                            .stream_version(StreamRef::new("acc", "hot"))
                            .await
                            .unwrap();
                        let expected =
                            version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                        match store
                            .append(
                                StreamRef::new("acc", "hot"),
                                expected,
                                vec![event("E", t * 1000 + n)],
                                &no_meta(),
                            )
                            .await
                        {
                            Ok(outcome) => {
                                assert_eq!(outcome.last_version, version.unwrap_or(0) + 1);
                                break;
                            }
                            Err(StoreError::WrongExpectedVersion { .. }) => conflicts += 1,
                            Err(e) => panic!("unexpected error {e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let events = store
        .read_stream(StreamRef::new("acc", "hot"), StreamRange::ALL)
        .await
        .unwrap();
    let total = u64::from(TASKS * PER_TASK);
    assert_eq!(events.len() as u64, total);
    let versions: Vec<u64> = events.iter().map(|e| e.meta.version).collect();
    assert_eq!(versions, (1..=total).collect::<Vec<_>>());
    let payloads: HashSet<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    assert_eq!(payloads.len() as u64, total, "every append landed once");
    assert_eq!(
        store
            .stream_version(StreamRef::new("acc", "hot"))
            .await
            .unwrap(),
        Some(total)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unchecked_appends_from_separate_stores_all_land() {
    let dir = TempDir::new("any");
    let first = SqliteStore::open(dir.db()).await.unwrap();
    let second = SqliteStore::open(dir.db()).await.unwrap();
    let tasks: Vec<_> = (0..8u32)
        .map(|t| {
            let store = if t % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tokio::spawn(async move {
                for n in 0..10 {
                    // `Any` and `Exists` read the version before writing: only the write
                    // lock taken up front keeps that read current.
                    let expected = if n == 0 {
                        ExpectedVersion::Any
                    } else {
                        ExpectedVersion::Exists
                    };
                    store
                        .append(
                            StreamRef::new("acc", "shared"),
                            expected,
                            vec![event("E", t * 100 + n)],
                            &no_meta(),
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let events = first
        .read_stream(StreamRef::new("acc", "shared"), StreamRange::ALL)
        .await
        .unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.meta.version).collect();
    assert_eq!(versions, (1..=80).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_command_id_appends_once() {
    let dir = TempDir::new("idempotent");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let meta = CommitMeta::new().command_id(Uuid::new_v4());
    store
        .append(
            StreamRef::new("acc", "1"),
            ExpectedVersion::Any,
            vec![event("E", 0)],
            &no_meta(),
        )
        .await
        .unwrap();
    let first = store
        .append(
            StreamRef::new("acc", "1"),
            ExpectedVersion::Exact(1),
            vec![event("E", 1), event("E", 2)],
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            first.first_version,
            first.last_version,
            first.last_position,
            first.duplicate
        ),
        (2, 3, 3, false)
    );
    // The retry's expected version is stale and its events differ: still the first outcome.
    let again = store
        .append(
            StreamRef::new("acc", "1"),
            ExpectedVersion::Exact(1),
            vec![event("Other", 9)],
            &meta,
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.first_version, again.last_version, again.last_position),
        (2, 3, 3)
    );
    assert_eq!(
        store
            .command_outcome(meta.command_id.unwrap())
            .await
            .unwrap(),
        Some(again.clone())
    );
    assert_eq!(store.command_outcome(Uuid::new_v4()).await.unwrap(), None);
    let events = store
        .read_stream(StreamRef::new("acc", "1"), StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert!(events[1..]
        .iter()
        .all(|e| e.meta.command_id == meta.command_id));

    // An empty append records its command id too, at the current version.
    let empty_meta = CommitMeta::new().command_id(Uuid::new_v4());
    let empty = store
        .append(
            StreamRef::new("acc", "1"),
            ExpectedVersion::Exact(3),
            vec![],
            &empty_meta,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            empty.first_version,
            empty.last_version,
            empty.last_position,
            empty.duplicate
        ),
        (3, 3, 0, false)
    );
    let empty_again = store
        .append(
            StreamRef::new("acc", "1"),
            ExpectedVersion::Exact(3),
            vec![event("E", 5)],
            &empty_meta,
        )
        .await
        .unwrap();
    assert!(empty_again.duplicate);
    assert_eq!(
        store
            .stream_version(StreamRef::new("acc", "1"))
            .await
            .unwrap(),
        Some(3)
    );
    assert_eq!(store.head().await.unwrap(), 3);

    // An empty append to a missing stream does not create it.
    store
        .append(
            StreamRef::new("acc", "2"),
            ExpectedVersion::NoStream,
            vec![],
            &no_meta(),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .stream_version(StreamRef::new("acc", "2"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_failed_append_leaves_nothing_behind() {
    let dir = TempDir::new("atomic");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let taken = event("E", 1);
    store
        .append(
            StreamRef::new("acc", "1"),
            ExpectedVersion::NoStream,
            vec![taken.clone()],
            &no_meta(),
        )
        .await
        .unwrap();
    // The second event reuses an event id: the whole append must roll back.
    let taken_id = taken.event_id;
    let meta = CommitMeta::new().command_id(Uuid::new_v4());
    let err = store
        .append(
            StreamRef::new("acc", "2"),
            ExpectedVersion::NoStream,
            vec![event("E", 2), taken.clone()],
            &meta,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateEventId { event_id, .. } if event_id == taken_id),
        "{err:?}"
    );
    assert_eq!(
        store
            .stream_version(StreamRef::new("acc", "2"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.head().await.unwrap(), 1);
    assert_eq!(
        store
            .command_outcome(meta.command_id.unwrap())
            .await
            .unwrap(),
        None
    );
    // And the store is still writable (the write lock was released).
    store
        .append(
            StreamRef::new("acc", "2"),
            ExpectedVersion::NoStream,
            vec![event("E", 3)],
            &meta,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn global_reads_filter_by_type_in_position_order() {
    let dir = TempDir::new("read-all");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let types = ["A", "B", "C", "D"];
    for i in 0..60u32 {
        let t = types[(i * 7 % 11 % 4) as usize];
        store
            .append(
                StreamRef::new("s", &format!("{}", i % 5)),
                ExpectedVersion::Any,
                vec![event(t, i)],
                &no_meta(),
            )
            .await
            .unwrap();
    }
    let all = store.read_all(0, 1000, &EventFilter::all()).await.unwrap();
    assert_eq!(all.len(), 60);
    let positions: Vec<u64> = all.iter().map(|e| e.meta.position).collect();
    assert_eq!(positions, (1..=60).collect::<Vec<_>>());

    // Paged reads through each kind of filter match filtering the full log.
    let many: Vec<String> = (0..30)
        .map(|i| format!("Unused{i}"))
        .chain(["A".to_owned(), "C".to_owned()])
        .collect();
    let filters = [
        EventFilter::types(["B"]),
        EventFilter::types(["A", "C"]),
        EventFilter::types(["C", "A", "C"]),
        EventFilter::types(["A", "B", "C", "D"]),
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
    assert!(store
        .read_all(0, 10, &EventFilter::types(Vec::<String>::new()))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .read_all(0, 0, &EventFilter::all())
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .read_all(u64::MAX, 10, &EventFilter::all())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .read_all(58, usize::MAX, &EventFilter::all())
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(store.head().await.unwrap(), 60);
}

#[tokio::test]
async fn metadata_round_trips_exactly() {
    let dir = TempDir::new("metadata");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let mut headers = Headers::new();
    headers.insert("user".into(), "ada \"lovelace\" ✓".into());
    headers.insert("quote'd".into(), "{\"not\": \"json\"}".into());
    headers.insert(String::new(), "\u{0}\n\t".into());
    let meta = {
        let mut meta = CommitMeta::new()
            .command_id(Uuid::new_v4())
            .correlation_id(Uuid::new_v4())
            .causation_id(Uuid::new_v4());
        meta.headers = headers.clone();
        meta
    };
    let new = NewEvent::new(
        "Deposited",
        u32::MAX,
        r#"{"amount":5,"memo":"ünïcödé \"x\""}"#.into(),
    )
    .with_id(Uuid::new_v4());
    let before = annals::OffsetDateTime::now_utc();
    store
        .append(
            StreamRef::new("account", "42"),
            ExpectedVersion::NoStream,
            vec![new.clone()],
            &meta,
        )
        .await
        .unwrap();
    let after = annals::OffsetDateTime::now_utc();

    let read = store
        .read_stream(StreamRef::new("account", "42"), StreamRange::ALL)
        .await
        .unwrap();
    let [e] = read.as_slice() else {
        panic!("one event expected, got {read:?}")
    };
    assert_eq!(e.payload, new.payload);
    assert_eq!(e.meta.event_id, new.event_id);
    assert_eq!(e.meta.event_type, "Deposited");
    assert_eq!(e.meta.event_version, u32::MAX);
    assert_eq!(e.meta.command_id, meta.command_id);
    assert_eq!(e.meta.correlation_id, meta.correlation_id);
    assert_eq!(e.meta.causation_id, meta.causation_id);
    assert_eq!(e.meta.headers, headers);
    assert_eq!(
        (e.meta.stream_type.as_str(), e.meta.stream_id.as_str()),
        ("account", "42")
    );
    assert_eq!((e.meta.version, e.meta.position), (1, 1));
    assert_eq!(e.meta.recorded_at.offset(), time::UtcOffset::UTC);
    assert_eq!(e.meta.recorded_at.nanosecond() % 1000, 0, "microseconds");
    let micros = |t: annals::OffsetDateTime| t.unix_timestamp_nanos() / 1000;
    assert!(micros(before) <= micros(e.meta.recorded_at));
    assert!(e.meta.recorded_at <= after);

    // The global read decodes the same row the same way.
    let global = store.read_all(0, 10, &EventFilter::all()).await.unwrap();
    assert_eq!(global, read);

    // No ids at all round-trip as None.
    store
        .append(
            StreamRef::new("account", "43"),
            ExpectedVersion::Any,
            vec![event("E", 1)],
            &no_meta(),
        )
        .await
        .unwrap();
    let plain = store
        .read_stream(StreamRef::new("account", "43"), StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(plain[0].meta.command_id, None);
    assert_eq!(plain[0].meta.correlation_id, None);
    assert_eq!(plain[0].meta.causation_id, None);
    assert!(plain[0].meta.headers.is_empty());
}

#[tokio::test]
async fn stream_ranges_select_versions_and_times() {
    let dir = TempDir::new("ranges");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let mut times = Vec::new();
    for n in 1..=5 {
        store
            .append(
                StreamRef::new("s", "r"),
                ExpectedVersion::Any,
                vec![event("E", n)],
                &no_meta(),
            )
            .await
            .unwrap();
        let last = store
            .read_stream(StreamRef::new("s", "r"), StreamRange::from(u64::from(n)))
            .await
            .unwrap();
        times.push(last[0].meta.recorded_at);
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let versions = |events: Vec<RecordedEvent>| -> Vec<u64> {
        events.iter().map(|e| e.meta.version).collect()
    };
    let read = |range| store.read_stream(StreamRef::new("s", "r"), range);

    assert_eq!(
        versions(read(StreamRange::ALL).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(versions(read(StreamRange::from(4)).await.unwrap()), [4, 5]);
    assert_eq!(
        versions(read(StreamRange::from(0)).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        versions(read(StreamRange::from(6)).await.unwrap()),
        Vec::<u64>::new()
    );
    assert_eq!(
        versions(read(StreamRange::from(u64::MAX)).await.unwrap()),
        Vec::<u64>::new()
    );
    let span = |from, to| StreamRange::from(from).to(to);
    assert_eq!(versions(read(span(2, 3)).await.unwrap()), [2, 3]);
    assert_eq!(versions(read(span(3, 2)).await.unwrap()), Vec::<u64>::new());
    assert_eq!(versions(read(span(4, u64::MAX)).await.unwrap()), [4, 5]);
    let until = |from, time| StreamRange::from(from).until(time);
    assert_eq!(versions(read(until(1, times[1])).await.unwrap()), [1, 2]);
    assert_eq!(versions(read(until(2, times[3])).await.unwrap()), [2, 3, 4]);
    assert_eq!(
        versions(
            read(until(1, times[0] - time::Duration::SECOND))
                .await
                .unwrap()
        ),
        Vec::<u64>::new()
    );
    assert_eq!(
        versions(
            read(StreamRange::from(1).to(2).until(times[4]))
                .await
                .unwrap()
        ),
        [1, 2]
    );
    assert!(store
        .read_stream(StreamRef::new("s", "missing"), StreamRange::ALL)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_temporal_read_is_a_prefix_even_if_the_clock_went_back() {
    let dir = TempDir::new("clock");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    for n in 1..=3 {
        store
            .append(
                StreamRef::new("s", "c"),
                ExpectedVersion::Any,
                vec![event("E", n)],
                &no_meta(),
            )
            .await
            .unwrap();
    }
    // Version 2 recorded "later" than version 3, as after a clock step backwards.
    sqlx::query("UPDATE annals_events SET recorded_at = recorded_at + 60000000 WHERE version = 2")
        .execute(store.pool())
        .await
        .unwrap();
    let events = store
        .read_stream(StreamRef::new("s", "c"), StreamRange::ALL)
        .await
        .unwrap();
    let cut = events[2].meta.recorded_at;
    let prefix = store
        .read_stream(StreamRef::new("s", "c"), StreamRange::from(1).until(cut))
        .await
        .unwrap();
    let versions: Vec<u64> = prefix.iter().map(|e| e.meta.version).collect();
    assert_eq!(versions, [1]);
}

#[tokio::test]
async fn hostile_stream_ids() {
    let dir = TempDir::new("hostile");
    let store = SqliteStore::open(dir.db()).await.unwrap();

    // SQL metacharacters are data: stored and read back verbatim.
    for id in [
        "'; DROP TABLE annals_events; --",
        "\" OR 1=1 --",
        "%_\\*?[]",
        "ünïcödé 🦀",
    ] {
        store
            .append(
                StreamRef::new("acc'", id),
                ExpectedVersion::NoStream,
                vec![event("E", 1)],
                &no_meta(),
            )
            .await
            .unwrap();
        let read = store
            .read_stream(StreamRef::new("acc'", id), StreamRange::ALL)
            .await
            .unwrap();
        assert_eq!(read.len(), 1, "{id}");
        assert_eq!(read[0].meta.stream_id, id);
        assert_eq!(read[0].meta.stream_type, "acc'");
        assert_eq!(
            store
                .stream_version(StreamRef::new("acc'", id))
                .await
                .unwrap(),
            Some(1)
        );
    }
    assert_eq!(store.head().await.unwrap(), 4);

    // Oversized and control-character ids are refused on every entry point.
    let long = "x".repeat(10 * 1024);
    let at_limit = "y".repeat(MAX_STREAM_ID_LEN);
    store
        .append(
            StreamRef::new("acc", &at_limit),
            ExpectedVersion::Any,
            vec![event("E", 1)],
            &no_meta(),
        )
        .await
        .unwrap();
    for (stream_type, stream_id) in [
        ("acc", long.as_str()),
        ("acc", "a\0b"),
        ("acc", "line\nbreak"),
        ("acc", "del\u{7f}"),
        ("acc", ""),
        ("", "1"),
        ("ty\u{1b}[31m", "1"),
        (long.as_str(), "1"),
    ] {
        let refused = |r: Result<(), StoreError>| match r {
            Err(StoreError::InvalidStream { .. }) => {}
            other => panic!("{stream_type:?}/{stream_id:?}: expected refusal, got {other:?}"),
        };
        refused(
            store
                .append(
                    StreamRef::new(stream_type, stream_id),
                    ExpectedVersion::Any,
                    vec![event("E", 1)],
                    &no_meta(),
                )
                .await
                .map(drop),
        );
        refused(
            store
                .read_stream(StreamRef::new(stream_type, stream_id), StreamRange::ALL)
                .await
                .map(drop),
        );
        refused(
            store
                .stream_version(StreamRef::new(stream_type, stream_id))
                .await
                .map(drop),
        );
        refused(
            store
                .save_snapshot(
                    StreamRef::new(stream_type, stream_id),
                    Snapshot::new(1, 1, "{}".into()),
                )
                .await,
        );
        refused(
            store
                .load_snapshot(StreamRef::new(stream_type, stream_id), None)
                .await
                .map(drop),
        );
    }
    let err = store
        .stream_version(StreamRef::new("acc", &long))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.len() < 200, "the refused id is shortened: {err}");
    assert_eq!(store.head().await.unwrap(), 5);
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name LIKE 'annals_%'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(tables, 6);
}

#[tokio::test]
async fn snapshots_by_version() {
    let dir = TempDir::new("snapshots");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let snap = |version, state: &str| Snapshot::new(version, 3, state.into());
    assert_eq!(
        store
            .load_snapshot(StreamRef::new("acc", "1"), None)
            .await
            .unwrap(),
        None
    );
    for (v, s) in [(5, "five"), (2, "two"), (9, "nine")] {
        store
            .save_snapshot(StreamRef::new("acc", "1"), snap(v, s))
            .await
            .unwrap();
    }
    let load = |max| store.load_snapshot(StreamRef::new("acc", "1"), max);
    assert_eq!(load(None).await.unwrap(), Some(snap(9, "nine")));
    assert_eq!(load(Some(u64::MAX)).await.unwrap(), Some(snap(9, "nine")));
    assert_eq!(load(Some(8)).await.unwrap(), Some(snap(5, "five")));
    assert_eq!(load(Some(5)).await.unwrap(), Some(snap(5, "five")));
    assert_eq!(load(Some(2)).await.unwrap(), Some(snap(2, "two")));
    assert_eq!(load(Some(1)).await.unwrap(), None);

    // Saving at an existing version replaces it.
    let replaced = Snapshot::new(5, 4, "FIVE".into());
    store
        .save_snapshot(StreamRef::new("acc", "1"), replaced.clone())
        .await
        .unwrap();
    assert_eq!(load(Some(7)).await.unwrap(), Some(replaced));
    assert_eq!(
        store
            .load_snapshot(StreamRef::new("acc", "2"), None)
            .await
            .unwrap(),
        None
    );

    let err = store
        .save_snapshot(StreamRef::new("acc", "1"), snap(u64::MAX, "too far"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::OutOfRange {
                value: u64::MAX,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn corrupt_rows_are_errors_naming_the_position() {
    let dir = TempDir::new("corrupt");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    store
        .append(
            StreamRef::new("acc", "1"),
            ExpectedVersion::NoStream,
            vec![event("E", 1), event("E", 2), event("E", 3)],
            &no_meta(),
        )
        .await
        .unwrap();
    // (statement, whether a stream read still selects the row)
    let corruptions = [
        (
            "UPDATE annals_events SET event_id = 'not-a-uuid' WHERE position = 2",
            true,
        ),
        (
            "UPDATE annals_events SET headers = '{\"a\": 1' WHERE position = 2",
            true,
        ),
        (
            "UPDATE annals_events SET headers = '[1, 2]' WHERE position = 2",
            true,
        ),
        (
            "UPDATE annals_events SET event_version = 5000000000 WHERE position = 2",
            true,
        ),
        (
            "UPDATE annals_events SET causation_id = 'zzz' WHERE position = 2",
            true,
        ),
        (
            "UPDATE annals_events SET recorded_at = 9223372036854775807 WHERE position = 2",
            true,
        ),
        (
            "UPDATE annals_events SET version = -2 WHERE position = 2",
            false,
        ),
    ];
    let pristine: (String, String, i64, i64, Option<String>, i64) = sqlx::query_as(
        "SELECT event_id, headers, version, event_version, causation_id, recorded_at \
         FROM annals_events WHERE position = 2",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    for (corruption, in_stream_read) in corruptions {
        sqlx::query(corruption).execute(store.pool()).await.unwrap();
        let mut reads = vec![
            store.read_all(0, 10, &EventFilter::all()).await,
            store.read_all(1, 1, &EventFilter::types(["E"])).await,
        ];
        if in_stream_read {
            reads.push(
                store
                    .read_stream(StreamRef::new("acc", "1"), StreamRange::ALL)
                    .await,
            );
        }
        for result in reads {
            match result {
                Err(StoreError::Corrupt {
                    position: Some(2),
                    reason,
                }) => {
                    assert!(!reason.is_empty());
                }
                other => panic!("{corruption}: expected a corrupt record, got {other:?}"),
            }
        }
        // Reads not touching the row still work.
        assert_eq!(
            store
                .read_all(2, 10, &EventFilter::all())
                .await
                .unwrap()
                .len(),
            1
        );
        sqlx::query(
            "UPDATE annals_events SET event_id = ?1, headers = ?2, version = ?3, \
             event_version = ?4, causation_id = ?5, recorded_at = ?6 WHERE position = 2",
        )
        .bind(&pristine.0)
        .bind(&pristine.1)
        .bind(pristine.2)
        .bind(pristine.3)
        .bind(&pristine.4)
        .bind(pristine.5)
        .execute(store.pool())
        .await
        .unwrap();
        assert_eq!(
            store
                .read_stream(StreamRef::new("acc", "1"), StreamRange::ALL)
                .await
                .unwrap()
                .len(),
            3
        );
    }
    let err = store.read_all(0, 10, &EventFilter::all()).await.map(drop);
    assert!(err.is_ok());
}
