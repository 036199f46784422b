use annals::workflow::Rejection;
use annals::{reactor, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

struct Doors;

#[reactor(name = "doors", rejected = ignore)]
impl Doors {
    #[on]
    fn opened(&self, _: &Opened) {}

    #[rejected]
    fn refused(&self, _: &Rejection) {}
}

fn main() {}
