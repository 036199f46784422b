use annals::workflow::Ctx;
use annals::{process, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

#[derive(Default, Serialize, Deserialize)]
struct Doors;

#[process(name = "doors")]
impl Doors {
    #[on]
    fn opened(&mut self, _: &Opened, ctx: &mut Ctx) {
        ctx.complete();
    }

    #[deadline]
    fn due(&self) {}
}

fn main() {}
