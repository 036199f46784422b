//! The raw sqlx baselines: the same logical work as annals, hand-written against a simple
//! schema (one events table: position, stream id, version, type, JSON payload, unique
//! (stream, version)).
//!
//! A command reads its stream, decodes each payload with serde, folds the balance, decides,
//! and inserts the new event at the next version in its own transaction; the unique key is
//! the optimistic-concurrency check, and a violation reloads and retries, like annals does.

pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use annals::Event;
use annals_examples::bank::{AccountEvent, AccountOpened, Deposited, Withdrawn};

use crate::annals_runs::median;
use crate::error::BenchError;
use crate::plan::{self, Expected, Op, Step};

/// How many times a command is tried when the stream moved under it (as annals' default).
pub const MAX_ATTEMPTS: u32 = 5;

/// Events per transaction when replaying into the read model (as the annals runner's
/// default batch).
pub const DEFAULT_BATCH: usize = 500;

/// An account folded from its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawAccount {
    /// The last version folded; 0 when the stream does not exist.
    pub version: u64,
    /// Balance in cents.
    pub balance: u64,
}

/// The event a decoded row holds, reduced to what the fold needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The account was opened.
    Opened,
    /// The balance went up.
    Deposited(u64),
    /// The balance went down.
    Withdrawn(u64),
}

/// Decodes one stored payload by its type name.
pub fn decode(
    stream_id: &str,
    version: u64,
    event_type: &str,
    payload: &str,
) -> Result<Change, BenchError> {
    let failed = |source| BenchError::Decode {
        stream_id: stream_id.to_owned(),
        version,
        event_type: event_type.to_owned(),
        source,
    };
    match event_type {
        AccountOpened::NAME => serde_json::from_str::<AccountOpened>(payload)
            .map(|_| Change::Opened)
            .map_err(|e| failed(Some(e))),
        Deposited::NAME => serde_json::from_str::<Deposited>(payload)
            .map(|e| Change::Deposited(e.amount))
            .map_err(|e| failed(Some(e))),
        Withdrawn::NAME => serde_json::from_str::<Withdrawn>(payload)
            .map(|e| Change::Withdrawn(e.amount))
            .map_err(|e| failed(Some(e))),
        _ => Err(failed(None)),
    }
}

impl RawAccount {
    /// Folds the next stored event, checking that versions have no gap.
    pub fn apply(
        &mut self,
        stream_id: &str,
        version: u64,
        event_type: &str,
        payload: &str,
    ) -> Result<(), BenchError> {
        if version != self.version + 1 {
            return Err(BenchError::Verify(format!(
                "stream {stream_id} jumps from version {} to {version}",
                self.version
            )));
        }
        self.fold(decode(stream_id, version, event_type, payload)?);
        self.version = version;
        Ok(())
    }

    /// Applies a decoded change to the balance.
    pub fn fold(&mut self, change: Change) {
        match change {
            Change::Opened => {}
            Change::Deposited(amount) => self.balance += amount,
            Change::Withdrawn(amount) => self.balance = self.balance.saturating_sub(amount),
        }
    }

    /// The account's business rules (the same as `annals_examples::bank::Account`): returns
    /// the stored type name and JSON payload of the event the command produces.
    pub fn decide(
        &self,
        stream_id: &str,
        step: &Step,
    ) -> Result<(&'static str, String), BenchError> {
        let refuse = |reason: &str| BenchError::Refused {
            stream_id: stream_id.to_owned(),
            reason: reason.to_owned(),
        };
        let exists = self.version > 0;
        match step.op {
            Op::Open if exists => Err(refuse("stream already exists")),
            Op::Open => Ok((
                AccountOpened::NAME,
                serde_json::to_string(&AccountOpened {
                    owner: crate::plan::owner(step.account),
                })?,
            )),
            _ if !exists => Err(refuse("stream does not exist")),
            Op::Deposit(0) | Op::Withdraw(0) => Err(refuse("amount must be greater than zero")),
            Op::Deposit(amount) => Ok((
                Deposited::NAME,
                serde_json::to_string(&Deposited {
                    amount,
                    memo: String::new(),
                })?,
            )),
            Op::Withdraw(amount) if amount > self.balance => Err(refuse("insufficient funds")),
            Op::Withdraw(amount) => Ok((
                Withdrawn::NAME,
                serde_json::to_string(&Withdrawn { amount })?,
            )),
        }
    }
}

/// The stored type name and payload of an event, for seeding.
pub fn encode(event: &AccountEvent) -> Result<(&'static str, String), BenchError> {
    use annals::Events;
    Ok((event.event_type(), event.encode()?))
}

/// What a batch of commands met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Version conflicts met and retried.
    pub retries: u64,
    /// Commands that gave up after [`MAX_ATTEMPTS`] conflicts.
    pub conflicts: u64,
}

/// A raw baseline database: the operations the workloads need.
pub trait RawBaseline: Clone + Send + Sync + 'static {
    /// Reads and folds one stream.
    fn load(&self, stream_id: &str) -> impl Future<Output = Result<RawAccount, BenchError>> + Send;

    /// Runs one command: load, decide, insert at the next version in a transaction; on a
    /// version conflict, reload and retry, up to [`MAX_ATTEMPTS`] times.
    fn execute(
        &self,
        step: &Step,
        tally: &mut Tally,
    ) -> impl Future<Output = Result<(), BenchError>> + Send;

    /// Appends `events` to a stream after `version`, in one transaction (untimed set-up).
    fn seed(
        &self,
        stream_id: &str,
        version: u64,
        events: &[AccountEvent],
    ) -> impl Future<Output = Result<(), BenchError>> + Send;

    /// Replays every event in position order into the `balances` table, `batch` events
    /// per transaction with the checkpoint moved (compare-and-set) in the same
    /// transaction. Returns how many events it handled.
    fn replay(&self, batch: usize) -> impl Future<Output = Result<u64, BenchError>> + Send;

    /// W7's reaction loop: reads the `Withdrawn` events after the `w7` checkpoint, `batch`
    /// at a time; for each, loads the savings account, decides the deposit and inserts its
    /// event with the command's idempotency record (a command already recorded is
    /// skipped) in a transaction of its own; then moves the checkpoint (compare-and-set)
    /// past the batch. Returns how many events it handled.
    fn react(&self, batch: usize) -> impl Future<Output = Result<u64, BenchError>> + Send;

    /// The read model: (version, balance) per account.
    fn read_model(
        &self,
    ) -> impl Future<Output = Result<HashMap<String, (u64, u64)>, BenchError>> + Send;

    /// Closes the connections.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

async fn accounts<R: RawBaseline>(raw: &R, count: usize) -> Result<Vec<(u64, u64)>, BenchError> {
    let mut out = Vec::with_capacity(count);
    for index in 0..count {
        let account = raw.load(&plan::account_id(index)).await?;
        out.push((account.version, account.balance));
    }
    Ok(out)
}

/// W1, raw.
pub async fn sequential<R: RawBaseline>(
    raw: &R,
    commands: &[Step],
    accounts_count: usize,
) -> Result<Duration, BenchError> {
    let mut tally = Tally::default();
    let start = Instant::now();
    for step in commands {
        raw.execute(step, &mut tally).await?;
    }
    let elapsed = start.elapsed();
    Expected::of(commands, accounts_count)
        .check("raw W1", &accounts(raw, accounts_count).await?)
        .map_err(BenchError::Verify)?;
    Ok(elapsed)
}

/// W2, raw. Returns the time and the tally of conflicts.
pub async fn concurrent<R: RawBaseline>(
    raw: &R,
    commands: &[Step],
    accounts_count: usize,
    tasks: usize,
) -> Result<(Duration, Tally), BenchError> {
    let parts: Vec<Vec<Step>> = (0..tasks)
        .map(|task| plan::partition(commands, tasks, task))
        .collect();
    let start = Instant::now();
    let workers: Vec<_> = parts
        .into_iter()
        .map(|part| {
            let raw = raw.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for step in &part {
                    raw.execute(step, &mut tally).await?;
                }
                Ok::<_, BenchError>(tally)
            })
        })
        .collect();
    let mut tally = Tally::default();
    for worker in workers {
        let part = worker.await??;
        tally.retries += part.retries;
        tally.conflicts += part.conflicts;
    }
    let elapsed = start.elapsed();
    if tally.conflicts == 0 {
        Expected::of(commands, accounts_count)
            .check("raw W2", &accounts(raw, accounts_count).await?)
            .map_err(BenchError::Verify)?;
    }
    Ok((elapsed, tally))
}

/// W6, raw: `n` deposits into one account over `tasks` tasks, each retried at once up to
/// [`MAX_ATTEMPTS`] times on a conflict.
pub async fn hot_stream<R: RawBaseline>(
    raw: &R,
    n: usize,
    tasks: usize,
) -> Result<plan::Hot, BenchError> {
    let account = 0;
    let open = Step {
        account,
        op: Op::Open,
    };
    raw.execute(&open, &mut Tally::default()).await?;
    let start = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let raw = raw.clone();
            let count = plan::share(n, tasks, task);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for _ in 0..count {
                    raw.execute(&plan::hot_step(account), &mut tally).await?;
                }
                Ok::<_, BenchError>(tally)
            })
        })
        .collect();
    let mut conflicts = 0;
    for worker in workers {
        conflicts += worker.await??.conflicts;
    }
    let hot = plan::Hot {
        elapsed: start.elapsed(),
        tasks,
        succeeded: n as u64 - conflicts,
        conflicts,
    };
    let account = raw.load(&plan::account_id(account)).await?;
    hot.check("raw W6", account.version, account.balance)
        .map_err(BenchError::Verify)?;
    Ok(hot)
}

/// W3, raw: writes one stream of `n` events (untimed), then times its load `repeat` times
/// and returns the median.
pub async fn rehydrate<R: RawBaseline>(
    raw: &R,
    n: usize,
    repeat: usize,
) -> Result<Duration, BenchError> {
    let stream_id = plan::account_id(0);
    let events = plan::long_stream(n);
    raw.seed(&stream_id, 0, &events).await?;
    let expected = Expected::of(&plan::commands(n, 1), 1);
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let account = raw.load(&stream_id).await?;
        times.push(start.elapsed());
        expected
            .check("raw W3", &[(account.version, account.balance)])
            .map_err(BenchError::Verify)?;
    }
    Ok(median(times))
}

/// W4's events, raw (untimed): the same chunks of ten, in the same order, as annals'.
pub async fn seed_accounts<R: RawBaseline>(
    raw: &R,
    streams: &[Vec<AccountEvent>],
) -> Result<(), BenchError> {
    seed_streams(raw, streams, plan::account_id).await
}

/// Seeds streams as [`crate::annals_runs::seed_streams`] does; stream `index` is named
/// `name(index)`.
pub async fn seed_streams<R: RawBaseline>(
    raw: &R,
    streams: &[Vec<AccountEvent>],
    name: fn(usize) -> String,
) -> Result<(), BenchError> {
    let rounds = streams
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .div_ceil(crate::annals_runs::SEED_CHUNK);
    for round in 0..rounds {
        for (index, events) in streams.iter().enumerate() {
            let from = round * crate::annals_runs::SEED_CHUNK;
            if from >= events.len() {
                continue;
            }
            let to = (from + crate::annals_runs::SEED_CHUNK).min(events.len());
            raw.seed(&name(index), from as u64, &events[from..to])
                .await?;
        }
    }
    Ok(())
}

/// W7's data, raw (untimed): as [`crate::annals_runs::seed_withdrawals`].
pub async fn seed_withdrawals<R: RawBaseline>(
    raw: &R,
    n: usize,
    accounts: usize,
) -> Result<(), BenchError> {
    seed_streams(raw, &plan::withdrawals(n, accounts), plan::account_id).await?;
    let opened: Vec<Vec<AccountEvent>> = (0..accounts.max(1))
        .map(|index| {
            vec![AccountOpened {
                owner: plan::owner(index),
            }
            .into()]
        })
        .collect();
    seed_streams(raw, &opened, plan::savings_id).await
}

/// The command id W7's raw loop gives the deposit for the withdrawal at `position`: the
/// same on every delivery, as annals derives its own.
pub fn w7_command_id(position: i64) -> String {
    format!("w7_sweep/{position}")
}

/// What W7's raw loop does for one withdrawal: the deposit into the savings account of
/// `source`, decided on the folded savings stream.
pub fn w7_deposit(
    source: &str,
    version: u64,
    event_type: &str,
    payload: &str,
) -> Result<(String, Step), BenchError> {
    let Change::Withdrawn(amount) = decode(source, version, event_type, payload)? else {
        return Err(BenchError::Verify(format!(
            "W7 read a {event_type} event of {source} as a withdrawal"
        )));
    };
    Ok((
        plan::savings_of(source),
        Step {
            account: 0,
            op: Op::Deposit(amount),
        },
    ))
}

/// W7, raw: the hand-written reaction loop over the seeded withdrawals. Returns the time
/// and how many events it handled; checks every savings account after the clock stops.
pub async fn react<R: RawBaseline>(
    raw: &R,
    n: usize,
    accounts: usize,
    batch: usize,
) -> Result<(Duration, u64), BenchError> {
    let start = Instant::now();
    let handled = raw.react(batch).await?;
    let elapsed = start.elapsed();
    let mut savings = Vec::with_capacity(accounts);
    for index in 0..accounts.max(1) {
        let account = raw.load(&plan::savings_id(index)).await?;
        savings.push((account.version, account.balance));
    }
    plan::expected_savings(n, accounts)
        .check("raw W7 savings", &savings)
        .map_err(BenchError::Verify)?;
    Ok((elapsed, handled))
}

/// W4, raw: replays into the read model. Returns the time and how many events it handled.
pub async fn replay<R: RawBaseline>(raw: &R, batch: usize) -> Result<(Duration, u64), BenchError> {
    let start = Instant::now();
    let handled = raw.replay(batch).await?;
    Ok((start.elapsed(), handled))
}

/// Converts a stored integer to u64.
pub fn to_u64(what: &'static str, value: i64) -> Result<u64, BenchError> {
    u64::try_from(value).map_err(|_| BenchError::OutOfRange {
        what,
        value: value.into(),
    })
}

/// Converts a u64 to a stored integer.
pub fn to_i64(what: &'static str, value: u64) -> Result<i64, BenchError> {
    i64::try_from(value).map_err(|_| BenchError::OutOfRange {
        what,
        value: value.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every workload at a small size on four fresh databases; each run checks its own
    /// final state.
    async fn exercise<R: RawBaseline>(w1: R, w2: R, w3: R, w4: R) {
        let commands = plan::commands(600, 40);
        sequential(&w1, &commands, 40).await.unwrap();
        let (_, tally) = concurrent(&w2, &commands, 40, 8).await.unwrap();
        assert_eq!(tally.conflicts, 0);
        rehydrate(&w3, 1_000, 2).await.unwrap();
        seed_accounts(&w4, &plan::streams(900, 40)).await.unwrap();
        let (_, handled) = replay(&w4, 100).await.unwrap();
        assert_eq!(handled, 900);
        let model = w4.read_model().await.unwrap();
        Expected::of(&plan::commands(900, 40), 40)
            .check_read_model("raw W4", &model)
            .unwrap();
        // A second replay finds nothing new: the checkpoint moved with the batches.
        assert_eq!(replay(&w4, 100).await.unwrap().1, 0);
        for raw in [w1, w2, w3, w4] {
            raw.close().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_baseline_leaves_the_expected_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut dbs = Vec::new();
        for name in ["w1", "w2", "w3", "w4"] {
            let path = dir.path().join(format!("{name}.db"));
            dbs.push(sqlite::RawSqlite::create(&path, 8).await.unwrap());
        }
        let [w1, w2, w3, w4] = <[_; 4]>::try_from(dbs).unwrap();
        exercise(w1, w2, w3, w4).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_baseline_leaves_the_expected_state() {
        let url = crate::cli::Config::default().database_url;
        let prefix = format!("annals_bench_rawtest_{}", std::process::id());
        let mut dbs = Vec::new();
        for name in ["w1", "w2", "w3", "w4"] {
            let schema = format!("{prefix}_{name}");
            dbs.push(
                postgres::RawPostgres::create(&url, &schema, 10)
                    .await
                    .unwrap(),
            );
        }
        let [w1, w2, w3, w4] = <[_; 4]>::try_from(dbs).unwrap();
        exercise(w1, w2, w3, w4).await;
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        for name in ["w1", "w2", "w3", "w4"] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{prefix}_{name}\" CASCADE"
            )))
            .execute(&admin)
            .await
            .unwrap();
        }
    }

    #[test]
    fn undecodable_payloads_name_the_event() {
        let err = decode("acct-1", 7, "Teleported", "{}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Teleported") && err.contains("acct-1") && err.contains('7'),
            "{err}"
        );
        let err = decode("acct-1", 3, "MoneyDeposited", r#"{"amount":"lots"}"#).unwrap_err();
        assert!(err.to_string().contains("MoneyDeposited"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(
            decode("a", 1, "MoneyDeposited", r#"{"amount":5,"memo":""}"#).unwrap(),
            Change::Deposited(5)
        );
    }

    #[test]
    fn the_baseline_applies_the_accounts_rules() {
        let open = Step {
            account: 3,
            op: Op::Open,
        };
        let fresh = RawAccount::default();
        assert_eq!(fresh.decide("a", &open).unwrap().0, "AccountOpened");
        assert!(fresh
            .decide(
                "a",
                &Step {
                    account: 3,
                    op: Op::Deposit(5)
                }
            )
            .is_err());
        let funded = RawAccount {
            version: 2,
            balance: 10,
        };
        assert!(funded.decide("a", &open).is_err());
        assert!(funded
            .decide(
                "a",
                &Step {
                    account: 3,
                    op: Op::Withdraw(11)
                }
            )
            .is_err());
        assert!(funded
            .decide(
                "a",
                &Step {
                    account: 3,
                    op: Op::Deposit(0)
                }
            )
            .is_err());
        let (event_type, payload) = funded
            .decide(
                "a",
                &Step {
                    account: 3,
                    op: Op::Withdraw(10),
                },
            )
            .unwrap();
        assert_eq!(
            (event_type, payload.as_str()),
            ("Withdrawn", r#"{"amount":10}"#)
        );
    }
}
