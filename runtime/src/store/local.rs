//! What the in-process stores (memory, SQLite) share: leases and wake-ups within one
//! process.

use std::future::Future;

use crate::error::StoreError;

/// A projection lease held within this process (memory store) or, on a SQLite file, also
/// across processes (an exclusive lock on a lock file beside the database, released by the
/// operating system when the holder exits or dies); released on drop.
#[derive(Debug)]
pub struct LocalLease {
    leases: LocalLeases,
    name: String,
    /// The locked lock file, for a lease that spans processes; closing it unlocks it.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    file: Option<std::fs::File>,
}

impl LocalLease {
    /// The same lease, also holding `file`'s lock until dropped.
    #[cfg(feature = "sqlite")]
    pub(crate) fn holding(mut self, file: std::fs::File) -> Self {
        self.file = Some(file);
        self
    }
}

impl Drop for LocalLease {
    fn drop(&mut self) {
        self.leases.held().remove(&self.name);
    }
}

/// The projection names leased in this process, shared by a store's clones.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalLeases(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl LocalLeases {
    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lease of `name`, unless something in this process holds it.
    pub(crate) fn try_take(&self, name: &str) -> Option<LocalLease> {
        self.held().insert(name.to_owned()).then(|| LocalLease {
            leases: self.clone(),
            name: name.to_owned(),
            file: None,
        })
    }
}

/// Waits until `appended` fires or `timeout` passes, unless `head` is already past `after`.
/// Subscribes before reading the head, so an append between the two is not missed.
pub(crate) async fn wait_for_append(
    appended: &tokio::sync::Notify,
    after: u64,
    timeout: std::time::Duration,
    head: impl Future<Output = Result<u64, StoreError>>,
) -> Result<(), StoreError> {
    let notified = std::pin::pin!(appended.notified());
    let mut notified = notified;
    notified.as_mut().enable();
    if head.await? > after {
        return Ok(());
    }
    let _ = tokio::time::timeout(timeout, notified).await;
    Ok(())
}
