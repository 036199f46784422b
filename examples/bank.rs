//! The bank: accounts that open, take deposits and refuse overdrafts, stored in SQLite.
//!
//! ```text
//! cargo run --example bank            # first run: opens accounts, moves money
//! cargo run --example bank            # later runs: reload the accounts from bank.db
//! BANK_DB=/tmp/other.db cargo run --example bank
//! ```

use std::error::Error;

use annals::{ExecuteError, Repository, SqliteStore};
use annals_examples::bank::{Account, AccountError, Deposit, OpenAccount, Withdraw};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::var("BANK_DB").unwrap_or_else(|_| "bank.db".to_owned());
    let store = SqliteStore::open(&path).await?;
    let accounts = Repository::<Account, _>::new(store);

    let ada = "ada".to_owned();
    let existing = accounts.load(&ada).await?;
    if existing.version == 0 {
        println!("{path} is new: opening accounts");
        accounts
            .execute(OpenAccount {
                account: ada.clone(),
                owner: "Ada".into(),
            })
            .await?;
        accounts
            .execute(Deposit {
                account: ada.clone(),
                amount: 100,
            })
            .await?;
        accounts
            .execute(Withdraw {
                account: ada.clone(),
                amount: 30,
            })
            .await?;
    } else {
        println!(
            "reloaded from {path}: {} has balance {} after {} events",
            existing.state.owner, existing.state.balance, existing.version
        );
        accounts
            .execute(Deposit {
                account: ada.clone(),
                amount: 10,
            })
            .await?;
    }

    match accounts
        .execute(Withdraw {
            account: ada.clone(),
            amount: 1_000_000,
        })
        .await
    {
        Err(ExecuteError::Rejected(AccountError::InsufficientFunds { balance, requested })) => {
            println!("overdraft refused: balance {balance}, requested {requested}");
        }
        other => return Err(format!("expected the overdraft to be refused, got {other:?}").into()),
    }

    let now = accounts.load(&ada).await?;
    println!(
        "{} now has balance {} (stream version {})",
        now.state.owner, now.state.balance, now.version
    );
    println!("run again to reload the account from {path}");
    Ok(())
}
