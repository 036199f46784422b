//! The bank as three serverless functions: commands, a projection, queries. What
//! `cargo run --example serverless` runs; each function is a small piece that a Lambda
//! (or any function platform) invokes.
//!
//! - The command function executes `AccountCommand`s posted as JSON (`annals::http`). It
//!   is generic over the event store: the same function runs on a SQLite file and, with
//!   the feature `dynamodb`, on a DynamoDB table ([`open_events_table`]).
//! - The projection function catches the `balances` read model up once per invocation
//!   (a schedule, or a trigger on new events) and returns: from the SQLite store's log
//!   ([`catch_up`]), or from the DynamoDB table's stream ([`catch_up_from_stream`]). The
//!   read model and the projection's checkpoint live in a SQLite file, written in one
//!   transaction.
//! - The query function answers `GET /balances` and `GET /balances/{id}` from the read
//!   model.

use annals::http::axum::extract::{Path, State};
use annals::http::axum::routing::get;
use annals::http::axum::{Json, Router};
use annals::http::{CommandRoutes, HttpError};
use annals::store::EventStore;
use annals::{
    projection, EventMeta, Progress, ProjectionError, Repository, Runner, SqliteStore, SqliteTx,
};
#[cfg(feature = "dynamodb")]
use annals::{source::DynamoDbStreamSource, DynamoDbStore, StoreError};
use serde::Serialize;

use crate::bank::{Account, AccountCommand, AccountOpened, Deposited, Withdrawn};

/// The command function's routes: `POST /accounts/commands`, `GET
/// /accounts/streams/{id}/events`, on any event store.
pub fn command_router<S: EventStore>(store: S) -> Router {
    let accounts = Repository::<Account, S>::new(store);
    Router::new().nest(
        "/accounts",
        CommandRoutes::<AccountCommand, _>::new(accounts).router(),
    )
}

/// Balances by account, in a table of a SQLite file, written in the same transaction as
/// the projection's checkpoint (whichever the source: the SQLite store's log or a DynamoDB
/// table's stream).
#[derive(Debug, Default)]
pub struct Balances;

/// Creates the read model's table if missing.
pub async fn create_balances(store: &SqliteStore) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS balances (
             account TEXT PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL,
             position INTEGER NOT NULL)",
    )
    .execute(store.pool())
    .await?;
    Ok(())
}

/// The projection function over a SQLite event store: one pass of [`Balances`] over the
/// store's log (the events new since its checkpoint), then it returns.
pub async fn catch_up(store: &SqliteStore) -> Result<Progress, ProjectionError> {
    Runner::new(store.clone(), Balances).catch_up().await
}

/// Opens the DynamoDB table `table` that holds the events: at `endpoint` (a local server,
/// such as `.ci/moto-server` or `moto_server`), creating the table when it is missing; on
/// AWS without an endpoint (region and credentials from the environment), where the table
/// must exist (it is part of the infrastructure: see the table definition in the guide).
#[cfg(feature = "dynamodb")]
pub async fn open_events_table(
    endpoint: Option<&str>,
    table: &str,
) -> Result<DynamoDbStore, StoreError> {
    let options = DynamoDbStore::options();
    match endpoint {
        Some(endpoint) => {
            options
                .endpoint(endpoint)
                .create_table(true)
                .open(table)
                .await
        }
        None => options.open(table).await,
    }
}

/// The projection function over a DynamoDB event store: one pass of [`Balances`] over the
/// table's stream (`events.stream_source()`), the read model and the stream's cursor (a
/// sequence number per shard) committed together in the SQLite file `read`.
#[cfg(feature = "dynamodb")]
pub async fn catch_up_from_stream(
    read: &SqliteStore,
    source: DynamoDbStreamSource,
) -> Result<Progress, ProjectionError> {
    Runner::with_source(read.clone(), source, Balances)
        .catch_up()
        .await
}

#[projection(name = "balances")]
impl Balances {
    #[on]
    async fn opened(
        &mut self,
        e: &AccountOpened,
        m: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO balances (account, owner, balance, position) VALUES (?, ?, 0, ?)")
            .bind(&m.stream_id)
            .bind(&e.owner)
            .bind(position(m))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    #[on]
    async fn deposited(
        &mut self,
        e: &Deposited,
        m: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), sqlx::Error> {
        change(tx, m, i64::try_from(e.amount).unwrap_or(i64::MAX)).await
    }

    #[on]
    async fn withdrawn(
        &mut self,
        e: &Withdrawn,
        m: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), sqlx::Error> {
        change(tx, m, -i64::try_from(e.amount).unwrap_or(i64::MAX)).await
    }

    #[reset]
    async fn truncate(&mut self, tx: &mut SqliteTx) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM balances")
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

fn position(m: &EventMeta) -> i64 {
    i64::try_from(m.position).unwrap_or(i64::MAX)
}

async fn change(tx: &mut SqliteTx, m: &EventMeta, delta: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE balances SET balance = balance + ?, position = ? WHERE account = ?")
        .bind(delta)
        .bind(position(m))
        .bind(&m.stream_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One account's row of the read model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceRow {
    /// The account.
    pub account: String,
    /// Who owns it.
    pub owner: String,
    /// Balance in cents.
    pub balance: i64,
    /// The position of the last event applied: a caller that got a higher position from
    /// the command function has not seen its write here yet.
    pub position: i64,
}

/// The query function's routes: `GET /balances` and `GET /balances/{id}`.
pub fn query_router(store: SqliteStore) -> Router {
    Router::new()
        .route("/balances", get(all_balances))
        .route("/balances/{id}", get(one_balance))
        .with_state(store)
}

async fn all_balances(
    State(store): State<SqliteStore>,
) -> Result<Json<Vec<BalanceRow>>, HttpError> {
    let rows = sqlx::query_as::<_, (String, String, i64, i64)>(
        "SELECT account, owner, balance, position FROM balances ORDER BY account",
    )
    .fetch_all(store.pool())
    .await
    .map_err(query_failed)?;
    Ok(Json(rows.into_iter().map(row).collect()))
}

async fn one_balance(
    State(store): State<SqliteStore>,
    Path(id): Path<String>,
) -> Result<Json<BalanceRow>, HttpError> {
    let found = sqlx::query_as::<_, (String, String, i64, i64)>(
        "SELECT account, owner, balance, position FROM balances WHERE account = ?",
    )
    .bind(&id)
    .fetch_optional(store.pool())
    .await
    .map_err(query_failed)?;
    found
        .map(|r| Json(row(r)))
        .ok_or_else(|| HttpError::not_found(format!("no account `{id}` in the read model")))
}

fn row((account, owner, balance, position): (String, String, i64, i64)) -> BalanceRow {
    BalanceRow {
        account,
        owner,
        balance,
        position,
    }
}

fn query_failed(error: sqlx::Error) -> HttpError {
    HttpError::new(
        annals::http::axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("reading the balances failed: {error}"),
    )
}
