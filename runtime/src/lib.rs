#![doc = include_str!("../../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aggregate;
pub mod error;
pub mod event;
pub mod projection;
pub mod repository;
pub mod store;
pub mod testing;

pub use aggregate::{Aggregate, Command, Handle, StreamPolicy};
pub use error::{Error, ExecuteError, StoreError};
pub use event::{DecodeError, Event, Events, IntoEvents};
pub use projection::{
    CheckpointStore, Progress, Projection, ProjectionError, ProjectionRunner, Status,
};
pub use repository::{Executed, Loaded, Repository};
pub use store::{
    AppendOutcome, CommitMeta, EventFilter, EventMeta, EventStore, ExpectedVersion, Headers,
    LocalLease, MemoryStore, MemoryTx, NewEvent, RecordedEvent, Snapshot, SnapshotStore,
    StreamEvent, StreamRange,
};
#[cfg(feature = "postgres")]
pub use store::{PgLease, PgStore, PgStoreOptions, PgTx};
#[cfg(feature = "sqlite")]
pub use store::{SqliteStore, SqliteTx};

#[cfg(feature = "derive")]
pub use annals_macros::{aggregate, projection, Command, Event, Events};

pub use time::OffsetDateTime;
pub use uuid::Uuid;

/// Items generated code reaches; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::aggregate::{
        assert_aggregate_default, assert_command_clone, assert_command_of,
        assert_declared_aggregate, assert_event_of, id_check, AggregateDefault, AggregateId,
        ApplyEvent, CommandClone, CommandOf, DeclaredAggregate, DispatchEvents, EventOf,
        HandlerResult, IdCheck,
    };
    pub use crate::event::{
        codec, const_str_eq, from_json, from_json_value, names_collide, serde_probe, to_json_value,
        DeclaredEvent, EventCodec, SerdeProbe,
    };
    pub use crate::projection::{
        assert_projected_event, event_is, ProjectedEvent, ProjectionOutcome,
    };
    pub use core;
    pub use serde;
    pub use serde_json;
    pub use std;
}
