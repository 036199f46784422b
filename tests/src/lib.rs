//! The integration tests of annals, and the guide's examples.
//!
//! Every page of the guide (`docs/*.md`) is one of this library's doctests modules, so each
//! of its Rust blocks compiles and runs with `cargo test -p annals-tests --doc`. The blocks
//! reuse the example crate's domains (`annals_examples::bank`, `annals_examples::shop`)
//! and the helpers below in hidden lines.

use std::path::{Path, PathBuf};

/// The PostgreSQL database the tests and the guide use: `DATABASE_URL`, by default
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The local DynamoDB server the tests and the guide use: `DYNAMODB_ENDPOINT` when set
/// (`.ci/run` sets it), else one on `127.0.0.1:8000` if it answers, else a
/// `.ci/moto-server` this process starts on a free port (moto must be installed: `pip
/// install 'moto[server]'`) and that stops when this process ends. So `cargo test` needs no
/// server started by hand.
pub fn dynamodb_endpoint() -> String {
    static ENDPOINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            if let Ok(endpoint) = std::env::var("DYNAMODB_ENDPOINT") {
                return endpoint;
            }
            if answers("127.0.0.1:8000") {
                return "http://127.0.0.1:8000".to_owned();
            }
            start_moto()
        })
        .clone()
}

fn answers(address: &str) -> bool {
    address.parse().is_ok_and(|address| {
        std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(1)).is_ok()
    })
}

/// Starts `.ci/moto-server` on a free port, tied to this process; its address once it
/// answers.
fn start_moto() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/moto-server");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|e| panic!("no free port for the local DynamoDB: {e}"));
    let log = std::env::temp_dir().join(format!("annals-moto-{port}.log"));
    let output =
        std::fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    let errors = output
        .try_clone()
        .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .arg("--exit-with")
        .arg(std::process::id().to_string())
        .stdout(output)
        .stderr(errors)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
    let address = format!("127.0.0.1:{port}");
    for _ in 0..120 {
        if answers(&address) {
            // Kept for the life of the process; the server exits with it.
            static SERVER: std::sync::OnceLock<std::sync::Mutex<std::process::Child>> =
                std::sync::OnceLock::new();
            let _ = SERVER.set(std::sync::Mutex::new(child));
            return format!("http://{address}");
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the local DynamoDB ({}) exited with {status}; is moto installed \
                 (`pip install 'moto[server]'`)? Its log: {}",
                script.display(),
                log.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!(
        "the local DynamoDB ({}) did not answer on {address} within 30 s; its log: {}",
        script.display(),
        log.display()
    )
}

/// Drops a PostgreSQL schema an example created (or an earlier, failed run left behind).
#[cfg(feature = "postgres")]
pub async fn drop_schema(url: &str, schema: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let sql = format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        schema.replace('"', "\"\"")
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

/// A new directory under the system's temporary directory, removed with its contents on
/// drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates the directory.
    pub fn new() -> std::io::Result<Self> {
        let name = format!("annals-{}", annals::Uuid::new_v4().simple());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path)?;
        Ok(TempDir(path))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The guide, one module per page.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../../docs/README.md")]
    mod index {}
    #[doc = include_str!("../../docs/concepts.md")]
    mod concepts {}
    #[doc = include_str!("../../docs/tutorial.md")]
    mod tutorial {}
    #[doc = include_str!("../../docs/aggregates.md")]
    mod aggregates {}
    #[cfg(feature = "postgres")]
    #[doc = include_str!("../../docs/stores.md")]
    mod stores {}
    #[cfg(feature = "dynamodb")]
    #[doc = include_str!("../../docs/dynamodb.md")]
    mod dynamodb {}
    #[doc = include_str!("../../docs/projections.md")]
    mod projections {}
    #[doc = include_str!("../../docs/workflows.md")]
    mod workflows {}
    #[doc = include_str!("../../docs/versioning.md")]
    mod versioning {}
    #[doc = include_str!("../../docs/testing.md")]
    mod testing {}
    #[doc = include_str!("../../docs/operations.md")]
    mod operations {}
    #[cfg(feature = "admin")]
    #[doc = include_str!("../../docs/admin.md")]
    mod admin {}
    #[cfg(feature = "lambda")]
    #[doc = include_str!("../../docs/serverless.md")]
    mod serverless {}
    #[cfg(feature = "nats")]
    #[doc = include_str!("../../docs/event-bus.md")]
    mod event_bus {}
    #[doc = include_str!("../../docs/scaling-out.md")]
    mod scaling_out {}
    #[doc = include_str!("../../docs/decisions.md")]
    mod decisions {}
    #[doc = include_str!("../../docs/performance.md")]
    mod performance {}
}
