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

    /// What the command says, recorded with its command id so that the id reused by a
    /// different command is refused instead of answered with the first one's outcome.
    ///
    /// `#[derive(Command)]` returns [`fingerprint`] of the type's name and its JSON when the
    /// command implements `Serialize`, and `None` otherwise (such a command's id is only
    /// checked against its stream).
    fn fingerprint(&self) -> Option<String> {
        None
    }
}

/// A command fingerprint: the SHA-256, in hex, of `name`, a NUL and `command`'s JSON.
/// Stable across processes and builds while the command's name and fields stay the same.
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Deposit { account: u32, amount: u64 }
///
/// let a = annals::fingerprint("Deposit", &Deposit { account: 1, amount: 5 });
/// let b = annals::fingerprint("Deposit", &Deposit { account: 1, amount: 6 });
/// assert_eq!(a.as_ref().map(String::len), Some(64));
/// assert_ne!(a, b);
/// ```
pub fn fingerprint<T: serde::Serialize + ?Sized>(name: &str, command: &T) -> Option<String> {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let json = serde_json::to_vec(command).ok()?;
    let mut hasher = sha2::Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0]);
    hasher.update(&json);
    let mut hex = String::with_capacity(64);
    for byte in hasher.finalize().iter() {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    Some(hex)
}

/// Picks [`fingerprint`] for a `Serialize` command and `None` otherwise, by method
/// resolution: `(&&&FingerprintProbe(command)).fingerprint(name)`.
#[doc(hidden)]
pub struct FingerprintProbe<'a, T>(pub &'a T);

/// The two resolutions of [`FingerprintProbe`].
#[doc(hidden)]
pub mod fingerprint_probe {
    use super::FingerprintProbe;

    /// The command implements `Serialize`.
    pub trait Serialized {
        /// Its fingerprint.
        fn fingerprint(&self, name: &str) -> Option<String>;
    }
    impl<T: serde::Serialize> Serialized for &&FingerprintProbe<'_, T> {
        fn fingerprint(&self, name: &str) -> Option<String> {
            super::fingerprint(name, self.0)
        }
    }

    /// It does not: no fingerprint.
    pub trait Unserialized {
        /// `None`.
        fn fingerprint(&self, name: &str) -> Option<String>;
    }
    impl<T> Unserialized for &FingerprintProbe<'_, T> {
        fn fingerprint(&self, _name: &str) -> Option<String> {
            None
        }
    }
}

/// A tagged enum of commands, the one `#[aggregate]` generates (`<Aggregate>Command`): what
/// transports need to read one variant by its tag and report a bad field by its path
/// (serde's own tagged-enum support buffers the body and loses both).
pub trait TaggedCommand: Command {
    /// The field naming the variant (`command_enum(tag = "..")`, default `"command"`).
    const TAG: &'static str;
    /// The field holding the command's fields, when they are not next to the tag
    /// (`command_enum(content = "..")`).
    const CONTENT: Option<&'static str>;
    /// The variants' names, as the tag spells them.
    const VARIANTS: &'static [&'static str];

    /// Deserializes the fields of variant `variant` (the tag removed) from `deserializer`;
    /// `Ok(None)` when no variant has this name.
    fn deserialize_variant<'de, D>(
        variant: &str,
        deserializer: D,
    ) -> Result<Option<Self>, D::Error>
    where
        D: serde::Deserializer<'de>;
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

/// Marks a type whose impl block has `#[aggregate(..)]`, whether or not its `Aggregate`
/// impl holds, so `#[derive(Command)]` can tell a type that is no aggregate from an
/// aggregate with its own mistake (reported once, by `#[aggregate]`).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an aggregate: `#[command(aggregate = ..)]` names the type whose impl block has `#[aggregate(..)]`",
    label = "not an aggregate",
    note = "an aggregate is a type whose inherent impl block has `#[aggregate(id = .., event = .., error = ..)]`"
)]
pub trait DeclaredAggregate {}

/// Checks at compile time that `T` has an `#[aggregate]` impl block.
#[doc(hidden)]
pub const fn assert_declared_aggregate<T: DeclaredAggregate + ?Sized>() {}

/// `Default`, with the fix in the message: the generated `Aggregate` impl holds only for a
/// `Default` type, so this check is the one error.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` must implement `Default`: add `#[derive(Default)]` to `{Self}`",
    label = "`{Self}` does not implement `Default`",
    note = "an aggregate is rebuilt from its events starting at `Default::default()`"
)]
pub trait AggregateDefault {}

impl<T: Default> AggregateDefault for T {}

/// Checks at compile time that aggregate `T` implements `Default`.
#[doc(hidden)]
pub const fn assert_aggregate_default<T: AggregateDefault>() {}

/// `Clone`, with the fix in the message: the generated `Command` impl holds only for a
/// `Clone` type, so this check is the one error.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "command `{Self}` must implement `Clone`: add `#[derive(Clone)]` to `{Self}`",
    label = "`{Self}` does not implement `Clone`",
    note = "a command is cloned when a version conflict makes the repository run its handler again"
)]
pub trait CommandClone {}

impl<T: Clone> CommandClone for T {}

/// Checks at compile time that command `T` implements `Clone`.
#[doc(hidden)]
pub const fn assert_command_clone<T: CommandClone>() {}

/// Marks a `#[derive(Command)]` type with the aggregate its `#[command(aggregate = ..)]`
/// names, whether or not its `Command` impl holds.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command of aggregate `{A}`: derive `Command` on it with `#[command(aggregate = {A})]`, or move this handler to the aggregate it names",
    label = "not a command of `{A}`",
    note = "an aggregate's `#[command]` handlers take commands whose `#[command(aggregate = ..)]` is that aggregate"
)]
pub trait CommandOf<A: ?Sized> {}

/// Checks at compile time that `C` is a command of aggregate `A`.
#[doc(hidden)]
pub const fn assert_command_of<C: CommandOf<A> + ?Sized, A: ?Sized>() {}

/// The `#[command(id)]` field's type, when it is the aggregate's id type `Id`.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the `#[command(id)]` field must have `{A}`'s id type `{Id}`, not `{Self}`: change its type to `{Id}`",
    label = "expected `{Id}`, the id type of `{A}`",
    note = "the aggregate's id type is declared by `#[aggregate(id = ..)]`"
)]
pub trait AggregateId<A: ?Sized, Id: ?Sized> {}

impl<A: ?Sized, Id: ?Sized> AggregateId<A, Id> for Id {}

/// Checks at compile time that a command's id field has type `F`, the id type of aggregate
/// `A`; only when `A` is an aggregate, since otherwise that is the one error to report
/// (`(&&IdCheck::<A, F>::NEW).id_check().require()` resolves to [`id_check::Unknown`]).
#[doc(hidden)]
pub struct IdCheck<A, F>(std::marker::PhantomData<fn() -> (A, F)>);

impl<A, F> IdCheck<A, F> {
    /// The check.
    pub const NEW: Self = IdCheck(std::marker::PhantomData);
}

/// The two resolutions of [`IdCheck`].
#[doc(hidden)]
pub mod id_check {
    use std::marker::PhantomData;

    use super::{Aggregate, AggregateId, IdCheck};

    /// `A` is an aggregate: the id type is checked.
    pub struct Checked<A, F>(PhantomData<fn() -> (A, F)>);
    /// `A` is no aggregate, which is reported on its own.
    pub struct Unknown;

    /// When `A` is an aggregate.
    pub trait OfAggregate<A, F> {
        /// The verdict.
        fn id_check(&self) -> Checked<A, F>;
    }
    impl<A: Aggregate, F> OfAggregate<A, F> for &IdCheck<A, F> {
        fn id_check(&self) -> Checked<A, F> {
            Checked(PhantomData)
        }
    }

    /// Otherwise.
    pub trait NotAggregate {
        /// The verdict.
        fn id_check(&self) -> Unknown;
    }
    impl<A, F> NotAggregate for IdCheck<A, F> {
        fn id_check(&self) -> Unknown {
            Unknown
        }
    }

    impl<A: Aggregate, F> Checked<A, F> {
        /// Reports a field of another type than the aggregate's id.
        pub fn require(self)
        where
            F: AggregateId<A, A::Id>,
        {
        }
    }

    impl Unknown {
        /// Nothing to report here.
        pub fn require(self) {}
    }
}
