//! The raw sqlx baseline on PostgreSQL, in a schema of its own.

use std::collections::HashMap;

use annals_examples::bank::AccountEvent;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::{decode, encode, to_i64, to_u64, Change, RawAccount, RawBaseline, Tally, MAX_ATTEMPTS};
use crate::error::{sqlx_error, BenchError};
use crate::plan::Step;

const BACKEND: &str = "postgres";

const SCHEMA: &str = "
CREATE TABLE events (
    position   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id  text   NOT NULL,
    version    bigint NOT NULL,
    event_type text   NOT NULL,
    payload    json   NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE balances (
    account text   NOT NULL PRIMARY KEY,
    version bigint NOT NULL,
    balance bigint NOT NULL
);
CREATE TABLE checkpoints (
    name     text   NOT NULL PRIMARY KEY,
    position bigint NOT NULL
);
CREATE TABLE commands (
    id        text   NOT NULL PRIMARY KEY,
    stream_id text   NOT NULL,
    version   bigint NOT NULL
);
INSERT INTO checkpoints (name, position) VALUES ('balances', 0), ('w7', 0);
";

/// A PostgreSQL schema holding the baseline's tables.
#[derive(Debug, Clone)]
pub struct RawPostgres {
    pool: PgPool,
}

impl RawPostgres {
    /// Creates `schema` (which must not exist) and the tables in it; every connection of the
    /// pool works in that schema.
    pub async fn create(url: &str, schema: &str, connections: u32) -> Result<Self, BenchError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(sqlx_error(BACKEND, "parsing the database url"))?;
        let setup = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(sqlx_error(BACKEND, "connecting"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&setup)
            .await
            .map_err(sqlx_error(BACKEND, "creating the schema"))?;
        setup.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .connect_with(options.options([("search_path", schema)]))
            .await
            .map_err(sqlx_error(BACKEND, "connecting"))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(sqlx_error(BACKEND, "creating the tables"))?;
        Ok(RawPostgres { pool })
    }
}

impl RawBaseline for RawPostgres {
    async fn load(&self, stream_id: &str) -> Result<RawAccount, BenchError> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT version, event_type, payload::text FROM events WHERE stream_id = $1 ORDER BY version",
        )
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sqlx_error(BACKEND, "reading a stream"))?;
        let mut account = RawAccount::default();
        for (version, event_type, payload) in rows {
            let version = to_u64("stream version", version)?;
            account.apply(stream_id, version, &event_type, &payload)?;
        }
        Ok(account)
    }

    async fn execute(&self, step: &Step, tally: &mut Tally) -> Result<(), BenchError> {
        let stream_id = crate::plan::account_id(step.account);
        for attempt in 1..=MAX_ATTEMPTS {
            let account = self.load(&stream_id).await?;
            let (event_type, payload) = account.decide(&stream_id, step)?;
            let version = to_i64("stream version", account.version + 1)?;
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(sqlx_error(BACKEND, "beginning an append"))?;
            let inserted = sqlx::query(
                "INSERT INTO events (stream_id, version, event_type, payload) \
                 VALUES ($1, $2, $3, $4::json)",
            )
            .bind(&stream_id)
            .bind(version)
            .bind(event_type)
            .bind(payload)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {
                    return tx
                        .commit()
                        .await
                        .map_err(sqlx_error(BACKEND, "committing an append"));
                }
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    if attempt == MAX_ATTEMPTS {
                        tally.conflicts += 1;
                        return Ok(());
                    }
                    tally.retries += 1;
                }
                Err(e) => return Err(sqlx_error(BACKEND, "appending an event")(e)),
            }
        }
        Ok(())
    }

    async fn seed(
        &self,
        stream_id: &str,
        version: u64,
        events: &[AccountEvent],
    ) -> Result<(), BenchError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(sqlx_error(BACKEND, "beginning the seeding"))?;
        for (offset, event) in (1..).zip(events) {
            let (event_type, payload) = encode(event)?;
            sqlx::query(
                "INSERT INTO events (stream_id, version, event_type, payload) \
                 VALUES ($1, $2, $3, $4::json)",
            )
            .bind(stream_id)
            .bind(to_i64("stream version", version + offset)?)
            .bind(event_type)
            .bind(payload)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_error(BACKEND, "seeding events"))?;
        }
        tx.commit()
            .await
            .map_err(sqlx_error(BACKEND, "committing the seeding"))
    }

    async fn replay(&self, batch: usize) -> Result<u64, BenchError> {
        let limit = to_i64("batch size", batch.max(1) as u64)?;
        let (mut from,): (i64,) =
            sqlx::query_as("SELECT position FROM checkpoints WHERE name = 'balances'")
                .fetch_one(&self.pool)
                .await
                .map_err(sqlx_error(BACKEND, "reading the checkpoint"))?;
        let mut handled = 0;
        loop {
            let rows: Vec<(i64, String, i64, String, String)> = sqlx::query_as(
                "SELECT position, stream_id, version, event_type, payload::text FROM events \
                 WHERE position > $1 ORDER BY position LIMIT $2",
            )
            .bind(from)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_error(BACKEND, "reading events in order"))?;
            let Some(&(to, ..)) = rows.last() else {
                return Ok(handled);
            };
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(sqlx_error(BACKEND, "beginning a batch"))?;
            for (_, stream_id, version, event_type, payload) in &rows {
                let change = decode(
                    stream_id,
                    to_u64("stream version", *version)?,
                    event_type,
                    payload,
                )?;
                let query = match change {
                    Change::Opened => sqlx::query(
                        "INSERT INTO balances (account, version, balance) VALUES ($1, $2, 0)",
                    )
                    .bind(stream_id)
                    .bind(version),
                    Change::Deposited(amount) => sqlx::query(
                        "UPDATE balances SET balance = balance + $2, version = $3 \
                         WHERE account = $1",
                    )
                    .bind(stream_id)
                    .bind(to_i64("amount", amount)?)
                    .bind(version),
                    Change::Withdrawn(amount) => sqlx::query(
                        "UPDATE balances SET balance = balance - $2, version = $3 \
                         WHERE account = $1",
                    )
                    .bind(stream_id)
                    .bind(to_i64("amount", amount)?)
                    .bind(version),
                };
                query
                    .execute(&mut *tx)
                    .await
                    .map_err(sqlx_error(BACKEND, "writing the read model"))?;
            }
            let moved = sqlx::query(
                "UPDATE checkpoints SET position = $1 WHERE name = 'balances' AND position = $2",
            )
            .bind(to)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_error(BACKEND, "moving the checkpoint"))?;
            if moved.rows_affected() != 1 {
                return Err(BenchError::Verify(format!(
                    "checkpoint moved by someone else (expected {from})"
                )));
            }
            tx.commit()
                .await
                .map_err(sqlx_error(BACKEND, "committing a batch"))?;
            handled += rows.len() as u64;
            from = to;
        }
    }

    async fn react(&self, batch: usize) -> Result<u64, BenchError> {
        let limit = to_i64("batch size", batch.max(1) as u64)?;
        let (mut from,): (i64,) =
            sqlx::query_as("SELECT position FROM checkpoints WHERE name = 'w7'")
                .fetch_one(&self.pool)
                .await
                .map_err(sqlx_error(BACKEND, "reading the checkpoint"))?;
        let mut handled = 0;
        loop {
            let rows: Vec<(i64, String, i64, String, String)> = sqlx::query_as(
                "SELECT position, stream_id, version, event_type, payload::text FROM events \
                 WHERE event_type = 'Withdrawn' AND position > $1 ORDER BY position LIMIT $2",
            )
            .bind(from)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_error(BACKEND, "reading events of a type"))?;
            let Some(&(to, ..)) = rows.last() else {
                return Ok(handled);
            };
            for (position, source, version, event_type, payload) in &rows {
                let (target, step) = super::w7_deposit(
                    source,
                    to_u64("stream version", *version)?,
                    event_type,
                    payload,
                )?;
                let account = self.load(&target).await?;
                let (event_type, payload) = account.decide(&target, &step)?;
                let version = to_i64("stream version", account.version + 1)?;
                let mut tx = self
                    .pool
                    .begin()
                    .await
                    .map_err(sqlx_error(BACKEND, "beginning a command"))?;
                let recorded = sqlx::query(
                    "INSERT INTO commands (id, stream_id, version) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(super::w7_command_id(*position))
                .bind(&target)
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(sqlx_error(BACKEND, "recording a command"))?;
                if recorded.rows_affected() == 0 {
                    // Sent on an earlier delivery: nothing more to do.
                    continue;
                }
                sqlx::query(
                    "INSERT INTO events (stream_id, version, event_type, payload) \
                     VALUES ($1, $2, $3, $4::json)",
                )
                .bind(&target)
                .bind(version)
                .bind(event_type)
                .bind(payload)
                .execute(&mut *tx)
                .await
                .map_err(sqlx_error(BACKEND, "appending an event"))?;
                tx.commit()
                    .await
                    .map_err(sqlx_error(BACKEND, "committing a command"))?;
            }
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(sqlx_error(BACKEND, "beginning a checkpoint move"))?;
            let moved = sqlx::query(
                "UPDATE checkpoints SET position = $1 WHERE name = 'w7' AND position = $2",
            )
            .bind(to)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_error(BACKEND, "moving the checkpoint"))?;
            if moved.rows_affected() != 1 {
                return Err(BenchError::Verify(format!(
                    "checkpoint moved by someone else (expected {from})"
                )));
            }
            tx.commit()
                .await
                .map_err(sqlx_error(BACKEND, "committing the checkpoint"))?;
            handled += rows.len() as u64;
            from = to;
        }
    }

    async fn read_model(&self) -> Result<HashMap<String, (u64, u64)>, BenchError> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT account, version, balance FROM balances")
                .fetch_all(&self.pool)
                .await
                .map_err(sqlx_error(BACKEND, "reading the read model"))?;
        rows.into_iter()
            .map(|(account, version, balance)| {
                Ok((
                    account,
                    (to_u64("version", version)?, to_u64("balance", balance)?),
                ))
            })
            .collect()
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
