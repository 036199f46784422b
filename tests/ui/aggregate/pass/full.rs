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

#[derive(Default, Serialize, Deserialize)]
struct Door {
    open: bool,
}

#[derive(Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Door)]
struct Slam(#[command(id)] String);

#[derive(Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Door)]
struct Check {
    #[command(id)]
    door: String,
}

#[derive(Default)]
pub struct Clock;

#[aggregate(
    id = String,
    event = DoorEvent,
    error = DoorError,
    snapshot(every = 50, version = 3),
    name = "house.door",
    command_enum(name = DoorRequest, vis = pub(crate), tag = "type", content = "body")
)]
impl Door {
    /// Doc comments and other attributes stay.
    #[command(create)]
    #[inline]
    fn open(&self, _: Open) -> Result<Opened, DoorError> {
        Ok(Opened)
    }

    #[command]
    async fn slam(&self, _: Slam, _clock: &Clock) -> Result<Vec<DoorEvent>, DoorError> {
        Ok(vec![Closed.into(), Opened.into()])
    }

    #[command(any)]
    fn check(&self, _: Check) -> Result<(), DoorError> {
        Ok(())
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {
        self.open = true;
    }

    #[apply]
    fn closed(&mut self, _: &Closed) -> () {
        self.open = false;
    }

    #[allow(dead_code)]
    fn is_open(&self) -> bool {
        self.open
    }
}

fn assert_services<A: annals::Aggregate<Services = Clock>>() {}

fn main() {
    use annals::{Aggregate, Handle, StreamPolicy};
    assert_services::<Door>();
    assert_eq!(Door::NAME, "house.door");
    assert_eq!((Door::SNAPSHOT_EVERY, Door::SNAPSHOT_VERSION), (50, 3));
    let request: DoorRequest =
        serde_json::from_str(r#"{"type": "Slam", "body": "front"}"#).unwrap();
    assert_eq!(
        <Door as Handle<DoorRequest>>::policy(&request),
        StreamPolicy::Existing
    );
    let mut door = Door::default();
    door.apply(&DoorEvent::Opened(Opened));
    assert!(door.open);
}
