use annals::{process, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened {
    door: String,
}

struct Prices;
struct Clock;

#[derive(Default, Serialize, Deserialize)]
struct Doors;

// The declared services type is what every handler receives.
#[process(name = "doors", key = door, services = Prices)]
impl Doors {
    #[on]
    fn opened(&mut self, _: &Opened, _: &Clock) {}
}

fn main() {}
