//! The embedded schema and its migrations; the WAL journal.

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Executor;

use crate::error::{BoxError, Operation, StoreError};
use crate::store::now_micros;
use crate::store::sql::migrate::{AppliedMigration, Migration, MigrationTarget};

use super::micros;
use crate::store::sql::column;

/// The schema, in order. Append new files; never edit an applied one.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "checkpoints",
        sql: include_str!("../../../migrations/sqlite/0002_checkpoints.sql"),
    },
    Migration {
        version: 3,
        name: "checkpoint_cursor",
        sql: include_str!("../../../migrations/sqlite/0003_checkpoint_cursor.sql"),
    },
    Migration {
        version: 4,
        name: "parked",
        sql: include_str!("../../../migrations/sqlite/0004_parked.sql"),
    },
    Migration {
        version: 5,
        name: "fingerprints_and_version_checks",
        sql: include_str!("../../../migrations/sqlite/0005_fingerprints_and_version_checks.sql"),
    },
    Migration {
        version: 6,
        name: "workflows",
        sql: include_str!("../../../migrations/sqlite/0006_workflows.sql"),
    },
    Migration {
        version: 7,
        name: "stream_versions_from_events",
        sql: include_str!("../../../migrations/sqlite/0007_stream_versions_from_events.sql"),
    },
];

impl MigrationTarget for SqliteConnection {
    async fn applied(&mut self) -> Result<Vec<AppliedMigration>, StoreError> {
        self.execute(
            "CREATE TABLE IF NOT EXISTS annals_migrations (
                version    INTEGER PRIMARY KEY,
                name       TEXT    NOT NULL,
                applied_at INTEGER NOT NULL
            ) STRICT",
        )
        .await
        .map_err(|e| StoreError::database(Operation::Migrate, e))?;
        let rows = sqlx::query("SELECT version, name FROM annals_migrations ORDER BY version")
            .fetch_all(&mut *self)
            .await
            .map_err(|e| StoreError::database(Operation::Migrate, e))?;
        rows.iter()
            .map(|row| {
                let version: i64 = column(row, 0, "annals_migrations.version", None)?;
                let version = u32::try_from(version).map_err(|_| StoreError::Corrupt {
                    position: None,
                    reason: format!("annals_migrations records version {version}"),
                })?;
                Ok(AppliedMigration {
                    version,
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
        // Several statements, run once: kept out of the connection's statement cache.
        sqlx::query(migration.sql)
            .persistent(false)
            .execute(&mut *self)
            .await
            .map_err(failed)?;
        sqlx::query(
            "INSERT INTO annals_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
        )
        .bind(i64::from(migration.version))
        .bind(migration.name)
        .bind(micros(now_micros()))
        .execute(&mut *self)
        .await
        .map_err(failed)?;
        Ok(())
    }
}

/// Switches the database file to the WAL journal unless it is in it already.
///
/// The mode is stored in the file, so this runs once, not on every new connection of the
/// pool: changing it takes a lock that SQLite's busy timeout does not wait for, which would
/// fail connections opened while another process writes.
pub(super) async fn enable_wal(pool: &SqlitePool) -> Result<(), BoxError> {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
        .fetch_one(pool)
        .await?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(format!("the journal mode stayed `{mode}` instead of switching to `wal`").into())
    }
}
