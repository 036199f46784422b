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
/// For every projection of a runner set at once, see [`wait_for_checkpoints`].
pub async fn wait_for_checkpoint<S: CheckpointStore>(
    store: &S,
    name: &str,
    position: u64,
    timeout: Duration,
) -> Result<bool, StoreError> {
    wait_for_checkpoints(store, &[name], position, timeout).await
}

/// Waits until every runner of `names` has processed the event at `position`: for a
/// query that reads several read models (or any of a service's projections) right after a
/// command. One deadline for all of them.
///
/// Returns `Ok(true)` once each runner's committed checkpoint is at or past `position`,
/// `Ok(false)` if `timeout` passes first (a runner's [`status`](crate::ProjectionRunner::status)
/// then says which is behind). Every name is checked before the first poll: an invalid one
/// is an error, not a timeout. Runners already there are not polled again; the others are
/// polled like [`wait_for_checkpoint`] does.
///
/// ```no_run
/// # async fn example(store: annals::SqliteStore, position: u64) -> Result<(), annals::StoreError> {
/// use std::time::Duration;
/// let names = ["balances", "statements", "audit"];
/// if !annals::wait_for_checkpoints(&store, &names, position, Duration::from_secs(2)).await? {
///     // Not every read model has the command's events yet: answer with a retry hint.
/// }
/// # Ok(())
/// # }
/// ```
pub async fn wait_for_checkpoints<S: CheckpointStore>(
    store: &S,
    names: &[&str],
    position: u64,
    timeout: Duration,
) -> Result<bool, StoreError> {
    for name in names {
        validate_runner_name(name)?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    let mut behind: Vec<&str> = names.to_vec();
    loop {
        let mut still = Vec::with_capacity(behind.len());
        for name in behind {
            if !store.checkpoint_reached(name, position).await? {
                still.push(name);
            }
        }
        behind = still;
        if behind.is_empty() {
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
