use annals::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(version = 2, upcast(from = 1, with = V1, json = up))]
struct Both;

#[derive(Event, Serialize, Deserialize)]
#[event(version = 2, upcast(from = 1))]
struct Neither;

#[derive(Deserialize)]
struct V1;

fn up(v: serde_json::Value) -> serde_json::Value {
    v
}

fn main() {}
