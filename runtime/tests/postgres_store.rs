//! PostgreSQL-specific behaviour of `PgStore` against the real server at `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`): schemas and migrations, concurrent
//! writers on many connections, the global order while transactions are open (the gap
//! tests), NOTIFY, the caller's own transaction, what PostgreSQL refuses, and rows only
//! raw SQL can write. The behaviour every store shares is the conformance suite's
//! (`tests/tests/conformance/`).
//!
//! Every test works in a fresh schema of its own, dropped at the end, so tests run in
//! parallel. An unreachable server fails the tests: nothing here skips.
#![cfg(feature = "postgres")]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::store::PgCursor;
use annals::store::{
    EventFilter, EventLog, EventStore, NewEvent, Snapshot, SnapshotStore, StreamRange, TxStore,
};
use annals::{CommitMeta, ExpectedVersion, PgStore, RecordedEvent, StoreError, StreamRef, Uuid};
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
            .open(&database_url())
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
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{}\" CASCADE",
            self.store.schema()
        )))
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
    CommitMeta::new()
}

fn with_command(id: Uuid) -> CommitMeta {
    CommitMeta::new().command_id(id)
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
    let first = recorded().await;
    assert_eq!(
        first[..2],
        [(1, "initial".to_owned()), (2, "checkpoints".to_owned())]
    );
    assert!(
        first.iter().zip(1..).all(|((version, _), n)| *version == n),
        "versions run 1..n: {first:?}"
    );
    assert_eq!(
        first
            .last()
            .map(|(version, name)| (*version, name.as_str())),
        Some((7, "workflows"))
    );
    db.store
        .append(
            StreamRef::new("account", "1"),
            ExpectedVersion::NoStream,
            events("Opened", 2),
            &no_meta(),
        )
        .await
        .unwrap();

    let again = PgStore::options()
        .schema(db.store.schema())
        .with_pool(db.pool().clone())
        .await
        .unwrap();
    again.migrate().await.unwrap();
    assert_eq!(recorded().await, first);
    assert_eq!(
        again
            .stream_version(StreamRef::new("account", "1"))
            .await
            .unwrap(),
        Some(2)
    );
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
                    .open(&database_url())
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
        // This build's migrations: 1 to 7.
        db.count("SELECT count(*) - 7 FROM {schema}.annals_migrations")
            .await,
        0,
        "each migration recorded once"
    );
    // Each of them works on the same tables.
    for (n, store) in stores.iter().enumerate() {
        store
            .append(
                StreamRef::new("account", &n.to_string()),
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
    let err = PgStore::options()
        .schema(db.store.schema())
        .with_pool(db.pool().clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                known
            } if known >= 5
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
        let by_url = PgStore::options().schema(hostile).open(&url).await;
        assert!(
            matches!(by_url, Err(StoreError::Config(_))),
            "{hostile:?}: {by_url:?}"
        );
        let by_pool = PgStore::options()
            .schema(hostile)
            .with_pool(db.pool().clone())
            .await;
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
        let store = PgStore::options()
            .schema(&fine)
            .with_pool(db.pool().clone())
            .await
            .unwrap();
        store
            .append(
                StreamRef::new("account", "1"),
                ExpectedVersion::Any,
                events("Opened", 1),
                &no_meta(),
            )
            .await
            .unwrap();
        assert_eq!(store.notify_channel(), format!("{fine}_events"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{fine}\" CASCADE"
        )))
        .execute(db.pool())
        .await
        .unwrap();
    }
    db.finish().await;
}

// ---------------------------------------------------------------------------------------
// Concurrent appends

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
                        StreamRef::new("account", "1"),
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
            .stream_version(StreamRef::new("account", "1"))
            .await
            .unwrap()
            .unwrap();
        let writers: Vec<_> = (0..TASKS)
            .map(|_| {
                let store = db.store.clone();
                tokio::spawn(async move {
                    store
                        .append(
                            StreamRef::new("account", "1"),
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
        .read_stream(StreamRef::new("account", "1"), StreamRange::ALL)
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
                                StreamRef::new("account", "2"),
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
        .read_stream(StreamRef::new("account", "2"), StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(versions(&stream), (1..=400).collect::<Vec<_>>());
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
                            StreamRef::new("account", &stream),
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
            StreamRef::new("account", stream),
            ExpectedVersion::Any,
            batch,
            &no_meta(),
        )
        .await
        .map(|(outcome, _)| outcome)
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

/// Follows the log from the start with a cursor, as runners do, until `done` is set and a
/// read comes back with nothing new; asserts no event comes twice.
async fn follow(store: PgStore, filter: EventFilter, done: Arc<AtomicBool>) -> Vec<RecordedEvent> {
    let mut seen: Vec<RecordedEvent> = Vec::new();
    let mut ids = HashSet::new();
    let mut cursor = PgCursor::default();
    loop {
        // Looked at before the batch: once every writer has finished and every event is
        // below the horizon (other tests' open transactions on the same server may hold it
        // back a while), a read with nothing new means the end.
        let finished = done.load(Ordering::SeqCst) && below_horizon(&store).await;
        let batch = store.read_log(&cursor, 7, &filter).await.unwrap();
        assert!(
            batch.end.highest_position() >= cursor.highest_position(),
            "the cursor went back"
        );
        let idle = batch.events.is_empty();
        cursor = batch.end;
        if idle {
            if finished {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        for event in batch.events {
            assert!(ids.insert(event.meta.event_id), "an event came twice");
            assert!(filter.matches(&event.meta.event_type));
            seen.push(event);
        }
    }
}

/// Reads the log after `cursor` until something comes (within 20 s).
async fn read_until_some(store: &PgStore, mut cursor: PgCursor) -> annals::store::Batch<PgCursor> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let batch = store
            .read_log(&cursor, 10, &EventFilter::all())
            .await
            .unwrap();
        if !batch.events.is_empty() {
            return batch;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing came");
        cursor = batch.end;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether every event of the store's schema is below the oldest running transaction.
async fn below_horizon(store: &PgStore) -> bool {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(max(tx_id) < pg_snapshot_xmin(pg_current_snapshot()), true) \
         FROM \"{}\".annals_events",
        store.schema()
    )))
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// The events sorted by position (the log's order is by transaction, then position).
fn by_position(mut events: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
    events.sort_by_key(|e| e.meta.position);
    events
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
                        .append(
                            StreamRef::new("account", &stream),
                            ExpectedVersion::Any,
                            batch,
                            &no_meta(),
                        )
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
    assert_eq!(by_position(seen.clone()), all_events(&db.store).await);
    let expected_b: Vec<&RecordedEvent> =
        seen.iter().filter(|e| e.meta.event_type == "B").collect();
    assert_eq!(
        seen_b.iter().map(|e| e.meta.position).collect::<Vec<_>>(),
        expected_b
            .iter()
            .map(|e| e.meta.position)
            .collect::<Vec<_>>()
    );
    assert_eq!(seen_b.iter().collect::<Vec<_>>(), expected_b);
    assert_eq!(
        db.count("SELECT count(*) FROM {schema}.annals_events")
            .await,
        i64::try_from(committed.len()).unwrap()
    );
    db.finish().await;
}

/// The interleaving that defeats a reader following positions: an older transaction
/// (lower id) appends after a younger one took a lower position, and commits while the
/// younger one is still open. The log's order is (transaction id, position): the reader is
/// shown the older one's event, then the younger one's once it commits, and skips neither.
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
            StreamRef::new("account", "y"),
            ExpectedVersion::Any,
            events("A", 1),
            &no_meta(),
        )
        .await
        .map(|(outcome, _)| outcome)
        .unwrap();
    let published = store
        .append_in(
            &mut older,
            StreamRef::new("account", "o"),
            ExpectedVersion::Any,
            events("B", 1),
            &no_meta(),
        )
        .await
        .map(|(outcome, _)| outcome)
        .unwrap();
    older.commit().await.unwrap();
    assert!(published.last_position > held.last_position);

    let done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(follow(store.clone(), EventFilter::all(), done.clone()));
    // Other tests' open transactions on the server may hold the horizon back a moment.
    let first = read_until_some(&store, PgCursor::default()).await;
    assert_eq!(
        positions(&first.events),
        [published.last_position],
        "the older transaction's event, not yet the open one's"
    );
    // Nothing new until the younger one commits.
    let again = store
        .read_log(&first.end, 10, &EventFilter::all())
        .await
        .unwrap();
    assert!(again.events.is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    younger.commit().await.unwrap();
    let late = read_until_some(&store, again.end).await;
    assert_eq!(positions(&late.events), [held.last_position], "not skipped");
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    assert_eq!(
        positions(&seen),
        [published.last_position, held.last_position]
    );
    db.finish().await;
}

/// Many writers on few streams, autocommit appends and transactions that append first:
/// a reader following the log sees each stream's versions in order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_log_keeps_each_streams_versions_in_order() {
    const WRITERS: u64 = 12;
    const APPENDS: u64 = 25;
    let db = TestDb::with_connections(16).await;
    let done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(follow(db.store.clone(), EventFilter::all(), done.clone()));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = db.store.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ (w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for _ in 0..APPENDS {
                let stream = StreamRef::new(
                    "account",
                    ["a", "b", "c"][usize::try_from(rng.below(3)).unwrap()],
                );
                let batch = events("A", u32::try_from(1 + rng.below(2)).unwrap());
                if rng.below(2) == 0 {
                    store
                        .append(stream, ExpectedVersion::Any, batch, &no_meta())
                        .await
                        .unwrap();
                } else {
                    let mut tx = store.pool().begin().await.unwrap();
                    store
                        .append_in(&mut tx, stream, ExpectedVersion::Any, batch, &no_meta())
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(rng.below(4))).await;
                    tx.commit().await.unwrap();
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for event in &seen {
        let previous = last.insert(event.meta.stream_id.clone(), event.meta.version);
        assert_eq!(
            event.meta.version,
            previous.unwrap_or(0) + 1,
            "stream {} out of order",
            event.meta.stream_id
        );
    }
    assert_eq!(by_position(seen), all_events(&db.store).await);
    db.finish().await;
}

// ---------------------------------------------------------------------------------------
// Notifications and the caller's transaction

#[tokio::test]
async fn appends_notify_listeners_after_commit() {
    let db = TestDb::new().await;
    let mut listener = PgListener::connect_with(db.pool()).await.unwrap();
    listener.listen(db.store.notify_channel()).await.unwrap();
    let outcome = db
        .store
        .append(
            StreamRef::new("account", "1"),
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
    assert!(outcome.last_position > 0);
    drop(listener);
    db.finish().await;
}

/// An append inside the caller's own sqlx transaction commits or rolls back with it, and
/// an error the server raises there (a payload that is not JSON) does not abort it:
/// PostgreSQL aborts a transaction on any error, so the store runs each append under a
/// savepoint.
#[tokio::test]
async fn a_server_error_in_a_callers_transaction_leaves_it_usable() {
    let db = TestDb::new().await;
    let store = &db.store;
    let mut tx = store.pool().begin().await.unwrap();
    let first = store
        .append_in(
            &mut tx,
            StreamRef::new("account", "1"),
            ExpectedVersion::NoStream,
            events("Opened", 2),
            &no_meta(),
        )
        .await
        .map(|(outcome, _)| outcome)
        .unwrap();
    let bad = store
        .append_in(
            &mut tx,
            StreamRef::new("account", "1"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Deposited", 1, "{oops".into())],
            &no_meta(),
        )
        .await
        .map(|(outcome, _)| outcome);
    assert!(matches!(bad, Err(StoreError::Database { .. })), "{bad:?}");
    let second = store
        .append_in(
            &mut tx,
            StreamRef::new("account", "1"),
            ExpectedVersion::Exact(2),
            events("Deposited", 1),
            &no_meta(),
        )
        .await
        .map(|(outcome, _)| outcome)
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((first.last_version, second.last_version), (2, 3));
    let stream = store
        .read_stream(StreamRef::new("account", "1"), StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(versions(&stream), [1, 2, 3]);

    let mut tx = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut tx,
            StreamRef::new("account", "1"),
            ExpectedVersion::Exact(3),
            events("Deposited", 1),
            &no_meta(),
        )
        .await
        .map(|(outcome, _)| outcome)
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        store
            .stream_version(StreamRef::new("account", "1"))
            .await
            .unwrap(),
        Some(3)
    );
    db.finish().await;
}

// ---------------------------------------------------------------------------------------
// What PostgreSQL refuses

#[tokio::test]
async fn a_payload_that_is_not_json_is_refused_and_nothing_is_stored() {
    let db = TestDb::new().await;
    let store = &db.store;
    let batch = vec![
        NewEvent::new("Opened", 1, r#"{"ok":true}"#.into()),
        NewEvent::new("Deposited", 1, "{not json".into()),
    ];
    let err = store
        .append(
            StreamRef::new("account", "1"),
            ExpectedVersion::Any,
            batch,
            &no_meta(),
        )
        .await
        .unwrap_err();
    let StoreError::Database { operation, source } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*operation, annals::error::Operation::Append);
    let reason = source.to_string();
    assert!(
        reason.contains("event 1 (`Deposited`) is not valid JSON"),
        "{reason}"
    );
    assert!(all_events(store).await.is_empty());
    assert_eq!(
        store
            .stream_version(StreamRef::new("account", "1"))
            .await
            .unwrap(),
        None
    );
    db.finish().await;
}

/// PostgreSQL's side of the conformance suite's `large_numbers_never_wrap`: event versions
/// are `integer` and stream versions `bigint`, so larger ones are refused, not wrapped.
#[tokio::test]
async fn versions_past_integer_and_bigint_are_refused() {
    let db = TestDb::new().await;
    let store = &db.store;
    let too_new = store
        .append(
            StreamRef::new("account", "1"),
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
            StreamRef::new("account", "1"),
            Snapshot::new(u64::MAX, 1, "{}".into()),
        )
        .await;
    assert!(
        matches!(snapshot, Err(StoreError::OutOfRange { .. })),
        "{snapshot:?}"
    );
    db.finish().await;
}

// ---------------------------------------------------------------------------------------
// Rows written with raw SQL

#[tokio::test]
async fn corrupt_rows_are_reported_with_their_position() {
    let db = TestDb::new().await;
    let store = &db.store;
    store
        .append(
            StreamRef::new("account", "1"),
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
            matches!(&err, StoreError::Corrupt { position: Some(2), reason } if reason.contains("headers")),
            "{what}: {err:?}"
        );
        let err = store
            .read_stream(StreamRef::new("account", "1"), StreamRange::ALL)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Corrupt {
                    position: Some(2),
                    ..
                }
            ),
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
    let err = store
        .stream_version(StreamRef::new("account", "1"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    db.finish().await;
}

/// A writer with a clock behind: a temporal read stops at the first event after `until`,
/// so what comes back is always a prefix of the stream.
#[tokio::test]
async fn a_temporal_read_is_a_prefix_even_if_the_clock_went_back() {
    let db = TestDb::new().await;
    let store = &db.store;
    store
        .append(
            StreamRef::new("account", "1"),
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
            StreamRef::new("account", "1"),
            ExpectedVersion::Exact(3),
            events("Deposited", 2),
            &no_meta(),
        )
        .await
        .unwrap();
    db.sql(
        "UPDATE annals_events SET recorded_at = recorded_at - interval '1 hour' \
         WHERE stream_id = '1' AND version = 5",
    )
    .await;
    let as_of = store
        .read_stream(
            StreamRef::new("account", "1"),
            StreamRange::from(1).until(between),
        )
        .await
        .unwrap();
    assert_eq!(versions(&as_of), [1, 2, 3]);
    db.finish().await;
}
