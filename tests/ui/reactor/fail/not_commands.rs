use annals::{reactor, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

struct Doors;

#[reactor(name = "doors")]
impl Doors {
    #[on]
    fn opened(&self, _: &Opened) -> u32 {
        1
    }
}

fn check<S: annals::store::EventStore>()
where
    Doors: annals::workflow::Reactor<S>,
{
}

fn main() {
    check::<annals::MemoryStore>();
}
