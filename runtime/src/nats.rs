//! The event bus on NATS JetStream (feature `nats`).
//!
//! Two pieces, both driven by the one [`Runner`](crate::Runner):
//!
//! - [`Publisher`], a handler: run on the store's global log it relays every event (or a
//!   filtered set) to JetStream, one message per event with the event id as
//!   `Nats-Msg-Id` and the metadata in headers ([`header`]); the runner's checkpoint moves
//!   only once the broker acknowledged the batch's messages.
//! - [`JetStreamSource`], a [`Source`]: a durable JetStream consumer feeding
//!   projections and reactors of another service. Its cursor is the JetStream stream
//!   sequence, checkpointed in the consuming service's store in the handler's transaction;
//!   messages are acknowledged after that commit, and redeliveries at or below the
//!   checkpoint are skipped.
//!
//! The guide's page `docs/event-bus.md` states the delivery guarantees and failure modes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The NATS client this module is built on, for connecting.
pub use async_nats;
use async_nats::header::HeaderMap;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, Context};
use futures_util::StreamExt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{BoxError, ProjectionError};
use crate::projection::Projection;
use crate::source::{Batch, LiveSource, Source};
use crate::store::{EventFilter, EventMeta, RecordedEvent};

/// The header names a [`Publisher`] sets and a [`JetStreamSource`] reads.
pub mod header {
    /// The event id; JetStream drops a message whose id it saw inside its duplicate window.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// The stored event type name.
    pub const EVENT_TYPE: &str = "Annals-Event-Type";
    /// The payload's schema version.
    pub const EVENT_VERSION: &str = "Annals-Event-Version";
    /// The aggregate's stream type.
    pub const STREAM_TYPE: &str = "Annals-Stream-Type";
    /// The aggregate's id.
    pub const STREAM_ID: &str = "Annals-Stream-Id";
    /// The event's version in its stream.
    pub const STREAM_VERSION: &str = "Annals-Stream-Version";
    /// The event's position in the publishing store's global log.
    pub const POSITION: &str = "Annals-Position";
    /// The command that produced the event, when it carried an id.
    pub const COMMAND_ID: &str = "Annals-Command-Id";
    /// The correlation id.
    pub const CORRELATION_ID: &str = "Annals-Correlation-Id";
    /// The causation id.
    pub const CAUSATION_ID: &str = "Annals-Causation-Id";
    /// When the publishing store recorded the event (RFC 3339, UTC).
    pub const RECORDED_AT: &str = "Annals-Recorded-At";
    /// The user headers, as one JSON object (absent when there are none).
    pub const HEADERS: &str = "Annals-Headers";
}

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// A name cannot be a NATS subject token (empty, or holding `.`, `*`, `>` or
    /// whitespace); rename the stream or event type, or map it with
    /// [`Subjects::custom`].
    #[error("{what} `{value}` cannot be a NATS subject token: {reason}")]
    InvalidToken {
        /// What the name is (stream type, event type, subject prefix).
        what: &'static str,
        /// The name.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A subject from [`Subjects::custom`] is not a valid subject to publish to.
    #[error("subject `{subject}` for event {event_id} is not a valid NATS subject")]
    InvalidSubject {
        /// The subject.
        subject: String,
        /// The event it was made for.
        event_id: Uuid,
    },
    /// A header value would hold a line break, which NATS headers cannot carry.
    #[error("header `{header}` of event {event_id} would hold a line break")]
    InvalidHeader {
        /// The header.
        header: &'static str,
        /// The event.
        event_id: Uuid,
    },
    /// The user headers could not be encoded.
    #[error("cannot encode the headers of event {event_id}")]
    Headers {
        /// The event.
        event_id: Uuid,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// Publishing or its acknowledgement failed (the broker unreachable, no stream for
    /// the subject, a timeout).
    #[error("publishing event {event_id} to `{subject}` failed")]
    Publish {
        /// The subject.
        subject: String,
        /// The event.
        event_id: Uuid,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// Reading from the JetStream consumer failed.
    #[error("JetStream consumer `{consumer}` on stream `{stream}`: {action} failed")]
    Consumer {
        /// The stream.
        stream: String,
        /// The durable consumer.
        consumer: String,
        /// What was being done.
        action: &'static str,
        /// The client's error.
        #[source]
        source: BoxError,
    },
}

impl NatsError {
    /// Whether trying again later may succeed: broker and connection errors are; names
    /// and subjects that are invalid are not.
    pub fn is_transient(&self) -> bool {
        matches!(self, NatsError::Publish { .. } | NatsError::Consumer { .. })
    }
}

impl From<NatsError> for ProjectionError {
    fn from(error: NatsError) -> Self {
        ProjectionError::Source {
            transient: error.is_transient(),
            source: Box::new(error),
        }
    }
}

/// Checks that `value` can be one subject token.
pub fn check_token(what: &'static str, value: &str) -> Result<(), NatsError> {
    let reason = if value.is_empty() {
        "it is empty"
    } else if value.contains('.') {
        "it contains `.`"
    } else if value.contains(['*', '>']) {
        "it contains a wildcard (`*` or `>`)"
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it contains whitespace or a control character"
    } else {
        return Ok(());
    };
    Err(NatsError::InvalidToken {
        what,
        value: value.chars().take(120).collect(),
        reason,
    })
}

type SubjectFn = dyn Fn(&EventMeta) -> String + Send + Sync;

/// Which subject each event is published to.
///
/// By default `<prefix>.<stream type>.<event type>`, e.g. `events.order.OrderPlaced`, so a
/// consumer filters by aggregate (`events.order.>`) or by event (`events.*.OrderPlaced`).
/// Stream and event type names must be valid subject tokens: a name that contains `.`,
/// `*`, `>` or whitespace is refused with [`NatsError::InvalidToken`] (the runner stops
/// there, or parks the event with [`Runner::park_after`](crate::Runner::park_after)).
///
/// ```
/// use annals::nats::Subjects;
/// assert!(Subjects::prefix("shop").is_ok());
/// assert!(Subjects::prefix("shop.events").is_ok());
/// assert!(Subjects::prefix("shop.>").is_err());
/// ```
#[derive(Clone)]
pub struct Subjects {
    scheme: Scheme,
}

#[derive(Clone)]
enum Scheme {
    Prefix(String),
    Custom(Arc<SubjectFn>),
}

impl Subjects {
    /// `<prefix>.<stream type>.<event type>`; the prefix may have several tokens
    /// (`shop.events`), none of them empty or a wildcard.
    pub fn prefix(prefix: impl Into<String>) -> Result<Self, NatsError> {
        let prefix = prefix.into();
        for token in prefix.split('.') {
            check_token("subject prefix", token).map_err(|_| NatsError::InvalidToken {
                what: "subject prefix",
                value: prefix.clone(),
                reason: "each of its `.`-separated tokens must be non-empty, without wildcards or whitespace",
            })?;
        }
        Ok(Subjects {
            scheme: Scheme::Prefix(prefix),
        })
    }

    /// Any mapping from an event's metadata to a subject (checked when publishing).
    pub fn custom(subject: impl Fn(&EventMeta) -> String + Send + Sync + 'static) -> Self {
        Subjects {
            scheme: Scheme::Custom(Arc::new(subject)),
        }
    }

    /// The subject of the event with metadata `meta`.
    pub fn subject(&self, meta: &EventMeta) -> Result<String, NatsError> {
        match &self.scheme {
            Scheme::Prefix(prefix) => {
                check_token("stream type", &meta.stream_type)?;
                check_token("event type", &meta.event_type)?;
                Ok(format!("{prefix}.{}.{}", meta.stream_type, meta.event_type))
            }
            Scheme::Custom(subject) => {
                let subject = subject(meta);
                if subject
                    .split('.')
                    .any(|t| check_token("subject", t).is_err())
                {
                    return Err(NatsError::InvalidSubject {
                        subject,
                        event_id: meta.event_id,
                    });
                }
                Ok(subject)
            }
        }
    }
}

impl fmt::Debug for Subjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            Scheme::Prefix(prefix) => f.debug_tuple("Subjects::prefix").field(prefix).finish(),
            Scheme::Custom(_) => f.write_str("Subjects::custom(..)"),
        }
    }
}

/// The header names as the client takes them, built once.
mod names {
    use async_nats::HeaderName;

    use super::header;

    pub const MSG_ID: HeaderName = HeaderName::from_static(header::MSG_ID);
    pub const EVENT_TYPE: HeaderName = HeaderName::from_static(header::EVENT_TYPE);
    pub const EVENT_VERSION: HeaderName = HeaderName::from_static(header::EVENT_VERSION);
    pub const STREAM_TYPE: HeaderName = HeaderName::from_static(header::STREAM_TYPE);
    pub const STREAM_ID: HeaderName = HeaderName::from_static(header::STREAM_ID);
    pub const STREAM_VERSION: HeaderName = HeaderName::from_static(header::STREAM_VERSION);
    pub const POSITION: HeaderName = HeaderName::from_static(header::POSITION);
    pub const COMMAND_ID: HeaderName = HeaderName::from_static(header::COMMAND_ID);
    pub const CORRELATION_ID: HeaderName = HeaderName::from_static(header::CORRELATION_ID);
    pub const CAUSATION_ID: HeaderName = HeaderName::from_static(header::CAUSATION_ID);
    pub const RECORDED_AT: HeaderName = HeaderName::from_static(header::RECORDED_AT);
    pub const HEADERS: HeaderName = HeaderName::from_static(header::HEADERS);
}

/// The headers a [`Publisher`] sends with `meta`'s event.
///
/// A header value cannot hold a line break: a stream id or type name with one is refused
/// with [`NatsError::InvalidHeader`] (the user headers travel as JSON, which escapes them).
pub fn headers(meta: &EventMeta) -> Result<HeaderMap, NatsError> {
    let text = |name: &'static str, value: &str| -> Result<String, NatsError> {
        if value.contains(['\r', '\n']) {
            return Err(NatsError::InvalidHeader {
                header: name,
                event_id: meta.event_id,
            });
        }
        Ok(value.to_owned())
    };
    let mut headers = HeaderMap::new();
    headers.insert(names::MSG_ID, meta.event_id.to_string());
    headers.insert(
        names::EVENT_TYPE,
        text(header::EVENT_TYPE, &meta.event_type)?,
    );
    headers.insert(names::EVENT_VERSION, meta.event_version.to_string());
    headers.insert(
        names::STREAM_TYPE,
        text(header::STREAM_TYPE, &meta.stream_type)?,
    );
    headers.insert(names::STREAM_ID, text(header::STREAM_ID, &meta.stream_id)?);
    headers.insert(names::STREAM_VERSION, meta.version.to_string());
    headers.insert(names::POSITION, meta.position.to_string());
    for (name, id) in [
        (names::COMMAND_ID, meta.command_id),
        (names::CORRELATION_ID, meta.correlation_id),
        (names::CAUSATION_ID, meta.causation_id),
    ] {
        if let Some(id) = id {
            headers.insert(name, id.to_string());
        }
    }
    // RFC 3339 of a stored time always formats.
    if let Ok(at) = meta.recorded_at.format(&Rfc3339) {
        headers.insert(names::RECORDED_AT, at);
    }
    if !meta.headers.is_empty() {
        let json = serde_json::to_string(&meta.headers).map_err(|source| NatsError::Headers {
            event_id: meta.event_id,
            source,
        })?;
        headers.insert(names::HEADERS, json);
    }
    Ok(headers)
}

/// A handler that relays events to JetStream: the outbox relay.
///
/// Run it on the store's global log with a [`Runner`](crate::Runner) (every event, or
/// the types set with [`Runner::filter`](crate::Runner::filter)): each event becomes one message
/// on its [`Subjects`] subject, the stored JSON as payload, the event id as `Nats-Msg-Id`
/// and the metadata in [`header`]s. A batch's messages are published without waiting
/// (pipelined), before the runner's transaction begins ([`Projection::prepare`]), and every
/// acknowledgement is awaited before the checkpoint moves, so an event is acknowledged by
/// the broker before the relay moves past it; the store's write lock is not held while the
/// broker answers. The runner reads the next batch from the store meanwhile
/// ([`Projection::READ_AHEAD`]). After a crash the relay publishes again from its
/// checkpoint, and JetStream drops the messages it already stored (same `Nats-Msg-Id`,
/// inside the stream's duplicate window). With [`Runner::run`](crate::Runner::run), one
/// relay per name works at a time (the store's lease), and an unreachable broker is
/// retried with backoff.
///
/// An event that cannot be a message (a name that is not a subject token, a line break in
/// a header value) fails as the handler's error on that event: the events before it are
/// published, and the runner stops there or parks it ([`Runner::park_after`](crate::Runner::park_after)).
///
/// ```no_run
/// # async fn relay() -> Result<(), Box<dyn std::error::Error>> {
/// use annals::nats::{Publisher, Subjects};
///
/// let store = annals::SqliteStore::open("orders.db").await?;
/// let client = annals::nats::async_nats::ConnectOptions::new()
///     .retry_on_initial_connect()
///     .connect("127.0.0.1:4222")
///     .await?;
/// let publisher = Publisher::new(annals::nats::async_nats::jetstream::new(client), Subjects::prefix("shop")?);
/// annals::Runner::new(store, publisher)
///     .run(std::future::pending())
///     .await?;
/// # Ok(())
/// # }
/// ```
pub struct Publisher {
    jetstream: Context,
    subjects: Subjects,
    /// Acknowledgements to wait for: of events handed to [`Projection::handle`] without
    /// [`Projection::prepare`] first.
    pending: Vec<(Uuid, String, PublishAckFuture)>,
    /// The ids of the events the last `prepare` published and acknowledged, in order.
    prepared: Vec<Uuid>,
    /// How many of `prepared` `handle` has seen.
    handled: usize,
    /// The event `prepare` stopped at, with why it cannot be published.
    refused: Option<(Uuid, NatsError)>,
}

impl Publisher {
    /// Publishes through `jetstream` to `subjects`.
    pub fn new(jetstream: Context, subjects: Subjects) -> Self {
        Publisher {
            jetstream,
            subjects,
            pending: Vec::new(),
            prepared: Vec::new(),
            handled: 0,
            refused: None,
        }
    }

    /// The subject and message of `event`.
    fn message(&self, event: &RecordedEvent) -> Result<(String, PublishMessage), NatsError> {
        let subject = self.subjects.subject(&event.meta)?;
        let message = PublishMessage::build()
            .payload(bytes::Bytes::from(event.payload.clone()))
            .headers(headers(&event.meta)?);
        Ok((subject, message))
    }

    /// Sends one message; its acknowledgement is awaited by the caller.
    async fn send(
        &self,
        event_id: Uuid,
        subject: String,
        message: PublishMessage,
    ) -> Result<(Uuid, String, PublishAckFuture), NatsError> {
        match self.jetstream.send_publish(subject.clone(), message).await {
            Ok(ack) => Ok((event_id, subject, ack)),
            Err(error) => Err(NatsError::Publish {
                subject,
                event_id,
                source: Box::new(error),
            }),
        }
    }

    /// Waits for `acks` in order; the first one missing fails them all at once (the broker
    /// restarted, say: the others would time out one after the other), and the rest are
    /// dropped: the batch is published again from the checkpoint.
    async fn acknowledged(acks: Vec<(Uuid, String, PublishAckFuture)>) -> Result<(), NatsError> {
        for (event_id, subject, ack) in acks {
            ack.await.map_err(|error| NatsError::Publish {
                subject,
                event_id,
                source: Box::new(error),
            })?;
        }
        Ok(())
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("subjects", &self.subjects)
            .field("pending", &self.pending.len())
            .field("prepared", &self.prepared.len())
            .finish_non_exhaustive()
    }
}

impl<Tx: Send + 'static> Projection<Tx> for Publisher {
    const NAME: &'static str = "annals_nats_relay";

    /// The broker's answers take most of a batch's time: the next batch is read meanwhile.
    const READ_AHEAD: bool = true;

    /// None by name: a publisher takes every event ([`Self::event_filter`]).
    fn event_types() -> Vec<&'static str> {
        Vec::new()
    }

    /// Every event; relay fewer with [`Runner::filter`](crate::Runner::filter).
    fn event_filter() -> EventFilter {
        EventFilter::all()
    }

    /// Publishes the batch, pipelined, and waits for every acknowledgement, outside the
    /// runner's transaction. Stops at the first event that cannot be a message: that one
    /// fails in [`Self::handle`], so the runner commits the ones before it first.
    async fn prepare<'a>(&'a mut self, events: &'a [RecordedEvent]) -> Result<(), ProjectionError> {
        self.prepared.clear();
        self.handled = 0;
        self.refused = None;
        self.pending.clear();
        // The batch goes out in waves: a stream's n-th event of the batch in wave n, each
        // wave pipelined, and the next sent once the broker acknowledged the whole wave.
        // So a stream never has two messages in flight: a broker that dies mid-batch may
        // lose one and store the ones after it (the client resends its buffer once
        // reconnected), and the republished one would then land after its successors.
        let mut waves: Vec<Vec<(Uuid, String, PublishMessage)>> = Vec::new();
        let mut sent: HashMap<(&str, &str), usize> = HashMap::new();
        let mut published = Vec::with_capacity(events.len());
        for event in events {
            let event_id = event.meta.event_id;
            let (subject, message) = match self.message(event) {
                Ok(message) => message,
                Err(error) => {
                    self.refused = Some((event_id, error));
                    break;
                }
            };
            let stream = (
                event.meta.stream_type.as_str(),
                event.meta.stream_id.as_str(),
            );
            let wave = sent.entry(stream).or_insert(0);
            if *wave == waves.len() {
                waves.push(Vec::new());
            }
            waves[*wave].push((event_id, subject, message));
            *wave += 1;
            published.push(event_id);
        }
        for wave in waves {
            let mut acks = Vec::with_capacity(wave.len());
            for (event_id, subject, message) in wave {
                acks.push(self.send(event_id, subject, message).await?);
            }
            Self::acknowledged(acks).await?;
        }
        self.prepared = published;
        Ok(())
    }

    async fn handle<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        _tx: &'a mut Tx,
    ) -> Result<(), ProjectionError> {
        let event_id = event.meta.event_id;
        if self.prepared.get(self.handled) == Some(&event_id) {
            self.handled += 1;
            return Ok(());
        }
        if let Some((refused, _)) = &self.refused {
            if *refused == event_id {
                let (_, error) = self.refused.take().expect("checked above");
                return Err(error.into());
            }
        }
        // Not prepared: published now, acknowledged in `finish_batch`, with one message in
        // flight at a time (as in `prepare`'s waves, a stream's messages never overtake).
        let (subject, message) = self.message(event)?;
        Self::acknowledged(std::mem::take(&mut self.pending)).await?;
        let ack = self.send(event_id, subject, message).await?;
        self.pending.push(ack);
        Ok(())
    }

    async fn finish_batch<'a>(&'a mut self, _tx: &'a mut Tx) -> Result<(), ProjectionError> {
        self.prepared.clear();
        self.handled = 0;
        Ok(Self::acknowledged(std::mem::take(&mut self.pending)).await?)
    }
}

/// How long the broker waits for an acknowledgement before delivering a message again,
/// unless set with [`JetStreamSource::ack_wait`].
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// How long a pull may go unanswered beyond its own expiry before it is given up.
const PULL_DEADLINE: Duration = Duration::from_secs(5);

/// A durable JetStream consumer as a [`Source`]: another service's events, for this
/// service's projections and reactors.
///
/// The cursor is the JetStream stream sequence, stored as the runner's checkpoint in the
/// consuming store, in the handler's transaction: a read model in that store changes
/// exactly once per message. Messages are acknowledged after the commit
/// ([`Source::committed`]); one delivered again (the consumer died between commit and
/// acknowledgement, or the acknowledgement was lost) is at or below the checkpoint and is
/// acknowledged and skipped. Messages are handed over in stream order, so each stream's
/// events keep their order.
///
/// On its first read the source lines the durable consumer up with the checkpoint: it is
/// created to start after the checkpoint when absent, and created anew there when the
/// broker had delivered messages past the checkpoint that were never committed (their
/// redelivery would come after newer messages). It does the same when the broker's
/// delivery numbers jump (a pull's answer lost with a dropped connection). A message whose headers do not make an
/// event (not published by a [`Publisher`], unless [`JetStreamSource::decode_with`] makes
/// one of it) or whose payload is not UTF-8 is [unreadable](Batch::unreadable): the runner
/// stops on it or parks it. It is handed over as a placeholder that keeps the whole message
/// (marked with [`UNREADABLE_MARK`]), so that retrying it
/// ([`Runner::retry_parked`](crate::Runner::retry_parked)) reads it again rather than
/// handing the placeholder to the handler.
///
/// ```no_run
/// # async fn consume<P: annals::Projection<annals::SqliteTx>>(projection: P) -> Result<(), Box<dyn std::error::Error>> {
/// use annals::nats::JetStreamSource;
///
/// let store = annals::SqliteStore::open("inventory.db").await?;
/// let client = annals::nats::async_nats::connect("127.0.0.1:4222").await?;
/// let source = JetStreamSource::new(annals::nats::async_nats::jetstream::new(client), "SHOP", "inventory")
///     .filter_subject("shop.order.>");
/// annals::Runner::with_source(store, source, projection)
///     .park_after(3)
///     .run(std::future::pending())
///     .await?;
/// # Ok(())
/// # }
/// ```
pub struct JetStreamSource {
    jetstream: Context,
    stream: String,
    durable: String,
    filter_subject: String,
    ack_wait: Duration,
    consumer: Option<PullConsumer>,
    /// Messages received and not yet acknowledged, by stream sequence.
    buffer: BTreeMap<u64, jetstream::Message>,
    /// The highest sequence acknowledged: a read after less than this rewinds.
    acked_through: u64,
    /// The consumer sequence the next delivery must carry: the broker numbers every
    /// delivery (redeliveries too), so a jump means deliveries were lost on the way.
    next_delivery: Option<u64>,
    /// Messages delivered again at or below the checkpoint, acknowledged and skipped.
    redeliveries_skipped: u64,
    /// Makes events of the messages the headers do not make one of.
    decoder: Option<Arc<Decoder>>,
}

type Decoder = dyn Fn(&Received<'_>) -> Result<RecordedEvent, String> + Send + Sync;

/// A message as the source received it: for a decoder of messages that a [`Publisher`] did
/// not publish ([`JetStreamSource::decode_with`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Received<'a> {
    /// The JetStream stream sequence.
    pub sequence: u64,
    /// The subject it was published to.
    pub subject: &'a str,
    /// Its headers, if it has any.
    pub headers: Option<&'a HeaderMap>,
    /// The payload.
    pub payload: &'a [u8],
}

/// The key of an unreadable message's placeholder event's user headers that marks it as
/// one (its value is the JetStream stream's name); the placeholder's payload is then the
/// message as received ([`JetStreamSource`]'s docs).
pub const UNREADABLE_MARK: &str = "annals-nats-unreadable";

/// An unreadable message as kept in its placeholder's payload: what is needed to read it
/// again.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptMessage {
    sequence: u64,
    subject: String,
    /// Every header value, in order; `None` for a message without headers.
    headers: Option<Vec<(String, String)>>,
    /// The payload, when it is text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    /// The payload's bytes, when it is not text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_bytes: Option<Vec<u8>>,
}

impl JetStreamSource {
    /// The durable consumer `durable` on JetStream stream `stream` (the stream must
    /// exist; the consumer is created when absent).
    pub fn new(jetstream: Context, stream: impl Into<String>, durable: impl Into<String>) -> Self {
        JetStreamSource {
            jetstream,
            stream: stream.into(),
            durable: durable.into(),
            filter_subject: String::new(),
            ack_wait: DEFAULT_ACK_WAIT,
            consumer: None,
            buffer: BTreeMap::new(),
            acked_through: 0,
            next_delivery: None,
            redeliveries_skipped: 0,
            decoder: None,
        }
    }

    /// Makes events of the messages whose headers do not make one (messages another
    /// producer published, or that an older or newer relay wrote differently): `decoder`
    /// gets each such message and returns its event, or why it cannot. Without one, or
    /// when it fails, the message is unreadable (stop or park). Set on a source that
    /// retries parked messages ([`Runner::retry_parked`](crate::Runner::retry_parked)), it
    /// reads them again.
    #[must_use]
    pub fn decode_with(
        mut self,
        decoder: impl Fn(&Received<'_>) -> Result<RecordedEvent, String> + Send + Sync + 'static,
    ) -> Self {
        self.decoder = Some(Arc::new(decoder));
        self
    }

    /// How many messages this source was delivered again after their commit (the consumer
    /// died, or its acknowledgement was lost, between the commit and the broker's receipt
    /// of the acknowledgement), and acknowledged and skipped as already applied.
    pub fn redeliveries_skipped(&self) -> u64 {
        self.redeliveries_skipped
    }

    /// The event `message` carries, or why it is not one.
    fn decode(&self, message: &Received<'_>) -> Result<RecordedEvent, String> {
        let reason = match decode(message) {
            Ok(event) => return Ok(event),
            Err(reason) => reason,
        };
        match &self.decoder {
            None => Err(reason),
            Some(decoder) => {
                decoder(message).map_err(|e| format!("{reason}; the source's decoder: {e}"))
            }
        }
    }

    /// Only messages on subjects matching `subject` (e.g. `shop.order.>`).
    #[must_use]
    pub fn filter_subject(mut self, subject: impl Into<String>) -> Self {
        self.filter_subject = subject.into();
        self
    }

    /// How long the broker waits for an acknowledgement before delivering again (default
    /// [`DEFAULT_ACK_WAIT`]); longer than a batch takes to handle.
    #[must_use]
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    fn error(&self, action: &'static str, source: impl Into<BoxError>) -> NatsError {
        NatsError::Consumer {
            stream: self.stream.clone(),
            consumer: self.durable.clone(),
            action,
            source: source.into(),
        }
    }

    /// The consumer, lined up with checkpoint `after` (see the type's docs).
    async fn aligned(&mut self, after: u64) -> Result<PullConsumer, NatsError> {
        if let Some(consumer) = &self.consumer {
            if after >= self.acked_through {
                return Ok(consumer.clone());
            }
        }
        self.buffer.clear();
        self.consumer = None;
        let stream = self
            .jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|e| self.error("finding the stream", e))?;
        let existing = match stream.consumer_info(&self.durable).await {
            Ok(info) => Some(info.clone()),
            Err(error)
                if error.kind()
                    == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound =>
            {
                None
            }
            Err(error) => {
                return Err(self.error("reading the consumer", error));
            }
        };
        let mut reuse = false;
        if let Some(info) = existing {
            // Delivered past the checkpoint and never committed: their redelivery would come
            // after newer messages, so start over from the checkpoint.
            let filter_moved = info.config.filter_subject != self.filter_subject;
            if info.delivered.stream_sequence > after || filter_moved {
                stream
                    .delete_consumer(&self.durable)
                    .await
                    .map_err(|e| self.error("resetting the consumer", e))?;
            } else {
                reuse = true;
            }
        }
        let consumer: PullConsumer = if reuse {
            stream
                .get_consumer(&self.durable)
                .await
                .map_err(|e| self.error("reading the consumer", e))?
        } else {
            let deliver_policy = if after == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                }
            };
            stream
                .create_consumer(pull::Config {
                    durable_name: Some(self.durable.clone()),
                    deliver_policy,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_deliver: -1,
                    filter_subject: self.filter_subject.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|e| self.error("creating the consumer", e))?
        };
        self.acked_through = after;
        self.next_delivery = None;
        self.consumer = Some(consumer.clone());
        Ok(consumer)
    }

    /// Takes a finished pull's messages into the buffer; on an error the consumer is lined
    /// up again on the next read, since messages of an interrupted pull count as delivered.
    /// A pull the broker forgot (it restarted meanwhile) never ends: past `deadline` it is
    /// given up like one that failed.
    async fn receive(
        &mut self,
        after: u64,
        messages: Result<pull::Batch, NatsError>,
        deadline: Duration,
    ) -> Result<(), NatsError> {
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                self.consumer = None;
                return Err(error);
            }
        };
        let deadline = tokio::time::Instant::now() + deadline;
        let mut lost = false;
        loop {
            let message = match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(_) => {
                    self.consumer = None;
                    return Err(self.error(
                        "receiving messages",
                        "the pull got no answer in time (the broker may have restarted)",
                    ));
                }
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    self.consumer = None;
                    return Err(self.error("receiving messages", error));
                }
            };
            let (sequence, delivery) = match message.info() {
                Ok(info) => (info.stream_sequence, info.consumer_sequence),
                Err(error) => {
                    self.consumer = None;
                    return Err(self.error("reading a message's sequence", error));
                }
            };
            if self.next_delivery.is_some_and(|next| next != delivery) {
                // Deliveries lost on the way (a dropped connection): the broker counts them
                // as delivered and would send them again only after newer ones. Line the
                // consumer up with the checkpoint again (the rest of this pull is drained).
                lost = true;
            }
            self.next_delivery = Some(delivery + 1);
            if sequence <= after {
                // Redelivered after its commit: acknowledge, skip.
                message
                    .ack()
                    .await
                    .map_err(|e| self.error("acknowledging a redelivery", e))?;
                self.redeliveries_skipped += 1;
            } else {
                self.buffer.insert(sequence, message);
            }
        }
        if lost {
            self.consumer = None;
        }
        Ok(())
    }

    /// Acknowledges and drops buffered messages at or below `through`.
    async fn ack_through(&mut self, through: u64) -> Result<(), NatsError> {
        let rest = self.buffer.split_off(&(through + 1));
        let done = std::mem::replace(&mut self.buffer, rest);
        for message in done.into_values() {
            message
                .ack()
                .await
                .map_err(|e| self.error("acknowledging", e))?;
        }
        self.acked_through = self.acked_through.max(through);
        Ok(())
    }
}

impl fmt::Debug for JetStreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamSource")
            .field("stream", &self.stream)
            .field("durable", &self.durable)
            .field("filter_subject", &self.filter_subject)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

/// The message as the source received it.
fn received(sequence: u64, message: &jetstream::Message) -> Received<'_> {
    Received {
        sequence,
        subject: message.subject.as_str(),
        headers: message.headers.as_ref(),
        payload: &message.payload,
    }
}

/// The event a publisher's message carries, or why it is not one.
fn decode(message: &Received<'_>) -> Result<RecordedEvent, String> {
    let sequence = message.sequence;
    let headers = message
        .headers
        .ok_or_else(|| format!("message {sequence} on `{}` has no headers", message.subject))?;
    let text = |name: &str| -> Result<&str, String> {
        headers
            .get(name)
            .map(|v| v.as_str())
            .ok_or_else(|| format!("message {sequence} has no `{name}` header"))
    };
    fn parse<T: std::str::FromStr>(sequence: u64, name: &str, value: &str) -> Result<T, String> {
        value
            .parse()
            .map_err(|_| format!("message {sequence}: header `{name}` is not valid: `{value}`"))
    }
    let optional_id = |name: &str| -> Result<Option<Uuid>, String> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => parse(sequence, name, value.as_str()).map(Some),
        }
    };
    let recorded_at = OffsetDateTime::parse(text(header::RECORDED_AT)?, &Rfc3339)
        .map_err(|e| format!("message {sequence}: header `{}`: {e}", header::RECORDED_AT))?;
    let user_headers = match headers.get(header::HEADERS) {
        None => Default::default(),
        Some(json) => serde_json::from_str(json.as_str())
            .map_err(|e| format!("message {sequence}: header `{}`: {e}", header::HEADERS))?,
    };
    let meta = EventMeta {
        position: parse(sequence, header::POSITION, text(header::POSITION)?)?,
        stream_type: text(header::STREAM_TYPE)?.to_owned(),
        stream_id: text(header::STREAM_ID)?.to_owned(),
        version: parse(
            sequence,
            header::STREAM_VERSION,
            text(header::STREAM_VERSION)?,
        )?,
        event_type: text(header::EVENT_TYPE)?.to_owned(),
        event_version: parse(
            sequence,
            header::EVENT_VERSION,
            text(header::EVENT_VERSION)?,
        )?,
        event_id: parse(sequence, header::MSG_ID, text(header::MSG_ID)?)?,
        command_id: optional_id(header::COMMAND_ID)?,
        correlation_id: optional_id(header::CORRELATION_ID)?,
        causation_id: optional_id(header::CAUSATION_ID)?,
        recorded_at,
        headers: user_headers,
    };
    let payload = String::from_utf8(message.payload.to_vec())
        .map_err(|_| format!("message {sequence}: the payload is not UTF-8"))?;
    Ok(RecordedEvent::new(meta, payload))
}

/// What an unreadable message is handed over as (and parked as): what its headers tell
/// for listing, [`UNREADABLE_MARK`] in the user headers, and the whole message as payload,
/// so that [`Source::reread`] reads it again.
fn unreadable_event(stream: &str, message: &Received<'_>) -> RecordedEvent {
    let header = |name: &str| {
        message
            .headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    let mut headers = crate::store::Headers::default();
    headers.insert(UNREADABLE_MARK.to_owned(), stream.to_owned());
    let meta = EventMeta {
        position: message.sequence,
        stream_type: header(header::STREAM_TYPE),
        stream_id: header(header::STREAM_ID),
        version: 0,
        event_type: header(header::EVENT_TYPE),
        event_version: 0,
        event_id: header(header::MSG_ID).parse().unwrap_or_default(),
        command_id: None,
        correlation_id: None,
        causation_id: None,
        recorded_at: OffsetDateTime::UNIX_EPOCH,
        headers,
    };
    let (payload, payload_bytes) = match std::str::from_utf8(message.payload) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(message.payload.to_vec())),
    };
    let kept = KeptMessage {
        sequence: message.sequence,
        subject: message.subject.to_owned(),
        headers: message.headers.map(|h| {
            let mut all: Vec<(String, String)> = h
                .iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.to_string(), v.as_str().to_owned()))
                })
                .collect();
            all.sort();
            all
        }),
        payload,
        payload_bytes,
    };
    // Strings, numbers and byte lists always serialize.
    let json = serde_json::to_string(&kept).unwrap_or_default();
    RecordedEvent::new(meta, json)
}

impl Source for JetStreamSource {
    type Cursor = u64;

    async fn read<'a>(
        &'a mut self,
        after: &'a u64,
        limit: usize,
        filter: &'a EventFilter,
    ) -> Result<Batch<u64>, ProjectionError> {
        let after = *after;
        // A second round when the first found deliveries lost and lined the consumer up.
        for _ in 0..2 {
            let consumer = self.aligned(after).await?;
            self.ack_through(after).await?;
            let buffered = self.buffer.len();
            if buffered >= limit {
                break;
            }
            let pull = consumer
                .fetch()
                .max_messages(limit - buffered)
                .messages()
                .await
                .map_err(|e| self.error("fetching messages", e));
            self.receive(after, pull, PULL_DEADLINE).await?;
            if self.consumer.is_some() {
                break;
            }
        }
        if self.consumer.is_none() {
            return Err(self
                .error("receiving messages", "deliveries were lost twice in a row")
                .into());
        }
        let mut batch = Batch::new(Vec::new(), after);
        for (&sequence, message) in self.buffer.range(after + 1..).take(limit) {
            batch.end = sequence;
            let message = received(sequence, message);
            match self.decode(&message) {
                Ok(event) if filter.matches(&event.meta.event_type) => batch.events.push(event),
                Ok(_) => {}
                Err(reason) => {
                    let event = unreadable_event(&self.stream, &message);
                    // A message of a type the handler does not take is skipped even when
                    // the rest of it is broken.
                    if event.meta.event_type.is_empty() || filter.matches(&event.meta.event_type) {
                        batch.unreadable.insert(batch.events.len(), reason);
                        batch.events.push(event);
                    }
                }
            }
        }
        Ok(batch)
    }

    /// The stream's last sequence.
    async fn head(&self) -> Result<u64, ProjectionError> {
        let mut stream = self
            .jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|e| self.error("finding the stream", e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| self.error("reading the stream", e))?;
        Ok(info.state.last_sequence)
    }

    async fn committed<'a>(&'a mut self, through: &'a u64) -> Result<(), ProjectionError> {
        Ok(self.ack_through(*through).await?)
    }

    /// An unreadable message's placeholder ([`UNREADABLE_MARK`]) is decoded again from the
    /// message it keeps, with this source's decoder ([`Self::decode_with`]).
    fn reread(&self, parked: &RecordedEvent) -> Option<Result<RecordedEvent, String>> {
        if parked.meta.headers.get(UNREADABLE_MARK)? != &self.stream {
            return None;
        }
        let kept: KeptMessage = match serde_json::from_str(&parked.payload) {
            Ok(kept) => kept,
            Err(e) => return Some(Err(format!("the parked message does not read back: {e}"))),
        };
        let headers = kept.headers.map(|all| {
            let mut headers = HeaderMap::new();
            for (name, value) in all {
                headers.append(name.as_str(), value);
            }
            headers
        });
        let payload = match (kept.payload, kept.payload_bytes) {
            (Some(text), _) => text.into_bytes(),
            (None, Some(bytes)) => bytes,
            (None, None) => Vec::new(),
        };
        Some(self.decode(&Received {
            sequence: kept.sequence,
            subject: &kept.subject,
            headers: headers.as_ref(),
            payload: &payload,
        }))
    }
}

impl LiveSource for JetStreamSource {
    async fn wait<'a>(
        &'a mut self,
        after: &'a u64,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        let after = *after;
        let consumer = self.aligned(after).await?;
        if self.buffer.range(after + 1..).next().is_some() {
            return Ok(());
        }
        // One message or the timeout; the pull is drained to its end either way, so no
        // delivered message is left behind.
        let pull = consumer
            .batch()
            .max_messages(1)
            .expires(timeout)
            .messages()
            .await
            .map_err(|e| self.error("waiting for messages", e));
        Ok(self.receive(after, pull, timeout + PULL_DEADLINE).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CommitMeta, NewEvent, StreamRef};

    fn meta(stream_type: &str, event_type: &str) -> EventMeta {
        let event = NewEvent::new(event_type, 2, "{}".to_owned());
        let commit = CommitMeta::new()
            .correlation_id(Uuid::now_v7())
            .header("tenant", "acme");
        EventMeta::recorded(
            StreamRef::new(stream_type, "42"),
            3,
            7,
            &event,
            &commit,
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn names_that_are_not_tokens_are_refused_with_the_reason() {
        let subjects = Subjects::prefix("shop.events").unwrap();
        assert_eq!(
            subjects.subject(&meta("Order", "OrderPlaced")).unwrap(),
            "shop.events.Order.OrderPlaced"
        );
        for (stream_type, event_type, message) in [
            ("Order", "Placed.v2", "event type `Placed.v2` cannot be a NATS subject token: it contains `.`"),
            ("Ord*er", "Placed", "stream type `Ord*er` cannot be a NATS subject token: it contains a wildcard (`*` or `>`)"),
            ("Order", "Placed>", "event type `Placed>` cannot be a NATS subject token: it contains a wildcard (`*` or `>`)"),
            ("Order", "Order Placed", "event type `Order Placed` cannot be a NATS subject token: it contains whitespace or a control character"),
            ("", "Placed", "stream type `` cannot be a NATS subject token: it is empty"),
        ] {
            let error = subjects.subject(&meta(stream_type, event_type)).unwrap_err();
            assert_eq!(error.to_string(), message);
            assert!(!error.is_transient());
        }
        for prefix in ["", ".", "shop.", "shop..x", "shop.*", ">", "sh op"] {
            assert!(Subjects::prefix(prefix).is_err(), "{prefix:?}");
        }
    }

    #[test]
    fn a_custom_subject_is_checked() {
        let by_tenant = Subjects::custom(|m| format!("t.{}.{}", m.headers["tenant"], m.event_type));
        assert_eq!(
            by_tenant.subject(&meta("Order", "Placed")).unwrap(),
            "t.acme.Placed"
        );
        let wild = Subjects::custom(|m| format!("t.*.{}", m.event_type));
        assert!(matches!(
            wild.subject(&meta("Order", "Placed")),
            Err(NatsError::InvalidSubject { .. })
        ));
    }

    #[test]
    fn a_line_break_in_a_header_value_is_refused() {
        let mut meta = meta("Order", "Placed");
        meta.stream_id = "4\n2".to_owned();
        let error = headers(&meta).unwrap_err();
        assert!(matches!(
            error,
            NatsError::InvalidHeader {
                header: header::STREAM_ID,
                ..
            }
        ));
        assert!(!error.is_transient());
    }

    #[test]
    fn headers_carry_the_metadata() {
        let meta = meta("Order", "Placed");
        let headers = headers(&meta).unwrap();
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(get(header::MSG_ID), Some(meta.event_id.to_string()));
        assert_eq!(get(header::EVENT_VERSION).as_deref(), Some("2"));
        assert_eq!(get(header::STREAM_ID).as_deref(), Some("42"));
        assert_eq!(get(header::STREAM_VERSION).as_deref(), Some("3"));
        assert_eq!(get(header::POSITION).as_deref(), Some("7"));
        assert_eq!(
            get(header::RECORDED_AT).as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        assert_eq!(
            get(header::HEADERS).as_deref(),
            Some(r#"{"tenant":"acme"}"#)
        );
        assert_eq!(get(header::COMMAND_ID), None);
        assert_eq!(
            get(header::CORRELATION_ID),
            meta.correlation_id.map(|id| id.to_string())
        );
    }
}
