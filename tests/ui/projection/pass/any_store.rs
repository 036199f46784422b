use annals::{projection, Event, EventMeta, MemoryTx, Projection, SqliteTx};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "MoneyDeposited", aliases = ["Deposited"])]
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
    async fn deposited(&mut self, e: &Deposited, _: &EventMeta) -> Result<(), std::io::Error> {
        self.total += e.amount;
        Ok(())
    }
}

fn works_with<Tx, P: Projection<Tx>>() -> Vec<&'static str> {
    P::event_types()
}

fn main() {
    assert_eq!(works_with::<MemoryTx, Totals>(), ["MoneyDeposited", "Deposited"]);
    assert_eq!(works_with::<SqliteTx, Totals>(), ["MoneyDeposited", "Deposited"]);
}
