//! The HTTP functions (`annals::http`, feature `http`) through a real HTTP client on
//! loopback, against SQLite (a file per test) and PostgreSQL (a schema per test): every
//! status the command route answers, idempotency keys, correlation ids, paging a stream,
//! 32 concurrent requests on one stream; 503 `unavailable` with `Retry-After` when
//! PostgreSQL or DynamoDB cannot be reached; the serverless example's functions over
//! SQLite and over the local DynamoDB (feature `dynamodb`); and the Lambda handler
//! (feature `lambda`) fed function URL and API Gateway events through lambda_http's
//! conversion.
#![cfg(feature = "http")]

use std::net::SocketAddr;
use std::sync::Arc;

use annals::http::axum::http::{HeaderMap, Method, Request, StatusCode};
use annals::http::axum::Router;
use annals::http::CommandRoutes;
use annals::store::EventStore;
use annals::{aggregate, Command, Event, Events, Repository, SqliteStore};
use annals_tests::TempDir;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Barrier;

// ---------------------------------------------------------------------------------------
// The domain: a tally that opens, adds amounts and refuses bad ones; `Stall` waits for a
// second request at a barrier so two requests append from the same version.

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Opened {
    owner: String,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Added {
    amount: u64,
}

#[derive(Debug, Clone, PartialEq, Events)]
enum TallyEvent {
    Opened(Opened),
    Added(Added),
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum TallyError {
    #[error("amount must be greater than zero")]
    Zero,
    #[error("amount {0} is over the limit of 1000")]
    OverLimit(u64),
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Tally)]
struct Open {
    #[command(id)]
    id: String,
    owner: String,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Tally)]
struct Add {
    #[command(id)]
    id: String,
    amount: u64,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Tally)]
struct Stall {
    #[command(id)]
    id: String,
}

#[derive(Clone)]
struct Gate(Arc<Barrier>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(Barrier::new(2)))
    }
}

#[derive(Default)]
struct Tally {
    total: u64,
}

#[aggregate(id = String, event = TallyEvent, error = TallyError, services = Gate)]
impl Tally {
    #[command(create)]
    fn open(&self, cmd: Open) -> Result<Opened, TallyError> {
        Ok(Opened { owner: cmd.owner })
    }

    #[command]
    fn add(&self, cmd: Add) -> Result<Added, TallyError> {
        match cmd.amount {
            0 => Err(TallyError::Zero),
            amount if amount > 1000 => Err(TallyError::OverLimit(amount)),
            amount => Ok(Added { amount }),
        }
    }

    #[command]
    async fn stall(&self, _: Stall, gate: &Gate) -> Result<Added, TallyError> {
        gate.0.wait().await;
        Ok(Added { amount: 1 })
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {}

    #[apply]
    fn added(&mut self, e: &Added) {
        self.total += e.amount;
    }
}

// A second aggregate whose command enum keeps the fields under `args`, next to the tag.

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Dimmed {
    level: u8,
}

#[derive(Debug, Clone, PartialEq, Events)]
enum LampEvent {
    Dimmed(Dimmed),
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Lamp)]
struct Dim {
    #[command(id)]
    lamp: String,
    level: u8,
}

#[derive(Default)]
struct Lamp;

#[aggregate(
    id = String,
    event = LampEvent,
    error = std::convert::Infallible,
    command_enum(name = LampRequest, tag = "type", content = "args")
)]
impl Lamp {
    #[command(any)]
    fn dim(&self, cmd: Dim) -> Result<Dimmed, std::convert::Infallible> {
        Ok(Dimmed { level: cmd.level })
    }

    #[apply]
    fn dimmed(&mut self, _: &Dimmed) {}
}

// ---------------------------------------------------------------------------------------
// A server on loopback and a client.

const BODY_LIMIT: usize = 1024;

/// The routes under `/tallies`: `tallies` retries conflicts as configured by default,
/// `/strict` gives up after one attempt.
fn app<S: EventStore>(store: S) -> Router {
    let lamps = Repository::<Lamp, S>::new(store.clone());
    let repository = Repository::<Tally, S>::new(store);
    let strict = repository.clone().max_attempts(1);
    Router::new()
        .nest(
            "/tallies",
            CommandRoutes::<TallyCommand, _>::new(repository)
                .body_limit(BODY_LIMIT)
                .router(),
        )
        .nest(
            "/strict",
            CommandRoutes::<TallyCommand, _>::new(strict).router(),
        )
        .nest(
            "/lamps",
            CommandRoutes::<LampRequest, _>::new(lamps).router(),
        )
}

struct Server {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Server {
    async fn start(router: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { annals::http::axum::serve(listener, router).await });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Server { addr, client }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).unwrap();
        let response = self.client.request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{status}: body is not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], command: &Value) -> Answer {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(Method::POST, path, &all, command.to_string())
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }
}

fn open(id: &str) -> Value {
    json!({"command": "Open", "id": id, "owner": "ada"})
}

fn add(id: &str, amount: u64) -> Value {
    json!({"command": "Add", "id": id, "amount": amount})
}

#[track_caller]
fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["code"], code, "{}", answer.body);
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        answer.body
    );
}

// ---------------------------------------------------------------------------------------
// Scenarios, run on each store.

async fn statuses(server: &Server) {
    // 201: the command created the stream; the events and where they went.
    let created = server.post("/tallies/commands", &[], &open("t1")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["stream_type"], "Tally");
    assert_eq!(created.body["stream_id"], "t1");
    assert_eq!(created.body["version"], 1);
    assert!(created.body["position"].as_u64().unwrap() > 0);
    assert_eq!(created.body["replayed"], false);
    assert_eq!(
        created.body["events"],
        json!([{"version": 1, "type": "Opened", "event_version": 1, "data": {"owner": "ada"}}])
    );

    // 200: applied to an existing stream.
    let added = server.post("/tallies/commands", &[], &add("t1", 5)).await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(added.body["version"], 2);
    assert!(added.body["position"].as_u64() > created.body["position"].as_u64());
    assert_eq!(added.body["events"][0]["data"], json!({"amount": 5}));

    // 409: the stream exists already.
    let again = server.post("/tallies/commands", &[], &open("t1")).await;
    assert_error(&again, StatusCode::CONFLICT, "stream_exists");
    assert_eq!(again.body["stream_id"], "t1");

    // 404: the stream does not exist.
    let missing = server
        .post("/tallies/commands", &[], &add("nobody", 5))
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "stream_not_found");

    // 422: the domain error's message.
    let refused = server
        .post("/tallies/commands", &[], &add("t1", 5000))
        .await;
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "rejected");
    assert_eq!(
        refused.body["message"],
        "amount 5000 is over the limit of 1000"
    );

    // 400: a field of the wrong type, with serde's message, its path and place.
    let body = r#"{"command": "Add", "id": "t1", "amount": "five"}"#;
    let typed = server
        .send(Method::POST, "/tallies/commands", &[], body)
        .await;
    assert_error(&typed, StatusCode::BAD_REQUEST, "malformed_json");
    assert_eq!(typed.body["path"], "amount", "{}", typed.body);
    assert!(typed.body["message"]
        .as_str()
        .unwrap()
        .contains("invalid type: string \"five\", expected u64"));

    // 400: broken JSON, an unknown command, trailing data.
    let broken = server
        .send(
            Method::POST,
            "/tallies/commands",
            &[],
            "{\n \"command\": \"Add\",\n oops",
        )
        .await;
    assert_error(&broken, StatusCode::BAD_REQUEST, "malformed_json");
    assert_eq!(broken.body["line"], 3, "{}", broken.body);
    assert_eq!(broken.body["column"], 2);
    let missing_field = server
        .post(
            "/tallies/commands",
            &[],
            &json!({"command": "Add", "id": "t1"}),
        )
        .await;
    assert_error(&missing_field, StatusCode::BAD_REQUEST, "malformed_json");
    assert!(missing_field.body["message"]
        .as_str()
        .unwrap()
        .contains("missing field `amount`"));
    let untagged = server
        .post("/tallies/commands", &[], &json!({"id": "t1", "amount": 1}))
        .await;
    assert_error(&untagged, StatusCode::BAD_REQUEST, "malformed_json");
    assert!(untagged.body["message"]
        .as_str()
        .unwrap()
        .contains("missing field `command`"));
    let unknown = server
        .post(
            "/tallies/commands",
            &[],
            &json!({"command": "Explode", "id": "t1"}),
        )
        .await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, "malformed_json");
    assert!(unknown.body["message"]
        .as_str()
        .unwrap()
        .contains("unknown command `Explode`, expected one of `Open`, `Add`, `Stall`"));
    assert_eq!(unknown.body["path"], "command");
    let trailing = server
        .send(
            Method::POST,
            "/tallies/commands",
            &[],
            format!("{} {{}}", add("t1", 1)),
        )
        .await;
    assert_error(&trailing, StatusCode::BAD_REQUEST, "malformed_json");

    // 400: an id the store refuses, a header too long.
    let bad_id = server
        .post("/tallies/commands", &[], &open("bad\u{7}id"))
        .await;
    assert_error(&bad_id, StatusCode::BAD_REQUEST, "invalid_stream_id");
    let long_key = "k".repeat(annals::http::MAX_HEADER_LEN + 1);
    let bad_header = server
        .post(
            "/tallies/commands",
            &[("idempotency-key", &long_key)],
            &add("t1", 1),
        )
        .await;
    assert_error(&bad_header, StatusCode::BAD_REQUEST, "invalid_header");
    assert_eq!(bad_header.body["header"], "idempotency-key");

    // 413: past the body limit, declared or not.
    let padding = "x".repeat(BODY_LIMIT);
    let large = json!({"command": "Open", "id": "big", "owner": padding});
    let too_large = server.post("/tallies/commands", &[], &large).await;
    assert_error(
        &too_large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_eq!(too_large.body["limit"], BODY_LIMIT);

    // 415: not JSON.
    let text = server
        .send(
            Method::POST,
            "/tallies/commands",
            &[("content-type", "text/plain")],
            add("t1", 1).to_string(),
        )
        .await;
    assert_error(
        &text,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    // 409: two requests append from the same version and the repository may not retry.
    let opened = server.post("/strict/commands", &[], &open("race")).await;
    assert_eq!(opened.status, StatusCode::CREATED);
    let stall = json!({"command": "Stall", "id": "race"});
    let (a, b) = tokio::join!(
        server.post("/strict/commands", &[], &stall),
        server.post("/strict/commands", &[], &stall)
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let conflict = if a.status == StatusCode::CONFLICT {
        a
    } else {
        b
    };
    assert_error(&conflict, StatusCode::CONFLICT, "conflict");
    assert_eq!(conflict.body["stream_id"], "race");
    // Nothing refused above was stored.
    let stored = server.get("/tallies/streams/t1/events").await;
    assert_eq!(stored.body["version"], 2, "{}", stored.body);
    assert_eq!(
        server.get("/tallies/streams/race/events").await.body["version"],
        2
    );
    assert_eq!(
        server.get("/tallies/streams/big/events").await.status,
        StatusCode::NOT_FOUND
    );
}

/// A command enum with `content = "args"`: the fields sit under `args`, and a bad one is
/// reported with its path from the body's root.
async fn adjacent_tags(server: &Server) {
    let dim = json!({"type": "Dim", "args": {"lamp": "hall", "level": 40}});
    let answer = server.post("/lamps/commands", &[], &dim).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["events"][0]["data"], json!({"level": 40}));
    let bad = json!({"type": "Dim", "args": {"lamp": "hall", "level": 400}});
    let refused = server.post("/lamps/commands", &[], &bad).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "malformed_json");
    assert_eq!(refused.body["path"], "args.level", "{}", refused.body);
    let flat = json!({"type": "Dim", "lamp": "hall", "level": 4});
    let missing = server.post("/lamps/commands", &[], &flat).await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "malformed_json");
    assert!(missing.body["message"]
        .as_str()
        .unwrap()
        .contains("missing field `args`"));
}

/// A stored event this build cannot decode: the command and the read both answer 500,
/// naming the event, and nothing is appended.
async fn undecodable_events<S: EventStore>(server: &Server, store: &S) {
    use annals::store::NewEvent;
    use annals::{CommitMeta, ExpectedVersion, StreamRef};
    let stream = StreamRef::new("Tally", "mystery");
    store
        .append(
            stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Mystery", 1, "{}".into())],
            &CommitMeta::new(),
        )
        .await
        .unwrap();
    let command = server
        .post("/tallies/commands", &[], &add("mystery", 1))
        .await;
    assert_error(&command, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    let message = command.body["message"].as_str().unwrap();
    assert!(
        message.contains("Mystery") && message.contains("Tally/mystery"),
        "{message}"
    );
    let read = server.get("/tallies/streams/mystery/events").await;
    assert_error(&read, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert_eq!(store.stream_version(stream).await.unwrap(), Some(1));
}

async fn reading_streams(server: &Server) {
    server.post("/tallies/commands", &[], &open("paged")).await;
    for amount in 1..=4 {
        let answer = server
            .post("/tallies/commands", &[], &add("paged", amount))
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    // Pages of two: 1-2, 3-4, 5; each links the next.
    let first = server.get("/tallies/streams/paged/events?limit=2").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["version"], 5);
    let versions = |answer: &Answer| -> Vec<u64> {
        answer.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(versions(&first), [1, 2]);
    assert_eq!(first.body["events"][0]["type"], "Opened");
    assert_eq!(first.body["events"][1]["data"], json!({"amount": 1}));
    assert_eq!(first.body["next_from"], 3);
    let next = first.body["next"].as_str().unwrap().to_owned();
    assert_eq!(next, "/tallies/streams/paged/events?from=3&limit=2");
    assert_eq!(
        first.headers["link"],
        format!("<{next}>; rel=\"next\"").as_str()
    );
    let second = server.get(&next).await;
    assert_eq!(versions(&second), [3, 4]);
    let last = server.get(second.body["next"].as_str().unwrap()).await;
    assert_eq!(versions(&last), [5]);
    assert_eq!(last.body["next"], Value::Null);
    assert!(last.headers.get("link").is_none());
    let positions: Vec<u64> = [&first, &second, &last]
        .iter()
        .flat_map(|a| a.body["events"].as_array().unwrap().clone())
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    let missing = server.get("/tallies/streams/nothing/events").await;
    assert_error(&missing, StatusCode::NOT_FOUND, "stream_not_found");
    let bad_query = server.get("/tallies/streams/paged/events?from=minus").await;
    assert_error(&bad_query, StatusCode::BAD_REQUEST, "invalid_query");
}

async fn idempotency_and_correlation(server: &Server) {
    server.post("/tallies/commands", &[], &open("idem")).await;
    let key = [("idempotency-key", "order-77-payment")];
    let first = server
        .post("/tallies/commands", &key, &add("idem", 7))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["replayed"], false);
    assert!(first.headers.get("idempotent-replayed").is_none());

    // Sent again: the same answer, nothing appended.
    let retried = server
        .post("/tallies/commands", &key, &add("idem", 7))
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert_eq!(retried.body["replayed"], true);
    assert_eq!(retried.headers["idempotent-replayed"], "true");
    for field in ["version", "position", "events"] {
        assert_eq!(retried.body[field], first.body[field], "{field}");
    }
    // The same command with its fields in another order is the same command.
    let reordered = r#"{"amount": 7, "id": "idem", "command": "Add"}"#;
    let same = server
        .send(Method::POST, "/tallies/commands", &key, reordered)
        .await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.body);
    assert_eq!(same.body["replayed"], true);

    // Another command under the same key: refused, naming the key.
    let other = server
        .post("/tallies/commands", &key, &add("idem", 8))
        .await;
    assert_error(
        &other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(other.body["idempotency_key"], "order-77-payment");
    assert!(other.body["message"]
        .as_str()
        .unwrap()
        .contains("order-77-payment"));
    // ... also on another stream.
    server.post("/tallies/commands", &[], &open("idem2")).await;
    let elsewhere = server
        .post("/tallies/commands", &key, &add("idem2", 7))
        .await;
    assert_error(
        &elsewhere,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(elsewhere.body["idempotency_key"], "order-77-payment");

    let events = server.get("/tallies/streams/idem/events").await;
    assert_eq!(events.body["version"], 2, "{}", events.body);
    assert_eq!(
        server.get("/tallies/streams/idem2/events").await.body["version"],
        1
    );

    // A UUID key is the command id as it is; the correlation id goes into the metadata
    // and comes back.
    let command_id = annals::Uuid::new_v4().to_string();
    let correlation = annals::Uuid::new_v4().to_string();
    let answer = server
        .post(
            "/tallies/commands",
            &[
                ("idempotency-key", &command_id),
                ("x-correlation-id", &correlation),
            ],
            &add("idem", 9),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-correlation-id"], correlation.as_str());
    assert_eq!(answer.body["correlation_id"], correlation.as_str());
    let page = server.get("/tallies/streams/idem/events?from=3").await;
    let stored = &page.body["events"][0];
    assert_eq!(stored["command_id"], command_id.as_str());
    assert_eq!(stored["correlation_id"], correlation.as_str());
    // Without one, each request gets its own.
    let fresh = server.post("/tallies/commands", &[], &add("idem", 1)).await;
    let made = fresh.headers["x-correlation-id"].to_str().unwrap();
    assert!(annals::Uuid::parse_str(made).is_ok());
    assert_ne!(made, correlation);
}

/// 32 concurrent requests on one stream, each with its own key; a request answered 409
/// (the retries ran out) is sent again with its key. Every amount lands exactly once.
/// Under `/strict` the server does not retry, so the clients' retries are exercised.
async fn concurrent_requests(server: Arc<Server>, prefix: &'static str) {
    let commands = format!("{prefix}/commands");
    let stream: &'static str = if prefix == "/strict" {
        "busy-strict"
    } else {
        "busy"
    };
    server.post(&commands, &[], &open(stream)).await;
    let mut tasks = Vec::new();
    for n in 1..=32u64 {
        let server = Arc::clone(&server);
        let commands = commands.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("{stream}-{n}");
            let mut conflicts = 0;
            loop {
                let answer = server
                    .post(&commands, &[("idempotency-key", &key)], &add(stream, n))
                    .await;
                match answer.status {
                    StatusCode::OK => return conflicts,
                    StatusCode::CONFLICT => conflicts += 1,
                    other => panic!("{other}: {}", answer.body),
                }
            }
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let page = server
        .get(&format!("{prefix}/streams/{stream}/events?limit=1000"))
        .await;
    assert_eq!(page.body["version"], 33, "{}", page.body);
    let mut amounts: Vec<u64> = page.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|e| e["data"]["amount"].as_u64().unwrap())
        .collect();
    amounts.sort_unstable();
    assert_eq!(amounts, (1..=32).collect::<Vec<_>>());
    let keys: std::collections::BTreeSet<&str> = page.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|e| e["command_id"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 32);
    println!("32 concurrent requests on {prefix}: {conflicts} answered 409 and were sent again");
}

async fn run_all<S: EventStore>(store: S) {
    let server = Arc::new(Server::start(app(store.clone())).await);
    undecodable_events(&server, &store).await;
    statuses(&server).await;
    adjacent_tags(&server).await;
    reading_streams(&server).await;
    idempotency_and_correlation(&server).await;
    concurrent_requests(Arc::clone(&server), "/tallies").await;
    concurrent_requests(server, "/strict").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path().join("http.db")).await.unwrap();
    run_all(store).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres() {
    let url = annals_tests::database_url();
    let schema = format!("http_{}", annals::Uuid::new_v4().simple());
    let store = annals::PgStoreOptions::new()
        .schema(&schema)
        .open(&url)
        .await
        .unwrap();
    run_all(store).await;
    annals_tests::drop_schema(&url, &schema).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Lambda: the events a function URL and API Gateway send, through lambda_http.

#[cfg(feature = "lambda")]
mod lambda {
    use super::*;
    use annals::http::lambda_http::request::LambdaRequest;
    use annals::http::lambda_http::{Adapter, Context, LambdaEvent, Service};

    async fn invoke(router: Router, event: Value) -> Value {
        let request: LambdaRequest = serde_json::from_value(event).unwrap();
        let mut adapter = Adapter::from(router);
        let response = adapter
            .call(LambdaEvent::new(request, Context::default()))
            .await
            .unwrap();
        serde_json::to_value(response).unwrap()
    }

    /// A function URL invocation (the API Gateway HTTP API payload, format 2.0).
    fn function_url_event(method: &str, path: &str, headers: Value, body: Option<&str>) -> Value {
        json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": "",
            "headers": headers,
            "requestContext": {
                "accountId": "anonymous",
                "apiId": "abcdefghijklmnop",
                "domainName": "abcdefghijklmnop.lambda-url.eu-west-1.on.aws",
                "domainPrefix": "abcdefghijklmnop",
                "http": {
                    "method": method,
                    "path": path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "203.0.113.7",
                    "userAgent": "curl/8.5.0"
                },
                "requestId": "c1a6b2b4-6f5e-4c59-8f0e-6b1b0c1d2e3f",
                "routeKey": "$default",
                "stage": "$default",
                "time": "03/Dec/2026:06:00:00 +0000",
                "timeEpoch": 1_796_277_600_000u64
            },
            "body": body,
            "isBase64Encoded": false
        })
    }

    /// An API Gateway REST API invocation (payload format 1.0).
    fn rest_event(method: &str, path: &str, query: Value) -> Value {
        json!({
            "resource": "/{proxy+}",
            "path": path,
            "httpMethod": method,
            "headers": {"Host": "api.example.test", "Accept": "application/json"},
            "multiValueHeaders": {"Host": ["api.example.test"], "Accept": ["application/json"]},
            "queryStringParameters": query,
            "multiValueQueryStringParameters": null,
            "pathParameters": {"proxy": path.trim_start_matches('/')},
            "stageVariables": null,
            "requestContext": {
                "resourceId": "abc123",
                "resourcePath": "/{proxy+}",
                "httpMethod": method,
                "path": format!("/prod{path}"),
                "accountId": "123456789012",
                "protocol": "HTTP/1.1",
                "stage": "prod",
                "requestId": "5e3f1d0c-7b1a-4f9e-9d2c-1a2b3c4d5e6f",
                "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"},
                "apiId": "a1b2c3d4e5"
            },
            "body": null,
            "isBase64Encoded": false
        })
    }

    fn body_of(response: &Value) -> Value {
        serde_json::from_str(response["body"].as_str().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn function_url_and_api_gateway_events() {
        let dir = TempDir::new().unwrap();
        let store = SqliteStore::open(dir.path().join("lambda.db"))
            .await
            .unwrap();
        let router = app(store);
        let headers = json!({
            "content-type": "application/json",
            "idempotency-key": "lambda-open-1",
            "x-correlation-id": "6a1f8c1e-1b7e-4d55-9a0c-3c1f0e2d4b5a"
        });
        let body = open("fn").to_string();
        let event = function_url_event("POST", "/tallies/commands", headers.clone(), Some(&body));
        let created = invoke(router.clone(), event.clone()).await;
        assert_eq!(created["statusCode"], 201, "{created}");
        assert_eq!(body_of(&created)["version"], 1);
        assert_eq!(
            body_of(&created)["correlation_id"],
            "6a1f8c1e-1b7e-4d55-9a0c-3c1f0e2d4b5a"
        );
        // The invocation retried (Lambda retries, or the caller's): replayed, not appended.
        let retried = invoke(router.clone(), event).await;
        assert_eq!(retried["statusCode"], 201, "{retried}");
        assert_eq!(body_of(&retried)["replayed"], true);

        let malformed = function_url_event("POST", "/tallies/commands", headers, Some("{"));
        let refused = invoke(router.clone(), malformed).await;
        assert_eq!(refused["statusCode"], 400, "{refused}");
        assert_eq!(body_of(&refused)["code"], "malformed_json");

        // A REST API's stage prefixes the path (unless AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH is
        // set): the router is nested under it.
        let page = invoke(
            Router::new().nest("/prod", router),
            rest_event("GET", "/tallies/streams/fn/events", json!({"limit": "10"})),
        )
        .await;
        assert_eq!(page["statusCode"], 200, "{page}");
        let page = body_of(&page);
        assert_eq!(page["version"], 1);
        assert_eq!(page["events"][0]["data"], json!({"owner": "ada"}));
    }
}

// ---------------------------------------------------------------------------------------
// The serverless example's three functions, as `cargo run --example serverless` runs them.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serverless_example_functions() {
    use annals_examples::serverless::{catch_up, command_router, create_balances, query_router};

    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path().join("serverless.db"))
        .await
        .unwrap();
    create_balances(&store).await.unwrap();
    let commands = Server::start(command_router(store.clone())).await;
    let queries = Server::start(query_router(store.clone())).await;

    let opened = commands
        .post(
            "/accounts/commands",
            &[("idempotency-key", "open-ada")],
            &json!({"command": "OpenAccount", "account": "ada", "owner": "Ada"}),
        )
        .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    let deposit = json!({"command": "Deposit", "account": "ada", "amount": 100});
    let deposited = commands.post("/accounts/commands", &[], &deposit).await;
    assert_eq!(deposited.status, StatusCode::OK, "{}", deposited.body);
    let overdraft = json!({"command": "Withdraw", "account": "ada", "amount": 1000});
    let refused = commands.post("/accounts/commands", &[], &overdraft).await;
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "rejected");
    assert_eq!(
        refused.body["message"],
        "insufficient funds: balance 100, requested 1000"
    );

    // Before the projection function runs, the read model has not seen the account.
    let unseen = queries.get("/balances/ada").await;
    assert_error(&unseen, StatusCode::NOT_FOUND, "not_found");

    // One invocation of the projection function; a second one finds nothing new.
    let progress = catch_up(&store).await.unwrap();
    assert_eq!(progress.handled, 2);
    let again = catch_up(&store).await.unwrap();
    assert_eq!(again.handled, 0);

    let balance = queries.get("/balances/ada").await;
    assert_eq!(balance.status, StatusCode::OK, "{}", balance.body);
    assert_eq!(
        balance.body,
        json!({"account": "ada", "owner": "Ada", "balance": 100,
               "position": deposited.body["position"]})
    );
    let all = queries.get("/balances").await;
    assert_eq!(all.body.as_array().unwrap().len(), 1);
}

/// The serverless example over the local DynamoDB, as `cargo run --example serverless
/// --features dynamodb -- --store dynamodb ..` runs it: the command function on a table of
/// its own, the projection function catching the SQLite read model up from the table's
/// stream once per invocation, the query function reading the read model.
#[cfg(feature = "dynamodb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serverless_example_functions_on_dynamodb() {
    use annals_examples::serverless::{
        catch_up_from_stream, command_router, create_balances, open_events_table, query_router,
    };

    let endpoint = annals_tests::dynamodb_endpoint();
    let table = format!("serverless-{}", annals::Uuid::new_v4().simple());
    let events = open_events_table(Some(&endpoint), &table).await.unwrap();
    let dir = TempDir::new().unwrap();
    let read = SqliteStore::open(dir.path().join("read.db")).await.unwrap();
    create_balances(&read).await.unwrap();
    let commands = Server::start(command_router(events.clone())).await;
    let queries = Server::start(query_router(read.clone())).await;
    // One invocation of the projection function: a new process, so a new source.
    let project = || async {
        let source = events.stream_source().await.unwrap();
        catch_up_from_stream(&read, source).await.unwrap()
    };
    let post = |key: Option<&'static str>, command: Value| {
        let commands = &commands;
        async move {
            let headers: Vec<(&str, &str)> =
                key.map(|k| ("idempotency-key", k)).into_iter().collect();
            commands
                .post("/accounts/commands", &headers, &command)
                .await
        }
    };
    let balance = |account: &'static str| {
        let queries = &queries;
        async move { queries.get(&format!("/balances/{account}")).await }
    };

    let open_ada = json!({"command": "OpenAccount", "account": "ada", "owner": "Ada"});
    let opened = post(Some("open-ada"), open_ada.clone()).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    let ada_100 = post(
        None,
        json!({"command": "Deposit", "account": "ada", "amount": 100}),
    )
    .await;
    assert_eq!(ada_100.status, StatusCode::OK, "{}", ada_100.body);
    let open_bob = json!({"command": "OpenAccount", "account": "bob", "owner": "Bob"});
    assert_eq!(post(None, open_bob).await.status, StatusCode::CREATED);
    let bob_30 = post(
        None,
        json!({"command": "Deposit", "account": "bob", "amount": 30}),
    )
    .await;
    assert_eq!(bob_30.status, StatusCode::OK, "{}", bob_30.body);
    let overdraft = post(
        None,
        json!({"command": "Withdraw", "account": "bob", "amount": 31}),
    )
    .await;
    assert_error(&overdraft, StatusCode::UNPROCESSABLE_ENTITY, "rejected");

    // Before the projection function runs, the read model has not seen the accounts.
    assert_error(&balance("ada").await, StatusCode::NOT_FOUND, "not_found");

    let first = project().await;
    assert_eq!(first.handled, 4, "{first:?}");
    let ada = balance("ada").await;
    assert_eq!(ada.status, StatusCode::OK, "{}", ada.body);
    assert_eq!(
        ada.body,
        json!({"account": "ada", "owner": "Ada", "balance": 100,
               "position": ada_100.body["position"]})
    );
    assert_eq!(balance("bob").await.body["balance"], 30);

    // New commands between two invocations, and a retried one that appends nothing.
    let replayed = post(Some("open-ada"), open_ada).await;
    assert_eq!(replayed.status, StatusCode::CREATED, "{}", replayed.body);
    assert_eq!(replayed.body["replayed"], true);
    let ada_40 = post(
        None,
        json!({"command": "Withdraw", "account": "ada", "amount": 40}),
    )
    .await;
    assert_eq!(ada_40.status, StatusCode::OK, "{}", ada_40.body);
    let bob_5 = post(
        None,
        json!({"command": "Deposit", "account": "bob", "amount": 5}),
    )
    .await;
    assert_eq!(bob_5.status, StatusCode::OK, "{}", bob_5.body);
    let open_cy = json!({"command": "OpenAccount", "account": "cy", "owner": "Cy"});
    let cy = post(None, open_cy).await;
    assert_eq!(cy.status, StatusCode::CREATED, "{}", cy.body);

    let second = project().await;
    assert_eq!(second.handled, 3, "{second:?}");
    let expected = json!([
        {"account": "ada", "owner": "Ada", "balance": 60, "position": ada_40.body["position"]},
        {"account": "bob", "owner": "Bob", "balance": 35, "position": bob_5.body["position"]},
        {"account": "cy", "owner": "Cy", "balance": 0, "position": cy.body["position"]},
    ]);
    let all = queries.get("/balances").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body, expected);

    // The same invocation again: nothing new, nothing changed.
    let third = project().await;
    assert_eq!(third.handled, 0, "{third:?}");
    assert_eq!(third.position, second.position);
    assert_eq!(queries.get("/balances").await.body, expected);
    // The command function's own view of a stream agrees.
    let page = commands.get("/accounts/streams/ada/events").await;
    assert_eq!(page.body["version"], 3, "{}", page.body);

    events.delete_table().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// 503: the store cannot be reached.

#[cfg(any(feature = "postgres", feature = "dynamodb"))]
#[track_caller]
fn assert_unavailable(answer: &Answer) {
    assert_error(answer, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(
        answer
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some(annals::http::UNAVAILABLE_RETRY_AFTER.to_string().as_str()),
        "{:?}",
        answer.headers
    );
}

/// A port nothing listens on (just released).
#[cfg(any(feature = "postgres", feature = "dynamodb"))]
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_postgres_answers_503() {
    let url = format!("postgres://postgres@127.0.0.1:{}/test", closed_port());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy(&url)
        .unwrap();
    let store = annals::PgStoreOptions::new()
        .schema("http_unreachable")
        .migrate(false)
        .with_pool(pool)
        .await
        .unwrap();
    let server = Server::start(app(store)).await;
    let refused = server
        .post(
            "/tallies/commands",
            &[("idempotency-key", "k-1")],
            &open("t1"),
        )
        .await;
    assert_unavailable(&refused);
    assert_unavailable(&server.get("/tallies/streams/t1/events").await);
}

/// A TCP forwarder on loopback to a server, which the test cuts (its listener closed and
/// every connection through it dropped) and restores on the same port: an outage of the
/// server as its clients see it.
#[cfg(feature = "dynamodb")]
struct Forwarder {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

#[cfg(feature = "dynamodb")]
impl Forwarder {
    async fn start(listen: SocketAddr, target: String) -> Forwarder {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { break };
                        let target = target.clone();
                        connections.spawn(async move {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                }
            }
            drop(listener);
            connections.shutdown().await;
        });
        Forwarder { addr, stop, task }
    }

    /// Closes the listener and every connection, and waits until they are closed.
    async fn cut(self) -> SocketAddr {
        let _ = self.stop.send(());
        self.task.await.unwrap();
        self.addr
    }
}

#[cfg(feature = "dynamodb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_dynamodb_answers_503() {
    let endpoint = annals_tests::dynamodb_endpoint();
    let target = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let forwarder = Forwarder::start("127.0.0.1:0".parse().unwrap(), target.clone()).await;
    let table = format!("http-503-{}", annals::Uuid::new_v4().simple());
    let store = annals::DynamoDbStore::options()
        .endpoint(format!("http://{}", forwarder.addr))
        .create_table(true)
        .open(&table)
        .await
        .unwrap();
    let server = Server::start(app(store.clone())).await;
    let created = server.post("/tallies/commands", &[], &open("t1")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    // The server goes away: the command route and the stream route answer 503.
    let addr = forwarder.cut().await;
    let add_5 = [("idempotency-key", "add-5")];
    let refused = server
        .post("/tallies/commands", &add_5, &add("t1", 5))
        .await;
    assert_unavailable(&refused);
    assert_unavailable(&server.get("/tallies/streams/t1/events").await);
    // A DynamoDB endpoint nobody listens on, from the start, is transient too.
    let nobody = format!("http://127.0.0.1:{}", closed_port());
    let error = annals::DynamoDbStore::options()
        .endpoint(&nobody)
        .open(&table)
        .await
        .expect_err("nobody listens there");
    assert!(error.is_transient(), "{error:?}");
    let answer = annals::http::HttpError::from(error);
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer.code(), "unavailable");
    assert_eq!(
        answer.retry_after_seconds(),
        Some(annals::http::UNAVAILABLE_RETRY_AFTER)
    );

    // Back again: the request sent again with its key appends once.
    let forwarder = Forwarder::start(addr, target).await;
    let retried = server
        .post("/tallies/commands", &add_5, &add("t1", 5))
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert_eq!(retried.body["version"], 2);
    assert_eq!(retried.body["replayed"], false);
    let again = server
        .post("/tallies/commands", &add_5, &add("t1", 5))
        .await;
    assert_eq!(again.body["replayed"], true, "{}", again.body);
    assert_eq!(again.body["version"], 2);
    store.delete_table().await.unwrap();
    forwarder.cut().await;
}
