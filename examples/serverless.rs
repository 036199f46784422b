//! The bank as serverless functions (see `annals_examples::serverless`), run locally over
//! SQLite. Each subcommand is one function; on AWS Lambda (built with `--features lambda`)
//! the HTTP ones serve the invocations instead of a port.
//!
//! ```text
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
//! `SERVERLESS_DB` names the SQLite file (default `serverless.db`). On Lambda, where the
//! binary runs without arguments, `SERVERLESS_FUNCTION` (`commands`, `project` or
//! `queries`) chooses the function.

use std::error::Error;
use std::net::SocketAddr;

use annals::http::axum::Router;
use annals::{Runner, SqliteStore};
use annals_examples::serverless::{command_router, create_balances, query_router, Balances};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "The bank as serverless functions, run locally over SQLite")]
struct Args {
    #[command(subcommand)]
    function: Function,
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let args = match std::env::var("SERVERLESS_FUNCTION") {
        Ok(function) if std::env::args_os().len() == 1 => {
            Args::parse_from(["serverless", &function])
        }
        _ => Args::parse(),
    };
    let path = std::env::var("SERVERLESS_DB").unwrap_or_else(|_| "serverless.db".to_owned());
    // Opened once per cold start; every invocation of this process shares it.
    let store = SqliteStore::open(&path).await?;
    create_balances(&store).await?;
    match args.function {
        Function::Commands { addr } => serve(command_router(store), addr).await,
        Function::Project => {
            #[cfg(feature = "lambda")]
            if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
                return project_on_lambda(store).await;
            }
            let progress = Runner::new(store, Balances).catch_up().await?;
            println!(
                "balances caught up: {} events handled, at position {}",
                progress.handled, progress.position
            );
            Ok(())
        }
        Function::Queries { addr } => serve(query_router(store), addr).await,
    }
}

/// On Lambda (the runtime API's address is set), serves the invocations; elsewhere, a port.
async fn serve(router: Router, addr: SocketAddr) -> Result<(), Box<dyn Error + Send + Sync>> {
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
async fn project_on_lambda(store: SqliteStore) -> Result<(), Box<dyn Error + Send + Sync>> {
    use annals::http::lambda_http::{lambda_runtime, service_fn, LambdaEvent};

    let handler = service_fn(move |_: LambdaEvent<serde_json::Value>| {
        let store = store.clone();
        async move {
            let progress = Runner::new(store, Balances).catch_up().await?;
            Ok::<_, lambda_runtime::Error>(serde_json::json!({
                "handled": progress.handled,
                "position": progress.position,
            }))
        }
    });
    lambda_runtime::run(handler).await
}
