use annals::{reactor, Event, EventMeta};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

#[derive(Event, Serialize, Deserialize)]
struct Closed;

struct Doors {
    seen: u32,
}

#[reactor(name = "doors", rejected = retry)]
impl Doors {
    #[on]
    fn opened(&mut self, _: &Opened) {
        self.seen += 1;
    }

    #[on]
    fn closed(&self, _: Closed, _: &EventMeta) {}
}

fn main() {}
