//! SQLite-specific behaviour of `SqliteStore`, against real database files in a temp dir:
//! reopening a file, migrations, pragmas, the in-memory database, several stores on one
//! file, the numbers SQLite holds, and rows only raw SQL can write. The behaviour every
//! store shares is the conformance suite's (`tests/tests/conformance/`).
#![cfg(feature = "sqlite")]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use annals::store::{
    EventFilter, EventLog, EventStore, NewEvent, Snapshot, SnapshotStore, StreamRange,
};
use annals::{CommitMeta, ExpectedVersion, SqliteStore, StoreError, StreamRef};

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
        assert!(
            rows.iter().zip(1..).all(|(row, version)| row.0 == version),
            "versions run 1..n: {rows:?}"
        );
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
        let (count, max): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), MAX(version) FROM annals_migrations")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(count, max, "each migration recorded once");
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
                known
            } if known >= 4
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

/// SQLite's side of the conformance suite's `large_numbers_never_wrap`: an event version
/// up to `u32::MAX` is kept; a snapshot version past `i64` is refused.
#[tokio::test]
async fn the_largest_event_version_is_kept_and_versions_past_i64_are_refused() {
    let dir = TempDir::new("numbers");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    store
        .append(
            StreamRef::new("acc", "1"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("E", u32::MAX, "{}".into())],
            &no_meta(),
        )
        .await
        .unwrap();
    let read = store
        .read_stream(StreamRef::new("acc", "1"), StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(read[0].meta.event_version, u32::MAX);
    assert_eq!(
        store.read_all(0, 10, &EventFilter::all()).await.unwrap(),
        read
    );

    let err = store
        .save_snapshot(
            StreamRef::new("acc", "1"),
            Snapshot::new(u64::MAX, 3, "{}".into()),
        )
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
        // (A negative version cannot be stored: migration 5's CHECK refuses it.)
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

/// Two stores opened on one file in one process (here one of them by a relative path) hand
/// out one lease per runner name between them; in-memory databases keep their own.
#[tokio::test]
async fn stores_on_one_file_share_their_leases() {
    use annals::store::LeaseStore;
    let dir = TempDir::new("shared-leases");
    let first = SqliteStore::open(dir.db()).await.unwrap();
    let second = SqliteStore::options()
        .max_connections(2)
        .open(dir.0.join(".").join("events.db"))
        .await
        .unwrap();
    let held = first
        .try_lease("balances")
        .await
        .unwrap()
        .expect("a free lease");
    assert!(
        second.try_lease("balances").await.unwrap().is_none(),
        "a second handle on the same file must not run the same projection"
    );
    let other = second.try_lease("orders").await.unwrap();
    assert!(other.is_some(), "leases are per name");
    drop(held);
    assert!(second.try_lease("balances").await.unwrap().is_some());

    let one = SqliteStore::in_memory().await.unwrap();
    let two = SqliteStore::in_memory().await.unwrap();
    let _a = one
        .try_lease("balances")
        .await
        .unwrap()
        .expect("a free lease");
    assert!(two.try_lease("balances").await.unwrap().is_some());
    close(first).await;
    close(second).await;
}
