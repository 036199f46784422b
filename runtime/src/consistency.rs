//! Read-your-writes: waiting until a runner has processed a position.

use std::time::Duration;

use crate::error::StoreError;
use crate::store::{validate_runner_name, CheckpointStore};

/// Waits until runner `name` (a projection's `NAME`) has processed the event at
/// `position`, so that a query right after a command sees its effect: pass
/// [`Executed::position`](crate::Executed::position).
///
/// Returns `Ok(true)` once the runner's committed checkpoint is at or past `position`, and
/// `Ok(false)` if `timeout` passes first (the runner is behind, stopped, or was never
/// started). Position 0 (a command that appended nothing) is always reached. The
/// checkpoint is polled, starting at 2 ms and backing off to 50 ms, so the wait costs one
/// small query per poll.
///
pub async fn wait_for_checkpoint<S: CheckpointStore>(
    store: &S,
    name: &str,
    position: u64,
    timeout: Duration,
) -> Result<bool, StoreError> {
    validate_runner_name(name)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if store.checkpoint_reached(name, position).await? {
            return Ok(true);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
