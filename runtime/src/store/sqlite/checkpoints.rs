//! Checkpoints, moved by compare-and-set inside the runner's transaction.

use crate::error::{Operation, StoreError};
use crate::store::sql::{column, stored_u64};
use crate::store::{now_micros, validate_runner_name, Checkpoint, CheckpointStore};

use super::{micros, to_i64, SqliteStore, SqliteTx};

impl CheckpointStore for SqliteStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Checkpoint, StoreError> {
        validate_runner_name(name)?;
        let row = sqlx::query("SELECT position, cursor FROM annals_checkpoints WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
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

    async fn store_checkpoint<'a>(
        &'a self,
        tx: &'a mut SqliteTx,
        name: &'a str,
        expected: &'a Checkpoint,
        checkpoint: &'a Checkpoint,
    ) -> Result<bool, StoreError> {
        validate_runner_name(name)?;
        let expected_position = to_i64(expected.position, "checkpoint")?;
        let position = to_i64(checkpoint.position, "checkpoint")?;
        let now = micros(now_micros());
        // Compare-and-set: a missing row counts as the default checkpoint. The write lock
        // SQLite takes for the transaction's first write makes the compare and the set one.
        let done = sqlx::query(
            "UPDATE annals_checkpoints SET position = ?4, cursor = ?5, updated_at = ?6 \
             WHERE name = ?1 AND position = ?2 AND cursor IS ?3",
        )
        .bind(name)
        .bind(expected_position)
        .bind(expected.cursor.as_deref())
        .bind(position)
        .bind(checkpoint.cursor.as_deref())
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|e| StoreError::database(Operation::AdvanceCheckpoint, e))?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        if *expected != Checkpoint::default() {
            return Ok(false);
        }
        let done = sqlx::query(
            "INSERT INTO annals_checkpoints (name, position, cursor, updated_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(position)
        .bind(checkpoint.cursor.as_deref())
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|e| StoreError::database(Operation::AdvanceCheckpoint, e))?;
        Ok(done.rows_affected() == 1)
    }
}
