//! The SQLite backend.

use annals::store::TxStore;
use annals::{projection, EventMeta, SqliteStore};

use super::{balance_rows, Replayed, Setup};
use crate::annals_runs;
use crate::cli::{Backend, Workload};
use crate::error::{sqlx_error, BenchError};
use crate::raw::sqlite::RawSqlite;
use crate::raw::to_i64;
use annals_examples::bank::{AccountOpened, Deposited, Withdrawn};

/// The transaction `SqliteStore` hands projection handlers.
type SqliteTx = <SqliteStore as TxStore>::Tx;

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
            .map_err(|source| BenchError::Io {
                what: "create a temporary directory",
                source,
            })?;
        Ok(SqliteSetup { dir })
    }
}

/// W4's read model on SQLite: a `balances` table in the store's database, written in the
/// runner's transaction.
#[derive(Debug, Default)]
pub struct SqliteBalances;

#[projection(name = "balances")]
impl SqliteBalances {
    #[on]
    async fn opened(
        &mut self,
        _: &AccountOpened,
        meta: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), BenchError> {
        sqlx::query("INSERT INTO balances (account, version, balance) VALUES (?1, ?2, 0)")
            .bind(&meta.stream_id)
            .bind(to_i64("stream version", meta.version)?)
            .execute(&mut **tx)
            .await
            .map_err(sqlx_error("sqlite", "writing the read model"))?;
        Ok(())
    }

    #[on]
    async fn deposited(
        &mut self,
        e: &Deposited,
        meta: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), BenchError> {
        sqlx::query("UPDATE balances SET balance = balance + ?2, version = ?3 WHERE account = ?1")
            .bind(&meta.stream_id)
            .bind(to_i64("amount", e.amount)?)
            .bind(to_i64("stream version", meta.version)?)
            .execute(&mut **tx)
            .await
            .map_err(sqlx_error("sqlite", "writing the read model"))?;
        Ok(())
    }

    #[on]
    async fn withdrawn(
        &mut self,
        e: &Withdrawn,
        meta: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), BenchError> {
        sqlx::query("UPDATE balances SET balance = balance - ?2, version = ?3 WHERE account = ?1")
            .bind(&meta.stream_id)
            .bind(to_i64("amount", e.amount)?)
            .bind(to_i64("stream version", meta.version)?)
            .execute(&mut **tx)
            .await
            .map_err(sqlx_error("sqlite", "writing the read model"))?;
        Ok(())
    }
}

impl Setup for SqliteSetup {
    const BACKEND: Backend = Backend::Sqlite;
    type Store = SqliteStore;
    type Raw = RawSqlite;

    async fn store(&mut self, workload: Workload) -> Result<SqliteStore, BenchError> {
        let path = self.dir.path().join(format!("annals-{workload}.db"));
        Ok(SqliteStore::open(path).await?)
    }

    async fn replay(&mut self, store: SqliteStore, batch: usize) -> Result<Replayed, BenchError> {
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
        let (elapsed, handled, _) =
            annals_runs::replay(store.clone(), SqliteBalances, batch).await?;
        let rows = sqlx::query_as("SELECT account, version, balance FROM balances")
            .fetch_all(store.pool())
            .await
            .map_err(sqlx_error("sqlite", "reading the read model"))?;
        Ok(Replayed {
            elapsed,
            handled,
            balances: balance_rows(rows)?,
        })
    }

    async fn raw(&mut self, workload: Workload) -> Result<Option<RawSqlite>, BenchError> {
        let path = self.dir.path().join(format!("raw-{workload}.db"));
        // As many connections as `SqliteStore::open` gives its pool.
        Ok(Some(RawSqlite::create(&path, 8).await?))
    }

    async fn finish(self) -> Result<(), BenchError> {
        self.dir.close().map_err(|source| BenchError::Io {
            what: "remove the temporary directory",
            source,
        })
    }
}
