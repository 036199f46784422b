use annals::{Event, Events};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

#[derive(Events)]
enum DoorEvent {
    Opened(Opened),
    OpenedAgain(Opened),
}

fn main() {}
