//! Leases: held within this process.

use crate::error::StoreError;
use crate::store::{validate_runner_name, LeaseStore, LocalLease};

use super::SqliteStore;

impl LeaseStore for SqliteStore {
    type Lease = LocalLease;

    async fn try_lease(&self, name: &str) -> Result<Option<LocalLease>, StoreError> {
        validate_runner_name(name)?;
        Ok(self.leases.try_take(name))
    }
}
