//! Workflows: reactors that turn events into commands, and the dispatcher that routes each
//! command to its aggregate's repository.
//!
//! A reactor (`#[reactor(name = "..")]`) runs on the same [`Runner`](crate::Runner) as a
//! projection, wrapped in [`Reactions`]: the runner reads a batch from its source, the
//! reactor's handlers turn each event into commands, the [`Dispatcher`] executes them (each
//! in its repository's own transaction), then the checkpoint moves past the batch. A crash
//! in between delivers the events again; every command carries an id derived from
//! (reactor name, triggering event id, index), so the repository's idempotency absorbs the
//! second sending and each command takes effect once.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use uuid::Uuid;

use crate::aggregate::{Aggregate, Command, Handle};
use crate::error::{BoxError, DispatchError, ExecuteError, ProjectionError};
use crate::projection::Projection;
use crate::repository::{Repository, SnapshotPolicy};
use crate::store::{CommitMeta, EventMeta, EventStore, ParkingStore, RecordedEvent, Resolution};

/// What a reactor does when the aggregate refuses a command it sent (the handler's error,
/// or the stream policy not met).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnRejected {
    /// Fail on the event, as for any handler error: the runner stops with the checkpoint
    /// before it, or parks it when [`crate::Runner::park_after`] is set. The default.
    Stop,
    /// Carry on, recording the refusal in the parking table as an
    /// [`Ignored`](crate::store::Resolution::Ignored) entry (listed with
    /// `parked(.., true)`) in the transaction that moves the checkpoint.
    Ignore,
    /// Hand the refusal to the reactor's `#[rejected]` handler, which sends compensating
    /// commands.
    Compensate,
}

/// A command type a reactor may send, and the aggregate it targets: what
/// [`Reactions::new`] checks the dispatcher routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// The aggregate's type.
    pub aggregate: TypeId,
    /// The aggregate's stream type name.
    pub aggregate_name: &'static str,
    /// The command's type name.
    pub command: &'static str,
}

impl Route {
    /// The route command `C` needs.
    pub fn of<C: Command>() -> Self {
        Route {
            aggregate: TypeId::of::<C::Aggregate>(),
            aggregate_name: <C::Aggregate as Aggregate>::NAME,
            command: std::any::type_name::<C>(),
        }
    }
}

type SendFuture = Pin<Box<dyn Future<Output = Result<(), DispatchError>> + Send>>;

/// A command on its way to the dispatcher, its type erased.
pub struct Outgoing<S> {
    command: &'static str,
    send: Box<dyn FnOnce(Dispatcher<S>, CommitMeta) -> SendFuture + Send>,
}

impl<S> std::fmt::Debug for Outgoing<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

impl<S> Outgoing<S>
where
    S: EventStore,
{
    /// Wraps `command` for sending.
    pub fn new<C>(command: C) -> Self
    where
        C: Command,
        C::Aggregate: Handle<C>,
        <C::Aggregate as Aggregate>::Snapshots: SnapshotPolicy<S>,
    {
        Outgoing {
            command: std::any::type_name::<C>(),
            send: Box::new(move |dispatcher: Dispatcher<S>, meta| {
                Box::pin(async move { dispatcher.send(command, meta).await.map(|_| ()) })
            }),
        }
    }

    /// The command's type name.
    pub fn command(&self) -> &'static str {
        self.command
    }
}

/// What a reactor's handler may return: one command, `()`, `Option`, `Vec`, a tuple of
/// up to four (commands of several aggregates), or a `Result` of these whose error is the
/// handler's failure.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not something a reactor can send",
    label = "not commands",
    note = "a reactor's `#[on]` handler returns a `#[derive(Command)]` struct, `()`, `Option`, `Vec`, a tuple of these, or a `Result` of these; and the command's aggregate must handle it"
)]
pub trait IntoCommands<S>: Send {
    /// The command types this return type can carry.
    fn routes(out: &mut Vec<Route>);

    /// Queues the commands; an `Err` is the handler's own failure.
    fn collect(self, out: &mut Vec<Outgoing<S>>) -> Result<(), BoxError>;
}

impl<S, C> IntoCommands<S> for C
where
    S: EventStore,
    C: Command,
    C::Aggregate: Handle<C>,
    <C::Aggregate as Aggregate>::Snapshots: SnapshotPolicy<S>,
{
    fn routes(out: &mut Vec<Route>) {
        out.push(Route::of::<C>());
    }

    fn collect(self, out: &mut Vec<Outgoing<S>>) -> Result<(), BoxError> {
        out.push(Outgoing::new(self));
        Ok(())
    }
}

impl<S> IntoCommands<S> for () {
    fn routes(_: &mut Vec<Route>) {}

    fn collect(self, _: &mut Vec<Outgoing<S>>) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<S, T: IntoCommands<S>> IntoCommands<S> for Option<T> {
    fn routes(out: &mut Vec<Route>) {
        T::routes(out);
    }

    fn collect(self, out: &mut Vec<Outgoing<S>>) -> Result<(), BoxError> {
        self.map_or(Ok(()), |commands| commands.collect(out))
    }
}

impl<S, T: IntoCommands<S>> IntoCommands<S> for Vec<T> {
    fn routes(out: &mut Vec<Route>) {
        T::routes(out);
    }

    fn collect(self, out: &mut Vec<Outgoing<S>>) -> Result<(), BoxError> {
        self.into_iter()
            .try_for_each(|commands| commands.collect(out))
    }
}

impl<S, T: IntoCommands<S>, E: Into<BoxError> + Send> IntoCommands<S> for Result<T, E> {
    fn routes(out: &mut Vec<Route>) {
        T::routes(out);
    }

    fn collect(self, out: &mut Vec<Outgoing<S>>) -> Result<(), BoxError> {
        self.map_err(Into::into)?.collect(out)
    }
}

macro_rules! tuple_commands {
    ($($t:ident),+) => {
        impl<S, $($t: IntoCommands<S>),+> IntoCommands<S> for ($($t,)+) {
            fn routes(out: &mut Vec<Route>) {
                $($t::routes(out);)+
            }

            #[allow(non_snake_case)]
            fn collect(self, out: &mut Vec<Outgoing<S>>) -> Result<(), BoxError> {
                let ($($t,)+) = self;
                $($t.collect(out)?;)+
                Ok(())
            }
        }
    };
}

tuple_commands!(A, B);
tuple_commands!(A, B, C);
tuple_commands!(A, B, C, D);

/// Routes each command type to its aggregate's [`Repository`] (one per aggregate, all on
/// store `S`). Cheap to clone.
///
/// ```
/// # use annals::{workflow::Dispatcher, MemoryStore};
/// let store = MemoryStore::new();
/// let dispatcher: Dispatcher<MemoryStore> = Dispatcher::new();
/// // .route(Repository::<Order, _>::new(store.clone())).route(..)
/// # let _ = (store, dispatcher);
/// ```
pub struct Dispatcher<S> {
    routes: Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    _store: std::marker::PhantomData<fn() -> S>,
}

impl<S> Clone for Dispatcher<S> {
    fn clone(&self) -> Self {
        Dispatcher {
            routes: Arc::clone(&self.routes),
            _store: std::marker::PhantomData,
        }
    }
}

impl<S> Default for Dispatcher<S> {
    fn default() -> Self {
        Dispatcher {
            routes: Arc::default(),
            _store: std::marker::PhantomData,
        }
    }
}

impl<S> std::fmt::Debug for Dispatcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("routes", &self.routes.len())
            .finish()
    }
}

impl<S: EventStore> Dispatcher<S> {
    /// A dispatcher with no routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends the commands of aggregate `A` to `repository` (replacing an earlier route of
    /// `A`).
    #[must_use]
    pub fn route<A>(mut self, repository: Repository<A, S>) -> Self
    where
        A: Aggregate,
    {
        let mut routes = (*self.routes).clone();
        routes.insert(TypeId::of::<A>(), Arc::new(repository));
        self.routes = Arc::new(routes);
        self
    }

    /// Whether commands of aggregate `route.aggregate` have a repository.
    pub fn routes(&self, route: &Route) -> bool {
        self.routes.contains_key(&route.aggregate)
    }

    /// Executes `command` with `meta` through its aggregate's repository; returns the
    /// global position of its last event (0 when it appended none).
    pub async fn send<C>(&self, command: C, meta: CommitMeta) -> Result<u64, DispatchError>
    where
        C: Command,
        C::Aggregate: Handle<C>,
        <C::Aggregate as Aggregate>::Snapshots: SnapshotPolicy<S>,
    {
        let name = std::any::type_name::<C>();
        let repository = self
            .routes
            .get(&TypeId::of::<C::Aggregate>())
            .and_then(|any| any.downcast_ref::<Repository<C::Aggregate, S>>())
            .ok_or(DispatchError::NoRoute {
                command: name,
                aggregate: <C::Aggregate as Aggregate>::NAME,
            })?;
        match repository.execute_with(command, meta).await {
            Ok(executed) => Ok(executed.position),
            Err(error) => Err(classify(name, error)),
        }
    }
}

fn classify<E: std::error::Error + Send + Sync + 'static>(
    command: &'static str,
    error: ExecuteError<E>,
) -> DispatchError {
    match error {
        ExecuteError::Rejected(e) => DispatchError::Rejected {
            command,
            source: Box::new(e),
        },
        policy @ ExecuteError::Policy { .. } => DispatchError::Rejected {
            command,
            source: Box::new(policy),
        },
        conflict @ ExecuteError::Conflict { .. } => DispatchError::Transient {
            command,
            source: Box::new(conflict),
        },
        ExecuteError::Failed(crate::Error::Store(e)) if e.is_transient() => {
            DispatchError::Transient {
                command,
                source: Box::new(e),
            }
        }
        ExecuteError::Projection(e) if e.is_transient() => DispatchError::Transient {
            command,
            source: Box::new(e),
        },
        other => DispatchError::Failed {
            command,
            source: Box::new(other),
        },
    }
}

/// The command id of the `index`th command `runner` sends for the event `event_id`: the
/// same on every delivery of the event, so a redelivery sends nothing twice.
pub fn command_id(runner: &str, event_id: Uuid, index: &str) -> Uuid {
    Uuid::new_v5(
        &NAMESPACE,
        format!("{runner}/{event_id}/{index}").as_bytes(),
    )
}

/// The UUID namespace of derived command ids.
const NAMESPACE: Uuid = Uuid::from_u128(0x6a1e_5c0d_9b7e_4f3a_8d21_55a0_c3e9_7b14);

/// A command the aggregate refused, as a reactor's `#[rejected]` handler sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Rejection {
    /// The refused command's type name.
    pub command: &'static str,
    /// Its index among the commands sent for the event.
    pub index: usize,
    /// The refusal.
    pub error: DispatchError,
}

/// Event-to-command handlers; implemented by `#[reactor(name = "..")]` for store `S`.
pub trait Reactor<S: EventStore>: Send + Sync + 'static {
    /// The reactor's stable name (the checkpoint's key, and part of every command id).
    const NAME: &'static str;
    /// What a refused command does.
    const ON_REJECTED: OnRejected;

    /// The stored event types the handlers take.
    fn event_types() -> Vec<&'static str>;

    /// Every command type the handlers may send.
    fn routes() -> Vec<Route>;

    /// Runs the event's handler, queueing its commands in `out`.
    fn react<'a>(
        &'a self,
        event: &'a RecordedEvent,
        out: &'a mut Vec<Outgoing<S>>,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send + 'a;

    /// Runs the `#[rejected]` handler for a refused command; nothing by default.
    fn rejected<'a>(
        &'a self,
        rejection: &'a Rejection,
        meta: &'a EventMeta,
        out: &'a mut Vec<Outgoing<S>>,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send + 'a {
        let _ = (rejection, meta, out);
        async { Ok(()) }
    }
}

/// What preparing one event left for its handling in the runner's transaction.
#[derive(Debug, Default)]
struct Prepared {
    /// Refusals to record ([`OnRejected::Ignore`]).
    ignored: Vec<String>,
    /// The event's failure, raised in the transaction so the runner stops or parks.
    failure: Option<ProjectionError>,
}

/// A reactor as the handler of a [`Runner`](crate::Runner): build it with
/// [`Reactions::new`] (which checks every command has a route), then
/// `Runner::new(store, reactions)`.
pub struct Reactions<R, S> {
    reactor: R,
    dispatcher: Dispatcher<S>,
    store: S,
    prepared: HashMap<Uuid, Prepared>,
}

impl<R, S> std::fmt::Debug for Reactions<R, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactions")
            .field("prepared", &self.prepared.len())
            .finish_non_exhaustive()
    }
}

impl<R, S> Reactions<R, S>
where
    S: EventStore,
    R: Reactor<S>,
{
    /// `reactor` sending through `dispatcher`, which must route every command type the
    /// reactor's handlers return: [`ProjectionError::Unrouted`] names the first missing
    /// one. `store` records ignored refusals.
    pub fn new(store: S, reactor: R, dispatcher: Dispatcher<S>) -> Result<Self, ProjectionError> {
        if let Some(missing) = R::routes().into_iter().find(|r| !dispatcher.routes(r)) {
            return Err(ProjectionError::Unrouted {
                runner: R::NAME,
                command: missing.command,
                aggregate: missing.aggregate_name,
            });
        }
        Ok(Reactions {
            reactor,
            dispatcher,
            store,
            prepared: HashMap::new(),
        })
    }

    /// The reactor.
    pub fn reactor(&self) -> &R {
        &self.reactor
    }

    /// Sends the event's commands; `Err` only for what retrying the batch may fix.
    async fn react_to(&self, event: &RecordedEvent) -> Result<Prepared, ProjectionError> {
        let mut prepared = Prepared::default();
        let mut out = Vec::new();
        if let Err(error) = self.reactor.react(event, &mut out).await {
            if error.is_transient() {
                return Err(error);
            }
            prepared.failure = Some(error);
            return Ok(prepared);
        }
        let meta = &event.meta;
        let correlation = meta.correlation_id.unwrap_or(meta.event_id);
        let commit = |index: String| {
            CommitMeta::new()
                .command_id(command_id(R::NAME, meta.event_id, &index))
                .correlation_id(correlation)
                .causation_id(meta.event_id)
        };
        for (index, outgoing) in out.into_iter().enumerate() {
            let command = outgoing.command;
            let sent = (outgoing.send)(self.dispatcher.clone(), commit(index.to_string())).await;
            let error = match sent {
                Ok(()) => continue,
                Err(error @ DispatchError::Rejected { .. }) => error,
                Err(error) => {
                    return self.command_failed(event, command, error, prepared);
                }
            };
            match R::ON_REJECTED {
                OnRejected::Stop => {
                    return self.command_failed(event, command, error, prepared);
                }
                OnRejected::Ignore => {
                    prepared.ignored.push(error_chain(&error));
                }
                OnRejected::Compensate => {
                    let rejection = Rejection {
                        command,
                        index,
                        error,
                    };
                    let mut compensations = Vec::new();
                    if let Err(error) = self
                        .reactor
                        .rejected(&rejection, meta, &mut compensations)
                        .await
                    {
                        if error.is_transient() {
                            return Err(error);
                        }
                        prepared.failure = Some(error);
                        return Ok(prepared);
                    }
                    for (i, compensation) in compensations.into_iter().enumerate() {
                        let command = compensation.command;
                        let sent = (compensation.send)(
                            self.dispatcher.clone(),
                            commit(format!("{index}/rejected/{i}")),
                        )
                        .await;
                        if let Err(error) = sent {
                            return self.command_failed(event, command, error, prepared);
                        }
                    }
                }
            }
        }
        Ok(prepared)
    }

    fn command_failed(
        &self,
        event: &RecordedEvent,
        command: &'static str,
        error: DispatchError,
        mut prepared: Prepared,
    ) -> Result<Prepared, ProjectionError> {
        let transient = error.is_transient();
        let error = ProjectionError::Command {
            runner: R::NAME,
            command,
            event_type: event.meta.event_type.clone(),
            position: event.meta.position,
            transient,
            source: error,
        };
        if transient {
            return Err(error);
        }
        prepared.failure = Some(error);
        Ok(prepared)
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

impl<R, S> Projection<S::Tx> for Reactions<R, S>
where
    S: ParkingStore,
    R: Reactor<S>,
{
    const NAME: &'static str = R::NAME;

    fn event_types() -> Vec<&'static str> {
        R::event_types()
    }

    async fn prepare<'a>(&'a mut self, events: &'a [RecordedEvent]) -> Result<(), ProjectionError> {
        self.prepared.clear();
        for event in events {
            let prepared = self.react_to(event).await?;
            let failed = prepared.failure.is_some();
            self.prepared.insert(event.meta.event_id, prepared);
            // The runner stops at the failing event: the ones after it are sent when they
            // are delivered again.
            if failed {
                break;
            }
        }
        Ok(())
    }

    async fn handle<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        tx: &'a mut S::Tx,
    ) -> Result<(), ProjectionError> {
        let Some(prepared) = self.prepared.remove(&event.meta.event_id) else {
            return Err(ProjectionError::Handler {
                projection: R::NAME,
                event_type: event.meta.event_type.clone(),
                position: event.meta.position,
                source: "a reactor handles events a runner prepared (not an inline projection)"
                    .into(),
            });
        };
        if let Some(failure) = prepared.failure {
            return Err(failure);
        }
        for refusal in &prepared.ignored {
            let id = self.store.park(tx, R::NAME, event, refusal, 1).await?;
            self.store
                .resolve_parked(tx, id, Resolution::Ignored)
                .await?;
        }
        Ok(())
    }
}
