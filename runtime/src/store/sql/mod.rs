//! What the SQL stores share: statements, row decoding, range bounds and the migration
//! runner. Each dialect keeps only what differs.

use std::fmt;
use std::sync::Arc;

use super::StreamRange;
use crate::error::StoreError;

pub(crate) mod migrate;

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
