//! The test aggregate: a counter, written the way users write aggregates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use annals::{aggregate, Command, Event, Events};
use serde::{Deserialize, Serialize};

/// The stream type every counter aggregate below shares.
pub const COUNTER: &str = "counter";

/// A counter was created.
#[derive(Debug, Clone, PartialEq, Eq, Event, Serialize, Deserialize)]
pub struct Created {
    pub name: String,
}

/// The counter went up. Version 1 was `{"amount": n}`, stored as `Added`.
#[derive(Debug, Clone, PartialEq, Eq, Event, Serialize, Deserialize)]
#[event(version = 2, aliases = ["Added"], upcast(from = 1, with = IncrementedV1))]
pub struct Incremented {
    pub by: u64,
}

/// The first schema of [`Incremented`].
#[derive(Debug, Deserialize)]
pub struct IncrementedV1 {
    pub amount: u64,
}

impl From<IncrementedV1> for Incremented {
    fn from(v1: IncrementedV1) -> Self {
        Incremented { by: v1.amount }
    }
}

/// The counter went up by `by`, decided on a state whose total was `seen`: replaying a
/// stream where `seen` differs from the running total exposes a lost update.
#[derive(Debug, Clone, PartialEq, Eq, Event, Serialize, Deserialize)]
pub struct Stepped {
    pub by: u64,
    pub seen: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Events)]
pub enum CounterEvent {
    Created(Created),
    Incremented(Incremented),
    Stepped(Stepped),
}

/// Why the counter refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    #[error("increments must be positive")]
    Zero,
}

/// Lets tests hold the first `parties` handler runs at a barrier until all of them got
/// there, so that they all decide on the same loaded version. Later runs (retries) pass.
#[derive(Debug, Default)]
pub struct Gate {
    parties: usize,
    arrived: AtomicUsize,
    barrier: Option<tokio::sync::Barrier>,
}

impl Gate {
    pub fn new(parties: usize) -> Self {
        Gate {
            parties,
            arrived: AtomicUsize::new(0),
            barrier: Some(tokio::sync::Barrier::new(parties)),
        }
    }

    async fn pass(&self) {
        if let Some(barrier) = &self.barrier {
            if self.arrived.fetch_add(1, Ordering::SeqCst) < self.parties {
                barrier.wait().await;
            }
        }
    }
}

/// The counter's services: only the test gate.
#[derive(Debug, Default, Clone)]
pub struct CounterServices {
    pub gate: Arc<Gate>,
}

/// Create a counter (the stream must not exist).
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Counter)]
pub struct Create {
    #[command(id)]
    pub id: String,
    pub name: String,
}

/// Add `by` (the counter must exist; 0 is refused).
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Counter)]
pub struct Increment {
    #[command(id)]
    pub id: String,
    pub by: u64,
}

/// Add `by`, recording the total the decision was made on (the counter must exist).
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Counter)]
pub struct Step {
    #[command(id)]
    pub id: String,
    pub by: u64,
}

/// Does nothing, on any stream.
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Counter)]
pub struct Touch {
    #[command(id)]
    pub id: String,
}

/// The counter aggregate. Snapshots every 3 events, snapshot schema 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub name: Option<String>,
    pub total: u64,
    pub events: u64,
    /// Stepped events decided on a total other than the one they were applied to.
    pub lost_updates: u64,
}

#[aggregate(
    name = "counter",
    id = String,
    event = CounterEvent,
    error = CounterError,
    services = CounterServices,
    snapshot(every = 3, version = 1)
)]
impl Counter {
    #[command(create)]
    fn create(&self, cmd: Create) -> Result<Created, CounterError> {
        Ok(Created { name: cmd.name })
    }

    #[command]
    async fn increment(
        &self,
        cmd: Increment,
        services: &CounterServices,
    ) -> Result<Incremented, CounterError> {
        services.gate.pass().await;
        if cmd.by == 0 {
            return Err(CounterError::Zero);
        }
        Ok(Incremented { by: cmd.by })
    }

    #[command]
    async fn step(&self, cmd: Step, services: &CounterServices) -> Result<Stepped, CounterError> {
        services.gate.pass().await;
        // Give concurrent writers a chance to load the same version.
        tokio::task::yield_now().await;
        Ok(Stepped {
            by: cmd.by,
            seen: self.total,
        })
    }

    #[command(any)]
    fn touch(&self, _: Touch) -> Result<(), CounterError> {
        Ok(())
    }

    #[apply]
    fn created(&mut self, e: &Created) {
        self.events += 1;
        self.name = Some(e.name.clone());
    }

    #[apply]
    fn incremented(&mut self, e: &Incremented) {
        self.events += 1;
        self.total += e.by;
    }

    #[apply]
    fn stepped(&mut self, e: &Stepped) {
        self.events += 1;
        if e.seen != self.total {
            self.lost_updates += 1;
        }
        self.total += e.by;
    }
}

/// The same counter without snapshots: loads are always a full replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayedCounter(pub Counter);

#[aggregate(name = "counter", id = String, event = CounterEvent, error = CounterError)]
impl ReplayedCounter {
    #[apply]
    fn created(&mut self, e: &Created) {
        self.0.created(e);
    }

    #[apply]
    fn incremented(&mut self, e: &Incremented) {
        self.0.incremented(e);
    }

    #[apply]
    fn stepped(&mut self, e: &Stepped) {
        self.0.stepped(e);
    }
}

/// The counter after a change of its snapshot schema (version 2, a different JSON shape):
/// snapshots written by [`Counter`] must be ignored, not misread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterV2 {
    pub state: Counter,
}

#[aggregate(
    name = "counter",
    id = String,
    event = CounterEvent,
    error = CounterError,
    snapshot(every = 3, version = 2)
)]
impl CounterV2 {
    #[apply]
    fn created(&mut self, e: &Created) {
        self.state.created(e);
    }

    #[apply]
    fn incremented(&mut self, e: &Incremented) {
        self.state.incremented(e);
    }

    #[apply]
    fn stepped(&mut self, e: &Stepped) {
        self.state.stepped(e);
    }
}
