//! The catalog of streams a store holds: what operators' tools list
//! ([`crate::admin`]'s `streams list`, when that feature is on).

use std::future::Future;

use time::OffsetDateTime;

use super::StreamRef;
use crate::error::StoreError;

/// Lists the streams a store holds, a page at a time, in (stream type, stream id) order.
///
/// ```
/// # async fn demo() -> Result<(), annals::StoreError> {
/// use annals::store::{StreamCatalog, StreamQuery};
/// let store = annals::MemoryStore::new();
/// let first = store.list_streams(&StreamQuery::new().stream_type("account").limit(50)).await?;
/// if let Some(last) = first.last() {
///     let next = store
///         .list_streams(&StreamQuery::new().stream_type("account").after(last.stream()).limit(50))
///         .await?;
/// }
/// # Ok(()) }
/// ```
pub trait StreamCatalog: Clone + Send + Sync + 'static {
    /// Up to [`StreamQuery::limit`] streams that come after [`StreamQuery::after`] in
    /// (stream type, stream id) order, of [`StreamQuery::stream_type`] only when it is set.
    ///
    /// The order is the byte order of the UTF-8 text in memory and on SQLite, and the
    /// database's collation on PostgreSQL (the same under `C` and `C.UTF-8`), so that a
    /// page walks the streams' primary key. Paging with the last stream of each page as
    /// the next cursor lists every stream once.
    fn list_streams(
        &self,
        query: &StreamQuery,
    ) -> impl Future<Output = Result<Vec<StreamInfo>, StoreError>> + Send;
}

/// Which streams [`StreamCatalog::list_streams`] returns: a filter and a page.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamQuery {
    /// Only streams of this type; `None` for every type.
    pub stream_type: Option<String>,
    /// Only streams after this one (its type, its id): the last stream of the previous
    /// page. `None` starts at the first stream.
    pub after: Option<(String, String)>,
    /// At most this many streams (100 unless set; at least 1).
    pub limit: usize,
}

impl Default for StreamQuery {
    fn default() -> Self {
        StreamQuery {
            stream_type: None,
            after: None,
            limit: 100,
        }
    }
}

impl StreamQuery {
    /// Every stream, the first 100.
    pub fn new() -> Self {
        StreamQuery::default()
    }

    /// Only streams of `stream_type`.
    #[must_use]
    pub fn stream_type(mut self, stream_type: impl Into<String>) -> Self {
        self.stream_type = Some(stream_type.into());
        self
    }

    /// Only streams after `stream` (the last one of the previous page).
    #[must_use]
    pub fn after(mut self, stream: StreamRef<'_>) -> Self {
        self.after = Some((stream.stream_type.to_owned(), stream.stream_id.to_owned()));
        self
    }

    /// At most `limit` streams (at least 1).
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.max(1);
        self
    }

    /// Whether `stream` passes the filter and comes after the cursor.
    pub fn matches(&self, stream: StreamRef<'_>) -> bool {
        self.stream_type
            .as_deref()
            .is_none_or(|t| t == stream.stream_type)
            && self.after.as_ref().is_none_or(|(t, id)| {
                (stream.stream_type.as_bytes(), stream.stream_id.as_bytes())
                    > (t.as_bytes(), id.as_bytes())
            })
    }
}

/// One stream, as [`StreamCatalog::list_streams`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The aggregate's stream type.
    pub stream_type: String,
    /// The aggregate's id.
    pub stream_id: String,
    /// The stream's recorded version: what the next append checks against.
    pub version: u64,
    /// How many events the stream holds (equal to `version` unless rows were changed by
    /// hand).
    pub events: u64,
    /// When its last event was recorded; `None` for a stream without events (an empty
    /// append that recorded a command id).
    pub updated_at: Option<OffsetDateTime>,
}

impl StreamInfo {
    /// A listed stream (for store implementations).
    pub fn new(
        stream: StreamRef<'_>,
        version: u64,
        events: u64,
        updated_at: Option<OffsetDateTime>,
    ) -> Self {
        StreamInfo {
            stream_type: stream.stream_type.to_owned(),
            stream_id: stream.stream_id.to_owned(),
            version,
            events,
            updated_at,
        }
    }

    /// The stream.
    pub fn stream(&self) -> StreamRef<'_> {
        StreamRef::new(&self.stream_type, &self.stream_id)
    }
}
