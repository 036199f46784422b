//! The relay workload (feature `nats`): events/s the outbox relay (`annals::nats::Publisher`
//! on a `Runner`, from a SQLite store) moves to NATS JetStream, beside a plain `async-nats`
//! loop publishing the same payloads with the same headers and message ids, acknowledged in
//! windows of the same size, in the same run. Each side publishes into a JetStream stream
//! of its own, checked to hold every event once, and deleted after its round.
//!
//! The two sides take turns for `--rounds` rounds (the first side alternating), so that a
//! machine busy with other work, or a broker slowing down as it fills, weighs on both; the
//! ratio is of the medians.
//!
//! ```text
//! cargo run --release -p annals-bench --features nats --bin nats_relay -- --n 50000 --batch 500
//! ```
//!
//! Prints `RESULT impl=annals|raw backend=sqlite+nats workload=relay n=.. secs=.. rate=..`
//! per round, the same with `round=median`, and
//! `RATIO backend=sqlite+nats workload=relay annals/raw=..` (median time over median time;
//! the target is at most 1/0.7 = 1.43).

#![forbid(unsafe_code)]

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use annals::nats::async_nats::{self, jetstream};
use annals::nats::{headers, Publisher, Subjects};
use annals::store::{CommitMeta, EventFilter, EventLog, EventStore, ExpectedVersion, NewEvent};
use annals::{Runner, SqliteStore, StreamRef, Uuid};

type BoxError = Box<dyn Error + Send + Sync>;

const USAGE: &str = "\
nats_relay: the outbox relay's throughput to NATS JetStream beside a plain async-nats loop

usage: cargo run --release -p annals-bench --features nats --bin nats_relay -- [options]

  --n N         events relayed                       [50000]
  --batch N     events per relay batch / ack window  [500]
  --accounts N  streams the events are spread over   [1000]
  --rounds N    turns of each side (medians compared) [3]
  --nats URL    the NATS server                      [$NATS_URL or 127.0.0.1:4222]
  -h, --help    this text
";

struct Config {
    n: usize,
    batch: usize,
    accounts: usize,
    rounds: usize,
    nats: String,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
    let mut config = Config {
        n: 50_000,
        batch: 500,
        accounts: 1_000,
        rounds: 3,
        nats: std::env::var("NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".to_owned()),
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        if name == "-h" || name == "--help" {
            return Ok(None);
        }
        let value = match inline.or_else(|| args.next()) {
            Some(value) => value,
            None => return Err(format!("{name} needs a value")),
        };
        let number = || {
            value
                .replace('_', "")
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name}: `{value}` is not a positive number"))
        };
        match name.as_str() {
            "--n" => config.n = number()?,
            "--batch" => config.batch = number()?,
            "--accounts" => config.accounts = number()?,
            "--rounds" => config.rounds = number()?,
            "--nats" => config.nats = value.clone(),
            _ => return Err(format!("unknown option `{name}`")),
        }
    }
    Ok(Some(config))
}

fn main() -> ExitCode {
    let config = match parse(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut text = e.to_string();
            let mut source = e.source();
            while let Some(next) = source {
                text = format!("{text}: {next}");
                source = next.source();
            }
            eprintln!("error: {text}");
            ExitCode::FAILURE
        }
    }
}

/// A JetStream stream of the run's own, deleted on [`Bus::delete`].
struct Bus {
    jetstream: jetstream::Context,
    name: String,
    prefix: String,
}

impl Bus {
    async fn new(jetstream: jetstream::Context, what: &str) -> Result<Bus, BoxError> {
        let id = Uuid::new_v4().simple().to_string();
        let bus = Bus {
            jetstream,
            name: format!("BENCH_{what}_{id}"),
            prefix: format!("bench{id}"),
        };
        bus.jetstream
            .create_stream(jetstream::stream::Config {
                name: bus.name.clone(),
                subjects: vec![format!("{}.>", bus.prefix)],
                ..Default::default()
            })
            .await?;
        Ok(bus)
    }

    async fn check(&self, n: usize) -> Result<(), BoxError> {
        let mut stream = self.jetstream.get_stream(&self.name).await?;
        let messages = stream.info().await?.state.messages;
        if messages != n as u64 {
            return Err(format!(
                "stream {} holds {messages} messages, expected {n}",
                self.name
            )
            .into());
        }
        Ok(())
    }

    async fn delete(self) -> Result<(), BoxError> {
        self.jetstream.delete_stream(&self.name).await?;
        Ok(())
    }
}

async fn run(config: &Config) -> Result<(), BoxError> {
    println!(
        "sizes: n={} batch={} accounts={} rounds={} (cores: {})",
        config.n,
        config.batch,
        config.accounts,
        config.rounds,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("relay.db")).await?;
    // Bank-style deposits, one event per append, spread over the accounts.
    for i in 0..config.n {
        let account = format!("account-{}", i % config.accounts);
        let payload = format!(r#"{{"amount":{},"memo":"deposit {i}"}}"#, i % 1000 + 1);
        store
            .append(
                StreamRef::new("Account", &account),
                ExpectedVersion::Any,
                vec![NewEvent::new("Deposited", 1, payload)],
                &CommitMeta::new().correlation_id(Uuid::now_v7()),
            )
            .await?;
    }
    let client = async_nats::connect(config.nats.as_str()).await?;
    let jetstream = jetstream::new(client);
    // raw: the same messages, read from the store beforehand.
    let events = store.read_all(0, config.n, &EventFilter::all()).await?;

    let (mut annals, mut raw) = (Vec::new(), Vec::new());
    for round in 0..config.rounds {
        for side in 0..2 {
            if (round + side) % 2 == 0 {
                let elapsed = relay(config, &store, &jetstream, round).await?;
                report("annals", config.n, elapsed, &round.to_string());
                annals.push(elapsed);
            } else {
                let elapsed = plain(config, &events, &jetstream).await?;
                report("raw", config.n, elapsed, &round.to_string());
                raw.push(elapsed);
            }
        }
    }
    let (annals, raw) = (median(annals), median(raw));
    report("annals", config.n, annals, "median");
    report("raw", config.n, raw, "median");
    println!(
        "RATIO backend=sqlite+nats workload=relay annals/raw={:.2}",
        annals.as_secs_f64() / raw.as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// annals: the relay from a checkpoint of its own (one per round) to the end of the log.
async fn relay(
    config: &Config,
    store: &SqliteStore,
    jetstream: &jetstream::Context,
    round: usize,
) -> Result<Duration, BoxError> {
    let bus = Bus::new(jetstream.clone(), "RELAY").await?;
    let publisher = Publisher::new(jetstream.clone(), Subjects::prefix(&bus.prefix)?);
    let name: &'static str = Box::leak(format!("bench_relay_{round}").into_boxed_str());
    let mut relay = Runner::new(store.clone(), publisher)
        .named(name)
        .batch_size(config.batch);
    let started = Instant::now();
    let progress = relay.catch_up().await?;
    let elapsed = started.elapsed();
    if progress.handled != config.n as u64 {
        return Err(format!("relayed {} events, expected {}", progress.handled, config.n).into());
    }
    bus.check(config.n).await?;
    bus.delete().await?;
    Ok(elapsed)
}

/// raw: the same messages, published in windows of the batch size, each window's
/// acknowledgements awaited.
async fn plain(
    config: &Config,
    events: &[annals::RecordedEvent],
    jetstream: &jetstream::Context,
) -> Result<Duration, BoxError> {
    let bus = Bus::new(jetstream.clone(), "RAW").await?;
    let subjects = Subjects::prefix(&bus.prefix)?;
    let mut messages = Vec::with_capacity(events.len());
    for event in events {
        messages.push((
            subjects.subject(&event.meta)?,
            headers(&event.meta)?,
            event.payload.clone(),
        ));
    }
    let started = Instant::now();
    for window in messages.chunks(config.batch) {
        let mut acks = Vec::with_capacity(window.len());
        for (subject, headers, payload) in window {
            acks.push(
                jetstream
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone().into())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
    }
    let elapsed = started.elapsed();
    bus.check(config.n).await?;
    bus.delete().await?;
    Ok(elapsed)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn report(imp: &str, n: usize, elapsed: Duration, round: &str) {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        n as f64 / secs
    } else {
        f64::INFINITY
    };
    println!(
        "RESULT impl={imp} backend=sqlite+nats workload=relay n={n} round={round} secs={secs:.3} rate={rate:.0}"
    );
}
