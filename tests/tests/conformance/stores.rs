//! A fresh store for each test, and its clean-up.

use std::future::Future;
use std::path::{Path, PathBuf};

use annals::{MemoryStore, SqliteStore, Uuid};

pub fn memory() -> MemoryStore {
    MemoryStore::new()
}

/// A directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("annals-conformance-{}", Uuid::new_v4()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store in a new SQLite file; the file goes when the returned directory is dropped.
pub async fn sqlite() -> (SqliteStore, TempDir) {
    let dir = TempDir::new();
    let path = dir.path().join("events.db");
    let store = SqliteStore::open(&path)
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    (store, dir)
}

/// Runs a case on its own task so that a failing case still reaches the clean-up, then
/// re-raises its panic.
pub async fn run_then<F, C>(case: F, clean_up: C)
where
    F: Future<Output = ()> + Send + 'static,
    C: Future<Output = ()>,
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

#[cfg(feature = "postgres")]
pub use postgres::{drop_postgres, postgres};

#[cfg(feature = "postgres")]
mod postgres {
    use annals::{PgStore, Uuid};

    /// The database the PostgreSQL tests use. Unreachable means failed tests, never
    /// skipped ones.
    fn database_url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// A store in a new schema with a random name.
    pub async fn postgres() -> PgStore {
        let url = database_url();
        let schema = format!("conformance_{}", Uuid::new_v4().simple());
        PgStore::options()
            .schema(schema)
            .max_connections(12)
            .open(&url)
            .await
            .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {url}: {e} ({e:?})"))
    }

    /// Drops the store's schema and closes its pool.
    pub async fn drop_postgres(store: &PgStore) {
        // The schema name was generated above: `conformance_` and hex digits.
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", store.schema());
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .execute(store.pool())
            .await
            .unwrap_or_else(|e| panic!("dropping schema {}: {e}", store.schema()));
        store.pool().close().await;
    }
}

#[cfg(feature = "dynamodb")]
pub use dynamodb::{drop_dynamodb, dynamodb};

#[cfg(feature = "dynamodb")]
mod dynamodb {
    use annals::{DynamoDbStore, Uuid};

    /// The local DynamoDB server the tests use (`.ci/moto-server`). Unreachable means
    /// failed tests, never skipped ones.
    pub fn endpoint() -> String {
        annals_tests::dynamodb_endpoint()
    }

    /// A store in a new table with a random name.
    pub async fn dynamodb() -> DynamoDbStore {
        let endpoint = endpoint();
        let table = format!("conformance-{}", Uuid::new_v4().simple());
        DynamoDbStore::options()
            .endpoint(&endpoint)
            .create_table(true)
            .open(&table)
            .await
            .unwrap_or_else(|e| panic!("creating table {table} at {endpoint}: {e} ({e:?})"))
    }

    /// Deletes the store's table.
    pub async fn drop_dynamodb(store: &DynamoDbStore) {
        store
            .delete_table()
            .await
            .unwrap_or_else(|e| panic!("deleting table {}: {e}", store.table()));
    }
}
