//! Checkpoints, moved by compare-and-set inside the runner's transaction.

use crate::error::{Operation, StoreError};
use crate::store::sql::{column, stored_u64};
use crate::store::{validate_runner_name, Checkpoint, CheckpointStore};

use super::{to_i64, PgStore, PgTx};

impl CheckpointStore for PgStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Checkpoint, StoreError> {
        validate_runner_name(name)?;
        let row = sqlx::query(&self.inner.sql.checkpoint)
            .bind(name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(Operation::ReadCheckpoint, e))?;
        let Some(row) = row else {
            return Ok(Checkpoint::default());
        };
        let position: i64 = column(&row, 0, "annals_checkpoints.position", None)?;
        Ok(Checkpoint {
            position: stored_u64(position, "checkpoint", None)?,
            cursor: column(&row, 1, "annals_checkpoints.cursor", None)?,
        })
    }

    async fn checkpoint_reached<'a>(
        &'a self,
        name: &'a str,
        position: u64,
    ) -> Result<bool, StoreError> {
        self.reached(name, position).await
    }

    async fn store_checkpoint<'a>(
        &'a self,
        tx: &'a mut PgTx,
        name: &'a str,
        expected: &'a Checkpoint,
        checkpoint: &'a Checkpoint,
    ) -> Result<bool, StoreError> {
        validate_runner_name(name)?;
        sqlx::query_scalar(&self.inner.sql.advance_checkpoint)
            .bind(name)
            .bind(to_i64(expected.position, "checkpoint")?)
            .bind(expected.cursor.as_deref())
            .bind(to_i64(checkpoint.position, "checkpoint")?)
            .bind(checkpoint.cursor.as_deref())
            .bind(*expected == Checkpoint::default())
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| StoreError::database(Operation::AdvanceCheckpoint, e))
    }
}
