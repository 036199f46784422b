//! The admin command line, embedded in the application's own binary (feature `admin`).
//!
//! Event enums, upcasters and projections are the application's compiled code, so the
//! admin tool is a library: register them on an [`Admin`], then hand it the command line.
//! It lists streams, shows a stream's events decoded with their metadata, reports each
//! projection's position and lag, rebuilds or resets a projection (with a progress bar
//! when stdout is a terminal), verifies that every stored event still decodes with the
//! current event types and upcasters (the check to run before a deploy), lists,
//! retries or skips the events runners parked, and shows process managers' state and
//! pending deadlines.
//!
//! ```
//! use annals::admin::Admin;
//! use annals::{Event, Events, MemoryStore};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize)]
//! struct Noted { text: String }
//!
//! #[derive(Events)]
//! enum NoteEvent { Noted(Noted) }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let admin = Admin::new(MemoryStore::new()).events::<NoteEvent>();
//! let mut out = Vec::new();
//! let mut err = Vec::new();
//! let code = admin.run_with(["app", "verify"], &mut out, &mut err).await;
//! assert_eq!(code, std::process::ExitCode::SUCCESS);
//! assert!(String::from_utf8(out).unwrap().contains("0 events checked"));
//! # }
//! ```
//!
//! In a binary, `admin.run().await` parses the process's arguments and returns its exit
//! code. Inside an application's own clap command line, embed [`AdminArgs`] as a
//! subcommand and call [`Admin::execute`]; see the guide's admin page.
//!
//! Exit codes: 0 when the command did what it was asked, [`EXIT_PROBLEMS`] (1) when it
//! found events that do not decode, [`EXIT_USAGE`] (2) for a command line that does not
//! parse, [`EXIT_FAILED`] (3) when it could not finish (the store failed, no such
//! projection, its lease is held elsewhere).

mod cli;
mod decode;
mod projections;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use time::OffsetDateTime;

pub use cli::{
    AdminArgs, AdminCommand, ParkedCommand, ProcessesCommand, ProjectionsCommand, StreamsCommand,
};
pub use decode::{DecodeFailure, DecodedEvent};

use crate::aggregate::Aggregate;
use crate::error::{ProjectionError, StoreError};
use crate::event::Events;
use crate::projection::{Progress, Projection, Status};
use crate::store::{
    CheckpointStore, Deadline, EventFilter, EventLog, EventMeta, EventStore, LeaseStore,
    ParkedEvent, ParkingStore, ProcessState, ProcessStore, RecordedEvent, Resolution,
    StreamCatalog, TxStore,
};
use crate::workflow::Process;
use decode::{Decoder, Decoders};
use projections::{Entry, Registered};

/// How long [`Admin::rebuild`] and [`Admin::reset`] wait for a projection's lease unless
/// set with [`Admin::lease_wait`].
pub const DEFAULT_LEASE_WAIT: Duration = Duration::from_secs(2);

/// Exit code: some events do not decode, or a stored type is unknown.
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit code: the command line does not parse (clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the command could not finish.
pub const EXIT_FAILED: u8 = 3;

/// What the admin needs of a store: the global log (verify, status), checkpoints and
/// transactions (rebuild, reset), leases (so a rebuild never runs beside the projection's
/// live runner), the stream catalog, the parking (parked events) and the process
/// managers' state and deadlines. `MemoryStore`, `SqliteStore` and `PgStore` have them all.
pub trait AdminStore:
    EventLog + CheckpointStore + LeaseStore + StreamCatalog + ParkingStore + ProcessStore
{
}

impl<S> AdminStore for S where
    S: EventLog + CheckpointStore + LeaseStore + StreamCatalog + ParkingStore + ProcessStore
{
}

/// Why an admin command could not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Rebuilding or resetting a projection failed; its checkpoint stays where the last
    /// committed batch left it.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// No projection of that name is registered.
    #[error(
        "no projection `{name}` is registered (registered: {})",
        list_or_none(registered)
    )]
    UnknownProjection {
        /// The name asked for.
        name: String,
        /// The registered names.
        registered: Vec<&'static str>,
    },
    /// Two registered projections share a name, and so a checkpoint.
    #[error("projection `{name}` is registered twice")]
    DuplicateProjection {
        /// The name.
        name: &'static str,
    },
    /// Another runner held the projection's lease for all of [`Admin::lease_wait`]: it
    /// is running elsewhere.
    #[error(
        "projection `{name}` is being run elsewhere (its lease is held): stop its runner, \
         then try again"
    )]
    LeaseHeld {
        /// The projection's name.
        name: &'static str,
    },
    /// No process manager of that name is registered.
    #[error(
        "no process manager `{name}` is registered (registered: {})",
        list_or_none(registered)
    )]
    UnknownProcess {
        /// The name asked for.
        name: String,
        /// The registered names.
        registered: Vec<&'static str>,
    },
    /// A process manager has neither state nor deadlines for this key: no event with
    /// the key reached it yet, or the key is mistyped.
    #[error("process manager `{process}` has no state and no deadline for key `{key}`")]
    UnknownProcessKey {
        /// The process manager's name.
        process: &'static str,
        /// The key asked for.
        key: String,
    },
    /// No event with this id is parked (never parked, or already retried or skipped).
    #[error("no parked event {id} (see `parked list`; resolved ones with `--all`)")]
    NotParked {
        /// The id asked for.
        id: u64,
    },
    /// The stream to show has no events.
    #[error("stream {stream_type}/{stream_id} does not exist")]
    UnknownStream {
        /// Stream type.
        stream_type: String,
        /// Stream id.
        stream_id: String,
    },
    /// Writing the command's output failed.
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// One registered projection's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: &'static str,
    /// Its checkpoint and the store's head.
    pub status: Status,
}

/// One registered process manager's position and deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessStatus {
    /// The process manager's name.
    pub name: &'static str,
    /// Its runner's checkpoint and the store's head.
    pub status: Status,
    /// Its pending deadlines (scheduled, not fired or cancelled yet).
    pub deadlines: usize,
    /// How many of them are past due: their runner is behind, stopped, or failing on them.
    pub overdue: usize,
    /// When the earliest pending deadline is due.
    pub next_due: Option<OffsetDateTime>,
}

/// A process manager's committed state for one key, and the key's pending deadlines.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessInstance {
    /// The process manager's name.
    pub process: &'static str,
    /// The correlation key.
    pub key: String,
    /// The committed state; `None` when only deadlines are stored for the key.
    pub state: Option<ProcessState>,
    /// The key's pending deadlines, earliest first.
    pub deadlines: Vec<Deadline>,
}

/// What [`Admin::verify`] found.
#[derive(Debug)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Events read.
    pub checked: u64,
    /// The events that do not decode (or rows that cannot be read), in position order,
    /// up to the number asked for.
    pub failures: Vec<VerifyFailure>,
    /// How many do not decode, listed or not.
    pub failed: u64,
    /// Stored event types no registered enum knows, in name order.
    pub unknown_types: Vec<UnknownType>,
}

impl VerifyReport {
    /// Whether every event decoded and every stored type is known.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.unknown_types.is_empty()
    }
}

/// A stored event that does not decode.
#[derive(Debug)]
#[non_exhaustive]
pub struct VerifyFailure {
    /// Its global position.
    pub position: u64,
    /// Where it is stored; `None` when the row itself cannot be read.
    pub meta: Option<EventMeta>,
    /// Why it fails.
    pub problem: VerifyProblem,
}

/// Why a stored event fails verification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyProblem {
    /// It does not decode with the registered enums.
    #[error(transparent)]
    Decode(DecodeFailure),
    /// Its row cannot be read back (a corrupt column).
    #[error(transparent)]
    Corrupt(StoreError),
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.meta {
            Some(m) => write!(
                f,
                "position {}: {}/{} version {}, `{}` v{}: {}",
                m.position,
                m.stream_type,
                m.stream_id,
                m.version,
                m.event_type,
                m.event_version,
                self.problem
            ),
            // The problem is a corrupt record, which names its position.
            None => write!(f, "{}", self.problem),
        }
    }
}

/// A stored event type that no registered enum knows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownType {
    /// The stored type name.
    pub event_type: String,
    /// How many events carry it.
    pub events: u64,
    /// The first one's position.
    pub first_position: u64,
    /// The stream types they are stored in.
    pub stream_types: BTreeSet<String>,
}

/// The admin tool over one store, with the application's event enums and projections.
///
/// Register every aggregate ([`Admin::aggregate`]) or event enum ([`Admin::events`]) the
/// application stores, and every projection ([`Admin::projection`]), then run a command
/// line ([`Admin::run`], [`Admin::run_from`]) or parsed arguments ([`Admin::execute`]).
pub struct Admin<S: AdminStore> {
    store: S,
    lease_wait: Duration,
    decoders: Decoders,
    projections: Vec<Box<dyn Entry<S>>>,
    duplicate: Option<&'static str>,
    processes: Vec<&'static str>,
}

impl<S: AdminStore> std::fmt::Debug for Admin<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("projections", &self.projection_names())
            .field("processes", &self.processes)
            .finish_non_exhaustive()
    }
}

impl<S: AdminStore> Admin<S> {
    /// The admin over `store`, with nothing registered yet.
    pub fn new(store: S) -> Self {
        Admin {
            store,
            lease_wait: DEFAULT_LEASE_WAIT,
            decoders: Decoders::default(),
            projections: Vec::new(),
            duplicate: None,
            processes: Vec::new(),
        }
    }

    /// How long a rebuild or reset waits for the projection's lease before giving up with
    /// [`AdminError::LeaseHeld`] (default [`DEFAULT_LEASE_WAIT`]): a runner just stopped
    /// may take a moment to let its lease go (on PostgreSQL, until the server notices
    /// its connection closed).
    #[must_use]
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.lease_wait = wait;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Registers an aggregate: events in its streams (`A::NAME`) decode with its event
    /// enum, as loading it would, and a type that enum does not know is a failure there.
    #[must_use]
    pub fn aggregate<A: Aggregate>(mut self) -> Self {
        self.decoders.add(Decoder::new::<A::Event>(Some(A::NAME)));
        self
    }

    /// Registers an event enum for events in any stream: events of other services, or of
    /// streams not written through an aggregate.
    #[must_use]
    pub fn events<E: Events>(mut self) -> Self {
        self.decoders.add(Decoder::new::<E>(None));
        self
    }

    /// Registers a projection; `make` gives a fresh value each time a command needs one
    /// (a rebuild or a reset runs its reset hook and handlers).
    #[must_use]
    pub fn projection<P, F>(mut self, make: F) -> Self
    where
        P: Projection<<S as TxStore>::Tx>,
        F: Fn() -> P + Send + Sync + 'static,
    {
        if self.projections.iter().any(|p| p.name() == P::NAME) {
            self.duplicate.get_or_insert(P::NAME);
        }
        self.projections.push(Box::new(Registered::new(make)));
        self
    }

    /// The registered projections' names, in registration order.
    pub fn projection_names(&self) -> Vec<&'static str> {
        self.projections.iter().map(|p| p.name()).collect()
    }

    /// Registers a process manager, so that `processes status`, `show` and `deadlines`
    /// know its name (its runner's checkpoint has the same name). To retry its parked
    /// events from the admin, register its runner's projection too:
    /// `.projection(move || Processes::new(store.clone(), dispatcher.clone()).expect(..))`,
    /// as for a reactor's `Reactions`.
    #[must_use]
    pub fn process<P>(mut self) -> Self
    where
        S: EventStore,
        P: Process<S>,
    {
        if !self.processes.contains(&P::NAME) {
            self.processes.push(P::NAME);
        }
        self
    }

    /// The registered process managers' names, in registration order.
    pub fn process_names(&self) -> Vec<&'static str> {
        self.processes.clone()
    }

    /// Decodes a stored event as the application would: with its stream's aggregate enum
    /// when that aggregate is registered, else with the first registered enum that knows
    /// its type.
    pub fn decode(&self, event: &RecordedEvent) -> Result<DecodedEvent, DecodeFailure> {
        self.decoders.decode(event)
    }

    fn entry(&self, name: &str) -> Result<&dyn Entry<S>, AdminError> {
        if let Some(name) = self.duplicate {
            return Err(AdminError::DuplicateProjection { name });
        }
        self.projections
            .iter()
            .find(|p| p.name() == name)
            .map(|p| &**p)
            .ok_or_else(|| AdminError::UnknownProjection {
                name: name.to_owned(),
                registered: self.projection_names(),
            })
    }

    /// The position and lag of one registered projection (`Some(name)`) or of every one.
    pub async fn status(&self, name: Option<&str>) -> Result<Vec<ProjectionStatus>, AdminError> {
        let names = match name {
            Some(name) => vec![self.entry(name)?.name()],
            None => {
                if let Some(name) = self.duplicate {
                    return Err(AdminError::DuplicateProjection { name });
                }
                self.projection_names()
            }
        };
        let head = self.store.head().await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let position = self.store.checkpoint(name).await?;
            out.push(ProjectionStatus {
                name,
                status: Status { position, head },
            });
        }
        Ok(out)
    }

    fn process_name(&self, name: &str) -> Result<&'static str, AdminError> {
        self.processes
            .iter()
            .copied()
            .find(|p| *p == name)
            .ok_or_else(|| AdminError::UnknownProcess {
                name: name.to_owned(),
                registered: self.process_names(),
            })
    }

    fn process_names_or_all(&self, name: Option<&str>) -> Result<Vec<&'static str>, AdminError> {
        match name {
            Some(name) => Ok(vec![self.process_name(name)?]),
            None => Ok(self.process_names()),
        }
    }

    /// The position, lag and deadlines of one registered process manager (`Some(name)`)
    /// or of every one; deadlines due before `now` count as overdue.
    pub async fn process_status(
        &self,
        name: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Vec<ProcessStatus>, AdminError> {
        let names = self.process_names_or_all(name)?;
        let head = self.store.head().await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let position = self.store.checkpoint(name).await?;
            let deadlines = self.store.deadlines(name).await?;
            out.push(ProcessStatus {
                name,
                status: Status { position, head },
                deadlines: deadlines.len(),
                overdue: deadlines.iter().filter(|d| d.due_at <= now).count(),
                next_due: deadlines.iter().map(|d| d.due_at).min(),
            });
        }
        Ok(out)
    }

    /// The committed state of registered process manager `name` for `key`, with the key's
    /// pending deadlines; [`AdminError::UnknownProcessKey`] when there is neither.
    pub async fn process_instance(
        &self,
        name: &str,
        key: &str,
    ) -> Result<ProcessInstance, AdminError> {
        let process = self.process_name(name)?;
        let state = self.store.load_process(process, key).await?;
        let mut deadlines = self.store.deadlines(process).await?;
        deadlines.retain(|d| d.key == key);
        if state.is_none() && deadlines.is_empty() {
            return Err(AdminError::UnknownProcessKey {
                process,
                key: key.to_owned(),
            });
        }
        Ok(ProcessInstance {
            process,
            key: key.to_owned(),
            state,
            deadlines,
        })
    }

    /// The pending deadlines of one registered process manager or of every one, earliest
    /// first.
    pub async fn deadlines(&self, name: Option<&str>) -> Result<Vec<Deadline>, AdminError> {
        let mut all = Vec::new();
        for name in self.process_names_or_all(name)? {
            all.extend(self.store.deadlines(name).await?);
        }
        all.sort_by(|a, b| (a.due_at, &a.process, &a.key).cmp(&(b.due_at, &b.process, &b.key)));
        Ok(all)
    }

    /// Empties a projection's read model, sets its checkpoint to 0 and replays every
    /// event, in batches of `batch_size`, calling `progress` after each batch. Holds the
    /// projection's lease throughout: fails with [`AdminError::LeaseHeld`] while a runner
    /// of it is active elsewhere.
    pub async fn rebuild(
        &self,
        name: &str,
        batch_size: usize,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, AdminError> {
        let entry = self.entry(name)?;
        let _lease = self.lease(entry.name()).await?;
        Ok(entry
            .rebuild(&self.store, batch_size.max(1), Box::new(progress))
            .await?)
    }

    /// Empties a projection's read model and sets its checkpoint to 0 in one transaction,
    /// without replaying: its runner replays every event when it next runs. Returns the
    /// checkpoint it had. Holds the lease like [`Admin::rebuild`].
    pub async fn reset(&self, name: &str) -> Result<u64, AdminError> {
        let entry = self.entry(name)?;
        let _lease = self.lease(entry.name()).await?;
        Ok(entry.reset(&self.store).await?)
    }

    /// The parked events, oldest first: of one runner or of all, still parked or also the
    /// resolved ones.
    pub async fn parked(
        &self,
        runner: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<ParkedEvent>, AdminError> {
        Ok(self.store.parked(runner, include_resolved).await?)
    }

    /// The entry `id` while it is parked.
    async fn parked_entry(&self, id: u64) -> Result<ParkedEvent, AdminError> {
        self.store
            .parked(None, false)
            .await?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or(AdminError::NotParked { id })
    }

    /// Hands parked event `id` to its runner's projection (which must be registered under
    /// the runner's name) again, as [`ProjectionRunner::retry_parked`] does: on success it
    /// leaves the parking in the handler's transaction; on failure it stays parked with
    /// the new error and one more attempt, and the error is returned. Runs beside a live
    /// runner (no lease). Returns the entry as it was.
    ///
    /// [`ProjectionRunner::retry_parked`]: crate::ProjectionRunner::retry_parked
    pub async fn retry_parked(&self, id: u64) -> Result<ParkedEvent, AdminError> {
        let entry = self.parked_entry(id).await?;
        self.entry(&entry.runner)?
            .retry_parked(&self.store, id)
            .await?;
        Ok(entry)
    }

    /// Takes parked event `id` out of the parking without handling it; it stays listed as
    /// skipped. Needs no registered projection. Returns the entry as it was.
    pub async fn skip_parked(&self, id: u64) -> Result<ParkedEvent, AdminError> {
        let entry = self.parked_entry(id).await?;
        let mut tx = self.store.begin().await?;
        if !self
            .store
            .resolve_parked(&mut tx, id, Resolution::Skipped)
            .await?
        {
            // Resolved meanwhile by a runner or another operator.
            return Err(AdminError::NotParked { id });
        }
        self.store.commit(tx).await?;
        Ok(entry)
    }

    async fn lease(&self, name: &'static str) -> Result<S::Lease, AdminError> {
        const RETRY: Duration = Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + self.lease_wait;
        loop {
            if let Some(lease) = self.store.try_lease(name).await? {
                return Ok(lease);
            }
            if tokio::time::Instant::now() + RETRY > deadline {
                return Err(AdminError::LeaseHeld { name });
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Reads every stored event in position order, `batch_size` at a time, and decodes
    /// each with the registered enums ([`Admin::decode`]). Lists up to `max_listed`
    /// failures (counting them all); events whose type no registered enum knows are
    /// counted per type instead. A row that cannot be read is a failure too, and the check
    /// goes on after it. `progress` gets the position reached and the head after each
    /// batch.
    pub async fn verify(
        &self,
        batch_size: usize,
        max_listed: usize,
        mut progress: impl FnMut(u64, u64) + Send,
    ) -> Result<VerifyReport, AdminError> {
        let batch_size = batch_size.max(1);
        let head = self.store.head().await?;
        let all = EventFilter::all();
        let mut report = VerifyReport {
            checked: 0,
            failures: Vec::new(),
            failed: 0,
            unknown_types: Vec::new(),
        };
        let mut unknown: BTreeMap<String, UnknownType> = BTreeMap::new();
        let mut after = 0;
        loop {
            let events = match self.store.read_all(after, batch_size, &all).await {
                Ok(events) => events,
                Err(StoreError::Corrupt {
                    position: Some(bad),
                    reason,
                }) if bad > after => {
                    // Check what precedes the bad row one event at a time, then step over it.
                    let mut before = Vec::new();
                    while let Some(event) = self.read_one_before(after, bad).await? {
                        after = event.meta.position;
                        before.push(event);
                    }
                    self.check(&before, &mut report, &mut unknown, max_listed);
                    report.failed += 1;
                    if report.failures.len() < max_listed {
                        report.failures.push(VerifyFailure {
                            position: bad,
                            meta: None,
                            problem: VerifyProblem::Corrupt(StoreError::Corrupt {
                                position: Some(bad),
                                reason,
                            }),
                        });
                    }
                    after = bad;
                    progress(after, head.max(after));
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            let Some(last) = events.last() else { break };
            after = last.meta.position;
            self.check(&events, &mut report, &mut unknown, max_listed);
            progress(after, head.max(after));
        }
        report.unknown_types = unknown.into_values().collect();
        Ok(report)
    }

    /// The event right after `after` if it comes before `bad` (whose row cannot be read).
    async fn read_one_before(
        &self,
        after: u64,
        bad: u64,
    ) -> Result<Option<RecordedEvent>, AdminError> {
        match self.store.read_all(after, 1, &EventFilter::all()).await {
            Ok(mut events) => Ok(events.pop().filter(|e| e.meta.position < bad)),
            Err(StoreError::Corrupt {
                position: Some(p), ..
            }) if p == bad => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn check(
        &self,
        events: &[RecordedEvent],
        report: &mut VerifyReport,
        unknown: &mut BTreeMap<String, UnknownType>,
        max_listed: usize,
    ) {
        for event in events {
            report.checked += 1;
            match self.decoders.decode(event) {
                Ok(_) => {}
                Err(failure) if failure.is_unknown_type() => {
                    let meta = &event.meta;
                    let entry =
                        unknown
                            .entry(meta.event_type.clone())
                            .or_insert_with(|| UnknownType {
                                event_type: meta.event_type.clone(),
                                events: 0,
                                first_position: meta.position,
                                stream_types: BTreeSet::new(),
                            });
                    entry.events += 1;
                    if !entry.stream_types.contains(&meta.stream_type) {
                        // Cloned only the first time a stream type shows up.
                        entry.stream_types.insert(meta.stream_type.clone());
                    }
                }
                Err(failure) => {
                    report.failed += 1;
                    if report.failures.len() < max_listed {
                        report.failures.push(VerifyFailure {
                            position: event.meta.position,
                            meta: Some(event.meta.clone()),
                            problem: VerifyProblem::Decode(failure),
                        });
                    }
                }
            }
        }
    }
}
