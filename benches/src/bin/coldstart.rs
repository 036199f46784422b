//! Cold start of an HTTP command function: the time from starting a process to the answer
//! of its first command over HTTP, as a function platform's first invocation sees it.
//!
//! Each run starts this program again as a child (`coldstart serve`) with a fresh database.
//! The child opens the store (creating and migrating it), builds the serverless example's
//! command router and listens on a loopback port, which it prints. The parent then posts
//! one `OpenAccount` and stops the clock at the `201 Created`. The median of the runs is
//! reported:
//!
//! ```text
//! cargo run --release -p annals-bench --bin coldstart -- --backend sqlite,postgres --runs 20
//! RESULT impl=annals backend=sqlite workload=coldstart n=20 secs=0.021 rate=48 ready_secs=0.015
//! ```
//!
//! `secs` is the median from process start to the first answer, and `ready_secs` the median
//! from process start to listening. `rate` is the cold starts per second that `secs` gives.

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use annals::http::axum::http::{Request, StatusCode};
use annals::{PgStoreOptions, SqliteStore};
use annals_examples::serverless::command_router;
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "Process start to the first command answered over HTTP")]
struct Args {
    #[command(subcommand)]
    serve: Option<Serve>,
    /// Stores to measure (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite")]
    backend: Vec<Backend>,
    /// Cold starts per store; the median is reported.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// PostgreSQL server (each run gets a fresh schema, dropped afterwards).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
}

#[derive(Subcommand)]
enum Serve {
    /// The measured process: open the store, serve the command router, print the address.
    Serve {
        /// `sqlite` or `postgres`.
        #[arg(long, value_enum)]
        backend: Backend,
        /// The SQLite file, or the PostgreSQL schema.
        #[arg(long)]
        at: String,
        /// PostgreSQL server.
        #[arg(long)]
        database_url: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if let Some(Serve::Serve {
        backend,
        at,
        database_url,
    }) = args.serve
    {
        return serve(backend, &at, &database_url);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for backend in args.backend {
        let mut total = Vec::with_capacity(args.runs);
        let mut ready = Vec::with_capacity(args.runs);
        for run in 0..args.runs.max(1) {
            let (to_answer, to_listen) =
                runtime.block_on(cold_start(backend, run, &args.database_url))?;
            total.push(to_answer);
            ready.push(to_listen);
        }
        let secs = median(&mut total).as_secs_f64();
        println!(
            "RESULT impl=annals backend={} workload=coldstart n={} secs={secs:.3} rate={:.0} ready_secs={:.3}",
            backend.name(),
            total.len(),
            if secs > 0.0 { 1.0 / secs } else { 0.0 },
            median(&mut ready).as_secs_f64(),
        );
    }
    Ok(())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// The child: everything a function does before and while answering its first command.
fn serve(backend: Backend, at: &str, database_url: &str) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let router = match backend {
            Backend::Sqlite => command_router(SqliteStore::open(at).await?),
            Backend::Postgres => {
                command_router(PgStoreOptions::new().schema(at).open(database_url).await?)
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        annals::http::axum::serve(listener, router).await?;
        Ok(())
    })
}

/// Kills the child when the run ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One cold start: (to the first answer, to listening).
async fn cold_start(
    backend: Backend,
    run: usize,
    database_url: &str,
) -> Result<(Duration, Duration), BoxError> {
    let dir = std::env::temp_dir().join(format!("annals-coldstart-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let at = match backend {
        Backend::Sqlite => dir.join("coldstart.db").display().to_string(),
        Backend::Postgres => format!("annals_coldstart_{}_{run}", std::process::id()),
    };
    let result = measure(backend, &at, database_url).await;
    let _ = std::fs::remove_dir_all(&dir);
    if backend == Backend::Postgres {
        drop_schema(database_url, &at).await?;
    }
    result
}

async fn measure(
    backend: Backend,
    at: &str,
    database_url: &str,
) -> Result<(Duration, Duration), BoxError> {
    let exe = std::env::current_exe()?;
    let start = Instant::now();
    let mut child = Running(
        Command::new(exe)
            .args(["serve", "--backend", backend.name(), "--at", at])
            .args(["--database-url", database_url])
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().ok_or("the child has no stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await??;
    let listening = start.elapsed();
    let addr: SocketAddr = line
        .trim()
        .parse()
        .map_err(|_| format!("the child did not print its address (it printed {line:?})"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let command = r#"{"command":"OpenAccount","account":"cold","owner":"Ada"}"#;
    let request = Request::post(format!("http://{addr}/accounts/commands"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(command.as_bytes())))?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let answered = start.elapsed();
    if status != StatusCode::CREATED {
        return Err(format!(
            "the first command was answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    drop(child);
    Ok((answered, listening))
}

async fn drop_schema(url: &str, schema: &str) -> Result<(), BoxError> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
