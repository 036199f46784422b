//! One long stream, for what the workloads' sizes do not show: `seed` writes one account's
//! stream of N events (in appends of 1,000); `load` loads it once in a fresh process and
//! prints what it found, so `/usr/bin/time -v` around it reports the load's own peak RSS;
//! `catch-up` times a type-filtered projection's catch-up over the whole log from position
//! 0, on PostgreSQL with or without planner statistics (`seed --no-autovacuum`, then
//! `catch-up`, then `catch-up --analyze`).
//!
//! ```sh
//! cargo build --release -p annals-bench --bin long-log
//! target/release/long-log --sqlite /tmp/long.db seed --events 1000000
//! /usr/bin/time -v target/release/long-log --sqlite /tmp/long.db load
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Instant;

use annals::store::{CheckpointStore, EventLog, EventStore, NewEvent};
use annals::{
    projection, CommitMeta, Events, ExpectedVersion, PgStore, Repository, Runner, SqliteStore,
    StreamRef,
};
use annals_examples::bank::{Account, AccountEvent, AccountOpened, Deposited};
use clap::{Args, Parser, Subcommand};

/// Writes, then loads, one long stream.
#[derive(Debug, Parser)]
#[command(name = "long-log")]
struct Cli {
    #[command(subcommand)]
    phase: Phase,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum Phase {
    /// Writes the stream (an opening and N - 1 deposits of 100).
    Seed {
        /// Events in the stream.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// PostgreSQL: turn autovacuum (and its ANALYZE) off on the events table first,
        /// so the table has no planner statistics.
        #[arg(long)]
        no_autovacuum: bool,
    },
    /// Loads it through `Repository::load` and checks version and balance.
    Load,
    /// Times `Runner::catch_up` of a projection of deposits only, from position 0.
    CatchUp {
        /// PostgreSQL: run ANALYZE on the events table first.
        #[arg(long)]
        analyze: bool,
    },
}

/// Where the stream is.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// A SQLite file.
    #[arg(long, global = true)]
    sqlite: Option<PathBuf>,
    /// A PostgreSQL schema, on the server at `DATABASE_URL`.
    #[arg(long, global = true)]
    pg_schema: Option<String>,
}

const STREAM: &str = "long";
const CHUNK: u64 = 1_000;

type BoxError = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    match (&cli.target.sqlite, &cli.target.pg_schema) {
        (Some(path), _) => phase(SqliteStore::open(path).await?, cli.phase).await,
        (None, Some(schema)) => {
            let url = std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            let store = PgStore::options().schema(schema).open(&url).await?;
            let events_table = format!("\"{schema}\".annals_events");
            let sql = match cli.phase {
                Phase::Seed {
                    no_autovacuum: true,
                    ..
                } => Some(format!(
                    "ALTER TABLE {events_table} SET (autovacuum_enabled = false)"
                )),
                Phase::CatchUp { analyze: true } => Some(format!("ANALYZE {events_table}")),
                _ => None,
            };
            if let Some(sql) = sql {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(store.pool())
                    .await?;
            }
            phase(store, cli.phase).await
        }
        (None, None) => Err("give --sqlite FILE or --pg-schema NAME".into()),
    }
}

async fn phase<S: CheckpointStore + EventLog>(store: S, phase: Phase) -> Result<(), BoxError> {
    match phase {
        Phase::Seed { events, .. } => seed(store, events).await,
        Phase::Load => load(store).await,
        Phase::CatchUp { .. } => catch_up(store).await,
    }
}

/// Counts deposits: a projection whose event-type filter leaves out the opening.
#[derive(Debug, Default)]
struct Deposits {
    count: u64,
}

#[projection(name = "long_log_deposits")]
impl Deposits {
    #[on]
    fn deposited(&mut self, _: &Deposited) {
        self.count += 1;
    }
}

async fn catch_up<S: CheckpointStore + EventLog>(store: S) -> Result<(), BoxError> {
    let mut runner = Runner::new(store, Deposits::default());
    runner.reset().await?;
    let start = Instant::now();
    let progress = runner.catch_up().await?;
    let elapsed = start.elapsed();
    println!(
        "caught up: {} deposits handled in {:.3} s ({:.0} events/s)",
        runner.projection().count,
        elapsed.as_secs_f64(),
        progress.handled as f64 / elapsed.as_secs_f64().max(1e-9),
    );
    Ok(())
}

async fn seed<S: EventStore>(store: S, events: u64) -> Result<(), BoxError> {
    let stream = StreamRef::new(<Account as annals::Aggregate>::NAME, STREAM);
    let mut version = 0;
    while version < events {
        let count = CHUNK.min(events - version);
        let batch = (version..version + count)
            .map(|v| {
                let event: AccountEvent = if v == 0 {
                    AccountOpened {
                        owner: "load-rss".to_owned(),
                    }
                    .into()
                } else {
                    Deposited {
                        amount: 100,
                        memo: String::new(),
                    }
                    .into()
                };
                Ok(NewEvent::new(
                    event.event_type(),
                    event.event_version(),
                    event.encode()?,
                ))
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        store
            .append(stream, expected, batch, &CommitMeta::default())
            .await?;
        version += count;
    }
    println!("seeded {version} events");
    Ok(())
}

async fn load<S: EventStore>(store: S) -> Result<(), BoxError> {
    let accounts = Repository::<Account, S>::new(store);
    let loaded = accounts.load(&STREAM.to_owned()).await?;
    let expected = (loaded.version.saturating_sub(1)) * 100;
    if loaded.state.balance != expected {
        return Err(format!(
            "loaded version {} with balance {}, expected {expected}",
            loaded.version, loaded.state.balance
        )
        .into());
    }
    println!(
        "loaded version {} (balance {})",
        loaded.version, loaded.state.balance
    );
    Ok(())
}
