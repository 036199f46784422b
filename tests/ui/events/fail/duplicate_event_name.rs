use annals::{Event, Events};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "Opened")]
struct Reopened;

#[derive(Events)]
enum DoorEvent {
    Opened(Opened),
    Reopened(Reopened),
}

fn main() {}
