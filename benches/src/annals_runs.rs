//! The workloads through annals: `Repository` for W1-W3, `ProjectionRunner` for W4, a
//! `#[reactor]` on the runner for W7. Generic over the store, so every backend runs the same
//! code.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use annals::store::{CheckpointStore, EventLog, EventStore, NewEvent, ParkingStore, SnapshotStore};
use annals::workflow::{Dispatcher, Reactions};
use annals::{
    projection, reactor, Aggregate, CommitMeta, EventMeta, Events, ExecuteError, ExpectedVersion,
    Projection, ProjectionRunner, Repository, StreamRef,
};
use annals_examples::bank::{
    Account, AccountEvent, AccountOpened, Deposit, Deposited, OpenAccount, Withdraw, Withdrawn,
};

use crate::error::BenchError;
use crate::plan::{self, Expected, Op, Step};

/// Runs one command of the plan.
async fn execute<S: EventStore + SnapshotStore>(
    repo: &Repository<Account, S>,
    step: &Step,
) -> Result<(), ExecuteError<annals_examples::bank::AccountError>> {
    let account = plan::account_id(step.account);
    match step.op {
        Op::Open => {
            repo.execute(OpenAccount {
                account,
                owner: plan::owner(step.account),
            })
            .await?
        }
        Op::Deposit(amount) => repo.execute(Deposit { account, amount }).await?,
        Op::Withdraw(amount) => repo.execute(Withdraw { account, amount }).await?,
    };
    Ok(())
}

/// (version, balance) of every account, loaded through the repository.
async fn accounts<S: EventStore + SnapshotStore>(
    repo: &Repository<Account, S>,
    count: usize,
) -> Result<Vec<(u64, u64)>, BenchError> {
    let mut out = Vec::with_capacity(count);
    for index in 0..count {
        let loaded = repo.load(&plan::account_id(index)).await?;
        out.push((loaded.version, loaded.state.balance));
    }
    Ok(out)
}

/// W1: the plan's commands one after the other. Checks the final state after the clock
/// stops.
pub async fn sequential<S: EventStore + SnapshotStore>(
    store: S,
    commands: &[Step],
    accounts_count: usize,
) -> Result<Duration, BenchError> {
    let repo = Repository::<Account, S>::new(store);
    let start = Instant::now();
    for step in commands {
        execute(&repo, step).await?;
    }
    let elapsed = start.elapsed();
    Expected::of(commands, accounts_count)
        .check("annals W1", &accounts(&repo, accounts_count).await?)
        .map_err(BenchError::Verify)?;
    Ok(elapsed)
}

/// W2: the plan's commands over `tasks` tasks with disjoint accounts. Returns the time and
/// how many commands gave up on a version conflict (none are expected; the state check is
/// skipped when some did).
pub async fn concurrent<S: CheckpointStore + SnapshotStore>(
    store: S,
    commands: &[Step],
    accounts_count: usize,
    tasks: usize,
) -> Result<(Duration, u64), BenchError> {
    let repo = Repository::<Account, S>::new(store);
    let parts: Vec<Vec<Step>> = (0..tasks)
        .map(|task| plan::partition(commands, tasks, task))
        .collect();
    let start = Instant::now();
    let workers: Vec<_> = parts
        .into_iter()
        .map(|part| {
            let repo = repo.clone();
            tokio::spawn(async move {
                let mut conflicts = 0u64;
                for step in &part {
                    match execute(&repo, step).await {
                        Ok(()) => {}
                        Err(ExecuteError::Conflict { .. }) => conflicts += 1,
                        Err(e) => return Err(BenchError::from(e)),
                    }
                }
                Ok(conflicts)
            })
        })
        .collect();
    let mut conflicts = 0;
    for worker in workers {
        conflicts += worker.await??;
    }
    let elapsed = start.elapsed();
    if conflicts == 0 {
        Expected::of(commands, accounts_count)
            .check("annals W2", &accounts(&repo, accounts_count).await?)
            .map_err(BenchError::Verify)?;
    }
    Ok((elapsed, conflicts))
}

/// W6: `n` deposits into account `account`, spread over `tasks` tasks. With `backoff`, conflicts
/// are retried that way and as many times as the raw baseline does ("before"); without,
/// annals' defaults apply.
pub async fn hot_stream<S: CheckpointStore + SnapshotStore>(
    store: S,
    account: usize,
    n: usize,
    tasks: usize,
    backoff: Option<annals::Backoff>,
) -> Result<plan::Hot, BenchError> {
    let mut repo = Repository::<Account, S>::new(store);
    if let Some(backoff) = backoff {
        repo = repo
            .retry_backoff(backoff)
            .max_attempts(crate::raw::MAX_ATTEMPTS);
    }
    let open = Step {
        account,
        op: Op::Open,
    };
    execute(&repo, &open).await?;
    let start = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let repo = repo.clone();
            let count = plan::share(n, tasks, task);
            tokio::spawn(async move {
                let (mut succeeded, mut conflicts) = (0u64, 0u64);
                for _ in 0..count {
                    match execute(&repo, &plan::hot_step(account)).await {
                        Ok(()) => succeeded += 1,
                        Err(ExecuteError::Conflict { .. }) => conflicts += 1,
                        Err(e) => return Err(BenchError::from(e)),
                    }
                }
                Ok((succeeded, conflicts))
            })
        })
        .collect();
    let mut hot = plan::Hot {
        elapsed: Duration::ZERO,
        tasks,
        succeeded: 0,
        conflicts: 0,
    };
    for worker in workers {
        let (succeeded, conflicts) = worker.await??;
        hot.succeeded += succeeded;
        hot.conflicts += conflicts;
    }
    hot.elapsed = start.elapsed();
    let loaded = repo.load(&plan::account_id(account)).await?;
    hot.check("annals W6", loaded.version, loaded.state.balance)
        .map_err(BenchError::Verify)?;
    Ok(hot)
}

/// Appends events to a stream in chunks, bypassing the repository (untimed set-up).
async fn seed<S: EventStore>(
    store: &S,
    stream_id: &str,
    events: &[AccountEvent],
    chunk: usize,
    mut version: u64,
) -> Result<u64, BenchError> {
    for part in events.chunks(chunk.max(1)) {
        let encoded = part
            .iter()
            .map(|e| {
                Ok(NewEvent::new(
                    e.event_type(),
                    e.event_version(),
                    e.encode()?,
                ))
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let outcome = store
            .append(
                StreamRef::new(Account::NAME, stream_id),
                expected,
                encoded,
                &CommitMeta::default(),
            )
            .await?;
        version = outcome.last_version;
    }
    Ok(version)
}

/// Events per append when W3's stream is written.
pub const W3_CHUNK: usize = 1_000;

/// W3: writes one stream of `n` events (untimed) in appends of `chunk` events, then times
/// `Repository::load` of it `repeat` times and returns the median.
pub async fn rehydrate<S: EventStore + SnapshotStore>(
    store: S,
    n: usize,
    repeat: usize,
    chunk: usize,
) -> Result<Duration, BenchError> {
    let stream_id = plan::account_id(0);
    let events = plan::long_stream(n);
    seed(&store, &stream_id, &events, chunk, 0).await?;
    let expected = Expected::of(&plan::commands(n, 1), 1);
    let repo = Repository::<Account, S>::new(store);
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let loaded = repo.load(&stream_id).await?;
        times.push(start.elapsed());
        expected
            .check("annals W3", &[(loaded.version, loaded.state.balance)])
            .map_err(BenchError::Verify)?;
    }
    Ok(median(times))
}

/// The median of some durations.
pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// Events per append when W4's data is written.
pub const SEED_CHUNK: usize = 10;

/// Writes W4's events (untimed): every account's stream in chunks of ten events, the
/// accounts taking turns, so the global order interleaves the streams.
pub async fn seed_accounts<S: EventStore>(
    store: &S,
    streams: &[Vec<AccountEvent>],
) -> Result<(), BenchError> {
    seed_streams(store, streams, plan::account_id).await
}

/// Writes streams (untimed) in chunks of ten events, the streams taking turns; stream
/// `index` is named `name(index)`.
pub async fn seed_streams<S: EventStore>(
    store: &S,
    streams: &[Vec<AccountEvent>],
    name: fn(usize) -> String,
) -> Result<(), BenchError> {
    const CHUNK: usize = SEED_CHUNK;
    let rounds = streams
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .div_ceil(CHUNK);
    for round in 0..rounds {
        for (index, events) in streams.iter().enumerate() {
            let from = round * CHUNK;
            if from >= events.len() {
                continue;
            }
            let to = (from + CHUNK).min(events.len());
            seed(store, &name(index), &events[from..to], CHUNK, from as u64).await?;
        }
    }
    Ok(())
}

/// W4: `ProjectionRunner::catch_up()` over every event. Returns the time, how many events
/// the projection handled, and the projection.
pub async fn replay<S, P>(
    store: S,
    projection: P,
    batch: usize,
) -> Result<(Duration, u64, P), BenchError>
where
    S: CheckpointStore + EventLog,
    P: Projection<S::Tx>,
{
    let mut runner = ProjectionRunner::new(store, projection).batch_size(batch);
    let start = Instant::now();
    let progress = runner.catch_up().await?;
    let elapsed = start.elapsed();
    Ok((elapsed, progress.handled, runner.into_projection()))
}

/// The memory backend's read model: balances in a `HashMap` held by the projection.
#[derive(Debug, Default)]
pub struct MemoryBalances {
    /// (version, balance) per account.
    pub accounts: HashMap<String, (u64, u64)>,
}

#[projection(name = "balances")]
impl MemoryBalances {
    #[on]
    fn opened(&mut self, _: &AccountOpened, meta: &EventMeta) {
        self.accounts
            .insert(meta.stream_id.clone(), (meta.version, 0));
    }

    #[on]
    fn deposited(&mut self, e: &Deposited, meta: &EventMeta) {
        if let Some(account) = self.accounts.get_mut(&meta.stream_id) {
            *account = (meta.version, account.1 + e.amount);
        }
    }

    #[on]
    fn withdrawn(&mut self, e: &Withdrawn, meta: &EventMeta) {
        if let Some(account) = self.accounts.get_mut(&meta.stream_id) {
            *account = (meta.version, account.1.saturating_sub(e.amount));
        }
    }
}

/// W7's reactor: every withdrawal from an account is swept into its savings account, one
/// `Deposit` per `Withdrawn` event.
#[derive(Debug)]
pub struct Sweep;

#[reactor(name = "w7_sweep")]
impl Sweep {
    #[on]
    fn withdrawn(&self, e: &Withdrawn, meta: &EventMeta) -> Deposit {
        Deposit {
            account: plan::savings_of(&meta.stream_id),
            amount: e.amount,
        }
    }
}

/// W7's data (untimed): the source accounts with `n` withdrawals, and their savings
/// accounts, opened.
pub async fn seed_withdrawals<S: EventStore>(
    store: &S,
    n: usize,
    accounts: usize,
) -> Result<(), BenchError> {
    seed_streams(store, &plan::withdrawals(n, accounts), plan::account_id).await?;
    let opened: Vec<Vec<AccountEvent>> = (0..accounts.max(1))
        .map(|index| {
            vec![AccountOpened {
                owner: plan::owner(index),
            }
            .into()]
        })
        .collect();
    seed_streams(store, &opened, plan::savings_id).await
}

/// W7: `Runner::catch_up()` of [`Sweep`] over the seeded withdrawals, `batch` events per
/// batch, each sending its deposit through the dispatcher. Returns the time and how many
/// events it handled; checks every savings account after the clock stops.
pub async fn react<S>(
    store: S,
    n: usize,
    accounts: usize,
    batch: usize,
) -> Result<(Duration, u64), BenchError>
where
    S: CheckpointStore + EventLog + ParkingStore + SnapshotStore,
{
    let repo = Repository::<Account, S>::new(store.clone());
    let dispatcher = Dispatcher::new().route(repo.clone());
    let reactions = Reactions::new(store.clone(), Sweep, dispatcher)?;
    let mut runner = ProjectionRunner::new(store, reactions).batch_size(batch);
    let start = Instant::now();
    let progress = runner.catch_up().await?;
    let elapsed = start.elapsed();
    let mut savings = Vec::with_capacity(accounts);
    for index in 0..accounts.max(1) {
        let loaded = repo.load(&plan::savings_id(index)).await?;
        savings.push((loaded.version, loaded.state.balance));
    }
    plan::expected_savings(n, accounts)
        .check("annals W7 savings", &savings)
        .map_err(BenchError::Verify)?;
    Ok((elapsed, progress.handled))
}
