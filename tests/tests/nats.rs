//! The event bus on NATS JetStream (feature `nats`), against the NATS at `NATS_URL`
//! (default 127.0.0.1:4222), each test with its own JetStream stream and subjects, deleted
//! at the end; the restart test runs a private `nats-server` on its own port.
//!
//! An origin service's SQLite store is relayed by [`Publisher`] to JetStream; a consuming
//! service's SQLite read model (`ledger`) is fed by [`JetStreamSource`], its checkpoint in
//! the same transaction. Every check reads both ends: each origin event reaches the ledger
//! exactly once and each stream's events in version order.
//!
//! The kill and restart proofs repeat `ANNALS_NATS_RUNS` times (default 3).
#![cfg(feature = "nats")]

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::nats::async_nats::{self, jetstream};
use annals::nats::{header, JetStreamSource, Publisher, Subjects};
use annals::source::{Batch, Source};
use annals::store::{
    CheckpointStore, CommitMeta, EventFilter, EventLog, EventStore, ExpectedVersion, NewEvent,
    ParkingStore,
};
use annals::{
    Backoff, Event, Events, Projection, ProjectionError, RecordedEvent, Runner, SqliteStore,
    SqliteTx, StreamRef, Uuid,
};
use annals_tests::TempDir;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// The consuming service's read model

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Credited {
    amount: i64,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Debited {
    amount: i64,
}

#[derive(Debug, Clone, PartialEq, Events)]
enum AccountEvent {
    Credited(Credited),
    Debited(Debited),
}

/// One row per handled event, written in the consuming store's transaction; decodes through
/// the `Events` enum, so an unknown type or a bad payload fails (and is parked).
struct Ledger;

impl Projection<SqliteTx> for Ledger {
    const NAME: &'static str = "ledger";

    fn event_types() -> Vec<&'static str> {
        AccountEvent::accepted_names()
    }

    async fn handle<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        tx: &'a mut SqliteTx,
    ) -> Result<(), ProjectionError> {
        let meta = &event.meta;
        let decoded = AccountEvent::decode(&meta.event_type, meta.event_version, &event.payload)
            .map_err(|reason| ProjectionError::Decode(annals::Error::decode(meta, reason)))?;
        let amount = match decoded {
            AccountEvent::Credited(e) => e.amount,
            AccountEvent::Debited(e) => -e.amount,
        };
        let stored = (|| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((
                i64::try_from(meta.version)?,
                serde_json::to_string(meta)?,
            ))
        })();
        let (version, meta_json) = stored.map_err(|e| handler_error(meta, e))?;
        sqlx::query(
            "INSERT INTO ledger (stream_id, version, event_id, amount, meta) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&meta.stream_id)
        .bind(version)
        .bind(meta.event_id.to_string())
        .bind(amount)
        .bind(meta_json)
        .execute(&mut **tx)
        .await
        .map_err(|e| handler_error(meta, e))?;
        Ok(())
    }
}

fn handler_error(
    meta: &annals::EventMeta,
    source: impl Into<annals::error::BoxError>,
) -> ProjectionError {
    ProjectionError::Handler {
        projection: "ledger",
        event_type: meta.event_type.clone(),
        position: meta.position,
        source: source.into(),
    }
}

async fn consuming_store(dir: &TempDir) -> SqliteStore {
    let store = SqliteStore::open(dir.path().join("consumer.db"))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE ledger (seq INTEGER PRIMARY KEY AUTOINCREMENT, stream_id TEXT NOT NULL, \
         version INTEGER NOT NULL, event_id TEXT NOT NULL, amount INTEGER NOT NULL, meta TEXT NOT NULL)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store
}

/// The ledger's rows in handling order: (stream id, version, event id).
async fn ledger(store: &SqliteStore) -> Vec<(String, i64, String)> {
    sqlx::query_as("SELECT stream_id, version, event_id FROM ledger ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

/// Every origin event in the ledger exactly once, each stream's in version order.
async fn assert_exactly_once_in_order(origin: &SqliteStore, consumer: &SqliteStore) -> usize {
    let events = origin
        .read_all(0, 10_000_000, &EventFilter::all())
        .await
        .unwrap();
    let rows = ledger(consumer).await;
    let mut seen = HashSet::new();
    for (_, _, id) in &rows {
        assert!(seen.insert(id.clone()), "event {id} handled twice");
    }
    let expected: HashSet<String> = events.iter().map(|e| e.meta.event_id.to_string()).collect();
    assert_eq!(seen.len(), rows.len());
    assert_eq!(
        expected.len(),
        rows.len(),
        "{} origin events, {} ledger rows",
        expected.len(),
        rows.len()
    );
    assert_eq!(
        seen, expected,
        "the ledger holds exactly the origin's events"
    );
    let mut versions: BTreeMap<&str, i64> = BTreeMap::new();
    for (stream, version, _) in &rows {
        let last = versions.entry(stream).or_insert(0);
        assert_eq!(*version, *last + 1, "stream {stream} out of order");
        *last = *version;
    }
    rows.len()
}

// ---------------------------------------------------------------------------------------
// The bus

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".to_owned())
}

fn runs() -> usize {
    std::env::var("ANNALS_NATS_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}

async fn connect(url: &str) -> jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis(50 * u64::try_from(attempt.min(10)).unwrap_or(10))
        })
        .connect(url)
        .await
        .unwrap();
    jetstream::new(client)
}

/// A JetStream stream of its own: name `ANNALS_<id>`, subjects `t<id>.>`; deleted by
/// [`Bus::delete`], or on drop when a test failed before.
struct Bus {
    jetstream: jetstream::Context,
    stream: String,
    prefix: String,
    deleted: bool,
    url: String,
}

impl Drop for Bus {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let (url, stream) = (self.url.clone(), self.stream.clone());
        // On a connection of its own, out of the test's runtime, which may be unwinding
        // and no longer drives the test's connection.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let delete = async {
                    let client = async_nats::connect(url.as_str()).await?;
                    jetstream::new(client).delete_stream(&stream).await?;
                    Ok::<_, async_nats::Error>(())
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), delete).await;
            });
        })
        .join();
    }
}

impl Bus {
    async fn new(url: &str) -> Bus {
        let jetstream = connect(url).await;
        let id = Uuid::new_v4().simple().to_string();
        let bus = Bus {
            jetstream,
            stream: format!("ANNALS_{id}"),
            prefix: format!("t{id}"),
            deleted: false,
            url: url.to_owned(),
        };
        bus.jetstream
            .create_stream(jetstream::stream::Config {
                name: bus.stream.clone(),
                subjects: vec![format!("{}.>", bus.prefix)],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .unwrap();
        bus
    }

    fn publisher(&self) -> Publisher {
        Publisher::new(
            self.jetstream.clone(),
            Subjects::prefix(&self.prefix).unwrap(),
        )
    }

    fn source(&self, durable: &str) -> JetStreamSource {
        JetStreamSource::new(self.jetstream.clone(), &self.stream, durable)
    }

    async fn messages(&self) -> u64 {
        let mut stream = self.jetstream.get_stream(&self.stream).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    async fn delete(mut self) {
        self.jetstream.delete_stream(&self.stream).await.unwrap();
        self.deleted = true;
    }
}

fn relay(store: &SqliteStore, bus: &Bus) -> Runner<Publisher, SqliteStore> {
    Runner::new(store.clone(), bus.publisher())
        .batch_size(100)
        .retry_backoff(Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(500),
        ))
}

fn consumer(
    store: &SqliteStore,
    source: JetStreamSource,
) -> Runner<Ledger, SqliteStore, JetStreamSource> {
    Runner::with_source(store.clone(), source, Ledger)
        .batch_size(100)
        .idle_timeout(Duration::from_millis(200))
        .retry_backoff(Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(500),
        ))
}

async fn append(store: &SqliteStore, stream: &str, event: NewEvent, meta: &CommitMeta) {
    store
        .append(
            StreamRef::new("account", stream),
            ExpectedVersion::Any,
            vec![event],
            meta,
        )
        .await
        .unwrap();
}

fn credited(amount: i64) -> NewEvent {
    NewEvent::new("Credited", 1, format!(r#"{{"amount":{amount}}}"#))
}

// ---------------------------------------------------------------------------------------
// Publish and consume

#[tokio::test]
async fn every_event_is_published_with_its_metadata_and_consumed_exactly_once() {
    let dir = TempDir::new().unwrap();
    let origin = SqliteStore::open(dir.path().join("origin.db"))
        .await
        .unwrap();
    let bus = Bus::new(&nats_url()).await;
    let correlation = Uuid::now_v7();
    let cause = Uuid::now_v7();
    let meta = CommitMeta::new()
        .correlation_id(correlation)
        .causation_id(cause)
        .header("tenant", "acme")
        .header("note", "two words\nand a line");
    for i in 0..30 {
        let event = if i % 3 == 2 {
            NewEvent::new("Debited", 1, format!(r#"{{"amount":{i}}}"#))
        } else {
            credited(i)
        };
        append(&origin, &format!("a{}", i % 4), event, &meta).await;
    }
    let mut relay = relay(&origin, &bus);
    let progress = relay.catch_up().await.unwrap();
    assert_eq!(progress.handled, 30);
    assert_eq!(relay.status().await.unwrap().position, 30);
    assert_eq!(bus.messages().await, 30);

    // The messages: subject, id, headers, payload.
    let stored = origin.read_all(0, 100, &EventFilter::all()).await.unwrap();
    let stream = bus.jetstream.get_stream(&bus.stream).await.unwrap();
    for (sequence, event) in (1..).zip(&stored) {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let m = &event.meta;
        assert_eq!(
            message.subject.as_str(),
            format!("{}.account.{}", bus.prefix, m.event_type)
        );
        let h = |name: &str| message.headers.get(name).unwrap().as_str().to_owned();
        assert_eq!(h(header::MSG_ID), m.event_id.to_string());
        assert_eq!(h(header::EVENT_TYPE), m.event_type);
        assert_eq!(h(header::EVENT_VERSION), "1");
        assert_eq!(h(header::STREAM_TYPE), "account");
        assert_eq!(h(header::STREAM_ID), m.stream_id);
        assert_eq!(h(header::STREAM_VERSION), m.version.to_string());
        assert_eq!(h(header::POSITION), m.position.to_string());
        assert_eq!(h(header::CORRELATION_ID), correlation.to_string());
        assert_eq!(h(header::CAUSATION_ID), cause.to_string());
        assert!(message.headers.get(header::COMMAND_ID).is_none());
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&h(header::HEADERS)).unwrap(),
            serde_json::json!({"tenant": "acme", "note": "two words\nand a line"})
        );
        assert_eq!(message.payload, event.payload.as_bytes());
    }

    // The consumer: exactly once, the metadata as stored at the origin.
    let consuming = consuming_store(&dir).await;
    let mut consumer = consumer(&consuming, bus.source("ledger"));
    let progress = consumer.catch_up().await.unwrap();
    assert_eq!(progress.handled, 30);
    assert_eq!(assert_exactly_once_in_order(&origin, &consuming).await, 30);
    let metas: Vec<(String,)> = sqlx::query_as("SELECT meta FROM ledger ORDER BY seq")
        .fetch_all(consuming.pool())
        .await
        .unwrap();
    for ((meta,), event) in metas.iter().zip(&stored) {
        let meta: annals::EventMeta = serde_json::from_str(meta).unwrap();
        assert_eq!(&meta, &event.meta, "metadata crosses the bus unchanged");
    }
    let status = consumer.status().await.unwrap();
    assert_eq!((status.position, status.lag()), (30, 0));

    // More events later: only those are handled, and a second catch-up does nothing.
    for i in 0..5 {
        append(&origin, "late", credited(i), &CommitMeta::new()).await;
    }
    relay.catch_up().await.unwrap();
    assert_eq!(consumer.catch_up().await.unwrap().handled, 5);
    assert_eq!(consumer.catch_up().await.unwrap().handled, 0);
    assert_eq!(assert_exactly_once_in_order(&origin, &consuming).await, 35);
    bus.delete().await;
}

#[tokio::test]
async fn a_relay_publishing_again_is_deduplicated_by_message_id() {
    let dir = TempDir::new().unwrap();
    let origin = SqliteStore::open(dir.path().join("origin.db"))
        .await
        .unwrap();
    let bus = Bus::new(&nats_url()).await;
    for i in 0..20 {
        append(
            &origin,
            &format!("a{}", i % 3),
            credited(i),
            &CommitMeta::new(),
        )
        .await;
    }
    let mut relay = relay(&origin, &bus);
    relay.catch_up().await.unwrap();
    assert_eq!(bus.messages().await, 20);
    // A relay that published and died before its checkpoint moved publishes again.
    assert_eq!(relay.reset().await.unwrap(), 20);
    assert_eq!(relay.catch_up().await.unwrap().handled, 20);
    assert_eq!(
        bus.messages().await,
        20,
        "the broker dropped the duplicates"
    );

    let consuming = consuming_store(&dir).await;
    consumer(&consuming, bus.source("ledger"))
        .catch_up()
        .await
        .unwrap();
    assert_eq!(assert_exactly_once_in_order(&origin, &consuming).await, 20);
    bus.delete().await;
}

#[tokio::test]
async fn a_name_that_is_not_a_subject_token_is_refused_clearly() {
    let dir = TempDir::new().unwrap();
    let origin = SqliteStore::open(dir.path().join("origin.db"))
        .await
        .unwrap();
    let bus = Bus::new(&nats_url()).await;
    append(&origin, "a", credited(1), &CommitMeta::new()).await;
    append(
        &origin,
        "a",
        NewEvent::new("Credited.v2", 1, r#"{"amount":2}"#.to_owned()),
        &CommitMeta::new(),
    )
    .await;
    let mut relay = relay(&origin, &bus);
    let error = relay.catch_up().await.unwrap_err();
    assert!(!error.is_transient());
    let text = annals_error_chain(&error);
    assert!(
        text.contains("event type `Credited.v2` cannot be a NATS subject token: it contains `.`"),
        "{text}"
    );
    // The batch rolled back: the checkpoint stays before it; the event before the bad one
    // was published, and will be again (deduplicated) once the name is fixed.
    assert_eq!(
        relay.status().await.unwrap().position,
        0,
        "stops before the batch"
    );
    assert_eq!(bus.messages().await, 1);
    for bad in ["", "a..b", "a.*", "a b", "x.>"] {
        assert!(Subjects::prefix(bad).is_err(), "{bad:?}");
    }
    bus.delete().await;
}

fn annals_error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

// ---------------------------------------------------------------------------------------
// Redelivery and bad input

/// The consumer killed after its commit, before its acknowledgement: a source whose
/// `committed` never runs.
struct DiesBeforeAck(JetStreamSource);

impl Source for DiesBeforeAck {
    type Cursor = u64;

    async fn read<'a>(
        &'a mut self,
        after: &'a u64,
        limit: usize,
        filter: &'a EventFilter,
    ) -> Result<Batch<u64>, ProjectionError> {
        self.0.read(after, limit, filter).await
    }

    async fn head(&self) -> Result<u64, ProjectionError> {
        self.0.head().await
    }
}

#[tokio::test]
async fn messages_redelivered_after_the_commit_change_nothing() {
    let dir = TempDir::new().unwrap();
    let origin = SqliteStore::open(dir.path().join("origin.db"))
        .await
        .unwrap();
    let bus = Bus::new(&nats_url()).await;
    for i in 0..25 {
        append(
            &origin,
            &format!("a{}", i % 5),
            credited(i),
            &CommitMeta::new(),
        )
        .await;
    }
    relay(&origin, &bus).catch_up().await.unwrap();
    let consuming = consuming_store(&dir).await;
    let ack_wait = Duration::from_millis(500);
    let source = DiesBeforeAck(bus.source("ledger").ack_wait(ack_wait));
    let mut dying = Runner::with_source(consuming.clone(), source, Ledger).batch_size(100);
    assert_eq!(dying.step().await.unwrap(), Some(25));
    drop(dying);
    assert_eq!(assert_exactly_once_in_order(&origin, &consuming).await, 25);
    let stream = bus.jetstream.get_stream(&bus.stream).await.unwrap();
    let info = stream.consumer_info("ledger").await.unwrap();
    assert_eq!(info.num_ack_pending, 25, "nothing was acknowledged");

    // A new consumer process: the broker delivers the 25 again once their wait ran out.
    tokio::time::sleep(ack_wait * 3).await;
    let mut consumer = consumer(&consuming, bus.source("ledger").ack_wait(ack_wait));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(consumer.catch_up().await.unwrap().handled, 0);
        let info = stream.consumer_info("ledger").await.unwrap();
        if info.num_ack_pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "redeliveries never acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(assert_exactly_once_in_order(&origin, &consuming).await, 25);
    bus.delete().await;
}

#[tokio::test]
async fn bad_messages_are_parked_with_their_error_and_the_rest_goes_on() {
    let dir = TempDir::new().unwrap();
    let origin = SqliteStore::open(dir.path().join("origin.db"))
        .await
        .unwrap();
    let bus = Bus::new(&nats_url()).await;
    let mut relay = relay(&origin, &bus);
    let js = bus.jetstream.clone();
    let subject = format!("{}.account.Credited", bus.prefix);
    // A good event, then bad messages between good ones of other streams.
    append(&origin, "a", credited(1), &CommitMeta::new()).await;
    relay.catch_up().await.unwrap();
    // 2: an event type the consumer's `Events` enum does not know.
    append(
        &origin,
        "b",
        NewEvent::new("Frozen", 1, "{}".to_owned()),
        &CommitMeta::new(),
    )
    .await;
    // 3: a payload that does not decode.
    append(
        &origin,
        "c",
        NewEvent::new("Credited", 1, r#"{"amount":"three"}"#.to_owned()),
        &CommitMeta::new(),
    )
    .await;
    append(&origin, "a", credited(4), &CommitMeta::new()).await;
    relay.catch_up().await.unwrap();
    // 5: a message not published by a relay (no headers), 6: a payload that is not UTF-8.
    js.publish(subject.clone(), "{\"amount\":5}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut headers =
        annals::nats::headers(&origin.read_all(0, 1, &EventFilter::all()).await.unwrap()[0].meta)
            .unwrap();
    headers.insert(header::MSG_ID, Uuid::now_v7().to_string().as_str());
    js.publish_with_headers(subject, headers, vec![0xff, 0xfe].into())
        .await
        .unwrap()
        .await
        .unwrap();
    append(&origin, "d", credited(7), &CommitMeta::new()).await;
    relay.catch_up().await.unwrap();
    assert_eq!(bus.messages().await, 7);

    let consuming = consuming_store(&dir).await;
    // Without parking the consumer stops on the first bad message, before it.
    let mut strict = consumer(&consuming, bus.source("strict")).filter(EventFilter::all());
    let error = strict.catch_up().await.unwrap_err();
    assert!(
        annals_error_chain(&error).contains("cannot decode event `Frozen` v1"),
        "{}",
        annals_error_chain(&error)
    );
    assert!(ledger(&consuming).await.is_empty(), "the batch rolled back");
    assert_eq!(strict.status().await.unwrap().position, 0);
    drop(strict);
    sqlx::query("DELETE FROM ledger")
        .execute(consuming.pool())
        .await
        .unwrap();

    let mut consumer = consumer(&consuming, bus.source("ledger"))
        .filter(EventFilter::all())
        .park_after(2);
    consumer.catch_up().await.unwrap();
    let rows: Vec<String> = ledger(&consuming).await.into_iter().map(|r| r.0).collect();
    assert_eq!(rows, ["a", "a", "d"], "every good event, once");
    let parked = consuming.parked(Some("ledger"), false).await.unwrap();
    let summary: Vec<(&str, &str)> = parked
        .iter()
        .map(|p| (p.event.meta.stream_id.as_str(), p.error.as_str()))
        .collect();
    assert_eq!(parked.len(), 4, "{summary:#?}");
    assert!(
        parked[0].error.contains("cannot decode event `Frozen` v1"),
        "{summary:#?}"
    );
    assert!(parked[1].error.contains("three"), "{summary:#?}");
    assert!(parked[2].error.contains("has no headers"), "{summary:#?}");
    assert!(parked[3].error.contains("not UTF-8"), "{summary:#?}");
    assert!(parked.iter().all(|p| p.attempts == 2));
    assert_eq!(consumer.status().await.unwrap().lag(), 0);
    // Acknowledged only as parked, past the checkpoint: nothing is pending.
    let stream = bus.jetstream.get_stream(&bus.stream).await.unwrap();
    assert_eq!(
        stream
            .consumer_info("ledger")
            .await
            .unwrap()
            .num_ack_pending,
        0
    );
    bus.delete().await;
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Frozen {
    amount: i64,
}

/// The consuming service after a deployment that knows `Frozen` (written with amount 0).
struct LedgerWithFrozen;

impl Projection<SqliteTx> for LedgerWithFrozen {
    const NAME: &'static str = "ledger";

    fn event_types() -> Vec<&'static str> {
        let mut names = AccountEvent::accepted_names();
        names.push("Frozen");
        names
    }

    async fn handle<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        tx: &'a mut SqliteTx,
    ) -> Result<(), ProjectionError> {
        if event.meta.event_type != "Frozen" {
            return Ledger.handle(event, tx).await;
        }
        let meta = &event.meta;
        Frozen::decode(meta.event_version, &event.payload)
            .map_err(|reason| ProjectionError::Decode(annals::Error::decode(meta, reason)))?;
        let version = i64::try_from(meta.version).map_err(|e| handler_error(meta, e))?;
        sqlx::query(
            "INSERT INTO ledger (stream_id, version, event_id, amount, meta) VALUES (?, ?, ?, 0, '{}')",
        )
        .bind(&meta.stream_id)
        .bind(version)
        .bind(meta.event_id.to_string())
        .execute(&mut **tx)
        .await
        .map_err(|e| handler_error(meta, e))?;
        Ok(())
    }
}

/// A decoder for the messages another producer publishes without headers: subject
/// `<prefix>.ext.<account>`, payload a `Credited`.
fn foreign(message: &annals::nats::Received<'_>) -> Result<RecordedEvent, String> {
    if message.headers.is_some() {
        return Err("not a message of the other producer".to_owned());
    }
    let account = message.subject.rsplit('.').next().unwrap_or_default();
    let payload = String::from_utf8(message.payload.to_vec()).map_err(|e| e.to_string())?;
    let event = NewEvent::new("Credited", 1, payload.clone());
    let meta = annals::EventMeta::recorded(
        StreamRef::new("account", account),
        1,
        message.sequence,
        &event,
        &CommitMeta::new(),
        time::OffsetDateTime::now_utc(),
    );
    Ok(RecordedEvent::new(meta, payload))
}

#[tokio::test]
async fn a_parked_message_is_read_again_when_retried() {
    let dir = TempDir::new().unwrap();
    let origin = SqliteStore::open(dir.path().join("origin.db"))
        .await
        .unwrap();
    let bus = Bus::new(&nats_url()).await;
    let mut relay = relay(&origin, &bus);
    let js = bus.jetstream.clone();
    // 1: good; 2: a type the consumer does not know yet.
    append(&origin, "a", credited(1), &CommitMeta::new()).await;
    append(
        &origin,
        "b",
        NewEvent::new("Frozen", 1, r#"{"amount":2}"#.to_owned()),
        &CommitMeta::new(),
    )
    .await;
    relay.catch_up().await.unwrap();
    // 3: another producer's message, without headers.
    js.publish(format!("{}.ext.e", bus.prefix), "{\"amount\":3}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // 4: a relay's message with a stream version that is not a number.
    let mut headers =
        annals::nats::headers(&origin.read_all(0, 1, &EventFilter::all()).await.unwrap()[0].meta)
            .unwrap();
    headers.insert(header::MSG_ID, Uuid::now_v7().to_string().as_str());
    headers.insert(header::STREAM_VERSION, "x");
    js.publish_with_headers(
        format!("{}.account.Credited", bus.prefix),
        headers,
        "{\"amount\":4}".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // 5: good.
    append(&origin, "d", credited(5), &CommitMeta::new()).await;
    relay.catch_up().await.unwrap();
    assert_eq!(bus.messages().await, 5);

    let consuming = consuming_store(&dir).await;
    let mut consumer = consumer(&consuming, bus.source("ledger"))
        .filter(EventFilter::all())
        .park_after(1);
    consumer.catch_up().await.unwrap();
    let streams = |rows: Vec<(String, i64, String)>| -> Vec<(String, i64)> {
        rows.into_iter().map(|(s, v, _)| (s, v)).collect()
    };
    assert_eq!(
        streams(ledger(&consuming).await),
        [("a".to_owned(), 1), ("d".to_owned(), 1)]
    );
    let parked = consumer.parked().await.unwrap();
    assert_eq!(parked.len(), 3);
    let (frozen, other, bad) = (parked[0].id, parked[1].id, parked[2].id);
    assert!(
        parked[1].error.contains("has no headers"),
        "{}",
        parked[1].error
    );
    assert!(
        parked[2]
            .error
            .contains("header `Annals-Stream-Version` is not valid: `x`"),
        "{}",
        parked[2].error
    );

    // Retried before anything changed: still unreadable, the handler gets nothing (not a
    // placeholder), and the messages stay parked with one more attempt.
    for id in [other, bad] {
        let error = consumer.retry_parked(id).await.unwrap_err();
        let text = annals_error_chain(&error);
        assert!(
            text.contains(&format!("parked event {id} is still unreadable")),
            "{text}"
        );
        assert!(!error.is_transient());
    }
    assert_eq!(ledger(&consuming).await.len(), 2, "nothing handled");
    let parked = consumer.parked().await.unwrap();
    assert_eq!(parked.len(), 3);
    assert!(parked[1].attempts == 2 && parked[2].attempts == 2);
    assert!(
        parked[1].error.contains("still unreadable"),
        "{}",
        parked[1].error
    );
    drop(consumer);

    // Deployed: a decoder for the other producer's messages and the `Frozen` type. Retry
    // reads the kept messages again and applies them.
    let source = bus.source("ledger").decode_with(foreign);
    let mut deployed = Runner::with_source(consuming.clone(), source, LedgerWithFrozen)
        .filter(EventFilter::all())
        .park_after(1);
    deployed.retry_parked(other).await.unwrap();
    deployed.retry_parked(frozen).await.unwrap();
    // The relay's message with the broken header is still no event: it stays parked.
    let error = deployed.retry_parked(bad).await.unwrap_err();
    let text = annals_error_chain(&error);
    assert!(
        text.contains("still unreadable") && text.contains("not a message of the other producer"),
        "{text}"
    );
    assert_eq!(
        streams(ledger(&consuming).await),
        [
            ("a".to_owned(), 1),
            ("d".to_owned(), 1),
            ("e".to_owned(), 1),
            ("b".to_owned(), 1)
        ]
    );
    let left: Vec<u64> = deployed
        .parked()
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(left, [bad]);
    let resolved = consuming.parked(Some("ledger"), true).await.unwrap();
    let retried = resolved
        .iter()
        .filter(|p| p.resolution == Some(annals::store::Resolution::Retried))
        .count();
    assert_eq!(retried, 2);
    // Nothing is left pending at the broker, and a catch-up has nothing to do.
    assert_eq!(deployed.catch_up().await.unwrap().handled, 0);
    bus.delete().await;
}

// ---------------------------------------------------------------------------------------
// Crashes and outages

/// Appends to a few streams until stopped; returns how many it appended.
fn keep_appending(
    store: SqliteStore,
    streams: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let stream = format!("s{}", n % u64::try_from(streams).unwrap());
            let amount = i64::try_from(n).unwrap();
            // Retried with its command id when SQLite is busy: appended once either way.
            let meta = CommitMeta::new().command_id(Uuid::now_v7());
            let mut tries = 0;
            while let Err(error) = store
                .append(
                    StreamRef::new("account", &stream),
                    ExpectedVersion::Any,
                    vec![credited(amount)],
                    &meta,
                )
                .await
            {
                tries += 1;
                assert!(tries < 100, "append keeps failing: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n += 1;
            if n.is_multiple_of(20) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        n
    })
}

const RELAY_CHILD_DB: &str = "ANNALS_NATS_RELAY_DB";
const RELAY_CHILD_PREFIX: &str = "ANNALS_NATS_RELAY_PREFIX";

/// Not a test of its own: the relay process [`a_relay_killed_mid_batch_loses_and_duplicates_nothing`]
/// starts and kills (this binary run again with the variables set); returns at once
/// otherwise.
#[tokio::test]
async fn relay_child_process() {
    let (Ok(db), Ok(prefix)) = (
        std::env::var(RELAY_CHILD_DB),
        std::env::var(RELAY_CHILD_PREFIX),
    ) else {
        return;
    };
    let store = SqliteStore::open(db).await.unwrap();
    let jetstream = connect(&nats_url()).await;
    Runner::new(
        store,
        Publisher::new(jetstream, Subjects::prefix(prefix).unwrap()),
    )
    .batch_size(200)
    .idle_timeout(Duration::from_millis(50))
    .run(std::future::pending())
    .await
    .unwrap();
}

fn spawn_relay(db: &std::path::Path, prefix: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "relay_child_process", "--test-threads=1"])
        .env(RELAY_CHILD_DB, db)
        .env(RELAY_CHILD_PREFIX, prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_loses_and_duplicates_nothing() {
    let mut killed_mid_batch = 0;
    for run in 0..runs() {
        let dir = TempDir::new().unwrap();
        let db = dir.path().join("origin.db");
        let origin = SqliteStore::open(&db).await.unwrap();
        let bus = Bus::new(&nats_url()).await;
        let stop = Arc::new(AtomicBool::new(false));
        let writer = keep_appending(origin.clone(), 7, stop.clone());
        let mut mid_batch = 0;
        for kill in 0..4u64 {
            // A backlog, so the relay is busy when it dies.
            for burst in 0..40 {
                let events = (0..10).map(credited).collect();
                let stream = format!("burst{}", (kill * 40 + burst) % 3);
                origin
                    .append(
                        StreamRef::new("account", &stream),
                        ExpectedVersion::Any,
                        events,
                        &CommitMeta::new(),
                    )
                    .await
                    .unwrap();
            }
            let mut child = spawn_relay(&db, &bus.prefix);
            // Killed as soon as it has published past its checkpoint (mid-batch), or after
            // a while if that is never seen.
            let deadline = Instant::now() + Duration::from_secs(5);
            let skew = Duration::from_millis((u64::try_from(run).unwrap() * 7 + kill * 3) % 20);
            loop {
                let checkpoint = origin.checkpoint("annals_nats_relay").await.unwrap();
                if bus.messages().await > checkpoint || Instant::now() > deadline {
                    tokio::time::sleep(skew).await;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            // Published past the checkpoint: killed between its publishes and its commit.
            let checkpoint = origin.checkpoint("annals_nats_relay").await.unwrap();
            if bus.messages().await > checkpoint {
                mid_batch += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(writer.await.unwrap() > 0);
        let appended = origin.head().await.unwrap();
        // The last relay (in this process) publishes the rest.
        relay(&origin, &bus).catch_up().await.unwrap();
        assert_eq!(
            bus.messages().await,
            appended,
            "run {run}: one message per event"
        );
        let consuming = consuming_store(&dir).await;
        consumer(&consuming, bus.source("ledger"))
            .catch_up()
            .await
            .unwrap();
        let n = assert_exactly_once_in_order(&origin, &consuming).await;
        assert_eq!(u64::try_from(n).unwrap(), appended);
        eprintln!(
            "run {run}: {appended} events, relay killed 4 times ({mid_batch} with messages \
             published past its checkpoint): each once, in order"
        );
        killed_mid_batch += mid_batch;
        bus.delete().await;
    }
    assert!(
        killed_mid_batch > 0,
        "no kill landed between publish and checkpoint"
    );
}

const CONSUMER_CHILD_DB: &str = "ANNALS_NATS_CONSUMER_DB";
const CONSUMER_CHILD_STREAM: &str = "ANNALS_NATS_CONSUMER_STREAM";
/// How long the broker waits for an acknowledgement in the consumer kill test: short, so
/// that what a killed consumer committed and never acknowledged comes again soon.
const KILL_ACK_WAIT: Duration = Duration::from_millis(400);
/// The consumer child's pause between a commit and its acknowledgement.
const COMMIT_PAUSE: Duration = Duration::from_millis(20);

/// The consumer child's source: the JetStream source, printing its count of skipped
/// redeliveries to stderr whenever it grows (the parent reads it; the child is killed).
struct ReportingSource {
    inner: JetStreamSource,
    reported: u64,
}

impl ReportingSource {
    fn report(&mut self) {
        let skipped = self.inner.redeliveries_skipped();
        if skipped != self.reported {
            self.reported = skipped;
            eprintln!("redeliveries skipped: {skipped}");
        }
    }
}

impl Source for ReportingSource {
    type Cursor = u64;

    async fn read<'a>(
        &'a mut self,
        after: &'a u64,
        limit: usize,
        filter: &'a EventFilter,
    ) -> Result<Batch<u64>, ProjectionError> {
        let batch = self.inner.read(after, limit, filter).await;
        self.report();
        batch
    }

    async fn head(&self) -> Result<u64, ProjectionError> {
        self.inner.head().await
    }

    /// Tells the parent that the batch through `through` committed, and waits a moment
    /// before the source acknowledges it: the parent kills the process in that moment,
    /// committed and not acknowledged (the source's own path from commit to acknowledgement
    /// takes well under a millisecond, too short to hit from another process).
    async fn committed<'a>(&'a mut self, through: &'a u64) -> Result<(), ProjectionError> {
        eprintln!("committed through {through}");
        tokio::time::sleep(COMMIT_PAUSE).await;
        self.inner.committed(through).await
    }
}

impl annals::source::LiveSource for ReportingSource {
    async fn wait<'a>(
        &'a mut self,
        after: &'a u64,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        let waited = self.inner.wait(after, timeout).await;
        self.report();
        waited
    }
}

/// Not a test of its own: the consumer process [`a_consumer_killed_between_commit_and_ack_applies_nothing_twice`]
/// starts and kills (this binary run again with the variables set); returns at once
/// otherwise.
#[tokio::test]
async fn consumer_child_process() {
    let (Ok(db), Ok(stream)) = (
        std::env::var(CONSUMER_CHILD_DB),
        std::env::var(CONSUMER_CHILD_STREAM),
    ) else {
        return;
    };
    let store = SqliteStore::open(db).await.unwrap();
    let source =
        JetStreamSource::new(connect(&nats_url()).await, stream, "ledger").ack_wait(KILL_ACK_WAIT);
    let source = ReportingSource {
        inner: source,
        reported: 0,
    };
    Runner::with_source(store, source, Ledger)
        .batch_size(50)
        .idle_timeout(Duration::from_millis(50))
        .retry_backoff(Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .run(std::future::pending())
        .await
        .unwrap();
}

/// A consumer child process, and the thread reading what it reports.
struct ConsumerChild {
    child: Arc<std::sync::Mutex<Child>>,
    reader: std::thread::JoinHandle<(u64, bool)>,
}

impl ConsumerChild {
    /// Starts the consumer child. With `kill_after_commit = Some(n)`, the reading thread
    /// kills it with SIGKILL as soon as it reports its `n`-th commit (before that batch is
    /// acknowledged).
    fn spawn(db: &std::path::Path, stream: &str, kill_after_commit: Option<u32>) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "consumer_child_process",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CONSUMER_CHILD_DB, db)
            .env(CONSUMER_CHILD_STREAM, stream)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let child = Arc::new(std::sync::Mutex::new(child));
        let killer = child.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let (mut skipped, mut commits, mut killed) = (0, 0, false);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("redeliveries skipped: ") {
                    skipped = skipped.max(n.trim().parse().unwrap_or(0));
                }
                if line.starts_with("committed through ") {
                    commits += 1;
                    if !killed && kill_after_commit == Some(commits) {
                        let _ = killer.lock().unwrap().kill(); // SIGKILL
                        killed = true;
                    }
                }
            }
            (skipped, killed)
        });
        ConsumerChild { child, reader }
    }

    fn running(&self) -> bool {
        self.child.lock().unwrap().try_wait().unwrap().is_none()
    }

    /// Kills the child with SIGKILL (if the reader has not already); returns the skipped
    /// redeliveries it reported and whether it was killed right after a commit.
    fn kill(self) -> (u64, bool) {
        {
            let mut child = self.child.lock().unwrap();
            let _ = child.kill();
            child.wait().unwrap();
        }
        self.reader.join().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_between_commit_and_ack_applies_nothing_twice() {
    let (mut skipped_total, mut kills_total) = (0, 0u64);
    for run in 0..runs() {
        let dir = TempDir::new().unwrap();
        let origin = SqliteStore::open(dir.path().join("origin.db"))
            .await
            .unwrap();
        let consuming = consuming_store(&dir).await;
        let db = dir.path().join("consumer.db");
        let bus = Bus::new(&nats_url()).await;
        let stop = Arc::new(AtomicBool::new(false));
        let writer = keep_appending(origin.clone(), 5, stop.clone());
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let relay_task = {
            let mut relay = relay(&origin, &bus);
            let mut done = done_rx.clone();
            tokio::spawn(async move {
                relay
                    .run(async move {
                        let _ = done.wait_for(|d| *d).await;
                    })
                    .await
            })
        };
        let (mut skipped, mut killed_after_commit) = (0, 0);
        for kill in 0..4u64 {
            // A backlog, so the consumer is busy when it dies.
            for burst in 0..20 {
                let events = (0..10).map(credited).collect();
                let stream = format!("burst{}", (kill * 20 + burst) % 3);
                origin
                    .append(
                        StreamRef::new("account", &stream),
                        ExpectedVersion::Any,
                        events,
                        &CommitMeta::new(),
                    )
                    .await
                    .unwrap();
            }
            // Every other kill lands right after a commit (the child's first to fourth),
            // the others at a moment that varies: 150 ms to 1.15 s in. Either way the next
            // consumer may get what this one committed and never acknowledged (ack wait
            // 400 ms).
            let seed = u64::try_from(run).unwrap() * 389 + kill * 257;
            let after_commit = (kill % 2 == 1).then(|| u32::try_from(seed % 4).unwrap() + 1);
            let child = ConsumerChild::spawn(&db, &bus.stream, after_commit);
            let at = 150 + seed % 1000;
            let deadline = Instant::now() + Duration::from_millis(at);
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if after_commit.is_none() {
                    assert!(
                        child.running(),
                        "run {run}: the consumer process ended on its own"
                    );
                }
            }
            if after_commit.is_some() {
                // Give it the time to commit that often.
                let deadline = Instant::now() + Duration::from_secs(5);
                while child.running() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let (skipped_by_child, after_a_commit) = child.kill();
            skipped += skipped_by_child;
            killed_after_commit += u64::from(after_a_commit);
            kills_total += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let appended = writer.await.unwrap();
        assert!(appended > 0);
        let head = origin.head().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while origin.checkpoint("annals_nats_relay").await.unwrap() < head {
            assert!(
                Instant::now() < deadline,
                "run {run}: the relay did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        done_tx.send(true).unwrap();
        relay_task.await.unwrap().unwrap();
        assert_eq!(
            bus.messages().await,
            head,
            "run {run}: one message per event"
        );

        // The last consumer (in this process) reads the rest, and skips what the killed
        // ones committed and never acknowledged as the broker delivers it again.
        let mut last = consumer(&consuming, bus.source("ledger").ack_wait(KILL_ACK_WAIT));
        let stream = bus.jetstream.get_stream(&bus.stream).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            last.catch_up().await.unwrap();
            let info = stream.consumer_info("ledger").await.unwrap();
            let rows = ledger(&consuming).await.len();
            if info.num_ack_pending == 0 && u64::try_from(rows).unwrap() == head {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {run}: {rows} of {head} events, {} unacknowledged",
                info.num_ack_pending
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        skipped += last.source().redeliveries_skipped();
        let n = assert_exactly_once_in_order(&origin, &consuming).await;
        assert_eq!(u64::try_from(n).unwrap(), head);
        eprintln!(
            "run {run}: {head} events, consumer killed 4 times ({killed_after_commit} right \
             after a commit), {skipped} redeliveries of committed messages skipped: each event \
             once, in order"
        );
        skipped_total += skipped;
        bus.delete().await;
    }
    // Each skipped redelivery is a message committed and never acknowledged: a consumer
    // killed between its commit and its acknowledgement.
    assert!(
        skipped_total > 0,
        "no kill of {kills_total} landed between a commit and its acknowledgement"
    );
}

/// A private `nats-server` with JetStream on its own port and store directory.
struct PrivateServer {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl PrivateServer {
    fn start() -> PrivateServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = TempDir::new().unwrap();
        let child = Self::spawn(port, &dir);
        PrivateServer { child, port, dir }
    }

    fn spawn(port: u16, dir: &TempDir) -> Child {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on the PATH");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = Self::spawn(self.port, &self.dir);
    }

    fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_loses_and_duplicates_nothing() {
    let mut server = PrivateServer::start();
    for run in 0..runs() {
        let dir = TempDir::new().unwrap();
        let origin = SqliteStore::open(dir.path().join("origin.db"))
            .await
            .unwrap();
        let consuming = consuming_store(&dir).await;
        let bus = Bus::new(&server.url()).await;
        let stop = Arc::new(AtomicBool::new(false));
        let writer = keep_appending(origin.clone(), 5, stop.clone());
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let relay_task = {
            let mut relay = relay(&origin, &bus)
                .on_retry(|e, _| eprintln!("relay retries: {}", annals_error_chain(e)));
            let mut done = done_rx.clone();
            tokio::spawn(async move {
                relay
                    .run(async move {
                        let _ = done.wait_for(|d| *d).await;
                    })
                    .await
            })
        };
        let consumer_task = {
            let mut consumer = consumer(
                &consuming,
                bus.source("ledger").ack_wait(Duration::from_secs(2)),
            );
            let mut done = done_rx.clone();
            tokio::spawn(async move {
                consumer
                    .run(async move {
                        let _ = done.wait_for(|d| *d).await;
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.restart();
        tokio::time::sleep(Duration::from_millis(700)).await;
        stop.store(true, Ordering::Relaxed);
        let appended = writer.await.unwrap();
        // Both sides recover on their own and reach every event.
        let deadline = Instant::now() + Duration::from_secs(60);
        while u64::try_from(ledger(&consuming).await.len()).unwrap() < appended {
            assert!(
                Instant::now() < deadline,
                "run {run}: the consumer did not catch up: {} of {appended} events, {} messages",
                ledger(&consuming).await.len(),
                bus.messages().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Give a duplicate, if there were one, the time to arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        done_tx.send(true).unwrap();
        relay_task.await.unwrap().unwrap();
        consumer_task.await.unwrap().unwrap();
        assert_eq!(
            bus.messages().await,
            appended,
            "run {run}: one message per event"
        );
        let n = assert_exactly_once_in_order(&origin, &consuming).await;
        assert_eq!(u64::try_from(n).unwrap(), appended);
        eprintln!("run {run}: {appended} events across a nats-server restart: each once, in order");
        bus.delete().await;
    }
}

#[tokio::test]
async fn a_consumer_takes_the_subjects_it_filters_on() {
    let dir = TempDir::new().unwrap();
    let origin = SqliteStore::open(dir.path().join("origin.db"))
        .await
        .unwrap();
    let bus = Bus::new(&nats_url()).await;
    for i in 0..10 {
        let event = if i % 2 == 0 {
            credited(i)
        } else {
            NewEvent::new("Debited", 1, format!(r#"{{"amount":{i}}}"#))
        };
        append(&origin, "a", event, &CommitMeta::new()).await;
    }
    relay(&origin, &bus).catch_up().await.unwrap();
    let consuming = consuming_store(&dir).await;
    let source = bus
        .source("credits")
        .filter_subject(format!("{}.account.Credited", bus.prefix));
    let mut consumer = consumer(&consuming, source);
    assert_eq!(consumer.catch_up().await.unwrap().handled, 5);
    let amounts: Vec<(i64,)> = sqlx::query_as("SELECT amount FROM ledger ORDER BY seq")
        .fetch_all(consuming.pool())
        .await
        .unwrap();
    assert_eq!(amounts, [(0,), (2,), (4,), (6,), (8,)]);
    // Later events, live: the filtered consumer's checkpoint passes the others.
    append(&origin, "a", credited(10), &CommitMeta::new()).await;
    relay(&origin, &bus).catch_up().await.unwrap();
    assert_eq!(consumer.catch_up().await.unwrap().handled, 1);
    assert_eq!(consumer.status().await.unwrap().position, 11);
    bus.delete().await;
}

#[tokio::test]
async fn deliveries_lost_on_the_way_are_read_again_in_order() {
    let dir = TempDir::new().unwrap();
    let origin = SqliteStore::open(dir.path().join("origin.db"))
        .await
        .unwrap();
    let bus = Bus::new(&nats_url()).await;
    for i in 0..12 {
        append(
            &origin,
            &format!("a{}", i % 2),
            credited(i),
            &CommitMeta::new(),
        )
        .await;
    }
    relay(&origin, &bus).catch_up().await.unwrap();
    let consuming = consuming_store(&dir).await;
    let mut consumer = consumer(&consuming, bus.source("ledger")).batch_size(3);
    assert_eq!(consumer.step().await.unwrap(), Some(3));
    // Two deliveries that never reach the source (as when a connection drops with a pull's
    // answer on the way): the broker counts them delivered, and would send them again only
    // after the newer messages.
    let stream = bus.jetstream.get_stream(&bus.stream).await.unwrap();
    let thief: jetstream::consumer::PullConsumer = stream.get_consumer("ledger").await.unwrap();
    let mut stolen = thief.fetch().max_messages(2).messages().await.unwrap();
    let mut sequences = Vec::new();
    while let Some(message) = stolen.next().await {
        sequences.push(message.unwrap().info().unwrap().stream_sequence);
    }
    assert_eq!(sequences, [4, 5]);
    // The source sees the jump in delivery numbers and reads from its checkpoint again.
    assert_eq!(consumer.catch_up().await.unwrap().handled, 9);
    assert_eq!(assert_exactly_once_in_order(&origin, &consuming).await, 12);
    bus.delete().await;
}
