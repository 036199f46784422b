use annals::{projection, Event, EventMeta};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

#[derive(Default)]
struct Totals {
    total: u64,
}

#[projection(name = "totals")]
impl Totals {
    #[on]
    fn deposited(&mut self, e: Deposited, m: &EventMeta) {
        self.total += e.amount;
    }
}

fn main() {}
