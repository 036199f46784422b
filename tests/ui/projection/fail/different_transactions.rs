use annals::{projection, Event, MemoryTx, SqliteTx};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened;

#[derive(Event, Serialize, Deserialize)]
struct Closed;

#[derive(Default)]
struct Doors;

#[projection(name = "doors")]
impl Doors {
    #[on]
    fn opened(&mut self, _: &Opened, _tx: &mut SqliteTx) {}

    #[on]
    fn closed(&mut self, _: &Closed, _tx: &mut MemoryTx) {}
}

fn main() {}
