//! The storage contract and its implementations.
//!
//! The contract is one trait per capability (see the [traits](#traits)): a store
//! implements what it can do, and each part of annals asks only for what it uses. The
//! records that cross the contract ([`NewEvent`], [`RecordedEvent`], [`AppendOutcome`], ..)
//! live here too. Backends implement the contract; none of this module knows the
//! repository or the runners.

mod capabilities;
mod catalog;
mod checks;
mod local;
mod memory;
mod records;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use capabilities::load_through_read_stream;
pub(crate) use capabilities::read_log_by_position;
pub use capabilities::{
    CheckpointStore, EventLog, EventStore, LeaseStore, ParkingStore, ProcessStore, SnapshotStore,
    TxStore, WakeUps,
};
pub use catalog::{StreamCatalog, StreamInfo, StreamQuery};
pub use checks::{
    now_micros, validate_events, validate_runner_name, validate_stream, MAX_NAME_LEN,
    MAX_STREAM_ID_LEN,
};
pub use local::LocalLease;
pub(crate) use local::{wait_for_append, LocalLeases};
pub use memory::{MemoryStore, MemoryTx};
pub use records::{
    AppendOutcome, Batch, Checkpoint, CommitMeta, Cursor, Deadline, EventFilter, EventMeta,
    ExpectedVersion, Headers, NewEvent, ParkedEvent, ProcessState, RecordedEvent, Resolution,
    Snapshot, StreamEvent, StreamRange, StreamRef,
};

#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteStoreOptions, SqliteTx};
#[cfg(feature = "dynamodb")]
mod dynamodb;
#[cfg(feature = "dynamodb")]
pub use dynamodb::{DynamoDbStore, DynamoDbStoreOptions, DynamoDbStreamSource, ShardCursor};
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
pub use postgres::{PgCursor, PgLease, PgStore, PgStoreOptions, PgTx};
