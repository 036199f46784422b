//! Appends: one `TransactWriteItems` per commit, with the version check, a marker per event
//! id and the command id's outcome, so a commit is all or nothing.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, ReturnValue, TransactWriteItem};

use super::items::{self, Item};
use super::{sdk_error, DynamoDbStore};
use crate::error::{Operation, StoreError};
use crate::store::{
    now_micros, validate_events, validate_stream, AppendOutcome, CommitMeta, EventMeta,
    ExpectedVersion, NewEvent, StreamRef,
};

/// DynamoDB's limit on the items of one transaction.
pub(crate) const MAX_TRANSACTION_ITEMS: usize = 100;
/// DynamoDB's limit on the size of one transaction.
pub(crate) const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
/// DynamoDB's limit on the size of one item.
pub(crate) const MAX_ITEM_BYTES: usize = 400 * 1024;

/// How many times an append is tried again when the table changed between its check and
/// its transaction in a way that still accepts it (`Any`, `Exists`, a raced `Exact`), or
/// DynamoDB reported a transaction conflict.
const MAX_TRIES: u32 = 100;

const NOT_EXISTS: &str = "attribute_not_exists(pk)";
const EXISTS: &str = "attribute_exists(pk)";

/// Why a transaction was cancelled.
enum Cancelled {
    /// A condition failed: the version, the command id or an event id.
    Condition,
    /// Another transaction held an item, or the request was throttled: try again.
    Contention,
}

impl DynamoDbStore {
    pub(super) async fn append_events(
        &self,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        validate_stream(stream)?;
        validate_events(stream, &events)?;
        let mut ids = HashSet::with_capacity(events.len());
        if let Some(repeated) = events.iter().find(|e| !ids.insert(e.event_id)) {
            return Err(duplicate_event_id(stream, repeated));
        }
        let count = events.len() as u64;
        // Items: two per event, the command's outcome, and the version check (two checks,
        // of the current version and the next, for an empty append).
        let checks = if events.is_empty() { 2 } else { 1 };
        let items = 2 * events.len() + usize::from(meta.command_id.is_some()) + checks;
        if items > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::TooLarge {
                what: format!("a commit of {count} events to {stream}"),
                limit: "DynamoDB's transactions hold at most 100 items: 2 per event, 1 for \
                        the command id and 1 for the version check (so at most 49 events)",
            });
        }
        if count == 0 && meta.command_id.is_none() {
            // Nothing to write: the check alone.
            let actual = self.version(stream).await?;
            return if expected.accepts(actual) {
                let current = actual.unwrap_or(0);
                Ok(AppendOutcome::new(current, current, 0))
            } else {
                Err(wrong_version(stream, expected, actual))
            };
        }
        let headers = if meta.headers.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&meta.headers).map_err(|e| StoreError::Encode {
                    what: "headers",
                    source: e,
                })?,
            )
        };
        // Positions are handed out before the transaction, so one that fails leaves a gap.
        let first_position = if count > 0 {
            self.reserve_positions(count).await? - count + 1
        } else {
            0
        };
        let mut named = match expected {
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(n) => Some(n),
            ExpectedVersion::Any | ExpectedVersion::Exists => None,
        };
        let stream_key = items::stream_key(stream);
        let recorded_at = now_micros();
        for attempt in 0..MAX_TRIES {
            let current = match named {
                Some(current) => current,
                None => {
                    let actual = self.version(stream).await?;
                    if !expected.accepts(actual) {
                        return self.refused(stream, expected, meta).await;
                    }
                    actual.unwrap_or(0)
                }
            };
            let Some(last_version) = current.checked_add(count) else {
                let actual = self.version(stream).await?;
                return Err(if expected.accepts(actual) {
                    StoreError::OutOfRange {
                        what: "stream version",
                        value: current,
                    }
                } else {
                    wrong_version(stream, expected, actual)
                });
            };
            let outcome = AppendOutcome::new(
                if count == 0 { current } else { current + 1 },
                last_version,
                if count == 0 {
                    0
                } else {
                    first_position + count - 1
                },
            )
            .with_fingerprint(meta.fingerprint.clone());
            let mut writes = Vec::with_capacity(items);
            if current > 0 {
                writes.push(self.check(&stream_key, current, EXISTS)?);
            }
            if count == 0 {
                writes.push(self.check(&stream_key, current + 1, NOT_EXISTS)?);
            }
            let mut bytes = 0;
            for ((version, position), event) in (current + 1..).zip(first_position..).zip(&events) {
                let meta = EventMeta::recorded(stream, version, position, event, meta, recorded_at);
                let item = items::event_item(
                    &stream_key,
                    &meta,
                    headers.as_deref(),
                    event.payload.clone(),
                );
                let size = items::item_size(&item);
                if size > MAX_ITEM_BYTES {
                    return Err(StoreError::TooLarge {
                        what: format!(
                            "event `{}` of {size} bytes appended to {stream}",
                            event.event_type
                        ),
                        limit: "DynamoDB's items hold at most 400 KB (the payload, the \
                                headers and the metadata together)",
                    });
                }
                bytes += size;
                writes.push(self.put(item, NOT_EXISTS)?);
                writes.push(self.put(items::event_id_item(event.event_id, stream), NOT_EXISTS)?);
            }
            if let Some(command_id) = meta.command_id {
                writes.push(self.put(
                    items::command_item(command_id, stream, &outcome, meta.fingerprint.as_deref()),
                    NOT_EXISTS,
                )?);
            }
            if bytes > MAX_TRANSACTION_BYTES {
                return Err(StoreError::TooLarge {
                    what: format!("a commit of {count} events ({bytes} bytes) to {stream}"),
                    limit: "DynamoDB's transactions hold at most 4 MB",
                });
            }
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(writes))
                .send()
                .await;
            let error = match sent {
                Ok(_) => return Ok(outcome),
                Err(error) => error,
            };
            match cancelled(&error) {
                Some(Cancelled::Condition) => {
                    if let Some(first) = self.first_outcome(stream, meta).await? {
                        return Ok(first);
                    }
                    let actual = self.version(stream).await?;
                    if !expected.accepts(actual) {
                        return Err(wrong_version(stream, expected, actual));
                    }
                    if let Some(taken) = self.taken_event_id(&events).await? {
                        return Err(duplicate_event_id(stream, taken));
                    }
                    // The stream moved to a version the expectation still accepts.
                    named = None;
                }
                Some(Cancelled::Contention) => {
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt.min(20)))).await;
                }
                None => return Err(sdk_error(Operation::Append, error)),
            }
        }
        Err(StoreError::database(
            Operation::Append,
            format!("{stream} kept changing: gave up after {MAX_TRIES} transactions"),
        ))
    }

    /// Hands out `count` positions; the last one.
    async fn reserve_positions(&self, count: u64) -> Result<u64, StoreError> {
        let updated = self
            .client
            .update_item()
            .table_name(&*self.table)
            .set_key(Some(items::key(items::POSITION_COUNTER.to_owned(), 0)))
            .update_expression("ADD #next :count")
            .expression_attribute_names("#next", "next")
            .expression_attribute_values(":count", items::n(count))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| sdk_error(Operation::Append, e))?;
        let attributes = updated.attributes.unwrap_or_default();
        items::Fields::new(&attributes, "position counter").u64("next")
    }

    fn check(
        &self,
        pk: &str,
        version: u64,
        condition: &str,
    ) -> Result<TransactWriteItem, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(&*self.table)
            .set_key(Some(items::key(pk.to_owned(), version)))
            .condition_expression(condition)
            .build()
            .map_err(|e| StoreError::database(Operation::Append, e))?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    fn put(&self, item: Item, condition: &str) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&*self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .build()
            .map_err(|e| StoreError::database(Operation::Append, e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// A refused append: a duplicate command id's first outcome, or the version conflict.
    async fn refused(
        &self,
        stream: StreamRef<'_>,
        expected: ExpectedVersion,
        meta: &CommitMeta,
    ) -> Result<AppendOutcome, StoreError> {
        if let Some(first) = self.first_outcome(stream, meta).await? {
            return Ok(first);
        }
        let actual = self.version(stream).await?;
        Err(wrong_version(stream, expected, actual))
    }

    /// The first outcome of `meta`'s command id, if it has one; refused when that command
    /// had another fingerprint.
    async fn first_outcome(
        &self,
        stream: StreamRef<'_>,
        meta: &CommitMeta,
    ) -> Result<Option<AppendOutcome>, StoreError> {
        let Some(command_id) = meta.command_id else {
            return Ok(None);
        };
        self.outcome_of(command_id)
            .await?
            .map(|first| first.repeated_by(stream, meta))
            .transpose()
    }

    /// The first of `events` whose id is already taken.
    async fn taken_event_id<'e>(
        &self,
        events: &'e [NewEvent],
    ) -> Result<Option<&'e NewEvent>, StoreError> {
        for event in events {
            let got = self
                .client
                .get_item()
                .table_name(&*self.table)
                .set_key(Some(items::key(items::event_id_key(event.event_id), 0)))
                .consistent_read(true)
                .projection_expression("pk")
                .send()
                .await
                .map_err(|e| sdk_error(Operation::Append, e))?;
            if got.item.is_some() {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }
}

/// Sorts a failed transaction: cancelled for a condition, for contention, or (`None`)
/// another error.
fn cancelled<R>(error: &SdkError<TransactWriteItemsError, R>) -> Option<Cancelled> {
    let SdkError::ServiceError(service) = error else {
        return None;
    };
    let TransactWriteItemsError::TransactionCanceledException(cancel) = service.err() else {
        return None;
    };
    let codes: Vec<&str> = cancel
        .cancellation_reasons()
        .iter()
        .filter_map(|r| r.code())
        .filter(|code| *code != "None")
        .collect();
    if codes.contains(&"ConditionalCheckFailed") {
        Some(Cancelled::Condition)
    } else if !codes.is_empty()
        && codes.iter().all(|code| {
            matches!(
                *code,
                "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
            )
        })
    {
        Some(Cancelled::Contention)
    } else {
        None
    }
}

fn wrong_version(
    stream: StreamRef<'_>,
    expected: ExpectedVersion,
    actual: Option<u64>,
) -> StoreError {
    StoreError::WrongExpectedVersion {
        stream_type: stream.stream_type.to_owned(),
        stream_id: stream.stream_id.to_owned(),
        expected,
        actual,
    }
}

fn duplicate_event_id(stream: StreamRef<'_>, event: &NewEvent) -> StoreError {
    StoreError::DuplicateEventId {
        stream_type: stream.stream_type.to_owned(),
        stream_id: stream.stream_id.to_owned(),
        event_id: event.event_id,
    }
}
