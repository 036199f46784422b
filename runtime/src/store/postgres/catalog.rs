//! Listing streams: a page of `annals_streams` in primary-key order (the database's
//! collation), with each stream's event count and last recording time from the events'
//! (stream, version) index.

use sqlx::postgres::PgRow;
use time::OffsetDateTime;

use crate::error::{Operation, StoreError};
use crate::store::sql::{column, stored_u64, Sql};
use crate::store::{StreamCatalog, StreamInfo, StreamQuery, StreamRef};

use super::{quote_ident, PgStore};

impl PgStore {
    /// The listing statement for this filter shape (`$1` type, `$2`/`$3` the cursor, `$4`
    /// the limit), so each walks the primary key from where it starts.
    fn list_streams_sql(&self, query: &StreamQuery) -> Sql {
        let schema = quote_ident(self.schema());
        let filter = match (&query.stream_type, &query.after) {
            (None, None) => "$1::text IS NULL AND $2::text IS NULL AND $3::text IS NULL",
            (Some(_), None) => "s.stream_type = $1 AND $2::text IS NULL AND $3::text IS NULL",
            (None, Some(_)) => "$1::text IS NULL AND (s.stream_type, s.stream_id) > ($2, $3)",
            (Some(_), Some(_)) => "s.stream_type = $1 AND (s.stream_type, s.stream_id) > ($2, $3)",
        };
        Sql::from(format!(
            "SELECT s.stream_type, s.stream_id, s.version, \
                 (SELECT count(*) FROM {schema}.annals_events e \
                   WHERE e.stream_type = s.stream_type AND e.stream_id = s.stream_id), \
                 (SELECT e.recorded_at FROM {schema}.annals_events e \
                   WHERE e.stream_type = s.stream_type AND e.stream_id = s.stream_id \
                   ORDER BY e.version DESC LIMIT 1) \
             FROM {schema}.annals_streams s WHERE {filter} \
             ORDER BY s.stream_type, s.stream_id LIMIT $4"
        ))
    }
}

impl StreamCatalog for PgStore {
    async fn list_streams(&self, query: &StreamQuery) -> Result<Vec<StreamInfo>, StoreError> {
        let (after_type, after_id) = query
            .after
            .as_ref()
            .map(|(t, id)| (t.as_str(), id.as_str()))
            .unzip();
        let sql = self.list_streams_sql(query);
        let rows = sqlx::query(&sql)
            .bind(query.stream_type.as_deref())
            .bind(after_type)
            .bind(after_id)
            .bind(i64::try_from(query.limit).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await
            .map_err(|e| StoreError::database(Operation::ListStreams, e))?;
        rows.iter().map(stream_info).collect()
    }
}

fn stream_info(row: &PgRow) -> Result<StreamInfo, StoreError> {
    let stream_type: String = column(row, 0, "annals_streams.stream_type", None)?;
    let stream_id: String = column(row, 1, "annals_streams.stream_id", None)?;
    let version = stored_u64(
        column(row, 2, "annals_streams.version", None)?,
        "stream version",
        None,
    )?;
    let events = stored_u64(column(row, 3, "event count", None)?, "event count", None)?;
    let updated_at: Option<OffsetDateTime> = column(row, 4, "annals_events.recorded_at", None)?;
    Ok(StreamInfo::new(
        StreamRef::new(&stream_type, &stream_id),
        version,
        events,
        updated_at,
    ))
}
