//! Wake-ups: one `LISTEN` connection per store feeds every live runner.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::watch;

use crate::error::{Operation, StoreError};
use crate::store::WakeUps;

use super::log::PgCursor;

use super::PgStore;

impl WakeUps for PgStore {
    async fn wait_for_events<'a>(
        &'a self,
        after: &'a PgCursor,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        self.wait_after(after, timeout).await
    }
}

impl PgStore {
    /// The wake-ups of this store's notification listener, starting it if none runs.
    pub(super) async fn wake_ups(&self) -> Result<watch::Receiver<u64>, StoreError> {
        let mut slot = self.inner.wake_ups.lock().await;
        if let Some(wake_ups) = slot.as_ref() {
            if wake_ups.has_changed().is_ok() {
                return Ok(wake_ups.clone());
            }
        }
        // A pool of its own, so the listener never takes one of the store's connections.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with((*self.inner.pool.connect_options()).clone());
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(|e| StoreError::database(Operation::WaitForEvents, e))?;
        listener
            .listen(&self.inner.channel)
            .await
            .map_err(|e| StoreError::database(Operation::WaitForEvents, e))?;
        let (sender, receiver) = watch::channel(0);
        tokio::spawn(follow_notifications(listener, sender));
        *slot = Some(receiver.clone());
        Ok(receiver)
    }
}

/// Counts notifications (and reconnections, after which some may have been missed) until
/// the store is dropped or the listener fails.
async fn follow_notifications(mut listener: PgListener, wake_ups: watch::Sender<u64>) {
    loop {
        tokio::select! {
            () = wake_ups.closed() => return,
            received = listener.try_recv() => match received {
                // `None`: the connection was lost and re-established; appends committed
                // meanwhile notified no one.
                Ok(_) => wake_ups.send_modify(|n| *n = n.wrapping_add(1)),
                // Dropping the sender wakes the waiters; the next wait starts a new listener.
                Err(_) => return,
            },
        }
    }
}
