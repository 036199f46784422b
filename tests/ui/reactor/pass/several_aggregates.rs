//! A reactor whose handlers send commands of two aggregates, in every return shape.

use annals::workflow::{Dispatcher, Reactions, Rejection};
use annals::{aggregate, reactor, Command, Event, EventMeta, Events, MemoryStore, Repository};
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

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Alarm)]
struct Ring {
    #[command(id)]
    alarm: String,
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

#[derive(Default)]
struct Alarm;

#[aggregate(id = String, event = DoorEvent, error = Refused)]
impl Alarm {
    #[command(any)]
    fn ring(&self, cmd: Ring) -> Result<Opened, Refused> {
        Ok(Opened { door: cmd.alarm })
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {}
}

struct Watch;

#[reactor(name = "watch")]
impl Watch {
    #[on]
    async fn opened(&self, e: &Opened, _: &EventMeta) -> Result<(Option<Ring>, Vec<Open>), Refused> {
        Ok((Some(Ring { alarm: e.door.clone() }), Vec::new()))
    }

    #[rejected]
    fn refused(&self, _: &Rejection) -> Option<Open> {
        None
    }
}

fn main() {
    let store = MemoryStore::new();
    let dispatcher = Dispatcher::new()
        .route(Repository::<Door, _>::new(store.clone()))
        .route(Repository::<Alarm, _>::new(store.clone()));
    let reactions = Reactions::new(store.clone(), Watch, dispatcher).unwrap();
    let _ = annals::Runner::new(store, reactions);
}
