use annals::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "", aliases = ["Old", "", "Old"])]
struct Opened;

#[derive(Event, Serialize, Deserialize)]
#[event(aliases = ["Closed"])]
struct Closed;

fn main() {}
