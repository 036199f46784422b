//! Stream reads, the load path and the global log; row decoding.

use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::{Operation, StoreError};
use crate::store::sql::{
    column, event_column, row_limit, stored_event_version, stored_u64, stream_event, version_bounds,
};
use crate::store::{
    load_through_read_stream, validate_stream, AppendOutcome, Batch, CommitMeta, EventFilter,
    EventLog, EventMeta, EventStore, ExpectedVersion, Headers, NewEvent, RecordedEvent,
    StreamEvent, StreamRange, StreamRef,
};

use super::log::PgCursor;
use super::PgStore;

impl EventStore for PgStore {
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
        let sql = &self.inner.sql;
        let query = match range.until {
            None => sqlx::query(&sql.read_stream),
            Some(until) => sqlx::query(&sql.read_stream_until).bind(until),
        };
        let rows = query
            .bind(stream_type)
            .bind(stream_id)
            .bind(from)
            .bind(to)
            .bind(row_limit(&range))
            .fetch_all(&self.inner.pool)
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
        let rows = sqlx::query(&self.inner.sql.load_stream)
            .bind(stream_type)
            .bind(stream_id)
            .bind(from)
            .bind(to)
            .bind(row_limit(&range))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(Operation::ReadStream, e))?;
        rows.iter().map(stream_event::<_, i32>).collect()
    }

    async fn stream_version(&self, stream: StreamRef<'_>) -> Result<Option<u64>, StoreError> {
        validate_stream(stream)?;
        self.query_stream_version(&self.inner.pool, stream).await
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<AppendOutcome>, StoreError> {
        self.query_command_outcome(&self.inner.pool, command_id)
            .await
    }
}

impl EventLog for PgStore {
    type Cursor = PgCursor;

    async fn read_log<'a>(
        &'a self,
        after: &'a PgCursor,
        limit: usize,
        filter: &'a EventFilter,
    ) -> Result<Batch<PgCursor>, StoreError> {
        self.read_log_after(after, limit, filter).await
    }

    async fn settle(&self) -> Result<(), StoreError> {
        self.settle_log().await
    }

    async fn read_all(
        &self,
        after: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = &self.inner.sql;
        let query = match &filter.event_types {
            None => sqlx::query(&sql.read_all),
            Some(types) => sqlx::query(&sql.read_all_types).bind(&types[..]),
        };
        let rows = query
            .bind(after)
            .bind(limit)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(Operation::ReadAll, e))?;
        rows.iter().map(decode_event).collect()
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar(&self.inner.sql.head)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(Operation::Head, e))?;
        stored_u64(head, "position", None)
    }
}

pub(super) fn decode_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let position = stored_u64(column(row, 0, "position", None)?, "position", None)?;
    let version: i64 = event_column(row, 3, position)?;
    let event_version: i32 = event_column(row, 5, position)?;
    let headers: String = event_column(row, 11, position)?;
    Ok(RecordedEvent {
        meta: EventMeta {
            position,
            stream_type: event_column(row, 1, position)?,
            stream_id: event_column(row, 2, position)?,
            version: stored_u64(version, "version", Some(position))?,
            event_type: event_column(row, 4, position)?,
            event_version: stored_event_version(event_version, Some(position))?,
            event_id: event_column(row, 6, position)?,
            command_id: event_column(row, 7, position)?,
            correlation_id: event_column(row, 8, position)?,
            causation_id: event_column(row, 9, position)?,
            recorded_at: event_column(row, 10, position)?,
            headers: serde_json::from_str::<Headers>(&headers).map_err(|e| {
                StoreError::Corrupt {
                    position: Some(position),
                    reason: format!("headers are not a map of strings: {e}"),
                }
            })?,
        },
        payload: event_column(row, 12, position)?,
    })
}
