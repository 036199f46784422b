//! The PostgreSQL backend.

use annals::{projection, CheckpointStore, EventMeta, PgStore};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};
use std::sync::Arc;

use super::{balance_rows, Replayed, Setup};
use crate::annals_runs;
use crate::cli::{Backend, Workload};
use crate::error::{sqlx_error, BenchError};
use crate::raw::postgres::RawPostgres;
use crate::raw::to_i64;
use annals_examples::bank::{AccountOpened, Deposited, Withdrawn};

/// The transaction `PgStore` hands projection handlers.
type PgTx = <PgStore as CheckpointStore>::Tx;

/// Connections of every PostgreSQL pool, annals' and raw's (`PgStore`'s default).
const PG_CONNECTIONS: u32 = 10;

/// `PgStore` in a fresh schema per workload, the raw baseline in schemas of its own; all
/// dropped at the end.
pub struct PostgresSetup {
    url: String,
    admin: PgPool,
    prefix: String,
    schemas: Vec<String>,
}

impl PostgresSetup {
    /// Connects to the server.
    pub async fn new(url: &str) -> Result<Self, BenchError> {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .map_err(sqlx_error("postgres", "connecting"))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Ok(PostgresSetup {
            url: url.to_owned(),
            admin,
            prefix: format!("annals_bench_{}_{nanos}", std::process::id()),
            schemas: Vec::new(),
        })
    }

    fn schema(&mut self, imp: &str, workload: Workload) -> String {
        let schema = format!(
            "{}_{imp}_{}",
            self.prefix,
            workload.to_string().to_lowercase()
        );
        self.schemas.push(schema.clone());
        schema
    }
}

/// W4's read model on PostgreSQL: a `balances` table in the store's schema, written in the
/// runner's transaction.
#[derive(Debug)]
pub struct PgBalances {
    insert: Arc<str>,
    deposit: Arc<str>,
    withdraw: Arc<str>,
}

impl PgBalances {
    fn new(schema: &str) -> Self {
        PgBalances {
            insert: format!(
                "INSERT INTO \"{schema}\".balances (account, version, balance) VALUES ($1, $2, 0)"
            )
            .into(),
            deposit: format!(
                "UPDATE \"{schema}\".balances SET balance = balance + $2, version = $3 \
                 WHERE account = $1"
            )
            .into(),
            withdraw: format!(
                "UPDATE \"{schema}\".balances SET balance = balance - $2, version = $3 \
                 WHERE account = $1"
            )
            .into(),
        }
    }
}

#[projection(name = "balances")]
impl PgBalances {
    #[on]
    async fn opened(
        &mut self,
        _: &AccountOpened,
        meta: &EventMeta,
        tx: &mut PgTx,
    ) -> Result<(), BenchError> {
        sqlx::query(AssertSqlSafe(Arc::clone(&self.insert)))
            .bind(&meta.stream_id)
            .bind(to_i64("stream version", meta.version)?)
            .execute(&mut **tx)
            .await
            .map_err(sqlx_error("postgres", "writing the read model"))?;
        Ok(())
    }

    #[on]
    async fn deposited(
        &mut self,
        e: &Deposited,
        meta: &EventMeta,
        tx: &mut PgTx,
    ) -> Result<(), BenchError> {
        sqlx::query(AssertSqlSafe(Arc::clone(&self.deposit)))
            .bind(&meta.stream_id)
            .bind(to_i64("amount", e.amount)?)
            .bind(to_i64("stream version", meta.version)?)
            .execute(&mut **tx)
            .await
            .map_err(sqlx_error("postgres", "writing the read model"))?;
        Ok(())
    }

    #[on]
    async fn withdrawn(
        &mut self,
        e: &Withdrawn,
        meta: &EventMeta,
        tx: &mut PgTx,
    ) -> Result<(), BenchError> {
        sqlx::query(AssertSqlSafe(Arc::clone(&self.withdraw)))
            .bind(&meta.stream_id)
            .bind(to_i64("amount", e.amount)?)
            .bind(to_i64("stream version", meta.version)?)
            .execute(&mut **tx)
            .await
            .map_err(sqlx_error("postgres", "writing the read model"))?;
        Ok(())
    }
}

impl Setup for PostgresSetup {
    const BACKEND: Backend = Backend::Postgres;
    type Store = PgStore;
    type Raw = RawPostgres;

    async fn store(&mut self, workload: Workload) -> Result<PgStore, BenchError> {
        let schema = self.schema("annals", workload);
        Ok(PgStore::options()
            .schema(schema)
            .max_connections(PG_CONNECTIONS)
            .connect(&self.url)
            .await?)
    }

    async fn replay(&mut self, store: PgStore, batch: usize) -> Result<Replayed, BenchError> {
        let schema = store.schema().to_owned();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE \"{schema}\".balances (
                account text   NOT NULL PRIMARY KEY,
                version bigint NOT NULL,
                balance bigint NOT NULL
            )"
        )))
        .execute(store.pool())
        .await
        .map_err(sqlx_error("postgres", "creating the read model"))?;
        let (elapsed, handled, _) =
            annals_runs::replay(store.clone(), PgBalances::new(&schema), batch).await?;
        let rows = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT account, version, balance FROM \"{schema}\".balances"
        )))
        .fetch_all(store.pool())
        .await
        .map_err(sqlx_error("postgres", "reading the read model"))?;
        Ok(Replayed {
            elapsed,
            handled,
            balances: balance_rows(rows)?,
        })
    }

    async fn raw(&mut self, workload: Workload) -> Result<Option<RawPostgres>, BenchError> {
        let schema = self.schema("raw", workload);
        Ok(Some(
            RawPostgres::create(&self.url, &schema, PG_CONNECTIONS).await?,
        ))
    }

    async fn finish(self) -> Result<(), BenchError> {
        for schema in &self.schemas {
            sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")))
                .execute(&self.admin)
                .await
                .map_err(sqlx_error("postgres", "dropping a schema"))?;
        }
        self.admin.close().await;
        Ok(())
    }
}
