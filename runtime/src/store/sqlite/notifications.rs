//! Wake-ups: appends of this process wake its live runners.

use std::time::Duration;

use crate::error::StoreError;
use crate::store::{wait_for_append, EventLog, WakeUps};

use super::SqliteStore;

impl WakeUps for SqliteStore {
    async fn wait_for_events<'a>(
        &'a self,
        after: &'a u64,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        // Writers in other processes do not notify: the timeout bounds how late they are seen.
        wait_for_append(&self.appended, *after, timeout, self.head()).await
    }
}
