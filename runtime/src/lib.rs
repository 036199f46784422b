#![doc = include_str!("../../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "admin")]
pub mod admin;
mod aggregate;
mod consistency;
pub mod error;
mod event;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "nats")]
pub mod nats;
mod projection;
mod repository;
mod retry;
pub mod source;
pub mod store;
pub mod testing;
pub mod workflow;

pub use aggregate::{fingerprint, Aggregate, Command, Handle, StreamPolicy, TaggedCommand};
pub use consistency::{wait_for_checkpoint, wait_for_checkpoints};
pub use error::{DispatchError, Error, ExecuteError, ProjectionError, StoreError};
pub use event::{DecodeError, Event, Events, IntoEvents};
pub use projection::{Progress, Projection, ProjectionRunner, Runner, Status, DEFAULT_RUN_BACKOFF};
pub use repository::{
    Executed, Loaded, NoSnapshots, Repository, SnapshotPolicy, Snapshots, DEFAULT_LOAD_PAGE,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_BACKOFF,
};
pub use retry::Backoff;
pub use store::{
    Checkpoint, CommitMeta, EventMeta, ExpectedVersion, MemoryStore, MemoryTx, RecordedEvent,
    StreamRef,
};
#[cfg(feature = "dynamodb")]
pub use store::{DynamoDbStore, DynamoDbStoreOptions};
#[cfg(feature = "postgres")]
pub use store::{PgStore, PgStoreOptions, PgTx};
#[cfg(feature = "sqlite")]
pub use store::{SqliteStore, SqliteStoreOptions, SqliteTx};

#[cfg(feature = "derive")]
pub use annals_macros::{aggregate, process, projection, reactor, Command, Event, Events};

// Linked rather than inlined: inlined, their pages would carry the `time` and `uuid`
// crates' own feature badges as if they were annals features.
#[doc(no_inline)]
pub use time::OffsetDateTime;
#[doc(no_inline)]
pub use uuid::Uuid;

/// Items generated code reaches; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::aggregate::{
        assert_aggregate_default, assert_command_clone, assert_command_of,
        assert_declared_aggregate, assert_event_of, fingerprint_probe, id_check, AggregateDefault,
        AggregateId, ApplyEvent, CommandClone, CommandOf, DeclaredAggregate, DispatchEvents,
        EventOf, FingerprintProbe, HandlerResult, IdCheck,
    };
    pub use crate::event::{
        codec, const_str_eq, from_json, from_json_value, names_collide, serde_probe, to_json_value,
        DeclaredEvent, EventCodec, SerdeProbe,
    };
    pub use crate::projection::{
        assert_projected_event, decode_for, event_is, handler_error, ProjectedEvent,
        ProjectionOutcome,
    };
    pub use core;
    pub use serde;
    pub use serde_json;
    pub use std;
}
