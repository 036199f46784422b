//! Leases: one per runner name and database file within this process, whichever store
//! handle asks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use sqlx::SqlitePool;

use crate::error::StoreError;
use crate::store::{validate_runner_name, LeaseStore, LocalLease, LocalLeases};

use super::SqliteStore;

impl LeaseStore for SqliteStore {
    type Lease = LocalLease;

    async fn try_lease(&self, name: &str) -> Result<Option<LocalLease>, StoreError> {
        validate_runner_name(name)?;
        Ok(self.leases.try_take(name))
    }
}

/// The leases of the database behind `pool`: shared by every store opened on the same file
/// in this process (two handles on one file must not both run a projection), private to
/// the store for an in-memory database.
pub(super) fn leases_of(pool: &SqlitePool) -> LocalLeases {
    let options = pool.connect_options();
    let filename = options.get_filename();
    if filename == Path::new(":memory:") || filename.as_os_str().is_empty() {
        return LocalLeases::default();
    }
    // The same file under another path (relative, through a link) is the same database.
    let key = std::fs::canonicalize(filename).unwrap_or_else(|_| filename.to_owned());
    static BY_FILE: OnceLock<Mutex<HashMap<PathBuf, LocalLeases>>> = OnceLock::new();
    BY_FILE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_default()
        .clone()
}
