//! Process managers' state and deadlines, written in the runner's transaction.

use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Operation, StoreError};
use crate::store::sql::{column, stored_u64, to_i64};
use crate::store::{validate_runner_name, Deadline, ProcessState, ProcessStore};

use super::{micros, SqliteStore, SqliteTx};

const DEADLINE_COLUMNS: &str = "process, key, name, id, due_at, correlation_id, causation_id";

fn db(e: sqlx::Error, operation: Operation) -> StoreError {
    StoreError::database(operation, e)
}

fn uuid(text: &str, what: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt {
        position: None,
        reason: format!("{what} `{text}`: {e}"),
    })
}

fn deadline(row: &SqliteRow) -> Result<Deadline, StoreError> {
    let id: String = column(row, 3, "annals_deadlines.id", None)?;
    let at: i64 = column(row, 4, "annals_deadlines.due_at", None)?;
    let due_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1000).map_err(|e| {
        StoreError::Corrupt {
            position: None,
            reason: format!("due_at {at}: {e}"),
        }
    })?;
    let correlation: Option<String> = column(row, 5, "annals_deadlines.correlation_id", None)?;
    let causation: Option<String> = column(row, 6, "annals_deadlines.causation_id", None)?;
    Ok(Deadline::new(
        column::<_, String>(row, 0, "annals_deadlines.process", None)?,
        column::<_, String>(row, 1, "annals_deadlines.key", None)?,
        column::<_, String>(row, 2, "annals_deadlines.name", None)?,
        uuid(&id, "deadline id")?,
        due_at,
    )
    .caused_by(
        correlation
            .map(|c| uuid(&c, "correlation id"))
            .transpose()?,
        causation.map(|c| uuid(&c, "causation id")).transpose()?,
    ))
}

impl ProcessStore for SqliteStore {
    async fn load_process<'a>(
        &'a self,
        process: &'a str,
        key: &'a str,
    ) -> Result<Option<ProcessState>, StoreError> {
        let row = sqlx::query(
            "SELECT state, version, ended FROM annals_process_states WHERE process = ? AND key = ?",
        )
        .bind(process)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db(e, Operation::ProcessState))?;
        row.map(|row| {
            let version: i64 = column(&row, 1, "annals_process_states.version", None)?;
            let ended: i64 = column(&row, 2, "annals_process_states.ended", None)?;
            Ok(ProcessState::new(
                column(&row, 0, "annals_process_states.state", None)?,
                stored_u64(version, "process version", None)?,
                ended != 0,
            ))
        })
        .transpose()
    }

    async fn save_process<'a>(
        &'a self,
        tx: &'a mut SqliteTx,
        process: &'a str,
        key: &'a str,
        state: &'a str,
        expected: u64,
        ended: bool,
    ) -> Result<bool, StoreError> {
        validate_runner_name(process)?;
        let next = to_i64(expected + 1, "process version")?;
        let done = if expected == 0 {
            sqlx::query(
                "INSERT INTO annals_process_states (process, key, state, version, ended) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (process, key) DO NOTHING",
            )
            .bind(process)
            .bind(key)
            .bind(state)
            .bind(next)
            .bind(i64::from(ended))
            .execute(&mut **tx)
            .await
        } else {
            sqlx::query(
                "UPDATE annals_process_states SET state = ?, version = ?, ended = ? \
                 WHERE process = ? AND key = ? AND version = ?",
            )
            .bind(state)
            .bind(next)
            .bind(i64::from(ended))
            .bind(process)
            .bind(key)
            .bind(to_i64(expected, "process version")?)
            .execute(&mut **tx)
            .await
        }
        .map_err(|e| db(e, Operation::ProcessState))?;
        Ok(done.rows_affected() == 1)
    }

    async fn schedule_deadline<'a>(
        &'a self,
        tx: &'a mut SqliteTx,
        deadline: &'a Deadline,
    ) -> Result<(), StoreError> {
        validate_runner_name(&deadline.process)?;
        sqlx::query(
            "INSERT INTO annals_deadlines \
             (process, key, name, id, due_at, correlation_id, causation_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (process, key, name) DO UPDATE SET id = excluded.id, \
             due_at = excluded.due_at, correlation_id = excluded.correlation_id, \
             causation_id = excluded.causation_id",
        )
        .bind(&deadline.process)
        .bind(&deadline.key)
        .bind(&deadline.name)
        .bind(deadline.id.hyphenated())
        .bind(micros(deadline.due_at))
        .bind(deadline.correlation_id.map(Uuid::hyphenated))
        .bind(deadline.causation_id.map(Uuid::hyphenated))
        .execute(&mut **tx)
        .await
        .map_err(|e| db(e, Operation::Deadline))?;
        Ok(())
    }

    async fn cancel_deadline<'a>(
        &'a self,
        tx: &'a mut SqliteTx,
        process: &'a str,
        key: &'a str,
        name: Option<&'a str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM annals_deadlines WHERE process = ? AND key = ? AND (?3 IS NULL OR name = ?3)",
        )
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
            "SELECT {DEADLINE_COLUMNS} FROM annals_deadlines WHERE process = ? AND due_at <= ? \
             ORDER BY due_at, id LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(process)
            .bind(micros(now))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db(e, Operation::Deadline))?;
        rows.iter().map(deadline).collect()
    }

    async fn deadlines<'a>(&'a self, process: &'a str) -> Result<Vec<Deadline>, StoreError> {
        let sql = format!(
            "SELECT {DEADLINE_COLUMNS} FROM annals_deadlines WHERE process = ? ORDER BY due_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(process)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db(e, Operation::Deadline))?;
        rows.iter().map(deadline).collect()
    }

    async fn take_deadline<'a>(
        &'a self,
        tx: &'a mut SqliteTx,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM annals_deadlines WHERE id = ?")
            .bind(id.hyphenated())
            .execute(&mut **tx)
            .await
            .map_err(|e| db(e, Operation::Deadline))?;
        Ok(done.rows_affected() == 1)
    }
}
