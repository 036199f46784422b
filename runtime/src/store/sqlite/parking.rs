//! Parked events: set aside in the runner's transaction, listed, retried or skipped.

use time::OffsetDateTime;

use crate::error::{Operation, StoreError};
use crate::store::sql::column;
use crate::store::sql::parked::{attempts, event_json, parked_event};
use crate::store::{
    now_micros, validate_runner_name, ParkedEvent, ParkingStore, RecordedEvent, Resolution,
};

use super::{micros, to_i64, SqliteStore, SqliteTx};

impl ParkingStore for SqliteStore {
    async fn park<'a>(
        &'a self,
        tx: &'a mut SqliteTx,
        runner: &'a str,
        event: &'a RecordedEvent,
        error: &'a str,
        tries: u32,
    ) -> Result<u64, StoreError> {
        validate_runner_name(runner)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO annals_parked \
             (runner, position, event_type, event, error, attempts, parked_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(runner)
        .bind(to_i64(event.meta.position, "position")?)
        .bind(&event.meta.event_type)
        .bind(event_json(event)?)
        .bind(error)
        .bind(attempts(tries.max(1)))
        .bind(micros(now_micros()))
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| StoreError::database(Operation::Park, e))?;
        crate::store::sql::stored_u64(id, "parked id", None)
    }

    async fn parked(
        &self,
        runner: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<ParkedEvent>, StoreError> {
        if let Some(runner) = runner {
            validate_runner_name(runner)?;
        }
        let rows = sqlx::query(
            "SELECT id, runner, event, error, attempts, resolution, parked_at \
             FROM annals_parked WHERE (?1 IS NULL OR runner = ?1) \
             AND (?2 OR resolved_at IS NULL) ORDER BY id",
        )
        .bind(runner)
        .bind(include_resolved)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::database(Operation::Park, e))?;
        rows.iter()
            .map(|row| {
                let at: i64 = column(row, 6, "annals_parked.parked_at", None)?;
                let parked_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1000)
                    .map_err(|e| StoreError::Corrupt {
                        position: None,
                        reason: format!("parked_at {at}: {e}"),
                    })?;
                parked_event(row, parked_at)
            })
            .collect()
    }

    async fn resolve_parked<'a>(
        &'a self,
        tx: &'a mut SqliteTx,
        id: u64,
        resolution: Resolution,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE annals_parked SET resolved_at = ?, resolution = ? \
             WHERE id = ? AND resolved_at IS NULL",
        )
        .bind(micros(now_micros()))
        .bind(resolution.as_str())
        .bind(to_i64(id, "parked id")?)
        .execute(&mut **tx)
        .await
        .map_err(|e| StoreError::database(Operation::Park, e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_parked<'a>(
        &'a self,
        id: u64,
        error: &'a str,
        tries: u32,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE annals_parked SET error = ?, attempts = ? WHERE id = ?")
            .bind(error)
            .bind(attempts(tries.max(1)))
            .bind(to_i64(id, "parked id")?)
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::database(Operation::Park, e))?;
        Ok(())
    }
}
