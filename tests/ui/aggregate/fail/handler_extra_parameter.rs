use annals::{aggregate, Command, Event, Events};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

#[derive(Event, Serialize, Deserialize)]
struct Closed;

#[derive(Events)]
enum DoorEvent {
    Opened(Opened),
    Closed(Closed),
}

#[derive(Debug, thiserror::Error)]
#[error("door error")]
struct DoorError;

#[derive(Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Door)]
struct Open {
    #[command(id)]
    door: String,
}

#[derive(Default)]
struct Door {
    open: bool,
}

#[aggregate(id = String, event = DoorEvent, error = DoorError)]
impl Door {
    #[command(create)]
    fn open(&self, _: Open, _: &u8, _: bool) -> Result<Opened, DoorError> {
        Ok(Opened)
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {
        self.open = true;
    }

    #[apply]
    fn closed(&mut self, _: &Closed) {
        self.open = false;
    }
}

fn main() {}
