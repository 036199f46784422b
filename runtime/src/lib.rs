#![doc = include_str!("../../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod aggregate;
pub mod error;
mod event;
mod projection;
mod repository;
mod retry;
pub mod store;
pub mod testing;

pub use aggregate::{Aggregate, Command, Handle, StreamPolicy};
pub use error::{Error, ExecuteError, ProjectionError, StoreError};
pub use event::{DecodeError, Event, Events, IntoEvents};
pub use projection::{Progress, Projection, ProjectionRunner, Status, DEFAULT_RUN_BACKOFF};
pub use repository::{
    Executed, Loaded, NoSnapshots, Repository, SnapshotPolicy, Snapshots, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_BACKOFF,
};
pub use retry::Backoff;
pub use store::{
    CommitMeta, EventMeta, ExpectedVersion, MemoryStore, MemoryTx, RecordedEvent, StreamRef,
};
#[cfg(feature = "postgres")]
pub use store::{PgStore, PgStoreOptions, PgTx};
#[cfg(feature = "sqlite")]
pub use store::{SqliteStore, SqliteStoreOptions, SqliteTx};

#[cfg(feature = "derive")]
pub use annals_macros::{aggregate, projection, Command, Event, Events};

pub use time::OffsetDateTime;
pub use uuid::Uuid;

/// Items generated code reaches; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::aggregate::{
        assert_event_of, ApplyEvent, DispatchEvents, EventOf, HandlerResult,
    };
    pub use crate::event::{
        const_str_eq, from_json, from_json_value, names_collide, to_json_value,
    };
    pub use crate::projection::{decode_for, event_is, handler_error, ProjectionOutcome};
    pub use core;
    pub use serde;
    pub use serde_json;
    pub use std;
}
