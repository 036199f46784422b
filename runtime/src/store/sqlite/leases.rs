//! Leases: held within this process.

use crate::error::StoreError;
use crate::store::{LeaseStore, LocalLease};

use super::SqliteStore;

impl LeaseStore for SqliteStore {
    type Lease = LocalLease;

    async fn try_lease(&self, name: &str) -> Result<Option<LocalLease>, StoreError> {
        Ok(self.leases.try_take(name))
    }
}
