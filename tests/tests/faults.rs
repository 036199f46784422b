//! Faults and bad data: a live runner whose database connections die, streams whose rows
//! were corrupted by hand, many writers on one hot stream, racing writers on the memory
//! store.
//!
//! The PostgreSQL tests (feature `postgres`, the default) each work in a fresh schema,
//! dropped at the end, at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); the server is never restarted: faults are
//! injected by terminating this test's own backends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use annals::error::{Operation, StreamCorruption};
use annals::{aggregate, Command, Error, Event, Events, ExecuteError, Repository, StoreError};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// The domain: a tally whose additions record the total they were decided on, so a replay
// exposes a lost update.

#[derive(Debug, Clone, PartialEq, Eq, Event, Serialize, Deserialize)]
struct Opened {}

#[derive(Debug, Clone, PartialEq, Eq, Event, Serialize, Deserialize)]
struct Added {
    by: u64,
    seen: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Events)]
enum TallyEvent {
    Opened(Opened),
    Added(Added),
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Tally)]
struct Open {
    #[command(id)]
    tally: String,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Tally)]
struct Add {
    #[command(id)]
    tally: String,
    by: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    total: u64,
    additions: u64,
    /// Additions decided on a total other than the one they were applied to.
    lost_updates: u64,
}

#[aggregate(name = "tally", id = String, event = TallyEvent, error = Never)]
impl Tally {
    #[command(create)]
    fn open(&self, _: Open) -> Result<Opened, Never> {
        Ok(Opened {})
    }

    #[command]
    async fn add(&self, cmd: Add) -> Result<Added, Never> {
        Ok(Added {
            by: cmd.by,
            seen: self.total,
        })
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {}

    #[apply]
    fn added(&mut self, e: &Added) {
        if e.seen != self.total {
            self.lost_updates += 1;
        }
        self.total += e.by;
        self.additions += 1;
    }
}

async fn open<S: annals::store::EventStore>(repo: &Repository<Tally, S>, tally: &str) {
    repo.execute(Open {
        tally: tally.to_owned(),
    })
    .await
    .unwrap_or_else(|e| panic!("opening {tally}: {e}"));
}

// ---------------------------------------------------------------------------------------
// The memory store races like a database.

/// 16 tasks on one stream with a single attempt each, on `MemoryStore`: writers that
/// loaded the same version conflict (so users can test their conflict handling in memory),
/// and the winners' updates are all there.
#[tokio::test]
async fn memory_store_writers_conflict() {
    const WRITERS: u64 = 16;
    let store = annals::MemoryStore::new();
    let repo = Repository::<Tally, _>::new(store.clone()).max_attempts(1);
    open(&repo, "race").await;
    let start = Arc::new(tokio::sync::Barrier::new(usize::try_from(WRITERS).unwrap()));
    let writers: Vec<_> = (1..=WRITERS)
        .map(|by| {
            let repo = repo.clone();
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let result = repo
                    .execute(Add {
                        tally: "race".to_owned(),
                        by,
                    })
                    .await;
                (by, result)
            })
        })
        .collect();
    let mut applied = BTreeMap::new();
    let mut conflicts = 0;
    for writer in writers {
        match writer.await.expect("writer panicked") {
            (by, Ok(executed)) => assert_eq!(applied.insert(executed.version, by), None),
            (_, Err(ExecuteError::Conflict { attempts: 1, .. })) => conflicts += 1,
            (by, Err(e)) => panic!("adding {by} failed: {e}"),
        }
    }
    assert!(conflicts > 0, "16 racing writers and not one conflict");
    assert!(!applied.is_empty());
    let loaded = repo.load(&"race".to_owned()).await.expect("loading");
    assert_eq!(
        loaded.state,
        Tally {
            total: applied.values().sum(),
            additions: applied.len() as u64,
            lost_updates: 0,
        }
    );
}

// ---------------------------------------------------------------------------------------
// Fresh stores.

/// A directory under the system temp dir, removed (with its contents) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("annals-faults-{}", annals::Uuid::new_v4()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn sqlite() -> (annals::SqliteStore, TempDir) {
    let dir = TempDir::new();
    let path = dir.0.join("events.db");
    let store = annals::SqliteStore::open(&path)
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    (store, dir)
}

#[cfg(feature = "postgres")]
fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

#[cfg(feature = "postgres")]
fn new_schema() -> String {
    format!("faults_{}", annals::Uuid::new_v4().simple())
}

#[cfg(feature = "postgres")]
async fn postgres() -> annals::PgStore {
    let url = database_url();
    annals::PgStore::options()
        .schema(new_schema())
        .max_connections(12)
        .open(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {url}: {e} ({e:?})"))
}

/// Drops a schema made by [`new_schema`] (over a connection of its own, so a closed or
/// broken store pool does not matter).
#[cfg(feature = "postgres")]
async fn drop_schema(schema: &str) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&database_url())
        .await
        .expect("connecting to drop the schema");
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("dropping schema {schema}: {e}"));
}

/// Runs `case` on its own task so that a failing case still reaches the clean-up, then
/// re-raises its panic.
async fn run_then<F, C>(case: F, clean_up: C)
where
    F: std::future::Future<Output = ()> + Send + 'static,
    C: std::future::Future<Output = ()>,
{
    let outcome = tokio::spawn(case).await;
    clean_up.await;
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("the case did not finish: {error}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Corrupt streams: versions must run 1..n, and a stream's recorded version must match its
// last event.

const TALLY: &str = "tally";

async fn add<S: annals::store::EventStore>(repo: &Repository<Tally, S>, tally: &str, by: u64) {
    repo.execute(Add {
        tally: tally.to_owned(),
        by,
    })
    .await
    .unwrap_or_else(|e| panic!("adding {by} to {tally}: {e}"));
}

/// Runs raw SQL against a store's tables (named without schema: the PostgreSQL case
/// qualifies them).
trait RawSql: annals::store::EventStore {
    async fn raw(&self, sql: &str);
}

impl RawSql for annals::SqliteStore {
    async fn raw(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(self.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[cfg(feature = "postgres")]
impl RawSql for annals::PgStore {
    async fn raw(&self, sql: &str) {
        let schema = format!("\"{}\".", self.schema());
        let sql = sql.replace("annals_", &format!("{schema}annals_"));
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .execute(self.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Opens `tally` and adds 1, 2, .. `additions` to it.
async fn tally_with<S: annals::store::EventStore>(
    repo: &Repository<Tally, S>,
    tally: &str,
    additions: u64,
) {
    open(repo, tally).await;
    for by in 1..=additions {
        add(repo, tally, by).await;
    }
}

/// The stream's recorded version (PostgreSQL's `annals_streams`; SQLite keeps none since
/// migration 7) says 5, its events end at 3: a command
/// on it is a corrupt-stream error naming the stream and both versions, after one look, not
/// a conflict after five; nothing is appended.
async fn head_ahead_of_events<S: RawSql>(store: S) {
    let repo = Repository::<Tally, S>::new(store.clone());
    tally_with(&repo, "ahead", 2).await;
    store
        .raw("UPDATE annals_streams SET version = version + 2 WHERE stream_id = 'ahead'")
        .await;

    let error = repo
        .execute(Add {
            tally: "ahead".to_owned(),
            by: 10,
        })
        .await
        .expect_err("a command on a corrupt stream");
    let message = error.to_string();
    assert!(
        message.starts_with("corrupt stream tally/ahead"),
        "not a corrupt-stream error: {message} ({error:?})"
    );
    assert_eq!(
        message,
        "corrupt stream tally/ahead: its recorded version is 5, but its events end at version 3"
    );
    assert!(
        matches!(
            error,
            ExecuteError::Failed(Error::CorruptStream {
                problem: StreamCorruption::VersionMismatch {
                    recorded: 5,
                    last: 3
                },
                ..
            })
        ),
        "{error:?}"
    );
    let load = repo
        .load(&"ahead".to_owned())
        .await
        .expect("the events still load");
    assert_eq!((load.version, load.state.total), (3, 3));
    let stored = store
        .read_stream(
            annals::StreamRef::new(TALLY, "ahead"),
            annals::store::StreamRange::ALL,
        )
        .await
        .expect("reading the stream");
    assert_eq!(stored.len(), 3, "something was appended");
}

/// An event's version was moved out of the sequence (both stores check `version > 0`, so
/// upwards): loading names the stream, the version expected and the version
/// found, instead of skipping the event, and a command appends nothing.
async fn versions_run_from_one<S: RawSql>(store: S, moved_to: &str) {
    let repo = Repository::<Tally, S>::new(store.clone());
    tally_with(&repo, "gap", 3).await;
    store
        .raw(&format!(
            "UPDATE annals_events SET version = {moved_to} WHERE stream_id = 'gap' AND version = 2"
        ))
        .await;

    let error = repo
        .load(&"gap".to_owned())
        .await
        .expect_err("loading a stream with a gap");
    assert_eq!(
        error.to_string(),
        "corrupt stream tally/gap: expected version 2, found version 3",
        "{error:?}"
    );
    let error = repo
        .execute(Add {
            tally: "gap".to_owned(),
            by: 10,
        })
        .await
        .expect_err("a command on a stream with a gap");
    assert_eq!(
        error.to_string(),
        "corrupt stream tally/gap: expected version 2, found version 3",
        "{error:?}"
    );
    let stored = store
        .read_stream(
            annals::StreamRef::new(TALLY, "gap"),
            annals::store::StreamRange::ALL,
        )
        .await
        .expect("reading the stream");
    assert_eq!(stored.len(), 4, "something was appended");
}

/// The last event fell out of the sequence: the events left run 1..3 without a gap, but
/// the stream's version is 4 (PostgreSQL's stream head) or 1004 (SQLite's last event), so a command reports the stream corrupt instead of
/// appending on top of the wrong state.
async fn last_event_out_of_sequence<S: RawSql>(store: S, moved_to: &str) {
    let repo = Repository::<Tally, S>::new(store.clone());
    tally_with(&repo, "tail", 3).await;
    store
        .raw(&format!(
            "UPDATE annals_events SET version = {moved_to} WHERE stream_id = 'tail' AND version = 4"
        ))
        .await;

    let error = repo
        .execute(Add {
            tally: "tail".to_owned(),
            by: 10,
        })
        .await
        .expect_err("a command on a corrupt stream");
    let message = error.to_string();
    assert!(
        message.starts_with("corrupt stream tally/tail"),
        "not a corrupt-stream error: {message} ({error:?})"
    );
}

/// A stream version of 0 or below is refused by the schema itself (SQLite migration 5,
/// PostgreSQL from its first schema), on events and on stream heads (PostgreSQL's: SQLite
/// keeps none since migration 7), naming the constraint.
async fn versions_below_one_are_refused<S: RawSql + TrySql>(store: S, stream_heads: bool) {
    let repo = Repository::<Tally, S>::new(store.clone());
    tally_with(&repo, "negative", 2).await;
    let heads = ["UPDATE annals_streams SET version = -1 WHERE stream_id = 'negative'"];
    for sql in [
        "UPDATE annals_events SET version = -3 WHERE stream_id = 'negative' AND version = 2",
        "UPDATE annals_events SET version = 0 WHERE stream_id = 'negative' AND version = 1",
    ]
    .iter()
    .chain(heads.iter().filter(|_| stream_heads))
    {
        let error = store.try_raw(sql).await.expect_err(sql);
        assert!(
            error.contains("version_check") || error.contains("version_positive"),
            "{sql}: {error}"
        );
    }
    let loaded = repo.load(&"negative".to_owned()).await.unwrap();
    assert_eq!((loaded.version, loaded.state.total), (3, 3));
}

/// Raw SQL that may fail: its error as text.
trait TrySql {
    async fn try_raw(&self, sql: &str) -> Result<(), String>;
}

impl TrySql for annals::SqliteStore {
    async fn try_raw(&self, sql: &str) -> Result<(), String> {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(self.pool())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

#[cfg(feature = "postgres")]
impl TrySql for annals::PgStore {
    async fn try_raw(&self, sql: &str) -> Result<(), String> {
        let schema = format!("\"{}\".", self.schema());
        let sql = sql.replace("annals_", &format!("{schema}annals_"));
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .execute(self.pool())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

#[tokio::test]
async fn sqlite_versions_below_one_are_refused() {
    let (store, _dir) = sqlite().await;
    versions_below_one_are_refused(store, false).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_versions_below_one_are_refused() {
    let store = postgres().await;
    let schema = store.schema().to_owned();
    run_then(
        versions_below_one_are_refused(store, true),
        drop_schema(&schema),
    )
    .await;
}

/// A SQLite file written by schema 4 (before fingerprints and version checks): migration 5
/// rebuilds the events and streams tables keeping every row, position, index and the
/// position counter; command ids recorded before it still return their first outcome.
#[tokio::test]
async fn sqlite_migration_5_keeps_rows_and_old_command_ids() {
    use sqlx::Connection;
    let dir = TempDir::new();
    let path = dir.0.join("events.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let schema_4 = [
        (
            1,
            "initial",
            include_str!("../../runtime/migrations/sqlite/0001_initial.sql"),
        ),
        (
            2,
            "checkpoints",
            include_str!("../../runtime/migrations/sqlite/0002_checkpoints.sql"),
        ),
        (
            3,
            "checkpoint_cursor",
            include_str!("../../runtime/migrations/sqlite/0003_checkpoint_cursor.sql"),
        ),
        (
            4,
            "parked",
            include_str!("../../runtime/migrations/sqlite/0004_parked.sql"),
        ),
    ];
    sqlx::raw_sql(
        "CREATE TABLE annals_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
         applied_at INTEGER NOT NULL) STRICT",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    for (version, name, sql) in schema_4 {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO annals_migrations VALUES (?1, ?2, 0)")
            .bind(version)
            .bind(name)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // Two events of tally/old by command `old`, then a third event deleted again: the
    // next position must be 4, not 3.
    let old = annals::Uuid::new_v4();
    let insert = "INSERT INTO annals_events (stream_type, stream_id, version, event_type, \
        event_version, event_id, command_id, recorded_at, headers, payload) \
        VALUES ('tally', 'old', ?1, ?2, 1, ?3, ?4, 0, '{}', ?5)";
    for (version, event_type, payload, command) in [
        (1, "Opened", "{}", None),
        (2, "Added", r#"{"by":5,"seen":0}"#, Some(old)),
        (3, "Added", r#"{"by":1,"seen":5}"#, None),
    ] {
        sqlx::query(insert)
            .bind(version)
            .bind(event_type)
            .bind(annals::Uuid::new_v4().hyphenated().to_string())
            .bind(command.map(|c: annals::Uuid| c.hyphenated().to_string()))
            .bind(payload)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DELETE FROM annals_events WHERE version = 3; \
         INSERT INTO annals_streams VALUES ('tally', 'old', 2); \
         INSERT INTO annals_commands VALUES ('{}', 'tally', 'old', 2, 2, 2);",
        old.hyphenated()
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = annals::SqliteStore::open(&path).await.unwrap();
    let repo = Repository::<Tally, _>::new(store.clone());
    let loaded = repo.load(&"old".to_owned()).await.unwrap();
    assert_eq!((loaded.version, loaded.state.total), (2, 5));
    // The old command id, recorded without a fingerprint: still its first outcome.
    let again = repo
        .execute_with(
            Add {
                tally: "old".to_owned(),
                by: 5,
            },
            annals::CommitMeta::new().command_id(old),
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!((again.version, again.position), (2, 2));
    let next = repo
        .execute(Add {
            tally: "old".to_owned(),
            by: 1,
        })
        .await
        .unwrap();
    assert_eq!((next.version, next.position), (3, 4));
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'annals_events' \
         AND name NOT LIKE 'sqlite_autoindex%'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(indexes, ["annals_events_by_type"]);
    let error = store
        .try_raw("UPDATE annals_events SET version = -1 WHERE stream_id = 'old'")
        .await
        .expect_err("the rebuilt table checks versions");
    assert!(error.contains("annals_events_version_positive"), "{error}");
}

#[tokio::test]
async fn sqlite_versions_run_from_one() {
    let (store, _dir) = sqlite().await;
    versions_run_from_one(store, "102").await;
}

#[tokio::test]
async fn sqlite_last_event_out_of_sequence_is_corrupt() {
    let (store, _dir) = sqlite().await;
    last_event_out_of_sequence(store, "1004").await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_head_ahead_of_events_is_corrupt() {
    let store = postgres().await;
    let schema = store.schema().to_owned();
    run_then(head_ahead_of_events(store), drop_schema(&schema)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_versions_run_from_one() {
    let store = postgres().await;
    let schema = store.schema().to_owned();
    run_then(versions_run_from_one(store, "102"), drop_schema(&schema)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_last_event_out_of_sequence_is_corrupt() {
    let store = postgres().await;
    let schema = store.schema().to_owned();
    run_then(
        last_event_out_of_sequence(store, "1004"),
        drop_schema(&schema),
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Many writers on one hot stream, default settings.

const HOT_WRITERS: u64 = 32;
const HOT_COMMANDS: u64 = 10;

/// 32 tasks add to one stream at once, 10 commands each, with the repository's defaults:
/// every command either applied in some serial order or ended in a conflict (no lost
/// update), and prints the share that ended in a conflict.
async fn hot_stream<S: annals::store::EventStore>(store: S, backend: &str) {
    let repo = Repository::<Tally, S>::new(store.clone());
    open(&repo, "hot").await;
    let start = Arc::new(tokio::sync::Barrier::new(
        usize::try_from(HOT_WRITERS).unwrap(),
    ));
    let writers: Vec<_> = (0..HOT_WRITERS)
        .map(|writer| {
            let repo = repo.clone();
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let mut results = Vec::new();
                for n in 0..HOT_COMMANDS {
                    let by = 1 + writer * HOT_COMMANDS + n;
                    let result = repo
                        .execute(Add {
                            tally: "hot".to_owned(),
                            by,
                        })
                        .await;
                    results.push((by, result));
                }
                results
            })
        })
        .collect();

    let mut applied = BTreeMap::new();
    let mut conflicts = 0u64;
    for writer in writers {
        for (by, result) in writer.await.expect("writer panicked") {
            match result {
                Ok(executed) => {
                    assert_eq!(
                        applied.insert(executed.version, by),
                        None,
                        "two commands at one version"
                    );
                }
                Err(ExecuteError::Conflict { .. }) => conflicts += 1,
                Err(e) => panic!("adding {by} failed: {e}"),
            }
        }
    }
    let total = HOT_WRITERS * HOT_COMMANDS;
    assert_eq!(applied.len() as u64 + conflicts, total);
    #[allow(clippy::cast_precision_loss)]
    let share = conflicts as f64 * 100.0 / total as f64;
    println!("RESULT backend={backend} hot stream: {conflicts} of {total} commands ended in a conflict ({share:.1}%)");

    let loaded = repo
        .load(&"hot".to_owned())
        .await
        .expect("loading the hot stream");
    assert_eq!(loaded.version, applied.len() as u64 + 1);
    assert_eq!(
        loaded.state,
        Tally {
            total: applied.values().sum(),
            additions: applied.len() as u64,
            lost_updates: 0,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_hot_stream_loses_no_update() {
    let (store, _dir) = sqlite().await;
    hot_stream(store, "sqlite").await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hot_stream_loses_no_update() {
    let store = postgres().await;
    let schema = store.schema().to_owned();
    run_then(hot_stream(store, "postgres"), drop_schema(&schema)).await;
}

/// A command that lost a race waits before its next attempt, by default: two writers race
/// on the memory store in virtual time, and the clock moved. (Without the wait the loser
/// retried at once, and a burst of writers kept colliding.)
#[tokio::test(start_paused = true)]
async fn a_conflict_waits_before_the_next_attempt() {
    let repo = Repository::<Tally, _>::new(annals::MemoryStore::new());
    open(&repo, "wait").await;
    let start = tokio::time::Instant::now();
    let racers: Vec<_> = (1..=2)
        .map(|by| {
            let repo = repo.clone();
            tokio::spawn(async move {
                repo.execute(Add {
                    tally: "wait".to_owned(),
                    by,
                })
                .await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for racer in racers {
        let executed = racer.await.expect("racer panicked").expect("retried");
        versions.push(executed.version);
    }
    versions.sort_unstable();
    assert_eq!(versions, [2, 3]);
    // The wait is random between zero and 4 ms: zero exactly once in four million runs.
    assert!(
        start.elapsed() > std::time::Duration::ZERO,
        "the loser retried without waiting"
    );
    let loaded = repo.load(&"wait".to_owned()).await.expect("loading");
    assert_eq!((loaded.state.total, loaded.state.lost_updates), (3, 0));
}

// ---------------------------------------------------------------------------------------
// Which database errors are transient, on real errors from the servers.

/// SQLite: a write that finds another connection holding the write lock past the busy
/// timeout (`SQLITE_BUSY`) is transient; a constraint violation is not.
#[tokio::test]
async fn sqlite_busy_is_transient() {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    let dir = TempDir::new();
    let options = SqliteConnectOptions::new()
        .filename(dir.0.join("busy.db"))
        .create_if_missing(true)
        .busy_timeout(std::time::Duration::ZERO);
    let mut holder = options.connect().await.expect("connecting");
    let mut other = options.connect().await.expect("connecting");
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .execute(&mut holder)
        .await
        .expect("creating a table");
    let mut writing = holder.begin().await.expect("beginning");
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut *writing)
        .await
        .expect("inserting");
    let busy = sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&mut other)
        .await
        .expect_err("a second writer while the first holds the lock");
    let busy = StoreError::database(Operation::Append, busy);
    assert!(busy.is_transient(), "{busy:?}");
    writing.commit().await.expect("committing");

    let taken = sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut other)
        .await
        .expect_err("a repeated key");
    let taken = StoreError::database(Operation::Append, taken);
    assert!(!taken.is_transient(), "{taken:?}");
}

/// PostgreSQL: a refused connection and a terminated backend (57P01) are transient; SQL
/// the server refuses (an unknown table, 42P01) is not.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_connection_failures_are_transient() {
    use sqlx::Connection;
    // Nothing listens on port 1.
    let refused = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .expect_err("connecting to a closed port");
    let refused = StoreError::database(Operation::Open, refused);
    assert!(refused.is_transient(), "{refused:?}");

    let mut connection = sqlx::PgConnection::connect(&database_url())
        .await
        .expect("connecting");
    let unknown = sqlx::query("SELECT * FROM annals_no_such_table")
        .execute(&mut connection)
        .await
        .expect_err("an unknown table");
    let unknown = StoreError::database(Operation::ReadAll, unknown);
    assert!(!unknown.is_transient(), "{unknown:?}");

    let terminated = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&mut connection)
        .await
        .expect_err("terminating the connection's own backend");
    let terminated = StoreError::database(Operation::ReadAll, terminated);
    assert!(terminated.is_transient(), "{terminated:?}");
}

// ---------------------------------------------------------------------------------------
// A live runner whose database connections die.

#[cfg(feature = "postgres")]
mod runner_outage {
    use std::str::FromStr;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use annals::{projection, Backoff, EventMeta, PgStore, PgTx, ProjectionRunner, Repository};
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::Connection;

    use super::{database_url, drop_schema, new_schema, open, run_then, Add, Added, Tally};

    /// Records every `Added` it applies; the primary key on `position` makes a second
    /// application fail (and so end the runner with a handler error).
    struct Seen {
        schema: String,
    }

    #[projection(name = "seen")]
    impl Seen {
        #[on]
        async fn added(
            &mut self,
            e: &Added,
            meta: &EventMeta,
            tx: &mut PgTx,
        ) -> Result<(), sqlx::Error> {
            let sql = format!(
                "INSERT INTO \"{}\".seen (position, stream_id, amount) VALUES ($1, $2, $3)",
                self.schema
            );
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(i64::try_from(meta.position).expect("position fits bigint"))
                .bind(&meta.stream_id)
                .bind(i64::try_from(e.by).expect("amount fits bigint"))
                .execute(&mut **tx)
                .await?;
            Ok(())
        }
    }

    /// The advisory-lock key of a projection's lease on a `PgStore` (FNV-1a of "annals
    /// projection <schema>/<name>", as the store computes it), to find the lease's backend
    /// in `pg_locks`. The test asserts that it found it, so a change of the key fails here
    /// rather than silently sparing the lease.
    fn lease_key(schema: &str, projection: &str) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in format!("annals projection {schema}/{projection}").bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_runner_survives_terminated_connections() {
        let schema = new_schema();
        run_then(survives(schema.clone()), drop_schema(&schema)).await;
    }

    /// A runner follows a writer while every one of its backends (pool, listener, lease) is
    /// terminated, twelve times over: `run` keeps going by itself, reporting each error it
    /// recovers from, and the read model ends with every event exactly once.
    async fn survives(schema: String) {
        let url = database_url();
        // The runner's connections carry the schema's name, so terminating them by name hits
        // no other test's. The lease's connection is found by its lock.
        let options = PgConnectOptions::from_str(&url)
            .expect("DATABASE_URL")
            .application_name(&schema);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            // Without the check a dead idle connection fails the next query that takes it,
            // so every termination reaches the runner, not only those that land mid-query.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .expect("connecting the runner's pool");
        let store = PgStore::options()
            .schema(schema.as_str())
            .with_pool(pool)
            .await
            .expect("opening the runner's store");
        let sql = format!(
            "CREATE TABLE \"{schema}\".seen \
             (position bigint PRIMARY KEY, stream_id text NOT NULL, amount bigint NOT NULL)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .execute(store.pool())
            .await
            .expect("creating the read model");

        // The writer has a pool of its own, which is never terminated.
        let writer_store = PgStore::options()
            .schema(schema.as_str())
            .migrate(false)
            .max_connections(2)
            .open(&url)
            .await
            .expect("opening the writer's store");
        let repo = Repository::<Tally, PgStore>::new(writer_store.clone());
        for tally in ["t0", "t1", "t2", "t3"] {
            open(&repo, tally).await;
        }

        let (stop_runner, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner_store = store.clone();
        let runner_schema = schema.clone();
        let retried = Arc::new(Mutex::new(Vec::new()));
        let report = Arc::clone(&retried);
        let runner = tokio::spawn(async move {
            let mut runner = ProjectionRunner::new(
                runner_store,
                Seen {
                    schema: runner_schema,
                },
            )
            .batch_size(10)
            .idle_timeout(Duration::from_millis(100))
            // Short waits keep the test short; the default starts at 100 ms.
            .retry_backoff(Backoff::new(
                Duration::from_millis(10),
                Duration::from_millis(200),
            ))
            .on_retry(move |error, _| report.lock().unwrap().push(error.to_string()));
            runner
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });

        let writing = Arc::new(AtomicBool::new(true));
        let written = Arc::new(AtomicU64::new(0));
        let writer = {
            let writing = Arc::clone(&writing);
            let written = Arc::clone(&written);
            tokio::spawn(async move {
                let mut n = 0u64;
                while writing.load(Ordering::SeqCst) {
                    n += 1;
                    let tally = format!("t{}", n % 4);
                    if let Err(e) = repo.execute(Add { tally, by: n }).await {
                        return Err(format!("writing {n}: {e}"));
                    }
                    written.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Ok(())
            })
        };

        let mut admin = sqlx::PgConnection::connect(&url)
            .await
            .expect("connecting the admin connection");
        let key = lease_key(&schema, "seen");
        let (high, low) = (
            i64::try_from(key >> 32).unwrap(),
            i64::try_from(key & 0xffff_ffff).unwrap(),
        );
        let mut pool_kills = 0;
        let mut lease_kills = 0;
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let (pool, lease): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE application_name = $1), \
                        count(*) FILTER (WHERE application_name <> $1) \
                 FROM ( \
                     SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE pid <> pg_backend_pid() AND (application_name = $1 OR pid IN ( \
                         SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
                         AND classid::bigint = $2 AND objid::bigint = $3 AND objsubid = 1)) \
                 ) AS terminated",
            )
            .bind(&schema)
            .bind(high)
            .bind(low)
            .fetch_one(&mut admin)
            .await
            .expect("terminating the runner's backends");
            pool_kills += pool;
            lease_kills += lease;
            assert!(
                !runner.is_finished(),
                "the runner stopped: {:?}",
                runner.await
            );
        }
        writing.store(false, Ordering::SeqCst);
        writer
            .await
            .expect("the writer panicked")
            .expect("the writer failed");
        assert!(pool_kills >= 12, "terminated {pool_kills} pool connections");
        assert!(lease_kills >= 1, "never found the lease's connection");

        // Every event reaches the read model, by the runner's own recovery.
        let written = written.load(Ordering::SeqCst);
        let count_sql = format!("SELECT count(*) FROM \"{schema}\".seen");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql.as_str()))
                .fetch_one(writer_store.pool())
                .await
                .expect("counting the read model");
            if u64::try_from(seen).unwrap() == written {
                break;
            }
            assert!(
                !runner.is_finished(),
                "the runner stopped: {:?}",
                runner.await
            );
            assert!(
                Instant::now() < deadline,
                "the read model has {seen} of {written} events after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop_runner.send(());
        let outcome = runner.await.expect("the runner panicked");
        assert!(outcome.is_ok(), "run ended with {outcome:?}");
        let retried = retried.lock().unwrap().clone();
        assert!(!retried.is_empty(), "no error reached the runner");
        println!(
            "the runner recovered from {} errors: {retried:#?}",
            retried.len()
        );

        // Exactly the stored `Added` events, once each (the primary key refuses a second).
        let stored: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT position FROM \"{schema}\".annals_events WHERE event_type = 'Added' \
             ORDER BY position"
        )))
        .fetch_all(writer_store.pool())
        .await
        .expect("reading the events");
        let seen: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT position FROM \"{schema}\".seen ORDER BY position"
        )))
        .fetch_all(writer_store.pool())
        .await
        .expect("reading the read model");
        assert_eq!(seen, stored);
        assert_eq!(seen.len() as u64, written);
        writer_store.pool().close().await;
        store.pool().close().await;
    }
}
