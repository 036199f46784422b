//! The PostgreSQL backend.

use std::collections::HashMap;

use annals::{CheckpointStore, PgStore, Projection, ProjectionError, RecordedEvent};
use annals_examples::bank::AccountEvent;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::{amount_i64, balance_rows, handler_failed, version_i64, Setup};
use crate::annals_runs::change_of;
use crate::cli::{Backend, Workload};
use crate::error::{sqlx_error, BenchError};
use crate::raw::postgres::RawPostgres;
use crate::raw::Change;

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
        let schema = format!("{}_{imp}_{}", self.prefix, workload.to_string().to_lowercase());
        self.schemas.push(schema.clone());
        schema
    }
}

/// W4's read model on PostgreSQL: a `balances` table in the store's schema, written in the
/// runner's transaction.
#[derive(Debug)]
pub struct PgBalances {
    insert: String,
    deposit: String,
    withdraw: String,
}

impl PgBalances {
    fn new(schema: &str) -> Self {
        PgBalances {
            insert: format!(
                "INSERT INTO \"{schema}\".balances (account, version, balance) VALUES ($1, $2, 0)"
            ),
            deposit: format!(
                "UPDATE \"{schema}\".balances SET balance = balance + $2, version = $3 \
                 WHERE account = $1"
            ),
            withdraw: format!(
                "UPDATE \"{schema}\".balances SET balance = balance - $2, version = $3 \
                 WHERE account = $1"
            ),
        }
    }
}

impl Projection<PgTx> for PgBalances {
    const NAME: &'static str = "balances";

    fn event_types() -> Vec<&'static str> {
        AccountEvent::accepted_names()
    }

    async fn handle<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        tx: &'a mut PgTx,
    ) -> Result<(), ProjectionError> {
        let account = event.meta.stream_id.as_str();
        let version = version_i64(event)?;
        let query = match change_of(event)? {
            Change::Opened => sqlx::query(&self.insert).bind(account).bind(version),
            Change::Deposited(amount) => sqlx::query(&self.deposit)
                .bind(account)
                .bind(amount_i64(event, amount)?)
                .bind(version),
            Change::Withdrawn(amount) => sqlx::query(&self.withdraw)
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

impl Setup for PostgresSetup {
    const BACKEND: Backend = Backend::Postgres;
    type Store = PgStore;
    type ReadModel = PgBalances;
    type Raw = RawPostgres;

    async fn store(&mut self, workload: Workload) -> Result<PgStore, BenchError> {
        let schema = self.schema("annals", workload);
        Ok(PgStore::options()
            .schema(schema)
            .max_connections(PG_CONNECTIONS)
            .connect(&self.url)
            .await?)
    }

    async fn read_model(&mut self, store: &PgStore) -> Result<PgBalances, BenchError> {
        let schema = store.schema();
        sqlx::raw_sql(&format!(
            "CREATE TABLE \"{schema}\".balances (
                account text   NOT NULL PRIMARY KEY,
                version bigint NOT NULL,
                balance bigint NOT NULL
            )"
        ))
        .execute(store.pool())
        .await
        .map_err(sqlx_error("postgres", "creating the read model"))?;
        Ok(PgBalances::new(schema))
    }

    async fn balances(
        &mut self,
        store: &PgStore,
        _model: PgBalances,
    ) -> Result<HashMap<String, (u64, u64)>, BenchError> {
        let rows = sqlx::query_as(&format!(
            "SELECT account, version, balance FROM \"{}\".balances",
            store.schema()
        ))
        .fetch_all(store.pool())
        .await
        .map_err(sqlx_error("postgres", "reading the read model"))?;
        balance_rows(rows)
    }

    async fn raw(&mut self, workload: Workload) -> Result<Option<RawPostgres>, BenchError> {
        let schema = self.schema("raw", workload);
        Ok(Some(
            RawPostgres::create(&self.url, &schema, PG_CONNECTIONS).await?,
        ))
    }

    async fn finish(self) -> Result<(), BenchError> {
        for schema in &self.schemas {
            sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&self.admin)
                .await
                .map_err(sqlx_error("postgres", "dropping a schema"))?;
        }
        self.admin.close().await;
        Ok(())
    }
}
