//! PostgreSQL-specific behaviour of `PgStore` against the real server at `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`). Every test works in a fresh schema
//! of its own, dropped at the end, so tests run in parallel. An unreachable server fails
//! the tests: nothing here skips.
#![cfg(feature = "postgres")]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::store::MAX_STREAM_ID_LEN;
use annals::{
    AppendOutcome, CommitMeta, EventFilter, EventStore, ExpectedVersion, Headers, NewEvent,
    OffsetDateTime, PgStore, RecordedEvent, Snapshot, SnapshotStore, StoreError, StreamRange, Uuid,
};
use sqlx::postgres::{PgListener, PgPool};

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn fresh_schema() -> String {
    format!("annals_test_{}", Uuid::new_v4().simple())
}

/// A store in a schema of its own; `finish` drops the schema.
struct TestDb {
    store: PgStore,
}

impl TestDb {
    async fn new() -> Self {
        Self::with_connections(10).await
    }

    async fn with_connections(max: u32) -> Self {
        let store = PgStore::options()
            .schema(fresh_schema())
            .max_connections(max)
            .connect(&database_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot open a PgStore at {} (start PostgreSQL or set DATABASE_URL): {e:?}",
                    database_url()
                )
            });
        TestDb { store }
    }

    fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// Runs SQL against the test's schema (names unqualified).
    async fn sql(&self, sql: &str) {
        let mut conn = self.pool().acquire().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET search_path TO \"{}\"; {sql}; RESET search_path",
            self.store.schema()
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
    }

    async fn count(&self, sql: &str) -> i64 {
        let sql = sql.replace("{schema}", &format!("\"{}\"", self.store.schema()));
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()))
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    async fn finish(self) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{}\" CASCADE", self.store.schema())))
            .execute(self.pool())
            .await
            .unwrap();
        self.store.pool().close().await;
    }
}

fn event(event_type: &str, n: u32) -> NewEvent {
    NewEvent::new(event_type, 1, format!(r#"{{"n":{n}}}"#))
}

fn events(event_type: &str, count: u32) -> Vec<NewEvent> {
    (1..=count).map(|n| event(event_type, n)).collect()
}

fn no_meta() -> CommitMeta {
    CommitMeta::default()
}

fn with_command(id: Uuid) -> CommitMeta {
    CommitMeta {
        command_id: Some(id),
        ..CommitMeta::default()
    }
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.meta.version).collect()
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.meta.position).collect()
}

async fn all_events(store: &PgStore) -> Vec<RecordedEvent> {
    store
        .read_all(0, usize::MAX, &EventFilter::all())
        .await
        .unwrap()
}

/// A small deterministic generator, so a failing interleaving can be reasoned about.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

// ---------------------------------------------------------------------------------------
// Schema and migrations

#[tokio::test]
async fn migrations_are_recorded_once_and_reopening_is_harmless() {
    let db = TestDb::new().await;
    let recorded = || async {
        sqlx::query_as::<_, (i32, String)>(sqlx::AssertSqlSafe(format!(
            "SELECT version, name FROM \"{}\".annals_migrations ORDER BY version",
            db.store.schema()
        )))
        .fetch_all(db.pool())
        .await
        .unwrap()
    };
    assert_eq!(
        recorded().await,
        [(1, "initial".to_owned()), (2, "checkpoints".to_owned())]
    );
    db.store
        .append(
            "account",
            "1",
            ExpectedVersion::NoStream,
            events("Opened", 2),
            &no_meta(),
        )
        .await
        .unwrap();

    let again = PgStore::from_pool(db.pool().clone(), db.store.schema())
        .await
        .unwrap();
    again.migrate().await.unwrap();
    assert_eq!(
        recorded().await,
        [(1, "initial".to_owned()), (2, "checkpoints".to_owned())]
    );
    assert_eq!(again.stream_version("account", "1").await.unwrap(), Some(2));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_migrate_once() {
    let schema = fresh_schema();
    let opening: Vec<_> = (0..8)
        .map(|_| {
            let schema = schema.clone();
            tokio::spawn(async move {
                PgStore::options()
                    .schema(schema)
                    .max_connections(2)
                    .connect(&database_url())
                    .await
            })
        })
        .collect();
    let mut stores = Vec::new();
    for opened in opening {
        stores.push(
            opened
                .await
                .unwrap()
                .expect("every process opens the store"),
        );
    }
    let db = TestDb {
        store: stores.pop().unwrap(),
    };
    assert_eq!(
        db.count("SELECT count(*) FROM {schema}.annals_migrations")
            .await,
        2
    );
    // Each of them works on the same tables.
    for (n, store) in stores.iter().enumerate() {
        store
            .append(
                "account",
                &n.to_string(),
                ExpectedVersion::NoStream,
                events("Opened", 1),
                &no_meta(),
            )
            .await
            .unwrap();
    }
    assert_eq!(all_events(&db.store).await.len(), 7);
    for store in stores {
        store.pool().close().await;
    }
    db.finish().await;
}

#[tokio::test]
async fn a_schema_migrated_by_a_newer_build_is_refused() {
    let db = TestDb::new().await;
    db.sql("INSERT INTO annals_migrations (version, name) VALUES (99, 'future')")
        .await;
    let err = PgStore::from_pool(db.pool().clone(), db.store.schema())
        .await
        .unwrap_err();
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
    db.finish().await;
}

#[tokio::test]
async fn schema_names_that_are_not_plain_identifiers_are_refused_before_any_sql() {
    let url = database_url();
    let db = TestDb::new().await;
    let hostile_names = [
        "x\"; DROP SCHEMA public CASCADE; --",
        "x; DROP TABLE annals_events",
        "annals\"",
        "Annals",
        "a b",
        "a-b",
        "1abc",
        "",
        "pg_annals",
        "information_schema",
        "schéma",
        "x\0y",
        &"a".repeat(57),
    ];
    for hostile in hostile_names {
        let by_url = PgStore::connect_with_schema(&url, hostile).await;
        assert!(
            matches!(by_url, Err(StoreError::Config(_))),
            "{hostile:?}: {by_url:?}"
        );
        let by_pool = PgStore::from_pool(db.pool().clone(), hostile).await;
        assert!(
            matches!(by_pool, Err(StoreError::Config(_))),
            "{hostile:?}: {by_pool:?}"
        );
    }
    // Nothing was created under any of the names (other tests create and drop schemas at
    // the same time, so this looks the names up rather than counting all schemas), and
    // the injection attempts did not reach the server.
    // (`information_schema` is refused because it exists on every server.)
    for hostile in hostile_names.iter().filter(|h| **h != "information_schema") {
        let found: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
            .bind(hostile.replace('\0', ""))
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(found, 0, "{hostile:?}");
    }
    let public: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'public'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(public, 1, "the public schema is untouched");
    // The longest name accepted works, and so does a reserved word (it is quoted).
    for fine in ["a".repeat(56), "select".to_owned()] {
        let store = PgStore::from_pool(db.pool().clone(), &fine).await.unwrap();
        store
            .append(
                "account",
                "1",
                ExpectedVersion::Any,
                events("Opened", 1),
                &no_meta(),
            )
            .await
            .unwrap();
        assert_eq!(store.notify_channel(), format!("{fine}_events"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{fine}\" CASCADE")))
            .execute(db.pool())
            .await
            .unwrap();
    }
    db.finish().await;
}

// ---------------------------------------------------------------------------------------
// Appends and expected versions

#[tokio::test]
async fn expected_versions_are_enforced() {
    let db = TestDb::new().await;
    let store = &db.store;
    let meta = no_meta();
    let append =
        |expected, n| store.append("account", "1", expected, events("Deposited", n), &meta);
    let conflict = |result: Result<AppendOutcome, StoreError>, expected, actual| match result {
        Err(StoreError::WrongExpectedVersion {
            stream_type,
            stream_id,
            expected: e,
            actual: a,
        }) => {
            assert_eq!((stream_type.as_str(), stream_id.as_str()), ("account", "1"));
            assert_eq!((e, a), (expected, actual));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    };

    conflict(
        append(ExpectedVersion::Exists, 1).await,
        ExpectedVersion::Exists,
        None,
    );
    conflict(
        append(ExpectedVersion::Exact(1), 1).await,
        ExpectedVersion::Exact(1),
        None,
    );
    let first = append(ExpectedVersion::NoStream, 2).await.unwrap();
    assert_eq!(
        first,
        AppendOutcome {
            first_version: 1,
            last_version: 2,
            last_position: 2,
            duplicate: false
        }
    );
    conflict(
        append(ExpectedVersion::NoStream, 1).await,
        ExpectedVersion::NoStream,
        Some(2),
    );
    conflict(
        append(ExpectedVersion::Exact(0), 1).await,
        ExpectedVersion::Exact(0),
        Some(2),
    );
    conflict(
        append(ExpectedVersion::Exact(1), 1).await,
        ExpectedVersion::Exact(1),
        Some(2),
    );
    conflict(
        append(ExpectedVersion::Exact(3), 1).await,
        ExpectedVersion::Exact(3),
        Some(2),
    );
    conflict(
        append(ExpectedVersion::Exact(u64::MAX), 1).await,
        ExpectedVersion::Exact(u64::MAX),
        Some(2),
    );
    let exact = append(ExpectedVersion::Exact(2), 3).await.unwrap();
    assert_eq!(
        (exact.first_version, exact.last_version, exact.last_position),
        (3, 5, 5)
    );
    let exists = append(ExpectedVersion::Exists, 1).await.unwrap();
    assert_eq!((exists.first_version, exists.last_version), (6, 6));
    let any = append(ExpectedVersion::Any, 2).await.unwrap();
    assert_eq!(
        (any.first_version, any.last_version, any.last_position),
        (7, 8, 8)
    );
    // Exact(0) creates a stream, like NoStream; Any creates one too.
    store
        .append(
            "account",
            "2",
            ExpectedVersion::Exact(0),
            events("Opened", 1),
            &no_meta(),
        )
        .await
        .unwrap();
    store
        .append(
            "account",
            "3",
            ExpectedVersion::Any,
            events("Opened", 1),
            &no_meta(),
        )
        .await
        .unwrap();

    // Nothing a refused append carried was stored.
    let stream = store
        .read_stream("account", "1", StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(versions(&stream), (1..=8).collect::<Vec<_>>());
    assert_eq!(store.stream_version("account", "1").await.unwrap(), Some(8));
    assert_eq!(store.stream_version("account", "9").await.unwrap(), None);
    assert_eq!(store.head().await.unwrap(), 10);
    db.finish().await;
}

#[tokio::test]
async fn an_empty_append_checks_the_version_and_appends_nothing() {
    let db = TestDb::new().await;
    let store = &db.store;
    let none = store
        .append(
            "account",
            "1",
            ExpectedVersion::NoStream,
            Vec::new(),
            &no_meta(),
        )
        .await
        .unwrap();
    assert_eq!(
        none,
        AppendOutcome {
            first_version: 0,
            last_version: 0,
            last_position: 0,
            duplicate: false
        }
    );
    // It does not create the stream.
    assert_eq!(store.stream_version("account", "1").await.unwrap(), None);
    assert!(matches!(
        store
            .append(
                "account",
                "1",
                ExpectedVersion::Exists,
                Vec::new(),
                &no_meta()
            )
            .await,
        Err(StoreError::WrongExpectedVersion { actual: None, .. })
    ));
    store
        .append(
            "account",
            "1",
            ExpectedVersion::Any,
            events("Opened", 3),
            &no_meta(),
        )
        .await
        .unwrap();
    let at_three = store
        .append(
            "account",
            "1",
            ExpectedVersion::Exact(3),
            Vec::new(),
            &no_meta(),
        )
        .await
        .unwrap();
    assert_eq!((at_three.first_version, at_three.last_version), (3, 3));
    assert!(matches!(
        store
            .append(
                "account",
                "1",
                ExpectedVersion::Exact(2),
                Vec::new(),
                &no_meta()
            )
            .await,
        Err(StoreError::WrongExpectedVersion {
            actual: Some(3),
            ..
        })
    ));
    assert_eq!(store.head().await.unwrap(), 3);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_from_one_version_never_both_succeed() {
    const TASKS: u32 = 8;
    let db = TestDb::with_connections(TASKS + 2).await;
    // A new stream: one creator wins.
    let creators: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move {
                store
                    .append(
                        "account",
                        "1",
                        ExpectedVersion::NoStream,
                        events("Opened", 1),
                        &no_meta(),
                    )
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in creators {
        match task.await.unwrap() {
            Ok(outcome) => {
                won += 1;
                assert_eq!(outcome.last_version, 1);
            }
            Err(StoreError::WrongExpectedVersion {
                actual: Some(1), ..
            }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(won, 1);

    // Then rounds of writers that all loaded the same version.
    for round in 0..20 {
        let loaded = db
            .store
            .stream_version("account", "1")
            .await
            .unwrap()
            .unwrap();
        let writers: Vec<_> = (0..TASKS)
            .map(|_| {
                let store = db.store.clone();
                tokio::spawn(async move {
                    store
                        .append(
                            "account",
                            "1",
                            ExpectedVersion::Exact(loaded),
                            events("Deposited", 2),
                            &no_meta(),
                        )
                        .await
                })
            })
            .collect();
        let mut succeeded = Vec::new();
        for task in writers {
            match task.await.unwrap() {
                Ok(outcome) => succeeded.push(outcome),
                Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                    assert_eq!(actual, Some(loaded + 2));
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(succeeded.len(), 1, "round {round}: {succeeded:?}");
        assert_eq!(succeeded[0].first_version, loaded + 1);
    }
    let stream = db
        .store
        .read_stream("account", "1", StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(
        versions(&stream),
        (1..=stream.len() as u64).collect::<Vec<_>>()
    );

    // Writers that do not check serialize: every event lands, versions without holes.
    let writers: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..25 {
                    outcomes.push(
                        store
                            .append(
                                "account",
                                "2",
                                ExpectedVersion::Any,
                                events("Deposited", 2),
                                &no_meta(),
                            )
                            .await
                            .unwrap(),
                    );
                }
                outcomes
            })
        })
        .collect();
    let mut taken = Vec::new();
    for task in writers {
        for outcome in task.await.unwrap() {
            assert_eq!(outcome.last_version, outcome.first_version + 1);
            taken.extend([outcome.first_version, outcome.last_version]);
        }
    }
    taken.sort_unstable();
    assert_eq!(taken, (1..=400).collect::<Vec<_>>());
    let stream = db
        .store
        .read_stream("account", "2", StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(versions(&stream), (1..=400).collect::<Vec<_>>());
    db.finish().await;
}

// ---------------------------------------------------------------------------------------
// Global order under concurrent writers

/// A writer that holds its transaction open: optionally takes a transaction id first (so
/// it is older than writers that start meanwhile), appends, sleeps, then commits or
/// rolls back.
async fn slow_append(
    store: &PgStore,
    stream: &str,
    batch: Vec<NewEvent>,
    take_xid_first: bool,
    before: Duration,
    after: Duration,
    commit: bool,
) -> Option<Vec<Uuid>> {
    let ids = batch.iter().map(|e| e.event_id).collect();
    let mut tx = store.pool().begin().await.unwrap();
    if take_xid_first {
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tokio::time::sleep(before).await;
    store
        .append_in(
            &mut tx,
            "account",
            stream,
            ExpectedVersion::Any,
            batch,
            &no_meta(),
        )
        .await
        .unwrap();
    tokio::time::sleep(after).await;
    if commit {
        tx.commit().await.unwrap();
        Some(ids)
    } else {
        tx.rollback().await.unwrap();
        None
    }
}

/// Follows the global order from 0 until `done` is set and a read comes back empty;
/// asserts positions strictly increase.
async fn follow(store: PgStore, filter: EventFilter, done: Arc<AtomicBool>) -> Vec<RecordedEvent> {
    let mut seen: Vec<RecordedEvent> = Vec::new();
    let mut last_head = 0;
    loop {
        // Read before the batch: once `done` is seen, every writer has finished, so an
        // empty batch after it means the end.
        let finished = done.load(Ordering::SeqCst);
        let head = store.head().await.unwrap();
        assert!(
            head >= last_head,
            "head went back from {last_head} to {head}"
        );
        last_head = head;
        let after = seen.last().map_or(0, |e| e.meta.position);
        let batch = store.read_all(after, 7, &filter).await.unwrap();
        if batch.is_empty() {
            if finished {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        for event in batch {
            let previous = seen.last().map_or(0, |e| e.meta.position);
            assert!(
                event.meta.position > previous,
                "position {} delivered after {previous}",
                event.meta.position
            );
            assert!(filter.matches(&event.meta.event_type));
            seen.push(event);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_positions_sees_every_committed_event_once_in_order() {
    const FAST_WRITERS: u64 = 4;
    const SLOW_WRITERS: u64 = 3;
    const APPENDS: u64 = 30;
    let db = TestDb::with_connections(16).await;
    let done = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(Mutex::new(Vec::<Uuid>::new()));
    let everything = tokio::spawn(follow(db.store.clone(), EventFilter::all(), done.clone()));
    let only_b = tokio::spawn(follow(
        db.store.clone(),
        EventFilter::types(["B"]),
        done.clone(),
    ));

    let mut writers = Vec::new();
    for w in 0..FAST_WRITERS + SLOW_WRITERS {
        let store = db.store.clone();
        let committed = committed.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            for _ in 0..APPENDS {
                let stream = rng.below(5).to_string();
                let batch: Vec<NewEvent> = (0..=rng.below(3))
                    .map(|n| {
                        let event_type = if rng.below(2) == 0 { "A" } else { "B" };
                        event(event_type, u32::try_from(n).unwrap())
                    })
                    .collect();
                if w < FAST_WRITERS {
                    let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
                    store
                        .append("account", &stream, ExpectedVersion::Any, batch, &no_meta())
                        .await
                        .unwrap();
                    committed.lock().unwrap().extend(ids);
                } else {
                    let before = Duration::from_millis(rng.below(10));
                    let after = Duration::from_millis(rng.below(25));
                    let take_xid_first = rng.below(2) == 0;
                    let commit = rng.below(6) != 0;
                    if let Some(ids) = slow_append(
                        &store,
                        &stream,
                        batch,
                        take_xid_first,
                        before,
                        after,
                        commit,
                    )
                    .await
                    {
                        committed.lock().unwrap().extend(ids);
                    }
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = everything.await.unwrap();
    let seen_b = only_b.await.unwrap();

    let committed: HashSet<Uuid> = committed.lock().unwrap().iter().copied().collect();
    let seen_ids: Vec<Uuid> = seen.iter().map(|e| e.meta.event_id).collect();
    let unique: HashSet<Uuid> = seen_ids.iter().copied().collect();
    assert_eq!(unique.len(), seen_ids.len(), "an event was delivered twice");
    assert_eq!(unique, committed, "the reader missed or invented events");
    assert_eq!(seen, all_events(&db.store).await);
    let expected_b: Vec<&RecordedEvent> =
        seen.iter().filter(|e| e.meta.event_type == "B").collect();
    assert_eq!(seen_b.iter().collect::<Vec<_>>(), expected_b);
    assert_eq!(
        db.count("SELECT count(*) FROM {schema}.annals_events")
            .await,
        i64::try_from(committed.len()).unwrap()
    );
    db.finish().await;
}

/// The interleaving that defeats a plain `tx_id < pg_snapshot_xmin(..)` read filter: an
/// older transaction (lower id) appends after a younger one took its position, and commits
/// while the younger one is still open. A reader must not be shown the older one's event
/// (at the higher position) before the younger one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_transaction_cannot_publish_past_a_younger_open_one() {
    let db = TestDb::new().await;
    let store = db.store.clone();

    let mut older = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *older)
        .await
        .unwrap();
    let mut younger = store.pool().begin().await.unwrap();
    let held = store
        .append_in(
            &mut younger,
            "account",
            "y",
            ExpectedVersion::Any,
            events("A", 1),
            &no_meta(),
        )
        .await
        .unwrap();

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let outcome = store
                .append_in(
                    &mut older,
                    "account",
                    "o",
                    ExpectedVersion::Any,
                    events("B", 1),
                    &no_meta(),
                )
                .await
                .unwrap();
            older.commit().await.unwrap();
            outcome
        })
    };
    let done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(follow(store.clone(), EventFilter::all(), done.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        all_events(&store).await.is_empty(),
        "an event became readable while a lower position was still open"
    );
    younger.commit().await.unwrap();
    let published = writer.await.unwrap();
    assert!(published.last_position > held.last_position);
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    assert_eq!(
        positions(&seen),
        [held.last_position, published.last_position]
    );
    db.finish().await;
}

#[tokio::test]
async fn appends_in_a_callers_transaction_commit_or_roll_back_with_it() {
    let db = TestDb::new().await;
    let store = &db.store;
    let mut tx = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut tx,
            "account",
            "1",
            ExpectedVersion::NoStream,
            events("Opened", 2),
            &no_meta(),
        )
        .await
        .unwrap();
    assert!(all_events(store).await.is_empty(), "visible before commit");
    let command = Uuid::new_v4();
    store
        .append_in(
            &mut tx,
            "account",
            "1",
            ExpectedVersion::Exact(2),
            Vec::new(),
            &with_command(command),
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(all_events(store).await.is_empty());
    assert_eq!(store.stream_version("account", "1").await.unwrap(), None);
    assert_eq!(store.command_outcome(command).await.unwrap(), None);

    let mut tx = store.pool().begin().await.unwrap();
    let first = store
        .append_in(
            &mut tx,
            "account",
            "1",
            ExpectedVersion::NoStream,
            events("Opened", 2),
            &no_meta(),
        )
        .await
        .unwrap();
    // A refused append leaves the transaction usable, and reports the version the
    // transaction itself wrote.
    let refused = store
        .append_in(
            &mut tx,
            "account",
            "1",
            ExpectedVersion::NoStream,
            events("Opened", 1),
            &no_meta(),
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
    let bad = store
        .append_in(
            &mut tx,
            "account",
            "1",
            ExpectedVersion::Any,
            vec![NewEvent::new("Deposited", 1, "{oops".into())],
            &no_meta(),
        )
        .await;
    assert!(matches!(bad, Err(StoreError::Database { .. })), "{bad:?}");
    let second = store
        .append_in(
            &mut tx,
            "account",
            "1",
            ExpectedVersion::Exact(2),
            events("Deposited", 1),
            &no_meta(),
        )
        .await
        .unwrap();
    let empty = store
        .append_in(
            &mut tx,
            "account",
            "1",
            ExpectedVersion::Exact(3),
            Vec::new(),
            &with_command(command),
        )
        .await
        .unwrap();
    assert_eq!((empty.last_version, empty.duplicate), (3, false));
    tx.commit().await.unwrap();
    assert_eq!((first.last_version, second.last_version), (2, 3));
    assert_eq!(
        store.command_outcome(command).await.unwrap(),
        Some(AppendOutcome {
            duplicate: true,
            ..empty
        })
    );
    let stream = store
        .read_stream("account", "1", StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(versions(&stream), [1, 2, 3]);
    db.finish().await;
}

#[tokio::test]
async fn every_append_notifies_the_last_position() {
    let db = TestDb::new().await;
    let mut listener = PgListener::connect_with(db.pool()).await.unwrap();
    listener.listen(db.store.notify_channel()).await.unwrap();
    let outcome = db
        .store
        .append(
            "account",
            "1",
            ExpectedVersion::Any,
            events("Opened", 3),
            &no_meta(),
        )
        .await
        .unwrap();
    let note = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification within 5s")
        .unwrap();
    assert_eq!(note.channel(), db.store.notify_channel());
    assert_eq!(note.payload(), outcome.last_position.to_string());
    drop(listener);
    db.finish().await;
}

// ---------------------------------------------------------------------------------------
// Idempotency

#[tokio::test]
async fn a_repeated_command_id_appends_once_and_returns_the_first_outcome() {
    let db = TestDb::new().await;
    let store = &db.store;
    let id = Uuid::new_v4();
    let first = store
        .append(
            "account",
            "1",
            ExpectedVersion::NoStream,
            events("Opened", 2),
            &with_command(id),
        )
        .await
        .unwrap();
    assert!(!first.duplicate);
    // Whatever the second append says (even a stale expected version, another stream).
    for (stream, expected) in [
        ("1", ExpectedVersion::NoStream),
        ("1", ExpectedVersion::Any),
        ("2", ExpectedVersion::Exists),
    ] {
        let again = store
            .append(
                "account",
                stream,
                expected,
                events("Opened", 5),
                &with_command(id),
            )
            .await
            .unwrap();
        assert_eq!(
            again,
            AppendOutcome {
                duplicate: true,
                ..first.clone()
            }
        );
    }
    assert_eq!(
        store.command_outcome(id).await.unwrap(),
        Some(AppendOutcome {
            duplicate: true,
            ..first.clone()
        })
    );
    assert_eq!(store.command_outcome(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(all_events(store).await.len(), 2);

    // A command that produced nothing is recorded too.
    let empty_id = Uuid::new_v4();
    let empty = store
        .append(
            "account",
            "1",
            ExpectedVersion::Exact(2),
            Vec::new(),
            &with_command(empty_id),
        )
        .await
        .unwrap();
    assert_eq!(
        (empty.first_version, empty.last_version, empty.duplicate),
        (2, 2, false)
    );
    let replay = store
        .append(
            "account",
            "1",
            ExpectedVersion::Any,
            events("Deposited", 1),
            &with_command(empty_id),
        )
        .await
        .unwrap();
    assert_eq!(
        replay,
        AppendOutcome {
            duplicate: true,
            ..empty
        }
    );
    assert_eq!(all_events(store).await.len(), 2);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_with_one_command_id_append_once() {
    const TASKS: u32 = 8;
    let db = TestDb::with_connections(TASKS + 2).await;
    for round in 0..10 {
        let id = Uuid::new_v4();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let store = db.store.clone();
                // Half the rounds race on one stream, half on a stream per task.
                let stream = if round % 2 == 0 {
                    "shared".to_owned()
                } else {
                    format!("s{round}-{t}")
                };
                tokio::spawn(async move {
                    store
                        .append(
                            "account",
                            &stream,
                            ExpectedVersion::Any,
                            events("Deposited", 3),
                            &with_command(id),
                        )
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let originals: Vec<_> = outcomes.iter().filter(|o| !o.duplicate).collect();
        assert_eq!(originals.len(), 1, "round {round}: {outcomes:?}");
        let first = originals[0].clone();
        for outcome in &outcomes {
            assert_eq!(
                (
                    outcome.first_version,
                    outcome.last_version,
                    outcome.last_position
                ),
                (first.first_version, first.last_version, first.last_position)
            );
        }
        let sql =
            format!("SELECT count(*) FROM {{schema}}.annals_events WHERE command_id = '{id}'");
        assert_eq!(db.count(&sql).await, 3, "round {round}");
    }
    db.finish().await;
}

// ---------------------------------------------------------------------------------------
// Input that must not hurt

#[tokio::test]
async fn hostile_ids_are_stored_verbatim_or_refused() {
    let db = TestDb::new().await;
    let store = &db.store;
    let longest = "é".repeat(MAX_STREAM_ID_LEN / 2);
    let verbatim = [
        "'; DROP TABLE annals_events; --",
        "\" OR 1=1 --",
        "$1",
        "%_\\",
        "Robert'); DROP SCHEMA public CASCADE;--",
        "🦀 ünïcödé \u{202e}rtl",
        "  padded  ",
        longest.as_str(),
    ];
    for (n, id) in verbatim.iter().enumerate() {
        let stream_type = format!("type'\"{n}");
        store
            .append(
                &stream_type,
                id,
                ExpectedVersion::NoStream,
                vec![event("Odd'\"Type", 1)],
                &no_meta(),
            )
            .await
            .unwrap();
        let stream = store
            .read_stream(&stream_type, id, StreamRange::ALL)
            .await
            .unwrap();
        assert_eq!(stream.len(), 1, "{id:?}");
        assert_eq!(stream[0].meta.stream_id, *id);
        assert_eq!(stream[0].meta.stream_type, stream_type);
        assert_eq!(stream[0].meta.event_type, "Odd'\"Type");
        assert_eq!(
            store.stream_version(&stream_type, id).await.unwrap(),
            Some(1)
        );
    }
    let too_long = "x".repeat(MAX_STREAM_ID_LEN + 1);
    for id in ["", "nul\0byte", "new\nline", too_long.as_str()] {
        let refused = store
            .append(
                "account",
                id,
                ExpectedVersion::Any,
                events("Opened", 1),
                &no_meta(),
            )
            .await;
        assert!(
            matches!(
                refused,
                Err(StoreError::InvalidStream {
                    what: "stream id",
                    ..
                })
            ),
            "{id:?}: {refused:?}"
        );
        assert!(matches!(
            store.read_stream("account", id, StreamRange::ALL).await,
            Err(StoreError::InvalidStream { .. })
        ));
    }
    let nul_type = store
        .append(
            "account",
            "1",
            ExpectedVersion::Any,
            vec![event("Bad\0Type", 1)],
            &no_meta(),
        )
        .await;
    assert!(
        matches!(
            nul_type,
            Err(StoreError::InvalidStream {
                what: "event type",
                ..
            })
        ),
        "{nul_type:?}"
    );
    // The tables are intact and hold exactly what was accepted.
    assert_eq!(all_events(store).await.len(), verbatim.len());
    db.finish().await;
}

#[tokio::test]
async fn a_payload_that_is_not_json_is_refused_and_nothing_is_stored() {
    let db = TestDb::new().await;
    let store = &db.store;
    let batch = vec![
        NewEvent::new("Opened", 1, r#"{"ok":true}"#.into()),
        NewEvent::new("Deposited", 1, "{not json".into()),
    ];
    let err = store
        .append("account", "1", ExpectedVersion::Any, batch, &no_meta())
        .await
        .unwrap_err();
    let StoreError::Database { operation, source } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*operation, "append");
    let reason = source.to_string();
    assert!(
        reason.contains("event 1 (`Deposited`) is not valid JSON"),
        "{reason}"
    );
    assert!(all_events(store).await.is_empty());
    assert_eq!(store.stream_version("account", "1").await.unwrap(), None);
    db.finish().await;
}

#[tokio::test]
async fn numbers_out_of_range_are_refused_or_read_as_nothing() {
    let db = TestDb::new().await;
    let store = &db.store;
    let too_new = store
        .append(
            "account",
            "1",
            ExpectedVersion::Any,
            vec![NewEvent::new("Opened", u32::MAX, "{}".into())],
            &no_meta(),
        )
        .await;
    assert!(
        matches!(too_new, Err(StoreError::OutOfRange { what: "event version", value }) if value == u64::from(u32::MAX)),
        "{too_new:?}"
    );
    let snapshot = store
        .save_snapshot(
            "account",
            "1",
            Snapshot {
                version: u64::MAX,
                snapshot_version: 1,
                state: "{}".into(),
            },
        )
        .await;
    assert!(
        matches!(snapshot, Err(StoreError::OutOfRange { .. })),
        "{snapshot:?}"
    );
    store
        .append(
            "account",
            "1",
            ExpectedVersion::Any,
            events("Opened", 2),
            &no_meta(),
        )
        .await
        .unwrap();
    assert!(store
        .read_all(u64::MAX, 10, &EventFilter::all())
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .read_stream("account", "1", StreamRange::from(u64::MAX))
        .await
        .unwrap()
        .is_empty());
    let to_max = StreamRange {
        from: 2,
        to: Some(u64::MAX),
        until: None,
    };
    assert_eq!(
        versions(&store.read_stream("account", "1", to_max).await.unwrap()),
        [2]
    );
    assert!(store
        .read_all(0, 0, &EventFilter::all())
        .await
        .unwrap()
        .is_empty());
    db.finish().await;
}

#[tokio::test]
async fn corrupt_rows_are_reported_with_their_position() {
    let db = TestDb::new().await;
    let store = &db.store;
    store
        .append(
            "account",
            "1",
            ExpectedVersion::Any,
            events("Opened", 3),
            &no_meta(),
        )
        .await
        .unwrap();
    for (headers, what) in [("'[1, 2]'", "a list"), ("'{\"n\": 1}'", "a number value")] {
        db.sql(&format!(
            "UPDATE annals_events SET headers = {headers} WHERE position = 2"
        ))
        .await;
        let err = store
            .read_all(0, 10, &EventFilter::all())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { position: 2, reason } if reason.contains("headers")),
            "{what}: {err:?}"
        );
        let err = store
            .read_stream("account", "1", StreamRange::ALL)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { position: 2, .. }),
            "{what}: {err:?}"
        );
    }
    // The rows around it still read.
    assert_eq!(
        positions(&store.read_all(0, 1, &EventFilter::all()).await.unwrap()),
        [1]
    );
    db.sql(
        "ALTER TABLE annals_streams DROP CONSTRAINT annals_streams_version_check; \
            UPDATE annals_streams SET version = -4",
    )
    .await;
    let err = store.stream_version("account", "1").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    db.finish().await;
}

// ---------------------------------------------------------------------------------------
// Reads and metadata

#[tokio::test]
async fn metadata_and_payloads_round_trip_exactly() {
    let db = TestDb::new().await;
    let store = &db.store;
    let headers: Headers = BTreeMap::from([
        ("tenant".to_owned(), "ünïcödé 🦀".to_owned()),
        ("quote".to_owned(), "it's \"quoted\"".to_owned()),
        ("nul".to_owned(), "a\0b".to_owned()),
        ("".to_owned(), String::new()),
    ]);
    let meta = CommitMeta {
        command_id: Some(Uuid::new_v4()),
        correlation_id: Some(Uuid::new_v4()),
        causation_id: Some(Uuid::new_v4()),
        headers: headers.clone(),
    };
    // Payloads are kept as written: spacing, key order, duplicate keys, escapes.
    let payloads = [
        r#"{ "b" : 1,   "a" : [1, 2.50, -0] }"#,
        r#"{"s":"\u0000 nul and \"quote\" and \\ backslash"}"#,
        r#"{"dup":1,"dup":2}"#,
        "[]",
        "42",
    ];
    let batch: Vec<NewEvent> = payloads
        .iter()
        .enumerate()
        .map(|(n, p)| {
            NewEvent::new(
                format!("Type{n}"),
                u32::try_from(n).unwrap() + 1,
                (*p).to_owned(),
            )
        })
        .collect();
    let sent = batch.clone();
    let before = OffsetDateTime::now_utc();
    store
        .append("account", "1", ExpectedVersion::NoStream, batch, &meta)
        .await
        .unwrap();
    let after = OffsetDateTime::now_utc();
    let stream = store
        .read_stream("account", "1", StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(stream, all_events(store).await);
    let recorded_at = stream[0].meta.recorded_at;
    assert!(before - Duration::from_micros(1) <= recorded_at && recorded_at <= after);
    assert_eq!(recorded_at.nanosecond() % 1000, 0, "microsecond precision");
    for (n, (event, new)) in stream.iter().zip(&sent).enumerate() {
        assert_eq!(event.payload, new.payload);
        assert_eq!(event.meta.event_id, new.event_id);
        assert_eq!(event.meta.event_type, new.event_type);
        assert_eq!(event.meta.event_version, new.event_version);
        assert_eq!(event.meta.version, n as u64 + 1);
        assert_eq!(event.meta.position, n as u64 + 1);
        assert_eq!(event.meta.command_id, meta.command_id);
        assert_eq!(event.meta.correlation_id, meta.correlation_id);
        assert_eq!(event.meta.causation_id, meta.causation_id);
        assert_eq!(event.meta.headers, headers);
        assert_eq!(event.meta.recorded_at, recorded_at);
        assert_eq!(
            (
                event.meta.stream_type.as_str(),
                event.meta.stream_id.as_str()
            ),
            ("account", "1")
        );
    }
    // No metadata at all reads back as none.
    store
        .append(
            "account",
            "2",
            ExpectedVersion::NoStream,
            events("Opened", 1),
            &no_meta(),
        )
        .await
        .unwrap();
    let bare = &store
        .read_stream("account", "2", StreamRange::ALL)
        .await
        .unwrap()[0];
    assert_eq!(
        (
            bare.meta.command_id,
            bare.meta.correlation_id,
            bare.meta.causation_id
        ),
        (None, None, None)
    );
    assert!(bare.meta.headers.is_empty());
    db.finish().await;
}

#[tokio::test]
async fn stream_ranges_select_versions_and_times() {
    let db = TestDb::new().await;
    let store = &db.store;
    store
        .append(
            "account",
            "1",
            ExpectedVersion::NoStream,
            events("Deposited", 3),
            &no_meta(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let between = annals::store::now_micros();
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .append(
            "account",
            "1",
            ExpectedVersion::Exact(3),
            events("Deposited", 2),
            &no_meta(),
        )
        .await
        .unwrap();
    store
        .append(
            "account",
            "other",
            ExpectedVersion::NoStream,
            events("Deposited", 2),
            &no_meta(),
        )
        .await
        .unwrap();

    let read = |range| store.read_stream("account", "1", range);
    assert_eq!(
        versions(&read(StreamRange::ALL).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        versions(&read(StreamRange::from(0)).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(versions(&read(StreamRange::from(4)).await.unwrap()), [4, 5]);
    assert!(read(StreamRange::from(6)).await.unwrap().is_empty());
    let window = StreamRange {
        from: 2,
        to: Some(4),
        until: None,
    };
    assert_eq!(versions(&read(window).await.unwrap()), [2, 3, 4]);
    let reversed = StreamRange {
        from: 4,
        to: Some(2),
        until: None,
    };
    assert!(read(reversed).await.unwrap().is_empty());
    let as_of = StreamRange {
        from: 1,
        to: None,
        until: Some(between),
    };
    assert_eq!(versions(&read(as_of).await.unwrap()), [1, 2, 3]);
    let as_of_from_two = StreamRange {
        from: 2,
        to: None,
        until: Some(between),
    };
    assert_eq!(versions(&read(as_of_from_two).await.unwrap()), [2, 3]);
    let long_ago = StreamRange {
        from: 1,
        to: None,
        until: Some(between - Duration::from_secs(3600)),
    };
    assert!(read(long_ago).await.unwrap().is_empty());
    assert!(store
        .read_stream("account", "nobody", StreamRange::ALL)
        .await
        .unwrap()
        .is_empty());

    // A writer with a clock behind: the read stops at the first event after `until`, so
    // what comes back is always a prefix of the stream.
    db.sql(
        "UPDATE annals_events SET recorded_at = recorded_at - interval '1 hour' \
         WHERE stream_id = '1' AND version = 5",
    )
    .await;
    assert_eq!(versions(&read(as_of).await.unwrap()), [1, 2, 3]);
    db.finish().await;
}

#[tokio::test]
async fn global_reads_filter_limit_and_report_the_head() {
    let db = TestDb::new().await;
    let store = &db.store;
    assert_eq!(store.head().await.unwrap(), 0);
    assert!(all_events(store).await.is_empty());
    store
        .append(
            "account",
            "1",
            ExpectedVersion::Any,
            vec![event("Opened", 1), event("Deposited", 2)],
            &no_meta(),
        )
        .await
        .unwrap();
    store
        .append(
            "order",
            "9",
            ExpectedVersion::Any,
            vec![event("Placed", 1), event("Deposited", 3)],
            &no_meta(),
        )
        .await
        .unwrap();
    store
        .append(
            "account",
            "1",
            ExpectedVersion::Any,
            vec![event("Withdrawn", 1)],
            &no_meta(),
        )
        .await
        .unwrap();
    assert_eq!(store.head().await.unwrap(), 5);
    assert_eq!(positions(&all_events(store).await), [1, 2, 3, 4, 5]);
    let all = EventFilter::all();
    assert_eq!(
        positions(&store.read_all(0, 2, &all).await.unwrap()),
        [1, 2]
    );
    assert_eq!(
        positions(&store.read_all(2, 2, &all).await.unwrap()),
        [3, 4]
    );
    assert_eq!(positions(&store.read_all(4, 2, &all).await.unwrap()), [5]);
    let deposits = EventFilter::types(["Deposited", "Withdrawn"]);
    assert_eq!(
        positions(&store.read_all(0, 10, &deposits).await.unwrap()),
        [2, 4, 5]
    );
    assert_eq!(
        positions(&store.read_all(2, 1, &deposits).await.unwrap()),
        [4]
    );
    let nothing = EventFilter::types(Vec::<String>::new());
    assert!(store.read_all(0, 10, &nothing).await.unwrap().is_empty());
    let unknown = EventFilter::types(["Nope"]);
    assert!(store.read_all(0, 10, &unknown).await.unwrap().is_empty());
    let events = all_events(store).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.meta.stream_type.as_str(), e.meta.version))
            .collect::<Vec<_>>(),
        [
            ("account", 1),
            ("account", 2),
            ("order", 1),
            ("order", 2),
            ("account", 3)
        ]
    );
    db.finish().await;
}

#[tokio::test]
async fn snapshots_are_kept_per_version_and_loaded_up_to_a_bound() {
    let db = TestDb::new().await;
    let store = &db.store;
    assert_eq!(
        store.load_snapshot("account", "1", None).await.unwrap(),
        None
    );
    let snap = |version, state: &str| Snapshot {
        version,
        snapshot_version: 2,
        state: state.to_owned(),
    };
    store
        .save_snapshot("account", "1", snap(10, r#"{"balance": 10}"#))
        .await
        .unwrap();
    store
        .save_snapshot("account", "1", snap(20, r#"{"balance": 20}"#))
        .await
        .unwrap();
    store
        .save_snapshot("account", "2", snap(5, r#"{"other": true}"#))
        .await
        .unwrap();
    let load = |max| store.load_snapshot("account", "1", max);
    assert_eq!(
        load(None).await.unwrap(),
        Some(snap(20, r#"{"balance": 20}"#))
    );
    assert_eq!(
        load(Some(u64::MAX)).await.unwrap(),
        Some(snap(20, r#"{"balance": 20}"#))
    );
    assert_eq!(
        load(Some(19)).await.unwrap(),
        Some(snap(10, r#"{"balance": 10}"#))
    );
    assert_eq!(
        load(Some(10)).await.unwrap(),
        Some(snap(10, r#"{"balance": 10}"#))
    );
    assert_eq!(load(Some(9)).await.unwrap(), None);
    // Saving at the same version replaces it.
    let replaced = Snapshot {
        version: 20,
        snapshot_version: 3,
        state: r#"{"balance":21}"#.into(),
    };
    store
        .save_snapshot("account", "1", replaced.clone())
        .await
        .unwrap();
    assert_eq!(load(None).await.unwrap(), Some(replaced));
    assert_eq!(
        store.load_snapshot("account", "2", None).await.unwrap(),
        Some(snap(5, r#"{"other": true}"#))
    );
    let bad_id = store.save_snapshot("account", "", snap(1, "{}")).await;
    assert!(
        matches!(bad_id, Err(StoreError::InvalidStream { .. })),
        "{bad_id:?}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM {schema}.annals_snapshots")
            .await,
        3
    );
    db.finish().await;
}
