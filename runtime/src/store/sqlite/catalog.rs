//! Listing streams: the events' `(stream_type, stream_id, version)` index grouped by
//! stream, a page in key order: each stream's version (its last event's), event count and
//! last recording time. The scan stops once the page is full.

use std::cmp::Ordering;

use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::error::{Operation, StoreError};
use crate::store::sql::{column, stored_u64};
use crate::store::{StreamCatalog, StreamInfo, StreamQuery, StreamRef};

use super::SqliteStore;

/// The columns of a listed stream, then the filter (`?1` type, `?2`/`?3` the cursor,
/// `?4` the limit) spliced in by [`list_sql`].
macro_rules! list_streams {
    ($where:literal) => {
        concat!(
            // With one max() in the query, SQLite takes the bare `recorded_at` from the
            // row holding the maximum: the last event's.
            "SELECT s.stream_type, s.stream_id, max(s.version), count(*), s.recorded_at \
             FROM annals_events s ",
            $where,
            " GROUP BY s.stream_type, s.stream_id ORDER BY s.stream_type, s.stream_id LIMIT ?4"
        )
    };
}

/// One statement per filter shape, each seeking straight to its first row in the
/// primary key. A cursor of another type than the filter is resolved here (SQLite compares
/// text bytewise, as Rust does): before the type, it changes nothing; past it, nothing
/// matches.
fn list_sql(query: &StreamQuery) -> Option<&'static str> {
    Some(match (query.stream_type.as_deref(), &query.after) {
        (None, None) => list_streams!("WHERE ?1 IS NULL AND ?2 IS NULL AND ?3 IS NULL"),
        (Some(_), None) => list_streams!("WHERE s.stream_type = ?1 AND ?2 IS NULL AND ?3 IS NULL"),
        (None, Some(_)) => {
            list_streams!("WHERE ?1 IS NULL AND (s.stream_type, s.stream_id) > (?2, ?3)")
        }
        (Some(t), Some((after_type, _))) => match t.as_bytes().cmp(after_type.as_bytes()) {
            Ordering::Greater => {
                list_streams!("WHERE s.stream_type = ?1 AND ?2 IS NOT NULL AND ?3 IS NOT NULL")
            }
            Ordering::Equal => {
                list_streams!("WHERE s.stream_type = ?1 AND ?2 IS NOT NULL AND s.stream_id > ?3")
            }
            Ordering::Less => return None,
        },
    })
}

impl StreamCatalog for SqliteStore {
    async fn list_streams(&self, query: &StreamQuery) -> Result<Vec<StreamInfo>, StoreError> {
        let Some(sql) = list_sql(query) else {
            return Ok(Vec::new());
        };
        let (after_type, after_id) = query
            .after
            .as_ref()
            .map(|(t, id)| (t.as_str(), id.as_str()))
            .unzip();
        let rows = sqlx::query(sql)
            .bind(query.stream_type.as_deref())
            .bind(after_type)
            .bind(after_id)
            .bind(i64::try_from(query.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::database(Operation::ListStreams, e))?;
        rows.iter().map(stream_info).collect()
    }
}

fn stream_info(row: &SqliteRow) -> Result<StreamInfo, StoreError> {
    let stream_type: String = column(row, 0, "annals_events.stream_type", None)?;
    let stream_id: String = column(row, 1, "annals_events.stream_id", None)?;
    let version = stored_u64(
        column(row, 2, "stream version", None)?,
        "stream version",
        None,
    )?;
    let events = stored_u64(column(row, 3, "event count", None)?, "event count", None)?;
    let updated_at: Option<i64> = column(row, 4, "annals_events.recorded_at", None)?;
    let updated_at = updated_at
        .map(|micros| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).map_err(|e| {
                StoreError::Corrupt {
                    position: None,
                    reason: format!(
                        "recorded_at {micros} of stream {stream_type}/{stream_id}: {e}"
                    ),
                }
            })
        })
        .transpose()?;
    Ok(StreamInfo::new(
        StreamRef::new(&stream_type, &stream_id),
        version,
        events,
        updated_at,
    ))
}
