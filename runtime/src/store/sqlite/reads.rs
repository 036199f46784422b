//! Stream reads, the load path and the global log, each walking an index in the order it
//! returns; row decoding.

use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Operation, StoreError};
use crate::store::sql::{
    column, command_outcome, event_column, row_limit, stored_event_version, stored_u64,
    stream_event, version_bounds, Sql, EVENT_COLUMN_NAMES,
};
use crate::store::{
    load_through_read_stream, read_log_by_position, validate_stream, AppendOutcome, Batch,
    CommitMeta, EventFilter, EventLog, EventMeta, EventStore, ExpectedVersion, Headers, NewEvent,
    RecordedEvent, StreamEvent, StreamRange, StreamRef,
};

use super::{micros, SqliteStore};

/// Above this many event types, a filtered global read scans positions instead of merging
/// one index range per type (a compound select is limited to 500 terms).
const MAX_MERGED_TYPES: usize = 16;

/// The columns [`decode_event`] reads, in its order.
macro_rules! event_columns {
    () => {
        "position, stream_type, stream_id, version, event_type, event_version, event_id, \
         command_id, correlation_id, causation_id, recorded_at, headers, payload"
    };
}

/// The columns of a [`StreamEvent`], for loading aggregates.
const LOAD_STREAM: &str = "SELECT position, version, event_type, event_version, payload \
     FROM annals_events WHERE stream_type = ? AND stream_id = ? AND version BETWEEN ? AND ? \
     ORDER BY version LIMIT ?";

const READ_STREAM: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM annals_events \
      WHERE stream_type = ?1 AND stream_id = ?2 AND version BETWEEN ?3 AND ?4 \
      ORDER BY version LIMIT ?5"
);

/// Like [`READ_STREAM`], stopping before the first event recorded after `?5`, so a
/// temporal read is a prefix of the stream even if the clock went backwards. (The
/// uncorrelated subquery runs once.)
const READ_STREAM_UNTIL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM annals_events \
      WHERE stream_type = ?1 AND stream_id = ?2 \
        AND version BETWEEN ?3 AND COALESCE( \
            (SELECT MIN(version) - 1 FROM annals_events \
              WHERE stream_type = ?1 AND stream_id = ?2 AND version BETWEEN ?3 AND ?4 \
                AND recorded_at > ?5), \
            ?4) \
      ORDER BY version LIMIT ?6"
);

const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM annals_events WHERE position > ?1 ORDER BY position LIMIT ?2"
);

const READ_ALL_ONE_TYPE: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM annals_events WHERE event_type = ?3 AND position > ?1 ORDER BY position LIMIT ?2"
);

/// Many types: walk positions and test each event's type against the JSON array `?3` (the
/// unary `+` keeps the planner off the type index, which would sort every match).
const READ_ALL_MANY_TYPES: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM annals_events \
      WHERE position > ?1 AND +event_type IN (SELECT value FROM json_each(?3)) \
      ORDER BY position LIMIT ?2"
);

/// A few types: the first `limit` positions of each type from the type index, merged.
fn read_all_merged_sql(types: usize) -> String {
    let mut sql = String::from(concat!(
        "SELECT ",
        event_columns!(),
        " FROM annals_events WHERE position IN ("
    ));
    for i in 0..types {
        if i > 0 {
            sql.push_str(" UNION ALL ");
        }
        sql.push_str(&format!(
            "SELECT position FROM (SELECT position FROM annals_events \
             WHERE event_type = ?{} AND position > ?1 ORDER BY position LIMIT ?2)",
            i + 3
        ));
    }
    sql.push_str(") ORDER BY position LIMIT ?2");
    sql
}

impl EventStore for SqliteStore {
    async fn append(
        &self,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        self.append_committed(stream, expected, events, meta).await
    }

    async fn read_stream(
        &self,
        stream: StreamRef<'_>,
        range: StreamRange,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        validate_stream(stream)?;
        let Some((from, to)) = version_bounds(&range) else {
            return Ok(Vec::new());
        };
        let query = match range.until {
            None => sqlx::query(READ_STREAM)
                .bind(stream_type)
                .bind(stream_id)
                .bind(from)
                .bind(to)
                .bind(row_limit(&range)),
            Some(until) => sqlx::query(READ_STREAM_UNTIL)
                .bind(stream_type)
                .bind(stream_id)
                .bind(from)
                .bind(to)
                .bind(micros(until))
                .bind(row_limit(&range)),
        };
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::database(Operation::ReadStream, e))?;
        rows.iter().map(decode_event).collect()
    }

    async fn load_stream(
        &self,
        stream: StreamRef<'_>,
        range: StreamRange,
    ) -> Result<Vec<StreamEvent>, StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        if range.until.is_some() {
            return load_through_read_stream(self, stream, range).await;
        }
        validate_stream(stream)?;
        let Some((from, to)) = version_bounds(&range) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(LOAD_STREAM)
            .bind(stream_type)
            .bind(stream_id)
            .bind(from)
            .bind(to)
            .bind(row_limit(&range))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::database(Operation::ReadStream, e))?;
        rows.iter().map(stream_event::<_, i64>).collect()
    }

    async fn stream_version(&self, stream: StreamRef<'_>) -> Result<Option<u64>, StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        validate_stream(stream)?;
        // The last event's version: one seek in the (stream, version) index.
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM annals_events WHERE stream_type = ?1 AND stream_id = ?2",
        )
        .bind(stream_type)
        .bind(stream_id)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::database(Operation::StreamVersion, e))?;
        version
            .map(|v| stored_u64(v, "stream version", None))
            .transpose()
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<AppendOutcome>, StoreError> {
        let row = sqlx::query(
            "SELECT first_version, last_version, last_position, fingerprint \
             FROM annals_commands WHERE command_id = ?1",
        )
        .bind(command_id.hyphenated())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::database(Operation::CommandOutcome, e))?;
        row.as_ref().map(command_outcome).transpose()
    }
}

impl EventLog for SqliteStore {
    type Cursor = u64;

    async fn read_log<'a>(
        &'a self,
        after: &'a u64,
        limit: usize,
        filter: &'a EventFilter,
    ) -> Result<Batch<u64>, StoreError> {
        read_log_by_position(self, *after, limit, filter).await
    }

    async fn read_all(
        &self,
        after: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match &filter.event_types {
            None => {
                sqlx::query(READ_ALL)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
            Some(types) => {
                let mut types: Vec<&str> = types.iter().map(String::as_str).collect();
                types.sort_unstable();
                types.dedup();
                match types.len() {
                    0 => return Ok(Vec::new()),
                    1 => {
                        sqlx::query(READ_ALL_ONE_TYPE)
                            .bind(after)
                            .bind(limit)
                            .bind(types[0])
                            .fetch_all(&self.pool)
                            .await
                    }
                    n if n <= MAX_MERGED_TYPES => {
                        let sql = Sql::from(read_all_merged_sql(n));
                        let mut query = sqlx::query(&sql).bind(after).bind(limit);
                        for t in &types {
                            query = query.bind(*t);
                        }
                        query.fetch_all(&self.pool).await
                    }
                    _ => {
                        let types =
                            serde_json::to_string(&types).map_err(|e| StoreError::Encode {
                                what: "event type filter",
                                source: e,
                            })?;
                        sqlx::query(READ_ALL_MANY_TYPES)
                            .bind(after)
                            .bind(limit)
                            .bind(types)
                            .fetch_all(&self.pool)
                            .await
                    }
                }
            }
        }
        .map_err(|e| StoreError::database(Operation::ReadAll, e))?;
        rows.iter().map(decode_event).collect()
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM annals_events")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::database(Operation::Head, e))?;
        stored_u64(head, "position", None)
    }
}

/// Reads one row of [`event_columns!`]; anything out of range or malformed is
/// [`StoreError::Corrupt`] at the row's position.
fn decode_event(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let position: i64 = column(row, 0, "position", None)?;
    let position = stored_u64(position, "position", None)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        position: Some(position),
        reason,
    };

    let version: i64 = event_column(row, 3, position)?;
    let event_version: i64 = event_column(row, 5, position)?;
    let recorded_at: i64 = event_column(row, 10, position)?;
    let headers: &str = event_column(row, 11, position)?;
    Ok(RecordedEvent {
        meta: EventMeta {
            position,
            stream_type: event_column(row, 1, position)?,
            stream_id: event_column(row, 2, position)?,
            version: stored_u64(version, "version", Some(position))?,
            event_type: event_column(row, 4, position)?,
            event_version: stored_event_version(event_version, Some(position))?,
            event_id: uuid_column(row, 6, position)?
                .ok_or_else(|| corrupt("event_id is null".to_owned()))?,
            command_id: uuid_column(row, 7, position)?,
            correlation_id: uuid_column(row, 8, position)?,
            causation_id: uuid_column(row, 9, position)?,
            recorded_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(recorded_at) * 1000)
                .map_err(|e| corrupt(format!("recorded_at {recorded_at}: {e}")))?,
            headers: decode_headers(headers).map_err(|e| corrupt(format!("headers: {e}")))?,
        },
        payload: event_column(row, 12, position)?,
    })
}

fn decode_headers(text: &str) -> Result<Headers, serde_json::Error> {
    if text == "{}" {
        return Ok(Headers::new());
    }
    serde_json::from_str(text)
}

fn uuid_column(row: &SqliteRow, index: usize, position: u64) -> Result<Option<Uuid>, StoreError> {
    let Some(text) = event_column::<_, Option<&str>>(row, index, position)? else {
        return Ok(None);
    };
    Uuid::try_parse(text)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            position: Some(position),
            reason: format!(
                "{} `{}` is not a UUID: {e}",
                EVENT_COLUMN_NAMES[index],
                text.escape_debug()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::append::APPEND_LOOKUP;
    use sqlx::Row;

    /// Every read walks an index in the order it returns: no full scan, no sort.
    #[tokio::test]
    async fn reads_walk_indexes_in_order() {
        let store = SqliteStore::in_memory().await.unwrap();
        for (sql, binds) in [
            (READ_ALL.to_owned(), 2),
            (READ_ALL_ONE_TYPE.to_owned(), 3),
            (read_all_merged_sql(3), 5),
            (read_all_merged_sql(MAX_MERGED_TYPES), MAX_MERGED_TYPES + 2),
            (READ_ALL_MANY_TYPES.to_owned(), 3),
            (READ_STREAM.to_owned(), 5),
            (READ_STREAM_UNTIL.to_owned(), 6),
            (LOAD_STREAM.to_owned(), 5),
            (APPEND_LOOKUP.to_owned(), 3),
        ] {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut query = sqlx::query(&Sql::from(explain));
            for _ in 0..binds {
                query = query.bind(1_i64);
            }
            let plan: Vec<String> = query
                .fetch_all(store.pool())
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(3))
                .collect();
            for step in &plan {
                assert!(
                    !step.contains("TEMP B-TREE") && !step.starts_with("SCAN annals_"),
                    "{sql}\n{}",
                    plan.join("\n")
                );
            }
        }
    }
}
