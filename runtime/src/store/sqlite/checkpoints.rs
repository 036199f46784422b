//! Checkpoints, moved by compare-and-set inside the runner's transaction.

use crate::error::{Operation, StoreError};
use crate::store::sql::stored_u64;
use crate::store::{now_micros, validate_runner_name, CheckpointStore};

use super::{micros, to_i64, SqliteStore, SqliteTx};

impl CheckpointStore for SqliteStore {
    async fn checkpoint(&self, name: &str) -> Result<u64, StoreError> {
        validate_runner_name(name)?;
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM annals_checkpoints WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| StoreError::database(Operation::ReadCheckpoint, e))?;
        position.map_or(Ok(0), |p| stored_u64(p, "checkpoint", None))
    }

    async fn advance_checkpoint<'a>(
        &'a self,
        tx: &'a mut SqliteTx,
        name: &'a str,
        expected: u64,
        position: u64,
    ) -> Result<bool, StoreError> {
        validate_runner_name(name)?;
        let expected = to_i64(expected, "checkpoint")?;
        let position = to_i64(position, "checkpoint")?;
        let now = micros(now_micros());
        // Compare-and-set: a missing row counts as position 0.
        let done = sqlx::query(
            "INSERT INTO annals_checkpoints (name, position, updated_at) \
             SELECT ?1, ?3, ?4 WHERE ?2 = 0 \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
             updated_at = excluded.updated_at WHERE annals_checkpoints.position = ?2",
        )
        .bind(name)
        .bind(expected)
        .bind(position)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|e| StoreError::database(Operation::AdvanceCheckpoint, e))?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        if expected == 0 {
            return Ok(false);
        }
        let done = sqlx::query(
            "UPDATE annals_checkpoints SET position = ?3, updated_at = ?4 \
             WHERE name = ?1 AND position = ?2",
        )
        .bind(name)
        .bind(expected)
        .bind(position)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|e| StoreError::database(Operation::AdvanceCheckpoint, e))?;
        Ok(done.rows_affected() == 1)
    }
}
