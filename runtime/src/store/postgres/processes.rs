//! Process managers' state and deadlines, written in the runner's transaction.

use sqlx::postgres::PgRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Operation, StoreError};
use crate::store::sql::{column, stored_u64, to_i64};
use crate::store::{validate_runner_name, Deadline, ProcessState, ProcessStore};

use super::{quote_ident, PgStore, PgTx};

const DEADLINE_COLUMNS: &str = "process, key, name, id, due_at, correlation_id, causation_id";

fn db(e: sqlx::Error, operation: Operation) -> StoreError {
    StoreError::database(operation, e)
}

impl PgStore {
    /// `<schema>.<table>`, quoted.
    fn table(&self, table: &str) -> String {
        format!("{}.{table}", quote_ident(self.schema()))
    }
}

fn deadline(row: &PgRow) -> Result<Deadline, StoreError> {
    Ok(Deadline::new(
        column::<_, String>(row, 0, "annals_deadlines.process", None)?,
        column::<_, String>(row, 1, "annals_deadlines.key", None)?,
        column::<_, String>(row, 2, "annals_deadlines.name", None)?,
        column(row, 3, "annals_deadlines.id", None)?,
        column(row, 4, "annals_deadlines.due_at", None)?,
    )
    .caused_by(
        column(row, 5, "annals_deadlines.correlation_id", None)?,
        column(row, 6, "annals_deadlines.causation_id", None)?,
    ))
}

impl ProcessStore for PgStore {
    async fn load_process<'a>(
        &'a self,
        process: &'a str,
        key: &'a str,
    ) -> Result<Option<ProcessState>, StoreError> {
        let sql = format!(
            "SELECT state::text, version, ended FROM {} WHERE process = $1 AND key = $2",
            self.table("annals_process_states")
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(process)
            .bind(key)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| db(e, Operation::ProcessState))?;
        row.map(|row| {
            let version: i64 = column(&row, 1, "annals_process_states.version", None)?;
            Ok(ProcessState::new(
                column(&row, 0, "annals_process_states.state", None)?,
                stored_u64(version, "process version", None)?,
                column(&row, 2, "annals_process_states.ended", None)?,
            ))
        })
        .transpose()
    }

    async fn save_process<'a>(
        &'a self,
        tx: &'a mut PgTx,
        process: &'a str,
        key: &'a str,
        state: &'a str,
        expected: u64,
        ended: bool,
    ) -> Result<bool, StoreError> {
        validate_runner_name(process)?;
        let table = self.table("annals_process_states");
        let sql = if expected == 0 {
            format!(
                "INSERT INTO {table} (process, key, state, version, ended) \
                 VALUES ($1, $2, $3::jsonb, $4, $5) ON CONFLICT (process, key) DO NOTHING"
            )
        } else {
            format!(
                "UPDATE {table} SET state = $3::jsonb, version = $4, ended = $5 \
                 WHERE process = $1 AND key = $2 AND version = $6"
            )
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(process)
            .bind(key)
            .bind(state)
            .bind(to_i64(expected + 1, "process version")?)
            .bind(ended);
        if expected > 0 {
            query = query.bind(to_i64(expected, "process version")?);
        }
        let done = query
            .execute(&mut **tx)
            .await
            .map_err(|e| db(e, Operation::ProcessState))?;
        Ok(done.rows_affected() == 1)
    }

    async fn schedule_deadline<'a>(
        &'a self,
        tx: &'a mut PgTx,
        deadline: &'a Deadline,
    ) -> Result<(), StoreError> {
        validate_runner_name(&deadline.process)?;
        let sql = format!(
            "INSERT INTO {} ({DEADLINE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (process, key, name) DO UPDATE SET id = excluded.id, \
             due_at = excluded.due_at, correlation_id = excluded.correlation_id, \
             causation_id = excluded.causation_id",
            self.table("annals_deadlines")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&deadline.process)
            .bind(&deadline.key)
            .bind(&deadline.name)
            .bind(deadline.id)
            .bind(deadline.due_at)
            .bind(deadline.correlation_id)
            .bind(deadline.causation_id)
            .execute(&mut **tx)
            .await
            .map_err(|e| db(e, Operation::Deadline))?;
        Ok(())
    }

    async fn cancel_deadline<'a>(
        &'a self,
        tx: &'a mut PgTx,
        process: &'a str,
        key: &'a str,
        name: Option<&'a str>,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "DELETE FROM {} WHERE process = $1 AND key = $2 AND ($3::text IS NULL OR name = $3)",
            self.table("annals_deadlines")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(process)
            .bind(key)
            .bind(name)
            .execute(&mut **tx)
            .await
            .map_err(|e| db(e, Operation::Deadline))?;
        Ok(())
    }

    async fn due_deadlines<'a>(
        &'a self,
        process: &'a str,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Deadline>, StoreError> {
        let sql = format!(
            "SELECT {DEADLINE_COLUMNS} FROM {} WHERE process = $1 AND due_at <= $2 \
             ORDER BY due_at, id LIMIT $3",
            self.table("annals_deadlines")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(process)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await
            .map_err(|e| db(e, Operation::Deadline))?;
        rows.iter().map(deadline).collect()
    }

    async fn deadlines<'a>(&'a self, process: &'a str) -> Result<Vec<Deadline>, StoreError> {
        let sql = format!(
            "SELECT {DEADLINE_COLUMNS} FROM {} WHERE process = $1 ORDER BY due_at, id",
            self.table("annals_deadlines")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(process)
            .fetch_all(self.pool())
            .await
            .map_err(|e| db(e, Operation::Deadline))?;
        rows.iter().map(deadline).collect()
    }

    async fn take_deadline<'a>(&'a self, tx: &'a mut PgTx, id: Uuid) -> Result<bool, StoreError> {
        let sql = format!(
            "DELETE FROM {} WHERE id = $1",
            self.table("annals_deadlines")
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(|e| db(e, Operation::Deadline))?;
        Ok(done.rows_affected() == 1)
    }
}
