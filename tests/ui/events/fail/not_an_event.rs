use annals::{Event, Events};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

#[derive(Serialize, Deserialize)]
struct Closed;

#[derive(Events)]
enum DoorEvent {
    Opened(Opened),
    Closed(Closed),
}

fn main() {}
