use annals::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(version = 0)]
struct Zero;

#[derive(Event, Serialize, Deserialize)]
#[event(version = 2, upcast(from = 2, with = V1), upcast(from = 3, with = V1))]
struct NotOlder;

#[derive(Event, Serialize, Deserialize)]
#[event(version = 3, upcast(from = 1, with = V1), upcast(from = 1, with = V1))]
struct Twice;

#[derive(Deserialize)]
struct V1;

fn main() {}
