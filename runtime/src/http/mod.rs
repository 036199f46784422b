//! HTTP functions: an [axum] router that executes an aggregate's commands and serves its
//! streams, for a server process or a serverless function (feature `http`; on AWS Lambda
//! with [`run_lambda`], feature `lambda`).
//!
//! [`CommandRoutes`] builds the router from the aggregate's generated command enum
//! (`#[aggregate]` names it `<Aggregate>Command`, tagged by `"command"`):
//!
//! | route | what it does |
//! |---|---|
//! | `POST /commands` | executes one command, the tagged JSON body |
//! | `GET /streams/{id}/events?from=1&limit=100` | one page of a stream's events |
//!
//! `POST /commands` answers:
//!
//! | status | `code` | when |
//! |---|---|---|
//! | 201 | | the command created the stream |
//! | 200 | | the command was applied to an existing stream (or changed nothing) |
//! | 400 | `malformed_json` | the body is not a command: serde's message and the `path` to the bad field (`line` and `column` for a JSON syntax error) |
//! | 400 | `invalid_header` | `Idempotency-Key` or `X-Correlation-Id` is empty, too long or not text |
//! | 400 | `invalid_stream_id` | the command's id is not a valid stream id |
//! | 404 | `stream_not_found` | the command needs an existing stream and there is none |
//! | 409 | `stream_exists` | the command creates its stream and it exists |
//! | 409 | `conflict` | concurrent writers kept changing the stream beyond the retries |
//! | 413 | `payload_too_large` | the body is larger than [`CommandRoutes::body_limit`] |
//! | 415 | `unsupported_media_type` | a `Content-Type` other than JSON |
//! | 422 | `rejected` | the aggregate refused the command: the domain error's message |
//! | 422 | `idempotency_key_reused` | the key was used before for another command |
//! | 500 | `internal` | a stored event cannot be decoded, an inline projection failed, ... |
//! | 503 | `unavailable` | the database cannot be reached for now: retry later (after the `Retry-After` header's seconds) |
//!
//! Every error body has the same shape: `{"code": "..", "message": ".."}`, with more fields
//! for some codes (`path`, and `line` and `column` for a syntax error, for `malformed_json`, `idempotency_key` for
//! `idempotency_key_reused`, `stream_id` where a stream is named). A success body names the
//! stream, its new `version`, the `position` of the last event appended (what a caller
//! waits for with [`crate::wait_for_checkpoint`] to read its own write) and the events:
//!
//! ```json
//! {"stream_type": "Account", "stream_id": "ada", "version": 2, "position": 17,
//!  "replayed": false, "correlation_id": "0193..",
//!  "events": [{"version": 2, "type": "MoneyDeposited", "event_version": 2,
//!              "data": {"amount": 100, "memo": ""}}]}
//! ```
//!
//! Headers: `Idempotency-Key` (any text up to [`MAX_HEADER_LEN`] bytes; a UUID is used as
//! the command id as it is, other keys are hashed into one) makes a retried request append
//! once and answer what the first one did, with `Idempotent-Replayed: true`;
//! `X-Correlation-Id` (a UUID, or text hashed into one) goes into every event's metadata,
//! and a new one is made when the request has none; the answer carries it back.
//!
//! Queries on read models are the user's own axum handlers, mounted on the same router;
//! [`HttpError`] gives their errors the same shape:
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")]
//! # async fn demo<C>(accounts: annals::Repository<C::Aggregate, annals::SqliteStore>) -> std::io::Result<()>
//! # where
//! #     C: annals::TaggedCommand + serde::Serialize,
//! #     C::Aggregate: annals::Handle<C, Services = (), Snapshots = annals::NoSnapshots>,
//! # {
//! use annals::http::axum::{extract::Path, routing::get, Json, Router};
//! use annals::http::{CommandRoutes, HttpError};
//!
//! async fn balance(Path(id): Path<String>) -> Result<Json<u64>, HttpError> {
//!     Err(HttpError::not_found(format!("no account {id}")))
//! }
//!
//! let app = Router::new()
//!     .nest("/accounts", CommandRoutes::<C, _>::new(accounts).router())
//!     .route("/balances/{id}", get(balance));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! annals::http::axum::serve(listener, app).await
//! # }
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, ExecuteError, StoreError};
use crate::event::Events;
use crate::repository::{decode_one, Executed, Repository, SnapshotPolicy};
use crate::store::{
    validate_stream, CommitMeta, EventStore, RecordedEvent, StreamRange, StreamRef,
};
use crate::{Aggregate, Command, Handle, TaggedCommand};

#[cfg(feature = "lambda")]
mod lambda;
#[cfg(feature = "lambda")]
pub use lambda::run_lambda;

#[doc(no_inline)]
pub use axum;
#[cfg(feature = "lambda")]
#[doc(no_inline)]
pub use lambda_http;

/// The largest command body [`CommandRoutes`] reads unless told otherwise: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// How many events a page of `GET /streams/{id}/events` holds unless the request asks for
/// fewer (`limit`).
pub const DEFAULT_PAGE_SIZE: u64 = 100;

/// The most events a page holds, whatever the request asks.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// The longest `Idempotency-Key` or `X-Correlation-Id` accepted, in bytes.
pub const MAX_HEADER_LEN: usize = 255;

/// The request header whose value becomes the command id.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The request and response header carrying the correlation id.
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The response header set on an answer replayed for a repeated `Idempotency-Key`.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The seconds a 503 `unavailable` answer asks the client to wait before it sends the
/// request again (its `Retry-After` header).
pub const UNAVAILABLE_RETRY_AFTER: u64 = 1;

/// The event header holding the `Idempotency-Key` as sent, when it was not a UUID.
pub const IDEMPOTENCY_KEY_HEADER: &str = "http.idempotency-key";

/// The routes of one aggregate: `POST /commands` and `GET /streams/{id}/events`, executing
/// commands of type `C` (the aggregate's generated command enum, or any one command type)
/// through a [`Repository`] on store `S`.
///
/// Nest it under a prefix and add query routes with axum's [`Router`] (see the
/// [module](self) documentation).
pub struct CommandRoutes<C: Command, S: EventStore> {
    repository: Repository<C::Aggregate, S>,
    body_limit: usize,
    _command: PhantomData<fn() -> C>,
}

impl<C, S> CommandRoutes<C, S>
where
    C: TaggedCommand + Serialize,
    C::Aggregate: Handle<C>,
    <C::Aggregate as Aggregate>::Snapshots: SnapshotPolicy<S>,
    S: EventStore,
{
    /// Routes executing commands through `repository` (its retries, services and inline
    /// projections apply).
    pub fn new(repository: Repository<C::Aggregate, S>) -> Self {
        CommandRoutes {
            repository,
            body_limit: DEFAULT_BODY_LIMIT,
            _command: PhantomData,
        }
    }

    /// The largest body `POST /commands` reads, in bytes (default [`DEFAULT_BODY_LIMIT`]);
    /// a larger one is answered 413 without being read further.
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The router.
    pub fn router(self) -> Router {
        let shared = Arc::new(self);
        Router::new()
            .route("/commands", post(post_command::<C, S>))
            .route("/streams/{id}/events", get(get_events::<C, S>))
            .with_state(shared)
    }
}

/// An error answer: a status and the JSON body `{"code": .., "message": .., ..details}`.
///
/// Query handlers return it to answer in the same shape as the command routes;
/// `From` conversions turn [`Error`] and [`StoreError`] into 500 (503 with a `Retry-After`
/// header when the database is unreachable for now, 400 for an invalid stream id).
#[derive(Debug, Clone)]
pub struct HttpError {
    status: StatusCode,
    body: Map<String, Value>,
    retry_after: Option<u64>,
}

impl HttpError {
    /// An error with this status, stable machine-readable `code` and human `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        let mut body = Map::new();
        body.insert("code".to_owned(), Value::from(code));
        body.insert("message".to_owned(), Value::from(message.into()));
        HttpError {
            status,
            body,
            retry_after: None,
        }
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// With one more field in the body.
    #[must_use]
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.body.insert(key.to_owned(), value.into());
        self
    }

    /// With a `Retry-After` header: the seconds the client should wait before it sends the
    /// request again (for 503 and 429 answers).
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The seconds of the `Retry-After` header, if the answer has one.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `code` field.
    pub fn code(&self) -> &str {
        self.body.get("code").and_then(Value::as_str).unwrap_or("")
    }

    /// The `message` field.
    pub fn message(&self) -> &str {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code(),
            self.message()
        )
    }
}

impl std::error::Error for HttpError {}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(Value::Object(self.body))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for HttpError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::InvalidStream { .. } => HttpError::new(
                StatusCode::BAD_REQUEST,
                "invalid_stream_id",
                error.to_string(),
            ),
            _ if error.is_transient() => unavailable(&error),
            _ => internal(&error),
        }
    }
}

impl From<Error> for HttpError {
    fn from(error: Error) -> Self {
        match error {
            Error::Store(store) => store.into(),
            other => internal(&other),
        }
    }
}

fn internal(error: &dyn std::error::Error) -> HttpError {
    HttpError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        error.to_string(),
    )
}

fn unavailable(error: &dyn std::error::Error) -> HttpError {
    HttpError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        error.to_string(),
    )
    .retry_after(UNAVAILABLE_RETRY_AFTER)
}

/// `POST /commands`.
async fn post_command<C, S>(
    State(routes): State<Arc<CommandRoutes<C, S>>>,
    headers: HeaderMap,
    body: Body,
) -> Response
where
    C: TaggedCommand + Serialize,
    C::Aggregate: Handle<C>,
    <C::Aggregate as Aggregate>::Snapshots: SnapshotPolicy<S>,
    S: EventStore,
{
    let correlation = match header_text(&headers, &CORRELATION_ID) {
        Ok(Some(text)) => id_from_text(&text, "correlation"),
        Ok(None) => Uuid::now_v7(),
        Err(error) => return error.into_response(),
    };
    let mut response = match execute(&routes, &headers, body, correlation).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&correlation.to_string()) {
        response.headers_mut().insert(CORRELATION_ID, value);
    }
    response
}

#[cfg_attr(
    feature = "tracing",
    tracing::instrument(
        name = "annals.http.command",
        skip_all,
        fields(annals.correlation_id = %correlation),
        err(level = "info", Display)
    )
)]
async fn execute<C, S>(
    routes: &CommandRoutes<C, S>,
    headers: &HeaderMap,
    body: Body,
    correlation: Uuid,
) -> Result<Response, HttpError>
where
    C: TaggedCommand + Serialize,
    C::Aggregate: Handle<C>,
    <C::Aggregate as Aggregate>::Snapshots: SnapshotPolicy<S>,
    S: EventStore,
{
    check_content_type(headers)?;
    let key = header_text(headers, &IDEMPOTENCY_KEY)?;
    let bytes = read_body(headers, body, routes.body_limit).await?;
    let command: C = parse_command(&bytes)?;
    let mut meta = CommitMeta::new().correlation_id(correlation);
    if let Some(key) = &key {
        meta = meta.command_id(id_from_text(key, "idempotency"));
        if Uuid::parse_str(key).is_err() {
            meta = meta.header(IDEMPOTENCY_KEY_HEADER, key.clone());
        }
    }
    let executed = routes
        .repository
        .execute_with(command, meta)
        .await
        .map_err(|error| execute_error(error, key.as_deref()))?;
    Ok(success::<C::Aggregate>(&executed, correlation))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected a JSON body (application/json), got `{essence}`"),
        ))
    }
}

/// A header's value as text: `None` when absent, 400 when empty, too long or not text.
fn header_text(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, HttpError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let invalid = |reason: &str| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            format!("header {name} {reason}"),
        )
        .detail("header", name.as_str())
    };
    let text = value
        .to_str()
        .map_err(|_| invalid("is not visible ASCII text"))?
        .trim();
    if text.is_empty() {
        return Err(invalid("is empty"));
    }
    if text.len() > MAX_HEADER_LEN {
        return Err(invalid(&format!("is longer than {MAX_HEADER_LEN} bytes")));
    }
    Ok(Some(text.to_owned()))
}

/// A UUID as sent, or one derived from the text's SHA-256 (a version-8 UUID), so keys of
/// any form name one command.
fn id_from_text(text: &str, purpose: &str) -> Uuid {
    if let Ok(id) = Uuid::parse_str(text) {
        return id;
    }
    let mut hasher = Sha256::new();
    hasher.update(b"annals.http.");
    hasher.update(purpose.as_bytes());
    hasher.update(b":");
    hasher.update(text.as_bytes());
    let hash = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, HttpError> {
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than the limit of {limit} bytes"),
        )
        .detail("limit", limit)
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => Err(HttpError::bad_request(format!(
            "cannot read the request body: {error}"
        ))),
    }
}

/// Reads the command: a JSON syntax error with its line and column, a missing or unknown
/// tag, or serde's message for a bad field with the path to it.
fn parse_command<C: TaggedCommand>(bytes: &[u8]) -> Result<C, HttpError> {
    let malformed = |path: &str, message: String| {
        let message = if path.is_empty() {
            format!("malformed command: {message}")
        } else {
            format!("malformed command at `{path}`: {message}")
        };
        HttpError::new(StatusCode::BAD_REQUEST, "malformed_json", message).detail("path", path)
    };
    let value: Value = serde_json::from_slice(bytes).map_err(|error| {
        malformed("", error.to_string())
            .detail("line", error.line())
            .detail("column", error.column())
    })?;
    let Value::Object(mut fields) = value else {
        return Err(malformed(
            "",
            format!("expected a JSON object, found {value}"),
        ));
    };
    let tag = C::TAG;
    let variant = match fields.remove(tag) {
        Some(Value::String(variant)) => variant,
        Some(other) => {
            return Err(malformed(
                tag,
                format!("expected a command name, found {other}"),
            ));
        }
        None => return Err(malformed("", format!("missing field `{tag}`"))),
    };
    let unknown = || {
        let expected = C::VARIANTS
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ");
        malformed(
            tag,
            format!("unknown command `{variant}`, expected one of {expected}"),
        )
    };
    if !C::VARIANTS.contains(&variant.as_str()) {
        return Err(unknown());
    }
    let (prefix, content) = match C::CONTENT {
        Some(field) => match fields.remove(field) {
            Some(content) => (Some(field), content),
            None => return Err(malformed("", format!("missing field `{field}`"))),
        },
        None => (None, Value::Object(fields)),
    };
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(content, &mut track);
    match C::deserialize_variant(&variant, deserializer) {
        Ok(Some(command)) => Ok(command),
        Ok(None) => Err(unknown()),
        Err(error) => {
            let inner = track.path().to_string();
            let path = match (prefix, inner.as_str()) {
                (Some(field), ".") => field.to_owned(),
                (Some(field), inner) => format!("{field}.{inner}"),
                (None, ".") => String::new(),
                (None, inner) => inner.to_owned(),
            };
            Err(malformed(&path, error.to_string()))
        }
    }
}

fn key_reused(key: &str, how: &str) -> HttpError {
    HttpError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        format!("Idempotency-Key `{key}` was already used {how}"),
    )
    .detail("idempotency_key", key)
}

fn execute_error<E: std::error::Error>(error: ExecuteError<E>, key: Option<&str>) -> HttpError {
    match error {
        ExecuteError::Rejected(domain) => HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rejected",
            domain.to_string(),
        ),
        ExecuteError::Policy {
            ref stream_id,
            exists,
            ..
        } => {
            let (status, code) = if exists {
                (StatusCode::CONFLICT, "stream_exists")
            } else {
                (StatusCode::NOT_FOUND, "stream_not_found")
            };
            HttpError::new(status, code, error.to_string()).detail("stream_id", stream_id.as_str())
        }
        ExecuteError::Conflict { ref stream_id, .. } => {
            HttpError::new(StatusCode::CONFLICT, "conflict", error.to_string())
                .detail("stream_id", stream_id.as_str())
        }
        ExecuteError::CommandIdReused { ref stream_id, .. } => key_reused(
            key.unwrap_or_default(),
            &format!("for a command on another stream than `{stream_id}`"),
        ),
        // The store keeps each command id's fingerprint (the command's type and JSON as
        // parsed): the same key with another body is another command.
        ExecuteError::Failed(Error::Store(StoreError::CommandIdMismatch { .. })) => {
            key_reused(key.unwrap_or_default(), "with another command")
        }
        ExecuteError::Failed(error) => error.into(),
        // An inline projection's transaction that the database dropped rolled the command
        // back with it: the request may be sent again.
        ExecuteError::Projection(ref projection) if projection.is_transient() => {
            unavailable(&error)
        }
        other => internal(&other),
    }
}

#[derive(Serialize)]
struct ExecutedBody<'a> {
    stream_type: &'static str,
    stream_id: &'a str,
    version: u64,
    position: u64,
    replayed: bool,
    correlation_id: Uuid,
    events: Vec<EventBody>,
}

#[derive(Serialize)]
struct EventBody {
    version: u64,
    #[serde(rename = "type")]
    event_type: &'static str,
    event_version: u32,
    data: Value,
}

fn success<A: Aggregate>(executed: &Executed<A::Event>, correlation: Uuid) -> Response {
    let count = u64::try_from(executed.events.len()).unwrap_or(u64::MAX);
    let first = executed.version.saturating_sub(count) + 1;
    let mut events = Vec::with_capacity(executed.events.len());
    for (version, event) in (first..).zip(&executed.events) {
        let data = match event.encode().and_then(|json| serde_json::from_str(&json)) {
            Ok(data) => data,
            Err(error) => return internal(&error).into_response(),
        };
        events.push(EventBody {
            version,
            event_type: event.event_type(),
            event_version: event.event_version(),
            data,
        });
    }
    // Created: this command's events start the stream.
    let status = if count > 0 && first == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = ExecutedBody {
        stream_type: A::NAME,
        stream_id: &executed.stream_id,
        version: executed.version,
        position: executed.position,
        replayed: executed.duplicate,
        correlation_id: correlation,
        events,
    };
    let mut response = (status, Json(body)).into_response();
    if executed.duplicate {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// The query of `GET /streams/{id}/events`.
#[derive(Debug, Deserialize)]
struct PageQuery {
    from: Option<u64>,
    limit: Option<u64>,
}

#[derive(Serialize)]
struct PageBody<'a> {
    stream_type: &'static str,
    stream_id: &'a str,
    version: u64,
    events: Vec<StoredEventBody>,
    next_from: Option<u64>,
    next: Option<String>,
}

#[derive(Serialize)]
struct StoredEventBody {
    position: u64,
    version: u64,
    #[serde(rename = "type")]
    event_type: &'static str,
    event_version: u32,
    event_id: Uuid,
    command_id: Option<Uuid>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    recorded_at: time::OffsetDateTime,
    data: Value,
}

/// `GET /streams/{id}/events?from=..&limit=..`: events as the aggregate reads them today
/// (upcast to the current schema), oldest first, with the link to the next page.
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(
        name = "annals.http.read_stream",
        skip_all,
        err(level = "info", Display)
    )
)]
async fn get_events<C, S>(
    State(routes): State<Arc<CommandRoutes<C, S>>>,
    OriginalUri(uri): OriginalUri,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, HttpError>
where
    C: TaggedCommand + Serialize,
    C::Aggregate: Handle<C>,
    <C::Aggregate as Aggregate>::Snapshots: SnapshotPolicy<S>,
    S: EventStore,
{
    let Path(stream_id) = id.map_err(|error| HttpError::bad_request(error.body_text()))?;
    let Query(page) = query.map_err(|error| {
        HttpError::new(StatusCode::BAD_REQUEST, "invalid_query", error.body_text())
    })?;
    let from = page.from.unwrap_or(1).max(1);
    let limit = page
        .limit
        .unwrap_or(DEFAULT_PAGE_SIZE)
        .clamp(1, MAX_PAGE_SIZE);
    let name = <C::Aggregate as Aggregate>::NAME;
    let stream = StreamRef::new(name, &stream_id);
    validate_stream(stream)?;
    let store = routes.repository.store();
    let Some(version) = store.stream_version(stream).await? else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "stream_not_found",
            format!("stream {name}/{stream_id} does not exist"),
        )
        .detail("stream_id", stream_id.as_str()));
    };
    // One event past the page says whether there is a next one.
    let range = StreamRange::from(from).to(from.saturating_add(limit));
    let mut recorded = store.read_stream(stream, range).await?;
    let more = u64::try_from(recorded.len()).unwrap_or(u64::MAX) > limit;
    recorded.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let events = recorded
        .iter()
        .map(stored_event::<<C::Aggregate as Aggregate>::Event>)
        .collect::<Result<Vec<_>, HttpError>>()?;
    let next_from = more.then(|| from.saturating_add(limit));
    let next = next_from.map(|next| format!("{}?from={next}&limit={limit}", uri.path()));
    let body = PageBody {
        stream_type: name,
        stream_id: &stream_id,
        version,
        events,
        next_from,
        next: next.clone(),
    };
    let mut response = Json(body).into_response();
    if let Some(link) =
        next.and_then(|next| HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")).ok())
    {
        response
            .headers_mut()
            .insert(axum::http::header::LINK, link);
    }
    Ok(response)
}

fn stored_event<E: Events>(recorded: &RecordedEvent) -> Result<StoredEventBody, HttpError> {
    let event: E = decode_one(recorded)?;
    let data = event
        .encode()
        .and_then(|json| serde_json::from_str(&json))
        .map_err(|error| internal(&error))?;
    let meta = &recorded.meta;
    Ok(StoredEventBody {
        position: meta.position,
        version: meta.version,
        event_type: event.event_type(),
        event_version: event.event_version(),
        event_id: meta.event_id,
        command_id: meta.command_id,
        correlation_id: meta.correlation_id,
        causation_id: meta.causation_id,
        recorded_at: meta.recorded_at,
        data,
    })
}
