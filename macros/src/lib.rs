//! Derive and attribute macros for [annals](https://docs.rs/annals). Depend on the `annals`
//! crate, which re-exports them; this crate's paths assume it.

#![forbid(unsafe_code)]

mod ast;
mod attr;
mod expand;

#[cfg(test)]
mod tests;

use proc_macro::TokenStream;

/// Implements `annals::Event` for an event struct: its stored name, schema version, aliases
/// and upcast chain.
///
/// `#[event(name = "..", version = N, aliases = ["Old"], upcast(from = N, with = Type),
/// upcast(from = N, json = path::to::fn))]`, every key optional.
#[proc_macro_derive(Event, attributes(event, annals))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    expand::event::derive(input.into()).into()
}

/// Implements `annals::Events` for the enum of an aggregate's events (newtype variants
/// around `Event` structs), with `From<Struct>` and `IntoEvents<Enum>` for each variant.
#[proc_macro_derive(Events, attributes(annals))]
pub fn derive_events(input: TokenStream) -> TokenStream {
    expand::events::derive(input.into()).into()
}

/// Implements `annals::Command`: `#[command(aggregate = Type)]` on the struct and
/// `#[command(id)]` on the field holding the aggregate's id.
#[proc_macro_derive(Command, attributes(command, annals))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    expand::command::derive(input.into()).into()
}

/// Wires an aggregate's impl block: `impl Aggregate` (apply dispatch to the `#[apply]`
/// methods), `impl Handle<C>` for each `#[command]` method, and the `<Aggregate>Command`
/// enum.
///
/// `#[aggregate(id = Type, event = Type, error = Type, services = Type, ignore(Ev, ..),
/// snapshot(every = N, version = M), name = "..", command_enum(..), crate = "..")]`.
#[proc_macro_attribute]
pub fn aggregate(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::aggregate::attribute(args.into(), item.into()).into()
}

/// Wires a projection's impl block: `impl Projection<Tx>` dispatching stored events to the
/// `#[on]` methods, the list of event types to fetch, and the `#[reset]` hook for rebuilds.
///
/// `#[projection(name = "..", crate = "..")]`; handlers look like
/// `async fn name(&mut self, event: &Event, meta: &EventMeta, tx: &mut Tx) -> Result<(), E>`
/// where `meta`, `tx` and `async` are optional.
#[proc_macro_attribute]
pub fn projection(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::projection::attribute(args.into(), item.into()).into()
}

/// Wires a reactor's impl block: `impl annals::workflow::Reactor<S>` dispatching stored
/// events to the `#[on]` methods, which return the commands to send; the list of event
/// types to fetch and of command types sent (checked against the dispatcher's routes).
///
/// `#[reactor(name = "..", rejected = stop | ignore, crate = "..")]`; handlers look like
/// `async fn name(&self, event: &Event, meta: &EventMeta) -> Commands` where `meta` and
/// `async` are optional; one `#[rejected]` method taking `&Rejection` compensates refused
/// commands.
#[proc_macro_attribute]
pub fn reactor(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::reactor::attribute(args.into(), item.into()).into()
}

/// Wires a process manager's impl block (the state of one correlation key, `Default +
/// Serialize + Deserialize`): `impl annals::workflow::Process<S>` dispatching stored events
/// to the `#[on]` methods and deadlines to the `#[deadline]` methods, which return the
/// commands to send.
///
/// `#[process(name = "..", key = field, services = T, rejected = stop | ignore, crate =
/// "..")]`: `key` names the field of every handled event holding the correlation key (`key =
/// stream_id`: the event's stream id); `services` is what handlers taking a `&T` parameter
/// receive (inferred from them when left out). Handlers look like `async fn name(&mut self,
/// event: &Event, meta: &EventMeta, services: &T, ctx: &mut Ctx) -> Commands`, deadlines
/// like `async fn name(&mut self, services: &T, ctx: &mut Ctx) -> Commands`; `meta`,
/// `services`, `ctx` and `async` are optional. One `#[rejected]` method, `async fn
/// name(&mut self, rejection: &Rejection, services: &T, ctx: &mut Ctx) -> Commands`,
/// compensates refused commands.
#[proc_macro_attribute]
pub fn process(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::process::attribute(args.into(), item.into()).into()
}
