//! The schema name, the embedded migrations and how they run under an advisory lock.

use sqlx::postgres::PgConnection;
use sqlx::Executor;

use crate::error::{Operation, StoreError};
use crate::store::sql::migrate::{AppliedMigration, Migration, MigrationTarget};

use super::to_i32;
use crate::store::sql::column;

/// The embedded schema history, applied in order.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "checkpoints",
        sql: include_str!("../../../migrations/postgres/0002_checkpoints.sql"),
    },
    Migration {
        version: 3,
        name: "checkpoint_cursor",
        sql: include_str!("../../../migrations/postgres/0003_checkpoint_cursor.sql"),
    },
    Migration {
        version: 4,
        name: "parked",
        sql: include_str!("../../../migrations/postgres/0004_parked.sql"),
    },
    Migration {
        version: 5,
        name: "log_order",
        sql: include_str!("../../../migrations/postgres/0005_log_order.sql"),
    },
    Migration {
        version: 6,
        name: "command_fingerprints",
        sql: include_str!("../../../migrations/postgres/0006_command_fingerprints.sql"),
    },
    Migration {
        version: 7,
        name: "workflows",
        sql: include_str!("../../../migrations/postgres/0007_workflows.sql"),
    },
];

/// The longest schema name accepted: PostgreSQL names hold 63 bytes, and the notification
/// channel `<schema>_events` must fit too.
pub(super) const MAX_SCHEMA_LEN: usize = 56;

/// Runs on a transaction that holds the migration lock and has the store's schema first on
/// its search path.
impl MigrationTarget for PgConnection {
    async fn applied(&mut self) -> Result<Vec<AppliedMigration>, StoreError> {
        const OP: Operation = Operation::Migrate;
        self.execute(
            "CREATE TABLE IF NOT EXISTS annals_migrations ( \
                 version    integer     NOT NULL PRIMARY KEY, \
                 name       text        NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now() \
             )",
        )
        .await
        .map_err(|e| StoreError::database(OP, e))?;
        let rows = sqlx::query("SELECT version, name FROM annals_migrations ORDER BY version")
            .fetch_all(&mut *self)
            .await
            .map_err(|e| StoreError::database(OP, e))?;
        rows.iter()
            .map(|row| {
                let version: i32 = column(row, 0, "annals_migrations.version", None)?;
                Ok(AppliedMigration {
                    version: u32::try_from(version).map_err(|_| StoreError::Corrupt {
                        position: None,
                        reason: format!("annals_migrations records version {version}"),
                    })?,
                    name: column(row, 1, "annals_migrations.name", None)?,
                })
            })
            .collect()
    }

    async fn apply(&mut self, migration: &Migration) -> Result<(), StoreError> {
        let failed = |e: sqlx::Error| StoreError::Migration {
            version: migration.version,
            source: Box::new(e),
        };
        // A query without parameters runs as a simple query: several statements are fine.
        self.execute(migration.sql).await.map_err(failed)?;
        sqlx::query("INSERT INTO annals_migrations (version, name) VALUES ($1, $2)")
            .bind(to_i32(migration.version, "migration version")?)
            .bind(migration.name)
            .execute(&mut *self)
            .await
            .map_err(failed)?;
        Ok(())
    }
}

/// Refuses schema names that are not plain lowercase identifiers, so the name can be
/// quoted into SQL and used in a notification channel as is.
pub(super) fn validate_schema(schema: &str) -> Result<(), StoreError> {
    let bytes = schema.as_bytes();
    let well_formed = matches!(bytes.first(), Some(b'a'..=b'z' | b'_'))
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && bytes.len() <= MAX_SCHEMA_LEN;
    let shown = || schema.chars().take(64).collect::<String>();
    if !well_formed {
        return Err(StoreError::Config(format!(
            "schema name `{}` is not a lowercase identifier of at most {MAX_SCHEMA_LEN} bytes \
             ([a-z_][a-z0-9_]*)",
            shown().escape_debug()
        )));
    }
    if schema.starts_with("pg_") || schema == "information_schema" {
        return Err(StoreError::Config(format!(
            "schema name `{schema}` is reserved by PostgreSQL"
        )));
    }
    Ok(())
}
