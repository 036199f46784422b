// A command without `Clone`: one error, at the command, naming the derive.

use annals::{aggregate, projection, Command, Event, Events};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Opened {
    owner: String,
}

#[derive(Event, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

#[derive(Events)]
enum AccountEvent {
    Opened(Opened),
    Deposited(Deposited),
}

#[derive(Debug, thiserror::Error)]
#[error("account error")]
struct AccountError;

#[derive(Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct Open {
    #[command(id)]
    account: String,
    owner: String,
}

#[derive(Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct Deposit {
    #[command(id)]
    account: String,
    amount: u64,
}

#[derive(Default)]
struct Account {
    balance: u64,
}

#[aggregate(id = String, event = AccountEvent, error = AccountError)]
impl Account {
    #[command(create)]
    fn open(&self, command: Open) -> Result<Opened, AccountError> {
        Ok(Opened { owner: command.owner })
    }

    #[command]
    fn deposit(&self, command: Deposit) -> Result<Deposited, AccountError> {
        Ok(Deposited { amount: command.amount })
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {}

    #[apply]
    fn deposited(&mut self, event: &Deposited) {
        self.balance += event.amount;
    }
}

#[derive(Default)]
struct Totals {
    deposited: u64,
}

#[projection(name = "totals")]
impl Totals {
    #[on]
    fn deposited(&mut self, event: &Deposited) {
        self.deposited += event.amount;
    }
}

fn main() {}
