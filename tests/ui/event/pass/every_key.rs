use annals::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
#[event(
    name = "MoneyDeposited",
    version = 4,
    aliases = ["Deposited", "CashIn"],
    upcast(from = 3, json = up::v3),
    upcast(from = 1, with = V1),
    upcast(from = 2, with = V2),
)]
struct Deposited {
    cents: u64,
}

#[derive(Deserialize)]
struct V1 {
    amount: u64,
}

#[derive(Serialize, Deserialize)]
struct V2 {
    dollars: u64,
}

impl From<V1> for V2 {
    fn from(v1: V1) -> Self {
        V2 { dollars: v1.amount }
    }
}

mod up {
    pub fn v3(v: serde_json::Value) -> serde_json::Value {
        serde_json::json!({ "cents": v["dollars"].as_u64().unwrap_or(0) * 100 })
    }
}

#[derive(Event, Serialize, Deserialize)]
struct Unit;

#[derive(Event, Serialize, Deserialize)]
struct Tuple(u8, String);

#[derive(Event, Serialize, Deserialize)]
#[serde(bound = "")]
struct Generic<T: Send + Sync + 'static> {
    #[serde(skip)]
    marker: std::marker::PhantomData<T>,
}

fn main() {
    assert_eq!(
        Deposited::decode(1, r#"{"amount": 2}"#).unwrap(),
        Deposited { cents: 200 }
    );
    assert_eq!(
        Deposited::decode(2, r#"{"dollars": 3}"#).unwrap(),
        Deposited { cents: 300 }
    );
    assert_eq!(
        Deposited::decode(3, r#"{"dollars": 4}"#).unwrap(),
        Deposited { cents: 400 }
    );
    assert_eq!(
        Deposited::decode(4, r#"{"cents": 5}"#).unwrap(),
        Deposited { cents: 5 }
    );
    assert_eq!(<Generic<u8> as Event>::NAME, "Generic");
    assert_eq!(<Tuple as Event>::VERSION, 1);
    assert_eq!(<Unit as Event>::ALIASES.len(), 0);
}
