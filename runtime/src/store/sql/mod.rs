//! What the SQL stores share: statements, row decoding, range bounds and the migration
//! runner. Each dialect keeps only what differs.

use std::fmt;
use std::sync::Arc;

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{AppendOutcome, Snapshot, StreamEvent, StreamRange, StreamRef};
use crate::error::StoreError;

pub(crate) mod migrate;
pub(crate) mod parked;

/// A statement assembled at run time from constant text and quoted identifiers (never from
/// values, which are bound): the only dynamic SQL the stores hand to sqlx.
#[derive(Debug, Clone)]
pub(crate) struct Sql(Arc<str>);

impl From<String> for Sql {
    fn from(sql: String) -> Self {
        Sql(sql.into())
    }
}

impl sqlx::SqlSafeStr for &Sql {
    fn into_sql_str(self) -> sqlx::SqlStr {
        sqlx::AssertSqlSafe(Arc::clone(&self.0)).into_sql_str()
    }
}

/// A range's inclusive version bounds as SQL integers; `None` when it selects nothing.
/// Versions are stored as `i64`, so bounds beyond it are clamped.
pub(crate) fn version_bounds(range: &StreamRange) -> Option<(i64, i64)> {
    let from = i64::try_from(range.from.max(1)).ok()?;
    let to = range
        .to
        .map_or(i64::MAX, |to| i64::try_from(to).unwrap_or(i64::MAX));
    (from <= to).then_some((from, to))
}

/// A range's row limit as a SQL integer (`i64::MAX` for none).
pub(crate) fn row_limit(range: &StreamRange) -> i64 {
    range
        .limit
        .map_or(i64::MAX, |limit| i64::try_from(limit).unwrap_or(i64::MAX))
}

/// A stored count (position, version) read back from a signed SQL integer; a negative one
/// means the row is corrupt.
pub(crate) fn stored_u64(value: i64, what: &str, position: Option<u64>) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        position,
        reason: format!("{what} {value} is negative"),
    })
}

/// An event's stored schema version read back from a SQL integer.
pub(crate) fn stored_event_version<T>(value: T, position: Option<u64>) -> Result<u32, StoreError>
where
    T: TryInto<u32> + Copy + fmt::Display,
{
    value.try_into().map_err(|_| StoreError::Corrupt {
        position,
        reason: format!("event version {value} is out of range"),
    })
}

/// The stored columns of an event, in the order both stores select them (for errors).
pub(crate) const EVENT_COLUMN_NAMES: [&str; 13] = [
    "position",
    "stream_type",
    "stream_id",
    "version",
    "event_type",
    "event_version",
    "event_id",
    "command_id",
    "correlation_id",
    "causation_id",
    "recorded_at",
    "headers",
    "payload",
];

/// Column `index` of `row`, with a decoding failure (wrong type, bad UTF-8, NULL) reported as
/// a corrupt record naming the column.
pub(crate) fn column<'r, R, T>(
    row: &'r R,
    index: usize,
    name: &str,
    position: impl Into<Option<u64>>,
) -> Result<T, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(index).map_err(|e| StoreError::Corrupt {
        position: position.into(),
        reason: match e {
            sqlx::Error::ColumnDecode { source, .. } => format!("column {name}: {source}"),
            other => format!("column {name}: {other}"),
        },
    })
}

/// A load-path row: position, version, event type, event version, payload. `V` is the
/// dialect's integer type for event versions.
pub(crate) fn stream_event<'r, R, V>(row: &'r R) -> Result<StreamEvent, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    V: Decode<'r, R::Database> + Type<R::Database> + TryInto<u32> + Copy + fmt::Display,
{
    let position = stored_u64(column(row, 0, "position", None)?, "position", None)?;
    let version = column(row, 1, "version", position)?;
    let event_version: V = column(row, 3, "event_version", position)?;
    Ok(StreamEvent::new(
        position,
        stored_u64(version, "version", Some(position))?,
        column(row, 2, "event_type", position)?,
        stored_event_version(event_version, Some(position))?,
        column(row, 4, "payload", position)?,
    ))
}

/// A command's recorded outcome: first version, last version, last position, fingerprint
/// (`NULL` for records written before fingerprints were stored).
pub(crate) fn command_outcome<'r, R>(row: &'r R) -> Result<AppendOutcome, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    let number = |index, name| -> Result<u64, StoreError> {
        stored_u64(column(row, index, name, None)?, name, None)
    };
    Ok(AppendOutcome::new(
        number(0, "first_version")?,
        number(1, "last_version")?,
        number(2, "last_position")?,
    )
    .with_fingerprint(column(row, 3, "fingerprint", None)?)
    .into_duplicate())
}

/// A snapshot row: stream version, snapshot schema version (the dialect's integer `V`),
/// JSON state.
pub(crate) fn snapshot<'r, R, V>(row: &'r R, stream: StreamRef<'_>) -> Result<Snapshot, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    V: Decode<'r, R::Database> + Type<R::Database> + TryInto<u32> + Copy + fmt::Display,
{
    let version: i64 = column(row, 0, "version", None)?;
    let snapshot_version: V = column(row, 1, "snapshot_version", None)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        position: None,
        reason: format!("snapshot of {stream} at version {version}: {reason}"),
    };
    Ok(Snapshot::new(
        u64::try_from(version).map_err(|_| corrupt("the version is negative".to_owned()))?,
        snapshot_version.try_into().map_err(|_| {
            corrupt(format!(
                "snapshot version {snapshot_version} is out of range"
            ))
        })?,
        column(row, 2, "state", None)?,
    ))
}

/// Column `index` of an event row selected in [`EVENT_COLUMN_NAMES`] order.
pub(crate) fn event_column<'r, R, T>(
    row: &'r R,
    index: usize,
    position: u64,
) -> Result<T, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    column(row, index, EVENT_COLUMN_NAMES[index], position)
}

/// A count (version, position) headed for a signed SQL integer.
pub(crate) fn to_i64(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}
