//! Aggregates, commands and their handlers.

use std::fmt::Display;
use std::future::Future;

use crate::event::Events;

/// What a command handler requires of the aggregate's stream before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamPolicy {
    /// The stream must not exist yet (`#[command(create)]`).
    Create,
    /// The stream must exist (`#[command]` or `#[command(existing)]`).
    Existing,
    /// Either (`#[command(any)]`).
    Any,
}

/// A consistency boundary rebuilt from its events.
///
/// Implemented by `#[aggregate(..)]` on the aggregate's impl block.
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The stream type under which this aggregate's events are stored.
    const NAME: &'static str;
    /// How often a snapshot is written (every N events); 0 means never.
    const SNAPSHOT_EVERY: u64 = 0;
    /// The snapshot schema version; a stored snapshot of another version is ignored.
    const SNAPSHOT_VERSION: u32 = 0;

    /// The identifier; its `Display` form is the stream id.
    type Id: Display + Send + Sync + 'static;
    /// The event enum.
    type Event: Events;
    /// The error handlers return when they refuse a command.
    type Error: std::error::Error + Send + Sync + 'static;
    /// What handlers receive as their services parameter (`()` when none takes one).
    type Services: Send + Sync + 'static;

    /// Folds one event into the state.
    fn apply(&mut self, event: &Self::Event);

    /// Encodes the state as a snapshot, when the aggregate declares snapshots.
    fn encode_snapshot(&self) -> Option<Result<String, serde_json::Error>> {
        None
    }

    /// Decodes a snapshot written by [`Aggregate::encode_snapshot`].
    fn decode_snapshot(_snapshot: &str) -> Option<Result<Self, serde_json::Error>> {
        None
    }
}

/// A request to change one aggregate. Implemented by `#[derive(Command)]` and by the
/// generated `<Aggregate>Command` enum.
///
/// Commands are plain data and are cloned when a version conflict makes
/// [`crate::Repository::execute`] run the handler again.
pub trait Command: Clone + Send + Sync + 'static {
    /// The aggregate this command targets.
    type Aggregate: Aggregate;

    /// The id of the target aggregate (the field marked `#[command(id)]`).
    fn aggregate_id(&self) -> &<Self::Aggregate as Aggregate>::Id;
}

/// The handler of command `C` on an aggregate, generated for each `#[command]` method.
pub trait Handle<C: Command<Aggregate = Self>>: Aggregate {
    /// The stream policy the handler declared.
    fn policy(command: &C) -> StreamPolicy;

    /// Decides on the command given the current state.
    fn handle(
        &self,
        command: C,
        services: &Self::Services,
    ) -> impl Future<Output = Result<Vec<Self::Event>, Self::Error>> + Send;
}
