//! The table's DynamoDB Stream as a runner's source, read shard by shard the way a Lambda
//! trigger reads it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{
    AttributeValue as StreamValue, OperationType, ShardIteratorType,
};
use aws_sdk_dynamodbstreams::Client;

use super::items::{self, Item};
use super::{sdk_error, DynamoDbStore};
use crate::error::{Operation, ProjectionError, StoreError};
use crate::source::{LiveSource, Source};
use crate::store::{Batch, Checkpoint, Cursor, EventFilter, RecordedEvent};

/// How often a live runner looks for new records by default (Lambda polls a stream's
/// shards four times a second).
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Where a reader of a DynamoDB Stream stands: per shard, the sequence number read
/// through, or that the shard is closed and read to its end.
///
/// Stored as a runner's checkpoint: the position is the highest annals position read (for
/// status and lag; events of different shards arrive out of position order, so on a table
/// with several shards a position reached does not prove every lower one was read), the
/// cursor the shards' sequence numbers as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardCursor {
    /// The highest event position read.
    pub position: u64,
    /// Per shard id: `Some(sequence number)` read through, `None` finished.
    pub shards: BTreeMap<String, Option<String>>,
}

impl Cursor for ShardCursor {
    fn to_checkpoint(&self) -> Checkpoint {
        let cursor = serde_json::to_string(&self.shards).unwrap_or_default();
        Checkpoint::with_cursor(self.position, cursor)
    }

    fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self, StoreError> {
        match &checkpoint.cursor {
            None if checkpoint.position == 0 => Ok(ShardCursor::default()),
            None => Err(StoreError::Corrupt {
                position: None,
                reason: format!(
                    "checkpoint at position {} has no shard cursor: was the runner's name \
                     used with another source?",
                    checkpoint.position
                ),
            }),
            Some(cursor) => Ok(ShardCursor {
                position: checkpoint.position,
                shards: serde_json::from_str(cursor).map_err(|e| StoreError::Corrupt {
                    position: None,
                    reason: format!(
                        "checkpoint cursor `{cursor}` is not a DynamoDB Stream's shard map: {e}"
                    ),
                })?,
            }),
        }
    }
}

/// One shard as `DescribeStream` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shard {
    id: String,
    parent: Option<String>,
}

/// A table's DynamoDB Stream as a [`Source`]: every event appended to a
/// [`DynamoDbStore`], for projections and reactors whose checkpoint lives in another store
/// (a [`Runner`](crate::Runner) built with [`Runner::with_source`](crate::Runner::with_source)).
///
/// Reads shard by shard, a child shard only once its parent is read to its end, so each
/// stream's events arrive in version order (a stream's items live in one shard at a time).
/// The cursor ([`ShardCursor`]) is checkpointed in the runner's store in the same
/// transaction as the handler's writes: exactly-once effects there. Records other than
/// new events (snapshots, command outcomes, the position counter) are skipped.
///
/// DynamoDB keeps a stream's records for 24 hours: a runner stopped for longer misses
/// events (rebuild from the table then).
#[derive(Debug, Clone)]
pub struct DynamoDbStreamSource {
    client: Client,
    arn: String,
    store: Option<DynamoDbStore>,
    poll: Duration,
}

impl DynamoDbStreamSource {
    /// The stream with ARN `arn` (a table's `LatestStreamArn`), read with `client`.
    pub fn new(client: Client, arn: impl Into<String>) -> Self {
        DynamoDbStreamSource {
            client,
            arn: arn.into(),
            store: None,
            poll: POLL_INTERVAL,
        }
    }

    /// How often a live runner looks for new records (250 ms by default).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll = interval;
        self
    }

    /// The stream's ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    pub(super) fn of_store(mut self, store: DynamoDbStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Every shard of the stream, parents before children.
    async fn shards(&self) -> Result<Vec<Shard>, StoreError> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_stream()
                .stream_arn(&self.arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(Operation::ReadAll, e))?;
            let Some(description) = out.stream_description else {
                return Ok(shards);
            };
            for shard in description.shards() {
                if let Some(id) = shard.shard_id() {
                    shards.push(Shard {
                        id: id.to_owned(),
                        parent: shard.parent_shard_id().map(str::to_owned),
                    });
                }
            }
            match description.last_evaluated_shard_id {
                Some(last) => start = Some(last),
                None => return Ok(shards),
            }
        }
    }

    /// Reads up to `limit` records of one shard after the cursor: the events among them, the
    /// sequence number read through, and whether the shard is finished.
    async fn read_shard(
        &self,
        shard: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent>, Option<String>, bool), StoreError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.arn)
            .shard_id(shard);
        let request = match after {
            Some(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let iterator = request
            .send()
            .await
            .map_err(|e| sdk_error(Operation::ReadAll, e))?
            .shard_iterator;
        let Some(iterator) = iterator else {
            // No iterator: the shard is closed and was read to its end.
            return Ok((Vec::new(), None, true));
        };
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(|e| sdk_error(Operation::ReadAll, e))?;
        let mut events = Vec::new();
        let mut last = None;
        for record in out.records() {
            let Some(data) = record.dynamodb() else {
                continue;
            };
            last = data.sequence_number().map(str::to_owned).or(last);
            if record.event_name() != Some(&OperationType::Insert) {
                continue;
            }
            let Some(image) = data.new_image() else {
                continue;
            };
            let item = to_item(image);
            let is_event = matches!(item.get(items::PK), Some(AttributeValue::S(pk)) if items::stream_of_key(pk).is_some());
            if is_event {
                events.push(items::recorded_event(&item)?);
            }
        }
        let finished = out.records().is_empty() && out.next_shard_iterator.is_none();
        Ok((events, last, finished))
    }
}

/// A stream record's image as a table item.
fn to_item(image: &HashMap<String, StreamValue>) -> Item {
    image
        .iter()
        .map(|(name, value)| {
            let value = match value {
                StreamValue::S(s) => AttributeValue::S(s.clone()),
                StreamValue::N(n) => AttributeValue::N(n.clone()),
                StreamValue::Bool(b) => AttributeValue::Bool(*b),
                // annals writes only strings and numbers; anything else reads as missing.
                _ => AttributeValue::Null(true),
            };
            (name.clone(), value)
        })
        .collect()
}

/// The shards to read now: not finished, and whose parent is finished or gone (records
/// expire after 24 hours, and their shards with them).
fn readable<'a>(shards: &'a [Shard], cursor: &ShardCursor) -> Vec<&'a Shard> {
    let finished = |id: &str| matches!(cursor.shards.get(id), Some(None));
    let listed = |id: &str| shards.iter().any(|s| s.id == id);
    shards
        .iter()
        .filter(|s| !finished(&s.id))
        .filter(|s| {
            s.parent
                .as_deref()
                .is_none_or(|parent| finished(parent) || !listed(parent))
        })
        .collect()
}

impl Source for DynamoDbStreamSource {
    type Cursor = ShardCursor;

    async fn read<'a>(
        &'a mut self,
        after: &'a ShardCursor,
        limit: usize,
        filter: &'a EventFilter,
    ) -> Result<Batch<ShardCursor>, ProjectionError> {
        // Read first: every position up to it was handed out before the shards are read.
        let head = self.head().await?;
        let shards = self.shards().await?;
        let mut end = after.clone();
        // Shards no longer listed have expired: forget them, the cursor stays small.
        end.shards
            .retain(|id, _| shards.iter().any(|s| &s.id == id));
        let mut events = Vec::new();
        // A shard finished in this read may make its children readable in the same read;
        // each pass reads every readable shard once.
        let mut drained = false;
        for _ in 0..=shards.len() {
            let mut progressed = false;
            for shard in readable(&shards, &end) {
                if events.len() >= limit {
                    break;
                }
                let through = end.shards.get(&shard.id).cloned().flatten();
                let (read, last, finished) = self
                    .read_shard(&shard.id, through.as_deref(), limit - events.len())
                    .await?;
                if let Some(last) = last {
                    end.shards.insert(shard.id.clone(), Some(last));
                    progressed = true;
                }
                if finished {
                    end.shards.insert(shard.id.clone(), None);
                    progressed = true;
                }
                for event in read {
                    end.position = end.position.max(event.meta.position);
                    if filter.matches(&event.meta.event_type) {
                        events.push(event);
                    }
                }
            }
            if !progressed {
                drained = true;
                break;
            }
            if events.len() >= limit {
                break;
            }
        }
        // Read to the end of every shard: the positions handed out before are all past
        // (committed and read, or given up by an append that failed), so the reader is
        // caught up with the head, whatever gaps failed appends left.
        if drained {
            end.position = end.position.max(head);
        }
        Ok(Batch::new(events, end))
    }

    async fn head(&self) -> Result<u64, ProjectionError> {
        match &self.store {
            Some(store) => Ok(store.last_position().await?),
            None => Ok(0),
        }
    }
}

impl LiveSource for DynamoDbStreamSource {
    async fn wait<'a>(
        &'a mut self,
        after: &'a ShardCursor,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        let _ = after;
        tokio::time::sleep(timeout.min(self.poll)).await;
        Ok(())
    }
}

impl DynamoDbStore {
    /// The last position handed out (0 before the first append): the head of the table's
    /// stream, for a [`DynamoDbStreamSource`]'s status.
    pub async fn last_position(&self) -> Result<u64, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&*self.table)
            .set_key(Some(items::key(items::POSITION_COUNTER.to_owned(), 0)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(Operation::Head, e))?;
        match got.item {
            Some(item) => items::Fields::new(&item, "position counter").u64("next"),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>) -> Shard {
        Shard {
            id: id.to_owned(),
            parent: parent.map(str::to_owned),
        }
    }

    #[test]
    fn children_wait_for_their_parent() {
        // A split: 1 closed into 2 and 3; 3 split again into 4.
        let shards = [
            shard("1", None),
            shard("2", Some("1")),
            shard("3", Some("1")),
            shard("4", Some("3")),
        ];
        let ids = |cursor: &ShardCursor| -> Vec<&str> {
            readable(&shards, cursor)
                .iter()
                .map(|s| s.id.as_str())
                .collect()
        };
        let mut cursor = ShardCursor::default();
        assert_eq!(ids(&cursor), ["1"]);
        cursor.shards.insert("1".into(), Some("17".into()));
        assert_eq!(
            ids(&cursor),
            ["1"],
            "an open parent keeps its children waiting"
        );
        cursor.shards.insert("1".into(), None);
        assert_eq!(ids(&cursor), ["2", "3"]);
        cursor.shards.insert("3".into(), None);
        assert_eq!(ids(&cursor), ["2", "4"]);
        // A parent whose records expired is no longer listed: its children go ahead.
        assert_eq!(
            readable(&shards[1..], &ShardCursor::default())
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>(),
            ["2", "3"]
        );
    }

    #[test]
    fn cursors_round_trip_through_checkpoints() {
        let mut cursor = ShardCursor {
            position: 42,
            ..ShardCursor::default()
        };
        cursor.shards.insert("shardId-1".into(), None);
        cursor
            .shards
            .insert("shardId-2".into(), Some("1100000000017454423009".into()));
        let checkpoint = cursor.to_checkpoint();
        assert_eq!(ShardCursor::from_checkpoint(&checkpoint).unwrap(), cursor);
        assert_eq!(
            ShardCursor::from_checkpoint(&Checkpoint::default()).unwrap(),
            ShardCursor::default()
        );
        assert!(ShardCursor::from_checkpoint(&Checkpoint::at(3)).is_err());
        assert!(ShardCursor::from_checkpoint(&Checkpoint::with_cursor(3, "7")).is_err());
    }
}
