use annals::{projection, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

struct NotAnError;

#[derive(Default)]
struct Totals {
    total: u64,
}

#[projection(name = "totals")]
impl Totals {
    #[on]
    fn deposited(&mut self, e: &Deposited) -> Result<(), NotAnError> {
        self.total += e.amount;
        Ok(())
    }
}

fn main() {}
