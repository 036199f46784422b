use annals::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(version = 2, upcast(from = 1, json = up))]
struct Deposited {
    amount: u64,
}

fn up(v: &str) -> String {
    v.to_owned()
}

fn main() {}
