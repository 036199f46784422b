use annals::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(nmae = "Opened", version = 2)]
struct Opened;

fn main() {}
