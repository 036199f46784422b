//! A process manager whose handlers take services (inferred from them), with a
//! `#[rejected]` handler, built with `Processes::with_services`; and one without services,
//! built with `Processes::new`.

use std::time::Duration;

use annals::workflow::{Ctx, Dispatcher, Processes, Rejection};
use annals::{aggregate, process, Command, Event, EventMeta, Events, MemoryStore, Repository};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Event, Serialize, Deserialize)]
struct Opened {
    door: String,
}

#[derive(Debug, Clone, Events)]
enum DoorEvent {
    Opened(Opened),
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Door)]
struct Open {
    #[command(id)]
    door: String,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[derive(Default)]
struct Door;

#[aggregate(id = String, event = DoorEvent, error = Refused)]
impl Door {
    #[command(any)]
    fn open(&self, cmd: Open) -> Result<Opened, Refused> {
        Ok(Opened { door: cmd.door })
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {}
}

struct Schedule {
    reopen_after: Duration,
}

#[derive(Default, Serialize, Deserialize)]
struct Reopen {
    door: String,
}

#[process(name = "reopen", key = door)]
impl Reopen {
    #[on]
    async fn opened(&mut self, e: &Opened, _: &EventMeta, schedule: &Schedule, ctx: &mut Ctx) {
        self.door = e.door.clone();
        ctx.schedule_in("again", schedule.reopen_after);
    }

    #[deadline]
    fn again(&mut self, _: &Schedule) -> Open {
        Open {
            door: self.door.clone(),
        }
    }

    #[rejected]
    fn refused(&mut self, rejection: &Rejection, _: &Schedule, ctx: &mut Ctx) -> Option<Open> {
        let _ = rejection.deadline.as_deref();
        ctx.complete();
        None
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Count {
    opened: u32,
}

#[process(name = "count", key = stream_id, rejected = ignore)]
impl Count {
    #[on]
    fn opened(&mut self, _: &Opened) {
        self.opened += 1;
    }
}

fn main() {
    let store = MemoryStore::new();
    let dispatcher = Dispatcher::new().route(Repository::<Door, _>::new(store.clone()));
    let schedule = Schedule {
        reopen_after: Duration::from_secs(60),
    };
    let reopen =
        Processes::<Reopen, _>::with_services(store.clone(), schedule, dispatcher.clone())
            .unwrap();
    assert_eq!(reopen.services().reopen_after, Duration::from_secs(60));
    Processes::<Count, _>::new(store, dispatcher).unwrap();
}
