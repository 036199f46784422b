//! What each piece of a SQLite append costs: the same single-event commits (W1's shape:
//! one event per transaction, round-robin over 100 streams) against schemas and statements
//! that add one piece at a time, from the raw baseline's table to annals' own append, in
//! one process, rounds interleaved so the machine's noise falls on every variant alike.
//!
//! ```text
//! cargo run --release -p annals-bench --bin sqlite-append -- --commits 5000 --rounds 3
//! ```
//!
//! Each line gives the median time per commit and its ratio to the raw baseline's.

use std::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

use annals::store::{EventStore, ExpectedVersion, NewEvent};
use annals::{CommitMeta, SqliteStore, StreamRef, Uuid};
use clap::Parser;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};

#[derive(Parser)]
#[command(about = "The cost of each piece of a SQLite append, measured piece by piece")]
struct Args {
    /// Commits per variant and round.
    #[arg(long, default_value_t = 5_000)]
    commits: usize,
    /// Rounds; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Streams the commits go round-robin to.
    #[arg(long, default_value_t = 100)]
    streams: usize,
}

/// The annals event table's columns, with or without `AUTOINCREMENT` and the `event_id`
/// constraint.
fn events_table(autoincrement: bool, event_id: &str) -> String {
    format!(
        "CREATE TABLE annals_events (
            position       INTEGER PRIMARY KEY{},
            stream_type    TEXT    NOT NULL,
            stream_id      TEXT    NOT NULL,
            version        INTEGER NOT NULL CHECK (version > 0),
            event_type     TEXT    NOT NULL,
            event_version  INTEGER NOT NULL,
            event_id       {event_id},
            command_id     TEXT,
            correlation_id TEXT,
            causation_id   TEXT,
            recorded_at    INTEGER NOT NULL,
            headers        TEXT    NOT NULL,
            payload        TEXT    NOT NULL,
            UNIQUE (stream_type, stream_id, version)
        ) STRICT;",
        if autoincrement { " AUTOINCREMENT" } else { "" }
    )
}

const STREAMS_TABLE: &str = "CREATE TABLE annals_streams (
    stream_type TEXT NOT NULL, stream_id TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (stream_type, stream_id)) STRICT, WITHOUT ROWID;
CREATE TABLE annals_commands (command_id TEXT NOT NULL PRIMARY KEY, stream_type TEXT NOT NULL,
    stream_id TEXT NOT NULL, first_version INTEGER NOT NULL, last_version INTEGER NOT NULL,
    last_position INTEGER NOT NULL, fingerprint TEXT) STRICT, WITHOUT ROWID;";

const BY_TYPE: &str = "CREATE INDEX annals_events_by_type ON annals_events (event_type, position);";

const INSERT: &str = "INSERT INTO annals_events (stream_type, stream_id, version, event_type, \
    event_version, event_id, command_id, correlation_id, causation_id, recorded_at, headers, \
    payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12);";

const UPSERT: &str = "INSERT INTO annals_streams (stream_type, stream_id, version) \
    SELECT ?1, ?2, ?3 WHERE changes() = 1 \
    ON CONFLICT (stream_type, stream_id) DO UPDATE SET version = excluded.version;";

/// The insert guarded by the stream's version from `annals_streams` and the command id.
const CHECKED_BY_STREAMS: &str = "INSERT INTO annals_events (stream_type, stream_id, version, \
    event_type, event_version, event_id, command_id, correlation_id, causation_id, \
    recorded_at, headers, payload) \
    SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 \
    WHERE COALESCE((SELECT version FROM annals_streams \
                     WHERE stream_type = ?1 AND stream_id = ?2), 0) = ?3 - 1 \
      AND NOT EXISTS (SELECT 1 FROM annals_commands WHERE command_id = ?7);";

/// The insert guarded by the stream's last event (the events' own unique index).
const CHECKED_BY_EVENTS: &str = "INSERT INTO annals_events (stream_type, stream_id, version, \
    event_type, event_version, event_id, command_id, correlation_id, causation_id, \
    recorded_at, headers, payload) \
    SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 \
    WHERE COALESCE((SELECT MAX(version) FROM annals_events \
                     WHERE stream_type = ?1 AND stream_id = ?2), 0) = ?3 - 1 \
      AND NOT EXISTS (SELECT 1 FROM annals_commands WHERE command_id = ?7);";

/// How the event id is bound.
#[derive(Clone, Copy)]
enum EventId {
    Text,
    Blob,
}

/// One variant: a schema, the statement each commit runs, and how ids are bound.
struct Variant {
    name: &'static str,
    schema: String,
    statement: String,
    event_id: EventId,
}

fn variants() -> Vec<Variant> {
    let text_unique = "TEXT NOT NULL UNIQUE";
    let annals = |autoinc: bool, id: &str, extra: &str| {
        format!("{}{STREAMS_TABLE}{extra}", events_table(autoinc, id))
    };
    let v = |name, schema: String, statement: String, event_id| Variant {
        name,
        schema,
        statement,
        event_id,
    };
    vec![
        v(
            "raw baseline table",
            "CREATE TABLE events (position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, \
             version INTEGER NOT NULL, event_type TEXT NOT NULL, payload TEXT NOT NULL, \
             UNIQUE (stream_id, version)) STRICT;"
                .into(),
            "INSERT INTO events (stream_id, version, event_type, payload) \
             VALUES (?2, ?3, ?4, ?12);"
                .into(),
            EventId::Text,
        ),
        v(
            "+ annals' columns",
            annals(false, "TEXT NOT NULL", ""),
            INSERT.into(),
            EventId::Text,
        ),
        v(
            "+ AUTOINCREMENT",
            annals(true, "TEXT NOT NULL", ""),
            INSERT.into(),
            EventId::Text,
        ),
        v(
            "+ event_id UNIQUE (text)",
            annals(true, text_unique, ""),
            INSERT.into(),
            EventId::Text,
        ),
        v(
            "+ by-type index",
            annals(true, text_unique, BY_TYPE),
            INSERT.into(),
            EventId::Text,
        ),
        v(
            "+ stream-version upsert",
            annals(true, text_unique, BY_TYPE),
            format!("{INSERT}{UPSERT}"),
            EventId::Text,
        ),
        v(
            "+ checked insert (= annals today)",
            annals(true, text_unique, BY_TYPE),
            format!("{CHECKED_BY_STREAMS}{UPSERT}"),
            EventId::Text,
        ),
        v(
            "annals today, checked on the events, no upsert",
            annals(true, text_unique, BY_TYPE),
            CHECKED_BY_EVENTS.into(),
            EventId::Text,
        ),
        v(
            "... and without AUTOINCREMENT",
            annals(false, text_unique, BY_TYPE),
            CHECKED_BY_EVENTS.into(),
            EventId::Text,
        ),
        v(
            "... and event_id as a 16-byte blob",
            annals(false, "BLOB NOT NULL UNIQUE", BY_TYPE),
            CHECKED_BY_EVENTS.into(),
            EventId::Blob,
        ),
    ]
}

async fn connect(path: &Path) -> Result<SqliteConnection, sqlx::Error> {
    SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal),
    )
    .await
}

/// Times `commits` single-event commits of `variant` on a fresh database.
async fn time_variant(
    dir: &Path,
    variant: &Variant,
    args: &Args,
    round: usize,
) -> Result<Duration, Box<dyn Error>> {
    let path = dir.join(format!("variant-{round}-{}.db", variant.name.len()));
    let _ = std::fs::remove_file(&path);
    let mut conn = connect(&path).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(variant.schema.as_str()))
        .execute(&mut conn)
        .await?;
    let payload = r#"{"account":"account-00042","amount":125}"#;
    let ids: Vec<String> = (0..args.streams)
        .map(|i| format!("account-{i:05}"))
        .collect();
    let started = Instant::now();
    for i in 0..args.commits {
        let version = i64::try_from(i / args.streams + 1)?;
        let event_id = Uuid::now_v7();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let query = sqlx::query(sqlx::AssertSqlSafe(variant.statement.as_str()))
            .bind("account")
            .bind(&ids[i % args.streams])
            .bind(version)
            .bind("Deposited")
            .bind(1_i64);
        let query = match variant.event_id {
            EventId::Text => query.bind(event_id.hyphenated().to_string()),
            EventId::Blob => query.bind(event_id.as_bytes().to_vec()),
        };
        let done = query
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(1_700_000_000_000_000_i64)
            .bind("{}")
            .bind(payload)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(format!("{}: commit {i} inserted nothing", variant.name).into());
        }
        tx.commit().await?;
    }
    Ok(started.elapsed())
}

/// The same commits through `SqliteStore::append`.
async fn time_store(dir: &Path, args: &Args, round: usize) -> Result<Duration, Box<dyn Error>> {
    let path = dir.join(format!("store-{round}.db"));
    let store = SqliteStore::open(&path).await?;
    let ids: Vec<String> = (0..args.streams)
        .map(|i| format!("account-{i:05}"))
        .collect();
    let meta = CommitMeta::default();
    let started = Instant::now();
    for i in 0..args.commits {
        let version = u64::try_from(i / args.streams)?;
        let event = NewEvent::new(
            "Deposited",
            1,
            r#"{"account":"account-00042","amount":125}"#.to_owned(),
        );
        store
            .append(
                StreamRef::new("account", &ids[i % args.streams]),
                ExpectedVersion::Exact(version),
                vec![event],
                &meta,
            )
            .await?;
    }
    Ok(started.elapsed())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let variants = variants();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len() + 1];
    for round in 0..args.rounds {
        for (index, variant) in variants.iter().enumerate() {
            times[index].push(time_variant(dir.path(), variant, &args, round).await?);
        }
        times[variants.len()].push(time_store(dir.path(), &args, round).await?);
    }
    let per_commit = |runs: &mut Vec<Duration>| {
        runs.sort();
        runs[runs.len() / 2].as_secs_f64() * 1e6 / args.commits as f64
    };
    let medians: Vec<f64> = times.iter_mut().map(per_commit).collect();
    let names = variants
        .iter()
        .map(|v| v.name)
        .chain(["SqliteStore::append (annals today, whole)"]);
    for (name, median) in names.zip(&medians) {
        println!(
            "RESULT sqlite-append {name:<45} {median:8.1} us/commit  {:.2}x raw",
            median / medians[0]
        );
    }
    Ok(())
}
