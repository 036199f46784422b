//! Parked events as rows: what both SQL stores share.

use sqlx::{ColumnIndex, Decode, Row, Type};
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::store::{ParkedEvent, RecordedEvent, Resolution};

use super::{column, stored_u64};

/// A parked event's stored JSON.
pub(crate) fn event_json(event: &RecordedEvent) -> Result<String, StoreError> {
    serde_json::to_string(event).map_err(|e| StoreError::Corrupt {
        position: Some(event.meta.position),
        reason: format!("cannot serialize the event to park it: {e}"),
    })
}

/// A parked row: id, runner, event (JSON text), error, attempts, resolution, with the
/// times passed in already decoded (their types differ per dialect).
pub(crate) fn parked_event<'r, R>(
    row: &'r R,
    parked_at: OffsetDateTime,
) -> Result<ParkedEvent, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: i64 = column(row, 0, "annals_parked.id", None)?;
    let id = stored_u64(id, "parked id", None)?;
    let event: String = column(row, 2, "annals_parked.event", None)?;
    let event: RecordedEvent = serde_json::from_str(&event).map_err(|e| StoreError::Corrupt {
        position: None,
        reason: format!("parked entry {id} holds an event that does not read back: {e}"),
    })?;
    let attempts: i32 = column(row, 4, "annals_parked.attempts", None)?;
    let resolution: Option<String> = column(row, 5, "annals_parked.resolution", None)?;
    let resolution = match resolution {
        None => None,
        Some(name) => Some(Resolution::parse(&name).ok_or_else(|| StoreError::Corrupt {
            position: None,
            reason: format!("parked entry {id} has resolution `{name}`"),
        })?),
    };
    Ok(ParkedEvent {
        id,
        runner: column(row, 1, "annals_parked.runner", None)?,
        event,
        error: column(row, 3, "annals_parked.error", None)?,
        attempts: u32::try_from(attempts).map_err(|_| StoreError::Corrupt {
            position: None,
            reason: format!("parked entry {id} has {attempts} attempts"),
        })?,
        parked_at,
        resolution,
    })
}

/// A count of attempts as stored.
pub(crate) fn attempts(attempts: u32) -> i32 {
    i32::try_from(attempts).unwrap_or(i32::MAX)
}
