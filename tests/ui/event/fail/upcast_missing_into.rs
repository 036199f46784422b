use annals::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(version = 3, upcast(from = 1, with = V1), upcast(from = 2, with = V2))]
struct Deposited {
    amount: u64,
}

#[derive(Deserialize)]
struct V1 {
    amount: u64,
}

#[derive(Deserialize)]
struct V2 {
    amount: u64,
}

// V1 -> V2 is missing.
impl From<V2> for Deposited {
    fn from(v2: V2) -> Self {
        Deposited { amount: v2.amount }
    }
}

fn main() {}
