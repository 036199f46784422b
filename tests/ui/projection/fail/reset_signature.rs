use annals::{projection, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

#[derive(Default)]
struct Doors;

#[projection(name = "doors")]
impl Doors {
    #[on]
    fn opened(&mut self, _: &Opened) {}

    #[reset]
    fn clear(&mut self, _: &Opened) {}
}

fn main() {}
