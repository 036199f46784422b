//! The DynamoDB store: streams and snapshots in one DynamoDB table, appends as one
//! `TransactWriteItems` each; the table's DynamoDB Stream is the global feed
//! ([`DynamoDbStreamSource`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableStatus,
};
use aws_sdk_dynamodb::Client;

use crate::error::{Operation, StoreError};

mod append;
mod items;
mod reads;
mod streams;

pub use streams::{DynamoDbStreamSource, ShardCursor};

/// Where a local DynamoDB server (moto, DynamoDB Local) is expected when nothing says
/// otherwise: nowhere; an endpoint is always given explicitly or by the environment.
const LOCAL_REGION: &str = "us-east-1";

/// How long [`DynamoDbStoreOptions::create_table`] waits for a new table to become active.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// A store with the stream and snapshot capabilities ([`EventStore`](super::EventStore),
/// [`SnapshotStore`](super::SnapshotStore)) in one DynamoDB table. Clones share the client.
///
/// An append is one `TransactWriteItems`: the events (one item each, keyed by stream and
/// version), a marker per event id, the command id's outcome and the version check commit
/// together or not at all. DynamoDB has no interactive transactions and no global order,
/// so the store has neither [`TxStore`](super::TxStore) nor [`EventLog`](super::EventLog):
/// runners follow the table's DynamoDB Stream instead ([`DynamoDbStore::stream_source`]).
///
/// ```no_run
/// # async fn demo() -> Result<(), annals::StoreError> {
/// use annals::store::{DynamoDbStore, EventStore};
/// // A local server (moto, DynamoDB Local), creating the table when missing:
/// let store = DynamoDbStore::options()
///     .endpoint("http://127.0.0.1:8000")
///     .create_table(true)
///     .open("events")
///     .await?;
/// let version = store.stream_version(annals::StreamRef::new("account", "42")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DynamoDbStore {
    client: Client,
    streams: aws_sdk_dynamodbstreams::Client,
    table: Arc<str>,
}

impl fmt::Debug for DynamoDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoDbStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// How to open a [`DynamoDbStore`]: `DynamoDbStore::options().endpoint(url).open(table)`.
#[derive(Debug, Clone, Default)]
pub struct DynamoDbStoreOptions {
    endpoint: Option<String>,
    region: Option<String>,
    create_table: bool,
}

impl DynamoDbStoreOptions {
    /// No endpoint or region of its own (the environment's), no table creation.
    pub fn new() -> Self {
        DynamoDbStoreOptions::default()
    }

    /// The server to talk to instead of AWS's: a local DynamoDB (`http://127.0.0.1:8000`).
    /// Without it, [`Self::open`] uses `AWS_ENDPOINT_URL_DYNAMODB` or `AWS_ENDPOINT_URL`
    /// when set, AWS's endpoint for the region otherwise.
    #[must_use]
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The AWS region (by default `AWS_REGION` or `AWS_DEFAULT_REGION`; `us-east-1` for a
    /// local endpoint).
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Whether [`Self::open`] creates the table when it is missing (on-demand capacity,
    /// streams of new images) and waits until it is active. Off by default: in production
    /// the table is part of the infrastructure (see the guide's table definition).
    #[must_use]
    pub fn create_table(mut self, create: bool) -> Self {
        self.create_table = create;
        self
    }

    /// Opens the store on `table`, with a client configured from these options and the
    /// environment: credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN` (what AWS Lambda sets), or fixed local ones when an endpoint is
    /// set and those are not. Checks that the table exists with annals' key schema
    /// (creating it if [`Self::create_table`] is on).
    ///
    /// For profiles, SSO or instance roles, load an `SdkConfig` with the `aws-config` crate
    /// and use [`Self::with_config`].
    pub async fn open(self, table: &str) -> Result<DynamoDbStore, StoreError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_DYNAMODB"))
            .or_else(|| env("AWS_ENDPOINT_URL"));
        let region = self
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| endpoint.as_ref().map(|_| LOCAL_REGION.to_owned()))
            .ok_or_else(|| {
                StoreError::Config(
                    "no AWS region: set AWS_REGION or DynamoDbStoreOptions::region".to_owned(),
                )
            })?;
        let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => {
                Credentials::new(id, secret, env("AWS_SESSION_TOKEN"), None, "environment")
            }
            _ if endpoint.is_some() => {
                Credentials::new("annals-local", "annals-local", None, None, "local")
            }
            _ => {
                return Err(StoreError::Config(
                    "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                     load an SdkConfig with aws-config and use DynamoDbStoreOptions::with_config"
                        .to_owned(),
                ))
            }
        };
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https();
        let mut config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .credentials_provider(credentials.clone())
            .http_client(http.clone());
        let mut streams = aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodbstreams::config::Region::new(region))
            .credentials_provider(credentials)
            .http_client(http);
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint.clone());
            streams = streams.endpoint_url(endpoint);
        }
        let store = DynamoDbStore {
            client: Client::from_conf(config.build()),
            streams: aws_sdk_dynamodbstreams::Client::from_conf(streams.build()),
            table: table.into(),
        };
        self.prepare(store).await
    }

    /// Opens the store on `table` with clients built from `config` (from the `aws-config`
    /// crate: `aws_config::load_from_env().await`), which says the region, credentials and
    /// endpoint. This option's endpoint and region, when set, override the config's.
    pub async fn with_config(
        self,
        config: &aws_types::SdkConfig,
        table: &str,
    ) -> Result<DynamoDbStore, StoreError> {
        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(config);
        let mut streams = aws_sdk_dynamodbstreams::config::Builder::from(config);
        if let Some(endpoint) = &self.endpoint {
            dynamodb = dynamodb.endpoint_url(endpoint);
            streams = streams.endpoint_url(endpoint);
        }
        if let Some(region) = &self.region {
            dynamodb = dynamodb.region(Region::new(region.clone()));
            streams = streams.region(aws_sdk_dynamodbstreams::config::Region::new(region.clone()));
        }
        let store = DynamoDbStore {
            client: Client::from_conf(dynamodb.build()),
            streams: aws_sdk_dynamodbstreams::Client::from_conf(streams.build()),
            table: table.into(),
        };
        self.prepare(store).await
    }

    async fn prepare(self, store: DynamoDbStore) -> Result<DynamoDbStore, StoreError> {
        if store.table.is_empty() {
            return Err(StoreError::Config("the table name is empty".to_owned()));
        }
        if self.create_table {
            store.create_table().await?;
        } else {
            store.check_table().await?;
        }
        Ok(store)
    }
}

impl DynamoDbStore {
    /// Options for opening a store: endpoint, region, table creation.
    pub fn options() -> DynamoDbStoreOptions {
        DynamoDbStoreOptions::new()
    }

    /// Opens the store on an existing `table`, configured from the environment:
    /// [`DynamoDbStoreOptions::open`].
    pub async fn open(table: &str) -> Result<Self, StoreError> {
        DynamoDbStoreOptions::new().open(table).await
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The DynamoDB client, for read models kept in other tables.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the table when it does not exist, as the guide's definition says: partition
    /// key `pk` (string), sort key `sk` (number), on-demand capacity, a stream of new images;
    /// then waits until it is active. Returns whether it created it.
    pub async fn create_table(&self) -> Result<bool, StoreError> {
        let failed = |e| StoreError::database(Operation::Migrate, e);
        let attribute = |name: &str, kind| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()
                .map_err(failed)
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(failed)
        };
        let created = self
            .client
            .create_table()
            .table_name(&*self.table)
            .attribute_definitions(attribute(items::PK, ScalarAttributeType::S)?)
            .attribute_definitions(attribute(items::SK, ScalarAttributeType::N)?)
            .key_schema(key(items::PK, KeyType::Hash)?)
            .key_schema(key(items::SK, KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewImage)
                    .build()
                    .map_err(failed)?,
            )
            .send()
            .await;
        let created = match created {
            Ok(_) => true,
            Err(e) if e.code() == Some("ResourceInUseException") => false,
            Err(e) => return Err(sdk_error(Operation::Migrate, e)),
        };
        let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_TIMEOUT;
        loop {
            if self.check_table().await? == Some(TableStatus::Active) {
                return Ok(created);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(StoreError::Config(format!(
                    "table `{}` did not become active within {} s",
                    self.table,
                    TABLE_ACTIVE_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Deletes the table and everything in it (for tests and tear-downs).
    pub async fn delete_table(&self) -> Result<(), StoreError> {
        self.client
            .delete_table()
            .table_name(&*self.table)
            .send()
            .await
            .map_err(|e| sdk_error(Operation::Migrate, e))?;
        Ok(())
    }

    /// Checks that the table exists with annals' key schema; its status.
    async fn check_table(&self) -> Result<Option<TableStatus>, StoreError> {
        let described = self
            .client
            .describe_table()
            .table_name(&*self.table)
            .send()
            .await;
        let table = match described {
            Ok(out) => out.table.ok_or_else(|| {
                StoreError::Config(format!("table `{}` has no description", self.table))
            })?,
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                return Err(StoreError::Config(format!(
                    "table `{}` does not exist: create it (see the table definition in the \
                     guide, or DynamoDbStoreOptions::create_table)",
                    self.table
                )))
            }
            Err(e) => return Err(sdk_error(Operation::Open, e)),
        };
        let keys: Vec<(&str, &KeyType)> = table
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name(), k.key_type()))
            .collect();
        if keys != [(items::PK, &KeyType::Hash), (items::SK, &KeyType::Range)] {
            return Err(StoreError::Config(format!(
                "table `{}` is not an annals table: its key must be `pk` (string, partition) \
                 and `sk` (number, sort)",
                self.table
            )));
        }
        Ok(table.table_status)
    }

    /// The table's DynamoDB Stream as a runner's source: see [`DynamoDbStreamSource`].
    pub async fn stream_source(&self) -> Result<DynamoDbStreamSource, StoreError> {
        let described = self
            .client
            .describe_table()
            .table_name(&*self.table)
            .send()
            .await
            .map_err(|e| sdk_error(Operation::Open, e))?;
        let table = described.table.ok_or_else(|| {
            StoreError::Config(format!("table `{}` has no description", self.table))
        })?;
        let arn = table
            .latest_stream_arn()
            .filter(|_| {
                table
                    .stream_specification()
                    .is_some_and(|s| s.stream_enabled())
            })
            .ok_or_else(|| {
                StoreError::Config(format!(
                    "table `{}` has no stream: enable one with view type NEW_IMAGE",
                    self.table
                ))
            })?;
        Ok(DynamoDbStreamSource::new(self.streams.clone(), arn).of_store(self.clone()))
    }
}

/// A DynamoDB call that failed, with the service's code and message in the error.
fn sdk_error<E, R>(operation: Operation, error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    // A request that never got an answer (connection refused or reset, a timeout) or was
    // throttled may succeed later: it goes in as an I/O error, which
    // `StoreError::is_transient` recognises.
    let transient = match &error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(e) => matches!(
            e.err().code(),
            Some(
                "ThrottlingException"
                    | "ProvisionedThroughputExceededException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
            )
        ),
        _ => false,
    };
    let failed = Failed(DisplayErrorContext(&error).to_string());
    if transient {
        StoreError::database(operation, std::io::Error::other(failed))
    } else {
        StoreError::database(operation, failed)
    }
}

/// A DynamoDB error, as the SDK described it with its causes.
#[derive(Debug)]
struct Failed(String);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}
