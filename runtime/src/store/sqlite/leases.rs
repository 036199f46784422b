//! Leases: one per runner name and database file, whichever store handle or process asks.
//!
//! Within a process, every handle on a file shares one table of held names. Across
//! processes, a lease also holds an exclusive lock on a lock file beside the database
//! (`<database>-lease-<hash of the name>`), which the operating system releases when the
//! holder closes it, exits or dies: another process then takes over.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use sha2::Digest as _;
use sqlx::SqlitePool;

use crate::error::{Operation, StoreError};
use crate::store::{validate_runner_name, LeaseStore, LocalLease, LocalLeases};

use super::SqliteStore;

impl LeaseStore for SqliteStore {
    type Lease = LocalLease;

    async fn try_lease(&self, name: &str) -> Result<Option<LocalLease>, StoreError> {
        validate_runner_name(name)?;
        let Some(lease) = self.leases.leases.try_take(name) else {
            return Ok(None);
        };
        let Some(database) = &self.leases.file else {
            return Ok(Some(lease));
        };
        // Dropping `lease` on the way out frees the name in this process again.
        Ok(lock_file(database, name)?.map(|file| lease.holding(file)))
    }
}

/// The leases of one database: the in-process table, and the database file's path when it
/// is a file (leases then also lock files beside it).
#[derive(Debug, Clone, Default)]
pub(super) struct FileLeases {
    leases: LocalLeases,
    file: Option<PathBuf>,
}

/// The leases of the database behind `pool`: shared by every store opened on the same file
/// in this process (two handles on one file must not both run a projection), private to
/// the store for an in-memory database.
pub(super) fn leases_of(pool: &SqlitePool) -> FileLeases {
    let options = pool.connect_options();
    let filename = options.get_filename();
    if filename == Path::new(":memory:") || filename.as_os_str().is_empty() {
        return FileLeases::default();
    }
    // The same file under another path (relative, through a link) is the same database.
    let key = std::fs::canonicalize(filename).unwrap_or_else(|_| filename.to_owned());
    static BY_FILE: OnceLock<Mutex<HashMap<PathBuf, LocalLeases>>> = OnceLock::new();
    let leases = BY_FILE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.clone())
        .or_default()
        .clone();
    FileLeases {
        leases,
        file: Some(key),
    }
}

/// Locks the lock file of `name` beside `database`: `None` when another process holds it.
fn lock_file(database: &Path, name: &str) -> Result<Option<File>, StoreError> {
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut suffix = String::with_capacity(32);
    for byte in &digest[..16] {
        // Writing to a String cannot fail.
        let _ = write!(suffix, "{byte:02x}");
    }
    let mut path = database.as_os_str().to_owned();
    path.push(format!("-lease-{suffix}"));
    let failed = |e: std::io::Error| StoreError::database(Operation::Lease, e);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(failed(e)),
    }
}
