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
#[command(aggregate = Door)]
struct Open {
    #[command(id)]
    door: String,
    #[allow(dead_code)]
    by: String,
}

#[derive(Clone, Command)]
#[command(aggregate = Door)]
struct Knock(u8, #[command(id)] String);

#[derive(Clone, Command)]
#[command(aggregate = crate::Door)]
struct Paint<C: Clone + Send + Sync + 'static> {
    #[command(id)]
    door: String,
    #[allow(dead_code)]
    colour: C,
}

fn main() {
    let open = Open {
        door: "front".into(),
        by: "ada".into(),
    };
    assert_eq!(open.aggregate_id(), "front");
    assert_eq!(Knock(3, "back".into()).aggregate_id(), "back");
    assert_eq!(
        Paint {
            door: "side".into(),
            colour: 0xff0000
        }
        .aggregate_id(),
        "side"
    );
}
