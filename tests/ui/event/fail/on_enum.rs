use annals::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum Opened {
    Now,
}

fn main() {}
