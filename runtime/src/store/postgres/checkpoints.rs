//! Checkpoints, moved by compare-and-set inside the runner's transaction.

use crate::error::{Operation, StoreError};
use crate::store::sql::stored_u64;
use crate::store::{validate_runner_name, CheckpointStore};

use super::{to_i64, PgStore, PgTx};

impl CheckpointStore for PgStore {
    async fn checkpoint(&self, name: &str) -> Result<u64, StoreError> {
        validate_runner_name(name)?;
        let position: Option<i64> = sqlx::query_scalar(&self.inner.sql.checkpoint)
            .bind(name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(Operation::ReadCheckpoint, e))?;
        position.map_or(Ok(0), |p| stored_u64(p, "checkpoint", None))
    }

    async fn advance_checkpoint<'a>(
        &'a self,
        tx: &'a mut PgTx,
        name: &'a str,
        expected: u64,
        position: u64,
    ) -> Result<bool, StoreError> {
        validate_runner_name(name)?;
        sqlx::query_scalar(&self.inner.sql.advance_checkpoint)
            .bind(name)
            .bind(to_i64(expected, "checkpoint")?)
            .bind(to_i64(position, "checkpoint")?)
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| StoreError::database(Operation::AdvanceCheckpoint, e))
    }
}
