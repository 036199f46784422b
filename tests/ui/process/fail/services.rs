use annals::workflow::{Ctx, Rejection};
use annals::{process, Event, EventMeta};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened {
    door: String,
}

#[derive(Event, Serialize, Deserialize)]
struct Closed {
    door: String,
}

struct Prices;
struct Clock;

#[derive(Default, Serialize, Deserialize)]
struct Doors;

#[process(name = "doors", key = door)]
impl Doors {
    #[on]
    fn opened(&mut self, _: &Opened, _: &Prices, _: &mut Ctx) {}

    // Another services type than `opened`'s, and after `ctx`.
    #[on]
    fn closed(&mut self, _: &Closed, ctx: &mut Ctx, _: &Clock) {
        ctx.complete();
    }

    // A deadline has no triggering event; services are a shared reference.
    #[deadline]
    fn due(&mut self, _: &EventMeta, _: &mut Prices) {}
}

#[derive(Default, Serialize, Deserialize)]
struct Gates;

#[process(name = "gates", key = door, rejected = ignore)]
impl Gates {
    #[on]
    fn opened(&mut self, _: &Opened) {}

    #[rejected]
    fn refused(&mut self, _: &Rejection) {}
}

fn main() {}
