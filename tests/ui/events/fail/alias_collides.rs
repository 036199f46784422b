use annals::{Event, Events};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

#[derive(Event, Serialize, Deserialize)]
struct Closed;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "Shut", aliases = ["Closed"])]
struct Shut;

#[derive(Events)]
enum DoorEvent {
    Opened(Opened),
    Closed(Closed),
    Shut(Shut),
}

fn main() {}
