//! The SQLite backend.

use std::collections::HashMap;

use annals::{CheckpointStore, Projection, ProjectionError, RecordedEvent, SqliteStore};
use annals_examples::bank::AccountEvent;

use super::{amount_i64, balance_rows, handler_failed, version_i64, Setup};
use crate::annals_runs::change_of;
use crate::cli::{Backend, Workload};
use crate::error::{sqlx_error, BenchError};
use crate::raw::sqlite::RawSqlite;
use crate::raw::Change;

/// The transaction `SqliteStore` hands projection handlers.
type SqliteTx = <SqliteStore as CheckpointStore>::Tx;

/// `SqliteStore` in a fresh file per workload, in a temporary directory removed at the
/// end; the raw baseline in files of its own beside them.
pub struct SqliteSetup {
    dir: tempfile::TempDir,
}

impl SqliteSetup {
    /// Creates the temporary directory.
    pub fn new() -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("annals-bench-")
            .tempdir()
            .map_err(|e| BenchError::Usage(format!("cannot create a temporary directory: {e}")))?;
        Ok(SqliteSetup { dir })
    }
}

/// W4's read model on SQLite: a `balances` table in the store's database, written in the
/// runner's transaction.
#[derive(Debug, Default)]
pub struct SqliteBalances;

impl Projection<SqliteTx> for SqliteBalances {
    const NAME: &'static str = "balances";

    fn event_types() -> Vec<&'static str> {
        AccountEvent::accepted_names()
    }

    async fn handle<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        tx: &'a mut SqliteTx,
    ) -> Result<(), ProjectionError> {
        let account = event.meta.stream_id.as_str();
        let version = version_i64(event)?;
        let query = match change_of(event)? {
            Change::Opened => {
                sqlx::query("INSERT INTO balances (account, version, balance) VALUES (?1, ?2, 0)")
                    .bind(account)
                    .bind(version)
            }
            Change::Deposited(amount) => sqlx::query(
                "UPDATE balances SET balance = balance + ?2, version = ?3 WHERE account = ?1",
            )
            .bind(account)
            .bind(amount_i64(event, amount)?)
            .bind(version),
            Change::Withdrawn(amount) => sqlx::query(
                "UPDATE balances SET balance = balance - ?2, version = ?3 WHERE account = ?1",
            )
            .bind(account)
            .bind(amount_i64(event, amount)?)
            .bind(version),
        };
        query
            .execute(&mut **tx)
            .await
            .map_err(|e| handler_failed(event, e))?;
        Ok(())
    }
}

impl Setup for SqliteSetup {
    const BACKEND: Backend = Backend::Sqlite;
    type Store = SqliteStore;
    type ReadModel = SqliteBalances;
    type Raw = RawSqlite;

    async fn store(&mut self, workload: Workload) -> Result<SqliteStore, BenchError> {
        let path = self.dir.path().join(format!("annals-{workload}.db"));
        Ok(SqliteStore::open(path).await?)
    }

    async fn read_model(&mut self, store: &SqliteStore) -> Result<SqliteBalances, BenchError> {
        sqlx::raw_sql(
            "CREATE TABLE balances (
                account TEXT    NOT NULL PRIMARY KEY,
                version INTEGER NOT NULL,
                balance INTEGER NOT NULL
            ) STRICT",
        )
        .execute(store.pool())
        .await
        .map_err(sqlx_error("sqlite", "creating the read model"))?;
        Ok(SqliteBalances)
    }

    async fn balances(
        &mut self,
        store: &SqliteStore,
        _model: SqliteBalances,
    ) -> Result<HashMap<String, (u64, u64)>, BenchError> {
        let rows = sqlx::query_as("SELECT account, version, balance FROM balances")
            .fetch_all(store.pool())
            .await
            .map_err(sqlx_error("sqlite", "reading the read model"))?;
        balance_rows(rows)
    }

    async fn raw(&mut self, workload: Workload) -> Result<Option<RawSqlite>, BenchError> {
        let path = self.dir.path().join(format!("raw-{workload}.db"));
        // As many connections as `SqliteStore::open` gives its pool.
        Ok(Some(RawSqlite::create(&path, 8).await?))
    }

    async fn finish(self) -> Result<(), BenchError> {
        self.dir
            .close()
            .map_err(|e| BenchError::Usage(format!("cannot remove the temporary directory: {e}")))
    }
}

