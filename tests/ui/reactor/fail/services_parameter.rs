use annals::{reactor, Event, EventMeta};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

struct Prices;

// A reactor's services are its fields.
struct Doors;

#[reactor(name = "doors")]
impl Doors {
    #[on]
    fn opened(&self, _: &Opened, _: &EventMeta, _: &Prices) {}
}

fn main() {}
