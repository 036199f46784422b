use annals::{Event, Events};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
#[event(aliases = ["Unlatched"])]
struct Opened;

#[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "door.closed", version = 2)]
struct Closed {
    by: String,
}

mod more {
    #[derive(Debug, PartialEq, annals::Event, serde::Serialize, serde::Deserialize)]
    pub struct Locked(pub u32);
}

#[derive(Debug, PartialEq, Events)]
enum DoorEvent {
    Opened(Opened),
    Closed(Closed),
    Locked(more::Locked),
}

#[derive(Events)]
enum Nothing {}

fn main() {
    assert_eq!(DoorEvent::NAMES, ["Opened", "door.closed", "Locked"]);
    assert_eq!(
        DoorEvent::decode("Unlatched", 1, "null").unwrap(),
        DoorEvent::Opened(Opened)
    );
    let closed = DoorEvent::from(Closed { by: "ada".into() });
    assert_eq!(
        (closed.event_type(), closed.event_version()),
        ("door.closed", 2)
    );
    assert_eq!(
        annals::IntoEvents::<DoorEvent>::into_events(more::Locked(1)).len(),
        1
    );
    assert!(Nothing::accepted_names().is_empty());
}
