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
    /// [`crate::Snapshots`] when the aggregate declares `snapshot(..)`, else
    /// [`crate::NoSnapshots`]: a repository then needs a [`crate::store::SnapshotStore`]
    /// only for aggregates that take snapshots.
    type Snapshots: Send + Sync + 'static;

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

/// Folds one event struct into an aggregate. `#[aggregate]` implements it for each
/// `#[apply]` method and, as a no-op, for each type in `ignore(..)`.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "event `{E}` is neither applied nor ignored by aggregate `{Self}`",
    label = "`{Self}` has no `#[apply]` method for `{E}`",
    note = "add an `#[apply]` method taking `&{E}`, or list it in `#[aggregate(ignore(..))]`"
)]
pub trait ApplyEvent<E> {
    /// Applies the event.
    fn apply_event(&mut self, event: &E);
}

/// Matches an event enum's variant and hands its struct to the aggregate's
/// [`ApplyEvent`] impl. `#[derive(Events)]` implements it for every aggregate that applies
/// or ignores each of the enum's events.
#[doc(hidden)]
pub trait DispatchEvents<A> {
    /// Applies the variant held by `self` to `aggregate`.
    fn dispatch(&self, aggregate: &mut A);
}

/// Marks the event structs of an event enum, so `#[aggregate]` can check that its
/// `#[apply]` and `ignore(..)` types belong to the aggregate's enum.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event of `{E}`",
    label = "not a variant of `{E}`",
    note = "`#[apply]` methods and `ignore(..)` take the event structs wrapped by the aggregate's event enum"
)]
pub trait EventOf<E> {}

/// Checks at compile time that `T` is one of the structs of event enum `E`.
#[doc(hidden)]
pub const fn assert_event_of<T: EventOf<E> + ?Sized, E>() {}

/// The `Result` a command handler returns, with the aggregate's error type.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a command handler must return `Result<_, {E}>`, with the aggregate's error type",
    label = "expected `Result<_, {E}>`, found `{Self}`"
)]
pub trait HandlerResult<E> {
    /// What the handler produced on success.
    type Output;

    /// The handler's result.
    fn into_result(self) -> Result<Self::Output, E>;
}

impl<T, E> HandlerResult<E> for Result<T, E> {
    type Output = T;

    fn into_result(self) -> Result<T, E> {
        self
    }
}
