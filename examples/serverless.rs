//! The bank as serverless functions (see `annals_examples::serverless`), run locally over
//! SQLite (the default) or over a local DynamoDB. Each subcommand is one function; on AWS
//! Lambda (built with `--features lambda`) the HTTP ones serve the invocations instead of a
//! port.
//!
//! Over SQLite (events and read model in `serverless.db`):
//!
//! ```text
//! cargo build --example serverless                 # once: the first build takes minutes
//! cargo run --example serverless -- commands &      # command function on 127.0.0.1:3000
//! curl -si localhost:3000/accounts/commands -H 'content-type: application/json' \
//!      -H 'idempotency-key: open-ada' -d '{"command":"OpenAccount","account":"ada","owner":"Ada"}'
//! curl -si localhost:3000/accounts/commands -H 'content-type: application/json' \
//!      -d '{"command":"Deposit","account":"ada","amount":100}'
//! curl -s localhost:3000/accounts/streams/ada/events
//! cargo run --example serverless -- project         # projection function: one catch-up
//! cargo run --example serverless -- queries &       # query function on 127.0.0.1:3001
//! curl -s localhost:3001/balances/ada
//! ```
//!
//! Over a local DynamoDB (events in the table `bank-events`, created when missing; the read
//! model and the projection's checkpoint in `serverless-bank-events.db`, fed by the table's
//! stream). Start the server first, from the repository's root (`pip install
//! 'moto[server]'` once):
//!
//! ```text
//! python3 .ci/moto-server 8000 &                    # or: moto_server -p 8000 &
//! export SERVERLESS_STORE=dynamodb DYNAMODB_ENDPOINT=http://127.0.0.1:8000
//! cargo build --example serverless --features dynamodb
//! cargo run --example serverless --features dynamodb -- commands &
//! curl -si localhost:3000/accounts/commands -H 'content-type: application/json' \
//!      -H 'idempotency-key: open-ada' -d '{"command":"OpenAccount","account":"ada","owner":"Ada"}'
//! curl -si localhost:3000/accounts/commands -H 'content-type: application/json' \
//!      -d '{"command":"Deposit","account":"ada","amount":100}'
//! cargo run --example serverless --features dynamodb -- project
//! cargo run --example serverless --features dynamodb -- queries &
//! curl -s localhost:3001/balances/ada
//! ```
//!
//! The same with flags instead of the environment: `-- --store dynamodb --endpoint
//! http://127.0.0.1:8000 --table bank-events commands`.
//!
//! Settings, as flags or environment variables: `--store`/`SERVERLESS_STORE` (`sqlite` or
//! `dynamodb`), `--db`/`SERVERLESS_DB` (the SQLite file: the events and the read model over
//! SQLite, the read model alone over DynamoDB), `--endpoint`/`DYNAMODB_ENDPOINT` (without
//! it, AWS's endpoint for `AWS_REGION`), `--table`/`SERVERLESS_TABLE`. On Lambda, where the
//! binary runs without arguments, `SERVERLESS_FUNCTION` (`commands`, `project` or
//! `queries`) chooses the function.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use annals::http::axum::Router;
use annals::{Progress, ProjectionError, SqliteStore};
use annals_examples::serverless::{catch_up, command_router, create_balances, query_router};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(about = "The bank as serverless functions, run locally over SQLite or DynamoDB")]
struct Args {
    /// Where the events are kept.
    #[arg(long, global = true, env = "SERVERLESS_STORE", value_enum, default_value_t = Store::Sqlite)]
    store: Store,
    /// The SQLite file: the events and the read model with `--store sqlite` (default
    /// `serverless.db`), the read model alone with `--store dynamodb` (default
    /// `serverless-TABLE.db`: one read model per table). On Lambda the default is in `/tmp`.
    #[arg(long, global = true, env = "SERVERLESS_DB")]
    db: Option<PathBuf>,
    /// The DynamoDB server (a local one: `http://127.0.0.1:8000`), with `--store dynamodb`.
    /// Without it, AWS's endpoint for `AWS_REGION`, and the table must exist.
    #[arg(long, global = true, env = "DYNAMODB_ENDPOINT")]
    endpoint: Option<String>,
    /// The DynamoDB table holding the events, with `--store dynamodb` (created when missing
    /// on a local server).
    #[arg(
        long,
        global = true,
        env = "SERVERLESS_TABLE",
        default_value = "bank-events"
    )]
    table: String,
    #[command(subcommand)]
    function: Function,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Store {
    /// A SQLite file holds the events and the read model.
    Sqlite,
    /// A DynamoDB table holds the events (needs `--features dynamodb`); the read model is in
    /// a SQLite file, fed by the table's stream.
    Dynamodb,
}

#[derive(Subcommand)]
enum Function {
    /// The command function: POST /accounts/commands, GET /accounts/streams/{id}/events.
    Commands {
        /// Where to listen (ignored on Lambda).
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: SocketAddr,
    },
    /// The projection function: catches the balances read model up once, then exits.
    Project,
    /// The query function: GET /balances, GET /balances/{id}.
    Queries {
        /// Where to listen (ignored on Lambda).
        #[arg(long, default_value = "127.0.0.1:3001")]
        addr: SocketAddr,
    },
}

type BoxError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("serverless: {}", with_causes(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes: a store error says what failed, its sources why.
fn with_causes(error: &(dyn Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

async fn run() -> Result<(), BoxError> {
    let args = match std::env::var("SERVERLESS_FUNCTION") {
        Ok(function) if std::env::args_os().len() == 1 => {
            Args::parse_from(["serverless", &function])
        }
        _ => Args::parse(),
    };
    match args.function {
        Function::Commands { addr } => {
            let router = match args.store {
                Store::Sqlite => command_router(read_model(&args).await?),
                Store::Dynamodb => dynamodb::command_router(&args).await?,
            };
            serve(router, addr).await
        }
        Function::Project => {
            let read = read_model(&args).await?;
            let projector = match args.store {
                Store::Sqlite => Projector::Log(read),
                Store::Dynamodb => dynamodb::projector(&args, read).await?,
            };
            #[cfg(feature = "lambda")]
            if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
                return project_on_lambda(projector).await;
            }
            let progress = projector.catch_up().await?;
            println!(
                "balances caught up: {} events handled, at position {}",
                progress.handled, progress.position
            );
            Ok(())
        }
        Function::Queries { addr } => serve(query_router(read_model(&args).await?), addr).await,
    }
}

/// The SQLite file (`--db`), with the read model's table: opened once per cold start, and
/// shared by every invocation of this process.
async fn read_model(args: &Args) -> Result<SqliteStore, BoxError> {
    let path = args.db.clone().unwrap_or_else(|| {
        let name = match args.store {
            Store::Sqlite => "serverless.db".to_owned(),
            Store::Dynamodb => format!("serverless-{}.db", args.table),
        };
        // On Lambda only /tmp is writable.
        if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
            PathBuf::from("/tmp").join(name)
        } else {
            name.into()
        }
    });
    let store = SqliteStore::open(&path).await.map_err(|e| {
        format!(
            "opening the SQLite file {}: {}",
            path.display(),
            with_causes(&e)
        )
    })?;
    create_balances(&store).await?;
    Ok(store)
}

/// The projection function's source and read model, built once per cold start.
#[derive(Clone)]
enum Projector {
    /// The SQLite store's own log; the read model in the same file.
    Log(SqliteStore),
    /// A DynamoDB table's stream; the read model in the SQLite file.
    #[cfg(feature = "dynamodb")]
    Stream(SqliteStore, annals::source::DynamoDbStreamSource),
}

impl Projector {
    /// One catch-up: what one invocation does.
    async fn catch_up(&self) -> Result<Progress, ProjectionError> {
        match self {
            Projector::Log(store) => catch_up(store).await,
            #[cfg(feature = "dynamodb")]
            Projector::Stream(read, source) => {
                annals_examples::serverless::catch_up_from_stream(read, source.clone()).await
            }
        }
    }
}

#[cfg(feature = "dynamodb")]
mod dynamodb {
    use super::{Args, BoxError, Projector};
    use annals::http::axum::Router;
    use annals::{DynamoDbStore, SqliteStore};

    /// The command function on the DynamoDB table.
    pub(super) async fn command_router(args: &Args) -> Result<Router, BoxError> {
        Ok(annals_examples::serverless::command_router(
            open(args).await?,
        ))
    }

    async fn open(args: &Args) -> Result<DynamoDbStore, BoxError> {
        let endpoint = args.endpoint.as_deref().filter(|e| !e.is_empty());
        let events = annals_examples::serverless::open_events_table(endpoint, &args.table)
            .await
            .map_err(|e| {
                let at = endpoint.unwrap_or("AWS (no --endpoint or DYNAMODB_ENDPOINT)");
                let e = super::with_causes(&e);
                format!("opening the DynamoDB table `{}` at {at}: {e}", args.table)
            })?;
        eprintln!(
            "events in the DynamoDB table `{}` at {}",
            events.table(),
            endpoint.unwrap_or("AWS")
        );
        Ok(events)
    }

    pub(super) async fn projector(args: &Args, read: SqliteStore) -> Result<Projector, BoxError> {
        let source = open(args).await?.stream_source().await?;
        Ok(Projector::Stream(read, source))
    }
}

#[cfg(not(feature = "dynamodb"))]
mod dynamodb {
    use super::{Args, BoxError, Projector};

    const MISSING: &str = "--store dynamodb needs the example built with the feature \
        `dynamodb`: cargo run --example serverless --features dynamodb -- ...";

    pub(super) async fn command_router(_: &Args) -> Result<annals::http::axum::Router, BoxError> {
        Err(MISSING.into())
    }

    pub(super) async fn projector(_: &Args, _: annals::SqliteStore) -> Result<Projector, BoxError> {
        Err(MISSING.into())
    }
}

/// On Lambda (the runtime API's address is set), serves the invocations; elsewhere, a port.
async fn serve(router: Router, addr: SocketAddr) -> Result<(), BoxError> {
    #[cfg(feature = "lambda")]
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return annals::http::run_lambda(router).await;
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    annals::http::axum::serve(listener, router).await?;
    Ok(())
}

/// The projection function on Lambda: each invocation (a schedule, or a trigger on new
/// events; its payload is not read) catches the read model up once and answers how far.
#[cfg(feature = "lambda")]
async fn project_on_lambda(projector: Projector) -> Result<(), BoxError> {
    use annals::http::lambda_http::{lambda_runtime, service_fn, LambdaEvent};

    let handler = service_fn(move |_: LambdaEvent<serde_json::Value>| {
        let projector = projector.clone();
        async move {
            let progress = projector.catch_up().await?;
            Ok::<_, lambda_runtime::Error>(serde_json::json!({
                "handled": progress.handled,
                "position": progress.position,
            }))
        }
    });
    lambda_runtime::run(handler).await
}
