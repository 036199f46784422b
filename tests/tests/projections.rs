//! What `#[projection]` declares about itself: its name, and the stored type names it
//! handles, aliases included. How runners and inline projections behave on every store is
//! the conformance suite's (`conformance/projection_cases.rs`); on PostgreSQL read models,
//! `pg_projections.rs`.

use std::collections::BTreeMap;

use annals::{projection, Event, EventMeta, MemoryTx, Projection};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Opened {
    owner: String,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "Credited", aliases = ["Deposited"])]
struct Credited {
    amount: u64,
}

/// A read model kept in the projection itself: works with any store's transaction.
#[derive(Default)]
struct Balances {
    balances: BTreeMap<String, u64>,
    seen: Vec<u64>,
}

#[projection(name = "balances")]
impl Balances {
    #[on]
    fn opened(&mut self, _: &Opened, meta: &EventMeta) {
        self.balances.insert(meta.stream_id.clone(), 0);
        self.seen.push(meta.position);
    }

    #[on]
    async fn credited(&mut self, e: &Credited, meta: &EventMeta) -> Result<(), std::io::Error> {
        tokio::task::yield_now().await;
        *self.balances.entry(meta.stream_id.clone()).or_default() += e.amount;
        self.seen.push(meta.position);
        Ok(())
    }

    #[reset]
    fn clear(&mut self) {
        self.balances.clear();
        self.seen.clear();
    }
}

#[test]
fn the_macro_lists_handled_types_with_aliases() {
    let mut types = <Balances as Projection<MemoryTx>>::event_types();
    types.sort_unstable();
    assert_eq!(types, ["Credited", "Deposited", "Opened"]);
    assert_eq!(<Balances as Projection<MemoryTx>>::NAME, "balances");
}
