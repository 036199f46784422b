//! Reads of streams, command outcomes and snapshots (all strongly consistent), and the
//! capability traits built on them.

use aws_sdk_dynamodb::types::AttributeValue;
use uuid::Uuid;

use super::append::MAX_ITEM_BYTES;
use super::items::{self, Item};
use super::{sdk_error, DynamoDbStore};
use crate::error::{Operation, StoreError};
use crate::store::{
    validate_stream, AppendOutcome, CommitMeta, EventStore, ExpectedVersion, NewEvent,
    RecordedEvent, Snapshot, SnapshotStore, StreamEvent, StreamRange, StreamRef,
};

impl DynamoDbStore {
    /// The stream's version: its last event's sort key.
    pub(super) async fn version(&self, stream: StreamRef<'_>) -> Result<Option<u64>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&*self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", items::s(items::stream_key(stream)))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .projection_expression("sk")
            .send()
            .await
            .map_err(|e| sdk_error(Operation::StreamVersion, e))?;
        out.items()
            .first()
            .map(|item| items::Fields::new(item, "event").u64(items::SK))
            .transpose()
    }

    pub(super) async fn outcome_of(
        &self,
        command_id: Uuid,
    ) -> Result<Option<AppendOutcome>, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&*self.table)
            .set_key(Some(items::key(items::command_key(command_id), 0)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(Operation::CommandOutcome, e))?;
        got.item.as_ref().map(items::command_outcome).transpose()
    }

    /// The items of a stream within `range`'s versions (at most `range.limit` of them),
    /// page by page, until `decode` says stop; `narrow` selects only the load path's
    /// attributes.
    async fn query_stream<T>(
        &self,
        stream: StreamRef<'_>,
        range: StreamRange,
        narrow: bool,
        mut decode: impl FnMut(&Item) -> Result<Option<T>, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        validate_stream(stream)?;
        let from = range.from.max(1);
        let to = range.to.unwrap_or(u64::MAX);
        let limit = range.limit.map_or(usize::MAX, |limit| {
            usize::try_from(limit).unwrap_or(usize::MAX)
        });
        let mut out = Vec::new();
        if from > to || limit == 0 {
            return Ok(out);
        }
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&*self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", items::s(items::stream_key(stream)))
                .expression_attribute_values(":from", items::n(from))
                .expression_attribute_values(":to", items::n(to))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if let Ok(rest) = i32::try_from(limit - out.len()) {
                query = query.limit(rest);
            }
            if narrow {
                query = query
                    .projection_expression(items::LOAD_ATTRIBUTES)
                    .expression_attribute_names("#position", "position");
            }
            let page = query
                .send()
                .await
                .map_err(|e| sdk_error(Operation::ReadStream, e))?;
            for item in page.items() {
                match decode(item)? {
                    Some(value) => out.push(value),
                    None => return Ok(out),
                }
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(out),
            }
        }
    }
}

impl EventStore for DynamoDbStore {
    async fn append(
        &self,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        self.append_events(stream, expected, events, meta).await
    }

    async fn read_stream(
        &self,
        stream: StreamRef<'_>,
        range: StreamRange,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.query_stream(stream, range, false, |item| {
            let event = items::recorded_event(item)?;
            Ok(range
                .until
                .is_none_or(|until| event.meta.recorded_at <= until)
                .then_some(event))
        })
        .await
    }

    async fn load_stream(
        &self,
        stream: StreamRef<'_>,
        range: StreamRange,
    ) -> Result<Vec<StreamEvent>, StoreError> {
        if range.until.is_some() {
            let events = self.read_stream(stream, range).await?;
            return Ok(events.into_iter().map(StreamEvent::from).collect());
        }
        self.query_stream(stream, range, true, |item| {
            items::stream_event(item).map(Some)
        })
        .await
    }

    async fn stream_version(&self, stream: StreamRef<'_>) -> Result<Option<u64>, StoreError> {
        validate_stream(stream)?;
        self.version(stream).await
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<AppendOutcome>, StoreError> {
        self.outcome_of(command_id).await
    }
}

impl SnapshotStore for DynamoDbStore {
    async fn save_snapshot(
        &self,
        stream: StreamRef<'_>,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        validate_stream(stream)?;
        let mut item = items::key(items::snapshot_key(stream), snapshot.version);
        item.insert(
            "snapshot_version".to_owned(),
            items::n(snapshot.snapshot_version),
        );
        item.insert("state".to_owned(), AttributeValue::S(snapshot.state));
        let size = items::item_size(&item);
        if size > MAX_ITEM_BYTES {
            return Err(StoreError::TooLarge {
                what: format!(
                    "snapshot of {stream} at version {} ({size} bytes)",
                    snapshot.version
                ),
                limit: "DynamoDB's items hold at most 400 KB",
            });
        }
        self.client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error(Operation::SaveSnapshot, e))?;
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: StreamRef<'_>,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, StoreError> {
        validate_stream(stream)?;
        let out = self
            .client
            .query()
            .table_name(&*self.table)
            .key_condition_expression("pk = :pk AND sk <= :max")
            .expression_attribute_values(":pk", items::s(items::snapshot_key(stream)))
            .expression_attribute_values(":max", items::n(max_version.unwrap_or(u64::MAX)))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(Operation::LoadSnapshot, e))?;
        let Some(item) = out.items().first() else {
            return Ok(None);
        };
        let what = format!("snapshot of {stream}");
        let fields = items::Fields::new(item, &what);
        Ok(Some(Snapshot::new(
            fields.u64(items::SK)?,
            fields.u32("snapshot_version")?,
            fields.string("state")?.to_owned(),
        )))
    }
}
