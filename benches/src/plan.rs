//! The workloads' data: which command goes to which account, which events a seeded stream
//! holds, and the balances every run must end with.
//!
//! Both implementations (annals and raw sqlx) run the very same plan, and every run is
//! checked against [`Expected`] after the clock stops, so a fast but wrong run cannot pass.

use annals_examples::bank::{AccountEvent, AccountOpened, Deposited, Withdrawn};

/// What a command does to its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Open the account (its first command).
    Open,
    /// Deposit an amount.
    Deposit(u64),
    /// Withdraw an amount the balance covers.
    Withdraw(u64),
}

/// One command of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Index of the target account.
    pub account: usize,
    /// What the command does.
    pub op: Op,
}

/// The stream id of account `index`.
pub fn account_id(index: usize) -> String {
    format!("acct-{index:06}")
}

/// The owner recorded when an account is opened.
pub fn owner(index: usize) -> String {
    format!("owner {index}")
}

/// `n` commands spread round-robin over `accounts` accounts: the first round opens every
/// account, later rounds deposit, and every fourth round withdraws less than the deposits
/// made so far. Stream lengths therefore grow evenly: the k-th command of an account loads
/// k - 1 events.
pub fn commands(n: usize, accounts: usize) -> Vec<Step> {
    let accounts = accounts.max(1);
    (0..n)
        .map(|i| {
            let account = i % accounts;
            let round = i / accounts;
            let op = if round == 0 {
                Op::Open
            } else if round % 4 == 3 {
                Op::Withdraw(50)
            } else {
                Op::Deposit(100 + (i % 7) as u64)
            };
            Step { account, op }
        })
        .collect()
}

/// The commands of `plan` that go to task `task` of `tasks`: the accounts are split so no
/// two tasks touch the same stream, and each task keeps the plan's order.
pub fn partition(plan: &[Step], tasks: usize, task: usize) -> Vec<Step> {
    plan.iter()
        .copied()
        .filter(|s| s.account % tasks.max(1) == task)
        .collect()
}

/// The event a successful command produces.
pub fn event_of(step: &Step) -> AccountEvent {
    match step.op {
        Op::Open => AccountOpened {
            owner: owner(step.account),
        }
        .into(),
        Op::Deposit(amount) => Deposited {
            amount,
            memo: String::new(),
        }
        .into(),
        Op::Withdraw(amount) => Withdrawn { amount }.into(),
    }
}

/// The events of one long stream for W3: opened, then deposits and withdrawals.
pub fn long_stream(n: usize) -> Vec<AccountEvent> {
    commands(n, 1).iter().map(event_of).collect()
}

/// The events of each account for W4, in stream order, from the same command mix as W1.
pub fn streams(n: usize, accounts: usize) -> Vec<Vec<AccountEvent>> {
    let mut out = vec![Vec::new(); accounts.max(1)];
    for step in commands(n, accounts) {
        out[step.account].push(event_of(&step));
    }
    out
}

/// The state every account must have after a plan ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Per account: (stream version, balance); version 0 for an account the plan never
    /// touches.
    pub accounts: Vec<(u64, u64)>,
}

impl Expected {
    /// The outcome of running `plan` over `accounts` accounts.
    pub fn of(plan: &[Step], accounts: usize) -> Self {
        let mut state = vec![(0, 0); accounts.max(1)];
        for step in plan {
            let (version, balance) = &mut state[step.account];
            *version += 1;
            match step.op {
                Op::Open => {}
                Op::Deposit(amount) => *balance += amount,
                Op::Withdraw(amount) => *balance -= amount,
            }
        }
        Expected { accounts: state }
    }

    /// Compares what a run left with the expectation; names the first account that differs.
    pub fn check(&self, what: &str, actual: &[(u64, u64)]) -> Result<(), String> {
        if actual.len() != self.accounts.len() {
            return Err(format!(
                "{what}: {} accounts, expected {}",
                actual.len(),
                self.accounts.len()
            ));
        }
        for (index, (got, want)) in actual.iter().zip(&self.accounts).enumerate() {
            if got != want {
                return Err(format!(
                    "{what}: account {} is at (version, balance) {got:?}, expected {want:?}",
                    account_id(index)
                ));
            }
        }
        Ok(())
    }

    /// Compares a read model (account id to (version, balance)) with the expectation.
    pub fn check_read_model(
        &self,
        what: &str,
        model: &std::collections::HashMap<String, (u64, u64)>,
    ) -> Result<(), String> {
        let opened = self.accounts.iter().filter(|a| a.0 > 0).count();
        if model.len() != opened {
            return Err(format!(
                "{what}: the read model has {} accounts, expected {opened}",
                model.len()
            ));
        }
        let actual: Vec<(u64, u64)> = (0..self.accounts.len())
            .map(|index| model.get(&account_id(index)).copied().unwrap_or((0, 0)))
            .collect();
        self.check(what, &actual)
    }
}

/// W7's withdrawals: `n` of them spread round-robin over `accounts` source accounts, each
/// opened with a deposit that covers them. Returns every source account's stream.
pub fn withdrawals(n: usize, accounts: usize) -> Vec<Vec<AccountEvent>> {
    let accounts = accounts.max(1);
    let mut out: Vec<Vec<AccountEvent>> = (0..accounts)
        .map(|account| {
            vec![
                AccountOpened {
                    owner: owner(account),
                }
                .into(),
                Deposited {
                    amount: W7_FUNDING,
                    memo: String::new(),
                }
                .into(),
            ]
        })
        .collect();
    for i in 0..n {
        out[i % accounts].push(
            Withdrawn {
                amount: w7_amount(i),
            }
            .into(),
        );
    }
    out
}

/// What each W7 source account is funded with (more than its withdrawals).
pub const W7_FUNDING: u64 = 1_000_000_000;

/// The amount of W7's `i`th withdrawal.
pub fn w7_amount(i: usize) -> u64 {
    10 + (i % 7) as u64
}

/// The savings account W7's reactor sweeps a withdrawal from `source` into.
pub fn savings_of(source: &str) -> String {
    format!("save-{}", source.strip_prefix("acct-").unwrap_or(source))
}

/// The stream id of W7's savings account `index`.
pub fn savings_id(index: usize) -> String {
    savings_of(&account_id(index))
}

/// The state of every W7 savings account after the reactor handled `n` withdrawals over
/// `accounts` accounts: opened, then one deposit per withdrawal of its source.
pub fn expected_savings(n: usize, accounts: usize) -> Expected {
    let accounts = accounts.max(1);
    let mut state = vec![(1, 0); accounts];
    for i in 0..n {
        let (version, balance) = &mut state[i % accounts];
        *version += 1;
        *balance += w7_amount(i);
    }
    Expected { accounts: state }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdrawals_never_exceed_the_balance() {
        let plan = commands(10_000, 7);
        let mut balance = [0u64; 7];
        for step in &plan {
            match step.op {
                Op::Open => assert_eq!(balance[step.account], 0),
                Op::Deposit(a) => balance[step.account] += a,
                Op::Withdraw(a) => {
                    assert!(balance[step.account] >= a, "overdraft at {step:?}");
                    balance[step.account] -= a;
                }
            }
        }
        let expected = Expected::of(&plan, 7);
        let balances: Vec<u64> = expected.accounts.iter().map(|a| a.1).collect();
        assert_eq!(balances, balance);
    }

    #[test]
    fn partitions_are_disjoint_and_complete() {
        let plan = commands(1_000, 30);
        let parts: Vec<_> = (0..8).map(|t| partition(&plan, 8, t)).collect();
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), plan.len());
        for (t, part) in parts.iter().enumerate() {
            assert!(part.iter().all(|s| s.account % 8 == t));
        }
    }

    #[test]
    fn withdrawals_are_covered_and_counted() {
        let streams = withdrawals(1_000, 7);
        let withdrawn: usize = streams
            .iter()
            .map(|s| {
                s.iter()
                    .filter(|e| matches!(e, AccountEvent::Withdrawn(_)))
                    .count()
            })
            .sum();
        assert_eq!(withdrawn, 1_000);
        let expected = expected_savings(1_000, 7);
        let total: u64 = expected.accounts.iter().map(|a| a.1).sum();
        assert_eq!(total, (0..1_000).map(w7_amount).sum::<u64>());
        assert!(expected.accounts.iter().all(|a| a.1 < W7_FUNDING));
        assert_eq!(savings_id(3), "save-000003");
    }

    #[test]
    fn every_account_opens_first() {
        for stream in streams(5_000, 13) {
            assert!(matches!(stream[0], AccountEvent::AccountOpened(_)));
            assert!(stream[1..]
                .iter()
                .all(|e| !matches!(e, AccountEvent::AccountOpened(_))));
        }
    }
}

/// What W6 deposits each time into its one hot account.
pub const HOT_DEPOSIT: u64 = 100;

/// The step W6 repeats: a deposit into its hot account (opened before the clock starts).
pub const fn hot_step(account: usize) -> Step {
    Step {
        account,
        op: Op::Deposit(HOT_DEPOSIT),
    }
}

/// How many of `n` commands task `task` of `tasks` runs (the remainder goes to the first
/// tasks).
pub fn share(n: usize, tasks: usize, task: usize) -> usize {
    let tasks = tasks.max(1);
    n / tasks + usize::from(task < n % tasks)
}

/// What W6 did: the time, and how many commands succeeded or gave up on a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hot {
    /// Wall-clock time of all the commands.
    pub elapsed: std::time::Duration,
    /// Concurrent tasks.
    pub tasks: usize,
    /// Commands that appended their deposit.
    pub succeeded: u64,
    /// Commands that gave up after their attempts.
    pub conflicts: u64,
}

impl Hot {
    /// Checks the hot account against the successful deposits: one event each after the
    /// opening, `HOT_DEPOSIT` each.
    pub fn check(&self, what: &str, version: u64, balance: u64) -> Result<(), String> {
        let expected = (1 + self.succeeded, HOT_DEPOSIT * self.succeeded);
        if (version, balance) != expected {
            return Err(format!(
                "{what}: the hot account is at (version, balance) ({version}, {balance}), \
                 expected {expected:?} after {} successful deposits",
                self.succeeded
            ));
        }
        Ok(())
    }

    /// The RESULT line's extra fields: tasks, conflicts and their share in percent.
    pub fn extra(&self) -> Vec<(&'static str, u64)> {
        let total = (self.succeeded + self.conflicts).max(1);
        vec![
            ("tasks", self.tasks as u64),
            ("conflicts", self.conflicts),
            ("conflict_pct", (self.conflicts * 100 + total / 2) / total),
        ]
    }
}
