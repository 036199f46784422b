//! Events: the [`Event`] trait for one event struct and [`Events`] for the enum grouping an
//! aggregate's events.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a stored payload could not be turned into an event, without the position it came
/// from (the caller adds that: see [`crate::Error::Decode`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No event of the enum has this stored type name or alias.
    #[error("unknown event type")]
    UnknownType,
    /// The event type is known but not at this schema version, and no upcaster covers it.
    #[error("unknown version {found} (current version is {current})")]
    UnknownVersion {
        /// The stored version.
        found: u32,
        /// The version the code declares.
        current: u32,
    },
    /// The payload is not valid JSON for the type it is stored as.
    #[error("malformed payload: {0}")]
    Payload(serde_json::Error),
}

/// One event struct: its stable stored name, schema version, aliases and upcasters.
///
/// Implement it with `#[derive(Event)]`:
///
/// ```
/// use annals::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(name = "MoneyDeposited", version = 2, upcast(from = 1, with = DepositedV1))]
/// struct Deposited { amount: u64, memo: String }
///
/// #[derive(Deserialize)]
/// struct DepositedV1 { amount: u64 }
///
/// impl From<DepositedV1> for Deposited {
///     fn from(old: DepositedV1) -> Self { Deposited { amount: old.amount, memo: String::new() } }
/// }
///
/// let old = Deposited::decode(1, r#"{"amount": 5}"#).unwrap();
/// assert_eq!((old.amount, old.memo.as_str()), (5, ""));
/// assert_eq!(<Deposited as Event>::NAME, "MoneyDeposited");
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stored type name.
    const NAME: &'static str;
    /// The current schema version (1 unless declared).
    const VERSION: u32;
    /// Former names this event is also read under.
    const ALIASES: &'static [&'static str];

    /// Decodes a payload stored at `version`, running the upcast chain for older versions.
    fn decode(version: u32, payload: &str) -> Result<Self, DecodeError>;

    /// Encodes the event at its current version.
    fn encode(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// The enum of one aggregate's events (newtype variants around [`Event`] structs).
///
/// Implement it with `#[derive(Events)]`, which also gives `From<Struct>` for each variant.
pub trait Events: Sized + Send + Sync + 'static {
    /// The stored type names of the variants, in declaration order (aliases not included).
    const NAMES: &'static [&'static str];

    /// Every name a stored event of this enum may carry: names and aliases.
    fn accepted_names() -> Vec<&'static str>;

    /// The stored type name of this event.
    fn event_type(&self) -> &'static str;

    /// The schema version this event is encoded at.
    fn event_version(&self) -> u32;

    /// Encodes the payload as JSON.
    fn encode(&self) -> Result<String, serde_json::Error>;

    /// Decodes a stored event from its type name, schema version and payload.
    fn decode(event_type: &str, event_version: u32, payload: &str) -> Result<Self, DecodeError>;
}

/// What a command handler may return: one event struct, the event enum, a `Vec` or
/// `Option` of either, or `()` for no change.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned as events of `{E}`",
    label = "not convertible into events of `{E}`",
    note = "a command handler returns `Result<T, _>` where `T` is an event struct of the enum, \
            the enum itself, a `Vec` or `Option` of those, or `()`"
)]
pub trait IntoEvents<E> {
    /// Turns the handler's output into the events to append.
    fn into_events(self) -> Vec<E>;
}

impl<E: Events> IntoEvents<E> for E {
    fn into_events(self) -> Vec<E> {
        vec![self]
    }
}

impl<E: Events> IntoEvents<E> for () {
    fn into_events(self) -> Vec<E> {
        Vec::new()
    }
}

impl<E: Events, T: IntoEvents<E>> IntoEvents<E> for Vec<T> {
    fn into_events(self) -> Vec<E> {
        let mut out = Vec::with_capacity(self.len());
        for item in self {
            out.extend(item.into_events());
        }
        out
    }
}

impl<E: Events, T: IntoEvents<E>, const N: usize> IntoEvents<E> for [T; N] {
    fn into_events(self) -> Vec<E> {
        let mut out = Vec::with_capacity(N);
        for item in self {
            out.extend(item.into_events());
        }
        out
    }
}

impl<E: Events, T: IntoEvents<E>> IntoEvents<E> for Option<T> {
    fn into_events(self) -> Vec<E> {
        self.map(IntoEvents::into_events).unwrap_or_default()
    }
}

/// Decodes `payload` as `T`, mapping the JSON error. Used by generated upcast chains.
#[doc(hidden)]
pub fn from_json<T: DeserializeOwned>(payload: &str) -> Result<T, DecodeError> {
    serde_json::from_str(payload).map_err(DecodeError::Payload)
}

/// Decodes a JSON value as `T`. Used by generated upcast chains after a raw-JSON step.
#[doc(hidden)]
pub fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, DecodeError> {
    serde_json::from_value(value).map_err(DecodeError::Payload)
}

/// Encodes a typed upcast step as a JSON value for the raw-JSON step after it.
#[doc(hidden)]
pub fn to_json_value<T: Serialize>(value: &T) -> Result<serde_json::Value, DecodeError> {
    serde_json::to_value(value).map_err(DecodeError::Payload)
}

/// Compares two strings in a const context: generated code asserts at compile time that
/// the events of one enum have distinct stored names.
#[doc(hidden)]
pub const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether any name or alias of one event equals any name or alias of another.
#[doc(hidden)]
pub const fn names_collide(a: &str, a_aliases: &[&str], b: &str, b_aliases: &[&str]) -> bool {
    if const_str_eq(a, b) {
        return true;
    }
    let mut i = 0;
    while i < a_aliases.len() {
        if const_str_eq(a_aliases[i], b) {
            return true;
        }
        let mut j = 0;
        while j < b_aliases.len() {
            if const_str_eq(a_aliases[i], b_aliases[j]) {
                return true;
            }
            j += 1;
        }
        i += 1;
    }
    let mut j = 0;
    while j < b_aliases.len() {
        if const_str_eq(a, b_aliases[j]) {
            return true;
        }
        j += 1;
    }
    false
}

/// The stored names and version of a `#[derive(Event)]` struct, implemented whether or not
/// its `Event` impl holds: `#[derive(Events)]` checks name collisions with them, and a
/// missing serde derive is then reported once, at the event.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event: add `#[derive(Event, Serialize, Deserialize)]` to it",
    label = "not an event",
    note = "the variants of a `#[derive(Events)]` enum wrap event structs"
)]
pub trait DeclaredEvent {
    /// [`Event::NAME`].
    const NAME: &'static str;
    /// [`Event::VERSION`].
    const VERSION: u32;
    /// [`Event::ALIASES`].
    const ALIASES: &'static [&'static str];
}

/// Finds out at compile time, for a concrete type, which of serde's traits it implements
/// (method resolution picks the first impl whose bounds hold), so that `#[derive(Event)]`
/// reports exactly one error naming the missing derives.
#[doc(hidden)]
pub struct SerdeProbe<T>(std::marker::PhantomData<T>);

impl<T> SerdeProbe<T> {
    /// The probe, used as `(&&&&SerdeProbe::<T>::NEW).serde()`.
    pub const NEW: Self = SerdeProbe(std::marker::PhantomData);
}

/// The probe's verdicts; each `require` bound carries the fix as its message.
#[doc(hidden)]
pub mod serde_probe {
    use std::marker::PhantomData;

    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::SerdeProbe;

    /// Both traits implemented.
    pub struct Both<T>(PhantomData<T>);
    /// `Deserialize` missing.
    pub struct NoDeserialize<T>(PhantomData<T>);
    /// `Serialize` missing.
    pub struct NoSerialize<T>(PhantomData<T>);
    /// Both missing.
    pub struct Neither<T>(PhantomData<T>);

    /// Highest priority: both traits.
    pub trait ProbeBoth<T> {
        /// The verdict.
        fn serde(&self) -> Both<T>;
    }
    impl<T: Serialize + DeserializeOwned> ProbeBoth<T> for &&&SerdeProbe<T> {
        fn serde(&self) -> Both<T> {
            Both(PhantomData)
        }
    }

    /// Then `Serialize` alone.
    pub trait ProbeSerialize<T> {
        /// The verdict.
        fn serde(&self) -> NoDeserialize<T>;
    }
    impl<T: Serialize> ProbeSerialize<T> for &&SerdeProbe<T> {
        fn serde(&self) -> NoDeserialize<T> {
            NoDeserialize(PhantomData)
        }
    }

    /// Then `Deserialize` alone.
    pub trait ProbeDeserialize<T> {
        /// The verdict.
        fn serde(&self) -> NoSerialize<T>;
    }
    impl<T: DeserializeOwned> ProbeDeserialize<T> for &SerdeProbe<T> {
        fn serde(&self) -> NoSerialize<T> {
            NoSerialize(PhantomData)
        }
    }

    /// Last: neither.
    pub trait ProbeNeither<T> {
        /// The verdict.
        fn serde(&self) -> Neither<T>;
    }
    impl<T> ProbeNeither<T> for SerdeProbe<T> {
        fn serde(&self) -> Neither<T> {
            Neither(PhantomData)
        }
    }

    /// Never implemented: names the fix when both derives are missing.
    #[diagnostic::on_unimplemented(
        message = "event `{Self}` must implement `Serialize` and `Deserialize`: add `#[derive(Serialize, Deserialize)]` to `{Self}`",
        label = "`{Self}` implements neither `Serialize` nor `Deserialize`",
        note = "events are stored as JSON; the derives come from `serde` (`use serde::{{Deserialize, Serialize}};`)"
    )]
    pub trait DeriveSerde {}

    /// Never implemented: names the fix when `Serialize` is missing.
    #[diagnostic::on_unimplemented(
        message = "event `{Self}` must implement `Serialize`: add `Serialize` to the derives of `{Self}`",
        label = "`{Self}` does not implement `Serialize`",
        note = "events are stored as JSON; the derive comes from `serde` (`use serde::Serialize;`)"
    )]
    pub trait DeriveSerialize {}

    /// Never implemented: names the fix when `Deserialize` is missing.
    #[diagnostic::on_unimplemented(
        message = "event `{Self}` must implement `Deserialize`: add `Deserialize` to the derives of `{Self}`",
        label = "`{Self}` does not implement `Deserialize`",
        note = "events are stored as JSON; the derive comes from `serde` (`use serde::Deserialize;`)"
    )]
    pub trait DeriveDeserialize {}

    impl<T> Both<T> {
        /// Nothing to report.
        pub fn require(self) {}
    }
    impl<T> NoDeserialize<T> {
        /// Reports the missing derive.
        pub fn require(self)
        where
            T: DeriveDeserialize,
        {
        }
    }
    impl<T> NoSerialize<T> {
        /// Reports the missing derive.
        pub fn require(self)
        where
            T: DeriveSerialize,
        {
        }
    }
    impl<T> Neither<T> {
        /// Reports the missing derives.
        pub fn require(self)
        where
            T: DeriveSerde,
        {
        }
    }
}

/// Encodes and decodes one variant of a `#[derive(Events)]` enum through its [`Event`]
/// impl: `(&&EventCodec::<E>::NEW).decode(..)` resolves to [`codec::ByEvent`] when `E:
/// Event` holds, and otherwise to the inert [`codec::Unusable`], whose failure is already
/// reported at the event (a missing serde derive), so the enum adds no error of its own.
#[doc(hidden)]
pub struct EventCodec<E>(std::marker::PhantomData<E>);

impl<E> EventCodec<E> {
    /// The codec, used as `(&&EventCodec::<E>::NEW)`.
    pub const NEW: Self = EventCodec(std::marker::PhantomData);
}

/// The two resolutions of [`EventCodec`].
#[doc(hidden)]
pub mod codec {
    use super::{DecodeError, Event, EventCodec};

    /// Through the event's [`Event`] impl.
    pub trait ByEvent<E> {
        /// [`Event::encode`].
        fn encode(&self, event: &E) -> Result<String, serde_json::Error>;
        /// [`Event::decode`].
        fn decode(&self, version: u32, payload: &str) -> Result<E, DecodeError>;
    }

    impl<E: Event> ByEvent<E> for &EventCodec<E> {
        #[inline]
        fn encode(&self, event: &E) -> Result<String, serde_json::Error> {
            event.encode()
        }

        #[inline]
        fn decode(&self, version: u32, payload: &str) -> Result<E, DecodeError> {
            E::decode(version, payload)
        }
    }

    /// For a type whose `Event` impl does not hold; such a program does not compile.
    pub trait Unusable<E> {
        /// Fails.
        fn encode(&self, event: &E) -> Result<String, serde_json::Error>;
        /// Fails.
        fn decode(&self, version: u32, payload: &str) -> Result<E, DecodeError>;
    }

    impl<E> Unusable<E> for EventCodec<E> {
        fn encode(&self, _: &E) -> Result<String, serde_json::Error> {
            Err(serde::ser::Error::custom("not an event"))
        }

        fn decode(&self, _: u32, _: &str) -> Result<E, DecodeError> {
            Err(DecodeError::UnknownType)
        }
    }
}
