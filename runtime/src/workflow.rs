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
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::aggregate::{Aggregate, Command, Handle};
use crate::error::{BoxError, DispatchError, ExecuteError, ProjectionError};
use crate::projection::Projection;
use crate::repository::{Repository, SnapshotPolicy};
use crate::store::{
    CommitMeta, Deadline, EventMeta, EventStore, ParkingStore, ProcessStore, RecordedEvent,
    Resolution,
};

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

/// A command the aggregate refused, as a `#[rejected]` handler (of a reactor or a process
/// manager) sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Rejection {
    /// The refused command's type name.
    pub command: &'static str,
    /// Its index among the commands sent for the event (or the deadline).
    pub index: usize,
    /// The refusal.
    pub error: DispatchError,
    /// The name of the process manager's `#[deadline]` handler that sent the command;
    /// `None` when an event's handler sent it (always for a reactor).
    pub deadline: Option<String>,
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
                        deadline: None,
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

// ---- process managers ----

/// What a process manager's handler does besides returning commands: schedule and cancel
/// its deadlines, end the process.
#[derive(Debug)]
pub struct Ctx {
    now: OffsetDateTime,
    ops: Vec<DeadlineOp>,
    complete: bool,
}

#[derive(Debug, Clone)]
enum DeadlineOp {
    Schedule(String, OffsetDateTime),
    Cancel(String),
}

impl Ctx {
    fn new(now: OffsetDateTime) -> Self {
        Ctx {
            now,
            ops: Vec::new(),
            complete: false,
        }
    }

    /// The handler's clock: when the triggering event was recorded, or when the deadline
    /// was due. Taken from the store, not the wall clock, so a redelivered event schedules
    /// the same deadline.
    pub fn now(&self) -> OffsetDateTime {
        self.now
    }

    /// Runs the `#[deadline]` handler `name` for this key `after` from [`Self::now`],
    /// replacing a pending deadline of that name.
    pub fn schedule_in(&mut self, name: &str, after: Duration) {
        let at = self.now + after;
        self.schedule_at(name, at);
    }

    /// Runs the `#[deadline]` handler `name` for this key at `at`.
    pub fn schedule_at(&mut self, name: &str, at: OffsetDateTime) {
        self.ops.push(DeadlineOp::Schedule(name.to_owned(), at));
    }

    /// Cancels the pending deadline `name` of this key, if any.
    pub fn cancel(&mut self, name: &str) {
        self.ops.push(DeadlineOp::Cancel(name.to_owned()));
    }

    /// Ends the process for this key: its state is kept as ended, its pending deadlines
    /// are cancelled and later events for the key are ignored.
    pub fn complete(&mut self) {
        self.complete = true;
    }

    /// Whether [`Self::complete`] was called.
    pub fn is_complete(&self) -> bool {
        self.complete
    }
}

/// A long-running process keyed by a correlation value; implemented by
/// `#[process(name = "..", key = field)]` on the state's impl block.
pub trait Process<S: EventStore>:
    Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The process manager's stable name (checkpoint, state rows, command ids).
    const NAME: &'static str;
    /// The names of its `#[deadline]` handlers.
    const DEADLINES: &'static [&'static str];
    /// What a refused command does.
    const ON_REJECTED: OnRejected;

    /// What handlers taking a services parameter receive (`()` when none takes one): given
    /// to [`Processes::with_services`].
    type Services: Send + Sync + 'static;

    /// The stored event types the handlers take.
    fn event_types() -> Vec<&'static str>;

    /// Every command type the handlers may send.
    fn routes() -> Vec<Route>;

    /// The correlation key of an event a handler takes; `None` for other events.
    fn key(event: &RecordedEvent) -> Result<Option<String>, ProjectionError>;

    /// Runs the event's handler on this key's state.
    fn react<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        services: &'a Self::Services,
        ctx: &'a mut Ctx,
        out: &'a mut Vec<Outgoing<S>>,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send + 'a;

    /// Runs the `#[deadline]` handler `name`.
    fn deadline<'a>(
        &'a mut self,
        name: &'a str,
        services: &'a Self::Services,
        ctx: &'a mut Ctx,
        out: &'a mut Vec<Outgoing<S>>,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send + 'a;

    /// Runs the `#[rejected]` handler for a refused command, on the state the refusing
    /// step left; nothing by default.
    fn rejected<'a>(
        &'a mut self,
        rejection: &'a Rejection,
        services: &'a Self::Services,
        ctx: &'a mut Ctx,
        out: &'a mut Vec<Outgoing<S>>,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send + 'a {
        let _ = (rejection, services, ctx, out);
        async { Ok(()) }
    }
}

/// One event's step, prepared before the runner's transaction.
#[derive(Debug)]
enum Step {
    /// Not this process's event, or its process ended.
    Skip,
    /// The event failed (raised in the transaction, so the runner stops or parks).
    Failed(ProjectionError),
    /// The new state and deadline changes, written with the checkpoint.
    Save {
        key: String,
        state: String,
        expected: u64,
        ended: bool,
        ops: Vec<DeadlineOp>,
        /// Refusals to record ([`OnRejected::Ignore`]).
        ignored: Vec<String>,
    },
}

/// Where a step's commands come from: an event or a fired deadline.
struct Origin<'a> {
    /// What command ids derive from: the event's id, or the deadline's.
    base: Uuid,
    correlation: Option<Uuid>,
    causation: Option<Uuid>,
    /// The event type, or `deadline <name>`.
    label: &'a str,
    /// The event's position; 0 for a deadline.
    position: u64,
    /// The deadline's name, for a deadline.
    deadline: Option<&'a str>,
}

/// What sending a step's commands left.
#[derive(Debug, Default)]
struct Sent {
    /// Refusals to record ([`OnRejected::Ignore`]).
    ignored: Vec<String>,
    /// The failure the event is to raise (or the deadline to stop the runner with).
    failure: Option<ProjectionError>,
}

/// A process manager as the handler of a [`Runner`](crate::Runner): built with
/// [`Processes::new`] or [`Processes::with_services`] (which check every command has a
/// route), then `Runner::new(store, processes)`. Each event's state change, deadlines and
/// the checkpoint commit in one transaction; its commands are sent before, under ids
/// derived from the event, so a redelivery sends nothing twice. Due deadlines fire when a
/// turn finds no new events (in [`Runner::run`](crate::Runner::run) at least every idle
/// timeout, and at the end of every [`Runner::catch_up`](crate::Runner::catch_up)).
pub struct Processes<P: Process<S>, S: EventStore> {
    dispatcher: Dispatcher<S>,
    store: S,
    services: P::Services,
    prepared: HashMap<Uuid, Step>,
}

impl<P: Process<S>, S: EventStore> std::fmt::Debug for Processes<P, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processes")
            .field("prepared", &self.prepared.len())
            .finish_non_exhaustive()
    }
}

/// How many due deadlines one idle turn fires at most.
const DEADLINES_PER_TURN: usize = 100;

impl<P, S> Processes<P, S>
where
    S: ProcessStore,
    P: Process<S>,
{
    /// Process manager `P`, whose handlers take no services (or default ones), keeping its
    /// state in `store` and sending through `dispatcher`, which must route every command
    /// type its handlers return.
    pub fn new(store: S, dispatcher: Dispatcher<S>) -> Result<Self, ProjectionError>
    where
        P::Services: Default,
    {
        Self::with_services(store, P::Services::default(), dispatcher)
    }

    /// Process manager `P` passing `services` to the handlers that take a services
    /// parameter (a price list, a clock, a client), keeping its state in `store` and
    /// sending through `dispatcher`, which must route every command type its handlers
    /// return: [`ProjectionError::Unrouted`] names the first missing one.
    pub fn with_services(
        store: S,
        services: P::Services,
        dispatcher: Dispatcher<S>,
    ) -> Result<Self, ProjectionError> {
        if let Some(missing) = P::routes().into_iter().find(|r| !dispatcher.routes(r)) {
            return Err(ProjectionError::Unrouted {
                runner: P::NAME,
                command: missing.command,
                aggregate: missing.aggregate_name,
            });
        }
        Ok(Processes {
            dispatcher,
            store,
            services,
            prepared: HashMap::new(),
        })
    }

    /// The services handed to handlers.
    pub fn services(&self) -> &P::Services {
        &self.services
    }

    /// The committed state of `key`, and whether its process ended.
    pub async fn state(&self, key: &str) -> Result<Option<(P, bool)>, ProjectionError> {
        match self.store.load_process(P::NAME, key).await? {
            None => Ok(None),
            Some(stored) => Ok(Some((decode_state::<P>(&stored.state)?, stored.ended))),
        }
    }

    /// The pending deadlines, earliest first.
    pub async fn deadlines(&self) -> Result<Vec<Deadline>, ProjectionError> {
        Ok(self.store.deadlines(P::NAME).await?)
    }

    /// Sends one command under the id derived from `origin` and `index`.
    async fn dispatch(
        &self,
        outgoing: Outgoing<S>,
        origin: &Origin<'_>,
        index: &str,
    ) -> Result<(), DispatchError> {
        let mut meta = CommitMeta::new().command_id(command_id(P::NAME, origin.base, index));
        meta.correlation_id = origin.correlation;
        meta.causation_id = origin.causation;
        (outgoing.send)(self.dispatcher.clone(), meta).await
    }

    /// Sends `out` in order, a refused command following `P::ON_REJECTED` (a `#[rejected]`
    /// handler runs on `state` with `ctx`); `Err` only for what retrying may fix.
    async fn send(
        &self,
        state: &mut P,
        ctx: &mut Ctx,
        out: Vec<Outgoing<S>>,
        origin: &Origin<'_>,
    ) -> Result<Sent, ProjectionError> {
        let mut sent = Sent::default();
        for (index, outgoing) in out.into_iter().enumerate() {
            let command = outgoing.command;
            let error = match self.dispatch(outgoing, origin, &index.to_string()).await {
                Ok(()) => continue,
                Err(error @ DispatchError::Rejected { .. }) => error,
                Err(error) => return Self::failed(origin, command, error, sent),
            };
            match P::ON_REJECTED {
                OnRejected::Stop => return Self::failed(origin, command, error, sent),
                OnRejected::Ignore => sent.ignored.push(error_chain(&error)),
                OnRejected::Compensate => {
                    let rejection = Rejection {
                        command,
                        index,
                        error,
                        deadline: origin.deadline.map(str::to_owned),
                    };
                    let mut compensations = Vec::new();
                    if let Err(error) = state
                        .rejected(&rejection, &self.services, ctx, &mut compensations)
                        .await
                    {
                        if error.is_transient() {
                            return Err(error);
                        }
                        sent.failure = Some(error);
                        return Ok(sent);
                    }
                    for (i, compensation) in compensations.into_iter().enumerate() {
                        let command = compensation.command;
                        let index = format!("{index}/rejected/{i}");
                        if let Err(error) = self.dispatch(compensation, origin, &index).await {
                            return Self::failed(origin, command, error, sent);
                        }
                    }
                }
            }
        }
        Ok(sent)
    }

    fn failed(
        origin: &Origin<'_>,
        command: &'static str,
        error: DispatchError,
        mut sent: Sent,
    ) -> Result<Sent, ProjectionError> {
        let transient = error.is_transient();
        let error = ProjectionError::Command {
            runner: P::NAME,
            command,
            event_type: origin.label.to_owned(),
            position: origin.position,
            transient,
            source: error,
        };
        if transient {
            return Err(error);
        }
        sent.failure = Some(error);
        Ok(sent)
    }

    fn check_ops(ctx: &Ctx, label: &str, position: u64) -> Option<ProjectionError> {
        ctx.ops.iter().find_map(|op| match op {
            DeadlineOp::Schedule(name, _) | DeadlineOp::Cancel(name)
                if !P::DEADLINES.contains(&name.as_str()) =>
            {
                Some(ProjectionError::Handler {
                    projection: P::NAME,
                    event_type: label.to_owned(),
                    position,
                    source: format!("no `#[deadline]` handler named `{name}`").into(),
                })
            }
            _ => None,
        })
    }

    async fn step(
        &self,
        event: &RecordedEvent,
        states: &mut HashMap<String, (P, u64, bool)>,
    ) -> Result<Step, ProjectionError> {
        let meta = &event.meta;
        let key = match P::key(event) {
            Ok(Some(key)) => key,
            Ok(None) => return Ok(Step::Skip),
            Err(error) => return Ok(Step::Failed(error)),
        };
        if !states.contains_key(&key) {
            let loaded = match self.store.load_process(P::NAME, &key).await? {
                None => (P::default(), 0, false),
                Some(stored) => match decode_state::<P>(&stored.state) {
                    Ok(state) => (state, stored.version, stored.ended),
                    Err(error) => return Ok(Step::Failed(error)),
                },
            };
            states.insert(key.clone(), loaded);
        }
        let Some((state, version, ended)) = states.get_mut(&key) else {
            return Ok(Step::Skip);
        };
        if *ended {
            return Ok(Step::Skip);
        }
        let mut ctx = Ctx::new(meta.recorded_at);
        let mut out = Vec::new();
        if let Err(error) = state.react(event, &self.services, &mut ctx, &mut out).await {
            if error.is_transient() {
                return Err(error);
            }
            return Ok(Step::Failed(error));
        }
        if let Some(error) = Self::check_ops(&ctx, &meta.event_type, meta.position) {
            return Ok(Step::Failed(error));
        }
        let origin = Origin {
            base: meta.event_id,
            correlation: meta.correlation_id.or(Some(meta.event_id)),
            causation: Some(meta.event_id),
            label: &meta.event_type,
            position: meta.position,
            deadline: None,
        };
        let sent = self.send(state, &mut ctx, out, &origin).await?;
        if let Some(error) = sent.failure {
            return Ok(Step::Failed(error));
        }
        // A `#[rejected]` handler may have scheduled or cancelled deadlines too.
        if let Some(error) = Self::check_ops(&ctx, &meta.event_type, meta.position) {
            return Ok(Step::Failed(error));
        }
        let encoded = match encode_state(state, P::NAME, &meta.event_type, meta.position) {
            Ok(encoded) => encoded,
            Err(error) => return Ok(Step::Failed(error)),
        };
        let expected = *version;
        *version += 1;
        *ended = ctx.complete;
        Ok(Step::Save {
            key,
            state: encoded,
            expected,
            ended: ctx.complete,
            ops: ctx.ops,
            ignored: sent.ignored,
        })
    }

    /// Writes a step's deadline changes in `tx`.
    #[allow(clippy::too_many_arguments)]
    async fn write_ops(
        &self,
        tx: &mut S::Tx,
        key: &str,
        ops: &[DeadlineOp],
        ended: bool,
        base: Uuid,
        correlation: Option<Uuid>,
        causation: Option<Uuid>,
    ) -> Result<(), ProjectionError> {
        for op in ops {
            match op {
                DeadlineOp::Schedule(name, at) => {
                    let id = command_id(P::NAME, base, &format!("deadline/{key}/{name}"));
                    let deadline = Deadline::new(P::NAME, key, name.as_str(), id, *at)
                        .caused_by(correlation, causation);
                    self.store.schedule_deadline(tx, &deadline).await?;
                }
                DeadlineOp::Cancel(name) => {
                    self.store
                        .cancel_deadline(tx, P::NAME, key, Some(name))
                        .await?;
                }
            }
        }
        if ended {
            self.store.cancel_deadline(tx, P::NAME, key, None).await?;
        }
        Ok(())
    }

    /// Records ignored refusals in `tx` as resolved parking entries of `event`.
    async fn record_ignored(
        &self,
        tx: &mut S::Tx,
        event: &RecordedEvent,
        ignored: &[String],
    ) -> Result<(), ProjectionError> {
        for refusal in ignored {
            let id = self.store.park(tx, P::NAME, event, refusal, 1).await?;
            self.store
                .resolve_parked(tx, id, Resolution::Ignored)
                .await?;
        }
        Ok(())
    }

    /// Fires one due deadline: its handler's commands (ids derived from the deadline's),
    /// then, in one transaction, the deadline taken, the state saved, its own deadline
    /// changes and the refusals it ignored. Returns whether it fired.
    async fn fire(&self, deadline: &Deadline) -> Result<bool, ProjectionError> {
        let stored = self.store.load_process(P::NAME, &deadline.key).await?;
        let Some(stored) = stored.filter(|s| !s.ended) else {
            // Its process ended or never saved a state: nothing to run.
            let mut tx = self.store.begin().await?;
            let taken = self.store.take_deadline(&mut tx, deadline.id).await?;
            self.store.commit(tx).await?;
            return Ok(taken);
        };
        let mut state = decode_state::<P>(&stored.state)?;
        let mut ctx = Ctx::new(deadline.due_at);
        let mut out = Vec::new();
        state
            .deadline(&deadline.name, &self.services, &mut ctx, &mut out)
            .await?;
        let label = format!("deadline {}", deadline.name);
        if let Some(error) = Self::check_ops(&ctx, &label, 0) {
            return Err(error);
        }
        let origin = Origin {
            base: deadline.id,
            correlation: deadline.correlation_id,
            causation: deadline.causation_id,
            label: &label,
            position: 0,
            deadline: Some(&deadline.name),
        };
        let sent = self.send(&mut state, &mut ctx, out, &origin).await?;
        if let Some(error) = sent.failure {
            return Err(error);
        }
        if let Some(error) = Self::check_ops(&ctx, &label, 0) {
            return Err(error);
        }
        let encoded = encode_state(&state, P::NAME, &label, 0)?;
        let mut tx = self.store.begin().await?;
        if !self.store.take_deadline(&mut tx, deadline.id).await? {
            return Ok(false);
        }
        if !self
            .store
            .save_process(
                &mut tx,
                P::NAME,
                &deadline.key,
                &encoded,
                stored.version,
                ctx.complete,
            )
            .await?
        {
            return Err(ProjectionError::Superseded {
                projection: P::NAME,
                expected: stored.version,
            });
        }
        self.write_ops(
            &mut tx,
            &deadline.key,
            &ctx.ops,
            ctx.complete,
            deadline.id,
            deadline.correlation_id,
            deadline.causation_id,
        )
        .await?;
        if !sent.ignored.is_empty() {
            let record = deadline_record(deadline, &label);
            self.record_ignored(&mut tx, &record, &sent.ignored).await?;
        }
        self.store.commit(tx).await?;
        Ok(true)
    }
}

/// The record a refusal of a deadline's command is parked under (a deadline has no event):
/// type `deadline <name>`, stream `<process>/<key>`, id the deadline's, position 0, recorded
/// at its due time, and the deadline as payload.
fn deadline_record(deadline: &Deadline, label: &str) -> RecordedEvent {
    let payload = serde_json::json!({
        "process": deadline.process,
        "key": deadline.key,
        "deadline": deadline.name,
        "id": deadline.id,
    });
    RecordedEvent::new(
        EventMeta {
            position: 0,
            stream_type: deadline.process.clone(),
            stream_id: deadline.key.clone(),
            version: 0,
            event_type: label.to_owned(),
            event_version: 1,
            event_id: deadline.id,
            command_id: None,
            correlation_id: deadline.correlation_id,
            causation_id: deadline.causation_id,
            recorded_at: deadline.due_at,
            headers: Default::default(),
        },
        payload.to_string(),
    )
}

fn decode_state<P: DeserializeOwned>(json: &str) -> Result<P, ProjectionError> {
    serde_json::from_str(json).map_err(|e| {
        ProjectionError::Store(crate::StoreError::Corrupt {
            position: None,
            reason: format!("process state does not decode: {e}"),
        })
    })
}

fn encode_state<P: Serialize>(
    state: &P,
    name: &'static str,
    label: &str,
    position: u64,
) -> Result<String, ProjectionError> {
    serde_json::to_string(state).map_err(|e| ProjectionError::Handler {
        projection: name,
        event_type: label.to_owned(),
        position,
        source: Box::new(e),
    })
}

impl<P, S> Projection<S::Tx> for Processes<P, S>
where
    S: ProcessStore,
    P: Process<S>,
{
    const NAME: &'static str = P::NAME;

    fn event_types() -> Vec<&'static str> {
        P::event_types()
    }

    async fn prepare<'a>(&'a mut self, events: &'a [RecordedEvent]) -> Result<(), ProjectionError> {
        self.prepared.clear();
        let mut states = HashMap::new();
        for event in events {
            let step = self.step(event, &mut states).await?;
            let failed = matches!(step, Step::Failed(_));
            self.prepared.insert(event.meta.event_id, step);
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
        let meta = &event.meta;
        match self.prepared.remove(&meta.event_id) {
            None => Err(ProjectionError::Handler {
                projection: P::NAME,
                event_type: meta.event_type.clone(),
                position: meta.position,
                source: "a process manager handles events a runner prepared (not an inline \
                         projection)"
                    .into(),
            }),
            Some(Step::Skip) => Ok(()),
            Some(Step::Failed(error)) => Err(error),
            Some(Step::Save {
                key,
                state,
                expected,
                ended,
                ops,
                ignored,
            }) => {
                if !self
                    .store
                    .save_process(tx, P::NAME, &key, &state, expected, ended)
                    .await?
                {
                    return Err(ProjectionError::Superseded {
                        projection: P::NAME,
                        expected,
                    });
                }
                let correlation = meta.correlation_id.or(Some(meta.event_id));
                self.write_ops(
                    tx,
                    &key,
                    &ops,
                    ended,
                    meta.event_id,
                    correlation,
                    Some(meta.event_id),
                )
                .await?;
                self.record_ignored(tx, event, &ignored).await
            }
        }
    }

    async fn idle(&mut self) -> Result<u64, ProjectionError> {
        let now = OffsetDateTime::now_utc();
        let due = self
            .store
            .due_deadlines(P::NAME, now, DEADLINES_PER_TURN)
            .await?;
        let mut fired = 0;
        for deadline in &due {
            if self.fire(deadline).await? {
                fired += 1;
            }
        }
        Ok(fired)
    }
}
