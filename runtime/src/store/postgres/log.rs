//! The log in (transaction id, position) order, read below the horizon of the oldest
//! running transaction: what runners follow.

use std::fmt;
use std::time::Duration;

use crate::error::{Operation, StoreError};
use crate::store::sql::{column, stored_u64};
use crate::store::{validate_runner_name, Batch, Checkpoint, Cursor, EventFilter};

use super::reads::decode_event;
use super::{to_i64, PgStore};

/// Where a reader of a [`PgStore`]'s log stands: the (transaction id, position) of the last
/// event it passed, in the log's order (see the module's "Global order" section).
///
/// Its checkpoint ([`Checkpoint`]) keeps the highest position passed as `position` (status
/// and lag read it) and the pair as `cursor` (`"<transaction id>:<position>"`). A
/// checkpoint holding a position alone (written before annals ordered the log this way)
/// reads as "every event up to that position": the reader goes on with the events above it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PgCursor {
    tx_id: u64,
    position: u64,
    /// Events at or below this position were passed before the log had this order.
    floor: u64,
    /// The highest position passed.
    seen: u64,
}

impl PgCursor {
    /// The highest position passed.
    pub fn highest_position(&self) -> u64 {
        self.seen
    }

    /// Whether the event at `position`, written by transaction `tx_id`, is passed.
    fn passed(&self, tx_id: u64, position: u64) -> bool {
        position <= self.floor || (tx_id, position) <= (self.tx_id, self.position)
    }
}

impl fmt::Display for PgCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tx_id, self.position)?;
        if self.floor > 0 {
            write!(f, ":{}", self.floor)?;
        }
        Ok(())
    }
}

impl Cursor for PgCursor {
    fn to_checkpoint(&self) -> Checkpoint {
        if *self == PgCursor::default() {
            return Checkpoint::default();
        }
        Checkpoint::with_cursor(self.seen, self.to_string())
    }

    fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self, StoreError> {
        let seen = checkpoint.position;
        let Some(cursor) = &checkpoint.cursor else {
            return Ok(PgCursor {
                floor: seen,
                seen,
                ..PgCursor::default()
            });
        };
        let parts: Vec<Option<u64>> = cursor.split(':').map(|n| n.parse().ok()).collect();
        match parts[..] {
            [Some(tx_id), Some(position)] => Ok(PgCursor {
                tx_id,
                position,
                floor: 0,
                seen,
            }),
            [Some(tx_id), Some(position), Some(floor)] => Ok(PgCursor {
                tx_id,
                position,
                floor,
                seen,
            }),
            _ => Err(StoreError::Corrupt {
                position: None,
                reason: format!(
                    "checkpoint cursor `{cursor}` is not a PostgreSQL log cursor \
                     (`<transaction id>:<position>`): was the runner's name used with another \
                     source?"
                ),
            }),
        }
    }
}

/// How soon a live reader looks again when committed events wait behind an older open
/// transaction.
const HELD_BACK_POLL: Duration = Duration::from_millis(20);

/// How often [`PgStore::settle`] looks whether the transactions it waits for have ended.
const SETTLE_POLL: Duration = Duration::from_millis(5);

/// A transaction id read back as text.
fn tx_id(text: &str) -> Result<u64, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt {
        position: None,
        reason: format!("transaction id `{text}` is not a number"),
    })
}

impl PgStore {
    /// [`EventLog::read_log`](crate::store::EventLog::read_log).
    pub(super) async fn read_log_after(
        &self,
        after: &PgCursor,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Batch<PgCursor>, StoreError> {
        const OP: Operation = Operation::ReadAll;
        let mut types: Vec<&str> = Vec::new();
        if let Some(wanted) = &filter.event_types {
            types = wanted.iter().map(String::as_str).collect();
            types.sort_unstable();
            types.dedup();
            if types.is_empty() {
                return Ok(Batch::new(Vec::new(), *after));
            }
        }
        if limit == 0 {
            return Ok(Batch::new(Vec::new(), *after));
        }
        let sql = &self.inner.sql;
        let query = match &filter.event_types {
            None => sqlx::query(&sql.read_log),
            Some(_) => sqlx::query(&sql.read_log_types),
        };
        let mut query = query
            .bind(after.tx_id.to_string())
            .bind(to_i64(after.position, "position")?)
            .bind(to_i64(after.floor, "position")?)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        if filter.event_types.is_some() {
            query = query.bind(&types[..]);
        }
        let rows = query
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(OP, e))?;
        let Some(first) = rows.first() else {
            return Err(StoreError::Corrupt {
                position: None,
                reason: "a log read returned no horizon".to_owned(),
            });
        };
        let horizon: String = column(first, 14, "horizon", None)?;
        let horizon = tx_id(&horizon)?;
        let mut events = Vec::with_capacity(rows.len());
        let mut end = *after;
        for row in &rows {
            let Some(tx): Option<String> = column(row, 13, "tx_id", None)? else {
                continue;
            };
            let event = decode_event(row)?;
            end.tx_id = tx_id(&tx)?;
            end.position = event.meta.position;
            end.seen = end.seen.max(event.meta.position);
            events.push(event);
        }
        if events.len() < limit {
            // Every matching event below the horizon is read: move past the rest too (the
            // events the filter skipped), so the lag reads true; past an old-style floor at
            // once, so its events are not scanned again.
            let tail: i64 = sqlx::query_scalar(&sql.log_tail)
                .bind(horizon.to_string())
                .fetch_one(&self.inner.pool)
                .await
                .map_err(|e| StoreError::database(OP, e))?;
            let tail = stored_u64(tail, "position", None)?;
            let leaves_floor = after.tx_id == 0 && after.floor > 0;
            if !events.is_empty() || tail > end.seen || leaves_floor {
                end = PgCursor {
                    tx_id: horizon.max(end.tx_id),
                    position: 0,
                    floor: after.floor,
                    seen: end.seen.max(tail),
                };
            }
        }
        Ok(Batch::new(events, end))
    }

    /// [`WakeUps::wait_for_events`](crate::store::WakeUps::wait_for_events).
    pub(super) async fn wait_after(
        &self,
        after: &PgCursor,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let mut wake_ups = self.wake_ups().await?;
        // Mark what was seen before looking: a commit after the look notifies the listener,
        // which is already listening, and changes the value.
        wake_ups.borrow_and_update();
        let (readable, held_back): (bool, bool) = sqlx::query_as(&self.inner.sql.log_pending)
            .bind(after.tx_id.to_string())
            .bind(to_i64(after.position, "position")?)
            .bind(to_i64(after.floor, "position")?)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(Operation::WaitForEvents, e))?;
        if readable {
            return Ok(());
        }
        if held_back {
            // Committed, but an older transaction is still open: its end (anywhere on the
            // server) notifies no one here, so look again soon.
            tokio::time::sleep(timeout.min(HELD_BACK_POLL)).await;
            return Ok(());
        }
        // A closed channel (the listener stopped) returns at once: the caller reads again and
        // its next wait starts a new listener.
        let _ = tokio::time::timeout(timeout, wake_ups.changed()).await;
        Ok(())
    }

    /// [`EventLog::settle`](crate::store::EventLog::settle): waits until every transaction
    /// that started before the call has ended, so that whatever committed before it is
    /// below the horizon.
    pub(super) async fn settle_log(&self) -> Result<(), StoreError> {
        const OP: Operation = Operation::ReadAll;
        let target: String = sqlx::query_scalar(&self.inner.sql.settle_target)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(OP, e))?;
        loop {
            let settled: bool = sqlx::query_scalar(&self.inner.sql.settled)
                .bind(&target)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(|e| StoreError::database(OP, e))?;
            if settled {
                return Ok(());
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// [`CheckpointStore::checkpoint_reached`](crate::store::CheckpointStore::checkpoint_reached).
    pub(super) async fn reached(&self, name: &str, position: u64) -> Result<bool, StoreError> {
        validate_runner_name(name)?;
        if position == 0 {
            return Ok(true);
        }
        let row = sqlx::query(&self.inner.sql.reached)
            .bind(name)
            .bind(to_i64(position, "position")?)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(Operation::ReadCheckpoint, e))?;
        let Some(row) = row else {
            return Ok(false);
        };
        let stored: i64 = column(&row, 0, "annals_checkpoints.position", None)?;
        let checkpoint = Checkpoint {
            position: stored_u64(stored, "checkpoint", None)?,
            cursor: column(&row, 1, "annals_checkpoints.cursor", None)?,
        };
        let event_tx: Option<String> = column(&row, 2, "tx_id", None)?;
        match (&checkpoint.cursor, event_tx) {
            (Some(_), Some(tx)) => {
                Ok(PgCursor::from_checkpoint(&checkpoint)?.passed(tx_id(&tx)?, position))
            }
            // A runner of another source, or no such event: compare positions.
            _ => Ok(checkpoint.position >= position),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_through_checkpoints() {
        let cursor = PgCursor {
            tx_id: 812,
            position: 40,
            floor: 0,
            seen: 44,
        };
        let checkpoint = cursor.to_checkpoint();
        assert_eq!(checkpoint, Checkpoint::with_cursor(44, "812:40"));
        assert_eq!(PgCursor::from_checkpoint(&checkpoint).unwrap(), cursor);
        let floored = PgCursor { floor: 9, ..cursor };
        assert_eq!(
            PgCursor::from_checkpoint(&floored.to_checkpoint()).unwrap(),
            floored
        );
        assert_eq!(PgCursor::default().to_checkpoint(), Checkpoint::default());
        assert_eq!(
            PgCursor::from_checkpoint(&Checkpoint::default()).unwrap(),
            PgCursor::default()
        );
        // A position alone: everything up to it was passed.
        let old = PgCursor::from_checkpoint(&Checkpoint::at(30)).unwrap();
        assert!(old.passed(u64::MAX, 30));
        assert!(!old.passed(1, 31));
        assert!(PgCursor::from_checkpoint(&Checkpoint::with_cursor(1, "shard-7")).is_err());
    }

    #[test]
    fn passed_follows_the_log_order() {
        let cursor = PgCursor {
            tx_id: 100,
            position: 7,
            floor: 0,
            seen: 9,
        };
        assert!(
            cursor.passed(99, 9),
            "an older transaction's later position"
        );
        assert!(cursor.passed(100, 7));
        assert!(!cursor.passed(100, 8));
        assert!(
            !cursor.passed(101, 3),
            "a younger transaction's earlier position"
        );
    }
}
