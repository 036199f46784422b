//! The table's items: their keys and attributes, written and read back.
//!
//! One table holds every kind of item, told apart by the partition key's prefix. Stream
//! types and ids never hold control characters (`validate_stream`), so the unit separator
//! (U+001F) between the parts of a key is unambiguous.
//!
//! | item | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | event | `stream␟{type}␟{id}` | version | position, event type and version, ids, recorded-at, headers, payload |
//! | snapshot | `snapshot␟{type}␟{id}` | version | snapshot version, state |
//! | command outcome | `command␟{uuid}` | 0 | stream type and id, first and last version, last position, fingerprint |
//! | event id taken | `event␟{uuid}` | 0 | stream type and id |
//! | position counter | `position` | 0 | `next`: the last position handed out |

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StoreError;
use crate::store::{AppendOutcome, EventMeta, Headers, RecordedEvent, StreamEvent, StreamRef};

/// The partition key attribute (a string).
pub(crate) const PK: &str = "pk";
/// The sort key attribute (a number).
pub(crate) const SK: &str = "sk";

const SEPARATOR: char = '\u{1f}';
const STREAM: &str = "stream";
const SNAPSHOT: &str = "snapshot";
const COMMAND: &str = "command";
const EVENT_ID: &str = "event";
/// The key of the position counter.
pub(crate) const POSITION_COUNTER: &str = "position";

/// An item as the SDK passes it.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// The partition key of a stream's events.
pub(crate) fn stream_key(stream: StreamRef<'_>) -> String {
    format!(
        "{STREAM}{SEPARATOR}{}{SEPARATOR}{}",
        stream.stream_type, stream.stream_id
    )
}

/// The partition key of a stream's snapshots.
pub(crate) fn snapshot_key(stream: StreamRef<'_>) -> String {
    format!(
        "{SNAPSHOT}{SEPARATOR}{}{SEPARATOR}{}",
        stream.stream_type, stream.stream_id
    )
}

/// The partition key of a command id's outcome.
pub(crate) fn command_key(command_id: Uuid) -> String {
    format!("{COMMAND}{SEPARATOR}{}", command_id.hyphenated())
}

/// The partition key that marks an event id as taken.
pub(crate) fn event_id_key(event_id: Uuid) -> String {
    format!("{EVENT_ID}{SEPARATOR}{}", event_id.hyphenated())
}

/// The stream an event item's partition key names, if it is an event item's.
pub(crate) fn stream_of_key(pk: &str) -> Option<(&str, &str)> {
    let rest = pk.strip_prefix(STREAM)?.strip_prefix(SEPARATOR)?;
    rest.split_once(SEPARATOR)
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The key of an item: partition key and sort key.
pub(crate) fn key(pk: String, sk: u64) -> Item {
    Item::from([(PK.to_owned(), s(pk)), (SK.to_owned(), n(sk))])
}

/// Unix microseconds; `OffsetDateTime` stays far inside `i64` microseconds.
pub(crate) fn micros(time: OffsetDateTime) -> i64 {
    let micros = time.unix_timestamp_nanos() / 1000;
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// What is wrong with a stored item, as a corrupt-record error.
fn corrupt(position: Option<u64>, reason: String) -> StoreError {
    StoreError::Corrupt { position, reason }
}

/// Reads attributes of one item, naming the item in errors.
pub(crate) struct Fields<'a> {
    item: &'a Item,
    position: Option<u64>,
    what: &'a str,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(item: &'a Item, what: &'a str) -> Self {
        Fields {
            item,
            position: None,
            what,
        }
    }

    fn fail(&self, name: &str, problem: &str) -> StoreError {
        corrupt(
            self.position,
            format!("{} attribute {name}: {problem}", self.what),
        )
    }

    pub(crate) fn string(&self, name: &str) -> Result<&'a str, StoreError> {
        self.optional_string(name)?
            .ok_or_else(|| self.fail(name, "missing"))
    }

    pub(crate) fn optional_string(&self, name: &str) -> Result<Option<&'a str>, StoreError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(value)) => Ok(Some(value)),
            Some(_) => Err(self.fail(name, "not a string")),
        }
    }

    fn number_text(&self, name: &str) -> Result<&'a str, StoreError> {
        match self.item.get(name) {
            Some(AttributeValue::N(value)) => Ok(value),
            None => Err(self.fail(name, "missing")),
            Some(_) => Err(self.fail(name, "not a number")),
        }
    }

    pub(crate) fn u64(&self, name: &str) -> Result<u64, StoreError> {
        let text = self.number_text(name)?;
        text.parse()
            .map_err(|_| self.fail(name, &format!("{text} is not a count")))
    }

    pub(crate) fn u32(&self, name: &str) -> Result<u32, StoreError> {
        let text = self.number_text(name)?;
        text.parse()
            .map_err(|_| self.fail(name, &format!("{text} is out of range")))
    }

    pub(crate) fn i64(&self, name: &str) -> Result<i64, StoreError> {
        let text = self.number_text(name)?;
        text.parse()
            .map_err(|_| self.fail(name, &format!("{text} is out of range")))
    }

    fn uuid(&self, name: &str) -> Result<Option<Uuid>, StoreError> {
        self.optional_string(name)?
            .map(|text| {
                Uuid::parse_str(text)
                    .map_err(|_| self.fail(name, &format!("`{text}` is not a uuid")))
            })
            .transpose()
    }
}

/// The attributes the load path reads (`ProjectionExpression`).
pub(crate) const LOAD_ATTRIBUTES: &str = "sk, #position, event_type, event_version, payload";

/// An event item as the load path sees it.
pub(crate) fn stream_event(item: &Item) -> Result<StreamEvent, StoreError> {
    let mut fields = Fields::new(item, "event");
    let position = fields.u64("position")?;
    fields.position = Some(position);
    Ok(StreamEvent::new(
        position,
        fields.u64(SK)?,
        fields.string("event_type")?.to_owned(),
        fields.u32("event_version")?,
        fields.string("payload")?.to_owned(),
    ))
}

/// An event item, with its metadata.
pub(crate) fn recorded_event(item: &Item) -> Result<RecordedEvent, StoreError> {
    let mut fields = Fields::new(item, "event");
    let position = fields.u64("position")?;
    fields.position = Some(position);
    let pk = fields.string(PK)?;
    let (stream_type, stream_id) =
        stream_of_key(pk).ok_or_else(|| fields.fail(PK, "not an event's key"))?;
    let recorded_at = fields.i64("recorded_at")?;
    let recorded_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(recorded_at) * 1000)
        .map_err(|_| fields.fail("recorded_at", &format!("{recorded_at} is out of range")))?;
    let headers: Headers = match fields.optional_string("headers")? {
        None => Headers::new(),
        Some(json) => serde_json::from_str(json)
            .map_err(|e| fields.fail("headers", &format!("not a JSON object of strings: {e}")))?,
    };
    let event_id = fields
        .uuid("event_id")?
        .ok_or_else(|| fields.fail("event_id", "missing"))?;
    let meta = EventMeta {
        position,
        stream_type: stream_type.to_owned(),
        stream_id: stream_id.to_owned(),
        version: fields.u64(SK)?,
        event_type: fields.string("event_type")?.to_owned(),
        event_version: fields.u32("event_version")?,
        event_id,
        command_id: fields.uuid("command_id")?,
        correlation_id: fields.uuid("correlation_id")?,
        causation_id: fields.uuid("causation_id")?,
        recorded_at,
        headers,
    };
    Ok(RecordedEvent::new(
        meta,
        fields.string("payload")?.to_owned(),
    ))
}

/// An event's item.
pub(crate) fn event_item(
    stream_key: &str,
    meta: &EventMeta,
    headers: Option<&str>,
    payload: String,
) -> Item {
    let mut item = Item::with_capacity(12);
    item.insert(PK.to_owned(), s(stream_key));
    item.insert(SK.to_owned(), n(meta.version));
    item.insert("position".to_owned(), n(meta.position));
    item.insert("event_type".to_owned(), s(meta.event_type.as_str()));
    item.insert("event_version".to_owned(), n(meta.event_version));
    item.insert(
        "event_id".to_owned(),
        s(meta.event_id.hyphenated().to_string()),
    );
    for (name, id) in [
        ("command_id", meta.command_id),
        ("correlation_id", meta.correlation_id),
        ("causation_id", meta.causation_id),
    ] {
        if let Some(id) = id {
            item.insert(name.to_owned(), s(id.hyphenated().to_string()));
        }
    }
    item.insert("recorded_at".to_owned(), n(micros(meta.recorded_at)));
    if let Some(headers) = headers {
        item.insert("headers".to_owned(), s(headers));
    }
    item.insert("payload".to_owned(), s(payload));
    item
}

/// A command outcome's item, with the command's fingerprint when it has one.
pub(crate) fn command_item(
    command_id: Uuid,
    stream: StreamRef<'_>,
    outcome: &AppendOutcome,
    fingerprint: Option<&str>,
) -> Item {
    let mut item = key(command_key(command_id), 0);
    item.insert("stream_type".to_owned(), s(stream.stream_type));
    item.insert("stream_id".to_owned(), s(stream.stream_id));
    item.insert("first_version".to_owned(), n(outcome.first_version));
    item.insert("last_version".to_owned(), n(outcome.last_version));
    item.insert("last_position".to_owned(), n(outcome.last_position));
    if let Some(fingerprint) = fingerprint {
        item.insert("fingerprint".to_owned(), s(fingerprint));
    }
    item
}

/// A command's recorded outcome, as a duplicate's.
pub(crate) fn command_outcome(item: &Item) -> Result<AppendOutcome, StoreError> {
    let fields = Fields::new(item, "command outcome");
    Ok(AppendOutcome::new(
        fields.u64("first_version")?,
        fields.u64("last_version")?,
        fields.u64("last_position")?,
    )
    .with_fingerprint(fields.optional_string("fingerprint")?.map(str::to_owned))
    .into_duplicate())
}

/// The item that marks `event_id` as taken by `stream`.
pub(crate) fn event_id_item(event_id: Uuid, stream: StreamRef<'_>) -> Item {
    let mut item = key(event_id_key(event_id), 0);
    item.insert("stream_type".to_owned(), s(stream.stream_type));
    item.insert("stream_id".to_owned(), s(stream.stream_id));
    item
}

/// DynamoDB's size of an item: the UTF-8 lengths of its attribute names and values
/// (numbers counted by their digits, an upper bound).
pub(crate) fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                    _ => 1,
                }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_split_back() {
        let stream = StreamRef::new("account/x", "a/b c");
        assert_eq!(
            stream_of_key(&stream_key(stream)),
            Some(("account/x", "a/b c"))
        );
        assert_eq!(stream_of_key(&snapshot_key(stream)), None);
        assert_eq!(stream_of_key(&command_key(Uuid::nil())), None);
        assert_eq!(stream_of_key("streamer\u{1f}a\u{1f}b"), None);
    }
}
