//! The embedded schema migration runner shared by the SQL stores.
//!
//! Each backend embeds its SQL files as an ordered list of [`Migration`]s and implements
//! [`MigrationTarget`] on a connection that already holds the backend's migration lock (a
//! write transaction, an advisory lock). [`migrate`] then decides what to run: the versions
//! recorded in `annals_migrations` must be known to this build under the same names, and
//! whatever is missing is applied in version order.

use std::fmt;
use std::future::Future;

use crate::error::StoreError;

/// One embedded schema change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Orders the migrations; recorded once applied. Starts at 1, increasing.
    pub(crate) version: u32,
    /// Short name (the file name without number and extension), recorded beside the version.
    pub(crate) name: &'static str,
    /// The SQL, possibly several statements.
    pub(crate) sql: &'static str,
}

/// A migration recorded as applied in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppliedMigration {
    /// Its version.
    pub(crate) version: u32,
    /// The name it was recorded under.
    pub(crate) name: String,
}

/// A database connection, already holding the backend's migration lock, that migrations run on.
///
/// The futures are `Send` so that opening a store can be spawned.
pub(crate) trait MigrationTarget: Send {
    /// Creates the `annals_migrations` table if missing and lists what it records.
    fn applied(&mut self)
        -> impl Future<Output = Result<Vec<AppliedMigration>, StoreError>> + Send;

    /// Runs one migration's SQL and records it in `annals_migrations`.
    fn apply(
        &mut self,
        migration: &Migration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Brings a database's schema up to the last of `known`; returns how many were applied.
///
/// The caller commits (or releases its lock) afterwards; on error it rolls back.
pub(crate) async fn migrate<T: MigrationTarget>(
    target: &mut T,
    known: &[Migration],
) -> Result<usize, StoreError> {
    let applied = target.applied().await?;
    let pending = pending(known, &applied)?;
    for migration in &pending {
        target.apply(migration).await?;
    }
    Ok(pending.len())
}

/// The migrations of `known` that `applied` lacks, in version order.
///
/// Refuses a database that records a version this build does not know (a newer annals
/// migrated it) or records a known version under another name (it was migrated by a
/// different schema history).
pub(crate) fn pending<'m>(
    known: &'m [Migration],
    applied: &[AppliedMigration],
) -> Result<Vec<&'m Migration>, StoreError> {
    let latest_known = known.last().map_or(0, |m| m.version);
    if let Some(newest) = applied.iter().map(|a| a.version).max() {
        if newest > latest_known {
            return Err(StoreError::SchemaTooNew {
                found: newest,
                known: latest_known,
            });
        }
    }
    for recorded in applied {
        match known.iter().find(|m| m.version == recorded.version) {
            Some(m) if m.name == recorded.name => {}
            Some(m) => {
                return Err(StoreError::Migration {
                    version: recorded.version,
                    source: Box::new(HistoryMismatch {
                        recorded: recorded.name.clone(),
                        expected: Some(m.name),
                    }),
                })
            }
            None => {
                return Err(StoreError::Migration {
                    version: recorded.version,
                    source: Box::new(HistoryMismatch {
                        recorded: recorded.name.clone(),
                        expected: None,
                    }),
                })
            }
        }
    }
    Ok(known
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .collect())
}

/// The database's recorded migration history differs from this build's.
#[derive(Debug)]
struct HistoryMismatch {
    recorded: String,
    expected: Option<&'static str>,
}

impl fmt::Display for HistoryMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.expected {
            Some(expected) => write!(
                f,
                "the database records it as `{}`, this build names it `{expected}`",
                self.recorded.escape_debug()
            ),
            None => write!(
                f,
                "the database records it as `{}`, this build has no such migration",
                self.recorded.escape_debug()
            ),
        }
    }
}

impl std::error::Error for HistoryMismatch {}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[Migration] = &[
        Migration {
            version: 1,
            name: "events",
            sql: "",
        },
        Migration {
            version: 2,
            name: "snapshots",
            sql: "",
        },
        Migration {
            version: 3,
            name: "checkpoints",
            sql: "",
        },
    ];

    fn applied(list: &[(u32, &str)]) -> Vec<AppliedMigration> {
        list.iter()
            .map(|&(version, name)| AppliedMigration {
                version,
                name: name.to_owned(),
            })
            .collect()
    }

    fn versions(pending: &[&Migration]) -> Vec<u32> {
        pending.iter().map(|m| m.version).collect()
    }

    #[test]
    fn a_fresh_database_gets_everything_in_order() {
        assert_eq!(versions(&pending(KNOWN, &[]).unwrap()), [1, 2, 3]);
    }

    #[test]
    fn applied_migrations_are_skipped() {
        let done = applied(&[(1, "events"), (2, "snapshots")]);
        assert_eq!(versions(&pending(KNOWN, &done).unwrap()), [3]);
        let all = applied(&[(1, "events"), (2, "snapshots"), (3, "checkpoints")]);
        assert!(pending(KNOWN, &all).unwrap().is_empty());
    }

    #[test]
    fn a_hole_in_the_history_is_filled() {
        let done = applied(&[(1, "events"), (3, "checkpoints")]);
        assert_eq!(versions(&pending(KNOWN, &done).unwrap()), [2]);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let done = applied(&[(1, "events"), (7, "future")]);
        let err = pending(KNOWN, &done).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 7, known: 3 }),
            "{err:?}"
        );
    }

    #[test]
    fn a_renamed_migration_is_refused() {
        let done = applied(&[(1, "events"), (2, "other")]);
        let err = pending(KNOWN, &done).unwrap_err();
        let StoreError::Migration { version, source } = &err else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(*version, 2);
        assert_eq!(
            source.to_string(),
            "the database records it as `other`, this build names it `snapshots`"
        );
    }

    #[test]
    fn an_unknown_older_version_is_refused() {
        let known = &KNOWN[1..];
        let err = pending(known, &applied(&[(1, "events")])).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { version: 1, .. }),
            "{err:?}"
        );
    }
}
