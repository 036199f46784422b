use annals::{aggregate, Command, Event, Events};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

#[derive(Events)]
enum DoorEvent {
    Opened(Opened),
}

#[derive(Debug, thiserror::Error)]
#[error("door error")]
struct DoorError;

#[derive(Default)]
struct Door;

#[aggregate(id = String, event = DoorEvent, error = DoorError)]
impl Door {
    #[apply]
    fn opened(&mut self, _: &Opened) {}
}

#[derive(Clone, Command)]
#[command(aggregate = String)]
struct Open {
    #[command(id)]
    door: String,
}

fn main() {}
