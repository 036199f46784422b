//! The bank example's commands with annals' spans printed (feature `tracing`):
//!
//! ```sh
//! cargo run --example traced --features tracing
//! ```
//!
//! Each command is an `annals.execute` span (stream type and id, command type, attempts,
//! conflicts) around its `annals.load` (the version it started from, after a snapshot, and
//! the events read) and `annals.append` (events); a failed command records its error.

use annals::{MemoryStore, Repository};
use annals_examples::bank::{Account, Deposit, OpenAccount, Withdraw};
use tracing_subscriber::fmt::format::FmtSpan;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_span_events(FmtSpan::CLOSE)
        .with_target(false)
        .init();
    let accounts = Repository::<Account, _>::new(MemoryStore::new());
    accounts
        .execute(OpenAccount {
            account: "ada".into(),
            owner: "Ada".into(),
        })
        .await?;
    accounts
        .execute(Deposit {
            account: "ada".into(),
            amount: 70,
        })
        .await?;
    let refused = accounts
        .execute(Withdraw {
            account: "ada".into(),
            amount: 1_000_000,
        })
        .await;
    println!("overdraft refused: {}", refused.is_err());
    Ok(())
}
