//! The DynamoDB store and the table's stream against the local DynamoDB server
//! (`annals_tests::dynamodb_endpoint`: `DYNAMODB_ENDPOINT`, or one the tests start): what the conformance suite does not cover.
//! A writer killed mid-append, idempotency races between separate clients, DynamoDB's
//! transaction limits, opening a missing or foreign table, and a projection on SQLite
//! following the table's stream exactly once across restarts.

#![cfg(feature = "dynamodb")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::source::DynamoDbStreamSource;
use annals::store::{EventStore, NewEvent, SnapshotStore, StreamRange};
use annals::{
    projection, CommitMeta, DynamoDbStore, Event, EventMeta, ExpectedVersion, Runner, SqliteStore,
    StoreError, StreamRef, Uuid,
};
use serde::{Deserialize, Serialize};

fn endpoint() -> String {
    annals_tests::dynamodb_endpoint()
}

/// A store on a new table, deleted when the guard drops.
struct Table(DynamoDbStore);

impl Table {
    async fn new(prefix: &str) -> Table {
        let name = format!("{prefix}-{}", Uuid::new_v4().simple());
        Table(open(&name, true).await)
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let store = self.0.clone();
        // The runtime may be shutting down: delete on a thread of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async { store.delete_table().await })
        })
        .join();
    }
}

async fn open(table: &str, create: bool) -> DynamoDbStore {
    let endpoint = endpoint();
    DynamoDbStore::options()
        .endpoint(&endpoint)
        .create_table(create)
        .open(table)
        .await
        .unwrap_or_else(|e| panic!("opening table {table} at {endpoint}: {e} ({e:?})"))
}

fn noted(n: usize, bytes: usize) -> NewEvent {
    NewEvent::new(
        "Noted",
        1,
        serde_json::json!({ "n": n, "pad": "x".repeat(bytes) }).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_beyond_the_transaction_limits_are_refused() {
    let table = Table::new("limits").await;
    let store = &table.0;
    let stream = StreamRef::new("account", "a");
    let meta = CommitMeta::new().command_id(Uuid::new_v4());

    // 2 items per event, the command's outcome and the version check: 49 events fit.
    let refused = store
        .append(
            stream,
            ExpectedVersion::NoStream,
            (0..50).map(|n| noted(n, 10)).collect(),
            &meta,
        )
        .await;
    match refused {
        Err(e @ StoreError::TooLarge { .. }) => {
            let message = e.to_string();
            assert!(message.contains("100 items"), "{message}");
            assert!(message.contains("account/a"), "{message}");
        }
        other => panic!("50 events in one commit: {other:?}"),
    }
    assert_eq!(store.stream_version(stream).await.unwrap(), None);
    assert_eq!(
        store
            .command_outcome(meta.command_id.unwrap())
            .await
            .unwrap(),
        None
    );
    let outcome = store
        .append(
            stream,
            ExpectedVersion::NoStream,
            (0..49).map(|n| noted(n, 10)).collect(),
            &meta,
        )
        .await
        .unwrap();
    assert_eq!((outcome.first_version, outcome.last_version), (1, 49));

    // An event past the 400 KB item limit, and a commit past the 4 MB transaction limit.
    for (events, limit) in [
        (vec![noted(0, 410 * 1024)], "400 KB"),
        ((0..12).map(|n| noted(n, 390 * 1024)).collect(), "4 MB"),
    ] {
        match store
            .append(
                stream,
                ExpectedVersion::Exact(49),
                events,
                &CommitMeta::new(),
            )
            .await
        {
            Err(e @ StoreError::TooLarge { .. }) => {
                assert!(e.to_string().contains(limit), "{e}");
            }
            other => panic!("a commit past {limit}: {other:?}"),
        }
    }
    assert_eq!(store.stream_version(stream).await.unwrap(), Some(49));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_refuses_a_missing_or_foreign_table() {
    let missing = format!("missing-{}", Uuid::new_v4().simple());
    let error = DynamoDbStore::options()
        .endpoint(endpoint())
        .open(&missing)
        .await
        .expect_err("a missing table");
    assert!(
        matches!(&error, StoreError::Config(m) if m.contains("does not exist")),
        "{error}"
    );
    // Creating twice is fine: the second finds the table.
    let table = Table::new("twice").await;
    assert!(!table.0.create_table().await.unwrap());
    open(table.0.table(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_transient_error() {
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = DynamoDbStore::options()
        .endpoint(format!("http://127.0.0.1:{port}"))
        .open("events")
        .await
        .expect_err("nothing listens there");
    assert!(error.is_transient(), "{error:?}");
    // A refusal by the server is not.
    let error = DynamoDbStore::options()
        .endpoint(endpoint())
        .open("no-such-table-here")
        .await
        .expect_err("a missing table");
    assert!(!error.is_transient(), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_races_between_clients_append_once() {
    const WRITERS: usize = 8;
    let table = Table::new("idempotency").await;
    for round in 0..5 {
        let command_id = Uuid::new_v4();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let name = table.0.table().to_owned();
                tokio::spawn(async move {
                    // A client of its own, as separate processes or functions would have.
                    let store = open(&name, false).await;
                    // Half of them race on one stream, the others each on their own.
                    let id = if writer % 2 == 0 {
                        "hot".to_owned()
                    } else {
                        format!("other-{writer}")
                    };
                    store
                        .append(
                            StreamRef::new("account", &id),
                            ExpectedVersion::Any,
                            vec![noted(round, 10), noted(round, 10)],
                            &CommitMeta::new().command_id(command_id),
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
        let fresh: Vec<_> = outcomes.iter().filter(|o| !o.duplicate).collect();
        assert_eq!(fresh.len(), 1, "round {round}: {outcomes:?}");
        let first = fresh[0].clone();
        for outcome in &outcomes {
            assert_eq!(
                outcome.clone().into_duplicate(),
                first.clone().into_duplicate()
            );
        }
        // The command's events are stored once, wherever the winner wrote them.
        let mut carrying = 0;
        for id in
            std::iter::once("hot".to_owned()).chain((0..WRITERS).map(|w| format!("other-{w}")))
        {
            let events = table
                .0
                .read_stream(StreamRef::new("account", &id), StreamRange::ALL)
                .await
                .unwrap();
            carrying += events
                .iter()
                .filter(|e| e.meta.command_id == Some(command_id))
                .count();
        }
        assert_eq!(carrying, 2, "round {round}");
    }
}

/// The writer process of [`a_killed_writer_leaves_whole_commits`]: appends commits of
/// [`COMMIT`] events until killed, printing each command id before sending it. Does
/// nothing unless started by that test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_writer() {
    let Ok(table) = std::env::var(CHILD_TABLE) else {
        return;
    };
    let store = open(&table, false).await;
    for n in 0.. {
        let command_id = Uuid::new_v4();
        let stream_id = format!("k-{}", n % 3);
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{CHILD_MARKER} {command_id}").unwrap();
            out.flush().unwrap();
        }
        store
            .append(
                StreamRef::new("account", &stream_id),
                ExpectedVersion::Any,
                (0..COMMIT).map(|i| noted(i, 4096)).collect(),
                &CommitMeta::new().command_id(command_id),
            )
            .await
            .unwrap();
    }
}

const CHILD_TABLE: &str = "ANNALS_DYNAMODB_CHILD_TABLE";
const CHILD_MARKER: &str = "annals-child-writer: sending";
const COMMIT: usize = 20;

struct ChildProcess(Child);

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writer_leaves_whole_commits() {
    let table = Table::new("killed").await;
    let mut sent = Vec::new();
    for round in 0..4_u64 {
        let mut child = ChildProcess(
            Process::new(std::env::current_exe().unwrap())
                .args([
                    "child_process_writer",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_TABLE, table.0.table())
                .env("DYNAMODB_ENDPOINT", endpoint())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let ids = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&ids);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find(CHILD_MARKER) {
                    if let Ok(id) = Uuid::parse_str(line[at + CHILD_MARKER.len()..].trim()) {
                        seen.lock().unwrap().push(id);
                    }
                }
            }
        });
        // Let it commit a few, then kill it at a moment that varies from round to round,
        // most likely while a request is on its way.
        tokio::time::timeout(Duration::from_secs(60), async {
            while ids.lock().unwrap().len() < 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the writer started appending");
        tokio::time::sleep(Duration::from_millis(3 * round + 1)).await;
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        sent.extend(ids.lock().unwrap().iter().copied());
    }

    // Every stream is whole commits, in order, with nothing between them.
    let mut stored = std::collections::HashMap::new();
    for k in 0..3 {
        let id = format!("k-{k}");
        let events = table
            .0
            .read_stream(StreamRef::new("account", &id), StreamRange::ALL)
            .await
            .unwrap();
        assert_eq!(events.len() % COMMIT, 0, "{id} holds a partial commit");
        for (commit, chunk) in events.chunks(COMMIT).enumerate() {
            let command = chunk[0].meta.command_id.expect("a command id");
            for (i, event) in chunk.iter().enumerate() {
                assert_eq!(event.meta.version, (commit * COMMIT + i + 1) as u64);
                assert_eq!(event.meta.command_id, Some(command), "{id} mixes commits");
                let payload: serde_json::Value = serde_json::from_str(&event.payload).unwrap();
                assert_eq!(payload["n"], i);
            }
            assert!(stored.insert(command, chunk.len()).is_none());
        }
    }
    // Each command sent either committed whole, with its outcome recorded, or left nothing.
    let mut committed = 0;
    for id in &sent {
        let outcome = table.0.command_outcome(*id).await.unwrap();
        assert_eq!(
            outcome.is_some(),
            stored.contains_key(id),
            "command {id}: outcome {outcome:?}"
        );
        committed += usize::from(outcome.is_some());
    }
    assert_eq!(committed, stored.len(), "every stored commit was sent");
    assert!(committed >= 4 * 3, "the writers committed {committed}");
}

#[derive(Debug, Clone, Event, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

/// One row per handled event, in the SQLite store's transaction with the checkpoint.
struct Deposits;

#[projection(name = "deposits")]
impl Deposits {
    #[on]
    async fn deposited(
        &mut self,
        e: &Deposited,
        meta: &EventMeta,
        tx: &mut annals::SqliteTx,
    ) -> Result<(), annals::error::BoxError> {
        sqlx::query(
            "INSERT INTO deposits (event_id, stream_id, version, amount) VALUES (?, ?, ?, ?)",
        )
        .bind(meta.event_id.to_string())
        .bind(&meta.stream_id)
        .bind(i64::try_from(meta.version)?)
        .bind(i64::try_from(e.amount)?)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

async fn deposit(store: &DynamoDbStore, account: &str, amount: u64) {
    store
        .append(
            StreamRef::new("account", account),
            ExpectedVersion::Any,
            vec![
                NewEvent::new(
                    "Deposited",
                    1,
                    serde_json::json!({ "amount": amount }).to_string(),
                ),
                NewEvent::new("Noted", 1, "{}".to_owned()),
            ],
            &CommitMeta::new().command_id(Uuid::new_v4()),
        )
        .await
        .unwrap();
}

async fn source(store: &DynamoDbStore) -> DynamoDbStreamSource {
    store
        .stream_source()
        .await
        .unwrap()
        .poll_interval(Duration::from_millis(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_projection_follows_the_table_stream_exactly_once() {
    let table = Table::new("stream").await;
    let dynamo = &table.0;
    let dir = annals_tests::TempDir::new().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("read.db")).await.unwrap();
    sqlx::query(
        "CREATE TABLE deposits (event_id TEXT PRIMARY KEY, stream_id TEXT, version INTEGER, \
         amount INTEGER)",
    )
    .execute(sqlite.pool())
    .await
    .unwrap();
    // Snapshots, refused appends and duplicates write items or nothing: never events.
    for (account, amount) in [("a", 1), ("b", 2), ("a", 3)] {
        deposit(dynamo, account, amount).await;
    }
    dynamo
        .save_snapshot(
            StreamRef::new("account", "a"),
            annals::store::Snapshot::new(2, 1, "{}".to_owned()),
        )
        .await
        .unwrap();
    let conflict = dynamo
        .append(
            StreamRef::new("account", "a"),
            ExpectedVersion::Exact(1),
            vec![NewEvent::new(
                "Deposited",
                1,
                r#"{"amount":1000}"#.to_owned(),
            )],
            &CommitMeta::new(),
        )
        .await;
    assert!(matches!(
        conflict,
        Err(StoreError::WrongExpectedVersion { .. })
    ));

    let mut runner = Runner::with_source(sqlite.clone(), source(dynamo).await, Deposits)
        .named("deposits_from_dynamodb")
        .batch_size(2);
    let done = runner.catch_up().await.unwrap();
    assert_eq!(done.handled, 3);
    let status = runner.status().await.unwrap();
    assert_eq!(status.lag(), 0, "{status:?}");
    drop(runner);

    // More events while no runner runs, then a new runner (a restart) on the same
    // checkpoint, then live.
    deposit(dynamo, "b", 4).await;
    deposit(dynamo, "c", 5).await;
    let mut runner = Runner::with_source(sqlite.clone(), source(dynamo).await, Deposits)
        .named("deposits_from_dynamodb")
        .batch_size(3);
    assert_eq!(runner.catch_up().await.unwrap().handled, 2);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async { stopped.await.unwrap_or(()) })
            .await
            .unwrap();
    });
    deposit(dynamo, "a", 6).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM deposits")
                .fetch_one(sqlite.pool())
                .await
                .unwrap();
            if count >= 6 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the live runner followed the stream");
    stop.send(()).unwrap();
    task.await.unwrap();

    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT stream_id, version, amount FROM deposits ORDER BY amount")
            .fetch_all(sqlite.pool())
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            ("a".to_owned(), 1, 1),
            ("b".to_owned(), 1, 2),
            ("a".to_owned(), 3, 3),
            ("b".to_owned(), 3, 4),
            ("c".to_owned(), 1, 5),
            ("a".to_owned(), 5, 6),
        ]
    );
}
