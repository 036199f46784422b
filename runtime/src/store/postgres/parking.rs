//! Parked events: set aside in the runner's transaction, listed, retried or skipped.

use time::OffsetDateTime;

use crate::error::{Operation, StoreError};
use crate::store::sql::parked::{attempts, event_json, parked_event};
use crate::store::sql::{column, stored_u64};
use crate::store::{validate_runner_name, ParkedEvent, ParkingStore, RecordedEvent, Resolution};

use super::{to_i64, PgStore, PgTx};

impl ParkingStore for PgStore {
    async fn park<'a>(
        &'a self,
        tx: &'a mut PgTx,
        runner: &'a str,
        event: &'a RecordedEvent,
        error: &'a str,
        tries: u32,
    ) -> Result<u64, StoreError> {
        validate_runner_name(runner)?;
        let id: i64 = sqlx::query_scalar(&self.inner.sql.park)
            .bind(runner)
            .bind(to_i64(event.meta.position, "position")?)
            .bind(&event.meta.event_type)
            .bind(event_json(event)?)
            .bind(error)
            .bind(attempts(tries.max(1)))
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| StoreError::database(Operation::Park, e))?;
        stored_u64(id, "parked id", None)
    }

    async fn parked(
        &self,
        runner: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<ParkedEvent>, StoreError> {
        if let Some(runner) = runner {
            validate_runner_name(runner)?;
        }
        let rows = sqlx::query(&self.inner.sql.parked)
            .bind(runner)
            .bind(include_resolved)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(Operation::Park, e))?;
        rows.iter()
            .map(|row| {
                let parked_at: OffsetDateTime = column(row, 6, "annals_parked.parked_at", None)?;
                parked_event(row, parked_at)
            })
            .collect()
    }

    async fn resolve_parked<'a>(
        &'a self,
        tx: &'a mut PgTx,
        id: u64,
        resolution: Resolution,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.inner.sql.resolve_parked)
            .bind(to_i64(id, "parked id")?)
            .bind(resolution.as_str())
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
        sqlx::query(&self.inner.sql.update_parked)
            .bind(to_i64(id, "parked id")?)
            .bind(error)
            .bind(attempts(tries.max(1)))
            .execute(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(Operation::Park, e))?;
        Ok(())
    }
}
