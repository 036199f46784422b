use annals::{reactor, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

struct Doors;

#[reactor]
impl Doors {
    #[on]
    fn opened(&self, _: &Opened) {}
}

fn main() {}
