//! A bank account: the aggregate behind `cargo run --example bank`.

use annals::{aggregate, Command, Event, Events};
use serde::{Deserialize, Serialize};

/// An account was opened.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
pub struct AccountOpened {
    /// Who owns it.
    pub owner: String,
}

/// Money came in. Version 2 added the memo; version-1 payloads are upcast.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "MoneyDeposited", version = 2, upcast(from = 1, with = DepositedV1))]
pub struct Deposited {
    /// Amount in cents.
    pub amount: u64,
    /// Free text.
    pub memo: String,
}

/// The first schema of [`Deposited`].
#[derive(Debug, Clone, Deserialize)]
pub struct DepositedV1 {
    /// Amount in cents.
    pub amount: u64,
}

impl From<DepositedV1> for Deposited {
    fn from(v1: DepositedV1) -> Self {
        Deposited {
            amount: v1.amount,
            memo: String::new(),
        }
    }
}

/// Money went out.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
pub struct Withdrawn {
    /// Amount in cents.
    pub amount: u64,
}

/// The account's events.
#[derive(Debug, Clone, PartialEq, Events)]
pub enum AccountEvent {
    /// See [`AccountOpened`].
    AccountOpened(AccountOpened),
    /// See [`Deposited`].
    Deposited(Deposited),
    /// See [`Withdrawn`].
    Withdrawn(Withdrawn),
}

/// Why the account refused a command.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    /// Amounts must be positive.
    #[error("amount must be greater than zero")]
    ZeroAmount,
    /// A withdrawal larger than the balance.
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds {
        /// The balance.
        balance: u64,
        /// The amount asked for.
        requested: u64,
    },
}

/// Open an account.
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
pub struct OpenAccount {
    /// The new account's id.
    #[command(id)]
    pub account: String,
    /// Who owns it.
    pub owner: String,
}

/// Put money in.
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
pub struct Deposit {
    /// The account.
    #[command(id)]
    pub account: String,
    /// Amount in cents.
    pub amount: u64,
}

/// Take money out.
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
pub struct Withdraw {
    /// The account.
    #[command(id)]
    pub account: String,
    /// Amount in cents.
    pub amount: u64,
}

/// A bank account.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Account {
    /// Who owns it.
    pub owner: String,
    /// Balance in cents.
    pub balance: u64,
}

#[aggregate(id = String, event = AccountEvent, error = AccountError, command_enum(vis = pub))]
impl Account {
    #[command(create)]
    fn open(&self, cmd: OpenAccount) -> Result<AccountOpened, AccountError> {
        Ok(AccountOpened { owner: cmd.owner })
    }

    #[command]
    fn deposit(&self, cmd: Deposit) -> Result<Deposited, AccountError> {
        if cmd.amount == 0 {
            return Err(AccountError::ZeroAmount);
        }
        Ok(Deposited {
            amount: cmd.amount,
            memo: String::new(),
        })
    }

    #[command]
    fn withdraw(&self, cmd: Withdraw) -> Result<Withdrawn, AccountError> {
        if cmd.amount == 0 {
            return Err(AccountError::ZeroAmount);
        }
        if cmd.amount > self.balance {
            return Err(AccountError::InsufficientFunds {
                balance: self.balance,
                requested: cmd.amount,
            });
        }
        Ok(Withdrawn { amount: cmd.amount })
    }

    #[apply]
    fn opened(&mut self, e: &AccountOpened) {
        self.owner.clone_from(&e.owner);
    }

    #[apply]
    fn deposited(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }

    #[apply]
    fn withdrawn(&mut self, e: &Withdrawn) {
        self.balance -= e.amount;
    }
}
